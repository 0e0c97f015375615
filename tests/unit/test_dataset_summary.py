"""Run summary of the archive datasets: rows, days and quarantines per dataset."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile

import pytest

from crypto_lakehouse import layout
from crypto_lakehouse.parse.klines import run_parse_klines
from crypto_lakehouse.summary import dataset_symbol_figures, headline, summarize_datasets

M = "data/futures/um/monthly/aggTrades/X/X-aggTrades-2024-03.zip"
D2 = "data/futures/um/daily/aggTrades/X/X-aggTrades-2024-03-02.zip"
BAD = "data/futures/um/daily/aggTrades/X/X-aggTrades-2024-03-05.zip"
SUM_BAD = "data/futures/um/daily/aggTrades/X/X-aggTrades-2024-03-06.zip"


def _tick_report():
    return {
        "files": {
            # The daily file of the 2nd replaces the month's rows of that day.
            D2: {"sha256": "b", "days": {"20240302": 25}},
            M: {"sha256": "a", "days": {"20240301": 10, "20240302": 20}},
        },
        "quarantined": {BAD: "line 4: agg_trade_id 3 does not increase", SUM_BAD: "checksum"},
    }


def test_tick_figures_count_each_day_once_and_split_quarantines():
    download = {"files": {M: {}, D2: {}}, "quarantined": {SUM_BAD: "checksum mismatch"}}
    got = dataset_symbol_figures(_tick_report(), download)
    assert got == {
        "rows": 10 + 25,
        "days": 2,
        "days_empty": 0,
        "days_missing": 0,
        "files_verified": 2,
        "files_quarantined_download": 1,
        "files_quarantined_parse": 1,
    }


def test_a_day_without_rows_is_told_from_a_missing_day():
    # 03-01 has 10 rows; the daily zip of 03-03 holds a header only (its day: 0 rows);
    # 03-02 and 03-04 have no file (03-04's zip was quarantined); 03-05 has 7 rows.
    day = "data/futures/um/daily/aggTrades/X/X-aggTrades-2024-03-{:02d}.zip"
    report = {
        "files": {
            day.format(1): {"sha256": "a", "days": {"20240301": 10}},
            day.format(3): {"sha256": "c", "days": {"20240303": 0}},
            day.format(5): {"sha256": "e", "days": {"20240305": 7}},
        },
        "quarantined": {day.format(4): "line 2: price is not a finite number"},
    }
    got = dataset_symbol_figures(report, {"files": {day.format(d): {} for d in (1, 3, 4, 5)}})
    assert (got["rows"], got["days"], got["days_empty"], got["days_missing"]) == (17, 3, 1, 2)
    summary = {"stage": "datasets", "trade_type": "um_futures", "symbols": 1, "totals": {},
               "problems": {}, "datasets": {"aggTrades": got}}  # fmt: skip
    assert "aggTrades: rows=17 days=3 (empty=1 missing=2)" in headline(summary)


def test_kline_layout_figures_come_from_partitions_and_quality():
    report = {
        "partitions": {"202401": {"rows": 1440}, "202402": {"rows": 60}},
        "quality": {"days": 2, "score": 0.75},
        "quarantined": {},
    }
    got = dataset_symbol_figures(report, {"files": {"a": {}, "b": {}}})
    assert got["rows"] == 1500 and got["days"] == 2 and got["quality_score"] == 0.75


@pytest.mark.parametrize("broken", ["2024-01-02", "2024-01-03"])
def test_kline_layout_days_are_the_days_parsed_wherever_the_missing_one_is(tmp_path, broken):
    # Three daily markPriceKlines zips; one has a row of 10 fields (quarantined by the real
    # kline parser). Two days were parsed and one is missing, whether the broken day is in
    # the middle or the last (before 2026-12-06: days=3 for the middle one, 2 for the last).
    header = ("open_time,open,high,low,close,volume,close_time,quote_volume,count,"
              "taker_buy_volume,taker_buy_quote_volume,ignore")  # fmt: skip
    data, files = tmp_path / "data", {}
    for n, day in enumerate(["2024-01-01", "2024-01-02", "2024-01-03"]):
        start = 1704067200000 + n * 86_400_000
        rows = [f"{start + i * 60000},42000.5,42001.0,41999.0,42000.25,0,"
                f"{start + i * 60000 + 59999},0,0,0,0,0" for i in range(1440)]  # fmt: skip
        if day == broken:
            rows[700] = ",".join(rows[700].split(",")[:10])
        key = layout.archive_key("um_futures", "markPriceKlines", "X", "1m", "daily", day)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(f"X-1m-{day}.csv", header + "\n" + "\n".join(rows) + "\n")
        path = layout.aws_path(data, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(buf.getvalue())
        layout.verified_marker(path).write_text("")
        files[key] = {"sha256": hashlib.sha256(buf.getvalue()).hexdigest()}
    run_parse_klines(
        trade_type="um_futures", symbol="X", interval="1m", data_dir=data,
        download_report={"files": files}, report_path=tmp_path / "parse.json",
        stats_path=tmp_path / "stats.json", dataset="markPriceKlines",
    )  # fmt: skip
    report = json.loads((tmp_path / "parse.json").read_text())
    assert len(report["quarantined"]) == 1
    got = dataset_symbol_figures(report, {"files": files})
    assert (got["rows"], got["days"]) == (2 * 1440, 2)
    # Missing: between the first and the last day parsed (the tick datasets' rule).
    assert got.get("days_missing") == (1 if broken == "2024-01-02" else 0)
    summary = {"stage": "datasets", "trade_type": "um_futures", "symbols": 1, "totals": {},
               "problems": {}, "datasets": {"markPriceKlines-1m": got}}  # fmt: skip
    assert "markPriceKlines-1m: rows=2880 days=2" in headline(summary)


def test_summary_sums_symbols_per_dataset(tmp_path):
    reports, dirs = [], {}
    for tag, symbols in (("aggTrades", ["X", "Y"]), ("markPriceKlines-1m", ["X"])):
        down = tmp_path / "down" / tag
        down.mkdir(parents=True)
        dirs[tag] = str(down)
        for sym in symbols:
            path = tmp_path / "parse" / tag / f"{sym}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            if tag == "aggTrades":
                report = _tick_report()
            else:
                report = {"partitions": {"202401": {"rows": 7}}, "quality": {"days": 1,
                          "score": 0.5}, "quarantined": {}}  # fmt: skip
            path.write_text(json.dumps(report))
            (down / f"{sym}.json").write_text(json.dumps({"files": {M: {}}, "quarantined": {}}))
            reports.append(str(path))
    summary = summarize_datasets("um_futures", reports, dirs)
    assert summary["symbols"] == 2  # X has two datasets and counts once
    agg = summary["datasets"]["aggTrades"]
    assert agg["symbols"] == 2 and agg["rows"] == 70 and agg["days"] == 4
    assert agg["files_quarantined_parse"] == 4  # two per symbol, none from the download
    assert summary["datasets"]["markPriceKlines-1m"]["quality_score_min"] == 0.5
    assert set(summary["problems"]) == {"aggTrades/X", "aggTrades/Y"}
    assert "aggTrades: rows=70 days=4 quarantined=4" in headline(summary)


def test_a_zip_the_parse_quarantined_stays_the_parse_s_after_the_next_download(
    tmp_path, emulator, monkeypatch
):
    # A daily aggTrades zip the download verifies (its CHECKSUM matches) and the parse
    # quarantines (an id going back). The next day's download lists it as quarantined too
    # (not fetched again); it counted then as quarantined by the download, not the parse.
    from datetime import datetime

    from crypto_lakehouse_emulator.generate import _write_archive, zip_bytes
    from crypto_lakehouse_emulator.ticks import agg_trades_csv, write_daily_agg_trades

    from crypto_lakehouse.archive import http
    from crypto_lakehouse.archive.listing import run_listing
    from crypto_lakehouse.archive.sync import run_sync
    from crypto_lakehouse.parse import ticks

    monkeypatch.setattr(http, "BACKOFF_BASE_S", 0.001)
    mirror = tmp_path / "mirror"
    good = write_daily_agg_trades(mirror, "um_futures", "BTCUSDT", "2024-03-01", 50, seed=1)
    bad_key = good.replace("2024-03-01", "2024-03-02")
    csv = agg_trades_csv("um_futures", "2024-03-02", 3, seed=2).decode().splitlines()
    rows = [x for x in csv if x[0].isdigit()]
    head = csv[: len(csv) - len(rows)]
    fields = rows[1].split(",")
    fields[0] = str(int(rows[0].split(",")[0]) - 1)  # the second row's id goes back
    rows[1] = ",".join(fields)
    body = zip_bytes("m.csv", ("\n".join(head + rows) + "\n").encode(), datetime(2024, 1, 1))
    _write_archive(mirror, bad_key, body, "um_futures", True, None, None)
    emu = emulator(mirror_dir=mirror)
    details, data_dir = tmp_path / "listing", tmp_path / "data"
    run_listing(
        trade_type="um_futures", dataset="aggTrades", interval=None, symbols=["BTCUSDT"],
        listing_url=emu.base_url, out_index=tmp_path / "index.json", details_dir=details,
        concurrency=2, timeout_s=5, max_retries=1,
    )  # fmt: skip

    def download_and_parse():
        run_sync(
            trade_type="um_futures", dataset="aggTrades", interval=None, symbol="BTCUSDT",
            details_path=details / "BTCUSDT.json", data_dir=data_dir,
            archive_url=emu.base_url, start_date=None, end_date=None,
            use_monthly_klines=False, concurrency=2, max_retries=1, timeout_s=5,
            report_path=tmp_path / "dl.json", stats_path=tmp_path / "dl-stats.json",
        )  # fmt: skip
        parse = ticks.run_parse_ticks(
            trade_type="um_futures", dataset="aggTrades", symbol="BTCUSDT", data_dir=data_dir,
            download_report=tmp_path / "dl.json", report_path=tmp_path / "parse.json",
        )  # fmt: skip
        return parse, json.loads((tmp_path / "dl.json").read_text())

    for run in (1, 2):
        parse, download = download_and_parse()
        assert list(parse["quarantined"]) == [bad_key]
        if run == 2:  # the download now lists it as quarantined, with the parse's reason
            assert list(download["quarantined"]) == [bad_key]
        got = dataset_symbol_figures(parse, download)
        assert (got["files_quarantined_download"], got["files_quarantined_parse"]) == (0, 1)
        # The first download verified both zips; the next one holds the good one only.
        assert (got["files_verified"], got["days"]) == (3 - run, 1)


def test_a_zip_the_download_quarantined_stays_the_download_s():
    # The parse report lists the download's quarantines too (reported_quarantine); they are
    # not in its own list.
    report = {**_tick_report(), "quarantined_by_parse": [BAD]}
    download = {"files": {M: {}, D2: {}}, "quarantined": {SUM_BAD: "checksum mismatch"}}
    got = dataset_symbol_figures(report, download)
    assert (got["files_quarantined_download"], got["files_quarantined_parse"]) == (1, 1)
