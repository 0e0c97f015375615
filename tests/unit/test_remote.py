"""crypto_lakehouse.remote: a CPU job run through srun on a node that shares no file system
with the submit host (config ``cluster.launcher: srun``).

The node is ``tests/remote/fake_srun.py``: the same machine, but every Python process of the
node refuses any file operation below the submit host's run directory and working
directory, so a job that still needed them would fail here."""

from __future__ import annotations

import io as stdio
import json
import os
import sys
import tarfile
from pathlib import Path

import pytest

from crypto_lakehouse import lock, plan, remote
from crypto_lakehouse.plan import ConfigError

REPO = Path(__file__).resolve().parents[2]
FAKE_SRUN = [sys.executable, str(REPO / "tests" / "remote" / "fake_srun.py")]
FAKE_JOB = str(REPO / "tests" / "remote" / "fake_job.py")
SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]


@pytest.fixture
def submit_host(tmp_path, monkeypatch):
    """A run directory with the upstream reports of three symbols (and of one symbol not in
    the job), an extra file the job names, and a working directory for the launcher."""
    run_dir = tmp_path / "submit" / "lakehouse"
    for symbol in [*SYMBOLS, "XRPUSDT"]:
        path = run_dir / "reports" / "up" / "spot" / f"{symbol}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"rows": len(symbol)}))
    (run_dir / "exchange_info").mkdir()
    (run_dir / "exchange_info" / "spot.json").write_text('{"limit": 6000}')
    calls = tmp_path / "srun_calls.jsonl"
    monkeypatch.setenv("FAKE_SRUN_CALLS", str(calls))
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.chdir(tmp_path / "submit")
    return run_dir, calls


def _job(run_dir: Path, **extra) -> dict:
    return {
        "data_dir": str(run_dir.parent / "data"),
        "symbols": SYMBOLS,
        "symbol_paths": {
            "upstream_report": f"{run_dir}/reports/up/spot",
            "report_path": f"{run_dir}/reports/down/spot",
        },
        "shard_report": f"{run_dir}/reports/down/spot/shards/0.json",
        "extra": f"{run_dir}/exchange_info/spot.json",
        **extra,
    }


def _launch(run_dir: Path, job: dict, **kwargs) -> int:
    argv = [sys.executable, FAKE_JOB, json.dumps(job), f"{run_dir}/logs/down/spot/shards/0.log"]
    return remote.launch(argv, srun=FAKE_SRUN, **kwargs)


def test_a_job_runs_on_the_node_and_its_files_come_back(submit_host):
    run_dir, calls = submit_host
    status = _launch(run_dir, _job(run_dir), cpus=2, mem_mb=3000, runtime_min=16,
                     extra=["--partition=cpu"])  # fmt: skip
    assert status == 0
    for symbol in SYMBOLS:
        report = json.loads((run_dir / "reports/down/spot" / f"{symbol}.json").read_text())
        assert report == {"symbol": symbol, "upstream": {"rows": len(symbol)},
                          "extra": {"limit": 6000}}  # fmt: skip
        assert (run_dir / "stats/down/spot" / f"{symbol}.json").is_file()
    # The shard report names each symbol's report in the run directory, where the summary
    # job reads it, not in the node's temporary folder where the job wrote it (the CPU
    # stages' summaries had no totals before 2026-12-06); the log names it there too.
    assert json.loads((run_dir / "reports/down/spot/shards/0.json").read_text()) == {
        "symbols": {s: {"report": f"{run_dir}/reports/down/spot/{s}.json"} for s in SYMBOLS}
    }
    log = (run_dir / "logs/down/spot/shards/0.log").read_text()
    assert log.startswith("crypto_lakehouse.remote: job on node ")
    assert f"fake job on {SYMBOLS}" in log
    assert f"done {SYMBOLS}; reports in {run_dir}/reports/down/spot\n" in log
    assert "stdout of the job" not in log  # the job's stdout went to stderr, not the stream
    # The node's figures of the job, for the report (Snakemake's table measures the launcher).
    figures = json.loads((run_dir / "benchmarks/down/spot/shards/0.node.json").read_text())
    assert figures["cpu_time"] > 0 and figures["max_rss"] > 5 and figures["s"] > 0
    # srun got the rule's threads, memory and runtime, then the site's options.
    (call,) = [json.loads(line) for line in calls.read_text().splitlines()]
    assert call["options"] == ["--ntasks=1", "--cpus-per-task=2", "--mem=3000M", "--time=16",
                               "--job-name=crypto_lakehouse-fake_job", "--partition=cpu"]  # fmt: skip
    # Nothing was written into the run directory but what the job wrote (the node's copy
    # of the jobs lock stayed on the node); the launcher held the data dir's jobs lock.
    # (held shared until the launcher process ends, i.e. when its job has ended: a next run
    # whose probe finds it held waits for the job)
    assert lock._jobs_still_running(run_dir.parent / "data")
    written = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file())
    assert [p for p in written if not p.startswith(("reports/up/", "exchange_info/"))] == [
        "benchmarks/down/spot/shards/0.node.json",
        "logs/down/spot/shards/0.log",
        *[f"reports/down/spot/{s}.json" for s in SYMBOLS],
        "reports/down/spot/shards/0.json",
        *[f"stats/down/spot/{s}.json" for s in SYMBOLS],
    ]


