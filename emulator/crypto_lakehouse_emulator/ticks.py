"""Synthetic tick and futures-only archive files in the published formats (docs/datasets.md).

One seeded **trade tape** per (market, day) is the source of truth: individual trades, grouped
into taker orders (consecutive trades of one order share time, price and side). From it:

- ``trades``: one row per trade. Spot: no header, 7 columns (``…,is_buyer_maker,
  is_best_match``), ``True``/``False``, 8 decimals. um: header
  ``id,price,qty,quote_qty,time,is_buyer_maker``; cm: header
  ``id,price,qty,base_qty,time,is_buyer_maker`` (qty in contracts, base_qty = qty × contract
  size / price, 8 decimals); futures write ``true``/``false``.
- ``aggTrades``: one row per taker order (``first_trade_id``..``last_trade_id``). Spot: no
  header, 8 columns with the best-match flag; futures: 7 columns and a header.
- ``klines`` built from the same tape (``klines_from_tape``), so aggTrades → candles can be
  checked against the emulator's own 1m klines (the archive does the same from its trades).

Spot times are in ms before 2025-01-01 and in µs from then on (binance-facts §4.1).

Also: ``markPriceKlines`` / ``indexPriceKlines`` / ``premiumIndexKlines`` (the futures kline
CSV with a header; volumes, quote volumes, taker volumes and the count are 0) and ``metrics``
(header, ``create_time`` as ``YYYY-MM-DD HH:MM:SS``, one row per 5 minutes, values with 8
decimals, as the real ``BTCUSDT-metrics-2020-09-01`` rows in tests/fixtures/real).
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from crypto_lakehouse import datasets, layout
from crypto_lakehouse.intervals import interval_ms

from .generate import (
    CM_CONTRACT_USD,
    _csv,
    _day,
    _seed,
    _stamp_after,
    _text,
    _write_archive,
    day_frame,
    default_start_price,
    fixed,
    format_kline_csv,
    spot_time_unit,
    zip_bytes,
)

DAY_MS = 86_400_000
FUTURES_AGG_HEADER = ",".join(datasets.AGG_TRADES.columns_for(datasets.UM))
# Price tick, quantity decimals (cm: whole contracts) per market.
TICK = {"spot": 0.01, "um_futures": 0.1, "cm_futures": 0.1}
QTY_DECIMALS = {"spot": 5, "um_futures": 3, "cm_futures": 0}
# Printed decimals (price, quantity, quote/base quantity) per market and dataset.
TRADES_PRINT = {"spot": (8, 8, 8), "um_futures": (1, 3, 4), "cm_futures": (1, 0, 8)}
AGG_PRINT = {"spot": (8, 8), "um_futures": (2, 3), "cm_futures": (1, 0)}


def _day_start_ms(day) -> int:
    d = _day(day)
    return int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp()) * 1000


def trade_tape(
    trade_type: str,
    day,
    orders: int,
    *,
    seed: int = 0,
    symbol: str = "BTCUSDT",
    start_price: float | None = None,
) -> pd.DataFrame:
    """One UTC day of trades from ``orders`` taker orders, each filled by a geometric(0.6) number of trades (≥ 1).

    Columns: ``trade_id``, ``order`` (0-based order index = aggregate trade), ``time_us``
    (µs since the epoch; a ms value × 1000 outside spot-µs days), ``price``, ``qty``,
    ``is_buyer_maker``. Sorted by time; ids consecutive.
    """
    rng = np.random.default_rng(_seed(seed, trade_type, symbol, str(day), "tape"))
    start_ms = _day_start_ms(day)
    micros = datasets.TRADES.in_micros(trade_type, _day(day).isoformat())
    order_ms = np.sort(rng.integers(start_ms, start_ms + DAY_MS, orders))
    order_us = order_ms * 1000 + (rng.integers(0, 1000, orders) if micros else 0)
    order_us = np.sort(order_us)  # sub-ms digits may reorder two orders of one ms
    tick = TICK[trade_type]
    p0 = start_price if start_price is not None else default_start_price(symbol)
    ticks = np.round(p0 / tick) + np.cumsum(rng.integers(-3, 4, orders))
    ticks = np.maximum(ticks, 10)
    order_price = np.round(ticks * tick, 8)
    order_maker = rng.random(orders) < 0.5
    fills = rng.geometric(0.6, orders)  # ≥ 1 trade per order
    order = np.repeat(np.arange(orders), fills)
    n = len(order)
    qdec = QTY_DECIMALS[trade_type]
    if qdec == 0:
        qty = rng.integers(1, 100, n).astype(float)
    else:
        qty = np.round(rng.uniform(10.0**-qdec, 2.0, n), qdec)
        qty = np.maximum(qty, 10.0**-qdec)
    # Ids of consecutive days never overlap (up to 100 M trades a day).
    base_id = 1_000_000 + (_day_number(day) % 1000) * 100_000_000
    return pd.DataFrame(
        {
            "trade_id": base_id + np.arange(n, dtype=np.int64),
            "order": order,
            "time_us": order_us[order],
            "price": order_price[order],
            "qty": qty,
            "is_buyer_maker": order_maker[order],
        }
    )


def _day_number(day) -> int:
    """Day number since the epoch (ids of consecutive days do not overlap)."""
    return (_day(day) - date(1970, 1, 1)).days


def _file_times(tape: pd.DataFrame, trade_type: str, day) -> np.ndarray:
    us = tape["time_us"].to_numpy(np.int64)
    if datasets.TRADES.in_micros(trade_type, _day(day).isoformat()):
        return us
    return us // 1000


def _flags(values, spot: bool) -> pa.Array:
    t, f = ("True", "False") if spot else ("true", "false")
    return pa.array(np.where(np.asarray(values, bool), t, f))


def _header(dataset: datasets.Dataset, trade_type: str, header: bool | None) -> str | None:
    if header is None:
        header = trade_type != "spot"
    return ",".join(dataset.columns_for(trade_type)) if header else None


def trades_csv(trade_type: str, day, tape: pd.DataFrame, *, header: bool | None = None) -> bytes:
    """The ``trades`` file of a tape in the published format of ``trade_type``."""
    pdec, qdec, xdec = TRADES_PRINT[trade_type]
    price = tape["price"].to_numpy()
    qty = tape["qty"].to_numpy()
    # um/spot: quote quantity = price × qty; cm: base quantity = contracts × size / price.
    extra = qty * CM_CONTRACT_USD / price if trade_type == "cm_futures" else price * qty
    spot = trade_type == "spot"
    cols = [
        _text(tape["trade_id"]),
        fixed(price, pdec),
        fixed(qty, qdec),
        fixed(extra, xdec),
        _text(_file_times(tape, trade_type, day)),
        _flags(tape["is_buyer_maker"], spot),
    ]
    if spot:
        cols.append(_flags(np.ones(len(tape), bool), True))
    return _csv(cols, _header(datasets.TRADES, trade_type, header))


def agg_trades_frame(tape: pd.DataFrame) -> pd.DataFrame:
    """Aggregate trades of a tape: one row per taker order (same time, price and side)."""
    g = tape.groupby("order", sort=True)
    first = g.first()
    return pd.DataFrame(
        {
            "price": first["price"].to_numpy(),
            "quantity": g["qty"].sum().to_numpy(),
            "first_trade_id": first["trade_id"].to_numpy(),
            "last_trade_id": g["trade_id"].last().to_numpy(),
            "time_us": first["time_us"].to_numpy(),
            "is_buyer_maker": first["is_buyer_maker"].to_numpy(),
        }
    )


def agg_trades_csv(
    trade_type: str, day: str, rows: int, *, seed: int = 0, header: bool | None = None
) -> bytes:
    """One day of ``rows`` aggregate trades in the published format, sorted by time."""
    tape = trade_tape(trade_type, day, rows, seed=seed)
    return agg_csv_of_tape(trade_type, day, tape, header=header)


def agg_csv_of_tape(trade_type: str, day, tape: pd.DataFrame, *, header=None) -> bytes:
    agg = agg_trades_frame(tape)
    n = len(agg)
    pdec, qdec = AGG_PRINT[trade_type]
    spot = trade_type == "spot"
    qty = np.round(agg["quantity"].to_numpy(), qdec)
    # Aggregate ids run their own sequence (smaller than the trade ids, as on the exchange).
    ids = 1_000 + _day_number(day) % 1000 * 100_000_000 + np.arange(n, dtype=np.int64)
    cols = [
        _text(ids),
        fixed(agg["price"], pdec),
        fixed(qty, qdec),
        _text(agg["first_trade_id"]),
        _text(agg["last_trade_id"]),
        _text(_file_times(agg, trade_type, day)),
        _flags(agg["is_buyer_maker"], spot),
    ]
    if spot:
        cols.append(_flags(np.ones(n, bool), True))
    return _csv(cols, _header(datasets.AGG_TRADES, trade_type, header))


def klines_from_tape(
    tape: pd.DataFrame, trade_type: str, day, interval: str = "1m"
) -> pd.DataFrame:
    """The day's klines (archive columns, times in ms) from a tape, as the exchange builds
    them from its trades: a candle per interval; one without trades repeats the previous
    close with zero volumes. Quote volume is Σ price × qty (cm: Σ contracts × size / price,
    the base-asset volume cm klines carry)."""
    step = interval_ms(interval)
    n = DAY_MS // step
    t_ms = tape["time_us"].to_numpy(np.int64) // 1000
    bucket = (t_ms - _day_start_ms(day)) // step
    price = tape["price"].to_numpy()
    qty = tape["qty"].to_numpy()
    cm = trade_type == "cm_futures"
    quote = qty * CM_CONTRACT_USD / price if cm else price * qty
    buy = ~tape["is_buyer_maker"].to_numpy(bool)
    count = np.bincount(bucket, minlength=n)
    has = count > 0
    starts = np.flatnonzero(np.r_[True, np.diff(bucket) != 0])
    ends = np.r_[starts[1:], len(bucket)] - 1
    opens = np.full(n, np.nan)
    closes = np.full(n, np.nan)
    highs = np.full(n, np.nan)
    lows = np.full(n, np.nan)
    b = bucket[starts]
    opens[b] = price[starts]
    closes[b] = price[ends]
    highs[b] = np.maximum.reduceat(price, starts)
    lows[b] = np.minimum.reduceat(price, starts)
    # A minute without trades: O=H=L=C = the previous close (the first one: the first price).
    filled = pd.Series(closes).ffill().fillna(price[0] if len(price) else 0.0).to_numpy()
    for arr in (opens, closes, highs, lows):
        arr[~has] = filled[~has]
    return day_frame(
        _day(day),
        step,
        opens,
        highs,
        lows,
        closes,
        np.bincount(bucket, qty, n),
        np.bincount(bucket, quote, n),
        count,
        np.bincount(bucket, np.where(buy, qty, 0.0), n),
        np.bincount(bucket, np.where(buy, quote, 0.0), n),
    )


# ---------------------------------------------------------------- writers
def _write(mirror_dir, trade_type, key, day, body: bytes, checksum=True) -> str:
    member = key.rsplit("/", 1)[1].replace(".zip", ".csv")
    data = zip_bytes(member, body, _stamp_after(_day(day)))
    return _write_archive(mirror_dir, key, data, trade_type, checksum, None, None)


def _daily_key(trade_type, dataset, symbol, day, interval=None) -> str:
    return layout.archive_key(trade_type, dataset, symbol, interval, datasets.DAILY, str(day))


def write_daily_agg_trades(mirror_dir, trade_type, symbol, day: str, rows: int, seed=0, **kw):
    """Zip + CHECKSUM of one day of ``rows`` aggregate trades; returns the key."""
    key = _daily_key(trade_type, datasets.AGG_TRADES.name, symbol, day)
    return _write(mirror_dir, trade_type, key, day,
                  agg_trades_csv(trade_type, day, rows, seed=seed, **kw))  # fmt: skip


def write_daily_trades(mirror_dir, trade_type, symbol, day: str, orders: int, seed=0, **kw):
    """Zip + CHECKSUM of one day of ``trades`` (from ``orders`` taker orders); returns the key."""
    tape = trade_tape(trade_type, day, orders, seed=seed, symbol=symbol)
    key = _daily_key(trade_type, datasets.TRADES.name, symbol, day)
    return _write(mirror_dir, trade_type, key, day, trades_csv(trade_type, day, tape, **kw))


def write_daily_market(
    mirror_dir, trade_type, symbol, day: str, orders: int, *, seed=0, intervals=("1m",)
) -> dict[str, str]:
    """aggTrades, trades and klines of one day from one tape (consistent with each other).

    Returns {"aggTrades": key, "trades": key, "klines-1m": key, ...}."""
    tape = trade_tape(trade_type, day, orders, seed=seed, symbol=symbol)
    keys = {
        "aggTrades": _write(mirror_dir, trade_type,
                            _daily_key(trade_type, "aggTrades", symbol, day), day,
                            agg_csv_of_tape(trade_type, day, tape)),
        "trades": _write(mirror_dir, trade_type, _daily_key(trade_type, "trades", symbol, day),
                         day, trades_csv(trade_type, day, tape)),
    }  # fmt: skip
    unit = spot_time_unit(day) if trade_type == "spot" else "ms"
    for interval in intervals:
        frame = klines_from_tape(tape, trade_type, day, interval)
        key = _daily_key(trade_type, "klines", symbol, day, interval)
        keys[f"klines-{interval}"] = _write(
            mirror_dir, trade_type, key, day, format_kline_csv(frame, trade_type, unit)
        )
    return keys


def price_kline_frame(dataset: str, symbol: str, interval: str, day, *, seed=0) -> pd.DataFrame:
    """One day of mark / index / premium-index candles: prices only, every other column 0.

    Premium index values are small and signed (around 1e-4), the others follow a walk
    around the symbol's price."""
    step = interval_ms(interval)
    n = DAY_MS // step
    rng = np.random.default_rng(_seed(seed, dataset, symbol, str(day), interval))
    if dataset == datasets.PREMIUM_INDEX_KLINES.name:
        opens = np.round(rng.normal(1e-4, 2e-4, n), 8)
        closes = np.round(opens + rng.normal(0, 5e-5, n), 8)
        spread = np.round(np.abs(rng.normal(0, 5e-5, n)), 8)
    else:
        walk = default_start_price(symbol) * np.exp(np.cumsum(rng.normal(0, 5e-4, n + 1)))
        opens, closes = np.round(walk[:-1], 1), np.round(walk[1:], 1)
        spread = np.round(np.abs(rng.normal(0, 2, n)), 1)
    highs = np.maximum(opens, closes) + spread
    lows = np.minimum(opens, closes) - spread
    zeros = np.zeros(n)
    return day_frame(_day(day), step, opens, highs, lows, closes, zeros, zeros,
                     zeros.astype(np.int64), zeros, zeros)  # fmt: skip


