"""``crypto-lakehouse verify``: find the Parquet files of a data dir that cannot be read.

Snakemake's outputs are the run's reports, so a data file damaged outside a run (a disk
fault, a copy stopped half-way, a file truncated by hand) goes unnoticed until a stage reads
it, and a file no stage reads again (an old generated file, a candle day from aggTrades) is
never noticed at all. This reads the footer of every Parquet file of the three data layers
(``parsed_data``, ``api_data``, ``results_data``): a footer pyarrow cannot decode is the
mark of a file cut short or overwritten, the common damage. (It does not decode every page:
a bit flip inside a page is found only by reading the file.)

``remove``: the damaged files are deleted. Every file of these layers is rebuilt when it is
missing by a run that forces the downloads (README, "Lost or damaged files"), so the repair
is one more command.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from crypto_lakehouse import storage

LAYERS = ("parsed_data", "api_data", "results_data")
PARQUET_SUFFIX = ".pqt"
REPAIR_COMMAND = "snakemake --cores all --forcerun aws_download_shard"


@dataclass
class Verdict:
    data_dir: str
    checked: dict[str, int] = field(default_factory=dict)  # files per layer
    damaged: dict[str, str] = field(default_factory=dict)  # path below data_dir -> error
    unchecked: dict[str, str] = field(default_factory=dict)  # the storage failed: unknown
    removed: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        """0: every file read; 1: damaged files (removed or not) or files not checked."""
        return 1 if self.damaged or self.unchecked else 0

    def as_dict(self) -> dict:
        return {
            "data_dir": self.data_dir,
            "checked": self.checked,
            "damaged": self.damaged,
            "unchecked": self.unchecked,
            "removed": self.removed,
            "seconds": self.seconds,
        }


def _footer_problem(path) -> tuple[str, str] | None:
    """None when the footer reads; else ("damaged" | "unchecked", the error)."""
    try:
        storage.parquet_metadata(path)
    except Exception as exc:
        if storage.is_damaged_file_error(exc):
            return "damaged", f"{type(exc).__name__}: {exc}"
        if isinstance(exc, FileNotFoundError):
            return None  # removed since the listing: nothing to say about it
        return "unchecked", f"{type(exc).__name__}: {exc}"
    return None


# Footers in flight at most per worker: the paths are walked folder by folder, so memory
# stays bounded by the largest folder however many files the data dir holds.
BATCH_PER_JOB = 64


def verify(data_dir, *, remove: bool = False, jobs: int = 8) -> Verdict:
    """Read the footer of every Parquet file of the data layers (``jobs`` at once: on S3
    each is a request); ``remove`` deletes the damaged ones."""
    started = time.monotonic()
    root = storage.data_path(data_dir)
    verdict = Verdict(data_dir=str(data_dir))
    jobs = max(1, jobs)

    def check(batch: list) -> None:
        for path, problem in zip(batch, pool.map(_footer_problem, batch), strict=True):
            if problem is not None:
                kind, error = problem
                rel = str(path)[len(str(root)) :].lstrip("/")
                getattr(verdict, kind)[rel] = error

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for layer in LAYERS:
            verdict.checked[layer] = 0
            batch: list = []
            for path in storage.walk_files(root / layer, suffix=PARQUET_SUFFIX):
                verdict.checked[layer] += 1
                batch.append(path)
                if len(batch) >= BATCH_PER_JOB * jobs:
                    check(batch)
                    batch = []
            check(batch)
    if remove:
        for rel in verdict.damaged:
            storage.delete(root / rel)
            verdict.removed.append(rel)
    verdict.seconds = round(time.monotonic() - started, 3)
    return verdict


def render(verdict: Verdict) -> str:
    total = sum(verdict.checked.values())
    layers = ", ".join(f"{layer} {n}" for layer, n in verdict.checked.items())
    lines = [
        f"verify {verdict.data_dir}: {total} Parquet file(s) read in {verdict.seconds:.1f} s "
        f"({layers}); {len(verdict.damaged)} damaged"
    ]
    if verdict.damaged:
        lines.append("damaged (the footer cannot be read):")
        lines += [f"  {rel}: {error}" for rel, error in verdict.damaged.items()]
    if verdict.unchecked:
        lines.append("not checked (the storage failed; run again):")
        lines += [f"  {rel}: {error}" for rel, error in verdict.unchecked.items()]
    if verdict.removed:
        lines.append(
            f"removed {len(verdict.removed)} file(s); rebuild them with: {REPAIR_COMMAND} "
            "(and the config of the run that wrote them)"
        )
    elif verdict.damaged:
        lines.append(
            f"to repair: run this command again with --remove, then {REPAIR_COMMAND} "
            "(and the config of the run that wrote them)"
        )
    return "\n".join(lines) + "\n"
