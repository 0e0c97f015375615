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
        missing = np.flatnonzero(~present)
        # Segment row of the latest real candle at or before each grid row (row 0 is real):
        # a gather with ascending indices, much cheaper than scattering every column.
        latest = np.cumsum(present) - 1
        out = {TIME: time[0] + np.arange(size, dtype=np.int64) * step_ms}
        close = columns["close"][latest]
        out["close"] = close
        carried = close[missing]
        for name in PRICE_COLUMNS:
            filled = columns[name][latest]
            filled[missing] = carried
            out[name] = filled
        for name in VOLUME_COLUMNS:
            filled = columns[name][latest]
            filled[missing] = 0
            out[name] = filled
        if vwap_col is not None:
            filled = columns[vwap_col][latest]
            filled[missing] = out["open"][missing]
            out[vwap_col] = filled
    if vwap_col is not None:
        out[vwap_col] = np.minimum(np.maximum(out[vwap_col], out["low"]), out["high"])
    return out
