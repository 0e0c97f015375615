"""crypto_lakehouse.load_klines and duckdb_connect on small files written here in the
layout of docs (legacy §10.5/§10.6, docs/quality.md, docs/provenance.md)."""

from __future__ import annotations

import re
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import crypto_lakehouse
from crypto_lakehouse import layout
from crypto_lakehouse.loading import DataNotFoundError
from crypto_lakehouse.schema import TIME_TYPE

MIN = 60_000
HOUR = 3_600_000
T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC


def kline_table(first_ms: int, n: int, step_ms: int = MIN, funding: str | None = None):
    """Candles whose open is their minute index (so rows are recognisable); funding on the
    HH:00 candles: "zeros" stores 0.0 elsewhere (1m files), "nulls" null (resampled)."""
    t = first_ms + np.arange(n, dtype=np.int64) * step_ms
    cols = {
        "candle_begin_time": pa.array(t).cast(TIME_TYPE),
        "open": (t // MIN).astype(np.float64),
        "close": (t // MIN).astype(np.float64) + 0.5,
        "volume": np.ones(n),
    }
    if funding is not None:
        on_hour = t % HOUR == 0
        rate = np.where(on_hour, 1e-4, 0.0)
        cols["funding_rate"] = pa.array(rate, mask=~on_hour if funding == "nulls" else None)
    return pa.table(cols)


def write(path, table):
    """With the metadata keys the pipeline's kline and feature writers put in: a file
    without them is one no run wrote, which the loaders warn about."""
    path.parent.mkdir(parents=True, exist_ok=True)
    stamp = {"interval": "1m", "indicators": "[]"}  # the feature writer's key too
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **stamp})
    pq.write_table(table, path, row_group_size=60)


@pytest.fixture
def data(tmp_path):
    d = tmp_path / "data"
    kdir = layout.results_klines_dir(d, "um_futures", "1m")
    # Segments SP0 … SP10 and the latest: SP10 must sort after SP9, the plain file last.
    for i in range(11):
        write(kdir / f"SP{i}_BTCUSDT.pqt", kline_table(T0 + i * 10 * HOUR, 3, funding="zeros"))
    write(kdir / "BTCUSDT.pqt", kline_table(T0 + 200 * HOUR, 180, funding="zeros"))
    write(kdir / "ETHUSDT.pqt", kline_table(T0, 120, funding="zeros"))
    write(kdir / ".tmp-ETHUSDT.pqt.1-2-3.part", pa.table({"x": [1]}))  # a run in progress
    rdir = layout.resampled_dir(d, "um_futures", "1h", "15m")
    write(rdir / "BTCUSDT.pqt", kline_table(T0 + 15 * MIN, 4, HOUR, funding="nulls"))
    write(layout.results_klines_dir(d, "spot", "1m") / "BTCUSDT.pqt", kline_table(T0 + MIN, 5))
    return d


def test_segments_in_time_order_with_numbers(data):
    df = crypto_lakehouse.load_klines(data, "um_futures", "BTCUSDT")
    assert list(df["segment"].unique()) == list(range(12))
    assert (df.groupby("segment").size().to_numpy() == [3] * 11 + [180]).all()
    assert df["candle_begin_time"].is_monotonic_increasing
    first_of_sp10 = df.loc[df["segment"] == 10, "candle_begin_time"].iloc[0]
    assert first_of_sp10 == pd.Timestamp(T0 + 100 * HOUR, unit="ms", tz="UTC")


def test_time_range_is_half_open_and_naive_means_utc(data):
    start = pd.Timestamp(T0 + 200 * HOUR + 30 * MIN, unit="ms")  # naive: UTC
    end = (start + pd.Timedelta(minutes=60)).tz_localize("UTC").tz_convert("Asia/Tokyo")
    df = crypto_lakehouse.load_klines(data, "um_futures", "BTCUSDT", start=start, end=end)
    expected_minutes = (T0 + 200 * HOUR) // MIN + 30 + np.arange(60)
    np.testing.assert_array_equal(df["open"].to_numpy(), expected_minutes.astype(float))
    assert set(df["segment"]) == {11}
    only_end = crypto_lakehouse.load_klines(
        data, "um_futures", "BTCUSDT", end=pd.Timestamp(T0 + 10 * HOUR + 2 * MIN, unit="ms")
    )
    assert len(only_end) == 3 + 2  # SP0 whole, SP1's first two minutes


def test_start_after_end_is_refused(data):
    with pytest.raises(ValueError, match="not before"):
        crypto_lakehouse.load_klines(data, "spot", "BTCUSDT", start="2024-02-01", end="2024-01-01")


