"""``compare``: a legacy BHDS data dir against ours, every difference classified.

``compare_dirs`` discovers the file pairs (``discovery``), compares each pair in a worker
process (``pairs``; one pair in memory at a time per worker), classifies every difference
(``explain``: equal, within tolerance, explained by a documented fix, unexplained) and returns
a ``CompareReport`` that ``report`` renders as text, JSON or Markdown. See docs/compare.md.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

from crypto_lakehouse import storage
from crypto_lakehouse.compare import explain
from crypto_lakehouse.compare.discovery import KINDS, discover
from crypto_lakehouse.compare.model import (
    CLASSES,
    EXPLAINED,
    UNEXPLAINED,
    Difference,
    PairResult,
    iso,
)
from crypto_lakehouse.compare.pairs import Options, compare_pair
from crypto_lakehouse.layout import TRADE_TYPES

__all__ = ["CompareReport", "Options", "compare_dirs"]


@dataclass
class CompareReport:
    legacy_dir: str
    new_dir: str
    settings: dict
    problems: list[str] = field(default_factory=list)  # argument-level, each unexplained
    pairs: list[PairResult] = field(default_factory=list)

    def differences(self) -> list[Difference]:
        return [d for p in self.pairs for d in p.differences]

    @property
    def unexplained(self) -> list[Difference]:
        return [d for d in self.differences() if d.status == UNEXPLAINED]

    @property
    def explained(self) -> list[Difference]:
        return [d for d in self.differences() if d.status == EXPLAINED]

    def exit_code(self, strict: bool = False) -> int:
        if self.problems or self.unexplained:
            return 1
        return 1 if strict and self.explained else 0

    def summary(self) -> list[dict]:
        """Per trade type and file kind: files and differences counted per class."""
        rows = {}
        for p in self.pairs:
            key = (p.trade_type, p.kind)
            row = rows.setdefault(
                key,
                {
                    "trade_type": p.trade_type,
                    "kind": p.kind,
                    "files": dict.fromkeys(CLASSES, 0),
                    "differences": dict.fromkeys(CLASSES[1:], 0),
                },
            )
            row["files"][p.status] += 1
            for d in p.differences:
                row["differences"][d.status] += 1
        order = {k: i for i, k in enumerate(KINDS)}
        return sorted(
            rows.values(), key=lambda r: (TRADE_TYPES.index(r["trade_type"]), order[r["kind"]])
        )

    def fix_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for d in self.explained:
            out[d.fix] = out.get(d.fix, 0) + 1
        return dict(sorted(out.items()))


def jobs_problem(jobs) -> str | None:
    """None for a usable number of worker processes, else why not (0 would compare
    nothing in no process; it is not read as 1)."""
    if isinstance(jobs, int) and not isinstance(jobs, bool) and jobs >= 1:
        return None
    return f"{jobs!r} is not a number of processes: an integer >= 1"


def _run(args):
    pair, legacy, ours, options = args
    return compare_pair(pair, legacy, ours, options)


def _worker_start(legacy, ours) -> dict:
    """How the worker processes start. With an s3:// side they are spawned, with this
    process's storage settings: discovery has used the S3 client here, and a forked worker
    inherits its open connections, which several workers then read at once (before
    2026-12-06, ``--jobs 2`` on a bucket reported intact files as unreadable: "Couldn't
    deserialize thrift"). Local dirs: forked, as before (no client state to share)."""
    if not (storage.is_remote(legacy) or storage.is_remote(ours)):
        return {}
    return dict(
        mp_context=multiprocessing.get_context("spawn"),
        initializer=storage.configure,
        initargs=(storage.settings(),),
    )


def compare_dirs(
    legacy_dir,
    new_dir,
    *,
    interval: str = "1m",
    trade_types=TRADE_TYPES,
    symbols=None,
    options: Options | None = None,
    jobs: int = 1,
) -> CompareReport:
    problem = jobs_problem(jobs)
    if problem:
        raise ValueError(f"jobs: {problem}")
    # Either dir may be local (Path) or s3:// (ObjectPath): crypto_lakehouse.storage.
    legacy, ours = storage.data_path(legacy_dir), storage.data_path(new_dir)
    explain.clear_caches()
    options = options or Options()
    found = discover(
        legacy, ours, interval=interval, trade_types=tuple(trade_types), symbols=symbols
    )
    report = CompareReport(
        str(legacy),
        str(ours),
        {
            "interval": interval,
            "trade_types": list(trade_types),
            "symbols": sorted(symbols) if symbols else None,
            "price_tolerance": options.price_tolerance,
            "funding_tolerance": options.funding_tolerance,
        },
        problems=found.problems,
    )
    if options.windowed:
        report.settings["start"] = iso(options.start_ms)
        report.settings["end"] = iso(options.end_ms)
    work = [(pair, legacy, ours, options) for pair in found.pairs]
    if jobs > 1 and len(work) > 1:
        with ProcessPoolExecutor(max_workers=jobs, **_worker_start(legacy, ours)) as pool:
            results = list(pool.map(_run, work, chunksize=1))
    else:
        results = [_run(w) for w in work]
    # None: a pair without a row in the window, not compared.
    report.pairs = [r for r in results if r is not None]
    if work and not report.pairs:  # a comparison of nothing must never pass
        report.problems.append(
            f"no rows compared: no file of either dir holds a row {_window(options)}"
        )
    return report


def _window(options: Options) -> str:
    """The window in words: ``from A on``, ``before B``, ``from A to before B``."""
    if options.end_ms is None:
        return f"from {iso(options.start_ms)} on"
    if options.start_ms is None:
        return f"before {iso(options.end_ms)}"
    return f"from {iso(options.start_ms)} to before {iso(options.end_ms)}"
