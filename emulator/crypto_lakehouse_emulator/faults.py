"""Fault injection for the emulator: latency, 5xx answers, dropped connections, corrupt bodies.

Every random decision is a pure function of ``(seed, fault kind, key, n)`` where ``n`` counts
the requests for that key so far. That keeps a seeded run reproducible even when a downloader
with 64 threads sends the requests in a different order each time.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

CHECKSUM_SUFFIX = ".CHECKSUM"


def _zip_key(key: str) -> str:
    """Both ``x.zip`` and ``x.zip.CHECKSUM`` name the same archive for ``missing_checksum``."""
    return key[: -len(CHECKSUM_SUFFIX)] if key.endswith(CHECKSUM_SUFFIX) else key


@dataclass
class Faults:
    """What goes wrong, changeable while the server runs (the handler reads it per request).

    - ``latency``: seconds added to every archive request (and REST if ``apply_to_rest``).
    - ``slow_keys``: extra seconds before answering a request for these object keys.
    - ``fail_rate``: fraction of archive GET/HEAD requests (listings and objects) answered 500/503.
    - ``drop_rate``: fraction of object GETs whose connection closes after half the body.
    - ``corrupt_first``: keys whose body has flipped bytes the first time it is served only.
    - ``corrupt_always``: keys whose body is always corrupt (the CHECKSUM never matches).
    - ``missing_checksum``: zip keys whose ``.CHECKSUM`` answers 404 and is absent from listings.
    - ``fail_always``: keys always answered 500 (a failure outlasting retries); a listing fails
      for ``"?" + prefix``.
    - ``apply_to_rest``: latency and ``fail_rate`` also hit ``/api``, ``/fapi``, ``/dapi``.
    """

    latency: float = 0.0
    slow_keys: dict[str, float] = field(default_factory=dict)
    fail_rate: float = 0.0
    drop_rate: float = 0.0
    corrupt_first: set[str] = field(default_factory=set)
    corrupt_always: set[str] = field(default_factory=set)
    missing_checksum: set[str] = field(default_factory=set)
    fail_always: set[str] = field(default_factory=set)
    apply_to_rest: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("corrupt_first", "corrupt_always", "missing_checksum", "fail_always"):
            setattr(self, name, set(getattr(self, name)))
        for name in ("fail_rate", "drop_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"Faults.{name} must be within [0, 1], got {value!r}")
        if self.latency < 0:
            raise ValueError(f"Faults.latency must be >= 0, got {self.latency!r}")
        self.slow_keys = dict(self.slow_keys)
        if any(v < 0 for v in self.slow_keys.values()):
            raise ValueError("Faults.slow_keys values must be >= 0 seconds")

    # ------------------------------------------------------------ decisions
    def counts_attempts(self, key: str) -> bool:
        """Whether decisions for ``key`` depend on how often it was requested."""
        return bool(self.fail_rate or self.drop_rate)

    def _draw(self, kind: str, key: str, n: int) -> float:
        return random.Random(f"{self.seed}:{kind}:{key}:{n}").random()

    def fail_status(self, key: str, n: int) -> int | None:
        """500/503 when request ``n`` (1-based) for ``key`` should fail, else None."""
        if key in self.fail_always:
            return 500
        if self.fail_rate and self._draw("5xx", key, n) < self.fail_rate:
            return 503 if self._draw("5xx-code", key, n) < 0.5 else 500
        return None

    def drops(self, key: str, n: int) -> bool:
        return bool(self.drop_rate) and self._draw("drop", key, n) < self.drop_rate

    def corrupts(self, key: str, first_body: bool) -> bool:
        """Whether this GET serves a corrupt body; ``first_body``: no body of ``key`` was
        served since it joined ``corrupt_first`` (a 5xx answer does not count)."""
        return key in self.corrupt_always or (key in self.corrupt_first and first_body)

    def hides_checksum(self, key: str) -> bool:
        """True for a ``.CHECKSUM`` key whose archive is listed in ``missing_checksum``."""
        return key.endswith(CHECKSUM_SUFFIX) and _zip_key(key) in self.missing_checksum


def corrupt(body: bytes) -> bytes:
    """Flip a few bytes in the middle of ``body``: same length, different SHA-256."""
    if not body:
        return b"\xff"
    data = bytearray(body)
    mid = len(data) // 2
    for i in range(mid, min(mid + 8, len(data))):
        data[i] ^= 0xFF
    return bytes(data)
