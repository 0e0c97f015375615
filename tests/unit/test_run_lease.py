"""The lease object of an S3 data dir (crypto_lakehouse/lock.py; docs/storage.md "Shared
buckets"), on SeaweedFS: one run per bucket prefix, whichever machine starts it."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

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
    # One GET (pyarrow's reader sizes the object first: a heartbeat landing in between
    # would tear the read).
    return json.loads(storage.read_versioned(layout.data_lease_path(s3_root))[0])


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


_REAL_AGE = storage._age_s


def _written_ago(monkeypatch, s3_root, seconds: float) -> None:
    """The store's clock says the lease object, as it is now, was written ``seconds`` ago
    (its LastModified against the answer's Date: storage.Versioned.age_s); a later write
    of it is as new as it is."""
    etag = storage.read_versioned(layout.data_lease_path(s3_root)).etag

    def age(answer):
        real = _REAL_AGE(answer)
        return real + seconds if real is not None and answer.get("ETag") == etag else real

    monkeypatch.setattr(storage, "_age_s", age)


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


def test_lease_of_another_host_is_live_until_its_heartbeat_is_stale(lease_root, monkeypatch):
    _plant(lease_root)
    _written_ago(monkeypatch, lease_root, lock.LEASE_STALE_S - 30)
    with pytest.raises(lock.DataDirBusy) as err:
        lock.take_lease(lease_root)
    assert "PID 4242 on host elsewhere.example" in str(err.value)
    # The age adds the object's real age by the store's clock (whole seconds of
    # LastModified and Date): a second or two on a loaded machine.
    heartbeat = re.search(r"last heartbeat (\d+) s ago", str(err.value))
    assert heartbeat, str(err.value)
    assert lock.LEASE_STALE_S - 31 <= int(heartbeat.group(1)) <= lock.LEASE_STALE_S - 25
    _written_ago(monkeypatch, lease_root, lock.LEASE_STALE_S + 30)
    assert lock.take_lease(lease_root)["host"] == socket.gethostname()


@pytest.mark.parametrize("conditional", [True, False])
def test_the_lease_age_is_the_store_s_not_the_machines_clocks(lease_root, monkeypatch, conditional):
    # Two hours of skew between the holder's clock and this machine's. Before 2026-12-06 the
    # age was this machine's clock minus the holder's: a live run whose machine runs behind
    # (or this one ahead) was taken over at once, and a dead one whose machine ran ahead
    # kept every other run out for hours.
    if not conditional:
        monkeypatch.setattr(storage, "conditional_support", lambda probe: NO_CONDITIONAL_WRITES)
    skew = 2 * 3600
    _plant(lease_root, heartbeat_unix=time.time() - skew)  # live: written just now
    with pytest.raises(lock.DataDirBusy, match="PID 4242 on host elsewhere.example"):
        lock.take_lease(lease_root)
    _plant(lease_root, heartbeat_unix=time.time() + skew)
    _written_ago(monkeypatch, lease_root, lock.LEASE_STALE_S + 30)  # dead for 10.5 min
    assert lock.take_lease(lease_root)["host"] == socket.gethostname()


NO_CONDITIONAL_WRITES = storage.ConditionalSupport(writes=False, deletes=False)


@pytest.fixture
def without_conditional_writes(monkeypatch):
    """A store that does not honour conditional writes, as the capability probe reports it."""
    monkeypatch.setattr(storage, "conditional_support", lambda probe: NO_CONDITIONAL_WRITES)


def _race(attempt, rounds: int, between=None) -> list[list]:
    """Two threads call ``attempt()`` at the same moment (a barrier), ``rounds`` times;
    per round the outcomes: the value returned, or the DataDirBusy raised."""
    barrier = threading.Barrier(2)
    outcomes: list[list] = []
    for _ in range(rounds):
        if between is not None:
            between()
        results: list = [None, None]

        def run(i: int, results: list = results) -> None:
            barrier.wait()
            try:
                results[i] = attempt()
            except lock.DataDirBusy as exc:
                results[i] = exc

        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        outcomes.append(results)
    return outcomes


def _winners(outcomes: list[list]) -> list[int]:
    return [sum(isinstance(r, lock._Lease) for r in results) for results in outcomes]


def test_seaweedfs_honours_conditional_requests(s3_root):
    """The store the tests run on supports what the compare-and-swap relies on; the probe
    object is gone afterwards."""
    storage._CONDITIONAL.clear()
    probe = layout.data_lease_path(s3_root).with_name("probe-test")
    assert storage.conditional_support(probe) == (True, True)
    assert not storage.exists(probe)


def test_a_store_ignoring_the_conditions_is_detected(s3_root):
    """A store that ignores If-None-Match / If-Match (simulated by removing the headers
    before the requests are signed and sent) is measured as one without conditional
    writes."""
    storage._CONDITIONAL.clear()
    client = storage._conditional_client()

    def strip_conditions(request, **kwargs):
        for header in ("If-None-Match", "If-Match"):
            if header in request.headers:
                del request.headers[header]

    client.meta.events.register("before-sign.s3", strip_conditions)
    try:
        probe = layout.data_lease_path(s3_root).with_name("probe-test")
        assert storage.conditional_support(probe) == (False, False)
        assert not storage.exists(probe)
    finally:
        client.meta.events.unregister("before-sign.s3", strip_conditions)
        storage._CONDITIONAL.clear()


def test_a_store_refusing_the_conditions_is_detected(s3_root):
    """A store answering 501 NotImplemented to a conditional request (simulated: such
    requests get that answer instead of being sent; plain ones reach SeaweedFS)."""
    from botocore.awsrequest import AWSResponse

    class Raw:
        def __init__(self, body: bytes):
            self.body = body

        def stream(self, **kwargs):
            yield self.body

    storage._CONDITIONAL.clear()
    client = storage._conditional_client()
    answered = []

    def not_implemented(request, **kwargs):
        if "If-None-Match" in request.headers or "If-Match" in request.headers:
            answered.append(request.method)
            body = b"<Error><Code>NotImplemented</Code><Message>no</Message></Error>"
            return AWSResponse(request.url, 501, {}, Raw(body))
        return None

    client.meta.events.register("before-send.s3", not_implemented)
    try:
        probe = layout.data_lease_path(s3_root).with_name("probe-test")
        assert storage.conditional_support(probe) == (False, False)
        assert "PUT" in answered and "DELETE" in answered
        assert not storage.exists(probe)
        with pytest.raises(storage.ConditionalRequestsUnsupported, match="NotImplemented"):
            storage.put_if_absent(probe, b"x")
    finally:
        client.meta.events.unregister("before-send.s3", not_implemented)
        storage._CONDITIONAL.clear()


def test_with_conditional_writes_the_lease_is_taken_without_waiting(lease_root, monkeypatch):
    def no_sleep(seconds):
        raise AssertionError(f"slept {seconds} s")

    monkeypatch.setattr(lock.time, "sleep", no_sleep)
    mine = lock.take_lease(lease_root)
    assert _record(lease_root) == mine


def test_two_runs_starting_together_exactly_one_wins(lease_root):
    """20 rounds of two acquirers released by a barrier: one lease, one DataDirBusy.
    (With write-then-read-back and no wait, both win in most rounds.)"""
    path = layout.data_lease_path(lease_root)
    outcomes = _race(lambda: lock._claim(lease_root), 20, between=lambda: storage.delete(path))
    assert _winners(outcomes) == [1] * 20
    for results in outcomes[-1:]:
        (winner,) = [r for r in results if isinstance(r, lock._Lease)]
        (loser,) = [r for r in results if isinstance(r, lock.DataDirBusy)]
        assert _record(lease_root) == winner.record
        assert "in use by another run" in str(loser) or "at the same moment" in str(loser)


def test_two_runs_taking_over_a_stale_lease_exactly_one_wins(lease_root, monkeypatch):
    stale = lock.LEASE_STALE_S + 60

    def plant_stale() -> None:
        _plant(lease_root, heartbeat_unix=time.time() - stale)
        _written_ago(monkeypatch, lease_root, stale)

    outcomes = _race(lambda: lock._claim(lease_root), 10, between=plant_stale)
    assert _winners(outcomes) == [1] * 10
    (winner,) = [r for r in outcomes[-1] if isinstance(r, lock._Lease)]
    assert _record(lease_root) == winner.record


def test_heartbeat_after_a_foreign_takeover_notices_it(lease_root):
    mine = lock.take_lease(lease_root)
    lease = lock._LEASES[str(layout.data_lease_path(lease_root))]
    etag = lease.etag
    assert lock.renew_once(lease)
    assert lease.etag != etag and _record(lease_root) == mine  # renewed in place
    _plant(lease_root, holder="usurper")
    assert not lock.renew_once(lease)
    assert _record(lease_root)["holder"] == "usurper"  # not overwritten
    lock.release_lease(lease_root)
    assert _record(lease_root)["holder"] == "usurper"  # not deleted


def test_without_conditional_writes_the_read_back_is_used_and_the_race_named(
    lease_root, without_conditional_writes, caplog
):
    with caplog.at_level("WARNING", logger="crypto_lakehouse.lock"):
        mine = lock.take_lease(lease_root)
    assert _record(lease_root) == mine
    assert "does not honour conditional writes" in caplog.text
    assert "can both proceed" in caplog.text
    lock.release_lease(lease_root)
    assert not storage.exists(layout.data_lease_path(lease_root))


def test_without_conditional_writes_a_run_overwritten_during_the_read_back_backs_off(
    lease_root, without_conditional_writes, monkeypatch
):
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
    # The beat thread keeps running: with If-Match it cannot write over the usurper.
    _plant(lease_root, holder="usurper")
    time.sleep(0.3)  # several beats
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


def test_job_processes_never_load_botocore():
    """botocore serves the lease only (the run's main process): importing the modules a job
    runs, and a local-data-dir storage round trip, leave it unloaded."""
    code = (
        "import sys, tempfile\n"
        "import crypto_lakehouse.smk, crypto_lakehouse.lock, crypto_lakehouse.storage as s\n"
        "import crypto_lakehouse.parse, crypto_lakehouse.generate, crypto_lakehouse.loading\n"
        "d = tempfile.mkdtemp()\n"
        "s.write_json(d + '/x.json', {'a': 1}); assert s.read_json(d + '/x.json') == {'a': 1}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('botocore', 'boto3')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": os.getcwd()})  # fmt: skip
    assert out.stdout.strip() == "[]"


def test_probe_error_of_the_put_is_not_masked_by_the_cleanup(monkeypatch):
    # Access denied on the bucket: the plain PUT fails, and so does the DELETE that cleans
    # up after it. The error raised must be the PUT's (why the lease cannot be taken), not
    # the cleanup's complaint about a probe object that was never created.
    def denied_put(dest, body):
        raise storage.StorageError(f"{dest}: upload failed: AccessDenied")

    def denied_delete(path, **kwargs):
        raise storage.StorageError(f"{path}: delete failed: AccessDenied")

    monkeypatch.setattr(storage, "_put", denied_put)
    monkeypatch.setattr(storage, "delete", denied_delete)
    with pytest.raises(storage.StorageError, match="upload failed") as raised:
        storage.conditional_support("s3://no-access-bucket/lake/run.lease.probe-x")
    assert "no-access-bucket" in str(raised.value)


def test_run_start_on_a_bucket_sweeps_the_local_run_dir(lease_root, tmp_path, monkeypatch):
    """An S3 data dir keeps its run dir on local disk (default: lakehouse_runs/{bucket}/...,
    relative to where the run starts); a killed run's temp file there (a summary being
    written) is removed at the next run's start. Until 2026-12-05 only a run_dir set in the
    config was swept."""
    monkeypatch.chdir(tmp_path)
    run_dir = layout.default_run_dir(lease_root)
    temp = Path(run_dir) / "summaries/aws_download/.tmp-spot.json.8637-1404-0.part"
    kept = Path(run_dir) / "summaries/aws_download/um_futures.json"
    for path in (temp, kept):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
    try:
        lock.hold_for_run(lease_root, tmp_path, main_process=True, dry_run=False, run_dir=run_dir)
    finally:
        lock.release(lease_root, run_dir)
    assert not temp.exists() and kept.exists()


RUN_MAIN = """
import json, signal, sys, time
from crypto_lakehouse import lock, storage
storage.configure(json.loads(sys.argv[2]))
lock.LEASE_HEARTBEAT_S = 0.1
# What Snakemake's scheduler does with SIGTERM: start no new job, exit after the running.
signal.signal(signal.SIGTERM, lambda *a: (print("stopping", flush=True), sys.exit(3)))
lock.hold_for_run(sys.argv[1], sys.argv[3], main_process=True, dry_run=False,
                  run_dir=sys.argv[3])
print("held", flush=True)
time.sleep(60)
"""


def test_a_run_whose_lease_was_taken_over_stops(lease_root, seaweed, tmp_path):
    """A laptop that slept through the stale time: another run took the lease over. Before,
    the heartbeat thread logged it and the run went on starting jobs next to the new
    owner's; now the run's main process gets SIGTERM (Snakemake: no new job)."""
    env = {**os.environ, **seaweed.env}
    proc = subprocess.Popen(
        [sys.executable, "-c", RUN_MAIN, lease_root, json.dumps(seaweed.storage_settings),
         str(tmp_path / "run")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert proc.stdout.readline().strip() == "held"
        _plant(lease_root, holder="the-other-machine", host="other.example", pid=7)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 3 and out.strip() == "stopping"
    assert "was taken over by another run (PID 7 on host other.example" in err
    assert "this run stops" in err
    assert _record(lease_root)["holder"] == "the-other-machine"  # left alone at exit


def test_a_run_whose_lease_was_deleted_stops_and_says_so(lease_root, seaweed, tmp_path):
    env = {**os.environ, **seaweed.env}
    proc = subprocess.Popen(
        [sys.executable, "-c", RUN_MAIN, lease_root, json.dumps(seaweed.storage_settings),
         str(tmp_path / "run")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert proc.stdout.readline().strip() == "held"
        storage.delete(layout.data_lease_path(lease_root))
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 3 and out.strip() == "stopping"
    assert "is gone (deleted by something other than this run)" in err


def test_a_run_stopping_gives_the_new_holder_s_heartbeat_age_by_the_store_s_clock(
    lease_root, monkeypatch, caplog
):
    # The new holder's machine runs two hours behind this one: the log said its heartbeat
    # was 7200 s old (this machine's clock minus the holder's), the skew the lease's age
    # no longer depends on (storage.Versioned.age_s).
    import logging
    import re
    import signal

    _plant(lease_root, host="other.example", pid=7, heartbeat_unix=time.time() - 2 * 3600)
    signals = []
    monkeypatch.setattr(lock.os, "kill", lambda pid, sig: signals.append(sig))
    lease = lock._Lease(layout.data_lease_path(lease_root), {"holder": "this"}, None, False)
    with caplog.at_level(logging.ERROR, logger=lock.log.name):
        lock.stop_this_run(lease)
    assert signals == [signal.SIGTERM]
    assert "was taken over by another run (PID 7 on host other.example" in caplog.text
    assert re.search(r"last heartbeat \d s ago", caplog.text), caplog.text
