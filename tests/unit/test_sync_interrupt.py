"""Ctrl-C (SIGINT) during a download job on an ``s3://`` data dir, on SeaweedFS: the job
stops promptly with one clear line in its log, no "Event loop is closed" traceback from the
file threads, nothing a later run takes as complete, and a rerun completes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

from crypto_lakehouse_emulator import Faults

from crypto_lakehouse import storage
from crypto_lakehouse.archive.sync import run_sync_shard
from tests.latency_proxy import LatencyProxy
from tests.unit.test_sync_shard import _mirror as sync_shard_mirror
from tests.unit.test_sync_shard import list_spot_klines

REPO = Path(__file__).resolve().parents[2]
SYMBOLS = ["AAAUSDT", "BBBUSDT"]
DAYS = 120


def _mirror(root: Path) -> list[str]:
    """2 symbols × 120 days of 2,000-line zips: enough for a SIGINT to land mid-download."""
    by_symbol = sync_shard_mirror(root, DAYS, symbols=SYMBOLS, first=date(2024, 1, 1), rows=2000)
    return [key for symbol in SYMBOLS for key in by_symbol[symbol]]


def _job(emu, tmp: Path, data_dir: str, endpoint_url: str) -> dict:
    details = list_spot_klines(emu, tmp, SYMBOLS)
    return dict(
        symbols=list(SYMBOLS), shard_report=str(tmp / "shard.json"),
        symbol_paths={
            "report_path": str(tmp / "reports"), "details_path": str(details),
        },
        shard=0, trade_type="spot", dataset="klines", interval="1m", data_dir=data_dir,
        archive_url=emu.base_url, concurrency=8, max_retries=2, timeout_s=5,
        storage={"endpoint_url": endpoint_url, "addressing_style": "path"},
    )  # fmt: skip


def _start(job: dict, log: Path, env: dict) -> subprocess.Popen:
    full = dict(os.environ, **env)
    full["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "emulator")])
    return subprocess.Popen(
        [sys.executable, str(REPO / "scripts" / "aws_download_shard.py"), json.dumps(job),
         str(log)],
        env=full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def test_ctrl_c_stops_a_download_job_on_s3_promptly_and_cleanly(
    tmp_path, emulator, seaweed, s3_root
):
    keys = _mirror(tmp_path / "mirror")
    # Slow answers: the job is mid-flight (transfers and uploads) when it is interrupted.
    emu = emulator(mirror_dir=tmp_path / "mirror", faults=Faults(latency=0.05))
    # A store 30 ms away (as AWS is): commits are still uploading when Ctrl-C comes.
    proxy = LatencyProxy(seaweed.port, 0.03)
    job = _job(emu, tmp_path, s3_root, f"http://127.0.0.1:{proxy.port}")
    log = tmp_path / "job.log"
    proc = _start(job, log, seaweed.env)
    markers = f"{s3_root}/aws_data"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait for the first archives to be stored
            if proc.poll() is not None:
                break
            verified = storage.list_files(markers, recursive=True, suffix=".verified")
            if len(verified) >= 5:
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.stdout.read()
        proc.send_signal(signal.SIGINT)
        interrupted = time.monotonic()
        out, _ = proc.communicate(timeout=60)
        stopped_s = time.monotonic() - interrupted
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proxy.stop()
    text = log.read_text()
    assert proc.returncode == -signal.SIGINT  # the workflow names it "interrupted (SIGINT)"
    # Two lines: the job's start and its interruption; no traceback, no fetch retried on
    # the closed session ("Connector is closed"), no callback on the closed loop.
    assert "Traceback" not in text + out, text[-3000:]
    assert "retry" not in text, text[-3000:]
    assert "Event loop is closed" not in text + out, text[-3000:]
    assert "exception calling callback" not in text + out, text[-3000:]
    assert text.count("interrupted") == 1, text[-3000:]
    assert "interrupted (SIGINT)" in text.splitlines()[-1], text[-3000:]
    assert stopped_s < 2.0, (stopped_s, text[-3000:])
    # Not all of it was fetched (the interruption came mid-job) ...
    verified = {
        str(p)[len(markers) + 1 : -len(".verified")]
        for p in storage.list_files(markers, recursive=True, suffix=".verified")
    }
    assert 0 < len(verified) < len(keys)
    # ... and every marker vouches for a complete zip with the archive's bytes.
    for key in verified:
        assert storage.read_bytes(f"{markers}/{key}") == (tmp_path / "mirror" / key).read_bytes()
    assert not (tmp_path / "shard.json").exists()  # no shard report: the job did not end

    emu.faults.latency = 0.0
    run_sync_shard(**{k: v for k, v in job.items() if k != "storage"})
    report = json.loads((tmp_path / "shard.json").read_text())
    assert report.get("failed") in (None, [], {}), report
    got = {
        str(p)[len(markers) + 1 : -len(".verified")]
        for p in storage.list_files(markers, recursive=True, suffix=".verified")
    }
    assert got == set(keys)


def test_a_second_ctrl_c_during_the_cleanup_waits_for_it_then_is_raised():
    """``sync._settled``: the workers' cleanup is not cut short by another cancellation
    (a second Ctrl-C), which is raised once they have ended."""
    import asyncio

    import pytest

    from crypto_lakehouse.archive.sync import _settled

    ended = []

    async def worker():
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            await asyncio.sleep(0.05)  # its cleanup (a commit being drained, say)
            ended.append(True)
            raise

    async def main():
        task = asyncio.ensure_future(worker())
        await asyncio.sleep(0)
        task.cancel()
        cleanup = asyncio.ensure_future(_settled([task]))
        await asyncio.sleep(0.01)
        cleanup.cancel()  # the second Ctrl-C
        with pytest.raises(asyncio.CancelledError):
            await cleanup
        assert task.done() and ended == [True]

    asyncio.run(main())
