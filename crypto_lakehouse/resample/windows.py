"""Fully covered, epoch-aligned windows of a contiguous kline series (legacy §9).

The input is a gap-filled file: one row per base interval, no holes. A window
``[k·RI + offset, (k+1)·RI + offset)`` is emitted only when the file holds both its first
and its last minute, so the emitted windows are consecutive blocks of ``RI / step`` rows.
Reshaping that block range to ``(windows, rows per window)`` turns every aggregation into
one numpy reduction along an axis, with no grouping step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crypto_lakehouse.generate.outputs import iso_ms
from crypto_lakehouse.schema import VOLUME_COLUMNS

TIME = "candle_begin_time"
FUNDING_RATE = "funding_rate"
FUNDING_PRICE = "funding_price"
FUNDING_TIME = "funding_time"
# A window's funding is its first minute with |rate| above this (legacy since 70e5cc7).
FUNDING_EPSILON = 1e-6


@dataclass
class Resampled:
    """Output columns; ``valid`` holds the non-null mask of the nullable funding columns."""

    columns: dict[str, np.ndarray]
    valid: dict[str, np.ndarray]
    first_row: int  # input row of the first emitted window's first minute
    rows_per_window: int

    def __len__(self) -> int:
        return len(self.columns[TIME])


def check_contiguous(time: np.ndarray, step_ms: int) -> None:
    """ValueError naming the first minute after which the series has a hole or a repeat."""
    bad = np.flatnonzero(np.diff(time) != step_ms)
    if len(bad):
        raise ValueError(
            f"input is not a contiguous {step_ms} ms series after minute {iso_ms(time[bad[0]])}"
        )


def first_full_window(t0: int, ri_ms: int, offset_ms: int) -> int:
    """Start of the first window that begins at or after ``t0``."""
    k = -((offset_ms - t0) // ri_ms)  # ceil((t0 - offset) / RI)
    return k * ri_ms + offset_ms


def _reduce(block: np.ndarray, func: str) -> np.ndarray:
    if func == "first":
        return block[:, 0].copy()
    if func == "last":
        return block[:, -1].copy()
    if func == "max":
        return block.max(axis=1)
    if func == "min":
        return block.min(axis=1)
    if func == "sum":
        return block.sum(axis=1)
    if func == "mean":
        return block.mean(axis=1, dtype=np.float64)
    raise ValueError(f"unknown aggregation {func!r}")


def resample(
    columns: dict[str, np.ndarray],
    step_ms: int,
    ri_ms: int,
    offset_ms: int,
    vwap_col: str | None = None,
    aggregations: dict[str, str] | None = None,
    contiguous_checked: bool = False,
) -> Resampled:
    """Aggregate the fully covered windows: open first, high max, low min, close last,
    volumes and ``trade_num`` summed, the VWAP of the first minute; with ``funding_rate``,
    the first minute with ``|rate| > 1e-6`` gives ``funding_rate``, ``funding_price`` (its
    open) and ``funding_time`` (its minute), null when the window has none. Added columns
    follow ``aggregations``. The series must be contiguous; pass ``contiguous_checked``
    when the caller already ran ``check_contiguous`` on it."""
    time = columns[TIME]
    per_window = ri_ms // step_ms
    n = len(time)
    n_windows, start = 0, 0
    if n:
        if not contiguous_checked:
            check_contiguous(time, step_ms)
        first_start = first_full_window(int(time[0]), ri_ms, offset_ms)
        lead = first_start - int(time[0])
        # A window boundary off the candle grid never has its first minute in the file.
        if lead % step_ms == 0 and ri_ms % step_ms == 0:
            start = lead // step_ms
            n_windows = max(0, (n - start) // per_window)
    stop = start + n_windows * per_window

    def blocks(name: str) -> np.ndarray:
        return columns[name][start:stop].reshape(n_windows, per_window)

    out: dict[str, np.ndarray] = {
        TIME: blocks(TIME)[:, 0].copy(),
        "open": _reduce(blocks("open"), "first"),
        "high": _reduce(blocks("high"), "max"),
        "low": _reduce(blocks("low"), "min"),
        "close": _reduce(blocks("close"), "last"),
    }
    for name in VOLUME_COLUMNS:
        out[name] = _reduce(blocks(name), "sum")
    valid: dict[str, np.ndarray] = {}
    if vwap_col is not None and vwap_col in columns:
        out[vwap_col] = _reduce(blocks(vwap_col), "first")
    if FUNDING_RATE in columns:
        rate = blocks(FUNDING_RATE)
        settled = np.abs(rate) > FUNDING_EPSILON
        has = settled.any(axis=1)
        at = settled.argmax(axis=1)  # first settled minute (0 when none: masked below)
        rows = np.arange(n_windows)
        out[FUNDING_RATE] = rate[rows, at]
        out[FUNDING_PRICE] = blocks("open")[rows, at]
        out[FUNDING_TIME] = blocks(TIME)[rows, at]
        for name in (FUNDING_RATE, FUNDING_PRICE, FUNDING_TIME):
            valid[name] = has
    for name, func in (aggregations or {}).items():
        if name in columns:
            out[name] = _reduce(blocks(name), func)
    return Resampled(out, valid, start, per_window)