def write_daily_price_klines(mirror_dir, trade_type, dataset, symbol, interval, day, seed=0):
    """Zip + CHECKSUM of one day of ``markPriceKlines``/``indexPriceKlines``/
    ``premiumIndexKlines`` (the futures kline CSV, header included); returns the key."""
    datasets.get(dataset).check_market(trade_type)
    frame = price_kline_frame(dataset, symbol, interval, day, seed=seed)
    # Premium index values need 8 decimals; the futures kline writer prints prices with 1-2.
    body = _price_kline_csv(frame, dataset)
    key = _daily_key(trade_type, dataset, symbol, day, interval)
    return _write(mirror_dir, trade_type, key, day, body)


def _price_kline_csv(frame: pd.DataFrame, dataset: str) -> bytes:
    pdec = 8 if dataset == datasets.PREMIUM_INDEX_KLINES.name else 2
    cols = [_text(frame["open_time"])]
    cols += [fixed(frame[c], pdec) for c in ("open", "high", "low", "close")]
    cols += [pa.array(["0"] * len(frame)), _text(frame["close_time"])]
    cols += [pa.array(["0"] * len(frame))] * 5
    header = ",".join(
        ["open_time", "open", "high", "low", "close", "volume", "close_time", "quote_volume",
         "count", "taker_buy_volume", "taker_buy_quote_volume", "ignore"]
    )  # fmt: skip
    return _csv(cols, header)


