"""Archive files in Binance's published formats, for test mirrors (binance-facts §3, §4).

- Spot kline CSV: 12 columns, no header, 8 decimals; timestamps in ms before 2025-01-01 and in
  µs from 2025-01-01 (close time ``…999999``).
- Futures kline CSV: header line ``open_time,open,…,ignore``, um prices with 2 decimals and
  volumes with 3, cm prices with 1 decimal and integer contract volumes; always ms.
- Funding CSV (monthly): ``calc_time,funding_interval_hours,last_funding_rate`` with a few ms of
  jitter on ``calc_time`` and 8-decimal rates.
- Zip with one member named like the zip with ``.csv``; ``<zip>.CHECKSUM`` is
  ``<sha256 hex>  <zip name>`` (trailing newline: none for spot, one for futures, as in the
  real samples; override with ``checksum_newline``).

Prices follow a seeded random walk that is a Brownian bridge between per-day anchor prices,
so consecutive days join up whatever subset of days is generated. All values are generated
on whole columns with numpy; values are rounded to the file's decimals before they are
formatted, so a parsed file gives back exactly the frame's floats.
"""

from __future__ import annotations

import calendar
import hashlib
import io
import os
import zipfile
import zlib
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from crypto_lakehouse import layout
from crypto_lakehouse.intervals import candles_per_day, interval_ms
from crypto_lakehouse.io import write_bytes
from crypto_lakehouse.schema import ARCHIVE_KLINE_FIELDS

KLINE_COLUMNS = list(ARCHIVE_KLINE_FIELDS)
KLINE_HEADER = ",".join(KLINE_COLUMNS)
FUNDING_COLUMNS = ["calc_time", "funding_interval_hours", "last_funding_rate"]
FUNDING_HEADER = ",".join(FUNDING_COLUMNS)
SPOT_US_FROM = date(2025, 1, 1)  # spot archives switched to µs on this day (binance-facts §4.1)

# Printed decimals per column: (price, volume, quote volume) as in the real files.
PRINT_DECIMALS = {"spot": (8, 8, 8), "um_futures": (2, 3, 5), "cm_futures": (1, 0, 8)}
# Value steps (decimals) the generated numbers are rounded to.
VALUE_DECIMALS = {"spot": (2, 5, 8), "um_futures": (1, 3, 5), "cm_futures": (1, 0, 8)}
CM_CONTRACT_USD = 100  # BTCUSD_PERP's contract size; a fixed size keeps cm values consistent


def _day(value: str | date) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def _seed(*parts) -> list[int]:
    """Entropy for numpy from names and numbers (crc32: stable across processes, unlike hash)."""
    return [zlib.crc32(str(p).encode()) for p in parts]


def default_start_price(symbol: str) -> float:
    return 100.0 + float(zlib.crc32(symbol.encode()) % 50_000)


def _anchor(symbol: str, start_price: float, day_ordinal: int, seed: int) -> float:
    """Price at 00:00 of a day: start price moved by a deterministic ±3 % day-level draw."""
    z = np.random.default_rng(_seed(seed, symbol, day_ordinal, "anchor")).standard_normal()
    return float(start_price * np.exp(0.03 * z))


def spot_time_unit(day: str | date) -> str:
    return "us" if _day(day) >= SPOT_US_FROM else "ms"


# ---------------------------------------------------------------- klines
def day_frame(
    d: date, step: int, opens, highs, lows, closes, volume, quote, trades, taker, taker_quote
) -> pd.DataFrame:
    """The 12 archive columns of one UTC day's candles (times in ms) from their values."""
    n = len(opens)
    open_time = int(datetime(d.year, d.month, d.day, tzinfo=timezone.utc).timestamp()) * 1000
    open_times = open_time + np.arange(n, dtype=np.int64) * step
    return pd.DataFrame(
        {
            "open_time": open_times,
            "open": opens,
            "high": highs,
            "low": lows,
            "close": closes,
            "volume": volume,
            "close_time": open_times + step - 1,
            "quote_volume": quote,
            "count": np.asarray(trades).astype(np.int64),
            "taker_buy_volume": taker,
            "taker_buy_quote_volume": taker_quote,
            "ignore": np.zeros(n, dtype=np.int64),
        }
    )


