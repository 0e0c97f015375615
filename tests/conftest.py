"""Shared test helpers: the fixture folder and a local Binance emulator factory."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# Real Binance files and legacy outputs, copied from the project's shared fixtures
# (provenance: tests/fixtures/real/SOURCES.md, tests/fixtures/legacy-v1-real/README.md).
FIXTURES = REPO_ROOT / "tests" / "fixtures"


@pytest.fixture
def emulator():
    """Factory: ``emu = emulator(mirror_dir=..., faults=..., rest=..., listing=...)``.

    Each emulator is started on 127.0.0.1 and stopped when the test ends.
    """
    from crypto_lakehouse_emulator import Emulator

    started = []

    def make(mirror_dir=None, faults=None, rest=None, listing=None):
        emu = Emulator(mirror_dir=mirror_dir, faults=faults, rest=rest, listing=listing)
        emu.start()
        started.append(emu)
        return emu

    yield make
    for emu in started:
        emu.stop()
