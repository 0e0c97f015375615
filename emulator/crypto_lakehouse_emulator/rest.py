"""The REST side of the emulator: Binance's public market-data endpoints with their limits.

``RestEmulator.handle(method, path, query, headers)`` answers ``/api/v3/…`` (spot),
``/fapi/v1/…`` (um) and ``/dapi/v1/…`` (cm): ``time``, ``exchangeInfo``, ``klines`` and
``fundingRate`` (futures). Plug it into ``Emulator(rest=RestEmulator(...))``.

Binance semantics reproduced (binance-facts §5):

- Weights per endpoint and ``limit``; ``X-MBX-USED-WEIGHT-1M`` on every answer, counted per
  API family (spot, um, cm) and fixed window of ``window_s`` wall-clock seconds (60 on Binance;
  tests shorten it). exchangeInfo announces the configured limit and window in ``rateLimits``
  (``SECOND`` × ``window_s`` when the window is not a minute) so clients can learn it.
- Over the limit: 429 with ``Retry-After`` (seconds to the window's end). Requests that keep
  arriving before that time count as violations; more than ``ban_after`` of them → 418 with
  ``Retry-After`` for ``ban_s`` seconds. um ``fundingRate`` has its own pool
  (``funding_limit`` requests per ``funding_windows`` windows) and no request weight.
- Unknown symbol: 400 ``{"code": -1121, "msg": "Invalid symbol."}``; symbols marked
  with ``set_invalid_status``: 400 -1122.
- klines: spot/um return the first ``limit`` candles from ``startTime`` (or the last ``limit``
  up to ``endTime``, or the most recent); cm enforces ``endTime − startTime ≤ 200 days`` and
  returns the most recent ``limit`` candles before ``endTime``. Candles opening after "now" do
  not exist yet; the candle containing "now" is served still open.
- Faults: ``inject`` answers the next matching requests (by family, endpoint, symbol) with a
  status (5xx bursts, 403, 418, 429) or delays them (timeouts); ``ban`` puts a family into
  the 418 state; ``exhaust`` into a Retry-After period (another client used the weight).

Data sources: frames (legacy 10-column schema), CSV files (the legacy-v1-real ``truth`` format,
header ``open_time,open,…,taker_buy_quote_volume``), a seeded synthetic generator computed per
request (any date range at no cost), funding records (lists, real JSON samples, or synthetic
every N hours), exchangeInfo from the real JSON fixtures or synthesized for the known symbols.
The data clock ``now_ms`` is settable (None follows the wall clock).
"""

from __future__ import annotations

import copy
import json
import math
import threading
import time
import zipfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from crypto_lakehouse.intervals import (
    BINANCE_INTERVALS,
    CALENDAR_INTERVALS,
    DAY_MS,
    SPOT_ONLY_INTERVALS,
    interval_ms,
)
from crypto_lakehouse.schema import ARCHIVE_KLINE_FIELDS

FAMILIES = {"/api/": "spot", "/fapi/": "um", "/dapi/": "cm"}
PREFIX = {"spot": "/api/v3", "um": "/fapi/v1", "cm": "/dapi/v1"}
_MARKET_ALIASES = {
    "spot": "spot",
    "um": "um",
    "um_futures": "um",
    "cm": "cm",
    "cm_futures": "cm",
}
DEFAULT_LIMITS = {"spot": 6000, "um": 2400, "cm": 2400}
KLINES_MAX = {"spot": 1000, "um": 1500, "cm": 1500}
CM_MAX_SPAN_MS = 200 * DAY_MS
WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"

# Column order of a REST kline array (binance-facts §4.1).
_KLINE_FIELDS = ARCHIVE_KLINE_FIELDS
_LEGACY_TO_REST = {
    "candle_begin_time": "open_time",
    "trade_num": "count",
    "taker_buy_base_asset_volume": "taker_buy_volume",
    "taker_buy_quote_asset_volume": "taker_buy_quote_volume",
}


