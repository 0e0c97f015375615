"""Kline interval strings ("1m", "5m", "1h", "1d", ...) as milliseconds."""

from __future__ import annotations

import re

_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_INTERVAL_RE = re.compile(r"^(\d+)([smhdw])$")
DAY_MS = 86_400_000


def interval_ms(interval: str) -> int:
    """Length of a fixed interval in ms; raises ValueError naming the bad value."""
    m = _INTERVAL_RE.match(interval)
    if not m or int(m.group(1)) == 0:
        raise ValueError(f"unsupported interval {interval!r} (expected e.g. 1m, 5m, 1h, 1d)")
    return int(m.group(1)) * _UNIT_MS[m.group(2)]


def candles_per_day(interval: str) -> int:
    """Expected candle count of a complete UTC day (1440 at 1m)."""
    return DAY_MS // interval_ms(interval)
