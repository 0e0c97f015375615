"""Candles from aggregate trades, at any interval from 1s (the archive has no 1s futures klines).

Input: one day (or any time-sorted span) of parsed ``aggTrades`` (``parse/ticks.py``).
Output: ``schema.KLINE_SCHEMA`` rows, one per interval bucket that holds at least one trade
(no trade, no candle, as the exchange's klines):

- open / close: price of the first / last aggregate trade of the bucket (input order);
  high / low: max / min price;
- volume: sum of quantities; quote_volume: sum of price × quantity;
- trade_num: sum of ``last_trade_id - first_trade_id + 1`` (an aggregate trade groups the
  trades of one taker order at one price);
- taker_buy_*: the same sums over rows whose buyer is not the maker (the taker bought).

Differences from the archive's klines are documented in docs/datasets.md.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from crypto_lakehouse.intervals import interval_ms
from crypto_lakehouse.schema import KLINE_SCHEMA, TIME_TYPE


def candles_from_agg_trades(trades: pa.Table, interval: str) -> pa.Table:
    """Vectorised: bucket boundaries from the sorted times, ``np.*.reduceat`` per bucket."""
    step = interval_ms(interval)
    if trades.num_rows == 0:
        return KLINE_SCHEMA.empty_table()
    t = trades.column("transact_time").cast(pa.int64()).to_numpy()
    price = trades.column("price").to_numpy()
    qty = trades.column("quantity").to_numpy()
    count = (
        trades.column("last_trade_id").to_numpy() - trades.column("first_trade_id").to_numpy() + 1
    )
    taker_buy = ~trades.column("is_buyer_maker").to_numpy(zero_copy_only=False)
    bucket = t // step
    if np.any(np.diff(bucket) < 0):
        raise ValueError("aggTrades must be sorted by transact_time")
    starts = np.flatnonzero(np.r_[True, np.diff(bucket) != 0])
    ends = np.r_[starts[1:], len(t)] - 1
    quote = price * qty
    buy_qty = np.where(taker_buy, qty, 0.0)
    buy_quote = np.where(taker_buy, quote, 0.0)
    columns = [
        pa.array(bucket[starts] * step, pa.int64()).cast(TIME_TYPE),
        pa.array(price[starts]),
        pa.array(np.maximum.reduceat(price, starts)),
        pa.array(np.minimum.reduceat(price, starts)),
        pa.array(price[ends]),
        pa.array(np.add.reduceat(qty, starts)),
        pa.array(np.add.reduceat(quote, starts)),
        pa.array(np.add.reduceat(count, starts).astype(np.int64)),
        pa.array(np.add.reduceat(buy_qty, starts)),
        pa.array(np.add.reduceat(buy_quote, starts)),
    ]
    return pa.Table.from_arrays(columns, schema=KLINE_SCHEMA)