@pytest.mark.parametrize("bound", ["start", "end"])
@pytest.mark.parametrize("value", ["", pd.NaT, np.datetime64("NaT"), "nat", "2024-13-45"])
def test_a_bound_that_is_not_a_time_is_refused(data, bound, value):
    # pandas reads "" and "nat" as NaT: a NaT start kept every row, a NaT end none.
    with pytest.raises(ValueError, match=rf"^{bound}=.* is not a time"):
        crypto_lakehouse.load_klines(data, "um_futures", "ETHUSDT", **{bound: value})


@pytest.mark.parametrize("bound", ["start", "end"])
@pytest.mark.parametrize("value", [T0 + HOUR, np.int64(T0 + HOUR), (T0 + HOUR) // 1000, 1.7e12])
def test_a_number_as_bound_is_refused_saying_how_to_pass_epoch_ms(data, bound, value):
    # pandas reads an int as nanoseconds: epoch ms T0 + HOUR was 1970-01-01 00:28.
    with pytest.raises(ValueError, match=rf"^{bound}=.* is a number.*unit='ms'"):
        crypto_lakehouse.load_klines(data, "um_futures", "ETHUSDT", **{bound: value})
    # What the message advises: ETHUSDT has minutes 0..119 from T0, so 60 from the hour on.
    advised = {bound: pd.Timestamp(T0 + HOUR, unit="ms")}
    df = crypto_lakehouse.load_klines(data, "um_futures", "ETHUSDT", **advised)
    first_minute = T0 // MIN + (60 if bound == "start" else 0)
    np.testing.assert_array_equal(df["open"].to_numpy(), first_minute + np.arange(60.0))


def test_none_is_no_bound(data):
    df = crypto_lakehouse.load_klines(data, "um_futures", "ETHUSDT", start=None, end=None)
    assert len(df) == 120


def test_resampled_files_by_interval_and_offset(data):
    df = crypto_lakehouse.load_klines(data, "um_futures", "BTCUSDT", resample="1h", offset="15m")
    expected = pd.date_range("2024-01-01 00:15", periods=4, freq="h", tz="UTC")
    assert list(df["candle_begin_time"]) == list(expected)


def test_the_default_offset_is_offset_0_whatever_the_unit_of_its_name(tmp_path):
    # The resample stage names offset 0 in its step's unit (a 4h target at 1h steps: 0h, 1h,
    # 2h, 3h; docs/config.md): the default offset '0m' found no folder there.
    d = tmp_path / "data"
    for offset in ("0h", "1h", "2h", "3h"):
        start = T0 + int(offset[0]) * HOUR
        write(layout.resampled_dir(d, "spot", "4h", offset) / "BTCUSDT.pqt",
              kline_table(start, 3, 4 * HOUR))  # fmt: skip
    df = crypto_lakehouse.load_klines(d, "spot", "BTCUSDT", resample="4h")
    expected = pd.date_range("2024-01-01 00:00", periods=3, freq="4h", tz="UTC")
    assert list(df["candle_begin_time"]) == list(expected)
    # An offset given in another unit names the same folder: "0m" and "120m" are 0h and 2h
    # (an explicit offset="0m" raised DataNotFoundError here).
    for given, hours in (("0m", 0), ("120m", 2), ("2h", 2)):
        got = crypto_lakehouse.load_klines(d, "spot", "BTCUSDT", resample="4h", offset=given)
        assert got["candle_begin_time"].iloc[0] == expected[0] + pd.Timedelta(hours=hours)
    with pytest.raises(DataNotFoundError, match="no offset '30m'.*0h, 1h, 2h, 3h"):
        crypto_lakehouse.load_klines(d, "spot", "BTCUSDT", resample="4h", offset="30m")
    feats = tmp_path / "features"  # same for load_features' folders: 3d at 1d steps
    for days in (0, 1, 2):
        write(layout.resampled_features_dir(feats, "spot", "3d", f"{days}d") / "BTCUSDT.pqt",
              kline_table(T0 + days * 24 * HOUR, 2 + days, 72 * HOUR))  # fmt: skip
    got = crypto_lakehouse.load_features(feats, "spot", "BTCUSDT", resample="3d")
    assert len(got) == 2  # the 0d folder's rows
    assert len(crypto_lakehouse.load_features(feats, "spot", "BTCUSDT", resample="3d",
                                              offset="24h")) == 3  # fmt: skip


def test_funding_modes(data):
    raw = crypto_lakehouse.load_klines(data, "um_futures", "ETHUSDT")
    assert (raw["funding_rate"] == 0.0).sum() == 118  # stored zeros on non-hour minutes
    nan = crypto_lakehouse.load_klines(data, "um_futures", "ETHUSDT", funding="nan")
    on_hour = nan["candle_begin_time"].dt.minute == 0
    assert nan["funding_rate"].isna().tolist() == (~on_hour).tolist()
    assert (nan.loc[on_hour, "funding_rate"] == 1e-4).all()
    res = crypto_lakehouse.load_klines(data, "um_futures", "BTCUSDT", resample="1h", offset="15m")
    assert res["funding_rate"].isna().all()  # :15 windows hold no HH:00 minute... as written
    zero = crypto_lakehouse.load_klines(
        data, "um_futures", "BTCUSDT", resample="1h", offset="15m", funding="zero"
    )
    assert (zero["funding_rate"] == 0.0).all()
    with pytest.raises(ValueError, match="funding='x'"):
        crypto_lakehouse.load_klines(data, "um_futures", "ETHUSDT", funding="x")


def test_polars_engine(data):
    pl = pytest.importorskip("polars")
    df = crypto_lakehouse.load_klines(data, "um_futures", "ETHUSDT", engine="polars")
    assert isinstance(df, pl.DataFrame)
    assert df.height == 120 and df["open"].to_list() == [float(T0 // MIN + i) for i in range(120)]


def test_a_damaged_file_is_named_with_how_to_repair_it(data):
    from crypto_lakehouse.loading import duckdb_connect

    cut = layout.results_klines_dir(data, "um_futures", "1m") / "ETHUSDT.pqt"
    cut.write_bytes(cut.read_bytes()[:50])
    for read in (
        lambda: crypto_lakehouse.load_klines(data, "um_futures", "ETHUSDT"),
        lambda: duckdb_connect(data),
    ):
        with pytest.raises(pa.ArrowInvalid) as info:
            read()
        message = str(info.value)
        assert str(cut) in message and "Parquet magic bytes not found" in message
        assert f"`crypto-lakehouse verify {data} --remove` removes it" in message
    assert len(crypto_lakehouse.load_klines(data, "um_futures", "BTCUSDT")) == 11 * 3 + 180


def test_polars_missing_says_how_to_install(data, monkeypatch):
    monkeypatch.setitem(sys.modules, "polars", None)  # import polars raises ImportError
    with pytest.raises(ImportError, match="pip install polars"):
        crypto_lakehouse.load_klines(data, "um_futures", "ETHUSDT", engine="polars")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(trade_type="futures"), "unknown trade type 'futures'; expected one of spot"),
        (dict(interval="5m"), "no interval '5m'.*intervals present: 1m"),
        (dict(trade_type="cm_futures"), "no generated klines of cm_futures.*: spot, um_futures"),
        (dict(trade_type="spot", resample="1h"), "resampled klines: um_futures\\)"),
        (dict(symbol="BTCUSD"), "did you mean BTCUSDT.*symbols present: BTCUSDT, ETHUSDT"),
        # Lower case was answered with the list only (difflib is case-sensitive).
        (dict(symbol="btcusdt"), "'btcusdt' in .*; did you mean BTCUSDT\\?"),
        (dict(symbol="ethusd"), "did you mean ETHUSDT"),
        (dict(resample="4h"), "no resample interval '4h'.*present: 1h"),
        (dict(resample="1h", offset="0m"), "no offset '0m'.*offsets present: 15m"),
    ],
)
def test_unknown_names_say_what_exists(data, kwargs, message):
    args = dict(trade_type="um_futures", symbol="BTCUSDT") | kwargs
    with pytest.raises((DataNotFoundError, ValueError), match=message):
        crypto_lakehouse.load_klines(data, **args)


def test_a_wrong_data_dir_is_named_as_duckdb_connect_names_it(data, tmp_path):
    # It said "no generated klines of um_futures in … (trade types with generated klines:
    # none)" for a data dir that does not exist, or for the results_data folder inside it.
    absent = tmp_path / "no-such-dir"
    with pytest.raises(DataNotFoundError, match=f"^data dir {re.escape(str(absent))} does not"):
        crypto_lakehouse.load_klines(absent, "um_futures", "BTCUSDT")
    with pytest.raises(DataNotFoundError, match="folders in .*results_data: spot, um_futures: is"):
        crypto_lakehouse.load_features(data / "results_data", "um_futures", "BTCUSDT")


def test_a_data_dir_without_resampled_files_or_features_names_the_config_key(tmp_path):
    # The offline demo (README: resample.targets []) then load_klines(..., resample="1h"):
    # the error asked "is it the pipeline's data_dir?" of the data dir itself, its
    # results_data/ in the list of folders it gave.
    d = tmp_path / "data"
    write(layout.results_klines_dir(d, "spot", "1m") / "BTCUSDT.pqt", kline_table(T0, 5))
    with pytest.raises(DataNotFoundError) as err:
        crypto_lakehouse.load_klines(d, "spot", "BTCUSDT", resample="1h")
    assert "config key resample.targets" in str(err.value)
    assert "is it the pipeline's data_dir" not in str(err.value)
    with pytest.raises(DataNotFoundError) as err:
        crypto_lakehouse.load_features(d, "spot", "BTCUSDT")
    assert "config key features.enabled" in str(err.value)
    assert "is it the pipeline's data_dir" not in str(err.value)
    # A folder that is not a data dir still gets the question.
    with pytest.raises(DataNotFoundError, match="is it the pipeline's data_dir"):
        crypto_lakehouse.load_klines(d / "results_data", "spot", "BTCUSDT", resample="1h")
    # So does an empty folder (a new one, or a typo of a parent): the question was lost there.
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataNotFoundError, match="folders in .*empty: none: is it the pipeline"):
        crypto_lakehouse.load_klines(tmp_path / "empty", "spot", "BTCUSDT")


