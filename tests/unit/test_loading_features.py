"""The ``features`` and ``resampled_features`` views of duckdb_connect over feature files
written by the real jobs (run_resample, run_features) from 1m segment files named as
gen_kline names them (legacy §8.4): every row of every file, as pyarrow reads the file,
behind the columns the view derives from the file's path (docs/loading.md)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import crypto_lakehouse
from crypto_lakehouse import io, layout
from crypto_lakehouse.features import run_features
from crypto_lakehouse.loading import DataNotFoundError
from crypto_lakehouse.resample import run_resample
from crypto_lakehouse.schema import KLINE_SCHEMA, TIME_TYPE
from tests.unit.test_features_microstructure import candles

MIN = 60_000
DAY = 86_400_000
T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
TRADE_TYPE = "um_futures"
TARGETS = [{"interval": "1h", "offset_step": "15m"}]  # offsets 0m, 15m, 30m, 45m
OFFSETS = ("0m", "15m", "30m", "45m")
# Rows per segment, oldest first: BTCUSDT has SP0_, SP1_ and the latest BTCUSDT.pqt.
SEGMENT_ROWS = {"BTCUSDT": [150, 90, 200], "ETHUSDT": [130]}


def segment_names(symbol: str, count: int) -> list[str]:
    """``SP0_SYM``, ``SP1_SYM``, …, then ``SYM`` for the latest segment."""
    return [f"SP{i}_{symbol}" for i in range(count - 1)] + [symbol]


def write_segment(path, first_ms: int, c: dict[str, np.ndarray]) -> None:
    n = len(c["close"])
    arrays = [pa.array(first_ms + np.arange(n, dtype=np.int64) * MIN).cast(TIME_TYPE)]
    fields = list(KLINE_SCHEMA) + [pa.field("avg_price_1m", pa.float64())]
    arrays += [pa.array(c[f.name], type=f.type) for f in fields[1:]]
    path.parent.mkdir(parents=True, exist_ok=True)
    # The metadata key gen_kline's files carry (a file without it is one no run wrote).
    schema = pa.schema(fields, metadata={"interval": "1m"})
    pq.write_table(pa.Table.from_arrays(arrays, schema=schema), path)


def build_data_dir(data) -> None:
    """Per symbol its segment files (one a day: a gap between them), its gen_kline report
    and the real resample job; then the real features job on all of them."""
    lh = data / "lakehouse"
    gen_reports, resample_reports = [], []
    for seed, (symbol, rows) in enumerate(SEGMENT_ROWS.items()):
        segments = []
        for i, (name, n) in enumerate(zip(segment_names(symbol, len(rows)), rows, strict=True)):
            path = layout.results_klines_dir(data, TRADE_TYPE, "1m") / f"{name}.pqt"
            write_segment(path, T0 + i * DAY, candles(n, seed=10 * seed + i))
            segments.append({"name": name, "file": path.relative_to(data).as_posix(), "rows": n})
        gen_report = lh / f"reports/gen_kline/{TRADE_TYPE}/klines-1m/{symbol}.json"
        io.write_json(
            gen_report,
            {"trade_type": TRADE_TYPE, "symbol": symbol, "interval": "1m", "segments": segments},
        )
        resample_report = lh / f"reports/resample/{TRADE_TYPE}/klines-1m/{symbol}.json"
        run_resample(
            trade_type=TRADE_TYPE,
            symbol=symbol,
            interval="1m",
            data_dir=data,
            gen_report=gen_report,
            targets=TARGETS,
            report_path=resample_report,
            stats_path=lh / f"stats/resample/{TRADE_TYPE}/klines-1m/{symbol}.json",
        )
        gen_reports.append(str(gen_report))
        resample_reports.append(str(resample_report))
    stats = run_features(
        trade_type=TRADE_TYPE,
        interval="1m",
        data_dir=str(data),
        symbols=list(SEGMENT_ROWS),
        gen_reports=gen_reports,
        resample_reports=resample_reports,
        # The default indicators and windows: the columns docs/loading.md's examples name.
        report_path=str(lh / "reports/features/test.json"),
        stats_path=str(lh / "stats/features/test.json"),
    )
    assert stats["failures"] == []


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    data = tmp_path_factory.mktemp("loading_features") / "binance_data"
    build_data_dir(data)
    return data


def expected_rows(files: list[tuple[dict, object]]) -> pd.DataFrame:
    """Each file read with pyarrow, behind its path columns, concatenated in list order."""
    frames = []
    for path_columns, path in files:
        frame = pq.read_table(path).to_pandas()
        for position, (name, value) in enumerate(path_columns.items()):
            frame.insert(position, name, value)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def test_features_view_holds_every_feature_file_with_its_path_columns(data):
    files = [
        (
            {"trade_type": TRADE_TYPE, "interval": "1m", "symbol": symbol, "segment": number},
            layout.features_dir(data, TRADE_TYPE, "1m") / f"{name}.pqt",
        )
        for symbol, rows in sorted(SEGMENT_ROWS.items())
        for number, name in enumerate(segment_names(symbol, len(rows)))
    ]
    expected = expected_rows(files)
    assert len(expected) == sum(map(sum, SEGMENT_ROWS.values()))  # one row per 1m candle
    con = crypto_lakehouse.duckdb_connect(data)
    got = con.execute("SELECT * FROM features ORDER BY symbol, segment, candle_begin_time").df()
    assert list(got.columns) == list(expected.columns)
    assert "ema_20" in got.columns and got["ema_20"].isna().any()  # TA-Lib's warm-up NaN kept
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)
    types = dict(con.execute("SELECT column_name, column_type FROM (DESCRIBE features)").fetchall())
    assert types["segment"] == "INTEGER"
    assert {types[c] for c in expected.columns[5:]} == {"DOUBLE"}


def test_resampled_features_view_holds_every_file_with_interval_and_offset(data):
    files = [
        (
            {
                "trade_type": TRADE_TYPE,
                "interval": "1h",
                "offset": offset,
                "symbol": symbol,
                "segment": number,
            },
            layout.resampled_features_dir(data, TRADE_TYPE, "1h", offset) / f"{name}.pqt",
        )
        for symbol, rows in sorted(SEGMENT_ROWS.items())
        for offset in OFFSETS
        for number, name in enumerate(segment_names(symbol, len(rows)))
    ]
    expected = expected_rows(files)
    con = crypto_lakehouse.duckdb_connect(data)
    got = con.execute(
        'SELECT * FROM resampled_features ORDER BY symbol, "offset", segment, candle_begin_time'
    ).df()
    assert list(got.columns) == list(expected.columns)
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)


def test_features_join_their_candles_on_candle_begin_time(data):
    """The join of docs/loading.md: each feature row has its candle, none is left over."""
    con = crypto_lakehouse.duckdb_connect(data)
    counts = con.execute(
        """
        SELECT count(*), count(k.close)
        FROM features f
        LEFT JOIN klines k USING (trade_type, interval, symbol, candle_begin_time)
        """
    ).fetchone()
    assert counts == (sum(map(sum, SEGMENT_ROWS.values())),) * 2
    # The candles of a file and its features share the segment number too.
    mismatched = con.execute(
        "SELECT count(*) FROM features f JOIN klines k "
        "USING (trade_type, interval, symbol, candle_begin_time) WHERE f.segment <> k.segment"
    ).fetchone()
    assert mismatched == (0,)


def test_a_symbol_filter_prunes_the_files_of_both_sides_of_the_join(data):
    con = crypto_lakehouse.duckdb_connect(data)
    sql = (
        "SELECT count(*) FROM klines k JOIN features f "
        "USING (trade_type, interval, symbol, candle_begin_time) WHERE symbol = 'ETHUSDT'"
    )
    assert con.execute(sql).fetchone() == (sum(SEGMENT_ROWS["ETHUSDT"]),)
    profile = "".join(str(row) for row in con.execute(f"EXPLAIN ANALYZE {sql}").fetchall())
    # One scan per view (one schema each): ETHUSDT's one file of the four on each side.
    assert re.findall(r"Scanning Files: (\d+)/(\d+)", profile) == [("1", "4")] * 2, profile


# ------------------------------------------------------------------- load_features
def feature_files_read_directly(directory, symbol: str) -> pd.DataFrame:
    """The symbol's feature files read with pyarrow, oldest segment first, each with its
    segment number (0 for SP0_, …, the highest for the plain SYM.pqt)."""
    names = segment_names(symbol, len(SEGMENT_ROWS[symbol]))
    frames = []
    for number, name in enumerate(names):
        frame = pq.read_table(directory / f"{name}.pqt").to_pandas()
        frames.append(frame.assign(segment=np.int32(number)))
    return pd.concat(frames, ignore_index=True)


def test_load_features_reads_every_segment_file_of_the_symbol(data):
    got = crypto_lakehouse.load_features(data, TRADE_TYPE, "BTCUSDT")
    expected = feature_files_read_directly(layout.features_dir(data, TRADE_TYPE, "1m"), "BTCUSDT")
    assert len(got) == sum(SEGMENT_ROWS["BTCUSDT"])
    assert "rsi_14" in got.columns and got["rsi_14"].isna().any()  # warm-up NaN of each file
    pd.testing.assert_frame_equal(got, expected)


def test_load_features_of_resampled_files_by_interval_and_offset(data):
    got = crypto_lakehouse.load_features(data, TRADE_TYPE, "ETHUSDT", resample="1h", offset="15m")
    directory = layout.resampled_features_dir(data, TRADE_TYPE, "1h", "15m")
    pd.testing.assert_frame_equal(got, feature_files_read_directly(directory, "ETHUSDT"))


def test_load_features_bounds_rows_as_load_klines_does(data):
    """[start, end) across two segment files: SP1_'s minutes 30.. and the latest's first 10."""
    start = pd.Timestamp(T0 + DAY + 30 * MIN, unit="ms")  # naive: UTC
    end = pd.Timestamp(T0 + 2 * DAY + 10 * MIN, unit="ms", tz="UTC").tz_convert("Asia/Tokyo")
    got = crypto_lakehouse.load_features(data, TRADE_TYPE, "BTCUSDT", start=start, end=end)
    full = feature_files_read_directly(layout.features_dir(data, TRADE_TYPE, "1m"), "BTCUSDT")
    times = full["candle_begin_time"]
    expected = full[(times >= start.tz_localize("UTC")) & (times < end)].reset_index(drop=True)
    assert len(expected) == (90 - 30) + 10 and set(expected["segment"]) == {1, 2}
    pd.testing.assert_frame_equal(got, expected)
    candles = crypto_lakehouse.load_klines(data, TRADE_TYPE, "BTCUSDT", start=start, end=end)
    assert got["candle_begin_time"].equals(candles["candle_begin_time"])
    with pytest.raises(ValueError, match="^end=.* is a number"):
        crypto_lakehouse.load_features(data, TRADE_TYPE, "BTCUSDT", end=T0)


def test_load_features_polars_engine(data):
    pl = pytest.importorskip("polars")
    got = crypto_lakehouse.load_features(data, TRADE_TYPE, "ETHUSDT", engine="polars")
    assert isinstance(got, pl.DataFrame) and got.height == sum(SEGMENT_ROWS["ETHUSDT"])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(symbol="BTCUSD"), r"no symbol 'BTCUSD' in .*/features/1m; did you mean BTCUSDT"),
        (dict(symbol="SOLUSDT"), r"symbols present: BTCUSDT, ETHUSDT\)"),
        (dict(interval="5m"), r"no interval '5m' in .*/features .*intervals present: 1m\)"),
        (dict(resample="4h"), r"no resample interval '4h' .*present: 1h\)"),
        (dict(resample="1h", offset="5m"), r"no offset '5m' .*offsets present: 0m, 15m, 30m"),
        (dict(trade_type="spot"), r"^no features of spot in .*trade types with features: um_"),
        (dict(trade_type="spot", resample="1h"), r"trade types with resampled features: um_"),
        (dict(trade_type="futures"), "unknown trade type 'futures'"),
    ],
)
def test_load_features_unknown_names_say_what_exists(data, kwargs, message):
    args = dict(trade_type=TRADE_TYPE, symbol="BTCUSDT") | kwargs
    with pytest.raises((DataNotFoundError, ValueError), match=message):
        crypto_lakehouse.load_features(data, **args)


def test_sql_sees_the_nan_of_the_warm_up_rows(data):
    # The warm-up rows hold NaN (TA-Lib's). Parquet min/max statistics leave NaN out, and
    # DuckDB took the columns for NaN-free: a WHERE isnan(…) pushed into the scan was
    # folded to false (no row), WHERE NOT isnan(…) kept every row, and avg() was NaN.
    values = np.concatenate(
        [
            pq.read_table(layout.features_dir(data, TRADE_TYPE, "1m") / f"{name}.pqt")[
                "ema_20"
            ].to_numpy()
            for symbol, rows in SEGMENT_ROWS.items()
            for name in segment_names(symbol, len(rows))
        ]
    )
    nan = int(np.isnan(values).sum())
    assert 0 < nan < len(values)
    con = crypto_lakehouse.duckdb_connect(data)
    count = "SELECT count(*) FROM features WHERE {}"
    assert con.execute(count.format("isnan(ema_20)")).fetchone()[0] == nan
    assert con.execute(count.format("NOT isnan(ema_20)")).fetchone()[0] == len(values) - nan
    mean = con.execute("SELECT avg(ema_20) FROM features WHERE NOT isnan(ema_20)").fetchone()[0]
    assert mean == pytest.approx(np.nanmean(values), rel=1e-12)
