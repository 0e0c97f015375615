"""Quarantine: where defective archives go, out of ``aws_data`` and never ``.verified``.

Used by the download (a CHECKSUM that never matches, a missing CHECKSUM) and by the parse (a
structurally bad CSV). A quarantined zip keeps its CHECKSUM beside it and a ``.reason`` file.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from crypto_lakehouse import layout, storage


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