def test_an_offset_without_resample_is_refused_not_ignored(data):
    # offset= alone was ignored: the generated 1m candles came back for what was meant as
    # the 1h windows at offset 15m.
    for load in (crypto_lakehouse.load_klines, crypto_lakehouse.load_features):
        with pytest.raises(ValueError, match="offset='15m' is the window offset of resampled"):
            load(data, "um_futures", "BTCUSDT", offset="15m")
    hourly = crypto_lakehouse.load_klines(
        data, "um_futures", "BTCUSDT", resample="1h", offset="15m"
    )
    assert len(hourly) == 4


def test_a_resampled_interval_given_as_interval_says_to_pass_resample(data):
    with pytest.raises(DataNotFoundError, match="1h is a resampled interval: pass resample='1h'"):
        crypto_lakehouse.load_klines(data, "um_futures", "BTCUSDT", interval="1h")


# ---------------------------------------------------------------------------- DuckDB
@pytest.fixture
def full(data):
    """Besides klines: funding from both sources, a quality and a provenance record, the
    features of a generated and of a resampled file (docs/features.md: same name, same
    candle_begin_time, float64 feature columns)."""
    t = pa.array([T0 + 8 * HOUR + 1]).cast(TIME_TYPE)
    hour = pa.array([T0 + 8 * HOUR]).cast(TIME_TYPE)
    write(
        layout.parsed_funding_path(data, "um_futures", "BTCUSDT"),
        pa.table({"funding_time": t, "funding_interval_hours": [8], "funding_rate": [1e-4],
                  "candle_begin_time": hour}),
    )  # fmt: skip
    write(
        layout.api_funding_path(data, "um_futures", "BTCUSDT"),
        pa.table({"funding_time": t, "candle_begin_time": hour, "funding_rate": [2e-4]}),
    )
    write(
        layout.quality_path(data, "spot", "1m", "BTCUSDT"),
        pa.table({"date": pa.array([19723, 19724], pa.date32()), "score": [1.0, 0.5]}),
    )
    write(
        layout.provenance_path(data, "spot", "1m", "BTCUSDT"),
        pa.table({"day": pa.array([19723], pa.date32()), "source": ["archive"]}),
    )
    spot = kline_table(T0 + MIN, 5)
    write(
        layout.features_dir(data, "spot", "1m") / "BTCUSDT.pqt",
        pa.table({"candle_begin_time": spot.column(0), "log_return": np.log(spot["close"])}),
    )
    hourly = kline_table(T0 + 15 * MIN, 4, HOUR)
    write(
        layout.resampled_features_dir(data, "um_futures", "1h", "15m") / "BTCUSDT.pqt",
        pa.table({"candle_begin_time": hourly.column(0), "rsi_14": [40.0, 45, 50, 60]}),
    )
    return data


