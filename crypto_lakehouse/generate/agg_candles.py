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

from crypto_lakehouse.datasets import AGG_KLINES_MARKETS  # cm: not built (docs/datasets.md)
from crypto_lakehouse.intervals import interval_ms
from crypto_lakehouse.schema import KLINE_SCHEMA, TIME_TYPE

AGG_COLUMNS = ("price", "quantity", "first_trade_id", "last_trade_id", "transact_time",
               "is_buyer_maker")  # fmt: skip


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


def candles_from_agg_trade_parts(parts, interval: str) -> pa.Table:
    """``candles_from_agg_trades`` of a day given as consecutive parts in time order (its
    row groups): each part's candles, a candle that a part boundary cuts in two merged
    (first open, max high, min low, last close, sums), so that memory holds one part and
    the day's candles, never the day's trades. Volumes of a merged candle are the sum of
    two partial sums (equal to the one-part result to the last bits, ~1e-16 relative)."""
    done: list[pa.Table] = []
    last: dict | None = None  # the latest candle: a later part may continue it
    for part in parts:
        table = candles_from_agg_trades(part, interval)
        if table.num_rows == 0:
            continue
        first = table.slice(0, 1).to_pylist()[0]
        if last is not None:
            if first[TIME] < last[TIME]:
                raise ValueError("aggTrades must be sorted by transact_time")
            if first[TIME] == last[TIME]:
                first = _merged(last, first)
            else:
                done.append(pa.Table.from_pylist([last], schema=KLINE_SCHEMA))
        if table.num_rows > 1:
            done.append(pa.Table.from_pylist([first], schema=KLINE_SCHEMA))
            done.append(table.slice(1, table.num_rows - 2))
            last = table.slice(table.num_rows - 1).to_pylist()[0]
        else:
            last = first
    if last is not None:
        done.append(pa.Table.from_pylist([last], schema=KLINE_SCHEMA))
    return pa.concat_tables(done) if done else KLINE_SCHEMA.empty_table()


def _merged(a: dict, b: dict) -> dict:
    """One candle of two consecutive parts of its trades (``a`` first)."""
    merged = {name: a[name] + b[name] for name in SUMMED}
    return {**merged, TIME: a[TIME], "open": a["open"], "high": max(a["high"], b["high"]),
            "low": min(a["low"], b["low"]), "close": b["close"]}  # fmt: skip


TIME = "candle_begin_time"
SUMMED = ("volume", "quote_volume", "trade_num", "taker_buy_base_asset_volume",
          "taker_buy_quote_asset_volume")  # fmt: skip


def run_agg_klines(
    *, trade_type: str, symbol: str, interval: str, data_dir, parse_report, report_path
) -> dict:
    """Target ``agg_klines``, one symbol: candles at ``interval`` for every parsed aggTrades
    day of the parse report, one file per day (``layout.agg_klines_day_path``).

    Incremental: a day is rebuilt only when its aggTrades file changed (size and mtime, kept
    in the stage's state) or its candle file is gone. Memory: one row group of aggTrades and
    the day's candles. A parsed
    day that is missing or unreadable fails the symbol as ``shards.DamagedInput``: the next
    run parses it again, then builds its candles.
    """
    from crypto_lakehouse import datasets, io, layout, storage
    from crypto_lakehouse.shards import read_report, reading_output_of

    if trade_type not in AGG_KLINES_MARKETS:
        raise ValueError(f"agg_klines: {trade_type} is not supported (docs/datasets.md)")
    interval_ms(interval)  # a clear error for a bad interval before any work
    entry = datasets.AGG_TRADES
    report = read_report(parse_report, "aws_parse")
    days = sorted({d for f in (report.get("files") or {}).values() for d in f.get("days", {})})
    state_path = layout.state_path(
        data_dir, "agg_klines", trade_type, f"{entry.name}-{interval}", symbol
    )
    state = storage.read_state(state_path)
    built: dict[str, list[int]] = {}
    rebuilt, candles = 0, 0
    for day in days:
        source = layout.parsed_day_path(data_dir, trade_type, entry.name, symbol, day)
        target = layout.agg_klines_day_path(data_dir, trade_type, symbol, interval, day)
        with reading_output_of("aws_parse", source):
            found = storage.stat(source)
            if found is None:
                raise FileNotFoundError(source)
            stamp = list(found)  # [size, mtime_ns]
            if state.get(day) == stamp and storage.exists(target):
                built[day] = stamp
                continue
            # One row group at a time (the parser writes one per 8 MB of CSV): a day of
            # tens of millions of trades is never held whole (docs/datasets.md).
            day_file = storage.parquet_file(source)
            groups = (day_file.read_row_group(i, columns=list(AGG_COLUMNS))
                      for i in range(day_file.num_row_groups))  # fmt: skip
            table = candles_from_agg_trade_parts(groups, interval)
        storage.write_parquet(target, table)
        built[day] = stamp
        rebuilt += 1
        candles += table.num_rows
    # Candle files of days the parse no longer has (their aggTrades zip re-published with a
    # defect and quarantined, or gone): a full build has none; before 2026-12-07 they stayed.
    for day in sorted(set(state) - set(days)):
        target = layout.agg_klines_day_path(data_dir, trade_type, symbol, interval, day)
        storage.delete(target)
    storage.write_json(state_path, built)
    out = {
        "trade_type": trade_type,
        "symbol": symbol,
        "interval": interval,
        "days": {d: str(layout.agg_klines_day_path(data_dir, trade_type, symbol, interval, d))
                 for d in days},
        "days_rebuilt": rebuilt,
        "candles_written": candles,
    }  # fmt: skip
    io.write_json(report_path, out)
    return out
