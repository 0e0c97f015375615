"""The command line as a user meets it: what a mistake or a Ctrl-C prints, and the exit
status. Each message is the problem in a line or two on stderr, never traceback lines."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from crypto_lakehouse import cli
from tests.conftest import data_dir_held


def _workflow(tmp_path, config_text: str, *extra: str) -> subprocess.CompletedProcess:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(config_text)
    return subprocess.run(
        [sys.executable, "-m", "crypto_lakehouse", "workflow", "report", "--configfile",
         str(cfg), "--directory", str(tmp_path), *extra],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.mark.parametrize("extra", [[], ["--dry-run"]])
def test_a_config_typo_is_named_on_stderr_without_snakemake_traceback_lines(tmp_path, extra):
    # Before: `WorkflowError in file ".../rules/common.smk", line 43:` above the message and
    # `File ".../rules/common.smk", line 43, in <module>` below it; a dry run on stdout.
    proc = _workflow(tmp_path, f"data_dir: {tmp_path / 'd'}\nlookbak_days: 3\n", *extra)
    assert proc.returncode == 1
    # The command first, as its own problems (and plan's) begin: before 2026-12-07 the
    # workflow's "invalid configuration:" stood alone.
    assert "\npython -m crypto_lakehouse workflow report: invalid configuration:\n  unknown " \
        "config key 'lookbak_days': did you mean 'lookback_days'?\n" in proc.stderr  # fmt: skip
    out = proc.stdout + proc.stderr
    assert 'File "' not in out and "WorkflowError" not in out and "common.smk" not in out
    assert "lookbak_days" not in proc.stdout


def test_a_busy_data_dir_is_one_message_without_traceback_lines(tmp_path):
    # Before: `DataDirBusy in file ...` and three `File "..."` lines (common.smk, lock.py).
    data = tmp_path / "d"
    data.mkdir()
    with data_dir_held(data) as holder:
        proc = _workflow(tmp_path, f"data_dir: {data}\n")
    assert proc.returncode == 1
    assert (
        f"python -m crypto_lakehouse workflow report: data dir {data} is in use by another "
        f"run: PID {holder.pid}"
    ) in proc.stderr
    out = proc.stdout + proc.stderr
    assert 'File "' not in out and "DataDirBusy" not in out


@pytest.mark.parametrize(
    "argv, where",
    [
        (["plan"], "crypto_lakehouse.preview.main"),
        (["verify", "."], "crypto_lakehouse.cli.run_verify"),
        (["compare", ".", "."], "crypto_lakehouse.cli.run_compare"),
        (["workflow", "report"], "snakemake.cli.main"),
    ],
)
def test_ctrl_c_is_one_line_and_exit_130(argv, where, monkeypatch, capsys):
    # Before: the KeyboardInterrupt's traceback, of wherever the process was.
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(where, interrupted)
    try:
        status = cli.main(argv)
    except KeyboardInterrupt:  # caught here: it would stop pytest itself
        pytest.fail("the KeyboardInterrupt went through main()")
    assert status == 130
    err = capsys.readouterr().err
    command = " ".join(argv[:2]) if argv[0] == "workflow" else argv[0]
    hint = "; the same command again completes the run" if argv[0] == "workflow" else ""
    assert err.splitlines() == [f"crypto-lakehouse {command}: interrupted{hint}"]


def test_ctrl_c_while_snakemake_runs_the_jobs_exits_130_with_the_same_last_line(
    monkeypatch, capsys
):
    # Snakemake catches the KeyboardInterrupt of a Ctrl-C while its jobs run, stops them
    # and exits 1, the status of a failed job: before 2026-12-07 the command exited 1 too
    # (and 130 when a second Ctrl-C came through Snakemake), with no line of its own.
    def snakemake_stopping_its_jobs(argv):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(30)  # the handler raises here at once
        except KeyboardInterrupt:
            print("Terminating processes on user request, this might take some time.")
        sys.exit(1)

    monkeypatch.setattr("snakemake.cli.main", snakemake_stopping_its_jobs)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert cli.main(["workflow", "report"]) == 130
    assert capsys.readouterr().err.splitlines()[-1:] == [
        "crypto-lakehouse workflow report: interrupted; the same command again completes the run"
    ]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back
    # A job that fails without Ctrl-C keeps its status 1.
    monkeypatch.setattr("snakemake.cli.main", lambda argv: sys.exit(1))
    assert cli.main(["workflow", "report"]) == 1
    assert "interrupted" not in capsys.readouterr().err


@pytest.mark.parametrize(
    "passed, expected",
    [
        (["--bogus-opt"], "unrecognized arguments: --bogus-opt"),
        (["--rerun-triggers", "nope"], "argument --rerun-triggers: invalid choice: 'nope'"),
    ],
)
def test_a_snakemake_option_it_refuses_after_the_separator_is_one_line(passed, expected, capsys):
    # Before: Snakemake's whole usage (119 lines, headed `usage: __main__.py`), then the error.
    assert cli.main(["workflow", "gen-kline", "1m", "--", *passed]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"crypto-lakehouse workflow gen-kline: after `--`: {expected}"
        + (" (choose from 'code', 'input', 'mtime', 'params', 'software-env')" if "nope" in
           passed else "")
        + " (`snakemake --help` lists Snakemake's options)"
    ]  # fmt: skip


def test_snakemake_options_it_accepts_after_the_separator_pass():
    argv = cli.snakemake_argv(cli.parse_args(["workflow", "aws-parse", "--", "--keep-going",
                                              "--forcerun", "aws_parse_klines", "--dry-run"]))  # fmt: skip
    assert cli.snakemake_option_problem(argv) is None


def test_the_config_help_says_a_differing_interval_is_refused(capsys):
    # The help said the interval argument "wins over an interval= here", which parse_args
    # refuses since 2026-12-06.
    with pytest.raises(SystemExit):
        cli.main(["workflow", "aws-download", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "wins over" not in help_text
    assert "an interval= here that differs from it is refused" in help_text
    with pytest.raises(SystemExit) as exit_info:
        cli.parse_args(["workflow", "aws-download", "1m", "--config", "interval=5m"])
    assert exit_info.value.code == 2


@pytest.mark.parametrize("jobs", ["0", "-2"])
def test_verify_refuses_a_jobs_below_one_as_compare_does(jobs, tmp_path, capsys):
    # Before: taken for 1 without a word (exit 0), while compare --jobs 0 is refused.
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["verify", str(tmp_path), "--jobs", jobs])
    assert exit_info.value.code == 2
    assert f"argument --jobs/-j: {jobs} is not a number of files read at once (N >= 1)" in (
        capsys.readouterr().err
    )


def test_a_job_ctrl_c_stopped_is_listed_as_interrupted_whatever_its_log_ends_with(tmp_path):
    # Ctrl-C during a run on S3: the download job's log went on after its KeyboardInterrupt
    # with a thread's callback to the closed event loop, and the failure list gave
    # "RuntimeError: Event loop is closed" alone, as if the job had failed by itself.
    from crypto_lakehouse.failures import failure_report

    job_log = tmp_path / "job.log"
    job_log.write_text(
        "Traceback (most recent call last):\n"
        '  File "/w/scripts/aws_download_shard.py", line 10, in <module>\n'
        "KeyboardInterrupt\n"
        "2026-12-07 00:22:47,441 ERROR concurrent.futures: exception calling callback for "
        "<Future at 0x7fb1017fb590 state=finished returned list>\n"
        "Traceback (most recent call last):\n"
        '  File "uvloop/loop.pyx", line 697, in uvloop.loop.Loop._check_closed\n'
        "RuntimeError: Event loop is closed\n"
    )
    smk_log = tmp_path / "run.log"
    smk_log.write_text(
        "RuleException:\n"
        'CalledProcessError in file "/w/rules/aws_download.smk", line 60:\n'
        f"Command 'python3 /w/scripts/aws_download_shard.py {job_log}' died with "
        "<Signals.SIGINT: 2>.\n"
        "[Mon Dec  7 00:22:47 2026]\n"
        "Error in rule aws_download_shard:\n"
        "    message: None\n"
        "    jobid: 17\n"
        "    output: /d/lakehouse/reports/aws_download/spot/klines-1m/shards/0.json\n"
        f"    log: {job_log} (check log file(s) for error details)\n"
        "RuleException:\n"
        'CalledProcessError in file "/w/rules/gen_kline.smk", line 40:\n'
        "Command 'python3 /w/scripts/gen_kline_shard.py' returned non-zero exit status 1.\n"
        "Error in rule gen_kline_shard:\n"
        "    message: None\n"
        "    jobid: 5\n"
        "    output: /d/lakehouse/reports/gen_kline/spot/klines-1m/shards/0.json\n"
        f"    log: {job_log} (check log file(s) for error details)\n"
    )
    lines = [line.strip() for line in failure_report(smk_log).splitlines()]
    assert lines[2] == (
        "the job was interrupted (SIGINT) (the job's log ends: RuntimeError: Event loop is closed)"
    )
    # A job that failed by itself is still given its own last error.
    assert lines[5] == "RuntimeError: Event loop is closed"


def test_the_complete_pipeline_help_names_the_datasets_step_it_runs(capsys):
    # `all` runs the datasets target when the config lists extra datasets (README); the
    # help listed every step but that one.
    with pytest.raises(SystemExit):
        cli.main(["workflow", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "features (while features.enabled), datasets (when the config's datasets list " \
        "more than klines and funding), report" in help_text  # fmt: skip


@pytest.mark.parametrize("cores", ["0", "-1", "abc", "1.5"])
def test_a_workflow_cores_that_is_no_number_of_cores_is_refused(cores, capsys):
    # Before: 0 went to Snakemake, which waited for ever at "Select jobs to execute..." once
    # a job needed a core (and did not stop on SIGTERM); abc was Snakemake's own error with
    # exit status 1.
    with pytest.raises(SystemExit) as exit_info:
        cli.parse_args(["workflow", "gen-kline", "--cores", cores])
    assert exit_info.value.code == 2
    assert f"argument --cores/-c: {cores!r} is not a number of cores: N >= 1, or all" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize("cores", ["1", "12", "all"])
def test_a_workflow_cores_of_one_or_more_or_all_goes_to_snakemake(cores):
    argv = cli.snakemake_argv(cli.parse_args(["workflow", "gen-kline", "--cores", cores]))
    assert argv[argv.index("--cores") + 1] == cores


@pytest.mark.parametrize(
    "where, expected",
    [("file", "not a directory"), ("file/sub", "cannot be created: Not a directory")],
)
def test_a_workflow_directory_that_cannot_be_used_is_one_line(where, expected, tmp_path, capsys):
    # Before: Snakemake's Python traceback (FileExistsError, NotADirectoryError) of its
    # mkdir of the working directory, exit status 1.
    (tmp_path / "file").write_text("")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data_dir: {tmp_path / 'd'}\n")
    directory = str(tmp_path / where)
    argv = ["workflow", "report", "-n", "--configfile", str(cfg), "--directory", directory]
    assert cli.main(argv) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"crypto-lakehouse workflow report: --directory {directory}: {expected}"
    ]


def test_the_workflow_help_says_a_step_runs_the_earlier_steps_it_needs(capsys):
    # A legacy user's gen_kline.sh only generated; the target runs download and parse first
    # when they are not up to date, which the help did not say.
    with pytest.raises(SystemExit):
        cli.main(["workflow", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "it first runs the earlier steps it needs that are not up to date" in help_text


@pytest.mark.parametrize("command", [["verify", "{data}"], ["verify", "{data}", "--json"]])
def test_a_reader_gone_from_the_pipe_is_no_traceback(command, tmp_path):
    # `crypto-lakehouse ... | head -1`: the output's reader gone, the write failed with a
    # BrokenPipeError traceback.
    data = tmp_path / "d"
    (data / "parsed_data").mkdir(parents=True)
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "crypto_lakehouse", *(a.format(data=data) for a in command)],
            stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120,
        )  # fmt: skip
    finally:
        os.close(write_end)
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, proc.stderr
    assert proc.returncode == 1


def test_the_resample_command_without_targets_is_its_message_without_traceback_lines(tmp_path):
    # Before: "InputFunctionException in rule resample in file .../resample.smk", then the
    # message as a WorkflowError, "Wildcards:", "Traceback:" and a `File ...` line.
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data_dir: {tmp_path / 'd'}\nresample: {{targets: []}}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "crypto_lakehouse", "workflow", "resample", "--configfile",
         str(cfg), "--directory", str(tmp_path), "--dry-run"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "nothing to resample: config key 'resample.targets' has no entry" in proc.stderr
    out = proc.stdout + proc.stderr
    assert "InputFunctionException" not in out and "Traceback" not in out


@pytest.mark.parametrize(
    "argv",
    [
        ["verify", "d", "--", "--remove"],
        ["plan", "--", "--json"],
        ["compare", "a", "b", "--", "--strict"],
    ],
)
def test_options_after_the_separator_of_a_command_that_passes_none_are_refused(argv, capsys):
    # Before: dropped without a word (`verify DIR -- --remove` removed nothing, exit 0).
    with pytest.raises(SystemExit) as exit_info:
        cli.parse_args(argv)
    assert exit_info.value.code == 2
    assert (
        f"{argv[-1]} after `--`: only the workflow commands pass options on (to Snakemake); "
        f"give {argv[0]}'s own options before it"
    ) in capsys.readouterr().err


@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]])
def test_a_profile_found_nowhere_is_one_line_naming_where_it_was_looked_for(
    dry_run, tmp_path, monkeypatch, capsys
):
    # Before: Snakemake's "Error: profile directory given (nope), but no profile.yaml (or
    # config.yaml) found. Profile has to be given as ..." and exit status 1 (2 is ours for an
    # option that cannot be used: a --directory, a profile whose executor is missing).
    from snakemake.cli import get_appdirs

    monkeypatch.chdir(tmp_path)
    argv = ["workflow", "report", "--profile", "nope", *dry_run]
    assert cli.main(argv) == 2
    dirs = get_appdirs()
    assert capsys.readouterr().err.splitlines() == [
        f"crypto-lakehouse workflow report: --profile nope: not found: no folder nope in "
        f"{tmp_path}, nor in {dirs.user_config_dir} or {dirs.site_config_dir} (Snakemake's "
        f"profile folders); the shipped profiles are slurm, slurm-srun "
        f"({cli.workflow_dir() / 'profiles'})"
    ]
    (tmp_path / "empty").mkdir()
    assert cli.main(["workflow", "report", "--profile", "empty", *dry_run]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "crypto-lakehouse workflow report: --profile empty: empty holds no config.yaml (nor "
        "profile.yaml), so it is no Snakemake profile"
    ]


def test_a_profile_in_snakemakes_own_profile_folder_is_not_refused(tmp_path, monkeypatch):
    # Snakemake also finds a profile by name in the user's profile folder: not refused.
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    from snakemake.cli import get_appdirs

    mine = Path(get_appdirs().user_config_dir) / "mine"
    assert mine.is_relative_to(tmp_path)  # Linux: $XDG_CONFIG_HOME/snakemake
    mine.mkdir(parents=True)
    (mine / "config.yaml").write_text("printshellcmds: true\n")
    assert cli.missing_profile("mine") is None
    assert cli.missing_profile(str(mine)) is None


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["verify", "no/such/dir"], "crypto-lakehouse verify: no/such/dir: no such directory"),
        (
            ["compare", ".", ".", "--start", "2020-01-02", "--end", "2020-01-01"],
            "crypto-lakehouse compare: --start 2020-01-02 is after --end 2020-01-01",
        ),
        (
            ["plan", "--configfile", "no-such.yaml"],
            "crypto-lakehouse plan: invalid configuration:",
        ),
        (
            ["workflow", "report", "--profile", "no-such-profile"],
            "crypto-lakehouse workflow report: --profile no-such-profile: not found: ",
        ),
    ],
)
def test_every_command_begins_its_own_errors_with_the_command_as_typed(
    argv, expected, tmp_path, monkeypatch, capsys
):
    # Before 2026-12-07: "verify: ...", "compare: ...", "crypto_lakehouse plan: ..." (the
    # package's name, not the command's) and Snakemake's "Error: profile directory given".
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) in (1, 2)
    assert capsys.readouterr().err.startswith(expected)
