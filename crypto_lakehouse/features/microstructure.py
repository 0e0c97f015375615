"""Market microstructure features of one candle file (docs/features.md, vectorised).

Every value at candle t uses candles <= t of the same file. A ratio whose denominator is 0
is NaN, never inf; a rolling value over window W is pandas ``rolling(W, min_periods=W // 2)``
on the per-candle series, NaN observations skipped.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from pandas.api.indexers import BaseIndexer

# Per-candle columns, then the rolling columns per window (in this order).
BASE_COLUMNS = ("log_return", "taker_buy_ratio", "order_flow_imbalance", "avg_trade_size")
VWAP_DEVIATION = "vwap_deviation"
WINDOW_COLUMNS = (
    "realized_vol",
    "parkinson_vol",
    "garman_klass_vol",
    "cs_spread",
    "roll_spread",
    "amihud",
    "kyle_lambda",
)
# Candle columns read (the VWAP column is optional and named after the base interval).
INPUT_COLUMNS = (
    "open",
    "high",
    "low",
    "close",
    "volume",
    "quote_volume",
    "trade_num",
    "taker_buy_base_asset_volume",
)

_LN2 = math.log(2.0)
_CS_K = 3.0 - 2.0 * math.sqrt(2.0)  # Corwin-Schultz (2012), eq. 14


def microstructure_columns(windows: list[int], with_vwap: bool) -> list[str]:
    cols = list(BASE_COLUMNS)
    if with_vwap:
        cols.append(VWAP_DEVIATION)
    for w in windows:
        cols += [f"{name}_{w}" for name in WINDOW_COLUMNS]
    return cols


def ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, NaN where the denominator is 0 (or either side is NaN)."""
    out = np.full(len(numerator), np.nan)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def log_ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """ln(numerator / denominator); NaN when the ratio is not a positive number."""
    r = ratio(numerator, denominator)
    positive = r > 0
    np.log(r, out=r, where=positive)  # in place: one array per column on millions of rows
    r[~positive] = np.nan
    return r


class TrailingWindows(BaseIndexer):
    """The rows [t - W + 1, t] of every t, as pandas' fixed window, with the bounds computed
    once per file and window instead of once per rolling call (8 calls per window; on 4 M
    rows each recomputation cost ~20 ms)."""

    def __init__(self, rows: int, window: int):
        end = np.arange(1, rows + 1, dtype=np.int64)
        start = np.maximum(end - window, 0)
        super().__init__(window_size=window, start=start, end=end)

    def get_window_bounds(
        self, num_values=0, min_periods=None, center=None, closed=None, step=None
    ):
        if num_values != len(self.end):
            raise ValueError(f"windows built for {len(self.end)} rows, not {num_values}")
        return self.start, self.end


