"""Which of a symbol's archive zips cover a date range.

Dates come from the key (daily ``…-YYYY-MM-DD.zip``, monthly ``…-YYYY-MM.zip``); this
parser would read a non-padded one, but the listing refuses such keys before they get here
(``listing.key_refusal``: only the dataset's exact names, so the archive's
``ADABKRW-1d-2020-8.zip``, binance-facts §1.1, whose CHECKSUM is missing anyway (#469), is
listed under ``refused_files`` and never fetched). With monthly klines enabled, a month that lies completely inside the
range and has a usable monthly zip is taken from it instead of from its daily zips; the
choice is recorded per day (``day_sources``).
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass, field
from datetime import date, timedelta

_KEY_DATE = re.compile(r"-(\d{4})-(\d{1,2})(?:-(\d{1,2}))?\.zip$")


@dataclass(frozen=True)
class ArchiveFile:
    key: str
    monthly: bool
    first_day: date
    last_day: date  # inclusive


@dataclass
class Selection:
    files: list[ArchiveFile] = field(default_factory=list)  # sorted by key
    day_sources: dict[str, str] = field(default_factory=dict)  # ISO day -> key
    ignored: dict[str, str] = field(default_factory=dict)  # key -> reason


def parse_day(value: str | None) -> date | None:
    return None if value in (None, "") else date.fromisoformat(str(value))


def key_period(key: str) -> ArchiveFile:
    """The period a zip covers, from its name; ``ValueError`` names the key otherwise."""
    m = _KEY_DATE.search(key)
    if not m:
        raise ValueError(f"{key}: no -YYYY-MM[-DD].zip date in the file name")
    year, month, day = int(m.group(1)), int(m.group(2)), m.group(3)
    try:
        if day is None:
            first = date(year, month, 1)
            last = date(year, month, calendar.monthrange(year, month)[1])
            return ArchiveFile(key, True, first, last)
        d = date(year, month, int(day))
    except ValueError as exc:
        raise ValueError(f"{key}: invalid date ({exc})") from None
    return ArchiveFile(key, False, d, d)


def _overlaps(f: ArchiveFile, start: date | None, end: date | None) -> bool:
    return (start is None or f.last_day >= start) and (end is None or f.first_day <= end)


def _inside(f: ArchiveFile, start: date | None, end: date | None) -> bool:
    return (start is None or f.first_day >= start) and (end is None or f.last_day <= end)


def select(
    zip_keys,
    start: date | None,
    end: date | None,
    *,
    use_monthly: bool = False,
    record_days: bool = False,
    unusable: set[str] | frozenset[str] = frozenset(),
    monthly_gaps: dict[str, set[date]] | None = None,
) -> Selection:
    """Select the zips to hold for ``[start, end]`` (None = open bound).

    Without ``use_monthly`` every zip overlapping the range is selected (the caller passes
    the keys of one dataset: daily klines, or monthly funding). With it, each month that
    lies completely inside the range and has a monthly zip not in ``unusable`` (e.g.
    quarantined) is taken from that zip instead of its daily zips; the other monthly zips
    are not used. ``monthly_gaps``: days a chosen monthly zip holds no row of (a monthly
    file cut short, binance-public-data #403): their daily zips, if listed, are taken too
    and own those days. ``record_days`` fills ``day_sources``.
    """
    out = Selection()
    daily: list[ArchiveFile] = []
    monthly: list[ArchiveFile] = []
    for key in sorted(set(zip_keys)):
        try:
            f = key_period(key)
        except ValueError as exc:
            out.ignored[key] = str(exc)
            continue
        if _overlaps(f, start, end):
            (monthly if f.monthly else daily).append(f)
    if use_monthly:
        months = {
            (f.first_day.year, f.first_day.month): f
            for f in monthly
            if f.key not in unusable and _inside(f, start, end)
        }
        gaps = monthly_gaps or {}

        def from_daily(f: ArchiveFile) -> bool:
            m = months.get((f.first_day.year, f.first_day.month))
            return m is None or f.first_day in gaps.get(m.key, ())

        chosen = list(months.values()) + [f for f in daily if from_daily(f)]
    else:
        chosen = daily + monthly
    out.files = sorted(chosen, key=lambda f: f.key)
    if record_days:
        for f in sorted(out.files, key=lambda f: (f.monthly, f.key)):
            d = f.first_day
            while d <= f.last_day:
                if _inside(ArchiveFile("", False, d, d), start, end):
                    # Daily zips first: a day of a chosen monthly zip taken from its daily
                    # zip (``monthly_gaps``) is that zip's; of two dailies for one day (odd
                    # keys) the first key wins.
                    out.day_sources.setdefault(d.isoformat(), f.key)
                d += timedelta(days=1)
    return out
