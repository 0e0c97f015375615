"""The one back-off formula of every retry loop (archive listings and downloads, REST).

Before retry ``n`` (0-based) a client waits ``min(cap_s, base_s * 2**n) * U(0.5, 1)``:
exponential growth up to a cap, with jitter so that clients failing together do not all
come back at the same moment, and never less than half the nominal wait. Which failures
are retried at all is decided elsewhere: :func:`crypto_lakehouse.archive.http.classify` and
:func:`crypto_lakehouse.reachability.unreachable_cause`.
"""

from __future__ import annotations

import random


def backoff_delay(retry: int, base_s: float, cap_s: float) -> float:
    """Seconds to wait before retry ``retry`` (0 for the first retry)."""
    return min(cap_s, base_s * 2**retry) * random.uniform(0.5, 1.0)
