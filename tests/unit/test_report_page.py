"""The report page as the `report` job writes it (``run_report``): what its sections say
about the run's symbols and its jobs, read back from the HTML."""

from __future__ import annotations

import errno
import json
import re
from html import unescape
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crypto_lakehouse import layout, storage
from crypto_lakehouse.report import figures, records
from crypto_lakehouse.report.job import MAX_LISTED, run_report, verify_command

END_DATE = "2024-01-10"
END_MS = 1704931200000  # 2024-01-11 00:00 UTC: the end of END_DATE
MIN = 60_000
BENCH_HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def _generated_file(data_dir, symbol: str, rows: int, end_ms: int = END_MS) -> None:
    """A generated candle file whose last candle closes at ``end_ms``."""
    first = end_ms - rows * MIN
    times = pa.array(np.arange(rows, dtype=np.int64) * MIN + first, pa.int64())
    table = pa.table({"candle_begin_time": times.cast(pa.timestamp("ms", tz="UTC"))})
    path = layout.results_klines_dir(data_dir, "spot", "1m") / f"{symbol}.pqt"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.replace_schema_metadata({b"quality_gates": b"{}"}), path)


def _listing_index(run_dir, index: dict) -> str:
    """A kline listing index in the form list_archive writes (archive/listing.py)."""
    path = Path(layout.run_listing_index_path(str(run_dir), "spot", "klines-1m"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(index))
    return str(path)


def _write_page(data_dir, run=None, **extra) -> str:
    """The page of ``data_dir``, its run directory ``run`` (default: the data dir's own,
    then not passed, as the rule does)."""
    if run is not None:
        extra["run_dir"] = str(run)
    run = layout.default_run_dir(str(data_dir)) if run is None else str(run)
    index = layout.run_report_path(run, "index.html")
    run_report(
        data_dir=str(data_dir),
        interval="1m",
        trade_types=["spot"],
        end_date=END_DATE,
        stale_after_hours=48,
        index=index,
        coverage=layout.run_report_path(run, "coverage.parquet"),
        figures_dir=layout.run_report_path(run, "figures"),
        **extra,
    )
    return Path(index).read_text()


def _section(html: str, anchor: str) -> str:
    start = html.index(f'<section id="{anchor}">')
    return html[start : html.index("</section>", start)]


def _rows(table_html: str) -> list[list[str]]:
    return [
        re.findall(r"<td[^>]*>(.*?)</td>", row)
        for row in re.findall(r"<tr>(.*?)</tr>", table_html)
        if "<td" in row
    ]


def _entry(n_files: int) -> dict:
    return {"digest": "d" * 64, "n_files": n_files, "last_day": END_DATE}


def test_a_run_symbol_without_any_record_is_listed_stale_with_its_reason(tmp_path):
    # BTCUSDT is complete. ETHUSDT was listed but failed before anything was written (every
    # archive download failed): no provenance, no generated file. DOGEUSDT's listing failed;
    # NEWUSDT is configured but not in the archive. Before, only BTCUSDT showed: the symbols
    # came from the records (provenance), which never name the others.
    data = tmp_path / "d"
    _generated_file(data, "BTCUSDT", rows=600)
    listing = _listing_index(
        layout.default_run_dir(str(data)),
        {
            "trade_type": "spot",
            "dataset": "klines",
            "interval": "1m",
            "symbols": {
                "BTCUSDT": _entry(10),
                "ETHUSDT": _entry(10),
                "DOGEUSDT": {"digest": "listing-failed", "n_files": 0, "last_day": None},
            },
            "failed": {"DOGEUSDT": "listing failed after 3 retries: HTTP 503"},
            "not_listed": ["NEWUSDT"],
            "no_files": [],
        },
    )
    html = _write_page(data, kline_listings={"spot": listing})
    freshness = _section(html, "freshness")
    assert "Stale symbols (3)</h3>" in freshness
    stale_table = freshness[freshness.index("Stale symbols") :]
    reasons = {row[1]: row[-1] for row in _rows(stale_table)}
    assert reasons == {
        "ETHUSDT": "no generated candles",
        "DOGEUSDT": "no generated candles (listing failed after 3 retries: HTTP 503)",
        "NEWUSDT": "no generated candles (not in the archive listing)",
    }
    # The count table: 4 symbols of spot, 3 of them stale.
    counts = _rows(freshness[: freshness.index("Stale symbols")])
    assert counts[0][:3] == ["spot", "4", "3"]
    # Coverage names the run's symbols it has no row for (BTCUSDT has one: its file).
    coverage = _section(html, "coverage")
    assert (
        "3 symbol(s) of the run's spot listing have no coverage row (no provenance record, "
        "no generated file): DOGEUSDT, ETHUSDT, NEWUSDT." in coverage
    )


def test_a_symbol_no_longer_configured_is_stale_and_says_why(tmp_path):
    # OLDUSDT was removed from the config's symbols: its files stay (nothing is deleted) and
    # no longer grow. Its lag alone read as a data problem of a symbol the run still updates.
    data = tmp_path / "d"
    _generated_file(data, "BTCUSDT", rows=600)
    _generated_file(data, "OLDUSDT", rows=600, end_ms=END_MS - 5 * 1440 * MIN)
    _generated_file(data, "LAGUSDT", rows=600, end_ms=END_MS - 3 * 1440 * MIN)
    listing = _listing_index(
        layout.default_run_dir(str(data)),
        {
            "trade_type": "spot",
            "dataset": "klines",
            "interval": "1m",
            "symbols": {"BTCUSDT": _entry(10), "LAGUSDT": _entry(10)},
            "not_listed": [],
            "no_files": [],
        },
    )
    freshness = _section(_write_page(data, kline_listings={"spot": listing}), "freshness")
    stale = _rows(freshness[freshness.index("Stale symbols") :])
    reasons = {row[1]: unescape(row[-1]) for row in stale}
    assert reasons == {
        "OLDUSDT": "lag over 48 h (not among this run's symbols: its files are from earlier runs)",
        "LAGUSDT": "lag over 48 h",
    }


def test_a_symbol_whose_generated_file_is_unreadable_is_not_said_to_have_no_candles(tmp_path):
    # A damaged generated file was left out of the coverage (logged) and its symbol listed
    # as "no generated candles": the page said the file did not exist.
    data = tmp_path / "d"
    _generated_file(data, "BTCUSDT", rows=600)
    _generated_file(data, "ETHUSDT", rows=600)
    damaged = layout.results_klines_dir(data, "spot", "1m") / "ETHUSDT.pqt"
    damaged.write_bytes(damaged.read_bytes()[:100])
    listing = _listing_index(
        layout.default_run_dir(str(data)),
        {"symbols": {s: _entry(3) for s in ("BTCUSDT", "ETHUSDT")}},
    )
    freshness = _section(_write_page(data, kline_listings={"spot": listing}), "freshness")
    stale = _rows(freshness[freshness.index("Stale symbols") :])
    assert [row[1] for row in stale] == ["ETHUSDT"]
    reason = unescape(stale[0][-1])
    assert reason.startswith(f"generated file unreadable ({damaged}: ")
    assert "no generated candles" not in reason
    # The whole command, with the data dir (before: `crypto-lakehouse verify --remove`).
    assert f"`crypto-lakehouse verify {data} --remove`" in reason


@pytest.mark.parametrize(
    "error, says",
    [
        (PermissionError(errno.EACCES, "Permission denied"), "an error of the machine"),
        (storage.StorageError("s3://b/d/ETHUSDT.pqt: AWS Error SLOW_DOWN"), "a storage error"),
    ],
)
def test_a_generated_file_unreadable_for_a_reason_other_than_damage_is_not_to_be_removed(
    tmp_path, monkeypatch, error, says
):
    # Every read error was called damage, with `verify --remove` as the repair: a file that
    # could not be read for a missing permission or a failing S3 request is not damaged,
    # and removing it throws away good data.
    data = tmp_path / "d"
    _generated_file(data, "BTCUSDT", rows=600)
    _generated_file(data, "ETHUSDT", rows=600)
    real = storage.parquet_metadata

    def metadata(path):
        if Path(str(path)).name == "ETHUSDT.pqt":
            raise error
        return real(path)

    monkeypatch.setattr(storage, "parquet_metadata", metadata)
    listing = _listing_index(
        layout.default_run_dir(str(data)),
        {"symbols": {s: _entry(3) for s in ("BTCUSDT", "ETHUSDT")}},
    )
    freshness = _section(_write_page(data, kline_listings={"spot": listing}), "freshness")
    stale = _rows(freshness[freshness.index("Stale symbols") :])
    assert [row[1] for row in stale] == ["ETHUSDT"]
    reason = unescape(stale[0][-1])
    assert reason.startswith("generated file unreadable (")
    assert says in reason and "not a damaged file" in reason
    assert "verify" not in reason and "--forcerun" not in reason


def test_the_verify_command_of_an_s3_data_dir_carries_the_storage_settings(monkeypatch):
    monkeypatch.setattr(
        storage,
        "_SETTINGS",
        {**storage.DEFAULTS, "endpoint_url": "http://127.0.0.1:8333", "addressing_style": "path"},
    )
    assert verify_command("s3://bucket/enhanced") == (
        "crypto-lakehouse verify s3://bucket/enhanced --remove "
        "--endpoint-url http://127.0.0.1:8333 --addressing-style path"
    )


def test_symbols_without_candles_head_the_stale_list_before_those_lagging(tmp_path):
    # The list is cut at MAX_LISTED rows: the symbols without any candle must not be the
    # ones cut behind hundreds of long-delisted symbols.
    data = tmp_path / "d"
    _generated_file(data, "OLDUSDT", rows=60, end_ms=END_MS - 3 * 1440 * MIN)
    _generated_file(data, "BTCUSDT", rows=60)
    listing = _listing_index(
        layout.default_run_dir(str(data)),
        {"symbols": {s: _entry(3) for s in ("BTCUSDT", "ETHUSDT", "OLDUSDT")}},
    )
    freshness = _section(_write_page(data, kline_listings={"spot": listing}), "freshness")
    stale = _rows(freshness[freshness.index("Stale symbols") :])
    assert [(row[1], row[2], row[-1]) for row in stale] == [
        ("ETHUSDT", "–", "no generated candles"),
        ("OLDUSDT", "2024-01-08 00:00", "lag over 48 h"),
    ]
    assert stale[1][3] == f"{3 * 1440:,}"  # lag_minutes


def test_run_symbols_of_a_missing_or_unreadable_index_are_none(tmp_path, caplog):
    # The listing of a failed run may have written no index: the page is still written.
    assert records.run_symbols(tmp_path / "absent.json") == {}
    torn = tmp_path / "torn.json"
    torn.write_text('{"symbols": {"BTC')
    caplog.set_level("WARNING")
    assert records.run_symbols(torn) == {}
    assert "torn.json" in caplog.text


def test_table_figures_from_1000_to_9999_are_not_in_exponent_notation():
    # A features job's max RSS of 1287.3 MB showed as "1.29e+03" in the slowest jobs table
    # (":,.3g" below 1e4); three significant digits below 1000, whole numbers above.
    from crypto_lakehouse.report.page import fmt

    assert [fmt(v) for v in (1287.3, 9999.4, 12345.6, 173.75, 0.987)] == [
        "1,287", "9,999", "12,346", "174", "0.987"
    ]  # fmt: skip
    # 999.5 … 999.99 round to 1000 at three digits, which ":.3g" writes "1e+03"
    assert [fmt(v) for v in (999.4, 999.7, 99.97)] == ["999", "1,000", "100"]


def test_unmeasured_memory_and_cpu_of_short_jobs_show_as_not_measured(tmp_path):
    # Figures as Snakemake 9.27 wrote them for this pipeline's jobs: a 0.32 s job sampled
    # after its process was gone (0.00), a 0.29 s job sampled at its start (the shell:
    # 2.10 MB, 0.00 s), a job never sampled (NA), and a 4.8 s job measured; besides, a
    # made-up 0.9 s job whose CPU time reads 0.00 (its memory measured).
    data = tmp_path / "d"
    root = Path(layout.run_benchmarks_dir(layout.default_run_dir(str(data))))
    tables = {
        "api_download/spot/shards/0": "0.32\t0:00:00\t0.00\t0.00\t0.28\t0.78\t0.00\t0.00\t0.00\t0.00",
        "gen_kline/spot/klines-1m/shards/0": "0.29\t0:00:00\t2.10\t3.92\t0.20\t0.52\t0.00\t0.00\t0.00\t0.00",
        "summaries/gen_kline/run": "0.61\t0:00:00\tNA\tNA\tNA\tNA\tNA\tNA\tNA\tNA",
        "aws_parse/spot/klines-1m/shards/0": "0.90\t0:00:00\t120.50\t1\t1\t1\t0\t0\t0\t0.00",
        "report/report": "4.80\t0:00:04\t173.75\t1799.66\t113.57\t134.75\t1.44\t0.18\t45.69\t0.99",
    }
    for job, line in tables.items():
        path = root / f"{job}.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(BENCH_HEADER + line + "\n")
    got = records.read_benchmarks(layout.default_run_dir(str(data))).set_index("job")
    measured = got.loc["report/report", ["max_rss_mb", "cpu_time"]].tolist()
    assert measured == [173.75, 0.99]
    zero_cpu = got.loc["aws_parse/spot/klines-1m/shards/0", ["max_rss_mb", "cpu_time"]]
    assert zero_cpu["max_rss_mb"] == 120.5 and np.isnan(zero_cpu["cpu_time"])
    short = ["api_download/spot/shards/0", "gen_kline/spot/klines-1m/shards/0"]
    unmeasured = got.loc[[*short, "summaries/gen_kline/run"], ["max_rss_mb", "cpu_time"]]
    assert unmeasured.isna().all().all(), unmeasured
    slowest = _section(_write_page(data), "the-run")
    slowest = slowest[slowest.index("slowest jobs") :]
    by_job = {row[0]: row[3:5] for row in _rows(slowest)}
    assert by_job["report/report"] == ["174", "0.99"]
    for job in short:
        assert by_job[job] == ["–", "–"], job
    assert "not measured" in slowest


def test_the_datasets_section_shows_each_datasets_summary(tmp_path):
    # Before, the page said nothing of the datasets target (aggTrades, trades, metrics,
    # mark/index/premium klines): its summaries were read by no section.
    data = tmp_path / "d"
    summary = {
        "stage": "datasets", "trade_type": "spot", "symbols": 2,
        "datasets": {
            "aggTrades": {"symbols": 2, "rows": 17000, "days": 9, "days_empty": 1,
                          "days_missing": 2, "files_verified": 10,
                          "files_quarantined_download": 0, "files_quarantined_parse": 1},
            "trades": {"symbols": 1, "rows": 16895, "days": 5, "files_verified": 5,
                       "files_quarantined_download": 2, "files_quarantined_parse": 0},
        },
        "problems": {"aggTrades/BTCUSDT": {"quarantined": {"k": "k: line 5: bad"}}},
        "totals": {}, "figures": {},
    }  # fmt: skip
    path = Path(layout.run_summary_path(layout.default_run_dir(str(data)), "datasets", "spot"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary))
    # As the rule calls it: the datasets summaries are its named input ``datasets``.
    rows = _rows(_section(_write_page(data, datasets=[str(path)]), "datasets"))
    assert rows == [
        ["spot", "aggTrades", "2", "17,000", "9", "1", "2", "10", "0", "1", "–", "1"],
        # A summary written before days_empty/days_missing existed: shown as unknown.
        ["spot", "trades", "1", "16,895", "5", "–", "–", "5", "2", "0", "–", "0"],
    ]
    path.unlink()
    assert "no datasets summary" in _section(_write_page(data), "datasets")


def test_the_run_section_names_the_run_directory_it_read(tmp_path):
    # An s3:// data dir (or a configured run_dir) keeps the summaries and benchmark files
    # outside the data dir; the page said "lakehouse/summaries/" whatever the run_dir.
    data, run = tmp_path / "data", tmp_path / "runs" / "bucket" / "prefix"
    html = _write_page(data, run=run)
    assert (run / "report" / "index.html").read_text() == html
    section = _section(html, "the-run")
    assert f"from the run summaries ({run}/summaries/)" in section
    assert f"benchmark files ({run}/benchmarks/)" in section
    assert f"no benchmark files ({run}/benchmarks/)" in section
    assert "lakehouse/" not in section
    # The legend's example values are set apart from its prose: it read "(none: no trade type
    # of it finished, …; spot, um_futures; none: cm_futures: the trade types after none did
    # not finish, …)", which a first-time reader could not parse.
    assert "<code>spot, um_futures; none: cm_futures</code>: the trade types after" in section
    assert "<code>none</code>: no trade type of it finished" in section
    assert "<code>off</code>: the config leaves the stage out" in section
    # Section 6 too: the datasets summaries are in the run directory's summaries folder.
    section = _section(html, "datasets")
    assert f"from its run summaries ({run}/summaries/datasets/)" in section
    assert "lakehouse/" not in section


def test_a_kept_symbol_without_candles_says_what_its_download_found(tmp_path):
    # `symbols: all` with lookback_days lists every delisted symbol of the archive: none has
    # a file in the run's dates, and each showed as "no generated candles" with no reason,
    # like a symbol whose data went missing.
    data = tmp_path / "d"
    run = layout.default_run_dir(str(data))
    _generated_file(data, "BTCUSDT", rows=600)
    downloads = {
        "OLDUSDT": {"files": {}, "quarantined": {}},
        "BADUSDT": {"files": {}, "quarantined": {"data/spot/x.zip": "bad checksum"}},
        "BTCUSDT": {"files": {"data/spot/y.zip": "ab"}, "quarantined": {}},
    }
    for symbol, report in downloads.items():
        path = Path(layout.stage_report_path(run, "aws_download", "spot", "klines-1m", symbol))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"symbol": symbol, **report}))
    # SOLUSDT: one zip failed in this run, so no report of its own and the symbol held back
    # from every later stage; its shard report says so.
    shard = Path(layout.shard_report_path(run, "aws_download", "spot", "klines-1m", "0"))
    shard.parent.mkdir(parents=True, exist_ok=True)
    error = "SyncError: spot klines-1m SOLUSDT: 1 file(s) still missing:\n  data/s.zip: HTTP 500"
    shard.write_text(json.dumps({"symbols": {
        "SOLUSDT": {"status": "failed", "error": error},
        "OLDUSDT": {"status": "ok"},
    }}))  # fmt: skip
    names = ("BTCUSDT", "OLDUSDT", "BADUSDT", "ETHUSDT", "SOLUSDT")
    listing = _listing_index(run, {"symbols": {s: _entry(3) for s in names}})
    freshness = _section(_write_page(data, kline_listings={"spot": listing}), "freshness")
    reasons = {row[1]: row[-1] for row in _rows(freshness[freshness.index("Stale symbols") :])}
    assert reasons == {
        "OLDUSDT": "no generated candles (no archive file in the date range)",
        "BADUSDT": "no generated candles (all 1 archive file(s) quarantined)",
        "SOLUSDT": "no generated candles (its download failed: SyncError: spot klines-1m "
        "SOLUSDT: 1 file(s) still missing: data/s.zip: HTTP 500)",
        "ETHUSDT": "no generated candles",  # no report at all: its download never ran
    }