def kline_frame(
    trade_type: str,
    symbol: str,
    interval: str,
    day: str | date,
    *,
    seed: int = 0,
    start_price: float | None = None,
    missing: Iterable[int] = (),
    zero_volume: Iterable[int] = (),
    missing_rate: float = 0.0,
    zero_volume_rate: float = 0.0,
) -> pd.DataFrame:
    """One UTC day of klines with times in **ms** (the writer converts spot to µs from 2025).

    ``missing`` / ``zero_volume`` are candle indices within the day (0 = 00:00); the ``*_rate``
    options add a seeded random fraction. A zero-volume candle has O=H=L=C (the previous close)
    and zero volumes and trades, like an exchange minute without trades.
    """
    if trade_type not in PRINT_DECIMALS:
        raise ValueError(f"unknown trade type {trade_type!r}")
    d = _day(day)
    n = candles_per_day(interval)
    step = interval_ms(interval)
    rng = np.random.default_rng(_seed(seed, trade_type, symbol, interval, d.toordinal()))
    base = default_start_price(symbol) if start_price is None else float(start_price)
    a0 = np.log(_anchor(symbol, base, d.toordinal(), seed))
    a1 = np.log(_anchor(symbol, base, d.toordinal() + 1, seed))

    # Brownian bridge of log price over n candles, pinned to both day anchors.
    walk = np.concatenate([[0.0], np.cumsum(rng.standard_normal(n) * 0.02 / np.sqrt(n))])
    frac = np.arange(n + 1) / n
    path = np.exp(a0 + frac * (a1 - a0) + walk - frac * walk[-1])
    pdec, vdec, qdec = VALUE_DECIMALS[trade_type]
    opens = np.round(path[:-1], pdec)
    closes = np.round(path[1:], pdec)
    wiggle = np.abs(rng.standard_normal((2, n))) * path[:-1] * 0.0005
    highs = np.maximum(
        np.round(np.maximum(opens, closes) + wiggle[0], pdec), np.maximum(opens, closes)
    )
    lows = np.minimum(
        np.round(np.minimum(opens, closes) - wiggle[1], pdec), np.minimum(opens, closes)
    )
    lows = np.maximum(lows, 10.0**-pdec)

    trades = rng.integers(1, 3000, n)
    vwap = lows + (highs - lows) * rng.uniform(0.2, 0.8, n)
    taker_share = rng.uniform(0.0, 1.0, n)
    if trade_type == "cm_futures":
        volume = rng.integers(1, 50_000, n).astype(float)  # contracts
        taker = np.floor(volume * taker_share)
        quote = np.round(volume * CM_CONTRACT_USD / vwap, qdec)  # base-asset volume
        taker_quote = np.minimum(np.round(taker * CM_CONTRACT_USD / vwap, qdec), quote)
    else:
        volume = np.round(rng.lognormal(2.0, 1.0, n) + 10.0**-vdec, vdec)
        taker = np.minimum(np.round(volume * taker_share, vdec), volume)
        quote = np.round(volume * vwap, qdec)
        taker_quote = np.minimum(np.round(taker * vwap, qdec), quote)

    idle = np.zeros(n, dtype=bool)
    idle[list(zero_volume)] = True
    if zero_volume_rate:
        idle |= np.random.default_rng(_seed(seed, symbol, d, "idle")).random(n) < zero_volume_rate
    if idle.any():
        opens[idle] = highs[idle] = lows[idle] = closes[idle] = opens[idle]
        for col in (volume, taker, quote, taker_quote):
            col[idle] = 0.0
        trades[idle] = 0

    frame = day_frame(
        d, step, opens, highs, lows, closes, volume, quote, trades, taker, taker_quote
    )
    keep = np.ones(n, dtype=bool)
    keep[list(missing)] = False
    if missing_rate:
        keep &= np.random.default_rng(_seed(seed, symbol, d, "missing")).random(n) >= missing_rate
    return frame[keep].reset_index(drop=True)


def _text(values) -> pa.Array:
    return pc.cast(pa.array(np.asarray(values, dtype=np.int64)), pa.string())


