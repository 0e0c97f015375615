"""Structural checks of one parsed archive, and quarantining the archives that fail them.

A file that fails is moved out of ``aws_data`` (zip and CHECKSUM) to the quarantine folder,
loses its ``.verified`` marker and gets a ``.reason`` file; the job carries on with the
other files. Messages name the bucket key and the first bad line (1-based line of the CSV,
header included), so a person can open the file at that line.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from crypto_lakehouse.intervals import DAY_MS, grid_offset, grid_origin  # noqa: F401 (re-exported)
from crypto_lakehouse.parse.csv_reader import ArchiveDefect

# Binance stamps in µs from 2025-01-01 on spot (binance-facts §4.1): anything at or above
# 1e15 cannot be a ms epoch of this era, so the unit is decided per file from the maximum.
MICROSECOND_THRESHOLD = 10**15

_PERIOD_RE = re.compile(r"-(\d{4})-(\d{2})(?:-(\d{2}))?\.zip$")


@dataclass(frozen=True)
class Period:
    """The UTC day or month an archive covers, from its file name."""

    start_ms: int
    end_ms: int  # exclusive
    label: str  # "2020-01-01" or "2020-01"

    @property
    def is_month(self) -> bool:
        return len(self.label) == 7

    @property
    def month(self) -> str:
        """Partition name ``YYYYMM``."""
        return self.label[:4] + self.label[5:7]

    def day_numbers(self) -> range:
        """Days since the epoch covered by this period."""
        return range(self.start_ms // DAY_MS, self.end_ms // DAY_MS)


def archive_period(key: str, stem_prefix: str) -> Period | None:
    """Period of ``…/{stem_prefix}YYYY-MM[-DD].zip``; None when the name does not fit."""
    name = key.rsplit("/", 1)[-1]
    if not name.startswith(stem_prefix):
        return None
    m = _PERIOD_RE.fullmatch(name, len(stem_prefix) - 1)
    if not m:
        return None
    return _period(int(m.group(1)), int(m.group(2)), m.group(3))


def name_period(key: str) -> Period | None:
    """Period of an archive key from the date its file name ends with (``…-YYYY-MM[-DD].zip``,
    any stem); None when it ends with none."""
    m = _PERIOD_RE.search(key.rsplit("/", 1)[-1])
    return _period(int(m.group(1)), int(m.group(2)), m.group(3)) if m else None


def _period(year: int, month: int, day: str | None) -> Period | None:
    if not 1 <= month <= 12:
        return None
    if day is None:
        start = datetime(year, month, 1, tzinfo=timezone.utc)
        days = calendar.monthrange(year, month)[1]
        label = f"{year:04d}-{month:02d}"
    else:
        try:
            start = datetime(year, month, int(day), tzinfo=timezone.utc)
        except ValueError:
            return None
        days = 1
        label = f"{year:04d}-{month:02d}-{int(day):02d}"
    start_ms = int(start.timestamp()) * 1000
    return Period(start_ms, start_ms + days * DAY_MS, label)


def format_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def check_times(
    raw: np.ndarray,
    period: Period,
    step_ms: int | None,
    header_lines: int,
    label: str,
    *,
    reject_duplicates: bool = True,
    copies: np.ndarray | None = None,
) -> np.ndarray:
    """Normalise a time column to ms and check it; returns the ms values.

    With ``step_ms`` (klines), a time off the interval grid is floored onto it: Binance's
    spot files of 2018-02-08 … 02-10 (and some of Dec 2017, Jun/Jul 2018) hold hours of
    candles opening at ``…:14.789`` after an outage, rows the exchange did trade
    (binance-public-data #14, #77; REST answers the same, and ``rest.klines`` floors them
    too). Before 2026-12-06 such a file was quarantined whole.

    Checks (first failing line reported): inside the file's day or month (before and after
    the floor), no repeated time (when ``reject_duplicates``; a floored candle that lands on
    another's minute repeats it). ``copies`` (bool per row): rows that repeat an earlier row
    in every field (``identical_copies``); they are left out of the repeated-time check (the
    caller drops them), so only a repeated time with other values is refused.
    """
    factor = 1000 if int(raw.max()) >= MICROSECOND_THRESHOLD else 1
    ms = raw // factor if factor != 1 else raw
    bad = (ms < period.start_ms) | (ms >= period.end_ms)
    if factor != 1:
        bad |= raw % factor != 0
    if step_ms is not None:
        off = grid_offset(ms, step_ms)
        if off.any():
            ms = ms - off
            bad |= (ms < period.start_ms) | (ms >= period.end_ms)
    first = int(np.argmax(bad)) if bad.any() else None
    dup_first = None
    if reject_duplicates and not bool(np.all(ms[1:] > ms[:-1])):
        rows = np.arange(ms.size) if copies is None else np.flatnonzero(~copies)
        order = rows[np.argsort(ms[rows], kind="stable")]
        repeated = np.flatnonzero(ms[order][1:] == ms[order][:-1]) + 1
        if repeated.size:
            dup_first = int(order[repeated].min())
    if first is None and dup_first is None:
        return ms
    if first is None or (dup_first is not None and dup_first < first):
        line = dup_first + 1 + header_lines
        raise ArchiveDefect(
            f"{label}: line {line}: time {format_ms(int(ms[dup_first]))}"
            f"{_floored_note(raw, factor, ms, dup_first)} repeats",
            line,
        )
    line = first + 1 + header_lines
    if factor != 1 and raw[first] % factor:
        raise ArchiveDefect(
            f"{label}: line {line}: time {int(raw[first])} is in microseconds but not a "
            "whole millisecond",
            line,
        )
    value = int(ms[first])
    raise ArchiveDefect(
        f"{label}: line {line}: time {format_ms(value)} (raw {int(raw[first])})"
        f"{_floored_note(raw, factor, ms, first)} is outside the file's "
        f"{'month' if period.is_month else 'day'} {period.label}",
        line,
    )


def identical_copies(raw: np.ndarray, table: pa.Table) -> np.ndarray | None:
    """Rows that repeat an earlier row of the file in every read field (raw time included);
    None when the times are strictly ascending (no row can repeat another: the usual case).

    Such a row carries no conflict (Binance re-publishing a minute twice), so it is dropped,
    not refused; a repeated time with any other value stays a defect (``check_times``).
    Vectorised: the rows sorted by raw time (stable), each compared with its predecessor.
    """
    if bool(np.all(raw[1:] > raw[:-1])):
        return None
    order = np.argsort(raw, kind="stable")
    same = raw[order][1:] == raw[order][:-1]
    for column in table.columns:
        if not same.any():
            break
        values = column.to_numpy()[order]
        same &= values[1:] == values[:-1]
    copies = np.zeros(raw.size, dtype=bool)
    copies[order[1:][same]] = True
    return copies


def _floored_note(raw: np.ndarray, factor: int, ms: np.ndarray, i: int) -> str:
    """How row ``i``'s time read before it was floored onto the interval grid, if it was."""
    before = int(raw[i] // factor)
    if before == int(ms[i]):
        return ""
    return f" (opening at {format_ms(before)}, floored onto the interval grid)"


def check_finite(table: pa.Table, header_lines: int, label: str) -> None:
    """Every float column finite (pyarrow reads "nan" and "inf" as floats)."""
    floats = [(n, c) for n, c in zip(table.column_names, table.columns, strict=True)
              if pa.types.is_floating(c.type)]  # fmt: skip
    # A NaN or infinity anywhere makes the grand total non-finite: one cheap test first,
    # on the columns as they are (a chunked column's numpy copy, ~20 MB per column of a
    # month of 1s, is made only when a value is not finite).
    if np.isfinite(sum(float(pc.sum(c).as_py() or 0.0) for _, c in floats)):
        return
    first: tuple[int, str] | None = None
    for name, column in floats:
        values = column.to_numpy()
        finite = np.isfinite(values)
        if not finite.all():
            i = int(np.argmin(finite))
            if first is None or i < first[0]:
                first = (i, f"field {name!r} is not a finite number: {values[i]}")
    if first is not None:
        line = first[0] + 1 + header_lines
        raise ArchiveDefect(f"{label}: line {line}: {first[1]}", line)


# ---------------------------------------------------------------- quarantine
def _with_suffix(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)
