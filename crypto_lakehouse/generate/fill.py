"""Put one segment onto its complete time grid (legacy §8.5 ``fill_kline_gaps``)."""

from __future__ import annotations

import numpy as np

from crypto_lakehouse.generate.outputs import iso_ms
from crypto_lakehouse.schema import VOLUME_COLUMNS

TIME = "candle_begin_time"
PRICE_COLUMNS = ("open", "high", "low")


def grid_positions(time: np.ndarray, step_ms: int) -> np.ndarray:
    """Row of each candle on the grid that starts at the first candle; every candle must lie on it."""
    offset = time - time[0]
    off_grid = np.flatnonzero(offset % step_ms)
    if len(off_grid):
        raise ValueError(
            f"candle at {iso_ms(time[off_grid[0]])} is not on the {step_ms} ms grid "
            f"that starts at {iso_ms(time[0])}"
        )
    return offset // step_ms


def fill_segment(
    columns: dict[str, np.ndarray], step_ms: int, vwap_col: str | None = None
) -> dict[str, np.ndarray]:
    """The segment on the grid from its first to its last candle, both included.

    Missing candles: ``close`` carried forward, ``open``/``high``/``low`` = that close,
    volumes and ``trade_num`` 0, the VWAP = ``open``. Then the VWAP of **every** row is
    clipped to ``[low, high]``, as legacy does. Columns other than these (e.g. funding) are
    not handled here. When the segment is already complete, the arrays are returned as is.
    """
    time = columns[TIME]
    pos = grid_positions(time, step_ms)
    size = int(pos[-1]) + 1
    if size == len(time):
        out = dict(columns)
    else:
        present = np.zeros(size, dtype=bool)
        present[pos] = True
        # Row of the latest real candle at or before each grid row (row 0 is always real).
        last_real = np.maximum.accumulate(np.where(present, np.arange(size), 0))
        out = {TIME: time[0] + np.arange(size, dtype=np.int64) * step_ms}
        src_row = np.empty(size, dtype=np.int64)
        src_row[pos] = np.arange(len(time))
        src_of_last = src_row[last_real]
        close = columns["close"][src_of_last]
        out["close"] = close
        for name in PRICE_COLUMNS:
            filled = close.copy()
            filled[pos] = columns[name]
            out[name] = filled
        for name in VOLUME_COLUMNS:
            filled = np.zeros(size, dtype=columns[name].dtype)
            filled[pos] = columns[name]
            out[name] = filled
        if vwap_col is not None:
            filled = out["open"].copy()
            filled[pos] = columns[vwap_col]
            out[vwap_col] = filled
    if vwap_col is not None:
        out[vwap_col] = np.minimum(np.maximum(out[vwap_col], out["low"]), out["high"])
    return out
