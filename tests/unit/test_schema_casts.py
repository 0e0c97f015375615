"""``schema.conformed``, ``schema.cast_column`` and ``schema.epoch_ms`` give what pyarrow's
casts give (they skip the casts of columns already of their type, whose
``pyarrow.compute`` import cost every gen_kline and resample job ~30 ms of CPU)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from crypto_lakehouse.schema import KLINE_SCHEMA, TIME_TYPE, cast_column, conformed, epoch_ms

MS = np.array([0, 1_700_000_000_123, -86_400_000, 1_598_054_400_000], dtype=np.int64)


def _chunked(arr: pa.Array) -> pa.ChunkedArray:
    return pa.chunked_array([arr.slice(0, 1), arr.slice(1, 0), arr.slice(1)], arr.type)


@pytest.mark.parametrize(
    "arrow_type",
    [
        TIME_TYPE,
        pa.timestamp("ms"),  # no time zone: the same counts
        pa.timestamp("ms", tz="Asia/Tokyo"),  # a time zone is a label: the counts are UTC
        pa.timestamp("us", tz="UTC"),  # another unit: a real cast
        pa.timestamp("s"),
    ],
    ids=str,
)
@pytest.mark.parametrize("chunked", [False, True], ids=["array", "chunked"])
def test_epoch_ms_is_the_cast_to_utc_ms_then_int64(arrow_type, chunked):
    per_ms = {"s": None, "ms": 1, "us": 1000}[arrow_type.unit]
    values = MS // 1000 if per_ms is None else MS * per_ms
    arr = pa.array(values, pa.int64(), mask=np.array([False, False, True, False])).view(arrow_type)
    column = _chunked(arr) if chunked else arr
    want = column.cast(TIME_TYPE).cast(pa.int64())
    got = epoch_ms(column)
    assert got.type == pa.int64() and type(got) is type(want)
    assert got.equals(want)
    assert got.null_count == 1


def test_epoch_ms_of_a_lossy_cast_still_raises():
    arr = pa.array([1_500], pa.int64()).view(pa.timestamp("us"))  # 1.5 ms
    with pytest.raises(pa.ArrowInvalid):
        arr.cast(TIME_TYPE)
    with pytest.raises(pa.ArrowInvalid):
        epoch_ms(arr)


def test_cast_column_casts_only_another_type():
    column = _chunked(pa.array([1.5, 2.0], pa.float64()))
    assert cast_column(column, pa.float64()) is column
    got = cast_column(_chunked(pa.array([1.5, 2.0], pa.float32())), pa.float64())
    assert got.type == pa.float64() and got.to_pylist() == [1.5, 2.0]


def _klines(**types) -> pa.Table:
    arrays = []
    for f in KLINE_SCHEMA:
        typ = types.get(f.name, f.type)
        if pa.types.is_timestamp(typ):
            arrays.append(pa.array(MS[:2] * {"ms": 1, "us": 1000}[typ.unit]).view(typ))
        else:
            arrays.append(pa.array([3, 4], pa.int64()).cast(typ))
    return pa.Table.from_arrays(arrays, names=KLINE_SCHEMA.names)


def test_conformed_returns_a_table_of_the_right_types_as_it_is():
    table = _klines()
    assert conformed(table, KLINE_SCHEMA) is table


@pytest.mark.parametrize(
    "types",
    [
        {"open": pa.float32()},
        {"trade_num": pa.int32()},
        {"candle_begin_time": pa.timestamp("ms")},
        {"candle_begin_time": pa.timestamp("us", tz="UTC")},
    ],
    ids=str,
)
def test_conformed_casts_a_table_of_other_types_as_pyarrow_does(types):
    table = _klines(**types)
    got = conformed(table, KLINE_SCHEMA)
    assert got.schema.equals(KLINE_SCHEMA)
    assert got.equals(table.cast(KLINE_SCHEMA))


def test_conformed_other_names_raise_as_pyarrow_does():
    table = _klines().rename_columns(["time", *KLINE_SCHEMA.names[1:]])
    with pytest.raises(ValueError) as cast_error:
        table.cast(KLINE_SCHEMA)
    with pytest.raises(ValueError) as ours:
        conformed(table, KLINE_SCHEMA)
    assert str(ours.value) == str(cast_error.value)