def test_delisted_symbols_without_candles_hide_neither_failures_nor_lagging_ones(
    tmp_path, monkeypatch
):
    # `symbols: all` lists hundreds of delisted symbols without any archive file in the
    # run's dates. Before, one list cut at MAX_LISTED rows showed the symbols without
    # candles first, in name order: they pushed the lagging symbols, and a symbol whose
    # download failed, out of view.
    from crypto_lakehouse.report import job

    monkeypatch.setattr(job, "MAX_LISTED", 2)
    data = tmp_path / "d"
    run = layout.default_run_dir(str(data))
    _generated_file(data, "ZLAGUSDT", rows=60, end_ms=END_MS - 3 * 1440 * MIN)
    delisted = ("AAAUSDT", "BBBUSDT", "CCCUSDT")
    for symbol in delisted:
        path = Path(layout.stage_report_path(run, "aws_download", "spot", "klines-1m", symbol))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"symbol": symbol, "files": {}, "quarantined": {}}))
    shard = Path(layout.shard_report_path(run, "aws_download", "spot", "klines-1m", "0"))
    shard.parent.mkdir(parents=True, exist_ok=True)
    shard.write_text(json.dumps({"symbols": {"YFAILUSDT": {"status": "failed", "error": "E"}}}))
    names = (*delisted, "YFAILUSDT", "ZLAGUSDT")
    listing = _listing_index(run, {"symbols": {s: _entry(3) for s in names}})
    freshness = _section(_write_page(data, kline_listings={"spot": listing}), "freshness")
    assert "Stale symbols (5)</h3>" in freshness
    assert "Without generated candles (4; 3 of them without any archive file" in freshness
    assert "Lagging more than 48 h (1)</h4>" in freshness
    rows = _rows(freshness[freshness.index("Stale symbols") :])
    assert [(row[1], row[-1]) for row in rows] == [
        ("YFAILUSDT", "no generated candles (its download failed: E)"),
        ("AAAUSDT", "no generated candles (no archive file in the date range)"),
        ("ZLAGUSDT", "lag over 48 h"),
    ]


