"""Kline interval strings ("1m", "5m", "1h", "1d", ...) as milliseconds."""

from __future__ import annotations

import re

from crypto_lakehouse.datasets import FUTURES_MARKETS

_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_INTERVAL_RE = re.compile(r"^(\d+)([smhdw])$")
DAY_MS = 86_400_000


def duration_ms(text) -> int | None:
    """Length in ms of a ``<n><unit>`` string, zero allowed (a window offset ``0m`` or
    ``0h``); None for anything else."""
    m = _INTERVAL_RE.match(text) if isinstance(text, str) else None
    return None if m is None else int(m.group(1)) * _UNIT_MS[m.group(2)]


def interval_ms(interval: str) -> int:
    """Length of a fixed interval in ms; raises ValueError naming the bad value."""
    ms = duration_ms(interval)
    if not ms:
        raise ValueError(f"unsupported interval {interval!r} (expected e.g. 1m, 5m, 1h, 1d)")
    return ms


# Weekly candles start on Mondays; the Unix epoch was a Thursday.
_WEEK_MS = 7 * DAY_MS
_WEEK_ORIGIN_MS = 4 * DAY_MS


def grid_origin(step_ms: int) -> int:
    return _WEEK_ORIGIN_MS if step_ms % _WEEK_MS == 0 else 0


def grid_offset(ms, step_ms: int):
    """How far each time (ms) lies past its slot of the interval grid (0: on the grid);
    ``ms - grid_offset(ms, step)`` is the time floored onto the grid. Here rather than in
    ``parse.validate`` (which re-exports it): the REST fill and gen_kline use it, and
    importing that module costs them the CSV reader and ``pyarrow.compute``, ~0.06 s per
    job process (issue 11)."""
    return (ms - grid_origin(step_ms)) % step_ms


def candles_per_day(interval: str) -> int:
    """Expected candle count of a complete UTC day (1440 at 1m)."""
    return DAY_MS // interval_ms(interval)


# Binance's kline intervals (archive directories and the REST `interval` parameter), in
# increasing length. `1mo` is a calendar month: its length varies, so it has no entry in
# interval_ms and the pipeline (a fixed-step candle grid) cannot produce or resample it.
BINANCE_INTERVALS = (
    "1s",
    "1m",
    "3m",
    "5m",
    "15m",
    "30m",
    "1h",
    "2h",
    "4h",
    "6h",
    "8h",
    "12h",
    "1d",
    "3d",
    "1w",
    "1mo",
)
CALENDAR_INTERVALS = {
    "1mo": "1mo is a calendar month (28 to 31 days): the pipeline builds fixed-length "
    "candles on a regular grid (gap filling, resampling windows and offsets), which a "
    "varying length does not fit; build 1d candles and group them by calendar month instead"
}


_FIXED = [i for i in BINANCE_INTERVALS if i not in CALENDAR_INTERVALS]


# The values each config key accepts: `interval` only those dividing a UTC day (the quality
# record and the REST fill work per day); a resample target also 3d, not 1w (epoch-aligned
# weekly windows would start on Thursdays, crypto_lakehouse.resample.targets).
BASE_INTERVALS = tuple(i for i in _FIXED if DAY_MS % interval_ms(i) == 0)
RESAMPLE_INTERVALS = tuple(i for i in _FIXED if not i.endswith("w"))


def check_binance_interval(key: str, value, usable=RESAMPLE_INTERVALS) -> str | None:
    """None when ``value`` is a Binance kline interval the pipeline can build, else a
    message naming ``key`` and listing the values valid for it (``usable``)."""
    if value in CALENDAR_INTERVALS:
        return f"config key {key!r}: {value!r} is not supported: {CALENDAR_INTERVALS[value]}"
    if value not in BINANCE_INTERVALS:
        return (
            f"config key {key!r}: {value!r} is not a Binance kline interval; "
            f"valid values: {', '.join(usable)}"
        )
    return None


# Binance intervals a resample target cannot be, with the reason.
UNALIGNED_INTERVALS = {
    "1w": "the resample windows are aligned on the epoch, so weekly windows would start "
    "on Thursdays (1970-01-01 was one), not on Mondays as Binance's weekly candles do; "
    "resample to 1d and group the days by week instead"
}


def check_resample_interval(key: str, value) -> str | None:
    """None when ``value`` can be a resample target's interval, else a message naming
    ``key``: the valid values, or why a Binance interval (``1w``, ``1mo``) is refused."""
    if value in UNALIGNED_INTERVALS:
        return f"config key {key!r}: {value!r} is not supported: {UNALIGNED_INTERVALS[value]}"
    return check_binance_interval(key, value, RESAMPLE_INTERVALS)


# Intervals Binance publishes for spot only: no futures archive folder (binance-facts §2, the
# Gen 4 path reference) and no futures REST interval (fapi/dapi answer -1120 Invalid interval).
SPOT_ONLY_INTERVALS = ("1s",)
FUTURES_TRADE_TYPES = FUTURES_MARKETS


def check_interval_trade_types(interval: str, trade_types) -> str | None:
    """None unless ``interval`` exists for spot only and ``trade_types`` names a futures
    trade type: Binance has no such klines for it, so its every symbol would end up with
    nothing (no archive file to list, every REST request refused)."""
    futures = [t for t in trade_types if t in FUTURES_TRADE_TYPES]
    if interval not in SPOT_ONLY_INTERVALS or not futures:
        return None
    return (
        f"config key 'interval': Binance publishes {interval} klines for spot only, and "
        f"config key 'trade_types' lists {', '.join(futures)} (no {interval} archive files, "
        f"REST answers 'Invalid interval'); with interval {interval} set trade_types: [spot], "
        "and build the futures at 1m or coarser in a data_dir of their own"
    )


def check_base_interval(value: str) -> str | None:
    """None when ``value`` can be the pipeline's base interval (config key ``interval``)."""
    problem = check_binance_interval("interval", value, BASE_INTERVALS)
    if problem is None and DAY_MS % interval_ms(value):
        fitting = BASE_INTERVALS
        hint = f" (resample.targets can produce {value})" if value.endswith("d") else ""
        return (
            f"config key 'interval': {value!r} is longer than a UTC day, which the quality "
            f"record and the REST fill work in; valid values: {', '.join(fitting)}{hint}"
        )
    return problem
