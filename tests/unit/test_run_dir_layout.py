"""The run directory's paths are built by ``crypto_lakehouse.layout`` only (issue 17 item 1).

Expected strings are the layout documented in docs/architecture.md and docs/summaries.md,
written out by hand; the rules pass wildcard placeholders through unchanged."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from crypto_lakehouse import layout

REPO = Path(__file__).resolve().parents[2]
RUN = "/d/lakehouse"


def test_default_run_dir_is_lakehouse_below_data_dir():
    assert layout.default_run_dir("/d") == RUN


@pytest.mark.parametrize(
    "built, expected",
    [
        (
            layout.stage_report_path(RUN, "aws_parse", "spot", "klines-1m", "BTCUSDT"),
            "/d/lakehouse/reports/aws_parse/spot/klines-1m/BTCUSDT.json",
        ),
        (
            layout.shard_report_path(
                RUN, "gen_kline", "{trade_type}", "klines-{interval}", "{shard}"
            ),
            "/d/lakehouse/reports/gen_kline/{trade_type}/klines-{interval}/shards/{shard}.json",
        ),
        (
            layout.api_shard_report_path(RUN, "{trade_type}", "{shard}"),
            "/d/lakehouse/reports/api_download/{trade_type}/shards/{shard}.json",
        ),
        (
            layout.shard_log_path(RUN, "resample", "{trade_type}", "klines-{interval}", "{shard}"),
            "/d/lakehouse/logs/resample/{trade_type}/klines-{interval}/shards/{shard}.log",
        ),
        (
            layout.shard_benchmark_path(RUN, "resample", "um_futures", "klines-1h", "s001"),
            "/d/lakehouse/benchmarks/resample/um_futures/klines-1h/shards/s001.tsv",
        ),
        (layout.job_log_path(RUN, "report", "report"), "/d/lakehouse/logs/report/report.log"),
        (
            layout.run_listing_index_path(RUN, "spot", "klines-1m"),
            "/d/lakehouse/listing/spot/klines-1m.json",
        ),
        (
            layout.run_listing_details_dir(RUN, "spot", "funding"),
            "/d/lakehouse/listing/spot/funding",
        ),
        (
            layout.exchange_info_path(RUN, "cm_futures"),
            "/d/lakehouse/exchange_info/cm_futures.json",
        ),
        (
            layout.run_summary_path(RUN, "aws_parse", "spot"),
            "/d/lakehouse/summaries/aws_parse/spot.json",
        ),
        (layout.run_report_path(RUN, "index.html"), "/d/lakehouse/report/index.html"),
        (
            layout.stats_path_for("/d/lakehouse/reports/aws_parse/spot/klines-1m/BTCUSDT.json"),
            "/d/lakehouse/stats/aws_parse/spot/klines-1m/BTCUSDT.json",
        ),
    ],
)
def test_run_dir_paths(built, expected):
    assert built == expected


def test_run_dir_defaults_and_config():
    """Local data dir: {data_dir}/lakehouse (as before run_dir existed); S3: a folder below
    the working directory named after bucket and prefix; a configured one wins; never S3."""
    assert layout.run_dir("/d") == RUN
    assert layout.run_dir("s3://bucket/team/binance") == "lakehouse_runs/bucket/team/binance"
    assert layout.run_dir("s3://bucket") == "lakehouse_runs/bucket"
    assert layout.run_dir("s3://bucket/p/", None) == "lakehouse_runs/bucket/p"
    assert layout.run_dir("s3://bucket/p", "/runs/x/") == "/runs/x"
    assert layout.run_dir("/d", "runs/") == "runs"
    with pytest.raises(ValueError, match="must be a local folder"):
        layout.run_dir("/d", "s3://bucket/runs")


def test_run_dir_of_a_job_log():
    log = layout.shard_log_path("runs/b/logs", "aws_parse", "spot", "klines-1m", "3")
    assert layout.run_dir_of_log(log) == "runs/b/logs"
    with pytest.raises(ValueError):
        layout.run_dir_of_log("/tmp/x.log")


# Path building under the run directory that must live in layout.py, not in the rules.
_FORBIDDEN = [
    re.compile(r"f\"\{LH\}/"),
    re.compile(
        r"[\"'][^\"'\n]*/(?:reports|logs|benchmarks|listing|summaries|exchange_info|stats)/"
    ),
    re.compile(r"/lakehouse[\"'/]"),
]


def _workflow_sources():
    return [
        REPO / "Snakefile",
        REPO / "crypto_lakehouse" / "smk.py",
        *sorted(REPO.glob("rules/*.smk")),
    ]


def test_forbidden_patterns_do_detect_path_building():
    samples = [
        'f"{LH}/logs/x.log"',
        '"/reports/"',
        'f"{run}/summaries/{stage}.json"',
        'f"{DATA}/lakehouse"',
    ]
    for sample in samples:
        assert any(p.search(sample) for p in _FORBIDDEN), sample


@pytest.mark.parametrize("path", _workflow_sources(), ids=lambda p: p.name)
def test_workflow_sources_build_no_run_dir_paths(path):
    code_lines = [
        (n, line)
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if not line.lstrip().startswith("#")
    ]
    offending = [
        f"{path.name}:{n}: {line.strip()}"
        for n, line in code_lines
        if any(p.search(line) for p in _FORBIDDEN)
    ]
    assert not offending, "run-dir paths belong in crypto_lakehouse/layout.py:\n" + "\n".join(
        offending
    )
