"""The parsed archive's candles per UTC day of one symbol, for the REST fill (``rest.klines``).

The fill looks at every day of the history (a short day anywhere is fetched from REST), so it
needs the archive's count per day, the open times of the few days REST also holds, and the
last archive candle. Reading every partition's open times for that made the daily update's
REST cost grow with the history (1.6 M times, ~40 ms, per 3-year symbol and run). The counts
and time range of each partition are kept in a per-symbol record keyed by the partition's
identity (size, mtime), as the gen_kline tail does for its inputs: a daily update reads only
the partitions that changed (the current month) and, for the days REST also holds, the
partitions of those days.

The record is a cache: a missing, unreadable or other-version record is rebuilt from the
partitions, and a partition whose identity changed is read again.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from crypto_lakehouse import datasets, layout, storage
from crypto_lakehouse.intervals import DAY_MS
from crypto_lakehouse.parse import wrote_partition
from crypto_lakehouse.schema import epoch_ms
from crypto_lakehouse.shards import reading_output_of

log = logging.getLogger(__name__)

RECORD_STAGE = "api_download_archive_days"
RECORD_VERSION = 1


def record_path(data_dir, trade_type: str, symbol: str, interval: str) -> Path:
    dataset = datasets.tag(datasets.KLINES.name, interval)
    return layout.state_path(data_dir, RECORD_STAGE, trade_type, dataset, symbol)


def read_times(path) -> np.ndarray:
    """Open times (int64 ms, ascending) of one parsed partition."""
    col = storage.read_parquet(path, columns=["candle_begin_time"])["candle_begin_time"]
    return np.sort(epoch_ms(col).to_numpy(), kind="stable")


def day_counts(times_ms: np.ndarray) -> dict[int, int]:
    """Candles per UTC day number."""
    days = times_ms // DAY_MS
    if days.size and not bool(np.all(days[1:] >= days[:-1])):
        days = np.sort(days, kind="stable")
    # Sorted: one run per day (np.unique would sort again).
    starts = np.flatnonzero(np.r_[True, days[1:] != days[:-1]]) if days.size else days
    counts = np.diff(np.r_[starts, days.size])
    return dict(zip(days[starts].tolist(), counts.tolist(), strict=True))


def _entry(identity: list[int] | None, times: np.ndarray) -> dict:
    return {
        "identity": identity,
        "first_ms": int(times[0]) if times.size else None,
        "last_ms": int(times[-1]) if times.size else None,
        "days": {str(d): n for d, n in day_counts(times).items()},
    }


@dataclass
class ArchiveDays:
    """Per-day candle counts of a symbol's parsed archive, and its times on demand."""

    partitions: dict[Path, dict]  # partition -> {"first_ms", "last_ms", "days"}
    counts: dict[int, int] = field(init=False)
    _times: dict[Path, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.counts = {}
        for entry in self.partitions.values():
            for day, n in entry["days"].items():
                self.counts[int(day)] = self.counts.get(int(day), 0) + n
        self.counts = dict(sorted(self.counts.items()))

    @property
    def empty(self) -> bool:
        return not self.counts

    @property
    def first_ms(self) -> int:
        return min(e["first_ms"] for e in self._nonempty().values())

    def _nonempty(self) -> dict[Path, dict]:
        return {p: e for p, e in self.partitions.items() if e["first_ms"] is not None}

    def _partition_times(self, path: Path) -> np.ndarray:
        if path not in self._times:
            self._times[path] = read_times(path)
        return self._times[path]

    def times_between(self, lo_ms: int, hi_ms: int) -> np.ndarray:
        """Sorted open times in ``[lo_ms, hi_ms)`` (from the partitions that reach it)."""
        parts = []
        for path, entry in self._nonempty().items():
            if entry["first_ms"] < hi_ms and entry["last_ms"] >= lo_ms:
                times = self._partition_times(path)
                lo, hi = np.searchsorted(times, [lo_ms, hi_ms])
                parts.append(times[lo:hi])
        if not parts:
            return np.empty(0, np.int64)
        return np.sort(np.concatenate(parts), kind="stable")

    def last_before(self, horizon_ms: int) -> int | None:
        """The last open time before ``horizon_ms``, None when there is none."""
        best = None
        for path, entry in self._nonempty().items():
            if entry["last_ms"] < horizon_ms:
                last = entry["last_ms"]
            elif entry["first_ms"] < horizon_ms:
                times = self._partition_times(path)
                last = int(times[np.searchsorted(times, horizon_ms) - 1])
            else:
                continue
            best = last if best is None else max(best, last)
        return best


def load(data_dir, trade_type: str, symbol: str, interval: str) -> ArchiveDays:
    """The symbol's archive days: recorded partitions whose identity is unchanged are not
    read; the others are, and the record is updated."""
    path = record_path(data_dir, trade_type, symbol, interval)
    record = storage.read_state(path)  # unreadable: every partition is read again
    known = {}
    if record.get("version") == RECORD_VERSION:
        known = record.get("partitions") or {}
    directory = layout.parsed_klines_dir(data_dir, trade_type, symbol, interval)
    entries, partitions, times = {}, {}, {}
    for part in storage.list_files(directory, recursive=False, suffix=".pqt"):
        identity = storage.stat(part)  # before the read: a file replaced meanwhile is read again
        identity = None if identity is None else list(identity)
        entry = known.get(part.name)
        if entry is None or entry.get("identity") != identity or identity is None:
            wrote = functools.partial(wrote_partition, data_dir, trade_type, symbol, interval, part)
            with reading_output_of("aws_parse", part, wrote):
                times[part] = read_times(part)
            entry = _entry(identity, times[part])
        entries[part.name] = entry
        partitions[part] = entry
    if entries != known:
        # A cache (not fsynced): a lost or torn one means the partitions are read again.
        storage.write_cache_json_if_changed(
            path, {"version": RECORD_VERSION, "partitions": entries}
        )
    return ArchiveDays(partitions, _times=times)
