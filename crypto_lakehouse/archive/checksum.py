"""``.CHECKSUM`` sidecars (``<sha256 hex>  <file name>``, the ``sha256sum`` format) and
streaming SHA-256 of local files.

The trailing newline varies between Binance's sidecars (binance-facts §3), so the text is
split on whitespace rather than compared byte for byte, like the legacy verifier.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from crypto_lakehouse import storage

_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
CHUNK_BYTES = 1 << 20


class ChecksumFormatError(ValueError):
    """A CHECKSUM sidecar that is not ``<64 hex digits> <file name>``."""


@dataclass(frozen=True)
class ChecksumLine:
    sha256: str  # lowercase hex
    file_name: str


def parse_checksum(content: str | bytes, source: str = "CHECKSUM") -> ChecksumLine:
    """Parse one sidecar; ``source`` (a key or path) names it in error messages."""
    if isinstance(content, bytes):
        try:
            content = content.decode("ascii")
        except UnicodeDecodeError as exc:
            raise ChecksumFormatError(f"{source}: not ASCII text ({exc})") from None
    tokens = content.split()
    if len(tokens) != 2:
        raise ChecksumFormatError(
            f"{source}: expected '<sha256> <file name>', got {len(tokens)} token(s): "
            f"{content[:120]!r}"
        )
    digest, name = tokens
    if not _HEX64.match(digest):
        raise ChecksumFormatError(f"{source}: {digest[:80]!r} is not a 64-digit hex SHA-256")
    return ChecksumLine(sha256=digest.lower(), file_name=name)


def sha256_file(path: str | Path) -> str:
    """Lowercase hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with storage.open_input(path) as f:
        while chunk := f.read(CHUNK_BYTES):
            h.update(chunk)
    return h.hexdigest()