def fixed(values, decimals: int) -> pa.Array:
    """Numbers as fixed-decimal strings (``1.50000000``), on whole columns (pyarrow kernels)."""
    scaled = np.rint(np.asarray(values, dtype=float) * 10.0**decimals).astype(np.int64)
    if decimals == 0:
        return _text(scaled)
    mag = np.abs(scaled)
    unit = 10**decimals
    frac = pc.utf8_lpad(_text(mag % unit), width=decimals, padding="0")
    sign = pa.array(np.where(scaled < 0, "-", ""))
    return pc.binary_join_element_wise(sign, _text(mag // unit), ".", frac, "")


def format_kline_csv(
    frame: pd.DataFrame, trade_type: str, time_unit: str = "ms", header=None
) -> bytes:
    """CSV bytes of a kline frame (times in ms) in the archive format of ``trade_type``."""
    pdec, vdec, qdec = PRINT_DECIMALS[trade_type]
    if header is None:
        header = trade_type != "spot"
    scale = 1000 if time_unit == "us" else 1
    open_us = frame["open_time"].to_numpy(np.int64) * scale
    close = frame["close_time"].to_numpy(np.int64)
    # µs close time is the last µs of the candle (…999999), not ms close × 1000.
    close = (close + 1) * scale - 1
    cols = [
        _text(open_us),
        fixed(frame["open"], pdec),
        fixed(frame["high"], pdec),
        fixed(frame["low"], pdec),
        fixed(frame["close"], pdec),
        fixed(frame["volume"], vdec),
        _text(close),
        fixed(frame["quote_volume"], qdec),
        _text(frame["count"]),
        fixed(frame["taker_buy_volume"], vdec),
        fixed(frame["taker_buy_quote_volume"], qdec),
        _text(frame["ignore"]),
    ]
    return _csv(cols, KLINE_HEADER if header else None)


def _csv(cols: list[pa.Array], header: str | None) -> bytes:
    lines = pc.binary_join_element_wise(*cols, ",").to_pylist()
    text = (header + "\n" if header else "") + "".join(line + "\n" for line in lines)
    return text.encode()


def zip_bytes(member: str, data: bytes, stamp: datetime, stored: bool = False) -> bytes:
    """One-member zip like Binance's (deflate, Unix 0644); ``stamp`` is the entry time."""
    info = zipfile.ZipInfo(member, date_time=stamp.timetuple()[:6])
    info.compress_type = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
    info.external_attr = 0o100644 << 16
    info.create_system = 3
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(info, data)
    return buf.getvalue()


def checksum_bytes(zip_name: str, data: bytes, newline: bool) -> bytes:
    return f"{hashlib.sha256(data).hexdigest()}  {zip_name}{chr(10) if newline else ''}".encode()


def _write_archive(
    mirror_dir, key: str, data: bytes, trade_type: str, checksum: bool, checksum_newline, mtime
) -> str:
    path = Path(mirror_dir) / key
    write_bytes(path, data)
    files = [path]
    if checksum:
        newline = trade_type != "spot" if checksum_newline is None else checksum_newline
        write_bytes(f"{path}.CHECKSUM", checksum_bytes(path.name, data, newline))
        files.append(Path(f"{path}.CHECKSUM"))
    if mtime is not None:
        stamp = mtime.timestamp() if isinstance(mtime, datetime) else float(mtime)
        for f in files:
            os.utime(f, (stamp, stamp))
    return key


def _stamp_after(d: date) -> datetime:
    """Entry time of an archive: the next day at 00:00 (Binance packs after the period)."""
    return datetime(d.year, d.month, d.day) + timedelta(days=1)


def write_kline_day(
    mirror_dir,
    trade_type: str,
    symbol: str,
    interval: str,
    day: str | date,
    *,
    time_unit: str | None = None,
    header: bool | None = None,
    checksum: bool = True,
    checksum_newline: bool | None = None,
    mtime=None,
    **frame_opts,
) -> str:
    """Write ``<mirror>/<daily kline key>`` (+ CHECKSUM); returns the key.

    ``frame_opts`` go to ``kline_frame`` (seed, start_price, missing, zero_volume, …).
    """
    d = _day(day)
    frame = kline_frame(trade_type, symbol, interval, d, **frame_opts)
    unit = time_unit or (spot_time_unit(d) if trade_type == "spot" else "ms")
    csv = format_kline_csv(frame, trade_type, unit, header)
    key = layout.daily_kline_key(trade_type, symbol, interval, d.isoformat())
    member = Path(key).name[: -len(".zip")] + ".csv"
    data = zip_bytes(member, csv, _stamp_after(d))
    return _write_archive(mirror_dir, key, data, trade_type, checksum, checksum_newline, mtime)


def _month_days(month: str) -> list[date]:
    y, m = (int(x) for x in month.split("-"))
    return [date(y, m, k) for k in range(1, calendar.monthrange(y, m)[1] + 1)]


def write_kline_month(
    mirror_dir,
    trade_type: str,
    symbol: str,
    interval: str,
    month: str,
    *,
    header: bool | None = None,
    checksum: bool = True,
    checksum_newline: bool | None = None,
    mtime=None,
    **frame_opts,
) -> str:
    """Monthly kline archive: the concatenation of the month's days (same values as daily)."""
    days = _month_days(month)
    frame = pd.concat(
        [kline_frame(trade_type, symbol, interval, d, **frame_opts) for d in days],
        ignore_index=True,
    )
    # A monthly spot file spanning the switch cannot exist (it is on a month boundary).
    unit = spot_time_unit(days[0]) if trade_type == "spot" else "ms"
    csv = format_kline_csv(frame, trade_type, unit, header)
    key = layout.monthly_kline_key(trade_type, symbol, interval, month)
    member = Path(key).name[: -len(".zip")] + ".csv"
    data = zip_bytes(member, csv, _stamp_after(days[-1]))
    return _write_archive(mirror_dir, key, data, trade_type, checksum, checksum_newline, mtime)


# ---------------------------------------------------------------- funding
def funding_frame(
    trade_type: str, symbol: str, month: str, *, interval_hours: int = 8, seed: int = 0
) -> pd.DataFrame:
    """Funding events of one month every ``interval_hours``, ``calc_time`` with 0–26 ms jitter."""
    days = _month_days(month)
    start = int(datetime(days[0].year, days[0].month, 1, tzinfo=timezone.utc).timestamp()) * 1000
    n = len(days) * 24 // interval_hours
    rng = np.random.default_rng(_seed(seed, trade_type, symbol, month, "funding"))
    times = start + np.arange(n, dtype=np.int64) * interval_hours * 3_600_000
    times = times + rng.integers(0, 27, n) * (rng.random(n) < 0.5)
    return pd.DataFrame(
        {
            "calc_time": times,
            "funding_interval_hours": np.full(n, interval_hours, dtype=np.int64),
            "last_funding_rate": np.round(rng.normal(1e-4, 1e-4, n), 8),
        }
    )


def format_funding_csv(frame: pd.DataFrame) -> bytes:
    cols = [
        _text(frame["calc_time"]),
        _text(frame["funding_interval_hours"]),
        fixed(frame["last_funding_rate"], 8),
    ]
    return _csv(cols, FUNDING_HEADER)


def write_funding_month(
    mirror_dir,
    trade_type: str,
    symbol: str,
    month: str,
    *,
    interval_hours: int = 8,
    seed: int = 0,
    checksum: bool = True,
    checksum_newline: bool | None = None,
    mtime=None,
) -> str:
    if trade_type not in layout.FUTURES_TRADE_TYPES:
        raise ValueError(f"funding archives exist for futures only, not {trade_type!r}")
    frame = funding_frame(trade_type, symbol, month, interval_hours=interval_hours, seed=seed)
    key = layout.funding_key(trade_type, symbol, month)
    member = Path(key).name[: -len(".zip")] + ".csv"
    data = zip_bytes(member, format_funding_csv(frame), _stamp_after(_month_days(month)[-1]))
    return _write_archive(mirror_dir, key, data, trade_type, checksum, checksum_newline, mtime)


# ---------------------------------------------------------------- whole mirrors
def _date_range(start: str, end: str) -> list[date]:
    d0, d1 = _day(start), _day(end)
    return [d0 + timedelta(days=k) for k in range((d1 - d0).days + 1)]


def build_mirror(mirror_dir, spec: Mapping[str, Mapping], *, seed: int = 0) -> list[str]:
    """Write many archives; returns the zip keys written.

    ``spec`` maps a trade type to ``{"symbols": [...], "intervals": ["1m"] (or "interval"),
    "start": "YYYY-MM-DD", "end": "YYYY-MM-DD" (daily klines, inclusive), "months": [...]
    (monthly klines), "funding_months": [...], "funding_interval_hours": 8, "options": {...}}``;
    ``options`` go to ``write_kline_day`` / ``write_kline_month`` for every file.
    """
    keys: list[str] = []
    for trade_type, entry in spec.items():
        intervals = entry.get("intervals") or [entry.get("interval", "1m")]
        opts = {"seed": seed, **dict(entry.get("options", {}))}
        days = _date_range(entry["start"], entry["end"]) if entry.get("start") else []
        for symbol in entry["symbols"]:
            for interval in intervals:
                for d in days:
                    keys.append(
                        write_kline_day(mirror_dir, trade_type, symbol, interval, d, **opts)
                    )
                for month in entry.get("months", []):
                    keys.append(
                        write_kline_month(mirror_dir, trade_type, symbol, interval, month, **opts)
                    )
            for month in entry.get("funding_months", []):
                keys.append(
                    write_funding_month(
                        mirror_dir,
                        trade_type,
                        symbol,
                        month,
                        interval_hours=entry.get("funding_interval_hours", 8),
                        seed=seed,
                    )
                )
    return keys
