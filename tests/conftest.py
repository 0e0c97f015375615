"""Shared test helpers: the fixture folder and a local Binance emulator factory."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# Real Binance files and legacy outputs, copied from the project's shared fixtures
# (provenance: tests/fixtures/real/SOURCES.md, tests/fixtures/legacy-v1-real/README.md).
FIXTURES = REPO_ROOT / "tests" / "fixtures"


# Names the tests may resolve: loopback (the emulator, SeaweedFS, proxies) and RFC 2606
# ".invalid" names, which never resolve and stand for an unreachable host.
_LOCAL_NAMES = {"localhost", "127.0.0.1", "::1", "0.0.0.0", "::"}


def _is_local(host) -> bool:
    name = host.decode() if isinstance(host, bytes) else host
    if name is None or name == "":
        return True
    return name in _LOCAL_NAMES or name.startswith("127.") or name.endswith(".invalid")


@pytest.fixture(autouse=True, scope="session")
def no_internet():
    """No test contacts a real host (the Binance hosts are the config's defaults): Python's
    resolver refuses every name but loopback and ``.invalid`` during the session, as an
    offline machine would (``socket.gaierror``). It covers requests, urllib3, botocore and
    asyncio's default loop in the test process; uvloop, pyarrow's C++ S3 client and
    subprocesses resolve on their own (their configs point at 127.0.0.1)."""
    real = socket.getaddrinfo

    def local_only(host, *args, **kwargs):
        if not _is_local(host):
            raise socket.gaierror(
                socket.EAI_NONAME, f"tests never contact the internet: {host!r} refused"
            )
        return real(host, *args, **kwargs)

    socket.getaddrinfo = local_only
    yield
    socket.getaddrinfo = real


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


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory):
    """One SeaweedFS S3 server for the session (tests/s3_helpers.py); its credentials are
    in the AWS environment variables while it runs."""
    from tests.s3_helpers import SeaweedS3, apply_env, restore_env

    # 32 volumes of 64 MB: the session's tests share the store and SeaweedFS does not reclaim
    # deleted objects' space without a vacuum; 8 filled up at ~2,000 tests ("No writable
    # volumes", every later upload an internal error). Volumes grow on demand: no disk cost.
    server = SeaweedS3(tmp_path_factory.mktemp("seaweedfs"), volumes=32).start()
    previous = apply_env(server.env)
    try:
        yield server
    finally:
        restore_env(previous)
        server.stop()


@pytest.fixture(scope="session")
def seaweed_bucket(seaweed):
    """The session's bucket (SeaweedFS grows volumes per bucket: one bucket, a prefix per test)."""
    seaweed.create_bucket("lakehouse-tests")
    return "lakehouse-tests"


@pytest.fixture
def s3_root(seaweed, seaweed_bucket, request):
    """A fresh prefix ``s3://<bucket>/<test>-<hex>`` on the session's SeaweedFS;
    ``crypto_lakehouse.storage`` points at it (path-style addressing) during the test."""
    import re
    import secrets

    from crypto_lakehouse import storage

    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:60].strip("-")
    storage.configure(seaweed.storage_settings)
    try:
        yield f"s3://{seaweed_bucket}/{name}-{secrets.token_hex(3)}"
    finally:
        storage.configure(None)


@contextlib.contextmanager
def data_dir_held(data) -> Iterator[subprocess.Popen]:
    """Another process holds the run lock of data dir ``data`` (``lock.acquire``) while the
    block runs; yields that process."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import time; from crypto_lakehouse import lock; "
         f"lock.acquire({str(data)!r}); print('held', flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder
    finally:
        holder.kill()
        holder.wait()


def wait_for(predicate, timeout: float = 60.0, step: float = 0.02) -> bool:
    """Poll ``predicate`` until it is true (True) or ``timeout`` seconds passed (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False
