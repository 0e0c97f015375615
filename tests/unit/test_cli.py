"""The legacy-user CLI maps each command to its Snakemake target."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from crypto_lakehouse.cli import parse_args, snakemake_argv
from tests.conftest import REPO_ROOT

LEGACY_TO_TARGET = {
    "aws-download": "aws_download",
    "aws-parse": "aws_parse",
    "api-download": "api_download",
    "gen-kline": "gen_kline",
    "resample": "resample",
    "features": "features",
    "report": "report",
    # Before, the datasets target (docs/datasets.md) had no command: only `snakemake datasets`.
    "datasets": "datasets",
    "complete-pipeline": "all",
}


@pytest.mark.parametrize("command,target", sorted(LEGACY_TO_TARGET.items()))
def test_each_command_runs_its_target_with_the_interval(command, target):
    args = parse_args(["workflow", command, "5m", "--cores", "3"])
    argv = snakemake_argv(args)
    assert target in argv
    assert argv[argv.index("--config") + 1] == "interval=5m"
    assert argv[argv.index("--cores") + 1] == "3"
    assert "--dry-run" not in argv


def test_dry_run_profile_and_passthrough():
    args = parse_args(
        ["workflow", "gen-kline", "--dry-run", "--profile", "profiles/slurm", "--", "--quiet"]
    )
    argv = snakemake_argv(args)
    assert "--dry-run" in argv
    assert argv[argv.index("--profile") + 1] == "profiles/slurm"
    assert argv[2] == "gen_kline" and argv[-1] == "--quiet"
    assert "--config" not in argv  # no interval given: the config's interval applies


@pytest.mark.parametrize("extra", [[], ["--dry-run"], ["--configfile", "a.yaml"]])
def test_snakemake_reads_the_target_as_a_target(extra):
    # Read back with Snakemake's own parser: --config and --configfile take several values
    # and once swallowed the target when no option followed them.
    from snakemake.cli import get_argument_parser

    args = parse_args(["workflow", "aws-parse", "1h", *extra, "--", "--printshellcmds"])
    parsed = get_argument_parser().parse_args(snakemake_argv(args))
    assert parsed.targets == ["aws_parse"]
    assert parsed.config == ["interval=1h"]
    assert parsed.printshellcmds


def test_help_names_the_legacy_equivalent():
    proc = subprocess.run(
        [sys.executable, "-m", "crypto_lakehouse", "workflow", "aws-download", "--help"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0
    assert "aws_download.sh" in proc.stdout and "aws_download" in proc.stdout


def test_cli_dry_run_plans_the_target(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data_dir: {tmp_path / 'd'}\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "crypto_lakehouse",
            "workflow",
            "aws-download",
            "1m",
            "--dry-run",
            "--configfile",
            str(cfg),
            "--directory",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "list_archive" in proc.stdout


def test_plan_table_counts_jobs_per_rule_and_trade_type():
    from crypto_lakehouse.cli import plan_table

    dry_run = """
[Thu Nov 26 23:51:30 2026]
rule aws_parse_klines:
    output: x
    wildcards: trade_type=spot, interval=1m, symbol=AAAUSDT
    reason: Missing output files

[Thu Nov 26 23:51:30 2026]
localrule aws_download_symbol:
    wildcards: trade_type=spot, dataset=klines-1m, symbol=AAAUSDT

[Thu Nov 26 23:51:30 2026]
localrule aws_download_symbol:
    wildcards: trade_type=um_futures, dataset=funding, symbol=BBBUSDT

rule aws_parse_klines:
    wildcards: trade_type=spot, interval=1m, symbol=CCCUSDT

localrule all:
    input: a, b
