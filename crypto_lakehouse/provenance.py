"""Where each day's candles come from: archive, REST, both, or neither (docs/provenance.md).

One table per (trade type, interval, symbol) at ``layout.provenance_path``, one row per UTC day
from the symbol's first archived day to ``end_date``:

| column | meaning |
|---|---|
| ``day`` | UTC date |
| ``archive_rows`` | candles of that day in ``parsed_data`` |
| ``rest_rows`` | candles in the ``api_data`` day file (0 when absent or empty) |
| ``rows`` | distinct candles of the day in both sources together |
| ``expected_rows`` | candles of a complete day (1440 at 1m) |
| ``rest_fetched`` | an ``api_data`` day file exists (the REST answer was stored, maybe empty) |
| ``complete`` | ``rows >= expected_rows`` |
| ``source`` | see ``SOURCES`` |
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, timezone

import numpy as np
import pyarrow as pa

from crypto_lakehouse.intervals import DAY_MS

# Decision order matters: the first matching rule names the day.
SOURCES = (
    "archive",  # the archive alone has the complete day
    "pending",  # not fetched yet: the day is still open (or later), or its fetch failed
    "missing",  # neither source has a candle (delisted, not yet listed, exchange downtime)
    "rest",  # only REST has candles for the day
    "archive_partial",  # a short archive day that REST could not complete (empty answer)
    "mixed",  # archive rows completed (or extended) by REST rows
)

PROVENANCE_SCHEMA = pa.schema(
    [
        ("day", pa.date32()),
        ("archive_rows", pa.int64()),
        ("rest_rows", pa.int64()),
        ("rows", pa.int64()),
        ("expected_rows", pa.int64()),
        ("rest_fetched", pa.bool_()),
        ("complete", pa.bool_()),
        ("source", pa.string()),
    ]
)

_EPOCH = date(1970, 1, 1)


def day_number(d: str | date) -> int:
    """Days since 1970-01-01 of an ISO date string or a date."""
    if isinstance(d, str):
        d = date.fromisoformat(d)
    return (d - _EPOCH).days


def day_iso(n: int) -> str:
    return date.fromordinal(_EPOCH.toordinal() + int(n)).isoformat()


def ms_iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _by_day(counts: Mapping, days: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(count per day of ``days``, 0 when absent; whether the day is present)."""
    values = np.zeros(len(days), dtype=np.int64)
    present = np.zeros(len(days), dtype=bool)
    if len(counts):
        keys = np.fromiter((int(k) for k, _ in counts.items()), np.int64, len(counts))
        vals = np.fromiter((int(v) for _, v in counts.items()), np.int64, len(counts))
        pos = keys - days[0]
        inside = (pos >= 0) & (pos < len(days))
        values[pos[inside]] = vals[inside]
        present[pos[inside]] = True
    return values, present


def build_provenance(
    *,
    first_day: int,
    last_day: int,
    last_complete_day: int,
    expected_rows: int,
    archive_rows: Mapping,
    rest_rows: Mapping,
    union_rows: Mapping | None = None,
) -> pa.Table:
    """One row per day in ``[first_day, last_day]`` (day numbers).

    ``archive_rows`` and ``rest_rows`` map day numbers to counts (a dict or a pandas
    Series); a day in ``rest_rows`` (even with 0) has a stored REST file. ``union_rows``
    gives the distinct candle count of days present in both sources; other days add the two
    counts (one of them is 0).
    """
    if last_day < first_day:
        return PROVENANCE_SCHEMA.empty_table()
    days = np.arange(first_day, last_day + 1, dtype=np.int64)
    arch, _ = _by_day(archive_rows, days)
    rest, fetched = _by_day(rest_rows, days)
    rows = arch + rest
    if union_rows is not None and len(union_rows):
        both, in_both = _by_day(union_rows, days)
        rows = np.where(in_both, both, rows)
    rules = [
        arch >= expected_rows,
        (days > last_complete_day) | ~fetched,
        (arch == 0) & (rest == 0),
        arch == 0,
        rest == 0,
    ]
    source = np.select(rules, list(SOURCES[:5]), default=SOURCES[5])
    return pa.table(
        {
            "day": pa.array(days.astype("int32"), pa.int32()).cast(pa.date32()),
            "archive_rows": arch,
            "rest_rows": rest,
            "rows": rows,
            "expected_rows": np.full(len(days), expected_rows, dtype=np.int64),
            "rest_fetched": fetched,
            "complete": rows >= expected_rows,
            "source": pa.array(source.astype(str), pa.string()),
        },
        schema=PROVENANCE_SCHEMA,
    )


def day_ranges(day_numbers) -> list[list[str]]:
    """Collapse day numbers into ``[[first, last], ...]`` runs of consecutive ISO dates."""
    d = np.sort(np.asarray(day_numbers, dtype=np.int64))
    if d.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(d) != 1)
    starts = np.concatenate(([d[0]], d[breaks + 1]))
    ends = np.concatenate((d[breaks], [d[-1]]))
    return [[day_iso(a), day_iso(b)] for a, b in zip(starts, ends, strict=True)]


def summarize_provenance(
    table: pa.Table, *, last_candle_ms: int | None, interval_ms: int, end_day: int
) -> dict:
    """Deterministic per-symbol figures for the report (no run times)."""
    day_nums = table["day"].cast(pa.int32()).to_numpy().astype(np.int64)
    source = table["source"].to_numpy()
    complete = table["complete"].to_numpy().astype(bool)
    out = {
        "days": table.num_rows,
        "days_by_source": {s: int((source == s).sum()) for s in SOURCES},
        "days_incomplete": int((~complete).sum()),
        "missing_days": day_ranges(day_nums[source == "missing"]),
        "pending_days": day_ranges(day_nums[source == "pending"]),
        "last_candle": None,
        "freshness_lag_minutes": None,
    }
    if last_candle_ms is not None:
        horizon = (end_day + 1) * DAY_MS
        out["last_candle"] = ms_iso(last_candle_ms)
        out["freshness_lag_minutes"] = int((horizon - (last_candle_ms + interval_ms)) // 60_000)
    return out