def test_the_jobs_output_names_run_directory_paths_not_the_nodes(submit_host, capfd):
    """A job's error lines name its log ("traceback in …/logs/…"); under the launcher they
    reach the run's output through srun, and named the node's private folder, removed when
    the job ends, instead of the run directory where the log comes back."""
    run_dir, _ = submit_host
    assert _launch(run_dir, _job(run_dir)) == 0
    err = capfd.readouterr().err
    assert f"stderr of the job: details in {run_dir}/logs/down/spot/shards/0.log\n" in err
    assert "stdout of the job: BTCUSDT" in err
    assert "crypto_lakehouse-job-" not in err


def test_a_file_the_job_removed_on_the_node_is_removed_on_the_submit_host(submit_host):
    # A job that finds an upstream report torn removes it, so that the next run rebuilds
    # it (shards.read_report); on a node only its copy went, and the torn report on the
    # submit host failed the job again at every run.
    run_dir, _ = submit_host
    assert _launch(run_dir, _job(run_dir, remove_upstream=["ETHUSDT"])) == 0
    up = run_dir / "reports" / "up" / "spot"
    assert not (up / "ETHUSDT.json").exists()
    assert all((up / f"{s}.json").is_file() for s in ("BTCUSDT", "SOLUSDT", "XRPUSDT"))
    figures = json.loads((run_dir / "benchmarks/down/spot/shards/0.node.json").read_text())
    assert "removed" not in figures


def test_the_node_cannot_reach_the_submit_hosts_run_directory(submit_host, tmp_path):
    """The fake node really is cut off: a job reading a run-directory file through a path
    the launcher does not recognise (another spelling, via a symlink) fails on the node."""
    run_dir, _ = submit_host
    alias = tmp_path / "alias"
    alias.symlink_to(run_dir)
    status = _launch(run_dir, _job(run_dir, extra=f"{alias}/exchange_info/spot.json"))
    assert status != 0
    assert not (run_dir / "reports/down/spot/shards/0.json").exists()
    # The same job naming the file by its run-directory path gets it sent and succeeds.
    assert _launch(run_dir, _job(run_dir)) == 0


def test_a_failed_job_still_returns_its_log_and_finished_symbols(submit_host):
    run_dir, _ = submit_host
    status = _launch(run_dir, _job(run_dir, fail_after=1, exit_code=3))
    assert status == 3
    assert (run_dir / "reports/down/spot/BTCUSDT.json").is_file()
    assert not (run_dir / "reports/down/spot/ETHUSDT.json").exists()
    assert not (run_dir / "reports/down/spot/shards/0.json").exists()
    assert "done ['BTCUSDT']" in (run_dir / "logs/down/spot/shards/0.log").read_text()


