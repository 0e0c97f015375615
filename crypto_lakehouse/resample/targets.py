"""Resample targets and aggregations, validated once at config time (legacy §9 offsets)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from crypto_lakehouse.intervals import interval_ms

# Units whose windows are plain multiples of a fixed length from the epoch. Weeks are left
# out on purpose: epoch-aligned 7-day windows would start on Thursdays, not on Mondays.
_ALLOWED_UNITS = ("m", "h", "d")
_STEP_RE = re.compile(r"^(\d+)([a-z])$")
AGGREGATION_FUNCTIONS = ("first", "last", "max", "min", "sum", "mean")
# The generated klines' columns that keep their legacy aggregation (``resample.aggregations``
# cannot change it): the kline columns (crypto_lakehouse.schema.KLINE_SCHEMA, without its
# pyarrow import: the workflow's main process checks the config with these names), the
# VWAP column ``avg_price_{interval}`` and the funding columns.
KLINE_COLUMN_NAMES = (
    "candle_begin_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "quote_volume",
    "trade_num",
    "taker_buy_base_asset_volume",
    "taker_buy_quote_asset_volume",
)
FUNDING_COLUMN_NAMES = ("funding_rate", "funding_price", "funding_time")


def reserved_columns(interval: str) -> tuple[str, ...]:
    """The generated klines' columns at base ``interval`` whose aggregation is legacy's."""
    return (*KLINE_COLUMN_NAMES, f"avg_price_{interval}", *FUNDING_COLUMN_NAMES)


@dataclass(frozen=True)
class Offset:
    name: str  # the directory name, e.g. "15m"
    ms: int


@dataclass(frozen=True)
class Target:
    interval: str
    interval_ms: int
    offsets: tuple[Offset, ...]


def _parse(value, what: str, i: int) -> tuple[int, str]:
    m = _STEP_RE.match(value) if isinstance(value, str) else None
    if not m or m.group(2) not in _ALLOWED_UNITS:
        raise ValueError(
            f"resample target #{i}: {what} {value!r} is not a number followed by one of "
            f"{'/'.join(_ALLOWED_UNITS)} (e.g. '1h', '5m')"
        )
    return int(m.group(1)), m.group(2)


def offsets_of(interval: str, offset_step: str, i: int = 0) -> tuple[Offset, ...]:
    """``0m`` → one offset ``0m``; otherwise ``RI // step`` offsets named ``f"{k*n}{unit}"``."""
    ri_ms = interval_ms(interval)
    n, unit = _parse(offset_step, "offset_step", i)
    if n == 0:
        if offset_step != "0m":
            raise ValueError(f"resample target #{i}: use offset_step '0m' for a single offset")
        return (Offset("0m", 0),)
    step_ms = interval_ms(offset_step)
    if step_ms >= ri_ms:
        raise ValueError(
            f"resample target #{i}: offset_step {offset_step!r} must be shorter than "
            f"the interval {interval!r}"
        )
    if ri_ms % step_ms:
        raise ValueError(
            f"resample target #{i}: offset_step {offset_step!r} does not divide the "
            f"interval {interval!r}"
        )
    return tuple(Offset(f"{k * n}{unit}", k * step_ms) for k in range(ri_ms // step_ms))


def validate_targets(targets, base_interval: str = "1m") -> list[Target]:
    """Check a list of ``{"interval": "1h", "offset_step": "5m"}``; ValueError on the first
    invalid entry. ``base_interval`` is the interval of the files being resampled."""
    base_ms = interval_ms(base_interval)
    if not isinstance(targets, (list, tuple)) or not targets:
        raise ValueError(f"resample targets must be a non-empty list, got {targets!r}")
    out: list[Target] = []
    for i, entry in enumerate(targets):
        if not isinstance(entry, dict) or set(entry) - {"interval", "offset_step"}:
            raise ValueError(
                f"resample target #{i}: expected {{'interval': ..., 'offset_step': ...}}, "
                f"got {entry!r}"
            )
        if "interval" not in entry or "offset_step" not in entry:
            raise ValueError(f"resample target #{i}: needs both 'interval' and 'offset_step'")
        interval, step = entry["interval"], entry["offset_step"]
        n, _ = _parse(interval, "interval", i)
        if n == 0:
            raise ValueError(f"resample target #{i}: interval {interval!r} must be > 0")
        ri_ms = interval_ms(interval)
        if ri_ms < base_ms:
            raise ValueError(
                f"resample target #{i}: interval {interval!r} is shorter than the base "
                f"interval {base_interval!r}"
            )
        if ri_ms % base_ms:
            raise ValueError(
                f"resample target #{i}: interval {interval!r} is not a multiple of the "
                f"base interval {base_interval!r}"
            )
        offsets = offsets_of(interval, step, i)
        if any(o.ms % base_ms for o in offsets):
            raise ValueError(
                f"resample target #{i}: offset_step {step!r} is not a multiple of the "
                f"base interval {base_interval!r}"
            )
        if any(t.interval == interval for t in out):
            raise ValueError(f"resample target #{i}: interval {interval!r} is listed twice")
        out.append(Target(interval, ri_ms, offsets))
    return out


def validate_aggregations(aggregations, reserved: tuple[str, ...] = ()) -> dict[str, str]:
    """``{column: function}`` for added columns; ValueError names a bad entry."""
    if aggregations is None:
        return {}
    if not isinstance(aggregations, dict):
        raise ValueError(f"aggregations must be a mapping column → function, got {aggregations!r}")
    for column, func in aggregations.items():
        if func not in AGGREGATION_FUNCTIONS:
            raise ValueError(
                f"aggregation for column {column!r}: {func!r} is not one of "
                f"{', '.join(AGGREGATION_FUNCTIONS)}"
            )
        if column in reserved:
            raise ValueError(
                f"aggregation for column {column!r}: legacy columns keep their legacy rule"
            )
    return dict(aggregations)
