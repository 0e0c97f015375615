"""Hostile archives built by the tests themselves (never stored: a bomb is MBs of zip)."""

from __future__ import annotations

import zipfile
from pathlib import Path

# One valid 1m kline row of 2020-01-02 (spot, ms): a bomb made of it passes every check a
# parser could do line by line, only its size gives it away.
BOMB_LINE = (
    b"1577923200000,7195.24,7196.25,7183.14,7186.68,51.642812,1577923259999,"
    b"371233.1,493,19.24,138.3,0\n"
)


def write_zip_bomb(path: Path, inflated_bytes: int, member: str = "bomb.csv") -> int:
    """A zip whose one member is ``inflated_bytes`` (rounded down to whole lines) of
    repeated CSV lines; deflate shrinks it ~300×. Returns the zip's size."""
    block = BOMB_LINE * ((1 << 20) // len(BOMB_LINE))
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        with zf.open(member, "w", force_zip64=True) as out:
            for _ in range(inflated_bytes // len(block)):
                out.write(block)
    return path.stat().st_size