# Fixed-length kline intervals the emulator serves (Binance's 1M month is not emulated).
REST_INTERVALS = tuple(i for i in BINANCE_INTERVALS if i not in CALENDAR_INTERVALS)


def market_of(name: str) -> str:
    try:
        return _MARKET_ALIASES[name]
    except KeyError:
        raise ValueError(f"unknown market {name!r} (spot, um, cm)") from None


class _ApiError(Exception):
    def __init__(self, status: int, code: int, msg: str):
        self.status, self.code, self.msg = status, code, msg


# ---------------------------------------------------------------- kline sources
class FrameKlines:
    """Candles held in memory: sorted open times plus the 12 REST fields as JSON-ready values."""

    def __init__(self, df: pd.DataFrame, interval: str):
        ims = interval_ms(interval)
        df = df.rename(columns=_LEGACY_TO_REST)
        missing = {"open_time", "open", "high", "low", "close", "volume"} - set(df.columns)
        if missing:
            raise ValueError(f"kline frame lacks columns {sorted(missing)}")
        ot = df["open_time"]
        if pd.api.types.is_datetime64_any_dtype(ot):
            ot = ot.dt.tz_localize(None) if ot.dt.tz is None else ot.dt.tz_convert(None)
            ot = ot.astype("datetime64[ms]").astype("int64")
        ot = pd.Series(pd.to_numeric(ot), index=df.index).astype("int64")
        out = pd.DataFrame({"open_time": ot})
        for name in _KLINE_FIELDS[1:]:
            if name == "close_time":
                out[name] = ot + ims - 1
            elif name == "count":
                out[name] = pd.to_numeric(df[name]).astype("int64") if name in df else 0
            elif name in df and name != "ignore":
                out[name] = df[name].astype(str)  # strings stay exact; floats get repr text
            else:
                out[name] = "0"
        out = out.sort_values("open_time", kind="stable").drop_duplicates("open_time", keep="last")
        self.times = out["open_time"].to_numpy(dtype=np.int64)
        # An object array of Python ints (times, count) and str (decimals): JSON-ready rows.
        self.values = np.empty((len(out), len(_KLINE_FIELDS)), dtype=object)
        for j, name in enumerate(_KLINE_FIELDS):
            self.values[:, j] = out[name].tolist()

    def select(self, lo: int, hi: int, limit: int, newest: bool, ims: int = 0) -> list:
        """Candles with ``lo <= open <= hi``: the first ``limit`` (or the last if ``newest``)."""
        a, b = (
            np.searchsorted(self.times, [lo, hi], side="left")[0],
            np.searchsorted(self.times, hi, side="right"),
        )
        if newest:
            a = max(a, b - limit)
        else:
            b = min(b, a + limit)
        return self.values[a:b].tolist()


def _mix(x: np.ndarray, salt: int) -> np.ndarray:
    """splitmix64 finaliser → uniform floats in [0, 1): a pure function of (x, salt)."""
    z = x.astype(np.uint64) + np.uint64((0x9E3779B97F4A7C15 * (salt + 1)) % 2**64)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(2**53)


def _fmt(x: np.ndarray, decimals: int = 8) -> list[str]:
    # Building a JSON answer is per value anyway; %-formatting is twice as fast as np.char.mod.
    spec = f"%.{decimals}f"
    return [spec % v for v in x.tolist()]


