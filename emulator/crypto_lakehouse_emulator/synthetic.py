"""A virtual archive for scale tests: thousands of symbols × days, no files on disk.

``SyntheticUniverse`` is an emulator source (see ``archive.py``): directories are lazy sorted
sequences computed from an index, so a universe of millions of keys costs no memory.
Objects are generated on request: valid zips (one CSV member in the exact archive format)
and matching CHECKSUM sidecars.

Listings must give each object's exact ``Size`` without generating it. The synthetic values
are therefore kept inside ranges whose printed width never changes (prices 10000–19999.9,
volumes 20–49.999, trade counts 100–999, …) and the zips are stored uncompressed: every
file of one shape then has the same length, measured once on a template file.
"""

from __future__ import annotations

import calendar
import functools
import hashlib
import re
from datetime import date, datetime, timedelta, timezone

import numpy as np
import pandas as pd

from crypto_lakehouse import layout
from crypto_lakehouse.intervals import candles_per_day, interval_ms

from .archive import LazySeq, ObjectInfo
from .generate import (
    FUNDING_HEADER,
    KLINE_HEADER,
    PRINT_DECIMALS,
    _seed,
    checksum_bytes,
    day_frame,
    spot_time_unit,
    zip_bytes,
)

# Name pattern per trade type: (letter, quote suffix). Zero-padded index keeps them sorted.
_NAMES = {"spot": ("S", "USDT"), "um_futures": ("U", "USDT"), "cm_futures": ("C", "USD_PERP")}
_CHECKSUM = ".CHECKSUM"


def _between(name: str, head: str, tail: str) -> str | None:
    """The part of ``name`` between ``head`` and ``tail``, or None if it is not so framed."""
    if name.startswith(head) and name.endswith(tail) and len(name) > len(head) + len(tail):
        return name[len(head) : -len(tail)]
    return None