METRICS_HEADER = ",".join(datasets.METRICS.columns)


def metrics_frame(symbol: str, day, *, seed: int = 0) -> pd.DataFrame:
    """288 five-minute rows: open interest (and its value) and four long/short ratios."""
    n = DAY_MS // 300_000
    rng = np.random.default_rng(_seed(seed, "metrics", symbol, str(day)))
    start = _day_start_ms(day)
    oi = np.round(40_000 * np.exp(np.cumsum(rng.normal(0, 2e-3, n))), 3)
    price = default_start_price(symbol) * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
    return pd.DataFrame(
        {
            "create_time": start + np.arange(n, dtype=np.int64) * 300_000,
            "sum_open_interest": oi,
            "sum_open_interest_value": np.round(oi * price, 8),
            "count_toptrader_long_short_ratio": np.round(rng.uniform(0.5, 3, n), 8),
            "sum_toptrader_long_short_ratio": np.round(rng.uniform(0.5, 3, n), 8),
            "count_long_short_ratio": np.round(rng.uniform(0.5, 3, n), 8),
            "sum_taker_long_short_vol_ratio": np.round(rng.uniform(0.2, 5, n), 8),
        }
    )


def metrics_csv(symbol: str, frame: pd.DataFrame) -> bytes:
    seconds = pa.array(frame["create_time"].to_numpy(np.int64) // 1000, pa.int64())
    text = pc.strftime(seconds.cast(pa.timestamp("s", tz="UTC")), format="%Y-%m-%d %H:%M:%S")
    cols = [text, pa.array([symbol] * len(frame))]
    cols += [fixed(frame[c], 8) for c in frame.columns[1:]]
    return _csv(cols, METRICS_HEADER)


def write_daily_metrics(mirror_dir, trade_type, symbol, day, seed=0) -> str:
    """Zip + CHECKSUM of one day of ``metrics`` (futures only); returns the key."""
    datasets.METRICS.check_market(trade_type)
    body = metrics_csv(symbol, metrics_frame(symbol, day, seed=seed))
    return _write(mirror_dir, trade_type, _daily_key(trade_type, "metrics", symbol, day), day, body)


def write_monthly_of_days(
    mirror_dir, trade_type, dataset, symbol, month: str, bodies: list[bytes], interval=None
) -> str:
    """Zip + CHECKSUM of a monthly file of ``dataset`` made of day CSVs ``bodies`` (in the
    published formats above; a header line of all but the first dropped); returns the key."""
    parts = []
    for i, body in enumerate(bodies):
        if i and body[:1].isalpha():  # a header line
            body = body.split(b"\n", 1)[1]
        parts.append(body if body.endswith(b"\n") else body + b"\n")
    key = layout.archive_key(trade_type, dataset, symbol, interval, datasets.MONTHLY, month)
    return _write(mirror_dir, trade_type, key, f"{month}-28", b"".join(parts))
