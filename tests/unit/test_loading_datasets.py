"""``load_dataset``, ``iter_dataset`` and the dataset views of ``duckdb_connect`` over the
parsed datasets of the ``datasets`` target (aggTrades, trades, metrics, price klines).

The data dir is built by the real parsers from CSV text: hand-written tick rows in the
published formats (binance-public-data README), the real metrics rows of
``tests/fixtures/real/futures_um/metrics/`` and the real um 1m kline day of
``tests/fixtures/real/futures_um/`` (standing in for a markPriceKlines file: same layout).
Every expected value is read off that CSV text with the csv module, never from our files.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import zipfile
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import crypto_lakehouse
from crypto_lakehouse import layout, loading
from crypto_lakehouse.loading import DataNotFoundError
from crypto_lakehouse.parse import ticks
from crypto_lakehouse.parse.klines import run_parse_klines
from tests.conftest import FIXTURES

REAL_METRICS = FIXTURES / "real/futures_um/metrics/BTCUSDT-metrics-2020-09-01-head.csv"
REAL_KLINES = FIXTURES / "real/futures_um/BTCUSDT-1m-2022-09-05.csv"
UM_AGG_HEADER = (
    "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker"
)
CM_TRADES_HEADER = "id,price,qty,base_qty,time,is_buyer_maker"


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def _um_agg_rows(day: str) -> list[str]:
    """Six aggregate trades of one day, the first at 00:00:00.000, the last at
    23:59:59.999 (ids increasing across days)."""
    base, n = _ms(day), int(day[-2:])
    times = [0, 1, 3_600_000, 43_200_000, 86_399_998, 86_399_999]
    return [
        f"{n * 100 + i},{20000 + n}.{i}5,{i + 1}.125,{n * 1000 + 2 * i},{n * 1000 + 2 * i + 1},"
        f"{base + t},{'true' if i % 2 else 'false'}"
        for i, t in enumerate(times)
    ]


UM_AGG = {d: _um_agg_rows(d) for d in ("2024-03-01", "2024-03-02", "2024-03-03")}
# Spot: no header, 8 columns (the best-match flag), True/False.
SPOT_AGG = [
    f"{7 + i},{61000 + i}.01000000,0.5000000{i},{70 + i},{70 + i},"
    f"{_ms('2024-03-02') + 1000 * i},{'True' if i else 'False'},True"
    for i in range(3)
]
CM_TRADES = [
    f"{900 + i},{62000 + i}.1,{i + 1},{(i + 1) * 100 / (62000 + i + 0.1):.8f},"
    f"{_ms('2024-03-02T12:00:00') + i},false"
    for i in range(4)
]


def _metrics_text() -> tuple[str, str]:
    """The real 2020-09-01 rows plus, as um files labelled before 2026-06-25
    (binance-public-data #491), the next day's 00:00:00; and a 2020-09-02 file."""
    header, first, second, third = REAL_METRICS.read_text().splitlines()
    at = lambda row, when: ",".join([when, *row.split(",")[1:]])  # noqa: E731
    day1 = [header, first, second, third, at(third, "2020-09-02 00:00:00")]
    day2 = [header, at(second, "2020-09-02 00:05:00")]
    return "\n".join(day1) + "\n", "\n".join(day2) + "\n"


def _csv_rows(text: str, header: bool) -> list[list[str]]:
    rows = [r for r in csv.reader(io.StringIO(text)) if r]
    return rows[1:] if header else rows


def _put(data_dir, key: str, text: str) -> dict:
    """One archive as the download job leaves it: zip, .verified marker, report entry."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(key.rsplit("/", 1)[1].replace(".zip", ".csv"), text)
    path = layout.aws_path(data_dir, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    layout.verified_marker(path).write_text("")
    return {key: {"sha256": hashlib.sha256(buf.getvalue()).hexdigest()}}


def _parse_ticks(tmp, data_dir, trade_type, dataset, symbol, days: dict[str, str]) -> dict:
    files = {}
    for day, text in days.items():
        key = layout.archive_key(trade_type, dataset, symbol, None, "daily", day)
        files |= _put(data_dir, key, text)
    return ticks.run_parse_ticks(
        trade_type=trade_type, dataset=dataset, symbol=symbol, data_dir=data_dir,
        download_report={"files": files}, report_path=tmp / f"{trade_type}-{dataset}.json",
    )  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("datasets")
    return build_dataset_dir(tmp, tmp / "data")


def build_dataset_dir(tmp, data_dir):
    """Parse the archives above into ``data_dir`` with the real parsers (reports in
    ``tmp``): um aggTrades 2024-03-01..03 and a day without rows (03-04), spot aggTrades
    and cm trades of 2024-03-02, um metrics of 2020-09-01/02, um markPriceKlines 1m of
    2022-09-05."""
    um_days = {d: UM_AGG_HEADER + "\n" + "\n".join(rows) + "\n" for d, rows in UM_AGG.items()}
    um_days["2024-03-04"] = UM_AGG_HEADER + "\n"  # published without a row
    report = _parse_ticks(tmp, data_dir, "um_futures", "aggTrades", "BTCUSDT", um_days)
    assert report["quarantined"] == {} and report["days_without_rows"] == ["20240304"]
    _parse_ticks(tmp, data_dir, "spot", "aggTrades", "BTCUSDT",
                 {"2024-03-02": "\n".join(SPOT_AGG) + "\n"})  # fmt: skip
    _parse_ticks(tmp, data_dir, "cm_futures", "trades", "BTCUSD_PERP",
                 {"2024-03-02": CM_TRADES_HEADER + "\n" + "\n".join(CM_TRADES) + "\n"})  # fmt: skip
    day1, day2 = _metrics_text()
    report = _parse_ticks(tmp, data_dir, "um_futures", "metrics", "BTCUSDT",
                          {"2020-09-01": day1, "2020-09-02": day2})  # fmt: skip
    assert report["quarantined"] == {}
    key = layout.archive_key("um_futures", "markPriceKlines", "BTCUSDT", "1m", "daily",
                             "2022-09-05")  # fmt: skip
    files = _put(data_dir, key, REAL_KLINES.read_text())
    run_parse_klines(
        trade_type="um_futures", symbol="BTCUSDT", interval="1m", data_dir=data_dir,
        download_report={"files": files}, report_path=tmp / "mark.json",
        stats_path=tmp / "mark-stats.json", dataset="markPriceKlines",
    )  # fmt: skip
    return data_dir


def _um_expected(lo: int, hi: int) -> list[tuple]:
    """(id, price, quantity, time ms, is_buyer_maker) of the um rows in [lo, hi)."""
    rows = [r for rows in UM_AGG.values() for r in csv.reader(rows)]
    return [
        (int(r[0]), float(r[1]), float(r[2]), int(r[5]), r[6] == "true")
        for r in rows
        if lo <= int(r[5]) < hi
    ]


def _um_got(frame: pd.DataFrame) -> list[tuple]:
    times = frame["transact_time"].map(lambda t: int(t.timestamp() * 1000))
    return list(
        zip(frame["agg_trade_id"], frame["price"], frame["quantity"], times,
            frame["is_buyer_maker"], strict=True)
    )  # fmt: skip


# ---------------------------------------------------------------- load_dataset
@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("2024-03-02", "2024-03-03"),  # one day, both of its edges inside
        ("2024-03-01T23:59:59.999", "2024-03-02T00:00:00.001"),  # across midnight
        ("2024-03-01T12:00", "2024-03-03T01:00"),  # three days, cut inside the first/last
        (None, "2024-03-02"),
        ("2024-03-03", None),
    ],
)
def test_agg_trades_between_bounds_are_the_csv_rows(data, start, end):
    df = crypto_lakehouse.load_dataset(data, "um_futures", "aggTrades", "BTCUSDT", start, end)
    lo = _ms("1970-01-01") if start is None else _ms(start)
    hi = _ms("2100-01-01") if end is None else _ms(end)
    assert _um_got(df) == _um_expected(lo, hi)
    assert list(df.columns) == UM_AGG_HEADER.split(",")
    assert str(df["transact_time"].dtype) == "datetime64[ms, UTC]"


def test_only_the_files_of_the_range_are_opened(data, tmp_path):
    # A day file outside the range broken: a load of other days never opens it, nor does a
    # view query filtered on other days (the view binds to the first file of its scan).
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    broken = layout.parsed_day_path(copy, "um_futures", "aggTrades", "BTCUSDT", "20240303")
    broken.write_bytes(b"not parquet")
    files = loading.dataset_files_of(copy, "um_futures", "aggTrades", "BTCUSDT",
                                     start="2024-03-01T10:00", end="2024-03-02T12:00")  # fmt: skip
    assert [p.name for p in files] == ["20240301.pqt", "20240302.pqt"]
    df = crypto_lakehouse.load_dataset(copy, "um_futures", "aggTrades", "BTCUSDT",
                                       "2024-03-01", "2024-03-03")  # fmt: skip
    assert _um_got(df) == _um_expected(_ms("2024-03-01"), _ms("2024-03-03"))
    with pytest.raises(pa.ArrowInvalid, match=re.escape(str(broken))):
        crypto_lakehouse.load_dataset(copy, "um_futures", "aggTrades", "BTCUSDT", "2024-03-02")
    con = crypto_lakehouse.duckdb_connect(copy)
    sql = "SELECT count(*) FROM agg_trades WHERE trade_type = 'um_futures' AND day = '2024-03-02'"
    assert con.execute(sql).fetchone() == (len(UM_AGG["2024-03-02"]),)
    profile = con.execute("EXPLAIN ANALYZE " + sql).fetchall()[0][1]
    # One scan per trade type and symbol: spot's is dropped when the query is planned
    # (its trade_type is a constant), 1 of the um symbol's 4 files is read.
    assert re.findall(r"Scanning Files: (\d+)/(\d+)", profile) == [("1", "4")], profile


def test_engines_and_columns(data):
    args = (data, "um_futures", "aggTrades", "BTCUSDT", "2024-03-02", "2024-03-03")
    table = crypto_lakehouse.load_dataset(*args, engine="arrow")
    assert isinstance(table, pa.Table)
    assert table.column("agg_trade_id").to_pylist() == [r[0] for r in _um_expected(
        _ms("2024-03-02"), _ms("2024-03-03"))]  # fmt: skip
    pl = pytest.importorskip("polars")
    frame = crypto_lakehouse.load_dataset(*args, engine="polars", columns=["price"])
    assert isinstance(frame, pl.DataFrame) and frame.columns == ["price"]
    assert frame["price"].to_list() == [r[1] for r in _um_expected(
        _ms("2024-03-02"), _ms("2024-03-03"))]  # fmt: skip
    with pytest.raises(ValueError, match="no column 'prices' in aggTrades; did you mean price"):
        crypto_lakehouse.load_dataset(*args, columns=["prices"])
    with pytest.raises(ValueError, match="engine='numpy'; expected one of pandas, polars, arrow"):
        crypto_lakehouse.load_dataset(*args, engine="numpy")


def test_spot_and_cm_rows_keep_their_market_columns(data):
    spot = crypto_lakehouse.load_dataset(data, "spot", "aggTrades", "BTCUSDT")
    want = _csv_rows("\n".join(SPOT_AGG), header=False)
    assert spot["agg_trade_id"].tolist() == [int(r[0]) for r in want]
    assert spot["is_best_match"].tolist() == [r[7] == "True" for r in want]
    assert spot["price"].tolist() == [float(r[1]) for r in want]
    cm = crypto_lakehouse.load_dataset(data, "cm_futures", "trades", "BTCUSD_PERP")
    want = _csv_rows("\n".join(CM_TRADES), header=False)
    assert cm["base_qty"].tolist() == [float(r[3]) for r in want]
    assert cm["time"].map(lambda t: int(t.timestamp() * 1000)).tolist() == [int(r[4]) for r in want]


def test_a_day_published_without_rows_loads_as_zero_rows(data):
    df = crypto_lakehouse.load_dataset(data, "um_futures", "aggTrades", "BTCUSDT",
                                       "2024-03-04", "2024-03-05")  # fmt: skip
    assert len(df) == 0 and list(df.columns) == UM_AGG_HEADER.split(",")
    day = layout.parsed_day_path(data, "um_futures", "aggTrades", "BTCUSDT", "20240304")
    assert day.exists()  # a day file with no row, not a missing day


def test_metrics_read_the_day_file_before_the_range_for_its_end_label(data):
    # The 2020-09-02 00:00:00 row is in the 2020-09-01 day file (the period end label).
    _, second, third = _csv_rows(REAL_METRICS.read_text(), header=True)
    files = loading.dataset_files_of(data, "um_futures", "metrics", "BTCUSDT",
                                     start="2020-09-02", end="2020-09-03")  # fmt: skip
    assert [p.name for p in files] == ["20200901.pqt", "20200902.pqt"]
    df = crypto_lakehouse.load_dataset(data, "um_futures", "metrics", "BTCUSDT",
                                       "2020-09-02", "2020-09-03")  # fmt: skip
    assert df["create_time"].map(lambda t: t.isoformat()).tolist() == [
        "2020-09-02T00:00:00+00:00",
        "2020-09-02T00:05:00+00:00",
    ]
    assert df["sum_open_interest"].tolist() == [float(third[2]), float(second[2])]
    first_day = crypto_lakehouse.load_dataset(data, "um_futures", "metrics", "BTCUSDT",
                                              "2020-09-01", "2020-09-02")  # fmt: skip
    rows = _csv_rows(REAL_METRICS.read_text(), header=True)
    assert first_day["sum_open_interest_value"].tolist() == [float(r[3]) for r in rows]


def test_price_klines_by_interval_are_the_csv_rows(data):
    rows = _csv_rows(REAL_KLINES.read_text(), header=True)
    lo, hi = _ms("2022-09-05T10:00"), _ms("2022-09-05T10:05")
    want = [r for r in rows if lo <= int(r[0]) < hi]
    df = crypto_lakehouse.load_dataset(data, "um_futures", "markPriceKlines", "BTCUSDT",
                                       "2022-09-05T10:00", "2022-09-05T10:05", interval="1m")  # fmt: skip
    assert len(want) == 5
    assert df["candle_begin_time"].map(lambda t: int(t.timestamp() * 1000)).tolist() == [
        int(r[0]) for r in want
    ]
    for i, name in ((1, "open"), (2, "high"), (3, "low"), (4, "close")):
        assert df[name].tolist() == [float(r[i]) for r in want], name


def test_iter_dataset_gives_one_days_rows_at_a_time(data):
    frames = list(crypto_lakehouse.iter_dataset(data, "um_futures", "aggTrades", "BTCUSDT",
                                                "2024-03-01T12:00", "2024-03-03T01:00"))  # fmt: skip
    assert [len(f) for f in frames] == [3, 6, 2]  # rows of each day inside the range
    for frame in frames:
        assert frame["transact_time"].dt.date.nunique() == 1
    got = [row for frame in frames for row in _um_got(frame)]
    assert got == _um_expected(_ms("2024-03-01T12:00"), _ms("2024-03-03T01:00"))


def test_iter_dataset_batch_rows_splits_each_day_into_frames_of_at_most_n_rows(data):
    frames = list(crypto_lakehouse.iter_dataset(data, "um_futures", "aggTrades", "BTCUSDT",
                                                "2024-03-01T12:00", "2024-03-03T01:00",
                                                batch_rows=4))  # fmt: skip
    # Days of 3, 6 and 2 rows in the range: a frame never holds two days' rows.
    assert [len(f) for f in frames] == [3, 4, 2, 2]
    assert [f["transact_time"].dt.date.nunique() for f in frames] == [1, 1, 1, 1]
    got = [row for frame in frames for row in _um_got(frame)]
    assert got == _um_expected(_ms("2024-03-01T12:00"), _ms("2024-03-03T01:00"))
    arrow = list(crypto_lakehouse.iter_dataset(data, "um_futures", "aggTrades", "BTCUSDT",
                                               batch_rows=1, columns=["agg_trade_id"],
                                               engine="arrow"))  # fmt: skip
    assert [t.column_names for t in arrow] == [["agg_trade_id"]] * len(arrow)
    ids = [int(r.split(",")[0]) for rows in UM_AGG.values() for r in rows]
    assert [t["agg_trade_id"][0].as_py() for t in arrow] == ids  # one row per frame
    for bad in (0, -1, 2.5, True, "10", np.int64(0), np.float64(4.0), np.bool_(True)):
        with pytest.raises(ValueError, match="batch_rows"):
            crypto_lakehouse.iter_dataset(data, "um_futures", "aggTrades", "BTCUSDT",
                                          batch_rows=bad)  # fmt: skip
    # a numpy integer is a number of rows (it was refused as "not a number of rows ≥ 1")
    numpy_sized = list(crypto_lakehouse.iter_dataset(data, "um_futures", "aggTrades", "BTCUSDT",
                                                     "2024-03-01T12:00", "2024-03-03T01:00",
                                                     batch_rows=np.int64(4)))  # fmt: skip
    assert [len(f) for f in numpy_sized] == [3, 4, 2, 2]


def test_iter_dataset_batch_rows_bounds_memory_whatever_the_day_holds(tmp_path):
    # One day of 1 M aggregate trades (42 MB as Arrow columns) in row groups of 20,000 rows
    # (the parser writes one per 8 MB CSV block). Iterated in frames of 10,000 rows, the
    # Arrow memory of the process never holds more than a small part of the day; without
    # batch_rows the day is one frame.
    import numpy as np
    import pyarrow.parquet as pq

    n, day_ms = 1_000_000, _ms("2024-03-02")
    table = pa.table({
        "agg_trade_id": np.arange(n, dtype=np.int64),
        "price": np.round(60000 + np.arange(n) % 997 * 0.1, 1),
        "quantity": np.full(n, 0.5),
        "first_trade_id": np.arange(n, dtype=np.int64) * 2,
        "last_trade_id": np.arange(n, dtype=np.int64) * 2 + 1,
        "transact_time": pa.array(day_ms + np.arange(n) * 80, pa.int64()).cast(ticks.TIME_TYPE),
        "is_buyer_maker": np.arange(n) % 2 == 0,
    })  # fmt: skip
    path = layout.parsed_day_path(tmp_path, "um_futures", "aggTrades", "BTCUSDT", "20240302")
    path.parent.mkdir(parents=True)
    pq.write_table(table, path, row_group_size=20_000)
    code = (
        "import sys, pyarrow as pa, crypto_lakehouse as cl\n"
        "rows = 0\n"
        "for f in cl.iter_dataset(sys.argv[1], 'um_futures', 'aggTrades', 'BTCUSDT',\n"
        "                         batch_rows=int(sys.argv[2]), engine='arrow'):\n"
        "    assert f.num_rows <= int(sys.argv[2]); rows += f.num_rows\n"
        "print(rows, pa.default_memory_pool().max_memory())\n"
    )
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", code, str(tmp_path), "10000"],
                         capture_output=True, text=True, check=True, cwd=FIXTURES.parents[1])  # fmt: skip
    rows, peak = map(int, run.stdout.split())
    assert rows == n
    assert peak < table.nbytes / 5, (peak, table.nbytes)  # measured: 3.4 MB of 48 MB


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        (("futures", "aggTrades", "BTCUSDT"), ValueError, "unknown trade type 'futures'"),
        (("um_futures", "aggTrade", "BTCUSDT"), ValueError,
         "unknown dataset 'aggTrade'; did you mean aggTrades"),
        (("um_futures", "klines", "BTCUSDT"), ValueError, "klines are read with load_klines"),
        (("spot", "metrics", "BTCUSDT"), ValueError, "exists only for futures, not 'spot'"),
        (("um_futures", "aggTrades", "BTCUSTD"), DataNotFoundError,
         "no symbol 'BTCUSTD' .*did you mean BTCUSDT.*symbols present: BTCUSDT"),
        (("cm_futures", "aggTrades", "BTCUSD_PERP"), DataNotFoundError,
         "no aggTrades of cm_futures .*trade types with aggTrades: spot, um_futures; "
         "datasets parsed for cm_futures: trades"),
        (("um_futures", "markPriceKlines", "BTCUSDT"), ValueError, "needs interval="),
        (("um_futures", "markPriceKlines", "BTCUSDT", None, None, "1h"), DataNotFoundError,
         "no interval '1h'.*intervals present: 1m"),
        (("um_futures", "trades", "BTCUSDT"), DataNotFoundError, "no trades of um_futures"),
    ],
)  # fmt: skip
def test_unknown_names_say_what_exists(data, args, error, message):
    with pytest.raises(error, match=message):
        crypto_lakehouse.load_dataset(data, *args)
    with pytest.raises(error, match=message):  # checked before the first frame
        crypto_lakehouse.iter_dataset(data, *args)


def test_an_absent_data_dir_is_named(tmp_path):
    with pytest.raises(DataNotFoundError, match="does not exist"):
        crypto_lakehouse.load_dataset(tmp_path / "nope", "um_futures", "trades", "BTCUSDT")


# ---------------------------------------------------------------- the views
def test_dataset_views_hold_the_csv_rows_with_path_columns(data):
    con = crypto_lakehouse.duckdb_connect(data)
    views = dict(con.execute("SELECT * FROM lakehouse_views").fetchall())
    assert {v: views[v] for v in loading.DATASET_VIEWS} == {
        "agg_trades": 5, "trades": 1, "metrics": 2, "mark_price_klines": 1,
        "index_price_klines": 0, "premium_index_klines": 0,
    }  # fmt: skip
    got = con.execute("""
        SELECT agg_trade_id, price, quantity, epoch_ms(transact_time), is_buyer_maker
        FROM agg_trades WHERE trade_type = 'um_futures' AND symbol = 'BTCUSDT'
            AND day BETWEEN '2024-03-01' AND '2024-03-02'
        ORDER BY agg_trade_id
    """).fetchall()
    assert got == _um_expected(_ms("2024-03-01"), _ms("2024-03-03"))
    spot = con.execute(
        "SELECT count(*), count(is_best_match) FROM agg_trades WHERE trade_type = 'spot'"
    ).fetchone()
    assert spot == (len(SPOT_AGG), len(SPOT_AGG))
    assert con.execute(
        "SELECT count(is_best_match) FROM agg_trades WHERE trade_type = 'um_futures'"
    ).fetchone() == (0,)  # NULL where the market has no such column
    per_day = con.execute(
        "SELECT day, count(*) FROM agg_trades WHERE trade_type = 'um_futures' GROUP BY day "
        "ORDER BY day"
    ).fetchall()
    assert [(str(d), n) for d, n in per_day] == [
        ("2024-03-01", 6),
        ("2024-03-02", 6),
        ("2024-03-03", 6),
    ]  # fmt: skip  (2024-03-04: a file without rows)
    cm = con.execute("SELECT symbol, sum(qty) FROM trades GROUP BY symbol").fetchall()
    assert cm == [("BTCUSD_PERP", sum(float(r[2]) for r in _csv_rows("\n".join(CM_TRADES), False)))]
    metrics = con.execute(
        "SELECT symbol, day, strftime(create_time, '%Y-%m-%d %H:%M:%S'), sum_open_interest "
        "FROM metrics ORDER BY create_time, day"
    ).fetchall()
    header, first, second, third = REAL_METRICS.read_text().splitlines()
    want = [r.split(",") for r in (first, second, third)]
    assert [(s, str(d), t, v) for s, d, t, v in metrics] == [
        ("BTCUSDT", "2020-09-01", r[0], float(r[2])) for r in want
    ] + [
        ("BTCUSDT", "2020-09-01", "2020-09-02 00:00:00", float(want[2][2])),
        ("BTCUSDT", "2020-09-02", "2020-09-02 00:05:00", float(want[1][2])),
    ]
    rows = _csv_rows(REAL_KLINES.read_text(), header=True)
    mark = con.execute(
        "SELECT interval, month, count(*), sum(close) FROM mark_price_klines GROUP BY ALL"
    ).fetchall()
    assert [(i, str(m), n) for i, m, n, _ in mark] == [("1m", "2022-09-01", len(rows))]
    assert mark[0][3] == pytest.approx(sum(float(r[4]) for r in rows))


def test_on_s3_the_same_rows_and_the_range_files_only(data, s3_root):
    """The data dir copied below an ``s3://`` prefix (SeaweedFS): ``load_dataset`` and the
    views give the local rows; a broken day object outside the range is never read."""
    from crypto_lakehouse import storage

    for path in sorted(p for p in data.rglob("*.pqt") if p.is_file()):
        storage.write_bytes(storage.join(s3_root, path.relative_to(data).as_posix()),
                            path.read_bytes())  # fmt: skip
    args = ("um_futures", "aggTrades", "BTCUSDT", "2024-03-01T12:00", "2024-03-03T01:00")
    local = crypto_lakehouse.load_dataset(data, *args, engine="arrow")
    assert crypto_lakehouse.load_dataset(s3_root, *args, engine="arrow").equals(local)
    chunks = list(crypto_lakehouse.iter_dataset(s3_root, *args, engine="arrow", batch_rows=4))
    assert [t.num_rows for t in chunks] == [3, 4, 2, 2]
    assert pa.concat_tables(chunks).equals(local)
    metrics = ("um_futures", "metrics", "BTCUSDT", "2020-09-02", "2020-09-03")
    assert crypto_lakehouse.load_dataset(s3_root, *metrics, engine="arrow").equals(
        crypto_lakehouse.load_dataset(data, *metrics, engine="arrow")
    )
    remote, here = crypto_lakehouse.duckdb_connect(s3_root), crypto_lakehouse.duckdb_connect(data)
    for view in loading.DATASET_VIEWS:
        if dict(here.execute("SELECT * FROM lakehouse_views").fetchall())[view]:
            rows = f"SELECT * FROM {view} ORDER BY ALL"
            assert remote.execute(rows).fetchall() == here.execute(rows).fetchall(), view
    broken = layout.parsed_day_path(s3_root, "um_futures", "aggTrades", "BTCUSDT", "20240303")
    storage.write_bytes(broken, b"not parquet")
    day = ("um_futures", "aggTrades", "BTCUSDT", "2024-03-01", "2024-03-03")
    assert crypto_lakehouse.load_dataset(s3_root, *day, engine="arrow").num_rows == 12
    sql = "SELECT count(*) FROM agg_trades WHERE trade_type = 'um_futures' AND day = '2024-03-02'"
    assert remote.execute(sql).fetchone() == (6,)
