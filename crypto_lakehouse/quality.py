"""Soft data-quality checks of parsed klines: one record row per symbol and UTC day.

Nothing here rejects data (that is the structural checks' job in ``parse.validate``); it
measures it, so that gaps, dead minutes and impossible candles are visible per day. The
columns and the score formula are documented in docs/quality.md.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from crypto_lakehouse.intervals import DAY_MS, candles_per_day, interval_ms

QUALITY_SCHEMA = pa.schema(
    [
        ("date", pa.date32()),
        ("source", pa.string()),  # bucket key the day's rows came from; null: no archive
        ("rows", pa.int64()),
        ("expected_rows", pa.int64()),
        ("missing_rows", pa.int64()),
        ("zero_volume_rows", pa.int64()),
        ("longest_zero_volume_run", pa.int64()),
        ("ohlc_violations", pa.int64()),
        ("taker_violations", pa.int64()),
        ("score", pa.float64()),
    ]
)

# A dead (zero-volume) candle is real market data, but it tells a backtest little: it
# weighs half as much as a missing or impossible one.
ZERO_VOLUME_WEIGHT = 0.5
SCORE_DECIMALS = 6

COUNT_COLUMNS = (
    "rows",
    "expected_rows",
    "missing_rows",
    "zero_volume_rows",
    "ohlc_violations",
    "taker_violations",
)


def day_scores(rows, expected, zero_volume, violating_rows) -> np.ndarray:
    """score = completeness × (1 − violating share) × (1 − 0.5 × zero-volume share)."""
    rows = np.asarray(rows, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    safe_rows = np.maximum(rows, 1.0)
    completeness = np.minimum(rows, expected) / expected
    validity = 1.0 - np.asarray(violating_rows) / safe_rows
    liveliness = 1.0 - ZERO_VOLUME_WEIGHT * np.asarray(zero_volume) / safe_rows
    return np.round(completeness * validity * liveliness, SCORE_DECIMALS)


def _col(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).to_numpy()


# Rows measured at once: a month of 1s (2.68 M rows) is measured a day or two at a time, so
# the measure's arrays (~20 of one int64 or float64 per row: ~400 MB for the month) stay a
# slice's, whatever the month. Every measure is per day, so the rows are the same.
QUALITY_SLICE_ROWS = 1 << 17


def day_quality(klines: pa.Table, interval: str, day_sources: dict[int, str]) -> pa.Table:
    """Quality rows for the days in ``day_sources`` (day number -> source key).

    ``klines`` holds the rows of those days (legacy kline schema), sorted by time; a day
    without rows gets a row with ``rows`` = 0.
    """
    if klines.num_rows <= QUALITY_SLICE_ROWS or len(day_sources) < 2:
        return _day_quality(klines, interval, day_sources)
    days = np.array(sorted(day_sources), dtype=np.int64)
    ts = klines.column("candle_begin_time").cast(pa.int64()).to_numpy()
    # Row where each day starts; the rows of a day no source has (refused below) and those
    # before the first day or after the last go with the slice around them.
    start = np.searchsorted(ts, days * DAY_MS)
    start[0] = 0
    del ts
    end = np.append(start[1:], klines.num_rows)
    parts, first = [], 0
    while first < days.size:
        last = first + 1  # at least one day; more while the slice stays under the limit
        while last < days.size and end[last] - start[first] <= QUALITY_SLICE_ROWS:
            last += 1
        rows = klines.slice(int(start[first]), int(end[last - 1] - start[first]))
        sources = {int(d): day_sources[int(d)] for d in days[first:last]}
        parts.append(_day_quality(rows, interval, sources))
        first = last
    return pa.concat_tables(parts)


def _day_quality(klines: pa.Table, interval: str, day_sources: dict[int, str]) -> pa.Table:
    days = np.array(sorted(day_sources), dtype=np.int64)
    expected = candles_per_day(interval)
    step = interval_ms(interval)
    ts = klines.column("candle_begin_time").cast(pa.int64()).to_numpy()
    day = ts // DAY_MS
    slot = np.searchsorted(days, day)
    if ts.size and (slot.max() >= days.size or not np.array_equal(days[slot], day)):
        raise ValueError("klines hold rows of a day that has no source")
    n = days.size

    def per_day(mask: np.ndarray) -> np.ndarray:
        return np.bincount(slot[mask], minlength=n).astype(np.int64)

    o, h, lo, c = (_col(klines, k) for k in ("open", "high", "low", "close"))
    vol, qvol = _col(klines, "volume"), _col(klines, "quote_volume")
    tbase = _col(klines, "taker_buy_base_asset_volume")
    tquote = _col(klines, "taker_buy_quote_asset_volume")
    ohlc_bad = ~((lo <= o) & (o <= h) & (lo <= c) & (c <= h))
    taker_bad = (tbase > vol) | (tquote > qvol)
    zero = vol == 0

    # Zero-volume runs: consecutive candles (one step apart, same day) with volume 0.
    continues = np.zeros(ts.size, dtype=bool)
    continues[1:] = (np.diff(ts) == step) & (day[1:] == day[:-1]) & zero[:-1]
    run_start = zero & ~continues
    run_id = np.cumsum(run_start) - 1
    run_len = np.bincount(run_id[zero]) if zero.any() else np.zeros(0, dtype=np.int64)
    longest = np.zeros(n, dtype=np.int64)
    np.maximum.at(longest, slot[run_start], run_len)

    rows = np.bincount(slot, minlength=n).astype(np.int64)
    zero_rows = per_day(zero)
    ohlc = per_day(ohlc_bad)
    taker = per_day(taker_bad)
    violating = per_day(ohlc_bad | taker_bad)
    expected_arr = np.full(n, expected, dtype=np.int64)
    return pa.table(
        {
            "date": pa.array(days.astype(np.int32), pa.date32()),
            "source": pa.array([day_sources[int(d)] for d in days], pa.string()),
            "rows": rows,
            "expected_rows": expected_arr,
            "missing_rows": np.maximum(expected_arr - rows, 0),
            "zero_volume_rows": zero_rows,
            "longest_zero_volume_run": longest,
            "ohlc_violations": ohlc,
            "taker_violations": taker,
            "score": day_scores(rows, expected_arr, zero_rows, violating),
        },
        schema=QUALITY_SCHEMA,
    )


def _months_of(dates: pa.ChunkedArray | pa.Array) -> np.ndarray:
    d = dates.cast(pa.int32()).to_numpy().astype("datetime64[D]")
    return np.datetime_as_string(d.astype("datetime64[M]")).astype(object)


def merge_quality(
    old: pa.Table | None, replaced_months: set[str], new_rows: list[pa.Table], interval: str
) -> pa.Table:
    """The record with the rows of ``replaced_months`` (``YYYYMM``) replaced by ``new_rows``.

    Days between the first and last archived day that no archive covers get a row with no
    source and ``rows`` = 0, so every gap is visible.
    """
    parts = list(new_rows)
    if old is not None and old.num_rows:
        old = old.filter(pa.array(~_col_is_null(old, "source")))
        months = np.char.replace(_months_of(old.column("date")).astype(str), "-", "")
        keep = ~np.isin(months, sorted(replaced_months))
        parts.append(old.filter(pa.array(keep)))
    if not parts:
        return QUALITY_SCHEMA.empty_table()
    table = pa.concat_tables([p.select(QUALITY_SCHEMA.names).cast(QUALITY_SCHEMA) for p in parts])
    table = table.sort_by("date")
    return fill_missing_days(table, interval)


def _col_is_null(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).is_null().to_numpy(zero_copy_only=False)


def fill_missing_days(table: pa.Table, interval: str) -> pa.Table:
    if table.num_rows == 0:
        return table
    days = table.column("date").cast(pa.int32()).to_numpy().astype(np.int64)
    all_days = np.arange(days.min(), days.max() + 1, dtype=np.int64)
    absent = np.setdiff1d(all_days, days)
    if absent.size == 0:
        return table
    expected = candles_per_day(interval)
    zeros = np.zeros(absent.size, dtype=np.int64)
    filler = pa.table(
        {
            "date": pa.array(absent.astype(np.int32), pa.date32()),
            "source": pa.nulls(absent.size, pa.string()),
            "rows": zeros,
            "expected_rows": np.full(absent.size, expected, dtype=np.int64),
            "missing_rows": np.full(absent.size, expected, dtype=np.int64),
            "zero_volume_rows": zeros,
            "longest_zero_volume_run": zeros,
            "ohlc_violations": zeros,
            "taker_violations": zeros,
            "score": np.zeros(absent.size),
        },
        schema=QUALITY_SCHEMA,
    )
    return pa.concat_tables([table, filler]).sort_by("date")


def summarize(table: pa.Table) -> dict:
    """Per-symbol figures for the parse report (deterministic: counts and a rounded score)."""
    if table.num_rows == 0:
        return {"days": 0, "score": None}
    counts = {k: int(_col(table, k).sum()) for k in COUNT_COLUMNS}
    rows = _col(table, "rows")
    dates = table.column("date")
    return {
        "days": table.num_rows,
        "first_day": str(dates[0].as_py()),
        "last_day": str(dates[-1].as_py()),
        "complete_days": int((rows >= _col(table, "expected_rows")).sum()),
        "days_without_rows": int((rows == 0).sum()),
        "longest_zero_volume_run": int(_col(table, "longest_zero_volume_run").max()),
        "score": round(float(_col(table, "score").mean()), SCORE_DECIMALS),
        **counts,
    }


def empty_days_of(record: pa.Table, key: str) -> np.ndarray:
    """Indices of the record's days that ``key`` owns (``source``) and holds no row of, the
    days before the symbol's first row left out: a monthly zip cut short (binance-public-data
    #403) has such days, whose daily zips may hold them; the month the symbol was listed in
    has days before its first candle, which no zip of any period holds (asking the download
    for their daily zips asked for nothing, on the first build of nearly every symbol)."""
    if record.num_rows == 0:
        return np.zeros(0, dtype=np.int64)
    source = record.column("source").to_numpy(zero_copy_only=False)
    rows = record.column("rows").to_numpy()
    days = record.column("date").cast(pa.int32()).to_numpy()
    traded = days[rows > 0]
    if not traded.size:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero((source == key) & (rows == 0) & (days > traded.min()))
