"""Workflow structure: lint, format, config validation and the job plan."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import zlib

import pytest

from tests.workflow.workflow_helpers import REPO, job_counts, run_snakemake, write_listing_index


def test_snakemake_lint_is_clean(tmp_path):
    proc = run_snakemake(tmp_path, "--lint", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_snakefmt_check_is_clean():
    proc = subprocess.run(
        [sys.executable, "-m", "snakefmt", "--check", "Snakefile", "rules"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_unknown_config_key_is_rejected_by_name(tmp_path):
    proc = run_snakemake(tmp_path, "-n", "--config", "intervall=1m", check=False)
    assert proc.returncode != 0
    assert "intervall" in proc.stdout + proc.stderr


def test_bad_config_value_names_the_key(tmp_path):
    proc = run_snakemake(tmp_path, "-n", "--config", "start_date=2024-13-45", check=False)
    assert proc.returncode != 0
    assert "start_date" in proc.stdout + proc.stderr


def test_dry_run_before_listing_plans_only_the_listing(tmp_path):
    proc = run_snakemake(tmp_path, "-n", config={"data_dir": str(tmp_path / "d")})
    counts = job_counts(proc.stdout)
    # Every listing (spot klines; um and cm klines and funding) is planned up front, in one
    # job (issue 11: one process and one DAG update per run), and nothing else until it ran.
    assert counts["list_archive"] == 1
    assert "aws_download_shard" not in counts


def _shards(symbols, n):
    """Shards a set of symbols falls into: CRC-32 of the name modulo n (docs/config.md)."""
    return {zlib.crc32(s.encode()) % n for s in symbols}


def _write_small_listing(data):
    spot = ["AAAUSDT", "BBBUSDT", "CCCUSDT", "FFFUSDT", "GGGUSDT"]
    um = ["AAAUSDT", "DDDUSDT"]
    um_funding = ["AAAUSDT", "EEEUSDT"]  # EEE: funding archived, klines not (delisted)
    cm = ["AAAUSD_PERP"]
    write_listing_index(data, "spot", "klines-1m", spot)
    write_listing_index(data, "um_futures", "klines-1m", um)
    write_listing_index(data, "um_futures", "funding", um_funding)
    write_listing_index(data, "cm_futures", "klines-1m", cm)
    write_listing_index(data, "cm_futures", "funding", cm)
    return spot, um, um_funding, cm


@pytest.mark.parametrize("shards", [1, 4, "auto"])
def test_dry_run_plans_one_job_per_shard_and_stage(tmp_path, shards):
    data = tmp_path / "d"
    spot, um, um_funding, cm = _write_small_listing(data)
    proc = run_snakemake(tmp_path, "-n", config={"data_dir": str(data), "shards": shards})
    counts = job_counts(proc.stdout)
    # "auto": one shard per trade type up to 32 listed kline symbols (docs/shards.md).
    count = 1 if shards == "auto" else shards

    def n(symbols):
        return len(_shards(symbols, count))

    kline_shards = n(spot) + n(um) + n(cm)
    if count == 1:
        assert kline_shards == 3  # one job per trade type
    else:
        assert kline_shards > 3  # the five spot symbols do not all share one shard
    assert counts["aws_download_shard"] == kline_shards + n(um_funding) + n(cm)
    assert counts["aws_parse_klines"] == kline_shards
    assert counts["aws_parse_funding"] == n(um_funding) + n(cm)
    # One REST job per (trade type, shard) for klines and funding; Q5: the futures shards
    # of the union of kline and archived-funding symbols.
    assert counts["api_download_shard"] == n(spot) + n(set(um) | set(um_funding)) + n(cm)
    assert counts["gen_kline_shard"] == kline_shards
    assert counts["resample_shard"] == kline_shards
    assert counts["features_shard"] == kline_shards
    assert counts["exchange_info"] == 1  # one job for the three trade types (issue 11)
    # One summary job per stage for every trade type (issue 11): 5 stages + resample.
    assert counts["summarize"] == 5
    assert counts["summarize_resample"] == 1
    assert "list_archive" not in counts  # indexes exist: no re-listing in the same day


def _job_blocks(output: str) -> dict[str, list[str]]:
    """The job blocks of a dry run's output (``rule NAME:`` and the indented lines after
    it), by rule name."""
    blocks: dict[str, list[str]] = {}
    lines = output.splitlines()
    for i, line in enumerate(lines):
        head = line.split()
        if len(head) == 2 and head[0] in ("rule", "localrule") and head[1].endswith(":"):
            block = []
            for row in lines[i + 1 :]:
                if not row.startswith("    "):
                    break
                block.append(row.strip())
            blocks.setdefault(head[1][:-1], []).append("\n".join(block))
    return blocks


def test_summary_jobs_take_no_core_slot(tmp_path):
    # A stage's summary job reads reports for a few tenths of a second; holding one of
    # --cores' slots meanwhile, it kept the next stage's CPU job of another trade type
    # waiting (the daily update's timeline, docs/benchmarks.md session 30). The CPU jobs
    # keep their slot.
    data = tmp_path / "d"
    _write_small_listing(data)
    proc = run_snakemake(tmp_path, "-n", "--cores", "2", config={"data_dir": str(data)})
    blocks = _job_blocks(proc.stdout)
    summaries = blocks["summarize"] + blocks["summarize_resample"]
    assert len(summaries) == 6  # 5 stages + resample
    assert all("threads: 0" in block.splitlines() for block in summaries), summaries
    for rule in ("aws_parse_klines", "gen_kline_shard", "resample_shard"):
        assert blocks[rule]
        assert not any("threads: 0" in block.splitlines() for block in blocks[rule]), rule


def test_auto_shards_split_a_trade_type_past_32_symbols(tmp_path):
    data = tmp_path / "d"
    spot = [f"S{i:02d}USDT" for i in range(40)]  # 40 symbols: 2 shards (power of two >= 40/32)
    write_listing_index(data, "spot", "klines-1m", spot)
    proc = run_snakemake(
        tmp_path,
        "-n",
        "-p",
        "aws_parse",
        config={"data_dir": str(data), "shards": "auto", "trade_types": ["spot"]},
    )
    jobs = [
        json.loads(shlex.split(line)[4])
        for line in proc.stdout.splitlines()
        if line.startswith("Shell command:") and "aws_parse_klines.py" in line
    ]
    expected = {}
    for s in spot:
        expected.setdefault(zlib.crc32(s.encode()) % 2, []).append(s)
    assert len(expected) == 2
    assert {j["shard"]: j["symbols"] for j in jobs} == expected


def _parse_jobs(proc) -> dict[int, list[str]]:
    jobs = [
        json.loads(shlex.split(line)[4])
        for line in proc.stdout.splitlines()
        if line.startswith("Shell command:") and "aws_parse_klines.py" in line
    ]
    return {j["shard"]: j["symbols"] for j in jobs}


def test_auto_shards_give_a_local_runs_cores_work(tmp_path):
    """One trade type of 16 symbols: with --cores at this host's CPUs, as many shards as
    cores (a power of two, 4 symbols each at least); with more cores than the host has (a
    cluster's jobs in flight), the listing's count (1 up to 32 symbols)."""
    import os

    data = tmp_path / "d"
    spot = [f"S{i:02d}USDT" for i in range(16)]
    write_listing_index(data, "spot", "klines-1m", spot)
    config = {"data_dir": str(data), "shards": "auto", "trade_types": ["spot"]}
    cpus = os.cpu_count() or 1
    want = 1 if cpus == 1 else 2 if cpus == 2 else 4  # 16 // 4 symbols per shard caps it at 4
    local = run_snakemake(tmp_path, "-n", "-p", "--cores", str(cpus), "aws_parse", config=config)
    expected = {}
    for s in spot:
        expected.setdefault(zlib.crc32(s.encode()) % want, []).append(s)
    assert _parse_jobs(local) == expected
    cluster = run_snakemake(
        tmp_path, "-n", "-p", "--cores", str(cpus + 1), "aws_parse", config=config
    )
    assert _parse_jobs(cluster) == {0: spot}
    assert not (tmp_path / "d" / "lakehouse" / "plan").exists()  # a dry run pins nothing


def test_shard_job_gets_its_symbols_and_their_paths(tmp_path):
    data = tmp_path / "d"
    spot, *_ = _write_small_listing(data)
    proc = run_snakemake(
        tmp_path,
        "-n",
        "-p",
        "aws_parse",
        config={"data_dir": str(data), "shards": 4, "trade_types": ["spot"]},
    )
    jobs = [
        json.loads(shlex.split(line)[4])
        for line in proc.stdout.splitlines()
        if line.startswith("Shell command:") and "aws_parse_klines.py" in line
    ]
    by_shard = {j["shard"]: j["symbols"] for j in jobs}
    expected = {}
    for s in spot:
        expected.setdefault(zlib.crc32(s.encode()) % 4, []).append(s)
    assert by_shard == {k: sorted(v) for k, v in expected.items()}
    job = jobs[0]
    assert (
        job["symbol_paths"]["report_path"] == f"{data}/lakehouse/reports/aws_parse/spot/klines-1m"
    )
    assert (
        job["symbol_paths"]["download_report"]
        == f"{data}/lakehouse/reports/aws_download/spot/klines-1m"
    )
    assert job["shard_report"].endswith(f"aws_parse/spot/klines-1m/shards/{job['shard']}.json")


def test_rest_job_gets_the_runs_first_day_for_its_funding(tmp_path):
    # REST funding is bounded by the run's first day (docs/config.md, Dates): the futures
    # REST job must be given it; before, it fetched from epoch 0 when
    # a symbol had no archive funding and no parsed klines (a start_date past its archive).
    data = tmp_path / "d"
    _write_small_listing(data)
    config = {"data_dir": str(data), "trade_types": ["spot", "um_futures"]}
    dates = {"start_date": "2025-06-01", "end_date": "2025-06-30"}
    proc = run_snakemake(tmp_path, "-n", "-p", "api_download", config={**config, **dates})
    jobs = [
        json.loads(shlex.split(line)[4])
        for line in proc.stdout.splitlines()
        if line.startswith("Shell command:") and "api_download_shard.py" in line
    ]
    by_type = {j["trade_type"]: j for j in jobs}
    assert sorted(by_type) == ["spot", "um_futures"]
    assert by_type["um_futures"]["start_date"] == "2025-06-01"
    assert by_type["um_futures"]["end_date"] == "2025-06-30"
    assert "start_date" not in by_type["spot"]  # no funding: klines start at the archive
    # lookback_days chooses the first day when start_date is unset
    lookback = {"end_date": "2025-06-30", "lookback_days": 10}
    proc = run_snakemake(tmp_path, "-n", "-p", "api_download", config={**config, **lookback})
    (um_job,) = [
        json.loads(shlex.split(line)[4])
        for line in proc.stdout.splitlines()
        if line.startswith("Shell command:")
        and "api_download_shard.py" in line
        and "um_futures" in line
    ]
    assert um_job["start_date"] == "2025-06-21"


def test_invalid_resample_offset_is_rejected_at_config_validation(tmp_path):
    config = {
        "data_dir": str(tmp_path / "d"),
        "resample": {"targets": [{"trade_type": "spot", "interval": "1h", "offset_step": "1h"}]},
    }
    proc = run_snakemake(tmp_path, "-n", config=config, check=False)
    assert proc.returncode != 0
    assert "resample.targets" in proc.stdout + proc.stderr


def test_features_can_be_left_out_of_all(tmp_path):
    data = tmp_path / "d"
    write_listing_index(data, "spot", "klines-1m", ["AAAUSDT"])
    config = {"data_dir": str(data), "trade_types": ["spot"], "features": {"enabled": False}}
    counts = job_counts(run_snakemake(tmp_path, "-n", config=config).stdout)
    assert counts["gen_kline_shard"] == 1
    assert "features_shard" not in counts


@pytest.mark.parametrize(
    "entry,named",
    [
        ({"name": "NOSUCHFN"}, "NOSUCHFN"),
        ({"name": "RSI", "periods": 14}, "periods"),
        ({"name": "RSI", "timeperiod": 1}, "RSI"),
    ],
)
def test_bad_indicator_is_rejected_at_config_validation_naming_the_entry(tmp_path, entry, named):
    indicators = [{"name": "EMA", "timeperiod": 20}, entry]
    config = {"data_dir": str(tmp_path / "d"), "features": {"indicators": indicators}}
    proc = run_snakemake(tmp_path, "-n", config=config, check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "features.indicators[1]" in out and named in out


def test_bad_indicator_is_rejected_at_start_up_with_features_disabled_too(tmp_path):
    # enabled: false leaves features out of `all`; the features target still builds them.
    indicators = [{"name": "EMA", "timeperiod": 20}, {"name": "RSI", "periods": 14}]
    features = {"enabled": False, "indicators": indicators}
    config = {"data_dir": str(tmp_path / "d"), "features": features}
    proc = run_snakemake(tmp_path, "-n", "features", config=config, check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "features.indicators[1]" in out and "periods" in out
