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


def _as_slice(rows: np.ndarray) -> slice | None:
    """``rows`` as a slice when it is one ascending run (then the store can be viewed)."""
    if len(rows) and rows[-1] - rows[0] == len(rows) - 1 and bool(np.all(np.diff(rows) == 1)):
        return slice(int(rows[0]), int(rows[-1]) + 1)
    return None


def fill_segment(
    columns: dict[str, np.ndarray],
    step_ms: int,
    vwap_col: str | None = None,
    rows: np.ndarray | slice | None = None,
    time: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """The segment on the grid from its first to its last candle, both included.

    ``columns`` holds the segment's candles, or, with ``rows``, a store whose ``rows`` are
    the segment's candles (``time`` then gives their times). Missing candles: ``close``
    carried forward, ``open``/``high``/``low`` = that close, volumes and ``trade_num`` 0, the
    VWAP = ``open``. Then the VWAP of **every** row is clipped to ``[low, high]``, as legacy
    does. When the segment is complete and contiguous in ``columns``, the result holds
    views, not copies.
    """
    if isinstance(rows, np.ndarray):
        rows = _as_slice(rows) or rows
    if time is None:
        time = columns[TIME] if rows is None else columns[TIME][rows]
    names = [*PRICE_COLUMNS, "close", *VOLUME_COLUMNS] + ([vwap_col] if vwap_col else [])
    pos = grid_positions(time, step_ms)
    size = int(pos[-1]) + 1
    if size == len(time):
        pick = slice(None) if rows is None else rows
        out = {TIME: time, **{name: columns[name][pick] for name in names}}
    else:
        present = np.zeros(size, dtype=bool)
        present[pos] = True
        missing = np.flatnonzero(~present)
        # Candle of the latest real minute at or before each grid row (row 0 is real): one
        # gather per column with ascending indices, cheaper than scattering.
        latest = np.cumsum(present)
        latest -= 1  # in place: each full-size temporary costs page faults
        if isinstance(rows, slice):
            latest += rows.start
        elif rows is not None:
            latest = rows[latest]
        grid = np.arange(size, dtype=np.int64)
        grid *= step_ms
        grid += time[0]
        out = {TIME: grid}
        for name in names:
            out[name] = columns[name][latest]
        carried_close = out["close"][missing]
        for name in PRICE_COLUMNS:
            out[name][missing] = carried_close
        for name in VOLUME_COLUMNS:
            out[name][missing] = 0
        if vwap_col is not None:
            out[vwap_col][missing] = carried_close  # = the filled open
    if vwap_col is not None:
        out[vwap_col] = np.minimum(np.maximum(out[vwap_col], out["low"]), out["high"])
    return out
