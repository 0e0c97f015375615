"""The per-day quality record: hand-built candles with hand-computed counts and scores,
and the record aws_parse writes for a real COIN-M day."""

from __future__ import annotations

import csv
import hashlib
import io as stdio
import zipfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crypto_lakehouse import layout, quality
from crypto_lakehouse.io import read_json
from crypto_lakehouse.parse.klines import run_parse_klines
from crypto_lakehouse.schema import KLINE_SCHEMA
from tests.conftest import FIXTURES

DAY = 86_400_000
D0 = 19_000  # 2022-01-08 as a day number
MIN = 60_000


def candles(rows: list[tuple]) -> pa.Table:
    """rows: (minute of day D0 + day offset * 1440, open, high, low, close, volume, taker base)."""
    cols = {n: [] for n in KLINE_SCHEMA.names}
    for minute, o, h, lo, c, v, tb in rows:
        cols["candle_begin_time"].append(D0 * DAY + minute * MIN)
        for name, val in zip(
            ("open", "high", "low", "close", "volume"), (o, h, lo, c, v), strict=True
        ):
            cols[name].append(float(val))
        cols["quote_volume"].append(float(v) * 10)
        cols["trade_num"].append(1 if v else 0)
        cols["taker_buy_base_asset_volume"].append(float(tb))
        cols["taker_buy_quote_asset_volume"].append(float(tb) * 10)
    cols["candle_begin_time"] = pa.array(cols["candle_begin_time"], pa.int64()).cast(
        KLINE_SCHEMA.field("candle_begin_time").type
    )
    return pa.table(cols, schema=KLINE_SCHEMA)


def test_counts_runs_and_score_of_hand_made_days():
    good = (10, 12, 9, 11)
    rows = [
        (0, *good, 5, 2),
        (1, *good, 0, 0),  # zero run of 2 (minutes 1, 2)
        (2, *good, 0, 0),
        (3, 10, 12, 9, 13, 5, 2),  # close above high: OHLC violation
        (5, *good, 0, 0),  # minute 4 missing: a new zero run starts at 5
        (6, *good, 0, 0),
        (7, *good, 0, 0),  # run of 3 (5, 6, 7)
        (8, *good, 5, 6),  # taker base above volume
        (1440 + 0, *good, 1, 1),  # next day: one good candle
    ]
    q = quality.day_quality(candles(rows), "1m", {D0: "k1", D0 + 1: "k2", D0 + 2: "k3"})
    got = q.to_pylist()
    assert [r["source"] for r in got] == ["k1", "k2", "k3"]
    assert [r["rows"] for r in got] == [8, 1, 0]
    assert [r["missing_rows"] for r in got] == [1432, 1439, 1440]
    assert [r["zero_volume_rows"] for r in got] == [5, 0, 0]
    assert [r["longest_zero_volume_run"] for r in got] == [3, 0, 0]
    assert [r["ohlc_violations"] for r in got] == [1, 0, 0]
    assert [r["taker_violations"] for r in got] == [1, 0, 0]
    # score = completeness × (1 − violating/rows) × (1 − 0.5 × zero/rows)
    day0 = (8 / 1440) * (1 - 2 / 8) * (1 - 0.5 * 5 / 8)
    assert got[0]["score"] == pytest.approx(day0, abs=1e-6)
    assert got[1]["score"] == pytest.approx(1 / 1440, abs=1e-6)
    assert got[2]["score"] == 0.0


def test_zero_run_does_not_cross_midnight():
    rows = [(1438, 1, 1, 1, 1, 0, 0), (1439, 1, 1, 1, 1, 0, 0), (1440, 1, 1, 1, 1, 0, 0)]
    q = quality.day_quality(candles(rows), "1m", {D0: "a", D0 + 1: "b"})
    assert q.column("longest_zero_volume_run").to_pylist() == [2, 1]


def test_full_day_scores_one():
    rows = [(m, 10, 11, 9, 10, 1, 0.5) for m in range(1440)]
    q = quality.day_quality(candles(rows), "1m", {D0: "a"})
    assert q.column("score").to_pylist() == [1.0]
    assert q.column("expected_rows").to_pylist() == [1440]


def test_merge_replaces_months_and_fills_gaps():
    jan = quality.day_quality(candles([(0, 1, 1, 1, 1, 1, 0)]), "1m", {D0: "jan"})  # 2022-01-08
    # 2022-03-01 is day 19052.
    mar_day = 19052
    mar = quality.day_quality(
        candles([((mar_day - D0) * 1440, 1, 1, 1, 1, 1, 0)]), "1m", {mar_day: "mar"}
    )
    record = quality.merge_quality(None, {"202201", "202203"}, [jan, mar], "1m")
    assert record.num_rows == mar_day - D0 + 1
    sources = record.column("source").to_pylist()
    assert sources[0] == "jan" and sources[-1] == "mar" and set(sources[1:-1]) == {None}
    assert record.column("missing_rows").to_pylist()[1:-1] == [1440] * (mar_day - D0 - 1)

    # March rebuilt without data: its row goes, and so do the fillers after January.
    record = quality.merge_quality(record, {"202203"}, [], "1m")
    assert record.column("source").to_pylist() == ["jan"]