def _digits(values: np.ndarray, decimals: int) -> np.ndarray:
    """Non-negative numbers as an (n, width) matrix of ASCII bytes; every row must have the
    same number of integer digits (the synthetic ranges guarantee it)."""
    values = np.asarray(values)
    if values.dtype.kind in "iu":
        scaled = values.astype(np.int64) * 10**decimals
    else:
        scaled = np.rint(values * 10.0**decimals).astype(np.int64)
    if not len(scaled):
        return np.zeros((0, 1), dtype=np.uint8)
    if scaled.min() < 0:
        raise ValueError("fixed-width rendering needs non-negative values")
    int_part = scaled // 10**decimals
    width = len(str(int(int_part.max())))
    if int_part.min() < (10 ** (width - 1) if width > 1 else 0):
        raise ValueError("values of one column have different widths")
    total = width + decimals
    powers = 10 ** np.arange(total - 1, -1, -1, dtype=np.int64)
    chars = ((scaled[:, None] // powers) % 10 + 48).astype(np.uint8)
    if decimals:
        dot = np.full((len(scaled), 1), ord("."), dtype=np.uint8)
        chars = np.hstack([chars[:, :width], dot, chars[:, width:]])
    return chars


def _render(columns: list[np.ndarray], header: str | None) -> bytes:
    """Rows of fixed-width columns joined by commas; the same bytes as the general formatter."""
    n = len(columns[0])
    sep = np.full((n, 1), ord(","), dtype=np.uint8)
    parts = []
    for col in columns:
        parts += [col, sep]
    parts[-1] = np.full((n, 1), ord("\n"), dtype=np.uint8)
    body = np.hstack(parts).tobytes() if n else b""
    return (header + "\n").encode() + body if header else body


def render_kline_csv(frame: pd.DataFrame, trade_type: str, time_unit: str) -> bytes:
    """Fast fixed-width twin of ``generate.format_kline_csv`` (same output for these ranges)."""
    pdec, vdec, qdec = PRINT_DECIMALS[trade_type]
    scale = 1000 if time_unit == "us" else 1
    f = frame
    cols = [
        _digits(f["open_time"].to_numpy() * scale, 0),
        *(_digits(f[c].to_numpy(), pdec) for c in ("open", "high", "low", "close")),
        _digits(f["volume"].to_numpy(), vdec),
        _digits((f["close_time"].to_numpy() + 1) * scale - 1, 0),
        _digits(f["quote_volume"].to_numpy(), qdec),
        _digits(f["count"].to_numpy(), 0),
        _digits(f["taker_buy_volume"].to_numpy(), vdec),
        _digits(f["taker_buy_quote_volume"].to_numpy(), qdec),
        _digits(f["ignore"].to_numpy(), 0),
    ]
    return _render(cols, KLINE_HEADER if trade_type != "spot" else None)


def render_funding_csv(frame: pd.DataFrame) -> bytes:
    cols = [
        _digits(frame["calc_time"].to_numpy(), 0),
        _digits(frame["funding_interval_hours"].to_numpy(), 0),
        _digits(frame["last_funding_rate"].to_numpy(), 8),
    ]
    return _render(cols, FUNDING_HEADER)


def _month_add(d: date, k: int) -> date:
    m = d.month - 1 + k
    return date(d.year + m // 12, m % 12 + 1, 1)


# The level the synthetic archive's prices wander around (each day from it, within 10,100 and
# 19,900): the synthetic REST candles of its symbols start there too (__main__).
PRICE_LEVEL = 15_000.0


class SyntheticUniverse:
    """``n_spot`` / ``n_um`` / ``n_cm`` symbols, each with ``days`` daily kline files per
    interval from ``start``; futures symbols also get monthly funding archives for every month
    touched by the day range (``funding=False`` to omit them).
    """

    def __init__(
        self,
        n_spot: int = 0,
        n_um: int = 0,
        n_cm: int = 0,
        days: int = 30,
        start: str = "2024-01-01",
        intervals: tuple[str, ...] = ("1m",),
        funding: bool = True,
        seed: int = 0,
    ):
        self.counts = {"spot": n_spot, "um_futures": n_um, "cm_futures": n_cm}
        self.days = days
        self.start = date.fromisoformat(start)
        self.intervals = sorted(intervals)
        self.funding = funding
        self.seed = seed
        last = self.start + timedelta(days=max(days, 1) - 1)
        n_months = (last.year - self.start.year) * 12 + last.month - self.start.month + 1
        first = self.start.replace(day=1)
        self.months = [_month_add(first, k).strftime("%Y-%m") for k in range(n_months)]
        self._days = [(self.start + timedelta(days=j)).isoformat() for j in range(days)]
        self._day_index = set(self._days)
        self._templates: dict[tuple, tuple[int, int]] = {}
        # A downloader fetches a zip and its CHECKSUM close together: keep recent zips.
        self._zip = functools.lru_cache(maxsize=32)(self._zip_uncached)
        self._patterns = {
            tt: re.compile(rf"^{_NAMES[tt][0]}(\d{{6}}){re.escape(_NAMES[tt][1])}$")
            for tt in _NAMES
        }

    # ------------------------------------------------------------ names
    def symbol(self, trade_type: str, i: int) -> str:
        letter, quote = _NAMES[trade_type]
        return f"{letter}{i:06d}{quote}"

    def symbols(self, trade_type: str) -> list[str]:
        return [self.symbol(trade_type, i) for i in range(self.counts[trade_type])]

    def day(self, j: int) -> str:
        return self._days[j]

    def _has_symbol(self, trade_type: str, symbol: str) -> bool:
        m = self._patterns[trade_type].match(symbol)
        return bool(m) and int(m.group(1)) < self.counts[trade_type]

    def _markets(self):
        for tt, n in self.counts.items():
            if n > 0:
                yield tt, layout.MARKET_PREFIX[tt]

    def _has_funding(self, trade_type: str) -> bool:
        return self.funding and trade_type in layout.FUTURES_TRADE_TYPES

    # ------------------------------------------------------------ Source protocol
    def list_dir(self, dir_prefix: str):
        markets = dict(self._markets())
        if dir_prefix == "":
            return ["data/"] if markets else []
        if dir_prefix == "data/":
            return sorted({"/".join(root.split("/")[:2]) + "/" for root in markets.values()})
        if dir_prefix == "data/futures/":
            return sorted(root + "/" for root in markets.values() if root.startswith(dir_prefix))
        for tt, root in markets.items():
            if dir_prefix.startswith(root + "/"):
                return self._list_market(tt, root, dir_prefix[len(root) + 1 :])
        return []

    def _list_market(self, tt: str, root: str, rest: str):
        base = f"{root}/"
        if rest == "":
            return [base + "daily/"] + ([base + "monthly/"] if self._has_funding(tt) else [])
        if rest == "daily/":
            return [base + "daily/klines/"]
        if rest == "monthly/":
            return [base + "monthly/fundingRate/"] if self._has_funding(tt) else []
        parts = rest.rstrip("/").split("/")
        n = self.counts[tt]
        if parts[:2] == ["daily", "klines"]:
            d = base + "daily/klines/"
            if len(parts) == 2:
                return LazySeq(n, lambda i: f"{d}{self.symbol(tt, i)}/")
            sym = parts[2]
            if not self._has_symbol(tt, sym):
                return []
            if len(parts) == 3:
                return [f"{d}{sym}/{iv}/" for iv in self.intervals]
            if len(parts) == 4 and parts[3] in self.intervals:
                iv = parts[3]
                return LazySeq(
                    2 * self.days,
                    lambda j: (
                        layout.daily_kline_key(tt, sym, iv, self.day(j // 2))
                        + (_CHECKSUM if j % 2 else "")
                    ),
                )
            return []
        if parts[:2] == ["monthly", "fundingRate"] and self._has_funding(tt):
            d = base + "monthly/fundingRate/"
            if len(parts) == 2:
                return LazySeq(n, lambda i: f"{d}{self.symbol(tt, i)}/")
            if len(parts) == 3 and self._has_symbol(tt, parts[2]):
                sym = parts[2]
                return LazySeq(
                    2 * len(self.months),
                    lambda j: (
                        layout.funding_key(tt, sym, self.months[j // 2])
                        + (_CHECKSUM if j % 2 else "")
                    ),
                )
        return []

    def _parse(self, key: str):
        """(trade_type, kind, symbol, interval, period, is_checksum) of a key we hold, or None."""
        is_checksum = key.endswith(_CHECKSUM)
        zkey = key[: -len(_CHECKSUM)] if is_checksum else key
        for tt, root in self._markets():
            if not zkey.startswith(root + "/"):
                continue
            parts = zkey[len(root) + 1 :].split("/")
            if len(parts) == 5 and parts[:2] == ["daily", "klines"]:
                sym, iv, name = parts[2:]
                day = _between(name, f"{sym}-{iv}-", ".zip")
                if not (day in self._day_index and iv in self.intervals):
                    return None
                if not self._has_symbol(tt, sym):
                    return None
                return (tt, "kline", sym, iv, day, is_checksum)
            if (
                len(parts) == 4
                and parts[:2] == ["monthly", "fundingRate"]
                and self._has_funding(tt)
            ):
                sym, name = parts[2:]
                month = _between(name, f"{sym}-fundingRate-", ".zip")
                if month in self.months and self._has_symbol(tt, sym):
                    return (tt, "funding", sym, None, month, is_checksum)
            return None
        return None

    def info(self, key: str) -> ObjectInfo | None:
        parsed = self._parse(key)
        if parsed is None:
            return None
        tt, kind, sym, iv, period, is_checksum = parsed
        zip_name = key.rsplit("/", 1)[1].removesuffix(_CHECKSUM)
        if is_checksum:
            size = len(checksum_bytes(zip_name, b"", tt != "spot"))
        else:
            size = self._size(tt, kind, iv, period, zip_name)
        etag = '"' + hashlib.md5(key.encode()).hexdigest() + '"'
        return ObjectInfo(size, self._published(kind, period), etag)

    def read(self, key: str) -> bytes | None:
        parsed = self._parse(key)
        if parsed is None:
            return None
        tt, kind, sym, iv, period, is_checksum = parsed
        if is_checksum:
            zip_key = key[: -len(_CHECKSUM)]
            return checksum_bytes(zip_key.rsplit("/", 1)[1], self._zip(zip_key), tt != "spot")
        return self._zip(key)

    # ------------------------------------------------------------ content
    @staticmethod
    @functools.lru_cache(maxsize=4096)
    def _published(kind: str, period: str) -> float:
        """Upload time: the next day (or month) at 08:06:34 UTC."""
        if kind == "kline":
            d = date.fromisoformat(period) + timedelta(days=1)
        else:
            d = _month_add(date.fromisoformat(period + "-01"), 1)
        return datetime(d.year, d.month, d.day, 8, 6, 34, tzinfo=timezone.utc).timestamp()

    def _shape(self, tt: str, kind: str, iv: str | None, period: str) -> tuple:
        if kind == "kline":
            unit = spot_time_unit(period) if tt == "spot" else "ms"
            return (tt, kind, iv, unit)
        y, m = (int(x) for x in period.split("-"))
        return (tt, kind, calendar.monthrange(y, m)[1])

    def _size(self, tt: str, kind: str, iv: str | None, period: str, zip_name: str) -> int:
        shape = self._shape(tt, kind, iv, period)
        if shape not in self._templates:
            # Same shape, another symbol: only the member name's length differs.
            sym = self.symbol(tt, 0)
            data, member = self._build(tt, kind, sym, iv, period)
            self._templates[shape] = (len(data), len(member))
        size, member_len = self._templates[shape]
        # The member name (as long as the zip name) is stored twice in a zip: local header
        # and central directory.
        return size + 2 * (len(zip_name) - member_len)

    def _zip_uncached(self, key: str) -> bytes:
        tt, kind, sym, iv, period, _ = self._parse(key)
        data, member = self._build(tt, kind, sym, iv, period)
        expected = self._size(tt, kind, iv, period, key.rsplit("/", 1)[1])
        if len(data) != expected:
            raise RuntimeError(f"synthetic {key}: {len(data)} bytes, listed as {expected}")
        return data

    def _build(self, tt, kind, sym, iv, period) -> tuple[bytes, str]:
        if kind == "kline":
            frame = self._kline_frame(tt, sym, iv, date.fromisoformat(period))
            unit = spot_time_unit(period) if tt == "spot" else "ms"
            csv = render_kline_csv(frame, tt, unit)
            member = f"{sym}-{iv}-{period}.csv"
            stamp = datetime.fromisoformat(period) + timedelta(days=1)
        else:
            csv = render_funding_csv(self._funding_frame(tt, sym, period))
            member = f"{sym}-fundingRate-{period}.csv"
            stamp = datetime.fromisoformat(period + "-01")
        return zip_bytes(member, csv, stamp, stored=True), member

    def _kline_frame(self, tt: str, sym: str, iv: str, d: date) -> pd.DataFrame:
        """Consistent OHLCV inside fixed-width ranges (see module docstring)."""
        n = candles_per_day(iv)
        step = interval_ms(iv)
        rng = np.random.default_rng(_seed(self.seed, tt, sym, iv, d.toordinal(), "synthetic"))
        path = PRICE_LEVEL * np.exp(np.cumsum(rng.standard_normal(n + 1) * 0.001))
        path = np.clip(path, 10_100, 19_900)
        opens, closes = np.round(path[:-1], 1), np.round(path[1:], 1)
        spread = np.round(np.abs(rng.standard_normal((2, n))) * 10, 1)
        highs = np.clip(np.maximum(opens, closes) + spread[0], 10_000, 19_999.9)
        lows = np.clip(np.minimum(opens, closes) - spread[1], 10_000, 19_999.9)
        vwap = lows + (highs - lows) * rng.uniform(0.0, 1.0, n)
        share = rng.uniform(0.5, 0.99, n)
        if tt == "cm_futures":
            volume = rng.integers(20, 50, n).astype(float)
            taker = np.floor(volume * share)
            quote = np.round(volume * 100 / vwap, 8)
            taker_quote = np.minimum(np.round(taker * 100 / vwap, 8), quote)
        else:
            volume = np.round(rng.uniform(20, 49.999, n), 3)
            taker = np.clip(np.round(volume * share, 3), 10, volume)
            quote = np.round(volume * vwap, 5)
            taker_quote = np.minimum(np.round(taker * vwap, 5), quote)
        trades = rng.integers(100, 1000, n)
        return day_frame(
            d, step, opens, highs, lows, closes, volume, quote, trades, taker, taker_quote
        )

    def _funding_frame(self, tt: str, sym: str, month: str) -> pd.DataFrame:
        y, m = (int(x) for x in month.split("-"))
        n = calendar.monthrange(y, m)[1] * 3
        rng = np.random.default_rng(_seed(self.seed, tt, sym, month, "synthetic-funding"))
        t0 = int(datetime(y, m, 1, tzinfo=timezone.utc).timestamp()) * 1000
        return pd.DataFrame(
            {
                "calc_time": t0
                + np.arange(n, dtype=np.int64) * 8 * 3_600_000
                + rng.integers(0, 27, n),
                "funding_interval_hours": np.full(n, 8, dtype=np.int64),
                "last_funding_rate": np.round(rng.uniform(1e-8, 9.9e-4, n), 8),
            }
        )