def test_a_run_stopped_without_a_failed_job_is_still_called_failed(tmp_path):
    # SIGTERM of Snakemake while SLURM jobs ran: it waits for them, ends with "At least one
    # job did not complete successfully" and onerror writes the page, with no failed job to
    # list. The page had no box then and read like a complete run's, while the console said
    # "report of the failed run".
    from crypto_lakehouse.report.job import report_after_failure

    data = tmp_path / "d"
    _generated_file(data, "BTCUSDT", rows=600)
    run = layout.default_run_dir(str(data))
    args = dict(
        data_dir=str(data),
        interval="1m",
        trade_types=["spot"],
        end_date=END_DATE,
        stale_after_hours=48,
        index=layout.run_report_path(run, "index.html"),
        coverage=layout.run_report_path(run, "coverage.parquet"),
        figures_dir=layout.run_report_path(run, "figures"),
    )
    assert report_after_failure([], 0, **args).endswith("index.html")
    html = Path(args["index"]).read_text()
    alert = html[html.index('id="failed-run"') : html.index("</div>", html.index("failed-run"))]
    assert "The run that wrote this page failed</strong>. " in alert  # no "(0 job(s))"
    assert "No job failed: the run stopped before its end" in alert
    run_report(**args)  # the report job of a complete run: no box
    assert 'id="failed-run"' not in Path(args["index"]).read_text()