def test_duckdb_views_derive_columns_from_paths(full):
    con = crypto_lakehouse.duckdb_connect(full)
    rows = con.execute(
        "SELECT trade_type, interval, symbol, segment, count(*) FROM klines GROUP BY ALL "
        "ORDER BY ALL"
    ).fetchall()
    assert rows == (
        [("spot", "1m", "BTCUSDT", 0, 5)]
        + [("um_futures", "1m", "BTCUSDT", i, 3) for i in range(11)]
        + [("um_futures", "1m", "BTCUSDT", 11, 180), ("um_futures", "1m", "ETHUSDT", 0, 120)]
    )
    assert con.execute('SELECT DISTINCT interval, "offset" FROM resampled_klines').fetchall() == [
        ("1h", "15m")
    ]
    funding = con.execute(
        "SELECT source, trade_type, symbol, funding_rate, funding_interval_hours FROM funding "
        "ORDER BY source"
    ).fetchall()
    assert funding == [
        ("archive", "um_futures", "BTCUSDT", 1e-4, 8),
        ("rest", "um_futures", "BTCUSDT", 2e-4, None),  # union_by_name: column absent → NULL
    ]
    assert con.execute("SELECT symbol, avg(score) FROM quality GROUP BY 1").fetchall() == [
        ("BTCUSDT", 0.75)
    ]
    assert con.execute("SELECT interval, source FROM provenance").fetchall() == [("1m", "archive")]
    features = con.execute(
        "SELECT trade_type, interval, symbol, segment, count(*), min(candle_begin_time) "
        "FROM features GROUP BY ALL"
    ).fetchall()
    assert features == [
        ("spot", "1m", "BTCUSDT", 0, 5, pd.Timestamp(T0 + MIN, unit="ms", tz="UTC"))
    ]
    resampled = con.execute(
        'SELECT trade_type, interval, "offset", symbol, segment, count(*) '
        "FROM resampled_features GROUP BY ALL"
    ).fetchall()
    assert resampled == [("um_futures", "1h", "15m", "BTCUSDT", 0, 4)]


