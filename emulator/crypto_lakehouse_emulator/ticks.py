"""Synthetic ``aggTrades`` archive files in the published format (binance-public-data README).

Spot: no header, 8 columns (with the best-price-match flag), ``True``/``False``, times in ms
before 2025-01-01 and µs from then on. Futures (um, cm): 7 columns, ``true``/``false``, and
the header row the futures files carry (``header=False`` for the older header-less files).
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import numpy as np

from crypto_lakehouse import datasets, layout

from .generate import _write_archive, zip_bytes

FUTURES_AGG_HEADER = (
    "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker"
)


def agg_trades_csv(
    trade_type: str, day: str, rows: int, *, seed: int = 0, header: bool | None = None
) -> bytes:
    """One day of aggregate trades, sorted by time, ids consecutive."""
    rng = np.random.default_rng(seed)
    start_ms = int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp() * 1000)
    times = np.sort(rng.integers(start_ms, start_ms + 86_400_000, rows))
    spot = trade_type == "spot"
    micros = datasets.AGG_TRADES.in_micros(trade_type, day)
    if micros:
        times = times * 1000 + rng.integers(0, 1000, rows)
    ids = np.arange(1_000_000, 1_000_000 + rows)
    first = ids * 3
    last = first + rng.integers(0, 3, rows)
    price = np.round(30000 + np.cumsum(rng.normal(0, 2, rows)), 2)
    qty = np.round(rng.uniform(0.001, 2, rows), 3)
    maker = rng.random(rows) < 0.5
    t, f = ("True", "False") if spot else ("true", "false")
    flag = np.where(maker, t, f)
    cols = [ids.astype(str), np.char.mod("%.8f" if spot else "%.2f", price),
            np.char.mod("%.8f" if spot else "%.3f", qty), first.astype(str), last.astype(str),
            times.astype(str), flag]  # fmt: skip
    if spot:
        cols.append(np.full(rows, "True"))
    lines = [",".join(r) for r in zip(*cols, strict=True)]
    if header if header is not None else not spot:
        lines.insert(0, FUTURES_AGG_HEADER)
    return ("\n".join(lines) + "\n").encode()


def write_daily_agg_trades(mirror_dir, trade_type, symbol, day: str, rows: int, seed=0, **kw):
    """Zip + CHECKSUM of one day under the archive key; returns the key."""
    key = layout.archive_key(
        trade_type, datasets.AGG_TRADES.name, symbol, None, datasets.DAILY, day
    )
    member = key.rsplit("/", 1)[1].replace(".zip", ".csv")
    stamp = datetime.combine(date.fromisoformat(day), datetime.min.time())
    data = zip_bytes(member, agg_trades_csv(trade_type, day, rows, seed=seed, **kw), stamp)
    _write_archive(mirror_dir, key, data, trade_type, True, None, None)
    return key