def test_every_section_has_its_link_at_the_top(tmp_path):
    # Section 6 (Datasets) had no link in the page's navigation.
    html = _write_page(tmp_path / "d")
    nav = html[html.index("<nav>") : html.index("</nav>")]
    links = re.findall(r'<a href="#([^"]+)">([^<]+)</a>', nav)
    sections = re.findall(r'<section id="([^"]+)"><h2>([^<]+)</h2>', html)
    assert len(sections) == 6
    assert links == sections


def test_the_day_not_over_when_the_report_runs_is_pending_in_the_shares_and_the_table(tmp_path):
    # With end_date unset, end_date is today: its candles cannot exist yet, and the page
    # showed them as missing for every symbol (~6 % of a two-week range).
    data = tmp_path / "d"
    _generated_file(data, "BTCUSDT", rows=2 * 1440, end_ms=END_MS - 1440 * MIN)  # to yesterday
    run = layout.default_run_dir(str(data))
    table = layout.run_report_path(run, "coverage.parquet")

    def coverage_at(now_ms: int):
        html = _write_page(data, now_ms=now_ms)
        shares = _rows(_section(html, "coverage"))
        header = re.findall(r"<th[^>]*>(.*?)</th>", _section(html, "coverage"))
        by_day = pq.read_table(table).to_pandas().set_index("day")
        return dict(zip(header, shares[0], strict=True)), by_day

    shares, by_day = coverage_at(END_MS - 11 * 3600 * 1000)  # END_DATE, 13:00 UTC
    last = by_day.loc[by_day.index.max()]
    assert str(by_day.index.max()) == END_DATE
    assert (last["minutes_pending"], last["minutes_missing"]) == (1440, 0)
    assert float(shares["pending %"]) == pytest.approx(100 / 3, abs=0.05)
    assert float(shares["missing %"]) == 0
    # the day over: its candles are missing (the REST stage fetches it in the next run)
    shares, by_day = coverage_at(END_MS)
    last = by_day.loc[by_day.index.max()]
    assert (last["minutes_pending"], last["minutes_missing"]) == (0, 1440)
    assert float(shares["missing %"]) == pytest.approx(100 / 3, abs=0.05)
    assert float(shares["pending %"]) == 0