def test_no_answer_from_the_node_is_a_failure_named_in_the_log(submit_host, tmp_path):
    run_dir, _ = submit_host
    dead = tmp_path / "dead_srun.py"
    dead.write_text("import sys\nsys.stdin.buffer.read()\nsys.exit(137)\n")
    argv = [sys.executable, FAKE_JOB, json.dumps(_job(run_dir)), f"{run_dir}/logs/x.log"]
    status = remote.launch(argv, srun=[sys.executable, str(dead)])
    assert status == 137
    log = (run_dir / "logs/x.log").read_text()
    assert "exited 137" in log and "no complete answer from the node" in log
    # srun's 128 + 9: the step was killed, which the line says (a cancelled job read as a
    # bare exit status before).
    assert "(ended by SIGKILL: killed: cancelled, past its time limit or out of memory)" in log


# What srun prints on its stderr when SLURM ends the job (slurm 22.05, the test cluster's,
# seen there with a time limit reached and with scancel; the out-of-memory line is the
# cgroup plugin's wording).
_STEP = "slurmstepd-node1: error: *** STEP 730.0 ON node1 CANCELLED AT 2026-12-06T21:47:49"


@pytest.mark.parametrize(
    ("stderr", "reason"),
    [
        (
            f"{_STEP} DUE TO TIME LIMIT ***\nsrun: error: node1: task 0: Terminated",
            "; SLURM: past its time limit (asked: --time=22 min, the rule's runtime;",
        ),
        (
            "slurmstepd-node1: error: Detected 1 oom_kill event in StepId=730.0. Some of "
            "your processes may have been killed by the cgroup out-of-memory handler.\n"
            "srun: error: node1: task 0: Out Of Memory",
            "; SLURM: out of memory (asked: --mem=5000M, the rule's mem_mb;",
        ),
        (f"{_STEP} ***\nsrun: error: node1: task 0: Terminated", f"; SLURM: {_STEP} ***"),
    ],
    ids=["time limit", "out of memory", "scancel"],
)
def test_why_slurm_ended_the_job_is_in_its_log(submit_host, tmp_path, capfd, stderr, reason):
    """srun's own lines say why SLURM ended a job (time limit, memory, scancel); the exit
    status alone does not. They reach the job's log and its last line, which the run's
    list of failed jobs shows, instead of only the run's console among other jobs' lines."""
    run_dir, _ = submit_host
    ended = tmp_path / "ended_srun.py"
    ended.write_text(
        "import sys\nsys.stdin.buffer.read()\n"
        f"sys.stderr.write({stderr!r} + '\\n')\nsys.exit(143)\n"
    )
    argv = [sys.executable, FAKE_JOB, json.dumps(_job(run_dir)), f"{run_dir}/logs/x.log"]
    status = remote.launch(argv, srun=[sys.executable, str(ended)], mem_mb=5000, runtime_min=22)
    assert status == 143
    lines = (run_dir / "logs/x.log").read_text().splitlines()
    assert lines[-1].startswith("crypto_lakehouse.remote: ") and reason in lines[-1]
    assert lines[-3:-1] == stderr.splitlines()[-2:]
    assert stderr.splitlines()[0] in capfd.readouterr().err  # still shown as it came


@pytest.mark.parametrize(
    ("returncode", "said"),
    [
        (143, " (ended by SIGTERM: cancelled (scancel) or past its time limit)"),
        (-15, " (ended by SIGTERM: cancelled (scancel) or past its time limit)"),
        (130, " (ended by SIGINT: interrupted)"),
        (1, ""),
        (139, ""),  # 128 + SIGSEGV: a crash, said by the log, not a cancellation
    ],
)
def test_an_exit_status_names_the_signal_that_ended_srun(returncode, said):
    assert remote._ended_by_signal(returncode) == said


def test_a_missing_srun_is_a_clear_failure(submit_host, tmp_path):
    run_dir, _ = submit_host
    argv = [sys.executable, FAKE_JOB, json.dumps(_job(run_dir)), f"{run_dir}/logs/x.log"]
    status = remote.launch(argv, srun=[str(tmp_path / "no-such-srun")])
    assert status == 127
    log = (run_dir / "logs/x.log").read_text()
    assert "no-such-srun" in log and "config key cluster.srun" in log