def test_summary_is_the_mean_day_score():
    q = quality.day_quality(
        candles([(m, 10, 11, 9, 10, 1, 0) for m in range(720)]), "1m", {D0: "a", D0 + 1: "b"}
    )
    s = quality.summarize(q)
    assert s["score"] == pytest.approx((0.5 + 0.0) / 2)
    assert s["days"] == 2 and s["days_without_rows"] == 1 and s["missing_rows"] == 720 + 1440
    assert quality.summarize(quality.QUALITY_SCHEMA.empty_table()) == {"days": 0, "score": None}


def test_record_of_a_real_cm_day(tmp_path):
    src = FIXTURES / "real" / "futures_cm" / "BTCUSD_PERP-1m-2022-10-24.zip"
    key = layout.daily_kline_key("cm_futures", "BTCUSD_PERP", "1m", "2022-10-24")
    path = layout.aws_path(tmp_path, key)
    path.parent.mkdir(parents=True)
    path.write_bytes(src.read_bytes())
    path.with_name(path.name + ".verified").touch()
    report = {"files": {key: {"sha256": hashlib.sha256(src.read_bytes()).hexdigest()}}}
    run_parse_klines(trade_type="cm_futures", symbol="BTCUSD_PERP", interval="1m",
                     data_dir=tmp_path, download_report=report,
                     report_path=tmp_path / "r.json", stats_path=tmp_path / "s.json")  # fmt: skip

    with zipfile.ZipFile(src) as zf:
        rows = list(csv.reader(stdio.StringIO(zf.read(zf.namelist()[0]).decode())))[1:]
    vol = np.array([float(r[5]) for r in rows])
    o, h, lo, c = (np.array([float(r[i]) for r in rows]) for i in (1, 2, 3, 4))
    ohlc_bad = int((~((lo <= o) & (o <= h) & (lo <= c) & (c <= h))).sum())
    zero = int((vol == 0).sum())
    assert zero >= 1  # this real day has a minute without trades

    record = pq.read_table(layout.quality_path(tmp_path, "cm_futures", "1m", "BTCUSD_PERP"))
    assert record.schema.remove_metadata() == quality.QUALITY_SCHEMA
    (row,) = record.to_pylist()
    assert str(row["date"]) == "2022-10-24" and row["source"] == key
    assert row["rows"] == len(rows) == 1440 and row["zero_volume_rows"] == zero
    assert row["ohlc_violations"] == ohlc_bad
    assert row["score"] == pytest.approx((1 - ohlc_bad / 1440) * (1 - 0.5 * zero / 1440), abs=1e-6)
    summary = read_json(tmp_path / "r.json")["quality"]
    assert summary["score"] == row["score"] and summary["zero_volume_rows"] == zero


@pytest.mark.parametrize("slice_rows", [1000, 3000])
def test_days_measured_a_slice_at_a_time_give_the_rows_of_one_measure(monkeypatch, slice_rows):
    """A large table (a month of 1s) is measured a few days at a time
    (``QUALITY_SLICE_ROWS``); every measure is per day, so the rows equal one measure of the
    whole table: gaps, a day without rows, zero runs up to midnight, violations; rows of a day
    no source names are refused either way."""
    rng = np.random.default_rng(7)
    rows = []
    for day in range(5):
        if day == 2:
            continue  # a day without rows
        for minute in range(1440):
            if rng.random() < 0.1:
                continue  # gaps
            volume = 0 if (minute > 1400 or rng.random() < 0.05) else 2
            close = 13 if rng.random() < 0.01 else 11  # above high now and then
            rows.append((day * 1440 + minute, 10, 12, 9, close, volume, volume / 2))
    table = candles(rows)
    sources = {D0 + d: f"k{d}" for d in range(5)}
    whole = quality.day_quality(table, "1m", sources)
    no_day_3 = {d: k for d, k in sources.items() if d != D0 + 3}
    with pytest.raises(ValueError, match="a day that has no source"):
        quality.day_quality(table, "1m", no_day_3)
    monkeypatch.setattr(quality, "QUALITY_SLICE_ROWS", slice_rows)
    sliced = quality.day_quality(table, "1m", sources)
    assert sliced.equals(whole)
    with pytest.raises(ValueError, match="a day that has no source"):  # refused alike
        quality.day_quality(table, "1m", no_day_3)
    assert whole.column("rows").to_pylist()[2] == 0
    assert sum(whole.column("ohlc_violations").to_pylist()) > 0
    assert max(whole.column("longest_zero_volume_run").to_pylist()) >= 10
