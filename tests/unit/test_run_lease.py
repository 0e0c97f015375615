"""The lease object of an S3 data dir (crypto_lakehouse/lock.py; docs/storage.md "Shared
buckets"), on SeaweedFS: one run per bucket prefix, whichever machine starts it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from crypto_lakehouse import layout, lock, storage

HOLDER = """
import json, sys, time
from crypto_lakehouse import lock, storage
storage.configure(json.loads(sys.argv[2]))
lock.take_lease(sys.argv[1])
print("held", flush=True)
time.sleep(120)
"""


@pytest.fixture
def lease_root(s3_root, monkeypatch):
    monkeypatch.setattr(lock, "LEASE_SETTLE_S", 0.05)
    yield s3_root
    lock.release_lease(s3_root)


def _record(s3_root) -> dict:
    return json.loads(storage.read_bytes(layout.data_lease_path(s3_root)))


def _plant(s3_root, **fields) -> dict:
    record = {
        "holder": "other",
        "host": "elsewhere.example",
        "pid": 4242,
        "started": "2026-01-01T00:00:00Z",
        "heartbeat_unix": time.time(),
        "cwd": "/home/someone",
        "run_dir": "/home/someone/runs",
        **fields,
    }
    storage.write_json(layout.data_lease_path(s3_root), record)
    return record


def test_lease_names_its_holder_and_is_removed_on_release(lease_root, tmp_path):
    mine = lock.take_lease(lease_root, tmp_path / "run")
    stored = _record(lease_root)
    assert stored == mine
    assert stored["host"] == socket.gethostname() and stored["pid"] == os.getpid()
    assert stored["run_dir"] == str(tmp_path / "run")
    assert lock.take_lease(lease_root) is mine  # idempotent within a process
    lock.release_lease(lease_root)
    assert not storage.exists(layout.data_lease_path(lease_root))


def test_a_live_run_elsewhere_refuses_a_second_one(lease_root, seaweed):
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, lease_root, json.dumps(seaweed.storage_settings)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(lock.DataDirBusy) as err:
            lock.take_lease(lease_root)
        assert f"PID {proc.pid} on host {socket.gethostname()}" in str(err.value)
        assert "run.lease.json" in str(err.value)
        # kill -9: the lease stays, but its holder ran on this host and is gone.
        proc.kill()
        proc.wait()
        assert _record(lease_root)["pid"] == proc.pid
        assert lock.take_lease(lease_root)["pid"] == os.getpid()
    finally:
        proc.kill()
        proc.wait()


def test_lease_of_another_host_is_live_until_its_heartbeat_is_stale(lease_root):
    _plant(lease_root, heartbeat_unix=time.time() - lock.LEASE_STALE_S + 30)
    with pytest.raises(lock.DataDirBusy) as err:
        lock.take_lease(lease_root)
    assert "PID 4242 on host elsewhere.example" in str(err.value)
    _plant(lease_root, heartbeat_unix=time.time() - lock.LEASE_STALE_S - 30)
    assert lock.take_lease(lease_root)["host"] == socket.gethostname()


def test_two_runs_starting_together_one_backs_off(lease_root, monkeypatch):
    """The other run's PUT lands while this one waits to read its own back."""
    monkeypatch.setattr(lock.time, "sleep", lambda s: _plant(lease_root, holder="racer"))
    with pytest.raises(lock.DataDirBusy, match="at the same moment"):
        lock.take_lease(lease_root)
    assert _record(lease_root)["holder"] == "racer"  # the winner's lease is left alone


def test_heartbeat_renews_and_release_leaves_a_foreign_lease(lease_root, monkeypatch):
    monkeypatch.setattr(lock, "LEASE_HEARTBEAT_S", 0.05)
    first = lock.take_lease(lease_root)["heartbeat_unix"]
    deadline = time.monotonic() + 10
    while _record(lease_root)["heartbeat_unix"] == first and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _record(lease_root)["heartbeat_unix"] > first
    _plant(lease_root, holder="usurper")
    lock.release_lease(lease_root)
    assert _record(lease_root)["holder"] == "usurper"


def test_lease_liveness_rules():
    now = 1_000_000.0
    here = {"host": socket.gethostname(), "pid": os.getpid(), "heartbeat_unix": now}
    assert lock.lease_is_live(here, now)
    assert not lock.lease_is_live(None, now)
    assert not lock.lease_is_live({"host": "x"}, now)  # no heartbeat: not a lease of ours
    assert not lock.lease_is_live({**here, "heartbeat_unix": now - lock.LEASE_STALE_S - 1}, now)
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)  # fmt: skip
    assert not lock.lease_is_live({**here, "pid": int(finished.stdout)}, now)
    assert lock.lease_is_live({**here, "host": "elsewhere", "pid": 1}, now)


JOB = """
import sys, time
from crypto_lakehouse import lock
assert lock.hold_job_lock(sys.argv[1], sys.argv[2])
print("held", flush=True)
time.sleep(120)
"""


def test_jobs_of_a_dead_run_on_a_bucket_keep_the_next_run_out(tmp_path):
    """A job process holds the jobs lock of its run directory (found from its log path);
    while it lives a new run on the same S3 data dir stops before touching the bucket."""
    run_dir = tmp_path / "runs" / "b"
    log = f"{run_dir}/logs/aws_parse/spot/klines-1m/shards/0.log"
    proc = subprocess.Popen(
        [sys.executable, "-c", JOB, "s3://bucket/x", log],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    try:
        assert proc.stdout.readline().strip() == "held"
        assert (run_dir / "jobs.lock").is_file()
        with pytest.raises(lock.DataDirBusy, match="jobs of an earlier run"):
            lock.hold_for_run(
                "s3://bucket/x", tmp_path, main_process=True, dry_run=False, run_dir=run_dir
            )
    finally:
        proc.kill()
        proc.wait()
        lock.release("s3://bucket/x", run_dir)
    assert not lock.hold_job_lock("s3://bucket/x", "no-log-path.log")
