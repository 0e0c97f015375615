"""Config key ``run_dir`` (issue 18): where Snakemake's own files live.

A local data dir keeps them in ``{data_dir}/lakehouse`` with the job parameters of before
the key existed (an upgrade reruns nothing: the expected jobs below are written out by hand
from the layout in docs/architecture.md); an ``s3://`` data dir gets a local run directory
below the working directory; a configured one is used for both, and is never on S3."""

from __future__ import annotations

import json
import shlex
import shutil
import time
from pathlib import Path

from tests.workflow.workflow_helpers import run_snakemake, write_listing_index

DATES = {"start_date": "2024-02-24", "end_date": "2024-03-03", "trade_types": ["spot"]}
SYMBOLS = ["AAAUSDT", "BBBUSDT"]


def _jobs(proc) -> list[tuple[str, dict, str]]:
    """(script name, job JSON, log path) of every job a dry run prints."""
    jobs = []
    for line in proc.stdout.splitlines():
        if line.startswith("Shell command:"):
            words = shlex.split(line)
            jobs.append((Path(words[3]).stem, json.loads(words[4]), words[5]))
    return jobs


def _listing_in(run_dir: Path, scratch: Path) -> None:
    """The spot klines listing as the checkpoint leaves it in ``run_dir``."""
    write_listing_index(scratch, "spot", "klines-1m", SYMBOLS)
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.move(scratch / "lakehouse" / "listing", run_dir / "listing")


def test_local_data_dir_jobs_are_those_of_before_run_dir(tmp_path):
    data = tmp_path / "d"
    write_listing_index(data, "spot", "klines-1m", SYMBOLS)
    proc = run_snakemake(tmp_path, "-n", "-p", "report", config={"data_dir": str(data), **DATES})
    jobs = _jobs(proc)
    assert len(jobs) == 14
    lh = f"{data}/lakehouse"
    for script, job, log in jobs:
        assert "run_dir" not in job, script
        assert log.startswith(f"{lh}/logs/"), log
    by_script = {script: job for script, job, _ in jobs}
    assert by_script["aws_parse_klines"] == {
        "data_dir": str(data),
        "interval": "1m",
        "max_inflate_ratio": 20,
        "max_inflated_bytes": 1073741824,
        "shard": 0,
        "shard_report": f"{lh}/reports/aws_parse/spot/klines-1m/shards/0.json",
        "symbol_paths": {
            "download_report": f"{lh}/reports/aws_download/spot/klines-1m",
            "report_path": f"{lh}/reports/aws_parse/spot/klines-1m",
        },
        "symbols": SYMBOLS,
        "trade_type": "spot",
        # its symbols the download shard did not finish are skipped (docs/shards.md)
        "upstream_shard_reports": [f"{lh}/reports/aws_download/spot/klines-1m/shards/0.json"],
        "retry_generation": 0,  # no shard report yet
    }
    stages = ["aws_download", "aws_parse", "api_download", "gen_kline", "resample", "features"]
    # The run's start (the page's slowest jobs are those that ended after it): this run's.
    started = by_script["report"].pop("started_unix")
    assert time.time() - 600 < started <= time.time()
    assert by_script["report"] == {
        "coverage": f"{lh}/report/coverage.parquet",
        "data_dir": str(data),
        "datasets": [],  # the datasets target's summaries: none with the default lists
        "end_date": "2024-03-03",
        "figures_dir": f"{lh}/report/figures",
        "index": f"{lh}/report/index.html",
        "interval": "1m",
        # the run's symbols, for those without records (failed before writing any)
        "kline_listings": {"spot": f"{lh}/listing/spot/klines-1m.json"},
        "stale_after_hours": 48,
        # the run's stages and trade types: one the config leaves out shows as off
        "stages": {stage: ["spot"] for stage in stages},
        "summaries": [f"{lh}/summaries/{stage}/spot.json" for stage in stages],
        "trade_types": ["spot"],
    }
    # One exchange_info job fetches every trade type of the run (issue 11).
    [fetch] = by_script["exchange_info"]["fetches"]
    assert fetch["out_path"] == f"{lh}/exchange_info/spot.json"


def test_s3_data_dir_keeps_snakemake_files_in_a_local_run_dir(tmp_path):
    run_dir = "lakehouse_runs/bucket/team/binance"
    _listing_in(tmp_path / run_dir, tmp_path / "scratch")
    config = {"data_dir": "s3://bucket/team/binance", **DATES}
    jobs = _jobs(run_snakemake(tmp_path, "-n", "-p", "report", config=config))
    assert len(jobs) == 14
    for script, job, log in jobs:
        assert log.startswith(f"{run_dir}/logs/"), log
        if "data_dir" in job:
            assert job["data_dir"] == "s3://bucket/team/binance", script
        assert "run_dir" not in job  # the default: the report job derives it as the rules do
    parse = next(job for script, job, _ in jobs if script == "aws_parse_klines")
    assert parse["shard_report"] == f"{run_dir}/reports/aws_parse/spot/klines-1m/shards/0.json"
    assert parse["symbol_paths"]["download_report"] == (
        f"{run_dir}/reports/aws_download/spot/klines-1m"
    )


def test_configured_run_dir_holds_the_run_files_of_a_local_data_dir(tmp_path):
    data, runs = tmp_path / "d", tmp_path / "runs" / "r1"
    _listing_in(runs, tmp_path / "scratch")
    config = {"data_dir": str(data), "run_dir": str(runs), **DATES}
    jobs = _jobs(run_snakemake(tmp_path, "-n", "-p", "report", config=config))
    by_script = {script: job for script, job, _ in jobs}
    assert by_script["report"]["run_dir"] == str(runs)
    assert by_script["report"]["index"] == f"{runs}/report/index.html"
    assert by_script["aws_parse_klines"]["data_dir"] == str(data)
    assert all(log.startswith(f"{runs}/logs/") for _, _, log in jobs)


def test_run_dir_on_s3_is_refused_by_name(tmp_path):
    config = {"data_dir": "s3://bucket/x", "run_dir": "s3://bucket/runs"}
    proc = run_snakemake(tmp_path, "-n", config=config, check=False)
    assert proc.returncode != 0
    assert "config key 'run_dir': 's3://bucket/runs' is on S3" in proc.stdout + proc.stderr
