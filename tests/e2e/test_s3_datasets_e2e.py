"""The archive's other datasets on a bucket, their CPU jobs on nodes without the run
directory (issue 18, with issue 17's rules): `snakemake datasets agg_klines` with
``data_dir: s3://…`` on SeaweedFS and ``cluster.launcher: srun`` through the stand-in srun
(tests/remote/fake_srun.py, whose node processes cannot touch the submit host's run or
working directory) gives the objects and run files of a local run of the same config.

Datasets: aggTrades and trades (spot, um) and their 1m klines from one trade tape, the
mark price klines and metrics of um. The tick parse (`aws_parse_ticks`), the kline-layout
parse (`aws_parse_kline_layout`) and the candles from aggTrades (`agg_klines_shard`) are
the launched rules; Parquet is compared by table content, the rest by bytes (the chaos
suite's snapshot)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from crypto_lakehouse_emulator.ticks import (
    write_daily_market,
    write_daily_metrics,
    write_daily_price_klines,
)

from crypto_lakehouse import layout
from tests.chaos import chaos_helpers as h
from tests.e2e.e2e_helpers import emulator_config, snakemake
from tests.e2e.test_s3_pipeline_e2e import _assemble, _local_snapshot

pytestmark = [pytest.mark.e2e]

DAY = "2025-01-02"
FAKE_SRUN = [sys.executable, str(Path(__file__).resolve().parents[1] / "remote/fake_srun.py")]
# srun's job names are the scripts': aws_parse_kline_layout runs the kline parse script.
LAUNCHED = {"agg_klines", "aws_parse_klines", "aws_parse_ticks"}


def _snapshot(data: Path, data_dir: str) -> dict:
    """The snapshot of test_s3_pipeline_e2e (the chaos suite's, without the run directory's
    own bookkeeping); per-symbol reports naming files by their path (agg_klines: each day's
    file) compared with the data dir replaced by a placeholder."""
    out = _local_snapshot(data)
    for rel in out:
        if rel.startswith("lakehouse/reports/") and "/shards/" not in rel:
            text = (data / rel).read_text()
            out[rel] = text.replace(data_dir.rstrip("/"), "{data_dir}")
        elif rel.startswith("lakehouse/state/agg_klines/"):
            # Each day's source stamp: the aggTrades file's size and mtime (this run's).
            stamps = json.loads((data / rel).read_text())
            out[rel] = {day: stamp[0] for day, stamp in stamps.items()}
    return out


def test_datasets_on_a_bucket_through_the_launcher_equal_the_local_run(
    tmp_path, emulator, seaweed, s3_root, monkeypatch
):
    mirror = tmp_path / "mirror"
    for seed, trade_type in enumerate(("spot", "um_futures")):
        write_daily_market(mirror, trade_type, "BTCUSDT", DAY, 1500, seed=seed)
    write_daily_price_klines(mirror, "um_futures", "markPriceKlines", "BTCUSDT", "1m", DAY)
    write_daily_metrics(mirror, "um_futures", "BTCUSDT", DAY)
    emu = emulator(mirror_dir=mirror)

    def config(data_dir, **extra) -> dict:
        return emulator_config(
            emu.base_url, data_dir, interval="1m", start_date=DAY, end_date=DAY,
            trade_types=["spot", "um_futures"],
            symbols={"spot": ["BTCUSDT"], "um_futures": ["BTCUSDT"]},
            datasets={
                "spot": ["klines", "aggTrades", "trades"],
                "um_futures": ["klines", "aggTrades", "trades", "markPriceKlines", "metrics"],
            },
            agg_klines={"intervals": ["1m"]},
            **extra,
        )  # fmt: skip

    local = tmp_path / "local"
    local.mkdir()
    snakemake(local, config(local / "data"), "datasets", "agg_klines")
    expected = _snapshot(local / "data", str(local / "data"))
    # The local run really produced each kind of output the comparison is about.
    for part in ("/aggTrades/", "/trades/", "/markPriceKlines/", "/metrics/", "agg_klines"):
        assert any(part in k and k.endswith((".pqt", ".parquet")) for k in expected), part

    calls = tmp_path / "srun_calls.jsonl"
    monkeypatch.setenv("FAKE_SRUN_CALLS", str(calls))
    submit = tmp_path / "submit"
    submit.mkdir()
    cluster = {"launcher": "srun", "srun": FAKE_SRUN}
    s3_config = config(s3_root, storage=seaweed.storage_settings, cluster=cluster)
    snakemake(submit, s3_config, "datasets", "agg_klines")

    launched = [json.loads(line)["options"] for line in calls.read_text().splitlines()]
    names = {o.removeprefix("--job-name=crypto_lakehouse-") for opts in launched
             for o in opts if o.startswith("--job-name=")}  # fmt: skip
    assert names == LAUNCHED
    run_dir = submit / layout.default_run_dir(s3_root)
    got = _snapshot(_assemble(seaweed, s3_root, run_dir, tmp_path / "got"), s3_root)
    assert sorted(set(expected) ^ set(got)) == []
    assert h.differences(expected, got) == []
    # Every CPU job's log came back from its node (the launcher's first line names it).
    cpu_logs = sorted((run_dir / "logs").glob("a*/*/*/shards/*.log"))
    cpu_logs = [log for log in cpu_logs if not log.is_relative_to(run_dir / "logs/aws_download")]
    launched_jobs = {log.relative_to(run_dir / "logs").parts[:3] for log in cpu_logs}
    for trade_type in ("spot", "um_futures"):
        for job in [
            ("aws_parse", "aggTrades"),
            ("aws_parse", "trades"),
            ("agg_klines", "aggTrades-1m"),
        ]:
            assert (job[0], trade_type, job[1]) in launched_jobs, launched_jobs
    assert ("aws_parse", "um_futures", "markPriceKlines-1m") in launched_jobs
    assert ("aws_parse", "um_futures", "metrics") in launched_jobs
    for log in cpu_logs:
        assert "crypto_lakehouse.remote: job on node" in log.read_text(), log
    # Nothing to do the second time, also through the launcher.
    again = snakemake(submit, s3_config, "datasets", "agg_klines")
    assert "Nothing to be done" in again.stdout + again.stderr