def test_a_stage_the_config_leaves_out_is_off_not_a_failed_summary(tmp_path, monkeypatch):
    # features.enabled: false and no resample.targets: the run has no features or resample
    # stage. Section 4 said "none" for them (its text: the summary job did not finish), and
    # summaries an earlier run left of them were shown as this run's (rows and checks).
    data = tmp_path / "d"
    run = layout.default_run_dir(str(data))
    for stage in ("aws_download", "gen_kline", "resample", "features"):
        summary = {
            "stage": stage, "trade_type": "spot", "symbols": 3,
            "totals": {"files_written": 7, "files_held": 7},
            "problems": {"BTCUSDT": {"failures": [f"{stage} of an earlier run failed"]}},
        }  # fmt: skip
        path = Path(layout.run_summary_path(run, stage, "spot"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(summary))
    bench = Path(layout.run_benchmarks_dir(run)) / "features/spot/klines-1m/shards/0.tsv"
    bench.parent.mkdir(parents=True, exist_ok=True)
    bench.write_text(BENCH_HEADER + "2.0\t0:00:02\t100\t1\t1\t1\t0\t0\t0\t1.5\n")
    # As the rule passes them: the run's stages (plan.active_stages) and their trade types.
    stages = {"aws_download": ["spot"], "aws_parse": ["spot"], "api_download": ["spot"],
              "gen_kline": ["spot"], "resample": []}  # fmt: skip
    html = _write_page(data, stages=stages)
    rows = {r[0]: r[1:] for r in _rows(_section(html, "the-run").split("<h3>")[0])}
    assert rows["features"] == ["off (features.enabled: false)"] + ["–"] * 9
    assert rows["resample"] == ["off (no resample.targets)"] + ["–"] * 9
    assert rows["gen_kline"][:2] == ["spot", "3"]
    assert rows["aws_parse"][:2] == ["none", "–"]  # in the run, its summary missing
    checks = _section(html, "checks")
    assert "gen_kline of an earlier run failed" in checks
    assert "<td>resample</td>" not in checks  # no resample check row of an earlier run
    assert "resample of an earlier run" not in checks
    assert "features of an earlier run" not in checks
    # The time figure leaves them out too (empty bars there read as a stage of 0 s).
    drawn = []
    monkeypatch.setattr(figures, "stage_bars", lambda names, *a: drawn.append(names) or b"")
    _write_page(data, stages=stages)
    assert drawn == [["aws_download", "aws_parse", "api_download", "gen_kline"]]
    monkeypatch.undo()
    # Without stages (a caller from before), every summary found is shown.
    rows = {r[0]: r[1:] for r in _rows(_section(_write_page(data), "the-run").split("<h3>")[0])}
    assert rows["features"][:2] == ["spot", "3"]


def test_the_failures_list_of_section_5_is_cut_like_the_other_long_lists(tmp_path):
    # A failure of every symbol (symbols: all, one failing gate) listed each one: the page
    # grew with the universe. Cut at MAX_LISTED, with the count of the others and where.
    data = tmp_path / "d"
    run = layout.default_run_dir(str(data))
    problems = {
        f"S{i:04d}USDT": {"quality_failures": [f"gate ohlc failed {i}"]} for i in range(620)
    }
    path = Path(layout.run_summary_path(run, "gen_kline", "spot"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"symbols": 620, "totals": {}, "problems": problems}))
    checks = _section(_write_page(data), "checks")
    assert "<h3>Failures (620)</h3>" in checks
    assert checks.count("<li>") == MAX_LISTED
    assert "gate ohlc failed 0<" in checks and "gate ohlc failed 619<" not in checks
    assert f"… and {620 - MAX_LISTED} more in the summaries' problems ({run}/summaries/)" in checks


