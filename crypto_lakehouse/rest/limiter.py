"""A thread-safe budget of request weight per fixed time window, shared by all threads of a job.

Binance counts the weight an IP used in the current minute (``X-MBX-USED-WEIGHT-1M``) and
answers 429 when a request would exceed the limit. The limiter keeps a job below
``share × limit`` by *reserving* a request's weight before it is sent:

- Windows are fixed slices of ``window_s`` seconds of the wall clock (Binance's minutes start
  at whole minutes of server time; servers and clients are NTP-synchronised). A new window is
  entered ``guard_s`` after the boundary, so that a server clock slightly behind ours has
  already reset its counter when our first request of the window arrives. Requests sent
  during the guard time count for both windows: the server already puts them into the new one.
- The used weight of a window is the larger of what we reserved and what the server last
  reported for that window. A header only counts for the window its request was *sent* in:
  a late answer to a request of the previous window must not fill the new window.
- ``pause_until`` stops every thread (429 ``Retry-After``, circuit breaker); ``stop`` makes
  every waiting and future ``acquire`` raise ``HostStopped`` (418, 403).
"""

from __future__ import annotations

import math
import threading
import time
from typing import Callable


class HostStopped(RuntimeError):
    """All requests to a host were stopped (ban, WAF block); the message says why."""


class WindowLimiter:
    def __init__(
        self,
        limit: int,
        *,
        share: float = 0.8,
        window_s: float = 60.0,
        guard_s: float | None = None,
        name: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if limit <= 0 or window_s <= 0:
            raise ValueError(f"limiter {name!r}: limit and window_s must be > 0")
        if not 0 < share <= 1:
            raise ValueError(f"limiter {name!r}: share must be within (0, 1], got {share!r}")
        self.limit = int(limit)
        self.share = float(share)
        self.budget = max(1, int(math.floor(self.limit * self.share)))
        self.window_s = float(window_s)
        # Long enough to absorb clock skew and scheduling jitter, short against the window.
        self.guard_s = min(0.5, 0.05 * self.window_s) if guard_s is None else float(guard_s)
        self.name = name
        self._clock = clock
        self._cond = threading.Condition()
        self._window = -1
        self._used = 0
        self._carry = 0  # reserved after the wall boundary, before the new window began
        self._paused_until = 0.0
        self._stopped: str | None = None
        self.waited_s = 0.0  # total time threads spent blocked (summed over threads)
        self._per_thread = threading.local()  # .waited_s: the calling thread's own share
        self.reserved = 0  # total units reserved over the limiter's life

    # ------------------------------------------------------------ windows
    def window_of(self, t: float) -> int:
        return int((t - self.guard_s) // self.window_s)

    def window_start(self, window: int) -> float:
        return window * self.window_s + self.guard_s

    def _roll(self, now: float) -> int:
        w = self.window_of(now)
        if w != self._window:
            self._used = self._carry if w == self._window + 1 else 0
            self._window = w
            self._carry = 0
        return w

    # ------------------------------------------------------------ API
    def acquire(self, units: int) -> int:
        """Block until ``units`` fit into the current window; return that window's id."""
        with self._cond:
            while True:
                if self._stopped is not None:
                    raise HostStopped(self._stopped)
                now = self._clock()
                if now < self._paused_until:
                    self._wait(self._paused_until - now)
                    continue
                w = self._roll(now)
                # An empty window always admits one request, so a weight above the budget
                # (a misconfigured tiny limit) still makes progress instead of hanging.
                if self._used + units <= self.budget or self._used == 0:
                    self._used += units
                    self.reserved += units
                    if now >= (w + 1) * self.window_s:  # inside the guard time
                        self._carry += units
                    return w
                self._wait(self.window_start(w + 1) - now)

    def observe(self, window: int, used: int) -> None:
        """Record the server's used-weight figure of a request sent in ``window``."""
        with self._cond:
            if window == self._window and used > self._used:
                self._used = used

    def mark_full(self, window: int) -> None:
        """The server said the window is exhausted (429): send nothing more in it."""
        with self._cond:
            if window == self._window:
                self._used = max(self._used, self.budget)

    def pause_until(self, t: float) -> None:
        with self._cond:
            if t > self._paused_until:
                self._paused_until = t
            self._cond.notify_all()

    def pause_for(self, seconds: float) -> None:
        self.pause_until(self._clock() + seconds)

    def stop(self, reason: str) -> None:
        with self._cond:
            if self._stopped is None:
                self._stopped = reason
            self._cond.notify_all()

    @property
    def stopped(self) -> str | None:
        return self._stopped

    def thread_waited_s(self) -> float:
        """Time the calling thread has spent blocked in this limiter."""
        return getattr(self._per_thread, "waited_s", 0.0)

    def _wait(self, seconds: float) -> None:
        seconds = max(seconds, 0.001)
        t0 = time.monotonic()
        self._cond.wait(seconds)
        waited = time.monotonic() - t0
        self.waited_s += waited
        self._per_thread.waited_s = self.thread_waited_s() + waited
