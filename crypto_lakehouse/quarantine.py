"""Quarantine: where defective archives go, out of ``aws_data`` and never ``.verified``.

Used by the download (a CHECKSUM that never matches, a missing CHECKSUM) and by the parse (a
structurally bad CSV). A quarantined zip keeps its CHECKSUM beside it and a ``.reason`` file.

A reason the pipeline no longer takes for a defect releases the zip (``released``): the
download job moves it back (``release_archive``), verifies it against its CHECKSUM, and the
parse reads it again. The only such reason: kline candles off the interval grid
(``OFF_GRID_REASON``), quarantined before 2026-12-06 and floored onto the grid since.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

from crypto_lakehouse import layout, storage

# The parse's reason, before 2026-12-06, for a kline archive with a candle off the interval
# grid (the old ``parse.validate.check_times``; its first failing line only, so a file with
# another defect further on is quarantined again, with that reason, when it is re-parsed):
# "<key>: line 3: time 2018-02-08 09:28:14.789 (raw 1518082094789) is not on the 60s interval
# grid". The parse floors such candles since (Binance's spot files of 2018-02-08 … 02-10).
OFF_GRID_REASON = re.compile(
    r": line \d+: time [^()]* \(raw \d+\) is not on the \d+s interval grid$"
)


def released(reason: str | None) -> bool:
    """Whether a quarantine ``reason`` is one the pipeline no longer takes for a defect."""
    return bool(reason) and OFF_GRID_REASON.search(reason.strip()) is not None


def _with_suffix(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def quarantine_archive(
    data_dir: str | Path, key: str, reason: str, *, discard_local: bool = False
) -> Path:
    """Move a defective archive out of ``aws_data``; returns its quarantine path.

    The ``.verified`` marker goes first: if the run dies half-way the file is merely
    unverified, so the download job re-checks it instead of anyone trusting it.
    ``discard_local`` deletes the local zip instead of moving it (it is an older version
    whose defective replacement was already put in quarantine).
    """
    src = layout.aws_path(data_dir, key)
    dst = layout.quarantine_path(data_dir, key)
    storage.delete(_with_suffix(src, layout.VERIFIED_SUFFIX))
    if discard_local:
        storage.delete(src)
    for suffix in ("", layout.CHECKSUM_SUFFIX):
        with contextlib.suppress(FileNotFoundError):
            storage.move(_with_suffix(src, suffix), _with_suffix(dst, suffix))
    storage.write_text(_with_suffix(dst, ".reason"), reason + "\n")
    return dst


def release_archive(data_dir: str | Path, key: str) -> None:
    """Move a quarantined archive back into ``aws_data`` (zip and CHECKSUM; no ``.verified``:
    the download job verifies it against its CHECKSUM, or fetches it when either is gone),
    then remove its ``.reason``. Idempotent: a run killed half-way releases the rest next time.
    """
    src = layout.quarantine_path(data_dir, key)
    dst = layout.aws_path(data_dir, key)
    for suffix in (layout.CHECKSUM_SUFFIX, ""):  # the zip last: alone it is merely unverified
        with contextlib.suppress(FileNotFoundError):
            storage.move(_with_suffix(src, suffix), _with_suffix(dst, suffix))
    storage.delete(_with_suffix(src, ".reason"))