def test_the_score_caption_says_days_without_archive_count(tmp_path):
    # The symbol score is the mean over every day of the quality record, from the first to
    # the last archived day, a day the archive lacks scoring 0 (docs/quality.md); the
    # caption said "mean over the symbol's archived days", which would give 1 here.
    from crypto_lakehouse.quality import QUALITY_SCHEMA

    data = tmp_path / "d"
    folder = layout.quality_dir(data, "spot", "1m")
    folder.mkdir(parents=True)
    n = 3  # 2024-01-01 archived, 01-02 not in the archive, 01-03 archived
    table = pa.table(
        {
            "date": pa.array([19723, 19724, 19725], pa.int32()).cast(pa.date32()),
            "source": pa.array(["k1", None, "k3"], pa.string()),
            "rows": [1440, 0, 1440], "expected_rows": [1440] * n,
            "missing_rows": [0, 1440, 0], "zero_volume_rows": [0] * n,
            "longest_zero_volume_run": [0] * n, "ohlc_violations": [0] * n,
            "taker_violations": [0] * n, "score": [1.0, 0.0, 1.0],
        },
        schema=QUALITY_SCHEMA,
    )  # fmt: skip
    pq.write_table(table, folder / "BTCUSDT.pqt")
    _generated_file(data, "BTCUSDT", 2 * 1440)  # 2024-01-09 and 01-10: 2 heatmap days
    html = _write_page(data)
    assert "1 symbol (rows, sorted by first day) × 2 days;" in unescape(_section(html, "coverage"))
    quality = _section(html, "quality")
    assert _rows(quality)[0][:4] == ["spot", "BTCUSDT", "0.667", "3"]
    caption = unescape(re.search(r"<figcaption>(.*?)</figcaption>", quality).group(1))
    assert "mean over the days from the symbol's first to its last archived day" in caption
    assert "a day without archive rows scoring 0" in caption
    assert caption.startswith("1 symbol; score")  # not "1 symbols"
    assert "33.3% of candles missing (1 day without rows)" in quality  # not "1 days"


