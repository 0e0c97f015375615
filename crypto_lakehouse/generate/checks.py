"""Quality gates of one generated kline file; a failure names the file and the minute."""

from __future__ import annotations

import numpy as np

from crypto_lakehouse.generate.outputs import iso_ms

TIME = "candle_begin_time"


class QualityGateError(ValueError):
    """A generated file broke an invariant; the symbol's job must fail."""


def _fail(label: str, time: np.ndarray, bad: np.ndarray, what: str) -> None:
    rows = np.flatnonzero(bad)
    if len(rows):
        raise QualityGateError(
            f"{label}: {what} at minute {iso_ms(time[rows[0]])} ({len(rows)} rows in total)"
        )


def funding_rows(
    events_t: np.ndarray, events_r: np.ndarray, first_ms: int, last_ms: int, step_ms: int
) -> np.ndarray:
    """The rows (from the candle ``first_ms``) of the candles ``first_ms`` … ``last_ms``
    whose funding settled during them (``[open, open + step)``) sums to non-zero, as
    ``funding.join_funding`` writes it: a coarse candle (1d, with 8-hourly events) whose
    events cancel out (+0.0001, -0.0001) holds 0.0, and lost nothing."""
    inside = (events_t >= first_ms) & (events_t < last_ms + step_ms) & (events_r != 0)
    rows, at = np.unique((events_t[inside] - first_ms) // step_ms, return_inverse=True)
    # Summed in time order, as join_funding's bincount does: the same float.
    sums = np.bincount(at, weights=events_r[inside], minlength=len(rows))
    return rows[sums != 0]


def check_output(
    label: str,
    columns: dict[str, np.ndarray],
    step_ms: int,
    vwap_col: str | None = None,
    funding_col: str | None = None,
    funding_time: np.ndarray | None = None,
    funding_rate: np.ndarray | None = None,
) -> dict[str, str]:
    """Raise QualityGateError on the first broken gate; return the gates that passed.

    ``funding_time``/``funding_rate`` are the source events (candle_begin_time in ms);
    every candle during which non-zero funding was settled (``funding_rows``) must hold it.
    """
    time = columns[TIME]
    if len(time) == 0:
        raise QualityGateError(f"{label}: no rows")
    diff = np.diff(time)
    _fail(label, time[1:], diff == 0, "duplicate minute")
    _fail(label, time[1:], diff != step_ms, f"grid not contiguous (step other than {step_ms} ms)")
    o, h, lo, c = columns["open"], columns["high"], columns["low"], columns["close"]
    finite = np.isfinite(o) & np.isfinite(h) & np.isfinite(lo) & np.isfinite(c)
    _fail(label, time, ~finite, "non-finite open/high/low/close")
    bad_ohlc = (lo > h) | (o < lo) | (o > h) | (c < lo) | (c > h)
    _fail(label, time, bad_ohlc, "OHLC invariant low <= open, close <= high broken")
    gates = {"contiguous": "passed", "unique_minutes": "passed", "ohlc": "passed"}
    if vwap_col is not None:
        v = columns[vwap_col]
        _fail(label, time, ~((v >= lo) & (v <= h)), f"{vwap_col} outside [low, high]")
        gates["vwap_in_range"] = "passed"
    if funding_col is not None:
        events_t = funding_time if funding_time is not None else np.empty(0, np.int64)
        events_r = funding_rate if funding_rate is not None else np.empty(0)
        rows = funding_rows(events_t, events_r, int(time[0]), int(time[-1]), step_ms)
        lost = columns[funding_col][rows] == 0
        if lost.any():
            raise QualityGateError(
                f"{label}: funding event of minute {iso_ms(time[rows[lost][0]])} "
                f"missing from {funding_col}"
            )
        expected = len(rows)
        found = int(np.count_nonzero(columns[funding_col]))
        if found != expected:
            extra = (columns[funding_col] != 0) & ~np.isin(np.arange(len(time)), rows)
            _fail(label, time, extra, f"{funding_col} set without a source event")
            raise QualityGateError(f"{label}: {found} funding rows for {expected} source events")
        gates["funding_events"] = str(expected)
    return gates