"""
    table = plan_table(dry_run).splitlines()
    rows = {line.split()[0]: line.split()[1:] for line in table[2:]}
    assert table[1].split() == ["rule", "(none)", "spot", "um_futures"]
    assert rows["aws_parse_klines"] == ["0", "2", "0"]
    assert rows["aws_download_symbol"] == ["0", "1", "1"]
    assert rows["all"] == ["1", "0", "0"]


def test_plan_reports_a_config_error_by_key_without_the_schema(capsys):
    from crypto_lakehouse.cli import main

    assert main(["plan", "--config", "bogus_key=1"]) == 1
    captured = capsys.readouterr()
    # On stderr, as the workflow commands' errors: stdout is for the plan (--json parsers).
    assert captured.out == ""
    assert "unknown config key 'bogus_key'" in captured.err and "$schema" not in captured.err
    assert main(["plan", "--config", "interval=7m"]) == 1
    err = capsys.readouterr().err
    assert "config key" in err and "'7m'" in err  # which key is blamed: issue 12 (i12a)


def test_config_is_not_taken_for_configfile():
    # argparse's abbreviations once read --config as --configfile: `--configfile x.yaml
    # --config data_dir=y` then ran with the config file "data_dir=y" (FileNotFoundError).
    from snakemake.cli import get_argument_parser

    args = parse_args(
        ["workflow", "report", "1h", "--configfile", "x.yaml", "--config", "data_dir=y"]
    )
    assert args.configfile == "x.yaml"
    parsed = get_argument_parser().parse_args(snakemake_argv(args))
    assert [str(f) for f in parsed.configfile] == ["x.yaml"]
    # One --config for Snakemake (it keeps the last of several), the interval last.
    assert parsed.config == ["data_dir=y", "interval=1h"]
    assert parsed.targets == ["report"]


@pytest.mark.parametrize(
    "argv",
    [
        ["workflow", "report", "--configf", "x.yaml"],
        ["plan", "--conf", "interval=1h"],
        ["verify", "d", "--zip"],
        ["compare", "a", "b", "--form", "json"],
    ],
)
def test_abbreviated_options_are_refused(argv, capsys):
    with pytest.raises(SystemExit) as exited:
        parse_args(argv)
    assert exited.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err


def test_a_word_swallowed_by_config_is_named():
    # --config takes every word up to the next option: the interval after it is no
    # KEY=VALUE, and is named here rather than by Snakemake.
    with pytest.raises(SystemExit):
        parse_args(["workflow", "report", "--config", "data_dir=y", "1m"])
    args = parse_args(["workflow", "report", "1m", "--config", "data_dir=y"])
    assert (args.interval, args.config) == ("1m", ["data_dir=y"])


def test_config_after_the_separator_would_drop_the_interval_and_is_refused(capsys):
    with pytest.raises(SystemExit):
        parse_args(["workflow", "report", "1m", "--", "--config", "data_dir=y"])
    assert "before `--`" in capsys.readouterr().err
    # Without a config value of ours, Snakemake's own --config passes as before.
    args = parse_args(["workflow", "report", "--", "--config", "data_dir=y"])
    assert snakemake_argv(args)[-2:] == ["--config", "data_dir=y"]


def test_usage_names_the_command_as_typed_and_the_missing_command(monkeypatch, capsys):
    from crypto_lakehouse.cli import main, program_name

    assert program_name("/venv/bin/crypto-lakehouse") == "crypto-lakehouse"
    assert program_name("/src/crypto_lakehouse/__main__.py") == "python -m crypto_lakehouse"
    monkeypatch.setattr(sys, "argv", ["/venv/bin/crypto-lakehouse"])
    with pytest.raises(SystemExit):
        main([])
    err = capsys.readouterr().err
    assert err.startswith("usage: crypto-lakehouse [-h] [--version] COMMAND ...")
    assert "the following arguments are required: COMMAND" in err
    proc = subprocess.run(
        [sys.executable, "-m", "crypto_lakehouse"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("usage: python -m crypto_lakehouse [-h] [--version] COMMAND ...")


def test_verify_of_a_file_says_it_takes_a_data_dir(tmp_path, capsys):
    from crypto_lakehouse.cli import main

    config = tmp_path / "my.yaml"
    config.write_text("data_dir: /data\n")
    assert main(["verify", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"{config} is a file, not a data directory" in err
    assert "verify takes a data dir (the config's data_dir, not the config file)" in err
    assert main(["verify", str(tmp_path / "absent")]) == 2
    assert "absent: no such directory" in capsys.readouterr().err


def test_a_cluster_profile_keeps_its_own_cores():
    # `--cores all` was always passed: it replaced profiles/slurm-srun's `cores: 100` (the
    # SLURM jobs in flight through srun) by this host's CPUs (2 here: 2 jobs at a time).
    from snakemake.cli import get_argument_parser

    def cores(*extra):
        argv = snakemake_argv(parse_args(["workflow", "gen-kline", *extra]))
        assert get_argument_parser().parse_args(argv).targets == ["gen_kline"]
        return argv[argv.index("--cores") + 1] if "--cores" in argv else None

    assert cores("--profile", "slurm-srun") is None  # Snakemake takes the profile's 100
    assert cores("--profile", "slurm") is None  # the executor profile's `jobs: 100`
    assert cores("--profile", "slurm-srun", "--cores", "8") == "8"  # given: passed on
    assert cores() == "all"  # no profile: this host's CPUs, as before
    assert cores("--profile", "default") == "all"  # a profile without cores or jobs


@pytest.mark.parametrize("command", ["features", "report", "datasets"])
def test_help_of_a_new_step_says_it_has_no_legacy_equivalent(command, capsys):
    # It printed "legacy equivalent: `none (new step)`" (features) or "`no legacy
    # equivalent`" (report, datasets), as if that were a legacy command.
    from crypto_lakehouse.cli import main

    with pytest.raises(SystemExit):
        main(["workflow", command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "no legacy equivalent (a new step)." in text
    assert "`none" not in text and "`no legacy" not in text


def test_report_help_names_every_section_of_the_page():
    from crypto_lakehouse.cli import COMMANDS
    from crypto_lakehouse.report.page import SECTIONS

    what = COMMANDS["report"][2].lower()
    for title in SECTIONS:
        wanted = "run times" if title == "The run" else title.lower()
        assert wanted in what, title


def test_plan_table_of_a_dry_run_with_nothing_to_do_says_so():
    # It printed the title and a header row "rule" with no column and no row.
    out = "Building DAG of jobs...\nNothing to be done (all requested files are present).\n"
    from crypto_lakehouse.cli import plan_table

    assert plan_table(out) == "Plan: no job to run"


def test_a_profile_whose_executor_plugin_is_missing_names_what_to_install(
    tmp_path, capsys, monkeypatch
):
    """`--profile slurm` without the slurm extra: Snakemake printed its whole usage and
    "argument --executor/-e: invalid choice: 'slurm'" (a `pip install .` has no plugin)."""
    from crypto_lakehouse.cli import main

    find_spec = importlib.util.find_spec  # the dev extra installs the slurm plugin: hide it
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: (
            None if name.startswith("snakemake_executor_plugin_") else find_spec(name, *a)
        ),
    )
    for executor in ("slurm", "no-such-cluster"):
        profile = tmp_path / executor
        profile.mkdir()
        (profile / "config.yaml").write_text(f"executor: {executor}\njobs: 10\n")
        assert main(["workflow", "gen-kline", "--profile", str(profile), "--dry-run"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(
            f"crypto-lakehouse workflow gen-kline: --profile {profile}: profile {profile} runs "
            f"jobs with Snakemake's {executor!r} executor"
        )
        assert f"pip install snakemake-executor-plugin-{executor}" in err
    assert "crypto_lakehouse[slurm]" not in err  # only for slurm


def test_the_missing_plugin_check_lets_an_installed_one_or_a_local_profile_pass(tmp_path):
    from crypto_lakehouse.cli import missing_executor_plugin

    (tmp_path / "config.yaml").write_text("executor: slurm\n")
    installed = importlib.util.find_spec("snakemake_executor_plugin_slurm") is not None
    assert (missing_executor_plugin(str(tmp_path)) is None) == installed
    assert installed  # the dev extra installs it: the check above is not vacuous
    assert missing_executor_plugin(str(REPO_ROOT / "profiles" / "default")) is None
    assert missing_executor_plugin(str(REPO_ROOT / "profiles" / "slurm-srun")) is None


def _version_output(capsys) -> str:
    from crypto_lakehouse.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    return capsys.readouterr().out.strip()


def test_version_names_the_installed_version_the_commit_and_the_package(capsys):
    """Before, `crypto-lakehouse --version` was refused (exit 2, "the following arguments are
    required: COMMAND"): a user filing a bug could not say what they ran."""
    from importlib import metadata

    import crypto_lakehouse

    out = _version_output(capsys)
    assert out.startswith(f"crypto_lakehouse {metadata.version('crypto_lakehouse')} (")
    package = str(Path(crypto_lakehouse.__file__).resolve().parent)
    assert f"package {package}" in out
    checkout = Path(package).parent
    if (checkout / ".git").exists():
        head = subprocess.run(
            ["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        commit = re.search(r"\(git ([0-9a-f]+)(-dirty)?,", out)
        assert commit and head.startswith(commit.group(1)), out


def test_version_of_a_source_checkout_not_installed_says_so(monkeypatch, capsys):
    from importlib import metadata

    import crypto_lakehouse

    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", not_installed)
    out = _version_output(capsys)
    assert out.startswith(f"crypto_lakehouse {crypto_lakehouse.__version__} (not installed) (")


def test_version_of_python_m_crypto_lakehouse_exits_0(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "crypto_lakehouse", "--version"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("crypto_lakehouse "), done.stdout