def test_duckdb_view_without_files_is_not_created(data):
    con = crypto_lakehouse.duckdb_connect(data)
    counts = dict(con.execute("SELECT * FROM lakehouse_views").fetchall())
    assert counts == {"klines": 14, "resampled_klines": 1, "features": 0,
                      "resampled_features": 0, "quality": 0, "provenance": 0,
                      "funding": 0, "agg_trades": 0, "trades": 0, "metrics": 0,
                      "mark_price_klines": 0, "index_price_klines": 0,
                      "premium_index_klines": 0}  # fmt: skip
    with pytest.raises(Exception, match="funding"):
        con.execute("SELECT * FROM funding")


def test_duckdb_on_an_absent_data_dir_says_so_as_load_klines_does(tmp_path):
    # Before, duckdb_connect gave a connection without views: its first query failed with
    # "Table with name klines does not exist!".
    absent = tmp_path / "binance_dta"
    with pytest.raises(DataNotFoundError, match=f"^data dir {re.escape(str(absent))} does not"):
        crypto_lakehouse.duckdb_connect(absent)
    with pytest.raises(DataNotFoundError):
        crypto_lakehouse.load_klines(absent, "um_futures", "BTCUSDT")
    not_a_folder = tmp_path / "notes.txt"
    not_a_folder.write_text("x")
    with pytest.raises(DataNotFoundError, match="notes.txt is not a folder"):
        crypto_lakehouse.duckdb_connect(not_a_folder)


def test_duckdb_on_a_folder_without_lakehouse_data_names_what_is_there(tmp_path):
    # The parent of the data dir, a common slip: it names its folders.
    (tmp_path / "binance_data" / "aws_data").mkdir(parents=True)
    with pytest.raises(DataNotFoundError, match=r"no lakehouse data .*present: binance_data\)"):
        crypto_lakehouse.duckdb_connect(tmp_path)
    with pytest.raises(DataNotFoundError, match=r"present: aws_data\)"):
        crypto_lakehouse.duckdb_connect(tmp_path / "binance_data")


def test_duckdb_on_a_data_dir_with_some_files_has_their_views(tmp_path):
    # Funding parsed, no klines generated yet: the funding view, no error.
    funding = pa.table({"funding_time": pa.array([T0]).cast(TIME_TYPE), "funding_rate": [1e-4]})
    write(layout.parsed_funding_path(tmp_path, "um_futures", "BTCUSDT"), funding)
    con = crypto_lakehouse.duckdb_connect(tmp_path)
    assert con.execute("SELECT symbol, funding_rate FROM funding").fetchall() == [("BTCUSDT", 1e-4)]


def test_duckdb_on_an_empty_s3_prefix_says_so(s3_root):
    # An empty prefix names the prefixes next to it (tests/unit/test_loading_while_writing.py:
    # a typo in the prefix; before 2026-12-06 "(folders present: none)").
    with pytest.raises(
        DataNotFoundError,
        match=f"no lakehouse data in {s3_root}: no object below it \\(.*prefixes in the bucket",
    ):
        crypto_lakehouse.duckdb_connect(s3_root)


