"""Gap scan and split into segments (legacy §8.4, with the gap order fixed: quirk Q2)."""

from __future__ import annotations

import numpy as np

from crypto_lakehouse.intervals import DAY_MS

# The second legacy criterion: any pause longer than two days with a non-zero price change.
LONG_PAUSE_DAYS = 2
LONG_PAUSE_MIN_CHG = 0.0


def _abs_change(open_next: np.ndarray, close_prev: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.abs(open_next / close_prev - 1.0)


def _is_gap(time_diff, abs_change, min_days: float, min_price_chg: float) -> np.ndarray:
    return (time_diff > min_days * DAY_MS) & (abs_change > min_price_chg)


def scan_gaps(
    time: np.ndarray, open_: np.ndarray, close: np.ndarray, min_days: float, min_price_chg: float
) -> np.ndarray:
    """Times of the candles that start after a gap: ``t − t_prev > min_days`` days **and**
    ``|open / close_prev − 1| > min_price_chg`` (both strict, like legacy ``scan_gaps``)."""
    if len(time) < 2:
        return time[:0]
    change = _abs_change(open_[1:], close[:-1])
    return time[1:][_is_gap(time[1:] - time[:-1], change, min_days, min_price_chg)]


def combine_gaps(*gap_lists: np.ndarray) -> np.ndarray:
    """Union of gap times, ascending (legacy lost the order here: Q2)."""
    if not gap_lists:
        return np.empty(0, dtype=np.int64)
    return np.unique(np.concatenate(gap_lists)).astype(np.int64)


def find_gaps(
    time: np.ndarray,
    open_: np.ndarray,
    close: np.ndarray,
    min_days: float,
    min_price_chg: float,
    rows: np.ndarray | None = None,
) -> np.ndarray:
    """Both legacy criteria, ``scan_gaps(min_days, min_price_chg)`` ∪ ``scan_gaps(2, 0)``.

    With ``rows``, candle ``i`` is ``open_[rows[i]]``/``close[rows[i]]`` (a store and the
    merged row index). Prices are read only after pauses long enough for either
    criterion, so whole columns are never gathered or divided.
    """
    if len(time) < 2:
        return np.empty(0, dtype=np.int64)
    time_diff = time[1:] - time[:-1]
    after = np.flatnonzero(time_diff > min(min_days, LONG_PAUSE_DAYS) * DAY_MS) + 1
    at, before = (after, after - 1) if rows is None else (rows[after], rows[after - 1])
    pause, change = time_diff[after - 1], _abs_change(open_[at], close[before])
    return combine_gaps(
        time[after][_is_gap(pause, change, min_days, min_price_chg)],
        time[after][_is_gap(pause, change, LONG_PAUSE_DAYS, LONG_PAUSE_MIN_CHG)],
    )


def split_ranges(time: np.ndarray, gap_times: np.ndarray) -> list[tuple[int, int]]:
    """Row ranges ``[start, stop)`` of the segments ``t < g1``, ``g1 ≤ t < g2``, …, ``t ≥ gn``.

    ``time`` must be ascending; ``gap_times`` may come in any order. Empty segments are
    skipped, as in legacy.
    """
    cuts = np.searchsorted(time, np.sort(gap_times), side="left")
    bounds = [0, *cuts.tolist(), len(time)]
    return [(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]


def segment_names(symbol: str, count: int) -> list[str]:
    """``SP0_SYM``, ``SP1_SYM``, … for older segments; the newest keeps the plain ``SYM``."""
    return [f"SP{i}_{symbol}" for i in range(count - 1)] + ([symbol] if count else [])
