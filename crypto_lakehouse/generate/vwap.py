"""Volume-weighted average price per candle (legacy §8.2, COIN-M fixed: quirk Q3)."""

from __future__ import annotations

import numpy as np


def vwap_column_name(interval: str) -> str:
    """``avg_price_1m`` for 1m, the name legacy hard-codes (Q6 kept, named after the interval)."""
    return f"avg_price_{interval}"


def vwap(
    volume: np.ndarray,
    quote_volume: np.ndarray,
    open_: np.ndarray,
    contract_size: float | None = None,
) -> np.ndarray:
    """VWAP in quote currency of each traded candle.

    Spot and USDⓈ-M: ``quote_volume / volume``. COIN-M (``contract_size`` given): ``volume``
    counts contracts worth ``contract_size`` USD each and ``quote_volume`` is the coin amount,
    so the USD price is ``volume * contract_size / quote_volume``. A candle where the ratio
    is undefined (a zero denominator) gets its open, like a filled candle; the caller clips
    every row to ``[low, high]`` afterwards.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        if contract_size is None:
            price = quote_volume / volume
        else:
            price = volume * contract_size / quote_volume
    bad = ~np.isfinite(price)
    if bad.any():
        price[bad] = open_[bad]
    return price