def test_slowest_jobs_are_this_runs_not_earlier_runs_nor_stages_switched_off(tmp_path):
    # The benchmark folder keeps each job's latest run. The slowest jobs listed a features
    # job of a run from before features.enabled was set false, and a download of a run a
    # week ago that this run did not redo, beside this run's jobs, unlabelled.
    import os

    data = tmp_path / "d"
    run = layout.default_run_dir(str(data))
    root = Path(layout.run_benchmarks_dir(run))
    started = 1_765_000_000.0  # 2025-12-06 05:46:40 UTC
    tables = {  # job: (seconds, end)
        "features/spot/klines-1m/shards/0": (900.0, started - 86_400),  # features, now off
        "aws_download/spot/klines-1m/shards/0": (700.0, started - 7 * 86_400),  # a week ago
        "gen_kline/spot/klines-1m/shards/0": (30.0, started + 100),  # this run's
        "aws_parse/spot/klines-1m/shards/0": (20.0, started + 50),  # this run's
    }
    for job, (seconds, end) in tables.items():
        path = root / f"{job}.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(BENCH_HEADER + f"{seconds}\t0:00:01\t100\t1\t1\t1\t0\t0\t0\t1.5\n")
        os.utime(path, (end, end))
    stages = {"aws_download": ["spot"], "aws_parse": ["spot"], "api_download": ["spot"],
              "gen_kline": ["spot"], "resample": ["spot"]}  # fmt: skip
    html = _write_page(data, stages=stages, started_unix=started)
    section = _section(html, "the-run")
    slowest = section[section.index("slowest jobs") :]
    rows = _rows(slowest)
    assert [row[0] for row in rows] == [
        "gen_kline/spot/klines-1m/shards/0",
        "aws_parse/spot/klines-1m/shards/0",
    ]
    assert rows[0][-1] == "2025-12-06 05:48"  # when it ended (UTC)
    assert "1 job of earlier runs" in unescape(slowest)
    assert "started 2025-12-06 05:46 UTC" in unescape(slowest)
    assert "the latest ended 2025-11-29 05:46 UTC" in unescape(slowest)
    assert "1 job of stages this run leaves out (features)" in unescape(slowest)
    # Run start unknown (a caller from before): the stage switched off still stays out.
    rows = _rows(_section(_write_page(data, stages=stages), "the-run").split("slowest jobs")[1])
    assert "features/spot/klines-1m/shards/0" not in [row[0] for row in rows]
    assert rows[0][0] == "aws_download/spot/klines-1m/shards/0"


