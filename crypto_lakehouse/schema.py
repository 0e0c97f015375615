"""Column names and Arrow types of the legacy data files (legacy-behaviour §10)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

TIME_TYPE = pa.timestamp("ms", tz="UTC")


def numpy_dtype(arrow_type: pa.DataType) -> np.dtype:
    """The numpy dtype of an Arrow column's values (timestamps: their int64 count), the dtype
    ``to_numpy`` gives. Not ``DataType.to_pandas_dtype``: older pyarrow (15.0 checked, which
    pyproject allows) imports pandas for it, and the gen_kline and resample jobs, which refuse
    pandas (``smk.run_job``), failed every symbol with it before 2026-12-06."""
    if pa.types.is_timestamp(arrow_type):
        return np.dtype("int64")
    return pa.array([], arrow_type).to_numpy(zero_copy_only=False).dtype


# The 12 fields of a kline CSV row or REST array, in source order (binance-facts §4.1).
KLINE_SOURCE_FIELDS = (
    "candle_begin_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "trade_num",
    "taker_buy_base_asset_volume",
    "taker_buy_quote_asset_volume",
    "ignore",
)

# The same 12 fields as Binance names them: the header line of newer futures CSVs
# (binance-facts §4.1) and the column names of REST kline arrays.
ARCHIVE_KLINE_FIELDS = (
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "count",
    "taker_buy_volume",
    "taker_buy_quote_volume",
    "ignore",
)

# Parsed and API klines: 10 columns (legacy §10.1).
KLINE_SCHEMA = pa.schema(
    [
        ("candle_begin_time", TIME_TYPE),
        ("open", pa.float64()),
        ("high", pa.float64()),
        ("low", pa.float64()),
        ("close", pa.float64()),
        ("volume", pa.float64()),
        ("quote_volume", pa.float64()),
        ("trade_num", pa.int64()),
        ("taker_buy_base_asset_volume", pa.float64()),
        ("taker_buy_quote_asset_volume", pa.float64()),
    ]
)
KLINE_COLUMNS = tuple(KLINE_SCHEMA.names)

# Columns that are summed when candles are merged or resampled.
VOLUME_COLUMNS = (
    "volume",
    "quote_volume",
    "trade_num",
    "taker_buy_base_asset_volume",
    "taker_buy_quote_asset_volume",
)

# Parsed archive funding (legacy §10.2) plus the interval the archive states per row.
PARSED_FUNDING_SCHEMA = pa.schema(
    [
        ("funding_time", TIME_TYPE),
        ("funding_interval_hours", pa.int64()),
        ("funding_rate", pa.float64()),
        ("candle_begin_time", TIME_TYPE),
    ]
)

# REST funding (legacy §10.4).
API_FUNDING_SCHEMA = pa.schema(
    [
        ("funding_time", TIME_TYPE),
        ("candle_begin_time", TIME_TYPE),
        ("funding_rate", pa.float64()),
    ]
)


def empty_klines() -> pa.Table:
    return KLINE_SCHEMA.empty_table()


# pyarrow's casts, even of a column to its own type, go through ``pyarrow.compute``, whose
# first import costs a process ~30 ms of CPU (it wraps ~300 kernels in Python functions):
# before 2026-12-07 every gen_kline and resample job paid it for casts of columns that
# already had their type (the files this pipeline writes). The helpers below cast only what
# differs; the values are the same either way.


def conformed(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table.cast(schema)`` (the same errors), or ``table`` when its columns are
    ``schema``'s names and types already."""
    if table.schema.names == schema.names and all(
        have.type == want.type for have, want in zip(table.schema, schema, strict=True)
    ):
        return table
    return table.cast(schema)


def cast_column(column, arrow_type: pa.DataType):
    """``column.cast(arrow_type)``, or ``column`` when it has that type already."""
    return column if column.type == arrow_type else column.cast(arrow_type)


def epoch_ms(column):
    """A timestamp column (Array or ChunkedArray) as int64 milliseconds since the epoch:
    ``column.cast(TIME_TYPE).cast(pa.int64())``, by a zero-copy view when it is in ms
    already (Arrow stores every time zone's timestamps as UTC counts, and a cast between
    timestamp types only rescales the unit)."""
    if not (pa.types.is_timestamp(column.type) and column.type.unit == "ms"):
        return column.cast(TIME_TYPE).cast(pa.int64())
    if isinstance(column, pa.ChunkedArray):
        return pa.chunked_array([c.view(pa.int64()) for c in column.chunks], pa.int64())
    return column.view(pa.int64())
