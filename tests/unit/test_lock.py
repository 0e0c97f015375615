"""The data-dir lock (crypto_lakehouse/lock.py) and the stale-temp cleanup it allows."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from crypto_lakehouse import io, lock
from crypto_lakehouse.generate.outputs import remove_stale

HOLDER = """
import sys, time
from crypto_lakehouse import lock
lock.acquire(sys.argv[1])
print("held", flush=True)
time.sleep(120)
"""


@pytest.fixture
def holder(tmp_path):
    """A separate process holding the data-dir lock of ``tmp_path / 'data'``."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path / "data")],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    assert proc.stdout.readline().strip() == "held"
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture(autouse=True)
def _release(tmp_path):
    yield
    lock.release(tmp_path / "data")


def test_second_holder_is_refused_naming_host_pid_and_start(tmp_path, holder):
    with pytest.raises(lock.DataDirBusy) as err:
        lock.acquire(tmp_path / "data")
    info = json.loads(lock.lock_path(tmp_path / "data").read_text())
    assert info["pid"] == holder.pid and info["host"] == socket.gethostname()
    msg = str(err.value)
    assert f"PID {holder.pid} on host {socket.gethostname()}, started {info['started']}" in msg


def test_lock_is_free_again_once_its_holder_is_killed(tmp_path, holder):
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    info = lock.acquire(tmp_path / "data")
    assert info["pid"] == os.getpid()
    assert json.loads(lock.lock_path(tmp_path / "data").read_text())["pid"] == os.getpid()


def test_acquire_is_idempotent_within_a_process(tmp_path):
    first = lock.acquire(tmp_path / "data")
    assert lock.acquire(tmp_path / "data") == json.loads(json.dumps(first))


def test_dry_runs_and_job_processes_neither_take_nor_wait(tmp_path, holder):
    data = tmp_path / "data"
    assert lock.hold_for_run(data, tmp_path, main_process=True, dry_run=True) is None
    assert lock.hold_for_run(data, tmp_path, main_process=False, dry_run=False) is None
    with pytest.raises(lock.DataDirBusy):
        lock.hold_for_run(data, tmp_path, main_process=True, dry_run=False)


JOB = """
import sys, time
from crypto_lakehouse import lock
assert lock.hold_job_lock(sys.argv[1])
print("held", flush=True)
time.sleep(120)
"""


def test_a_job_outliving_its_runs_main_process_keeps_the_next_run_out(tmp_path):
    data = tmp_path / "data"
    job = subprocess.Popen(
        [sys.executable, "-c", JOB, str(data)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    try:
        assert job.stdout.readline().strip() == "held"
        with pytest.raises(lock.DataDirBusy, match="jobs of an earlier run"):
            lock.hold_for_run(data, tmp_path, main_process=True, dry_run=False)
    finally:
        job.kill()
        job.wait()
    # Refused runs keep nothing; once the job is gone the next run goes ahead.
    assert lock.hold_for_run(data, tmp_path, main_process=True, dry_run=False)["pid"] == os.getpid()


def test_jobs_of_the_live_run_share_the_jobs_lock(tmp_path):
    data = tmp_path / "data"
    lock.hold_for_run(data, tmp_path, main_process=True, dry_run=False)
    script = "import sys; from crypto_lakehouse import lock; print(lock.hold_job_lock(sys.argv[1]))"
    for _ in range(2):
        out = subprocess.run(
            [sys.executable, "-c", script, str(data)], capture_output=True, text=True,
            env={**os.environ, "PYTHONPATH": os.getcwd()}, timeout=60,
        )  # fmt: skip
        assert out.stdout.strip() == "True", out.stderr


def _snakemake_lock(workdir, n, kind, paths):
    locks = workdir / ".snakemake" / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    path = locks / f"{n}.{kind}.lock"
    path.write_text("\n".join(str(p) for p in paths) + "\n")
    return path


def test_stale_snakemake_locks_of_this_data_dir_are_removed_others_kept(tmp_path):
    data, other = tmp_path / "data", tmp_path / "other-data"
    ours_abs = _snakemake_lock(tmp_path, 0, "output", [data / "lakehouse" / "x.json"])
    ours_rel = _snakemake_lock(tmp_path, 1, "input", ["data/aws_data/a.zip"])
    theirs = _snakemake_lock(tmp_path, 2, "output", [other / "lakehouse" / "x.json"])
    lookalike = _snakemake_lock(tmp_path, 3, "output", [f"{data}-2/lakehouse/x.json"])
    lock.hold_for_run(data, tmp_path, main_process=True, dry_run=False)
    assert not ours_abs.exists() and not ours_rel.exists()
    assert theirs.exists() and lookalike.exists()


def test_recovery_without_the_lock_is_refused(tmp_path):
    with pytest.raises(RuntimeError):
        lock.recover_snakemake_locks(tmp_path / "data", tmp_path)


def test_run_start_sweeps_temps_of_the_derived_folders_only(tmp_path):
    data = tmp_path / "data"
    temps = [
        data / "parsed_data/spot/klines/BTCUSDT/1m/.tmp-202001.pqt.11-22-0.part",
        data / "results_data/spot/klines/1m/.tmp-BTCUSDT.pqt.11-22-3.part",
        data / "lakehouse/reports/aws_parse/spot/klines-1m/.tmp-BTCUSDT.json.5-6-7.part",
        data / "api_data/um_futures/funding_rate/.tmp-BTCUSDT.pqt.1-2-3.part",
    ]
    archive_temp = data / "aws_data/data/spot/daily/klines/BTCUSDT/1m/.tmp-x.zip.1-2-3.part"
    kept = data / "parsed_data/spot/klines/BTCUSDT/1m/202001.pqt"
    for p in [*temps, archive_temp, kept]:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    lock.hold_for_run(data, tmp_path, main_process=True, dry_run=False)
    assert not any(p.exists() for p in temps)
    assert archive_temp.exists() and kept.exists()  # aws_data: swept by its download job


def test_temps_of_one_target_only(tmp_path):
    mine = tmp_path / ".tmp-BTCUSDT.pqt.10-20-0.part"
    other = tmp_path / ".tmp-BTCUSDT.pqt.x.pqt.10-20-0.part"  # target "BTCUSDT.pqt.x.pqt"
    longer = tmp_path / ".tmp-BTCUSDT.pqtX.10-20-0.part"
    for p in (mine, other, longer):
        p.write_bytes(b"")
    assert io.remove_stale_temps_of(tmp_path / "BTCUSDT.pqt") == 1
    assert not mine.exists() and other.exists() and longer.exists()


def test_symbol_outputs_cleanup_takes_its_own_temps_only(tmp_path):
    names = {
        ".tmp-SP0_BTCUSDT.pqt.1-2-3.part": False,
        ".tmp-BTCUSDT.pqt.1-2-3.part": False,
        ".tmp-XBTCUSDT.pqt.1-2-3.part": True,
        ".tmp-SP0_BTCUSDT_PERP.pqt.1-2-3.part": True,
    }
    for name in names:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "BTCUSDT.pqt").write_bytes(b"")
    assert remove_stale(tmp_path, "BTCUSDT", {"BTCUSDT"}) == []
    for name, survives in names.items():
        assert (tmp_path / name).exists() == survives, name
