"""A thread-safe budget of request weight per fixed time window, shared by all threads of a job.

Binance counts the weight an IP used in the current minute (``X-MBX-USED-WEIGHT-1M``) and
answers 429 when a request would exceed the limit. The limiter keeps a job below
``share × limit`` by *reserving* a request's weight before it is sent:

- Windows are fixed slices of ``window_s`` seconds of the wall clock (Binance's minutes start
  at whole minutes of server time; servers and clients are NTP-synchronised). A new window is
  entered ``guard_s`` after the boundary, so that a server clock slightly behind ours has
  already reset its counter when our first request of the window arrives. Requests sent
  during the guard time count for both windows: the server already puts them into the new one.
- The server counts a request when it *arrives*, which is some time after we reserved it.
  A request reserved before a boundary but answered after it (or still unanswered when the
  new window begins) may be in the server's new window: its weight counts for the new window
  too. Without this, a burst of requests reserved just before a boundary and delayed by a
  busy machine lands on top of the next window's full budget (a 429).
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
from dataclasses import dataclass
from typing import Callable


class HostStopped(RuntimeError):
    """All requests to a host were stopped (ban, WAF block); the message says why."""


@dataclass(frozen=True)
class Reservation:
    """Weight reserved by ``acquire``; hand it back to ``release`` once the answer is in."""

    window: int
    units: int
    in_guard: bool  # reserved after the wall boundary: already carried into the next window


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
        self._carry = 0  # counts for the next window too (sent or answered after the boundary)
        self._in_flight: dict[int, int] = {}  # window -> units reserved and not yet answered
        self._paused_until = 0.0
        self._stopped: str | None = None
        self.waited_s = 0.0  # total time threads spent blocked (summed over threads)
        self._per_thread = threading.local()  # .waited_s: the calling thread's own share
        self.reserved = 0  # total units reserved over the limiter's life
        self._blocked = 0  # threads blocked in acquire right now
        self._resume_at = 0.0  # (clock) when the latest of them expects to try again

    # ------------------------------------------------------------ windows
    def window_of(self, t: float) -> int:
        return int((t - self.guard_s) // self.window_s)

    def window_start(self, window: int) -> float:
        return window * self.window_s + self.guard_s

    def _roll(self, now: float) -> int:
        w = self.window_of(now)
        if w != self._window:
            # Requests of the previous window still unanswered may arrive in this one. A
            # request travels for less than a window (the client's timeout is shorter), so
            # older reservations are forgotten, answered or not.
            if w == self._window + 1:
                self._used = self._carry + self._in_flight.get(self._window, 0)
            else:
                self._used = 0
            self._in_flight = {k: v for k, v in self._in_flight.items() if k >= w - 1}
            self._window = w
            self._carry = 0
        return w

    # ------------------------------------------------------------ API
    def acquire(self, units: int) -> Reservation:
        """Block until ``units`` fit into the current window; return the reservation."""
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
                    in_guard = now >= (w + 1) * self.window_s
                    if in_guard:
                        self._carry += units
                    else:
                        self._in_flight[w] = self._in_flight.get(w, 0) + units
                    return Reservation(w, units, in_guard)
                self._wait(self.window_start(w + 1) - now)

    def release(self, reservation: Reservation) -> None:
        """The request of ``reservation`` was answered (or failed): it no longer travels."""
        if reservation.in_guard:
            return
        with self._cond:
            w = reservation.window
            left = self._in_flight.get(w, 0) - reservation.units
            if left > 0:
                self._in_flight[w] = left
            else:
                self._in_flight.pop(w, None)
            # Answered after the wall boundary, before this limiter moved on: the server may
            # have counted it in the next window (once moved on, the roll counted it).
            if w == self._window and self._clock() >= (w + 1) * self.window_s:
                self._carry += reservation.units

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

    def is_full(self, window: int) -> bool:
        """Whether ``window`` is the current window and nothing more fits into it (our
        reservations or the server's used-weight figure reached the budget)."""
        with self._cond:
            return window == self._window and self._used >= self.budget

    def seconds_to_end(self, window: int) -> float:
        """Seconds from now until ``window`` ends (0 when it is over)."""
        return max(0.0, self.window_start(window + 1) - self._clock())

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

    def blocked_for(self) -> float | None:
        """Seconds until the threads blocked in ``acquire`` right now try again (a new
        window, the end of a pause); None when no thread is blocked. For progress lines,
        whose ETA stands still while a job waits on the host's budget."""
        with self._cond:
            if not self._blocked:
                return None
            return max(0.0, self._resume_at - self._clock())

    def _wait(self, seconds: float) -> None:
        seconds = max(seconds, 0.001)
        if not self._blocked:
            self._resume_at = 0.0
        self._resume_at = max(self._resume_at, self._clock() + seconds)
        self._blocked += 1
        t0 = time.monotonic()
        try:
            self._cond.wait(seconds)
        finally:
            self._blocked -= 1
        waited = time.monotonic() - t0
        self.waited_s += waited
        self._per_thread.waited_s = self.thread_waited_s() + waited