def test_candles_past_end_date_count_as_lag_0_with_a_note_not_a_negative_lag(tmp_path):
    # A run with end_date 2024-01-12 wrote BTCUSDT's candles to its end; the user then ran
    # with end_date 2024-01-10 (END_DATE). The page showed a lag of -2880 minutes (the
    # count table's max lag, the histogram) for data two days past end_date.
    data = tmp_path / "d"
    _generated_file(data, "BTCUSDT", rows=600, end_ms=END_MS + 2 * 1440 * MIN)
    freshness = unescape(_section(_write_page(data), "freshness"))
    counts = _rows(freshness[: freshness.index("Stale symbols")])
    # trade type, symbols, stale, max lag, past end_date (the max lag read -2,880)
    assert counts[0] == ["spot", "1", "0", "0", "1"]
    assert "1 symbol with candles after the end of end_date (2024-01-10" in freshness
    assert "e.g. BTCUSDT" in freshness and "data past end_date, counted as lag 0" in freshness
    assert "-2880" not in freshness and "-2,880" not in freshness
    _generated_file(data, "ETHUSDT", rows=600, end_ms=END_MS - 90 * MIN)  # 90 min behind
    freshness = unescape(_section(_write_page(data), "freshness"))
    assert _rows(freshness[: freshness.index("Stale symbols")])[0] == ["spot", "2", "0", "90", "1"]
    got = records.freshness(
        records.pd.DataFrame(
            {"symbol": ["BTCUSDT"], "first_ms": [0], "end_ms": [END_MS + 2 * 1440 * MIN]}
        ),
        ["BTCUSDT"],
        END_MS // (1440 * MIN) - 1,
        "spot",
    )
    assert got["lag_minutes"].tolist() == [0] and got["past_end_date"].tolist() == [True]