def test_duckdb_symbol_filter_skips_other_files(data):
    # The filter on the path-derived column prunes files before their rows are read.
    con = crypto_lakehouse.duckdb_connect(data)
    sql = "SELECT count(*) FROM klines WHERE trade_type = 'um_futures' AND symbol = 'ETHUSDT'"
    assert con.execute(sql).fetchone() == (120,)
    profile = "".join(str(row) for row in con.execute(f"EXPLAIN ANALYZE {sql}").fetchall())
    # One scan per file schema (spot files have no funding_rate): 1 of the 14 files is read.
    scanned = [tuple(map(int, m)) for m in re.findall(r"Scanning Files: (\d+)/(\d+)", profile)]
    assert scanned and sum(a for a, _ in scanned) == 1, profile
    assert sum(b for _, b in scanned) == 14, profile


def test_duckdb_pqt_pitfall(data):
    """docs/loading.md: `FROM 'x.pqt'` is not recognised, read_parquet('x.pqt') is."""
    import duckdb

    path = layout.results_klines_dir(data, "spot", "1m") / "BTCUSDT.pqt"
    con = duckdb.connect()
    with pytest.raises(duckdb.Error):
        con.execute(f"SELECT count(*) FROM '{path}'").fetchone()
    assert con.execute(f"SELECT count(*) FROM read_parquet('{path}')").fetchone() == (5,)


def test_duckdb_connect_on_s3_reads_the_footers_at_once(full, s3_root, monkeypatch):
    """Connecting reads every file's footer (its schema). Before 2026-12-07 one after the
    other: over 2,000 objects at 20 ms of latency (tests/latency_proxy.py) the connection
    took 94 s, now 6.4 s. Here: footer reads overlap, and the views are those of the local
    dir."""
    import threading
    import time

    from crypto_lakehouse import storage

    for path in sorted(p for p in full.rglob("*.pqt") if p.is_file()):
        storage.write_bytes(storage.join(s3_root, path.relative_to(full).as_posix()),
                            path.read_bytes())  # fmt: skip
    real, lock = storage.parquet_metadata, threading.Lock()
    in_flight, most = [0], [0]

    def slow_footer(path):
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
        time.sleep(0.05)  # a round trip to a store farther away than loopback
        try:
            return real(path)
        finally:
            with lock:
                in_flight[0] -= 1

    monkeypatch.setattr(storage, "parquet_metadata", slow_footer)
    remote = crypto_lakehouse.duckdb_connect(s3_root)
    assert most[0] > 1
    local = crypto_lakehouse.duckdb_connect(full)
    for view in ("klines", "resampled_klines", "features", "resampled_features"):
        rows = f"SELECT * FROM {view} ORDER BY ALL"
        assert remote.execute(rows).fetchall() == local.execute(rows).fetchall(), view


def test_duckdb_views_on_s3_equal_the_local_ones(full, s3_root, seaweed):
    """The same files below an ``s3://`` data dir (SeaweedFS): the same views, columns and
    rows as on the local dir; klines row count and sums equal pyarrow reading the objects
    with a client of its own; a run's temp file is not read there either."""
    import duckdb
    import pyarrow.dataset as ds

    from crypto_lakehouse import storage

    objects = []
    for path in sorted(p for p in full.rglob("*") if p.is_file()):
        key = storage.join(s3_root, path.relative_to(full).as_posix())
        storage.write_bytes(key, path.read_bytes())
        objects.append(key)
    local, remote = crypto_lakehouse.duckdb_connect(full), crypto_lakehouse.duckdb_connect(s3_root)
    views = "SELECT * FROM lakehouse_views ORDER BY view"
    assert remote.execute(views).fetchall() == local.execute(views).fetchall()
    for view in ("klines", "resampled_klines", "features", "resampled_features", "funding",
                 "quality", "provenance"):  # fmt: skip
        assert (remote.execute(f"DESCRIBE {view}").fetchall()
                == local.execute(f"DESCRIBE {view}").fetchall()), view  # fmt: skip
        rows = f"SELECT * FROM {view} ORDER BY ALL"
        assert remote.execute(rows).fetchall() == local.execute(rows).fetchall(), view
    klines = [
        f"{o.bucket}/{o.key}"
        for o in objects
        if "/results_data/" in str(o) and "/klines/" in str(o) and o.name.endswith(".pqt")
        and not o.name.startswith(".tmp")
    ]  # fmt: skip
    direct = ds.dataset(klines, filesystem=seaweed.client(), format="parquet").to_table()
    got = remote.execute("SELECT count(*), sum(open), sum(volume) FROM klines").fetchone()
    assert got == (
        direct.num_rows,
        pytest.approx(direct.column("open").to_numpy().sum()),
        pytest.approx(direct.column("volume").to_numpy().sum()),
    )
    # A filter on a path column skips the other files: one of them broken now is not read
    # (its footer may be cached from the queries above: sum(open) reads its data pages).
    broken = layout.results_klines_dir(s3_root, "um_futures", "1m") / "BTCUSDT.pqt"
    storage.write_bytes(broken, b"not parquet")
    sql = "SELECT sum(open) FROM klines WHERE trade_type = 'um_futures' AND symbol = '{}'"
    eth = local.execute(sql.format("ETHUSDT")).fetchone()
    assert remote.execute(sql.format("ETHUSDT")).fetchone() == eth
    with pytest.raises(duckdb.Error, match="corrupt"):
        remote.execute(sql.format("BTCUSDT")).fetchone()


