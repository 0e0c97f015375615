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
from typing import Callable, Iterable, Iterator

from crypto_lakehouse import io, layout, storage

log = logging.getLogger(__name__)

# Files up to this size are fingerprinted by content (a rewrite with the same bytes is no
# change); larger ones by size and modification time (hashing years of partitions on every
# run would cost more than the rebuild saves).
CONTENT_HASH_MAX_BYTES = 1 << 20


def _local_versions(p: Path) -> Iterator[tuple[Path, bytes]]:
    """A local input (a file, or a folder: its .pqt files): by content up to
    CONTENT_HASH_MAX_BYTES, else by size and mtime."""
    files = [p] if storage.is_file(p) else storage.list_files(p, recursive=False, suffix=".pqt")
    for path in files:
        size, mtime_ns = storage.stat(path) or (0, 0)
        if size <= CONTENT_HASH_MAX_BYTES:
            yield path, hashlib.sha256(storage.read_bytes(path)).digest()
        else:
            yield path, f"{size}:{mtime_ns}".encode()


def _versions(inputs: Iterable[str | Path]) -> Iterator[tuple[Path, bytes]]:
    """``(file, what tells its content)`` of every input file, in the inputs' order (a
    folder: its .pqt files, sorted). On S3 size and ETag, the store's digest of the content
    (a rewrite of the same bytes keeps it): no download, the files' HEADs at once and a
    folder's entries from its one listing. Reading each small file whole, one input
    after the other, took ~80 round trips per symbol and stage (docs/storage.md)."""
    inputs = [storage.data_path(p) for p in inputs]
    remote = [p for p in inputs if storage.is_remote(p)]
    known = storage.identities(remote, by_listing=False) if remote else {}
    # The rest are folders (none on S3 without objects below it: then no files), listed
    # at once.
    folders = [p for p in remote if known[p] is None]
    listed = dict(
        zip(
            folders,
            storage.concurrently(lambda p: storage.listed_identities(p, suffix=".pqt"), folders),
            strict=True,
        )
    )
    for p in inputs:
        if not storage.is_remote(p):
            yield from _local_versions(p)
        elif known[p] is not None:
            yield p, "{}:{}".format(*known[p]).encode()
        else:
            for path, (size, etag) in listed[p].items():
                yield path, f"{size}:{etag}".encode()


def fingerprint(inputs: Iterable[str | Path], params: dict) -> str:
    """Digest of the input files (``_versions``) and params. On S3 a caller that needs the
    inputs' identities too asks inside ``storage.inputs_asked_once``: the store is asked
    once."""
    h = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode())
    for path, version in _versions(inputs):
        h.update(str(path).encode())
        h.update(version)
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
    records: Callable[[dict], list[str]] | None = None,
) -> dict:
    """Run ``build`` (which writes report and stats) unless nothing changed since the last
    successful run; ``output_files(report)`` lists the report's outputs relative to data_dir.
    ``records(report)``: files the build writes beside its outputs (relative to data_dir,
    not counted as held files); one of them gone also runs the build."""
    inputs = list(inputs)
    # On S3 the inputs are asked about once, for the digest and the build.
    with storage.inputs_asked_once(inputs):
        return _run_unless_unchanged(
            stage, data_dir, trade_type, dataset, symbol, inputs, params, output_files,
            report_path, stats_path, build, records,
        )  # fmt: skip


def _run_unless_unchanged(
    stage, data_dir, trade_type, dataset, symbol, inputs, params, output_files,
    report_path, stats_path, build, records=None,
) -> dict:  # fmt: skip
    state_file = layout.state_path(data_dir, stage, trade_type, dataset, symbol)
    if storage.is_remote(state_file):  # two independent round trips at once
        digest, state = storage.concurrently(
            lambda read: read(),
            [lambda: fingerprint(inputs, params), lambda: storage.read_state(state_file)],
        )
    else:
        digest, state = fingerprint(inputs, params), storage.read_state(state_file)
    if state.get("fingerprint") == digest and "report" in state:
        outputs = output_files(state["report"])
        written = outputs + (records(state["report"]) if records else [])
        if storage.all_exist(storage.join(data_dir, rel) for rel in written):
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
