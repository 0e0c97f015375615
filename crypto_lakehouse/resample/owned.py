"""Which resampled files of a symbol this pipeline wrote: the only ones its clean-up removes.

A legacy BHDS data dir used in place holds legacy's resampled files
(``results_data/{T}/resampled_klines/{RI}/{OFFSET}/{SYM}.pqt``), at targets and offsets the
config may not list. Before 2026-12-06 the resample job of a configured symbol removed every
resampled file of the symbol it did not write in that run, legacy's included (Q18), so the
first run over a legacy dir deleted legacy's files of the targets it was not given.

Now each symbol's resample job keeps a record (``layout.state_path``, stage
``resample_files``, dataset ``resampled_klines``: resampled files do not depend on the base
interval) of the resampled files it wrote: the outputs it is about to write are added before
it writes them (a killed job leaves none of its files unrecorded), and after its clean-up
the record holds exactly the outputs of the run. The clean-up removes a file of the symbol
that the run did not write only when the record lists it, or when it lies in a folder of a
configured target and offset (there the job rebuilds the symbol's set of files: a legacy
``SP{n}_`` file beside the pipeline's segments would mix two splits). Any other file, a
legacy one, is kept and named in the report (``kept``).

The record also says whether the job left a record of the kept files for the loaders
(``layout.stale_resampled_path``, "stale_record": a digest of the kept files' names, or
"pending" while it is being written): a run that keeps none removes that record only then,
and one that keeps the same files does not write it again, rather than asking at every run
(on S3 a request per symbol).

Files written before the record existed are known from the tail-build records
(``resample/tail.py``, one per base interval), which list the outputs of the last
successful run; a symbol without either record owns none of its files.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from crypto_lakehouse import layout, storage

STAGE = "resample_files"
DATASET = "resampled_klines"
VERSION = 1


def record_path(data_dir, trade_type: str, symbol: str) -> Path:
    return layout.state_path(data_dir, STAGE, trade_type, DATASET, symbol)


def read_record(data_dir, trade_type: str, symbol: str) -> set[str] | None:
    """The files the symbol's record lists; None without a (readable) record."""
    return read_record_and_mark(data_dir, trade_type, symbol)[0]


def read_record_and_mark(data_dir, trade_type: str, symbol: str):
    """``read_record``, and its "stale_record" (``kept_digest`` of the kept files the job
    recorded for the loaders, ``layout.stale_resampled_path``; "pending"; None when it
    left no such record); one read."""
    record = storage.read_state(record_path(data_dir, trade_type, symbol))
    if record.get("version") == VERSION and isinstance(record.get("files"), list):
        mark = record.get("stale_record")
        return set(record["files"]), mark if isinstance(mark, str) else None
    return None, None


def kept_digest(kept) -> str | None:
    """What the ownership record notes of the kept files recorded for the loaders (None:
    there are none)."""
    if not kept:
        return None
    return hashlib.sha256("\n".join(sorted(kept)).encode()).hexdigest()[:16]


def files_before_the_record(data_dir, trade_type: str, symbol: str) -> set[str]:
    """The outputs of the symbol's last successful resample run, as its tail-build record
    of each base interval lists them (for files written before the record existed)."""
    from crypto_lakehouse.resample import tail

    root = tail.record_path(data_dir, trade_type, symbol, "1m").parent.parent
    owned: set[str] = set()
    for tag in layout.subdir_names(root):
        if tag.startswith("klines-"):
            resume = storage.read_state(root / tag / f"{symbol}.json")
            outputs = resume.get("outputs")
            if isinstance(outputs, dict):
                owned.update(outputs)
    return owned


def owned_files(data_dir, trade_type: str, symbol: str) -> set[str]:
    """The resampled files of ``symbol`` this pipeline wrote, relative to the data dir
    (see the module docstring). An unreadable record reads as missing (``read_state``)."""
    recorded = read_record(data_dir, trade_type, symbol)
    if recorded is not None:
        return recorded
    return files_before_the_record(data_dir, trade_type, symbol)


def write(data_dir, trade_type: str, symbol: str, files, stale_record: str | None = None) -> None:
    """Record ``files`` as the symbol's resampled files that this pipeline wrote, and
    ``stale_record`` (``read_record_and_mark``)."""
    record = {"version": VERSION, "files": sorted(files)}
    if stale_record is not None:
        record["stale_record"] = stale_record
    storage.write_json(record_path(data_dir, trade_type, symbol), record)


def owned_leftovers(data_dir, trade_type: str, files: list[str]) -> list[str]:
    """Of ``files`` (resampled files, relative to the trade type's resampled folder, as
    ``plan.resampled_leftovers`` finds them), those this pipeline wrote."""
    root = layout.resampled_root(data_dir, trade_type)
    prefix = root.relative_to(storage.data_path(data_dir)).as_posix()
    by_symbol: dict[str, list[str]] = {}
    for f in files:
        named = layout.parse_segment_name(f.rsplit("/", 1)[-1])
        if named is not None:
            by_symbol.setdefault(named[0], []).append(f)
    symbols = sorted(by_symbol)
    at_once = storage.at_once(root)
    owned = storage.concurrently(lambda s: owned_files(data_dir, trade_type, s), symbols, at_once)
    mine = set().union(*owned) if owned else set()
    return sorted(f for f in files if f"{prefix}/{f}" in mine)