def _rolling(values: np.ndarray, window: TrailingWindows):
    """pandas ``rolling(W, min_periods=W // 2)`` over ``values``."""
    size = window.window_size
    return pd.Series(values, copy=False).rolling(window, min_periods=size // 2)


def _paired(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x and y with NaN wherever either is NaN: rolling moments then use the same pairs.

    (pandas' rolling cov averages each series over its own non-NaN values; masking first
    makes it the textbook covariance of the complete pairs.)
    """
    missing = np.isnan(x) | np.isnan(y)
    return np.where(missing, np.nan, x), np.where(missing, np.nan, y)


def corwin_schultz(high: np.ndarray, low: np.ndarray, hl2: np.ndarray | None = None) -> np.ndarray:
    """Two-candle Corwin-Schultz spread S_t on candles t-1 and t (NaN for the first);
    ``hl2`` = (ln(high/low))² when the caller has it already."""
    n = len(high)
    s = np.full(n, np.nan)
    if n < 2:
        return s
    if hl2 is None:
        hl2 = log_ratio(high, low) ** 2
    # alpha = (sqrt(2 beta) - sqrt(beta)) / k - sqrt(gamma / k), in place: the same
    # operations in the same order as the formula (same bits), four arrays instead of twelve.
    top = np.maximum(high[1:], high[:-1])
    bottom = np.minimum(low[1:], low[:-1])
    gamma = log_ratio(top, bottom)
    del top, bottom
    gamma *= gamma
    beta = hl2[1:] + hl2[:-1]
    with np.errstate(invalid="ignore"):
        alpha = np.multiply(beta, 2.0)
        np.sqrt(alpha, out=alpha)
        alpha -= np.sqrt(beta, out=beta)
        alpha /= _CS_K
        gamma /= _CS_K
        alpha -= np.sqrt(gamma, out=gamma)
    del beta, gamma
    e = np.exp(alpha, out=alpha)
    # s = 2 (e - 1) / (1 + e)
    denominator = np.add(e, 1.0)
    e -= 1.0
    e *= 2.0
    np.divide(e, denominator, out=s[1:])
    return s


def compute_microstructure(
    candles: dict[str, np.ndarray],
    windows: list[int],
    notional: np.ndarray,
    vwap: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """The microstructure columns of one file.

    ``candles`` holds the INPUT_COLUMNS as float64 arrays; ``notional`` is the traded value
    per candle (quote volume, or contracts × contract size for COIN-M); ``vwap`` the file's
    average-price column when it has one. The arrays are not modified.
    """
    inputs = {name: candles[name] for name in RELEASED_INPUTS}
    inputs["notional"] = notional
    if vwap is not None:
        inputs["vwap"] = vwap
    return release_microstructure(inputs, windows)


# The inputs of ``release_microstructure``.
RELEASED_INPUTS = (
    "open",
    "high",
    "low",
    "close",
    "volume",
    "taker_buy_base_asset_volume",
    "trade_num",
)


def release_microstructure(
    inputs: dict[str, np.ndarray], windows: list[int]
) -> dict[str, np.ndarray]:
    """``compute_microstructure`` on ``inputs`` (RELEASED_INPUTS, ``notional`` and optionally
    ``vwap``), taking them over: each is removed from ``inputs`` as soon as no column needs
    it any more, so that the caller holding no other reference lets its memory be reused.

    Why the order: on a 6-year 1m file every array is 25 MB and the process's peak memory is
    reached when the last columns are computed; every array alive then, and every page the
    process touches for the first time, costs (page faults are ~2 ms per MB on the machines
    we measured, docs/benchmarks.md). So the steps that need the most temporaries (the rolling
    covariances) run first, each input is released after its last use, and each per-candle
    series is dropped right after its rolling columns.
    """
    close = inputs["close"]
    n = len(close)
    out: dict[str, np.ndarray] = {}
    bounds = {w: TrailingWindows(n, w) for w in windows}

    # Per-candle columns that release volume, trade count, taker volume and VWAP.
    r = np.full(n, np.nan)
    if n > 1:
        r[1:] = log_ratio(close[1:], close[:-1])
    out["log_return"] = r
    volume, taker_buy = inputs.pop("volume"), inputs.pop("taker_buy_base_asset_volume")
    out["taker_buy_ratio"] = ratio(taker_buy, volume)
    signed_volume = 2.0 * taker_buy - volume
    del taker_buy
    out["order_flow_imbalance"] = ratio(signed_volume, volume)
    out["avg_trade_size"] = ratio(volume, inputs.pop("trade_num"))
    del volume
    vwap = inputs.pop("vwap", None)
    if vwap is not None:
        deviation = ratio(close, vwap)
        deviation -= 1.0
        out[VWAP_DEVIATION] = deviation
        del vwap

    # Kyle's lambda: rolling cov(r, q) / var(q) over the complete pairs; releases q.
    r_paired, q_paired = _paired(r, signed_volume)
    del signed_volume
    for w in windows:
        cov_rq = _rolling(r_paired, bounds[w]).cov(pd.Series(q_paired, copy=False)).to_numpy()
        var_q = _rolling(q_paired, bounds[w]).var().to_numpy()
        out[f"kyle_lambda_{w}"] = ratio(cov_rq, var_q)
        del cov_rq, var_q
    del r_paired, q_paired

    # Roll: autocovariance of close-to-close changes; releases close.
    d_close = np.full(n, np.nan)
    d_close[1:] = np.diff(close)
    d_close_prev = np.full(n, np.nan)
    d_close_prev[1:] = d_close[:-1]
    d_close, d_close_prev = _paired(d_close, d_close_prev)
    for w in windows:
        autocov = _rolling(d_close, bounds[w]).cov(pd.Series(d_close_prev, copy=False)).to_numpy()
        # 2 sqrt(-c) where c < 0, 0 where c >= 0, NaN where c is NaN (maximum keeps NaN)
        roll = np.subtract(0.0, autocov)  # -c exactly; unlike negative(), NaN keeps its sign
        np.maximum(roll, 0.0, out=roll)
        np.sqrt(roll, out=roll)
        roll *= 2.0
        out[f"roll_spread_{w}"] = roll
        del autocov
    del d_close, d_close_prev

    with np.errstate(invalid="ignore"):
        high, low = inputs.pop("high"), inputs.pop("low")
        hl2 = log_ratio(high, low)
        hl2 *= hl2
        spread = corwin_schultz(high, low, hl2)
        del high, low
        np.maximum(spread, 0.0, out=spread)  # NaN stays NaN
        for w in windows:
            out[f"cs_spread_{w}"] = _rolling(spread, bounds[w]).mean().to_numpy()
        del spread

        for w in windows:
            mean_hl2 = _rolling(hl2, bounds[w]).mean().to_numpy()  # read-only (pandas CoW)
            out[f"parkinson_vol_{w}"] = np.sqrt(mean_hl2 / (4.0 * _LN2))
        garman_klass = log_ratio(close, inputs.pop("open"))
        del close
        inputs.pop("close")
        garman_klass *= garman_klass
        garman_klass *= -(2.0 * _LN2 - 1.0)
        hl2 *= 0.5
        garman_klass += hl2
        del hl2
        for w in windows:
            mean_gk = _rolling(garman_klass, bounds[w]).mean().to_numpy()
            out[f"garman_klass_vol_{w}"] = np.sqrt(mean_gk)
        del garman_klass

        illiquidity = ratio(np.abs(r), inputs.pop("notional"))
        for w in windows:
            out[f"amihud_{w}"] = _rolling(illiquidity, bounds[w]).mean().to_numpy()
        del illiquidity

        r2 = r * r
        for w in windows:
            out[f"realized_vol_{w}"] = np.sqrt(_rolling(r2, bounds[w]).sum().to_numpy())
        del r2
    # Column order: the base columns, then per window WINDOW_COLUMNS.
    return {k: out[k] for k in microstructure_columns(windows, VWAP_DEVIATION in out)}