# ---------------------------------------------------------------- bounds: now, today, < 1 ms
def test_duckdb_views_count_utc_days_whatever_the_machine_time_zone(tmp_path):
    """The connection's TimeZone was the machine's: in New York docs/loading.md's
    ``date_trunc('day', candle_begin_time)`` cut the candles at local midnight (three
    "days" of 240, 1440 and 1200 candles for two UTC days), and a candle time matched with
    the UTC ``date`` of the quality view landed on the wrong day."""
    import json
    import os
    import subprocess

    d = tmp_path / "data"
    write(layout.results_klines_dir(d, "spot", "1m") / "BTCUSDT.pqt", kline_table(T0, 2 * 1440))
    script = """
import json, sys
import crypto_lakehouse
con = crypto_lakehouse.duckdb_connect(sys.argv[1])
rows = con.execute(
    "SELECT strftime(date_trunc('day', candle_begin_time), '%Y-%m-%d %H:%M') AS day, count(*) "
    "FROM klines GROUP BY ALL ORDER BY ALL"
).fetchall()
first = con.execute("SELECT min(candle_begin_time)::VARCHAR FROM klines").fetchone()[0]
print(json.dumps({"days": rows, "first": first}))
"""
    env = os.environ | {"TZ": "America/New_York", "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run(
        [sys.executable, "-c", script, str(d)], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["days"] == [["2024-01-01 00:00", 1440], ["2024-01-02 00:00", 1440]]
    assert got["first"] == "2024-01-01 00:00:00+00"


def test_now_and_today_are_utc_whatever_the_machine_time_zone(tmp_path):
    """pandas reads "now" and "today" as the machine's local wall clock; in New York
    (UTC-5/-4) that bounded the rows hours off. Run in a process with TZ set."""
    import json
    import os
    import subprocess
    import time

    day = 24 * HOUR
    first = (time.time_ns() // 1_000_000 // day - 1) * day  # 00:00 UTC yesterday
    d = tmp_path / "data"
    write(layout.results_klines_dir(d, "spot", "1m") / "BTCUSDT.pqt", kline_table(first, 3 * 1440))
    script = """
import json, sys, time
import crypto_lakehouse
def ms(t):
    return int(t.value // 1_000_000)
load = lambda **bounds: crypto_lakehouse.load_klines(sys.argv[1], "spot", "BTCUSDT", **bounds)
before = time.time_ns() // 1_000_000
to_now, from_now = load(end="now"), load(start="now")
to_today, from_today = load(end="today"), load(start="today")
after = time.time_ns() // 1_000_000
print(json.dumps({
    "before": before, "after": after,
    "to_now": ms(to_now.candle_begin_time.iloc[-1]),
    "from_now": ms(from_now.candle_begin_time.iloc[0]),
    "to_today": ms(to_today.candle_begin_time.iloc[-1]),
    "from_today": ms(from_today.candle_begin_time.iloc[0]),
}))
"""
    env = os.environ | {"TZ": "America/New_York", "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run(
        [sys.executable, "-c", script, str(d)], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    before, after = got["before"], got["after"]
    # The last minute before now and the first at or after it.
    assert before - MIN < got["to_now"] < after
    assert before <= got["from_now"] < after + MIN
    # "today" is 00:00 UTC of the UTC day (as a date string would be), not the local clock.
    midnights = {before // day * day, after // day * day}
    assert got["from_today"] in midnights
    assert got["to_today"] + MIN in midnights


def test_bounds_finer_than_a_millisecond_round_up(data):
    """Candle times are whole milliseconds: a start half a millisecond after a candle does
    not take it, an end half a millisecond after one keeps it."""
    minute = T0 // MIN  # ETHUSDT's open is its minute index, minutes 0..119 from T0
    df = crypto_lakehouse.load_klines(
        data,
        "um_futures",
        "ETHUSDT",
        start="2024-01-01T00:10:00.0005",
        end="2024-01-01T00:20:00.0005",
    )
    np.testing.assert_array_equal(df["open"].to_numpy(), minute + np.arange(11.0, 21.0))
    one_ns = pd.Timestamp(T0 + 30 * MIN, unit="ms") + pd.Timedelta(1, "ns")
    after = crypto_lakehouse.load_klines(data, "um_futures", "ETHUSDT", start=one_ns)
    assert after["open"].iloc[0] == minute + 31
    before = crypto_lakehouse.load_klines(data, "um_futures", "ETHUSDT", end=one_ns)
    assert before["open"].iloc[-1] == minute + 30
    # start < end within one millisecond: a valid, empty range (not "start is not before end").
    empty = crypto_lakehouse.load_klines(
        data,
        "um_futures",
        "ETHUSDT",
        start="2024-01-01T00:10:00.0001",
        end="2024-01-01T00:10:00.0005",
    )
    assert empty.empty


def test_the_default_offset_is_the_zero_offset_of_an_hour_step_target(tmp_path):
    # A target {interval: 4h, offset_step: 1h} writes the offsets 0h, 1h, 2h, 3h (legacy
    # naming, f"{k * n}{unit}"): load_klines(resample="4h") without offset= looked for a
    # folder 0m and raised DataNotFoundError, as did load_features.
    from crypto_lakehouse import io
    from crypto_lakehouse.resample import run_resample
    from tests.unit.test_features_microstructure import candles
    from tests.unit.test_loading_features import write_segment

    d = tmp_path / "data"
    n = 3 * 240 + 17  # three whole 4h windows from 00:00, and a partial one
    c = candles(n, seed=5)
    path = layout.results_klines_dir(d, "spot", "1m") / "BTCUSDT.pqt"
    write_segment(path, T0, c)
    lh = d / "lakehouse"
    gen_report = lh / "reports/gen_kline/spot/klines-1m/BTCUSDT.json"
    segment = {"name": "BTCUSDT", "file": path.relative_to(d).as_posix(), "rows": n}
    io.write_json(
        gen_report,
        {"trade_type": "spot", "symbol": "BTCUSDT", "interval": "1m", "segments": [segment]},
    )
    run_resample(
        trade_type="spot",
        symbol="BTCUSDT",
        interval="1m",
        data_dir=d,
        gen_report=gen_report,
        targets=[{"interval": "4h", "offset_step": "1h"}],
        report_path=lh / "reports/resample/spot/klines-1m/BTCUSDT.json",
        stats_path=lh / "stats/resample/spot/klines-1m/BTCUSDT.json",
    )
    assert layout.subdir_names(d / "results_data/spot/resampled_klines/4h") == [
        "0h", "1h", "2h", "3h"
    ]  # fmt: skip
    df = crypto_lakehouse.load_klines(d, "spot", "BTCUSDT", resample="4h")
    # The windows [00:00, 04:00), [04:00, 08:00), [08:00, 12:00), from the 1m candles.
    assert list(df["candle_begin_time"]) == [
        pd.Timestamp(T0 + k * 4 * HOUR, unit="ms", tz="UTC") for k in range(3)
    ]
    assert df["open"].tolist() == [c["open"][240 * k] for k in range(3)]
    assert df["close"].tolist() == [c["close"][240 * k + 239] for k in range(3)]
    np.testing.assert_allclose(
        df["volume"], [c["volume"][240 * k : 240 * (k + 1)].sum() for k in range(3)], rtol=1e-12
    )
    feats = crypto_lakehouse.load_features  # no features here: the same folder lookup
    with pytest.raises(DataNotFoundError, match="no resampled features of spot"):
        feats(d, "spot", "BTCUSDT", resample="4h")
    # An explicit offset still selects its folder; "0m" is offset 0 in minutes: the 0h folder.
    at_1h = crypto_lakehouse.load_klines(d, "spot", "BTCUSDT", resample="4h", offset="1h")
    # [01:00, 05:00) and [05:00, 09:00); [09:00, 13:00) would need minutes up to 779.
    assert list(at_1h["candle_begin_time"]) == [
        pd.Timestamp(T0 + (1 + k * 4) * HOUR, unit="ms", tz="UTC") for k in range(2)
    ]
    at_0m = crypto_lakehouse.load_klines(d, "spot", "BTCUSDT", resample="4h", offset="0m")
    assert at_0m.equals(df)