@dataclass
class SyntheticKlines:
    """Seeded candles of any interval on ``[start_ms, end_ms)`` minus ``gaps``, computed per
    request.

    Every value is a pure function of (seed, interval, open time), so two requests for the same
    candle agree and years of history cost nothing until asked for.
    """

    start_ms: int
    end_ms: int | None = None  # exclusive; None: no end (still listed)
    seed: int = 0
    base_price: float = 100.0
    gaps: tuple[tuple[int, int], ...] = ()  # [from, to) ranges without candles (downtime)

    def _price(self, t: np.ndarray) -> np.ndarray:
        days = t.astype(np.float64) / DAY_MS
        wave = 0.2 * np.sin(2 * np.pi * days / 30) + 0.03 * np.sin(2 * np.pi * days)
        return self.base_price * (1 + wave + 0.002 * (_mix(t // 1000, self.seed) - 0.5))

    def select(self, lo: int, hi: int, limit: int, newest: bool, ims: int = 60_000) -> list:
        gap_candles = sum(max(0, (b - a) // ims + 1) for a, b in self.gaps)
        lo = max(lo, self.start_ms)
        if self.end_ms is not None:
            hi = min(hi, self.end_ms - 1)
        first = -(-lo // ims) * ims  # first open time on the grid at or after lo
        last = (hi // ims) * ims
        if last < first:
            return []
        span = (limit + gap_candles) * ims
        if newest:
            first = max(first, last - span)
        else:
            last = min(last, first + span)
        t = np.arange(first, last + 1, ims, dtype=np.int64)
        for a, b in self.gaps:
            t = t[(t < a) | (t >= b)]
        t = t[-limit:] if newest else t[:limit]
        if t.size == 0:
            return []
        o = self._price(t)
        c = self._price(t + ims)
        u1, u2, u3, u4, u5 = (_mix(t // ims, self.seed * 7 + k + ims) for k in range(1, 6))
        h = np.maximum(o, c) * (1 + 0.001 * u1)
        low = np.minimum(o, c) * (1 - 0.001 * u2)
        vol = 1 + 99 * u3
        qv = vol * (o + c) / 2
        cnt = (10 + 500 * u4).astype(np.int64)
        cols = [
            t.tolist(),
            _fmt(o),
            _fmt(h),
            _fmt(low),
            _fmt(c),
            _fmt(vol),
            (t + ims - 1).tolist(),
            _fmt(qv),
            cnt.tolist(),
            _fmt(vol * u5),
            _fmt(qv * u5),
            ["0"] * t.size,
        ]
        return [list(r) for r in zip(*cols, strict=True)]


# ---------------------------------------------------------------- funding
class FundingRecords:
    def __init__(self, times, rates, mark_prices=None):
        order = np.argsort(np.asarray(times, dtype=np.int64), kind="stable")
        self.times = np.asarray(times, dtype=np.int64)[order]
        self.rates = [str(rates[i]) for i in order]
        self.marks = None if mark_prices is None else [str(mark_prices[i]) for i in order]

    def select(self, symbol: str, lo: int, hi: int, limit: int, newest: bool) -> list[dict]:
        a = int(np.searchsorted(self.times, lo, side="left"))
        b = int(np.searchsorted(self.times, hi, side="right"))
        if newest:
            a = max(a, b - limit)
        else:
            b = min(b, a + limit)
        out = []
        for i in range(a, b):
            rec = {
                "symbol": symbol,
                "fundingTime": int(self.times[i]),
                "fundingRate": self.rates[i],
            }
            if self.marks is not None:
                rec["markPrice"] = self.marks[i]
            out.append(rec)
        return out


_FUNDING_CSV = ["calc_time", "funding_interval_hours", "last_funding_rate"]


def _with_archived_funding(mirror_dir, market: str, symbol: str, times: np.ndarray, rates: list):
    """``(times, rates)`` with every month of a funding archive in ``mirror_dir`` replaced by
    the archive's events (its CSV's ``calc_time`` and ``last_funding_rate`` text)."""
    from crypto_lakehouse import layout

    trade_type = {"um": "um_futures", "cm": "cm_futures"}[market_of(market)]
    folder = Path(mirror_dir) / layout.funding_dir_key(trade_type, symbol)
    keep = np.ones(len(times), dtype=bool)
    extra_times: list[int] = []
    extra_rates: list[str] = []
    for path in sorted(folder.glob(f"{symbol}-fundingRate-*.zip")):
        month = path.name[len(symbol) + len("-fundingRate-") : -len(".zip")]
        first = pd.Timestamp(f"{month}-01", tz="UTC")
        lo = int(first.timestamp() * 1000)
        hi = int((first + pd.offsets.MonthBegin(1)).timestamp() * 1000)
        keep &= (times < lo) | (times >= hi)
        with zipfile.ZipFile(path) as zf, zf.open(zf.namelist()[0]) as csv:
            rows = pd.read_csv(csv, header=None, names=_FUNDING_CSV, dtype=str)
        rows = rows[rows["calc_time"] != "calc_time"]  # the header line, when there is one
        extra_times.extend(rows["calc_time"].astype("int64").tolist())
        extra_rates.extend(rows["last_funding_rate"].tolist())
    kept = [r for r, k in zip(rates, keep, strict=True) if k]
    return np.concatenate([times[keep], np.array(extra_times, dtype=np.int64)]), kept + extra_rates


# ---------------------------------------------------------------- faults
@dataclass
class Injection:
    status: int | None  # None: no error answer, only the delay
    count: int = 1
    family: str | None = None
    path: str | None = None  # endpoint suffix, e.g. "/klines"
    after: int = 0  # matching requests to let through first
    delay_s: float = 0.0
    retry_after: int | None = None
    seen: int = 0
    symbol: str | None = None  # only requests with this ``symbol`` parameter

    def matches(self, family: str, path: str, query: dict) -> bool:
        return (
            (self.family is None or self.family == family)
            and (self.path is None or path.endswith(self.path))
            and (self.symbol is None or query.get("symbol") == self.symbol)
        )


@dataclass
class _Pool:
    limit: int
    window_s: float
    window: int = -1
    used: int = 0
    retry_until: float = 0.0
    violations: int = 0

    def roll(self, wall: float) -> None:
        w = int(wall // self.window_s)
        if w != self.window:
            self.window, self.used = w, 0


@dataclass
class _FamilyState:
    weight: _Pool
    funding: _Pool | None = None
    banned_until: float = 0.0
    counters: dict = field(default_factory=lambda: defaultdict(int))


# ---------------------------------------------------------------- the emulator
class RestEmulator:
    def __init__(
        self,
        *,
        now_ms: int | None = None,
        window_s: float = 60.0,
        weight_limits: dict[str, int] | None = None,
        advertised_limits: dict[str, int] | None = None,
        funding_limit: int = 500,
        funding_windows: int = 5,
        ban_after: int = 10,
        ban_s: int = 120,
    ):
        self._now_ms = now_ms
        self.window_s = float(window_s)
        limits = {**DEFAULT_LIMITS, **{market_of(k): v for k, v in (weight_limits or {}).items()}}
        # What exchangeInfo announces; differs from ``limits`` only to test a misinformed client.
        self.advertised = {
            **limits,
            **{market_of(k): v for k, v in (advertised_limits or {}).items()},
        }
        self.ban_after = ban_after
        self.ban_s = ban_s
        self._lock = threading.Lock()
        self._state = {
            fam: _FamilyState(
                weight=_Pool(limits[fam], self.window_s),
                funding=_Pool(funding_limit, self.window_s * funding_windows)
                if fam == "um"
                else None,
            )
            for fam in FAMILIES.values()
        }
        self._klines: dict[tuple[str, str, str], Any] = {}
        self._symbols: dict[str, set[str]] = defaultdict(set)
        self._unlisted: dict[str, set[str]] = defaultdict(set)
        self._invalid_status: dict[str, set[str]] = defaultdict(set)
        self._funding: dict[tuple[str, str], FundingRecords] = {}
        self._exchange_info: dict[str, dict] = {}
        self._contract_sizes: dict[tuple[str, str], float] = {}
        self._injections: list[Injection] = []

    # ------------------------------------------------------------ clock
    @property
    def now_ms(self) -> int:
        return int(time.time() * 1000) if self._now_ms is None else int(self._now_ms)

    @now_ms.setter
    def now_ms(self, value: int | None) -> None:
        self._now_ms = value

    # ------------------------------------------------------------ data
    def add_symbol(self, market: str, symbol: str, *, listed: bool = True) -> None:
        """A known symbol (answers ``[]`` where it has no data); ``listed=False`` keeps it out
        of exchangeInfo, as for a delisted symbol."""
        m = market_of(market)
        self._symbols[m].add(symbol)
        if not listed:
            self._unlisted[m].add(symbol)

    def add_klines(
        self, market: str, symbol: str, data, interval: str = "1m", *, listed: bool = True
    ) -> None:
        """``data``: a DataFrame (legacy 10 columns or REST names) or a CSV path (header line)."""
        if isinstance(data, (str, Path)):
            data = pd.read_csv(data, dtype=str)
        self.add_symbol(market, symbol, listed=listed)
        self._klines[(market_of(market), symbol, interval)] = FrameKlines(data, interval)

    def add_synthetic_klines(
        self,
        market: str,
        symbol: str,
        *,
        start_ms: int,
        end_ms: int | None = None,
        interval: str | None = None,
        seed: int = 0,
        base_price: float = 100.0,
        gaps=(),
        listed: bool = True,
    ) -> None:
        self.add_symbol(market, symbol, listed=listed)
        # interval None: the generator serves every interval
        self._klines[(market_of(market), symbol, interval)] = SyntheticKlines(
            start_ms, end_ms, seed, base_price, tuple(tuple(g) for g in gaps)
        )

    def add_funding(self, market: str, symbol: str, records) -> None:
        """``records``: list of dicts / DataFrame with fundingTime and fundingRate (optional
        markPrice), or the path of a real ``fundingRate`` JSON answer."""
        if isinstance(records, (str, Path)):
            records = json.loads(Path(records).read_text())
        df = pd.DataFrame(records)
        self.add_symbol(market, symbol)
        if df.empty:
            self._funding[(market_of(market), symbol)] = FundingRecords([], [])
            return
        marks = df["markPrice"].fillna("").tolist() if "markPrice" in df else None
        self._funding[(market_of(market), symbol)] = FundingRecords(
            df["fundingTime"].astype("int64").to_numpy(),
            df["fundingRate"].astype(str).tolist(),
            marks,
        )

    def add_synthetic_funding(
        self,
        market: str,
        symbol: str,
        *,
        start_ms: int,
        end_ms: int,
        every_h: int = 8,
        seed: int = 0,
        mirror_dir: str | Path | None = None,
    ) -> None:
        """Events every ``every_h`` hours on ``[start_ms, end_ms)`` with 0–9 ms of jitter.

        With ``mirror_dir``, the months that the mirror holds a monthly funding archive of
        (``…/monthly/fundingRate/{SYM}/{SYM}-fundingRate-{YYYY-MM}.zip``) answer that archive's
        events instead, time and rate as written: on Binance both are the same events, so a
        tool that takes REST funding over archive funding for an hour (legacy BHDS does) gets
        the same value."""
        step = every_h * 3_600_000
        grid = np.arange(-(-start_ms // step) * step, end_ms, step, dtype=np.int64)
        jitter = (_mix(grid // step, seed + 101) * 10).astype(np.int64)
        times, rates = grid + jitter, _fmt((_mix(grid // step, seed + 202) - 0.3) * 0.001)
        if mirror_dir is not None:
            times, rates = _with_archived_funding(mirror_dir, market, symbol, times, rates)
        self.add_symbol(market, symbol)
        self._funding[(market_of(market), symbol)] = FundingRecords(times, rates)

    def set_invalid_status(self, market: str, symbol: str) -> None:
        """The symbol exists but is not trading: klines answer -1122."""
        self._invalid_status[market_of(market)].add(symbol)

    def set_exchange_info(self, market: str, info) -> None:
        """A real exchangeInfo answer (dict or JSON path) served with patched serverTime and
        REQUEST_WEIGHT limit."""
        if isinstance(info, (str, Path)):
            info = json.loads(Path(info).read_text())
        self._exchange_info[market_of(market)] = info

    def set_contract_size(self, market: str, symbol: str, size: float) -> None:
        self._contract_sizes[(market_of(market), symbol)] = size

    # ------------------------------------------------------------ faults
    def inject(
        self,
        status: int | None,
        *,
        count: int = 1,
        market: str | None = None,
        path: str | None = None,
        after: int = 0,
        delay_s: float = 0.0,
        retry_after: int | None = None,
        symbol: str | None = None,
    ) -> Injection:
        """The next ``count`` matching requests (after ``after`` pass) get ``status``
        (and/or are delayed ``delay_s``). ``symbol``: only requests for that symbol match (a
        fault of one symbol's requests while the others are answered)."""
        inj = Injection(
            status,
            count,
            market_of(market) if market else None,
            path,
            after,
            delay_s,
            retry_after,
            symbol=symbol,
        )
        with self._lock:
            self._injections.append(inj)
        return inj

    def ban(self, market: str, seconds: float) -> None:
        with self._lock:
            self._state[market_of(market)].banned_until = time.time() + seconds

    def exhaust(self, market: str, seconds: float) -> None:
        """Another client of the same IP used up the family's request weight: every request
        for the next ``seconds`` is answered 429 with ``Retry-After`` (the seconds left) and
        counts as a violation (more than ``ban_after`` → 418), as in the rest of a window
        after the limit was reached. For clients that get a 429 they did not cause."""
        with self._lock:
            pool = self._state[market_of(market)].weight
            pool.retry_until = time.time() + seconds
            pool.violations = 0

    def unban(self, market: str) -> None:
        """End a ban and any pending Retry-After period of the family."""
        with self._lock:
            st = self._state[market_of(market)]
            st.banned_until = 0.0
            for pool in (st.weight, st.funding):
                if pool is not None:
                    pool.retry_until, pool.violations = 0.0, 0

    def klines_rows(
        self, market: str, symbol: str, interval: str, start_ms: int, end_ms: int
    ) -> list:
        """The REST arrays the emulator holds for ``start_ms <= open < end_ms`` (any count),
        regardless of "now": what a test writes as archive data or expects back."""
        src = self._source(market_of(market), symbol, interval)
        if src is None:
            return []
        return src.select(start_ms, end_ms - 1, 10**9, False, interval_ms(interval))

    def _source(self, family: str, symbol: str, interval: str):
        src = self._klines.get((family, symbol, interval))
        return src if src is not None else self._klines.get((family, symbol, None))

    def counters(self, market: str) -> dict:
        with self._lock:
            return dict(self._state[market_of(market)].counters)

    # ------------------------------------------------------------ HTTP
    def handle(self, method: str, path: str, query: dict[str, str], headers: dict):
        family = next((f for p, f in FAMILIES.items() if path.startswith(p)), None)
        if family is None:
            return None
        st = self._state[family]
        endpoint = path[len(PREFIX[family]) :] if path.startswith(PREFIX[family]) else None
        delay, fault = self._take_injection(family, path, query)
        if delay:
            time.sleep(delay)
        with self._lock:
            st.counters["requests"] += 1
            if endpoint is not None:
                st.counters[f"requests{endpoint}"] += 1
            wall = time.time()
            st.weight.roll(wall)
            if fault is not None:
                return self._fault_answer(st, fault, wall)
            if wall < st.banned_until:
                st.counters["418"] += 1
                return self._answer(
                    418,
                    {"code": -1003, "msg": "IP banned."},
                    st,
                    {"Retry-After": str(math.ceil(st.banned_until - wall))},
                )
            try:
                if method != "GET":
                    raise _ApiError(405, -1000, f"method {method} not allowed")
                if endpoint not in ("/time", "/exchangeInfo", "/klines", "/fundingRate") or (
                    endpoint == "/fundingRate" and family == "spot"
                ):
                    raise _ApiError(404, -1000, f"no such endpoint {path}")
                weight, funding_pool = self._weight(family, endpoint, query)
                limited = self._rate_check(st, weight, funding_pool, wall)
                if limited is not None:
                    return limited
            except _ApiError as e:
                st.counters[str(e.status)] += 1
                return self._answer(e.status, {"code": e.code, "msg": e.msg}, st)
        # The answer itself is built outside the lock: synthetic data can take a moment.
        try:
            body = getattr(self, f"_ep_{endpoint.strip('/')}")(family, query)
        except _ApiError as e:
            with self._lock:
                st.counters[str(e.status)] += 1
            return self._answer(e.status, {"code": e.code, "msg": e.msg}, st)
        return self._answer(200, body, st)

    def _answer(self, status: int, body, st: _FamilyState, extra: dict | None = None):
        headers = {"Content-Type": "application/json", WEIGHT_HEADER: str(st.weight.used)}
        headers.update(extra or {})
        return status, headers, json.dumps(body, separators=(",", ":")).encode()

    def _take_injection(
        self, family: str, path: str, query: dict
    ) -> tuple[float, Injection | None]:
        with self._lock:
            for inj in self._injections:
                if inj.count <= 0 or not inj.matches(family, path, query):
                    continue
                inj.seen += 1
                if inj.seen <= inj.after:
                    continue
                inj.count -= 1
                return inj.delay_s, (inj if inj.status is not None else None)
        return 0.0, None

    def _fault_answer(self, st: _FamilyState, inj: Injection, wall: float):
        status = inj.status
        st.counters["5xx" if status >= 500 else str(status)] += 1
        extra = {}
        if inj.retry_after is not None or status in (418, 429):
            extra["Retry-After"] = str(inj.retry_after if inj.retry_after is not None else 1)
        if status == 418:
            st.banned_until = max(st.banned_until, wall + int(extra["Retry-After"]))
        body = {"code": -1000, "msg": f"injected HTTP {status}"}
        return self._answer(status, body, st, extra)

    def _weight(self, family: str, endpoint: str, query: dict) -> tuple[int, bool]:
        if endpoint == "/time":
            return 1, False
        if endpoint == "/exchangeInfo":
            return (20 if family == "spot" else 1), False
        if endpoint == "/fundingRate":
            return (0, True) if family == "um" else (1, False)
        limit = _int_param(query, "limit", 500)
        if family == "spot":
            return 2, False
        return (1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10), False

    def _rate_check(self, st: _FamilyState, weight: int, funding_pool: bool, wall: float):
        pools = [st.weight] + ([st.funding] if funding_pool and st.funding else [])
        for pool in pools:
            pool.roll(wall)
            if wall < pool.retry_until:
                pool.violations += 1
                if pool.violations > self.ban_after:
                    st.banned_until = wall + self.ban_s
                    st.counters["418"] += 1
                    return self._answer(
                        418,
                        {"code": -1003, "msg": "IP banned."},
                        st,
                        {"Retry-After": str(self.ban_s)},
                    )
                return self._too_many(st, pool, wall)
            cost = weight if pool is st.weight else 1
            if pool.used + cost > pool.limit:
                pool.retry_until = (pool.window + 1) * pool.window_s
                pool.violations = 0
                return self._too_many(st, pool, wall)
        st.weight.used += weight
        st.counters["weight"] += weight
        if funding_pool and st.funding:
            st.funding.used += 1
        return None

    def _too_many(self, st: _FamilyState, pool: _Pool, wall: float):
        st.counters["429"] += 1
        retry = max(1, math.ceil(pool.retry_until - wall))
        return self._answer(
            429, {"code": -1003, "msg": "Too many requests."}, st, {"Retry-After": str(retry)}
        )

    # ------------------------------------------------------------ endpoints
    def _ep_time(self, family: str, query: dict) -> dict:
        return {"serverTime": self.now_ms}

    def _ep_exchangeInfo(self, family: str, query: dict) -> dict:
        base = self._exchange_info.get(family)
        info = copy.deepcopy(base) if base else {"timezone": "UTC", "symbols": []}
        info["serverTime"] = self.now_ms
        if self.window_s == 60:
            interval, num = "MINUTE", 1
        else:
            interval, num = "SECOND", int(self.window_s)
        limits = [
            x for x in info.get("rateLimits", []) if x.get("rateLimitType") != "REQUEST_WEIGHT"
        ]
        limits.insert(
            0,
            {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": interval,
                "intervalNum": num,
                "limit": self.advertised[family],
            },
        )
        info["rateLimits"] = limits
        present = {s.get("symbol") for s in info["symbols"]}
        for sym in sorted(self._symbols[family] - present - self._unlisted[family]):
            info["symbols"].append(self._symbol_entry(family, sym))
        return info

    def _symbol_entry(self, family: str, symbol: str) -> dict:
        status = "BREAK" if symbol in self._invalid_status[family] else "TRADING"
        if family == "spot":
            return {"symbol": symbol, "status": status}
        entry = {
            "symbol": symbol,
            "contractType": "PERPETUAL"
            if (family == "um" or symbol.endswith("_PERP"))
            else "CURRENT_QUARTER",
        }
        if family == "cm":
            default = 100 if symbol.startswith("BTCUSD") else 10
            entry["contractStatus"] = status
            entry["contractSize"] = self._contract_sizes.get((family, symbol), default)
        else:
            entry["status"] = status
        return entry

    def _check_symbol(self, family: str, query: dict) -> str:
        symbol = query.get("symbol")
        if not symbol:
            raise _ApiError(
                400,
                -1102,
                "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.",
            )
        if symbol not in self._symbols[family]:
            raise _ApiError(400, -1121, "Invalid symbol.")
        if symbol in self._invalid_status[family]:
            raise _ApiError(400, -1122, "Invalid symbol status.")
        return symbol

    def _ep_klines(self, family: str, query: dict) -> list:
        symbol = self._check_symbol(family, query)
        interval = query.get("interval", "")
        # Binance's list only; 1s is a spot interval (fapi/dapi answer -1120 for it).
        if interval not in REST_INTERVALS or (family != "spot" and interval in SPOT_ONLY_INTERVALS):
            raise _ApiError(400, -1120, "Invalid interval.")
        ims = interval_ms(interval)
        limit = _int_param(query, "limit", 500)
        if not 1 <= limit <= KLINES_MAX[family]:
            raise _ApiError(400, -1130, "Invalid data sent for a parameter: limit.")
        start = _opt_int(query, "startTime")
        end = _opt_int(query, "endTime")
        now = self.now_ms
        newest = False
        if family == "cm":
            # COIN-M window rule (binance-facts §5.1): always the newest ``limit`` before end.
            if start is not None and end is not None and end - start > CM_MAX_SPAN_MS:
                raise _ApiError(400, -1127, "More than 200 days between startTime and endTime.")
            if start is not None and end is None:
                end = start + CM_MAX_SPAN_MS
            if end is not None and start is None:
                start = end - CM_MAX_SPAN_MS
            newest = True
        if start is None and end is None:
            newest = True
        elif start is None:
            newest = True
        lo = start if start is not None else 0
        hi = min(end if end is not None else now, now)
        if hi < lo:
            return []
        src = self._source(family, symbol, interval)
        if src is None:
            return []
        return src.select(lo, hi, limit, newest, ims)

    def _ep_fundingRate(self, family: str, query: dict) -> list:
        if family == "um" and not query.get("symbol"):
            symbols = sorted(s for (f, s) in self._funding if f == family)
        else:
            symbols = [self._check_symbol(family, query)]
        limit = _int_param(query, "limit", 100)
        if not 1 <= limit <= 1000:
            raise _ApiError(400, -1130, "Invalid data sent for a parameter: limit.")
        start = _opt_int(query, "startTime")
        end = _opt_int(query, "endTime")
        newest = start is None
        lo = start if start is not None else 0
        hi = min(end if end is not None else self.now_ms, self.now_ms)
        out: list[dict] = []
        for sym in symbols:
            rec = self._funding.get((family, sym))
            if rec is not None:
                out.extend(rec.select(sym, lo, hi, limit, newest))
        if len(symbols) > 1:
            out.sort(key=lambda r: r["fundingTime"])
            out = out[-limit:] if newest else out[:limit]
        return out


def _opt_int(query: dict, name: str) -> int | None:
    value = query.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise _ApiError(400, -1100, f"Illegal characters found in parameter '{name}'.") from None


def _int_param(query: dict, name: str, default: int) -> int:
    value = _opt_int(query, name)
    return default if value is None else value
