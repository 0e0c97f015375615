"""Accuracy validation of one resampled file against its source minutes.

Recomputed independently of ``windows.resample`` (which reshapes a block range): window
membership is found by binary search on the source times and the sums and extremes by
``reduceat`` over those boundaries.
"""

from __future__ import annotations

import numpy as np

from crypto_lakehouse.generate.outputs import iso_ms
from crypto_lakehouse.resample.windows import TIME, Resampled
from crypto_lakehouse.schema import VOLUME_COLUMNS

# Float sums may differ in the last bits between summation orders.
SUM_RTOL = 1e-9
SUM_ATOL = 1e-9


class ResampleValidationError(ValueError):
    """A resampled file does not agree with its source; the symbol's job must fail."""


def covered_windows(
    time: np.ndarray, step_ms: int, ri_ms: int, offset_ms: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Starts ``s = k·RI + offset`` of the windows whose minutes ``s`` and ``s + RI − step``
    are both in ``time``, with the source row range ``[lo, hi)`` of each."""
    if len(time) == 0:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty, empty
    k_first = -((offset_ms - int(time[0])) // ri_ms)
    k_last = (int(time[-1]) - offset_ms) // ri_ms
    starts = np.arange(k_first, k_last + 1, dtype=np.int64) * ri_ms + offset_ms
    lo = np.searchsorted(time, starts, side="left")
    hi = np.searchsorted(time, starts + ri_ms, side="left")
    n = len(time)
    has_first = time[np.minimum(lo, n - 1)] == starts
    has_last = (hi > 0) & (time[np.maximum(hi - 1, 0)] == starts + ri_ms - step_ms)
    covered = has_first & has_last
    return starts[covered], lo[covered], hi[covered]


def validate(
    label: str,
    source: dict[str, np.ndarray],
    result: Resampled,
    step_ms: int,
    ri_ms: int,
    offset_ms: int,
) -> dict[str, str]:
    """Raise ResampleValidationError naming the file and window; else return the results."""
    time = source[TIME]
    out_time = result.columns[TIME]
    expected, lo, hi = covered_windows(time, step_ms, ri_ms, offset_ms)
    if len(out_time) != len(expected) or not np.array_equal(out_time, expected):
        raise ResampleValidationError(
            f"{label}: {len(out_time)} windows emitted, {len(expected)} fully covered windows "
            f"in the source"
        )
    checks = {"windows": str(len(expected))}
    if len(expected) == 0:
        return checks | {"volume_sums": "passed", "high_low": "passed"}
    short = np.flatnonzero(hi - lo != ri_ms // step_ms)
    if len(short):
        raise ResampleValidationError(
            f"{label}: window {iso_ms(out_time[short[0]])} covers {hi[short[0]] - lo[short[0]]} "
            f"source rows, expected {ri_ms // step_ms}"
        )
    if not np.array_equal(lo[1:], hi[:-1]):
        raise ResampleValidationError(f"{label}: emitted windows are not consecutive")
    end = int(hi[-1])

    def mismatch(name: str, got: np.ndarray, want: np.ndarray, exact: bool) -> None:
        ok = got == want if exact else np.isclose(got, want, rtol=SUM_RTOL, atol=SUM_ATOL)
        bad = np.flatnonzero(~ok)
        if len(bad):
            w = bad[0]
            raise ResampleValidationError(
                f"{label}: window {iso_ms(out_time[w])}: {name} is {got[w]!r}, the source "
                f"minutes give {want[w]!r}"
            )

    for name in VOLUME_COLUMNS:
        want = np.add.reduceat(source[name][:end], lo)
        mismatch(name, result.columns[name], want, exact=want.dtype.kind == "i")
    checks["volume_sums"] = "passed"
    mismatch("high", result.columns["high"], np.maximum.reduceat(source["high"][:end], lo), True)
    mismatch("low", result.columns["low"], np.minimum.reduceat(source["low"][:end], lo), True)
    checks["high_low"] = "passed"
    return checks
