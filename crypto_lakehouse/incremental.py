"""Skip a per-symbol rebuild when none of its inputs changed (quirk Q18 fixed).

Snakemake reruns a job whenever an upstream job ran, even if that job rewrote identical
files. The REST jobs run every day (the recent tail moves), so without this every symbol,
including delisted ones, would be regenerated and resampled daily. A job wrapped here
fingerprints its input files and parameters; when they match the last successful run and
every output that run reported still exists, it rewrites the same report and returns.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Callable, Iterable

from crypto_lakehouse import io, layout, storage

log = logging.getLogger(__name__)

# Files up to this size are fingerprinted by content (a rewrite with the same bytes is no
# change); larger ones by size and modification time (hashing years of partitions on every
# run would cost more than the rebuild saves).
CONTENT_HASH_MAX_BYTES = 1 << 20


def _expand(paths: Iterable[str | Path]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        p = storage.data_path(p)
        if storage.is_file(p):
            files.append(p)
        else:  # a folder (none on S3 without objects below it: then no files)
            files.extend(storage.list_files(p, recursive=False, suffix=".pqt"))
    return files


def fingerprint(inputs: Iterable[str | Path], params: dict) -> str:
    """Digest of the input files (by content, or size and mtime when large) and params."""
    h = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode())
    for path in _expand(inputs):
        size, mtime_ns = storage.stat(path) or (0, 0)
        h.update(str(path).encode())
        if size <= CONTENT_HASH_MAX_BYTES:
            h.update(hashlib.sha256(storage.read_bytes(path)).digest())
        else:
            h.update(f"{size}:{mtime_ns}".encode())
    return h.hexdigest()


def run_unless_unchanged(
    *,
    stage: str,
    data_dir: str | Path,
    trade_type: str,
    dataset: str,
    symbol: str,
    inputs: Iterable[str | Path],
    params: dict,
    output_files: Callable[[dict], list[str]],
    report_path: str | Path,
    stats_path: str | Path,
    build: Callable[[], dict],
) -> dict:
    """Run ``build`` (which writes report and stats) unless nothing changed since the last
    successful run; ``output_files(report)`` lists the report's outputs relative to data_dir."""
    state_file = layout.state_path(data_dir, stage, trade_type, dataset, symbol)
    digest = fingerprint(inputs, params)
    state = storage.read_state(state_file)
    if state.get("fingerprint") == digest and "report" in state:
        outputs = output_files(state["report"])
        if all(storage.exists(storage.join(data_dir, rel)) for rel in outputs):
            io.write_json(report_path, state["report"])
            stats = {
                "skipped_unchanged": 1,
                "files_written": 0,
                "files_held": len(outputs),
                "seconds": {"total": 0.0},
            }
            io.write_json(stats_path, stats)
            log.info(
                "%s %s %s: inputs unchanged, %d outputs kept",
                stage,
                trade_type,
                symbol,
                len(outputs),
            )
            return stats
    storage.delete(state_file)  # a failed build must not leave a stale "unchanged"
    stats = build()
    report = io.read_json(report_path)
    # The files the symbol holds now, written or kept: what the report's checks count
    # (a run that skips a symbol still holds its validated files).
    stats = dict(io.read_json(stats_path, default=None) or stats or {})
    stats["files_held"] = len(output_files(report))
    io.write_json(stats_path, stats)
    storage.write_json(state_file, {"fingerprint": digest, "report": report})
    return stats
