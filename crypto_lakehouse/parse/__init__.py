"""aws_parse: verified Binance archives to the legacy Parquet layout, incrementally.

``klines`` writes monthly partitions, ``funding`` one file per symbol. This module holds
what both share: choosing which archives may be read (listed in the download report AND
carrying a ``.verified`` marker, and not already found defective with the same content),
the private state between runs, and run timings.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crypto_lakehouse import datasets, layout, storage

log = logging.getLogger(__name__)

STAGE = "aws_parse"


def load_download_report(download_report: str | Path | dict | None) -> dict:
    """The download job's report (path or already-loaded dict); ``{}`` when there is none."""
    if download_report is None:
        return {}
    if isinstance(download_report, dict):
        return download_report
    from crypto_lakehouse.shards import DamagedInput, read_report

    try:
        return read_report(download_report, "aws_download")
    except DamagedInput as exc:
        if exc.missing:  # as before: no download report, nothing to parse
            return {}
        raise


def verified_marker(zip_path: Path) -> Path:
    return layout.verified_marker(zip_path)


@dataclass
class ArchiveSelection:
    """The archives of one symbol this run may use."""

    usable: dict[str, str] = field(default_factory=dict)  # key -> sha256
    unverified: list[str] = field(default_factory=list)  # listed, no .verified or no zip
    known_bad: dict[str, dict] = field(default_factory=dict)  # key -> {"sha256", "reason"}
    ignored: list[str] = field(default_factory=list)  # listed, but not this dataset's names
    upstream_quarantined: dict[str, str] = field(default_factory=dict)


def select_archives(
    report: dict,
    data_dir: str | Path,
    previously_bad: dict[str, dict],
    belongs: Callable[[str], bool],
) -> ArchiveSelection:
    """Listed + verified archives, minus those parse already quarantined with the same sha256.

    ``belongs(key)`` tells whether a key is an archive of this symbol and dataset. A defect
    the pipeline no longer takes for one (``quarantine.released``: kline candles off the
    interval grid, quarantined before 2026-12-06) is forgotten: the archive is read again.
    """
    from crypto_lakehouse.quarantine import released

    previously_bad = {k: v for k, v in previously_bad.items() if not released(v.get("reason"))}
    sel = ArchiveSelection(upstream_quarantined=dict(report.get("quarantined") or {}))
    listings: dict[str, set[str]] = {}  # one directory listing instead of two stats per file
    for key, entry in sorted((report.get("files") or {}).items()):
        if not key.endswith(".zip") or not belongs(key):
            sel.ignored.append(key)
            continue
        folder, _, name = key.rpartition("/")
        if folder not in listings:
            listings[folder] = storage.file_names(layout.aws_path(data_dir, folder))
        names = listings[folder]
        if not (name in names and name + layout.VERIFIED_SUFFIX in names):
            sel.unverified.append(key)
            continue
        sha = (entry or {}).get("sha256") or storage.sha256(layout.aws_path(data_dir, key))
        bad = previously_bad.get(key)
        if bad and bad.get("sha256") == sha:
            sel.known_bad[key] = bad
            continue
        sel.usable[key] = sha
    # A defect found earlier stays on record until the key comes back with new content.
    for key, bad in previously_bad.items():
        if key not in sel.usable:
            sel.known_bad.setdefault(key, bad)
    if sel.ignored:
        log.warning(
            "ignored %d listed keys that are not archives of this dataset", len(sel.ignored)
        )
    return sel


def state_file(data_dir, trade_type: str, dataset: str, symbol: str) -> Path:
    return layout.state_path(data_dir, STAGE, trade_type, dataset, symbol)


def funding_written(state: dict) -> bool:
    """Whether a funding parse state says this pipeline wrote the funding file (older
    states: it had rows)."""
    return bool(state.get("written", bool((state.get("output") or {}).get("rows"))))


def wrote_funding_file(data_dir, trade_type: str, symbol: str) -> bool:
    """Whether ``parsed_data/{T}/funding/{SYM}.pqt`` is the one this pipeline wrote. One it
    did not write (a legacy BHDS file used in place) is never overwritten or removed: its
    rows may be nobody's to rebuild."""
    return funding_written(storage.read_state(state_file(data_dir, trade_type, "funding", symbol)))


def wrote_partition(
    data_dir, trade_type: str, symbol: str, interval: str, path, dataset: str = "klines"
) -> bool:
    """Whether the partition at ``path`` (of ``dataset``, a kline-like one) is one this
    pipeline wrote (its month is in the parse state); never overwritten or removed
    otherwise, as for funding files."""
    state = storage.read_state(
        state_file(data_dir, trade_type, datasets.tag(dataset, interval), symbol)
    )
    return Path(path).stem in (state.get("partitions") or {})


def reported_quarantine(sel: ArchiveSelection, found_now: dict[str, str]) -> dict[str, str]:
    """Every known-defective key with its reason: the download's, then parse's own."""
    merged = dict(sel.upstream_quarantined)
    merged.update({k: v["reason"] for k, v in sel.known_bad.items()})
    merged.update(found_now)
    return dict(sorted(merged.items()))


def own_quarantine(sel: ArchiveSelection, found_now: dict) -> list[str]:
    """The keys of ``reported_quarantine`` that the parse quarantined (this run or an
    earlier one: its state's record), not the download. A zip the parse moved to quarantine
    is listed by the next download report as quarantined too (``archive.sync``), so the
    download's list alone does not tell which stage found the defect."""
    return sorted(set(sel.known_bad) | set(found_now))


class Timer:
    """Wall and CPU seconds spent per named step, summed over the run.

    CPU time is kept too because the machines are shared: it is the steadier figure.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.cpu_seconds: dict[str, float] = defaultdict(float)
        self._start = time.perf_counter()
        self._start_cpu = time.process_time()

    @contextmanager
    def step(self, name: str):
        t, c = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - t
            self.cpu_seconds[name] += time.process_time() - c

    def total(self) -> float:
        return time.perf_counter() - self._start

    def total_cpu(self) -> float:
        return time.process_time() - self._start_cpu


def throughput_stats(timer: Timer, csv_bytes: int) -> dict[str, Any]:
    total, cpu = timer.total(), timer.total_cpu()
    mb = csv_bytes / 1e6
    return {
        "csv_mb": round(mb, 3),
        "seconds": round(total, 4),
        "cpu_seconds": round(cpu, 4),
        "mb_per_s": round(mb / total, 3) if total > 0 else None,
        "timings": {k: round(v, 4) for k, v in sorted(timer.seconds.items())},
        "cpu_timings": {k: round(v, 4) for k, v in sorted(timer.cpu_seconds.items())},
    }