def test_what_is_sent_is_the_jobs_symbols_and_named_files_only(tmp_path):
    run_dir = tmp_path / "run"
    for rel in ["reports/up/spot/BTCUSDT.json", "stats/up/spot/BTCUSDT.json",
                "reports/up/spot/XRPUSDT.json", "exchange_info/spot.json"]:  # fmt: skip
        (run_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / rel).write_text("{}")
    job = {
        "klines": {"symbols": ["BTCUSDT", "ETHUSDT"],
                   "symbol_paths": {"parse_report": f"{run_dir}/reports/up/spot"}},
        "info": f"{run_dir}/exchange_info/spot.json",
        "elsewhere": str(tmp_path / "data" / "x.json"),
    }  # fmt: skip
    assert remote.input_files(job, str(run_dir)) == [
        f"{run_dir}/exchange_info/spot.json",
        f"{run_dir}/reports/up/spot/BTCUSDT.json",
        f"{run_dir}/stats/up/spot/BTCUSDT.json",
    ]
    moved = remote.rebase(job, str(run_dir), "/node/tmp/run")
    assert moved["klines"]["symbol_paths"]["parse_report"] == "/node/tmp/run/reports/up/spot"
    assert moved["info"] == "/node/tmp/run/exchange_info/spot.json"
    assert moved["elsewhere"] == job["elsewhere"]
    # A sibling folder whose name starts like the run directory is not inside it.
    assert remote.rebase(f"{run_dir}-other/x", str(run_dir), "/n") == f"{run_dir}-other/x"


def test_a_relative_run_directory_is_moved_too():
    """An s3:// data dir's default run directory is relative (lakehouse_runs/…)."""
    job = {"report": "lakehouse_runs/b/p/reports/x/A.json", "data_dir": "s3://b/p"}
    assert remote.rebase(job, "lakehouse_runs/b/p", "/tmp/n/run") == {
        "report": "/tmp/n/run/reports/x/A.json",
        "data_dir": "s3://b/p",
    }


@pytest.mark.parametrize("name", ["run/../escape.json", "/etc/passwd", "run//abs", "other.json"])
def test_a_node_cannot_write_outside_the_run_directory(tmp_path, name):
    out = stdio.BytesIO()
    with tarfile.open(fileobj=out, mode="w|") as tar:
        remote._add_bytes(tar, name, b"x")
        remote._add_bytes(tar, remote.STATUS, b'{"returncode": 0}')
    out.seek(0)
    with pytest.raises(remote.RemoteJobError, match="outside the run directory"):
        remote.unpack_returned(out, str(tmp_path / "run"))
    assert not (tmp_path / "escape.json").exists()


@pytest.mark.parametrize("name", ["../escape.json", "/etc/escape.json", "a/../../escape.json"])
def test_a_node_cannot_remove_outside_the_run_directory(tmp_path, name):
    victim = tmp_path / "escape.json"
    victim.write_text("keep")
    out = stdio.BytesIO()
    with tarfile.open(fileobj=out, mode="w|") as tar:
        status = {"returncode": 0, "removed": [name]}
        remote._add_bytes(tar, remote.STATUS, json.dumps(status).encode())
    out.seek(0)
    with pytest.raises(remote.RemoteJobError, match="outside the run directory"):
        remote.unpack_returned(out, str(tmp_path / "run"))
    assert victim.read_text() == "keep"


def test_the_srun_launcher_needs_a_bucket_data_dir():
    config = {"data_dir": "/mnt/team/data", "cluster": {"launcher": "srun"}}
    with pytest.raises(ConfigError, match="cluster.launcher.*s3://"):
        plan.check_cluster(config)
    plan.check_cluster({**config, "data_dir": "s3://bucket/prefix"})
    plan.check_cluster({"data_dir": "/mnt/team/data", "cluster": {"launcher": "local"}})


def test_the_command_line_runs_the_launcher(submit_host):
    run_dir, _ = submit_host
    argv = [sys.executable, FAKE_JOB, json.dumps(_job(run_dir)), f"{run_dir}/logs/cli.log"]
    status = remote.main(["launch", f"--srun={json.dumps(FAKE_SRUN)}", "--srun-args=[]",
                          "--cpus=1", "--mem-mb=100", "--runtime=5", *argv])  # fmt: skip
    assert status == 0
    assert (run_dir / "reports/down/spot/shards/0.json").is_file()
    assert os.path.exists(run_dir / "logs/cli.log")
