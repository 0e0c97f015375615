"""Output file names of one symbol and the removal of its stale files (quirk Q18 fixed).

Legacy deleted the whole output folder of a trade type on every run. Here a job touches
only its own symbol's files: ``SYM.pqt`` and ``SP{n}_SYM.pqt``. The match is exact, so
``SP0_BTCUSDT.pqt`` never matches symbol ``XBTCUSDT`` nor ``SP0_XBTCUSDT.pqt`` symbol ``BTCUSDT``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from crypto_lakehouse import layout, storage
from crypto_lakehouse.io import temp_target

SUFFIX = layout.SEGMENT_SUFFIX


def iso_ms(ms) -> str:
    """``2020-01-01T00:00:00Z`` for an epoch-ms value (used in reports and messages)."""
    ms = int(ms)
    stamp = np.datetime64(ms, "ms")
    return str(stamp if ms % 1000 else stamp.astype("datetime64[s]")) + "Z"


def symbol_file_re(symbol: str) -> re.Pattern[str]:
    return layout.segment_file_re(symbol)


def symbol_files(directory: Path, symbol: str) -> list[Path]:
    """This symbol's segment files in ``directory`` (sorted by name; only the names that
    start with the symbol or with ``SP`` are listed, ``layout.segment_files``)."""
    return sorted(layout.segment_files(directory, symbol), key=str)


def remove_stale_in(directories, symbol: str, keep: dict, owns=None) -> list[Path]:
    """``remove_stale`` in each of ``directories`` (``keep``: folder → the names to keep
    there); on S3 the folders at the same time (a listing each is a round trip)."""
    directories = list(directories)
    at_once = storage.at_once(directories[0]) if directories else 1
    found = storage.concurrently(
        lambda d: remove_stale(d, symbol, keep.get(d, set()), owns), directories, at_once
    )
    return [p for removed in found for p in removed]


def scan_symbol(directory: Path, symbol: str) -> tuple[list[Path], list[Path]]:
    """``(files, temporary files)`` in ``directory`` that may be ``symbol``'s: what
    :func:`remove_stale` deletes from. A job may take it before it writes (its own new
    files are kept anyway): on S3 a listing of the folder waits for the uploads pending
    below it, so taken after the writes it was one more round trip after the uploads."""
    scanned = layout.symbol_names(directory, symbol)  # inside a shard job: scanned once
    if scanned is None:
        temps = storage.temp_files(directory)
        return symbol_files(directory, symbol), temps
    return [directory / name for name in scanned[0]], [directory / name for name in scanned[1]]


def remove_stale(
    directory: Path, symbol: str, keep_names: set[str], owns=None, scanned=None
) -> list[Path]:
    """Delete this symbol's files whose segment name is not in ``keep_names``, and its
    orphaned temp files; return the files deleted (not the temp files). ``owns(path)``,
    asked of each such file, false: the file is not the job's to delete (a legacy file used
    in place) and stays (default: every file of the symbol is the job's). ``scanned``: the
    job's :func:`scan_symbol` of ``directory`` (taken here when None)."""
    removed = []
    # Temp files of this symbol's names that a killed run left ("kill -9 during a write");
    # only this job writes these names, and the data-dir lock keeps other runs out.
    pattern = symbol_file_re(symbol)
    files, temps = scan_symbol(directory, symbol) if scanned is None else scanned
    for tmp in temps:
        target = temp_target(tmp.name)
        if target is not None and pattern.match(target):
            storage.delete(tmp)
    for path in files:
        if pattern.match(path.name) and path.name[: -len(SUFFIX)] not in keep_names:
            if owns is not None and not owns(path):
                continue
            storage.delete(path)
            removed.append(path)
    return removed
