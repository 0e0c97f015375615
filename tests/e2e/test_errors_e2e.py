"""Errors a newcomer meets first, through a real `snakemake` run: an endpoint that cannot be
reached stops the run before any job, within seconds, with one line; failed jobs are listed
at the end with their last error line."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest
from crypto_lakehouse_emulator.faults import Faults

from tests.e2e.e2e_helpers import REPO, emulator_config, snakemake

pytestmark = pytest.mark.e2e


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def _config(tmp_path, base_url: str, **over) -> dict:
    return emulator_config(
        base_url, tmp_path / "data", end_date="2025-01-20", lookback_days=2, **over
    )


def _run(tmp_path, config, *args):
    started = time.monotonic()
    proc = snakemake(tmp_path, config, *args, check=False, timeout=120)
    return proc, time.monotonic() - started


def _run_timed(tmp_path, config) -> tuple[subprocess.CompletedProcess, float]:
    """Run Snakemake and time it from its first output line (its interpreter and imports
    loaded) to its exit: the run's own time to fail, not the machine's start-up load."""
    cfg = tmp_path / "test-config.yaml"
    cfg.write_text(json.dumps(config))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
           "--directory", str(tmp_path), "--cores", "2", "--configfile", str(cfg)]  # fmt: skip
    with subprocess.Popen(
        cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as proc:
        first = proc.stdout.readline()
        started = time.monotonic()
        rest = proc.stdout.read()
        proc.wait(timeout=120)
        seconds = time.monotonic() - started
    return subprocess.CompletedProcess(cmd, proc.returncode, first + rest, ""), seconds


@pytest.mark.parametrize(
    "kind, cause", [("closed port", "connection refused"), ("no DNS", "name resolution failed")]
)
def test_unreachable_endpoint_stops_the_run_within_seconds(tmp_path, kind, cause):
    base_url = (
        _closed_port_url() if kind == "closed port" else "http://binance.crypto-lakehouse.invalid"
    )
    proc, seconds = _run_timed(tmp_path, _config(tmp_path, base_url))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert seconds < 10, f"{seconds:.1f} s"
    messages = [line for line in out.splitlines() if line.startswith("cannot reach")]
    assert len(messages) == 1, out
    assert messages[0].startswith(
        f"cannot reach {base_url} (config keys endpoints.listing, endpoints.archive, "
        f"endpoints.spot_api, endpoints.um_api, endpoints.cm_api): {cause}"
    )
    assert "Traceback" not in out and 'File "' not in out
    # No job ran: nothing was written under the data directory.
    assert not (tmp_path / "data" / "lakehouse" / "logs").exists()
    assert not list((tmp_path / ".snakemake").glob("locks/*"))


def test_a_run_without_network_jobs_asks_no_endpoint(tmp_path, emulator):
    """Parsed data rebuilt with the listing of today and the archives at hand: no job talks
    to Binance, so an unreachable host (offline, a compute node) does not stop the run."""
    from crypto_lakehouse_emulator.generate import write_kline_day

    mirror = tmp_path / "mirror"
    for day in ("2025-01-19", "2025-01-20"):
        write_kline_day(mirror, "spot", "BTCUSDT", "1m", day, seed=3)
    emu = emulator(mirror_dir=mirror)
    config = _config(tmp_path, emu.base_url, trade_types=["spot"], symbols={"spot": ["BTCUSDT"]})
    proc, _ = _run(tmp_path, config, "aws_parse")
    assert proc.returncode == 0, proc.stderr[-3000:]
    parsed = tmp_path / "data/parsed_data/spot/klines/BTCUSDT/1m/202501.pqt"
    first = parsed.stat().st_mtime_ns

    offline = _config(tmp_path, _closed_port_url(), trade_types=["spot"],
                      symbols={"spot": ["BTCUSDT"]})  # fmt: skip
    proc, _ = _run(tmp_path, offline, "aws_parse", "--forcerun", "aws_parse_klines")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "cannot reach" not in out
    assert "(Rule: aws_parse_klines)" in out  # the parse job ran, offline
    assert parsed.stat().st_mtime_ns == first  # (its symbol skipped: nothing changed)
    # A run that has to download is still stopped before any job.
    proc, _ = _run(tmp_path, offline, "aws_download", "--forcerun", "aws_download_shard")
    assert proc.returncode != 0
    assert "cannot reach" in proc.stdout + proc.stderr


def test_verbose_shows_the_exception(tmp_path):
    base_url = _closed_port_url()
    proc, _ = _run(tmp_path, _config(tmp_path, base_url), "--verbose")
    out = proc.stdout + proc.stderr
    assert "cannot reach" in out and "ConnectionError" in out
    assert "Traceback (most recent call last)" in out


def test_failed_jobs_are_listed_with_their_last_error_line(tmp_path, emulator):
    # The host answers (so the pre-run check passes) but every archive request fails.
    emu = emulator(faults=Faults(fail_rate=1.0))
    config = _config(
        tmp_path,
        emu.base_url,
        trade_types=["spot", "um_futures"],
        download={"max_retries": 0},
        resample={"targets": []},
    )
    proc, _ = _run(tmp_path, config, "aws_download")
    assert proc.returncode != 0
    lines = proc.stderr.splitlines()
    # One job lists the three directories (issue 11). Each listing fails; the job records
    # the failures and ends (other datasets would go on), each configured symbol's download
    # fails with its listing's error, and the download summary's error line names every
    # failed listing.
    assert "crypto_lakehouse: 1 job(s) failed:" in lines, proc.stderr[-3000:]
    start = lines.index("crypto_lakehouse: 1 job(s) failed:")
    report = lines[start + 1 :]
    assert report[0].startswith("  summarize "), report[:3]
    for t in ("spot", "um_futures"):
        assert f"{tmp_path}/data/lakehouse/summaries/aws_download/{t}.json" in report[0]
    error = report[1].strip()
    assert error.startswith(
        "crypto_lakehouse.summary.SymbolsFailed: aws_download spot: listing failed: "
        "spot klines 1m: cannot list symbols below data/spot/daily/klines/: "
    ), error
    assert error.count("HTTP 50") >= 3
    for what in ("um_futures klines 1m: cannot list", "um_futures funding: cannot list"):
        assert f"listing failed: {what}" in error
    assert (
        "BTCUSDT: SyncError: spot klines-1m BTCUSDT: not downloaded, its listing failed: "
        "cannot list symbols below data/spot/daily/klines/" in error
    )
    assert report[2].strip().startswith(f"log: {tmp_path}/data/lakehouse/logs/")
    # A job's traceback stays in its log file; the console gets one line per failure.
    assert "Traceback" not in proc.stderr
    assert "traceback in " in proc.stderr
    # A failed run of a stage target leaves the report page alone (`all` writes it).
    assert not (tmp_path / "data/lakehouse/report/index.html").exists()


def test_many_more_cores_than_cpus_with_the_local_launcher_is_warned(tmp_path):
    """profiles/slurm-srun says `cores: 100`; without `cluster.launcher: srun` in the config
    those would be CPU jobs on this host. The run says so at start (here it then stops at the
    unreachable endpoint); a normal core count says nothing."""
    config = _config(tmp_path, _closed_port_url())
    many = 4 * (os.cpu_count() or 1) + 1
    proc, _ = _run(tmp_path, config, "--cores", str(many))
    out = proc.stdout + proc.stderr
    assert f"warning: --cores {many} with cluster.launcher: local runs up to {many} CPU jobs" in out
    assert "cannot reach" in out  # the warning does not stop the run; the endpoint does
    proc, _ = _run(tmp_path, config, "--cores", "2")
    assert "with cluster.launcher: local" not in proc.stdout + proc.stderr
