"""Target `all` and the datasets beyond klines and funding (config `datasets:`)."""

from __future__ import annotations

from tests.workflow.workflow_helpers import job_counts, run_snakemake, write_listing_index


def _listings(data):
    write_listing_index(data, "spot", "klines-1m", ["AAAUSDT"])
    write_listing_index(data, "um_futures", "klines-1m", ["AAAUSDT"])
    write_listing_index(data, "um_futures", "funding", ["AAAUSDT"])


def test_all_plans_no_dataset_job_by_default(tmp_path):
    data = tmp_path / "d"
    _listings(data)
    config = {"data_dir": str(data), "trade_types": ["spot", "um_futures"], "shards": 1}
    counts = job_counts(run_snakemake(tmp_path, "-n", config=config).stdout)
    assert counts["aws_parse_klines"] == 2
    assert not {"aws_parse_ticks", "aws_parse_kline_layout", "summarize_datasets"} & set(counts)


def test_all_plans_the_configured_datasets(tmp_path):
    data = tmp_path / "d"
    _listings(data)
    write_listing_index(data, "um_futures", "aggTrades", ["AAAUSDT", "BBBUSDT"])
    write_listing_index(data, "um_futures", "markPriceKlines-1m", ["AAAUSDT"])
    config = {
        "data_dir": str(data),
        "trade_types": ["spot", "um_futures"],
        "shards": 1,
        "datasets": {"um_futures": ["klines", "funding", "aggTrades", "markPriceKlines"]},
    }
    counts = job_counts(run_snakemake(tmp_path, "-n", config=config).stdout)
    # One shard each (shards: 1): aggTrades and markPriceKlines downloads and parses, plus
    # the klines and funding jobs of the default plan; one datasets summary (um only).
    assert counts["aws_parse_ticks"] == 1
    assert counts["aws_parse_kline_layout"] == 1
    assert counts["aws_download_shard"] == 2 + 1 + 2  # klines spot+um, funding um, datasets
    assert counts["summarize_datasets"] == 1
    assert counts["aws_parse_klines"] == 2


def test_agg_klines_interval_must_divide_a_day(tmp_path):
    data = tmp_path / "d"
    _listings(data)
    config = {
        "data_dir": str(data),
        "trade_types": ["spot", "um_futures"],
        "datasets": {"um_futures": ["klines", "funding", "aggTrades"]},
        "agg_klines": {"intervals": ["1s", "7m"]},
    }
    proc = run_snakemake(tmp_path, "-n", config=config, check=False)
    assert proc.returncode != 0
    assert "config key 'agg_klines.intervals[1]': '7m' does not divide a day" in (
        proc.stdout + proc.stderr
    )


def test_all_plans_agg_klines_per_interval(tmp_path):
    data = tmp_path / "d"
    _listings(data)
    write_listing_index(data, "um_futures", "aggTrades", ["AAAUSDT"])
    config = {
        "data_dir": str(data),
        "trade_types": ["spot", "um_futures"],
        "shards": 1,
        # spot lists no aggTrades: candles for um only.
        "datasets": {"um_futures": ["klines", "funding", "aggTrades"]},
        "agg_klines": {"intervals": ["1s", "1m"]},
    }
    counts = job_counts(run_snakemake(tmp_path, "-n", config=config).stdout)
    assert counts["agg_klines_shard"] == 2
    assert counts["aws_parse_ticks"] == 1


def test_the_report_is_written_after_the_datasets_summaries(tmp_path):
    # The report's section 6 shows the datasets summaries: target `report` needs them (before,
    # its inputs were the stages' summaries only, so `all` could write the page first).
    data = tmp_path / "d"
    _listings(data)
    write_listing_index(data, "um_futures", "metrics", ["AAAUSDT"])
    config = {
        "data_dir": str(data),
        "trade_types": ["spot", "um_futures"],
        "shards": 1,
        "datasets": {"um_futures": ["klines", "funding", "metrics"]},
    }
    counts = job_counts(run_snakemake(tmp_path, "-n", "report", config=config).stdout)
    assert counts["summarize_datasets"] == 1
    assert counts["aws_parse_ticks"] == 1
    del config["datasets"]
    counts = job_counts(run_snakemake(tmp_path, "-n", "report", config=config).stdout)
    assert "summarize_datasets" not in counts
