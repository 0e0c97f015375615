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

One host, several processes (``SharedWindowState``): the window's state above (used weight,
requests in flight, carry, pause) can live in a file that every REST job of the host reads and
updates under an exclusive ``flock``, instead of in the process. Without it, a job saw the
other jobs' weight only in the used-weight header of answers to requests that had already
arrived: N jobs, each with up to 32 requests in flight, could each fill the window's remaining
budget in the same round trip (6 jobs on a 200-weight window drew 429s, then a 418 ban:
``tests/unit/test_rest_shards_one_host.py``). With the shared state, every reservation counts
for every job of the host before its request is sent, whatever the number of jobs, and a
429's pause holds them all.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator


class HostStopped(RuntimeError):
    """All requests to a host were stopped (ban, WAF block); the message says why."""


@dataclass(frozen=True)
class Reservation:
    """Weight reserved by ``acquire``; hand it back to ``release`` once the answer is in."""

    window: int
    units: int
    in_guard: bool  # reserved after the wall boundary: already carried into the next window


@dataclass
class WindowState:
    """What the requests to a host have spent of the current window (one process's or, in
    a ``SharedWindowState``, every job's of the host)."""

    window: int = -1
    used: int = 0
    carry: int = 0  # counts for the next window too (sent or answered after the boundary)
    in_flight: dict[int, int] = field(default_factory=dict)  # window -> units unanswered
    paused_until: float = 0.0


class LocalWindowState:
    """The window's state of one process (the default)."""

    def __init__(self) -> None:
        self._state = WindowState()

    @contextlib.contextmanager
    def held(self) -> Iterator[WindowState]:
        yield self._state

    def close(self) -> None:
        pass


class SharedWindowState:
    """The window's state in a file shared by every process pacing on the same host (the
    REST jobs of one trade type in one run directory): read and written back under an
    exclusive ``flock`` for each reservation, answer and pause (~40 µs each; a request
    takes milliseconds). The content is a few dozen bytes of JSON rewritten in place: the state
    lives one window, it is not data; a content that cannot be read (a process killed while
    writing) counts as an empty window, as a fresh process's limiter starts."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)  # seam: run directory
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)

    @contextlib.contextmanager
    def held(self) -> Iterator[WindowState]:
        fd = self._fd
        if fd is None:
            raise RuntimeError(f"{self.path}: shared window state used after close")
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            state = self._read(fd)
            before = asdict(state)
            yield state
            if asdict(state) != before:
                data = json.dumps(asdict(state), separators=(",", ":")).encode()
                os.pwrite(fd, data, 0)
                os.ftruncate(fd, len(data))
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    @staticmethod
    def _read(fd: int) -> WindowState:
        raw = os.pread(fd, 65536, 0)
        try:
            d = json.loads(raw) if raw else {}
            return WindowState(
                window=int(d.get("window", -1)),
                used=int(d.get("used", 0)),
                carry=int(d.get("carry", 0)),
                in_flight={int(k): int(v) for k, v in d.get("in_flight", {}).items()},
                paused_until=float(d.get("paused_until", 0.0)),
            )
        except (ValueError, TypeError, AttributeError):
            return WindowState()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


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
        shared_path: str | Path | None = None,
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
        # Every access to the window's state is under self._cond (one thread of the process
        # at a time), then, when shared, under the file's flock (one process at a time).
        self._state = LocalWindowState() if shared_path is None else SharedWindowState(shared_path)
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

    def _roll(self, st: WindowState, now: float) -> int:
        w = self.window_of(now)
        if w != st.window:
            # Requests of the previous window still unanswered may arrive in this one. A
            # request travels for less than a window (the client's timeout is shorter), so
            # older reservations are forgotten, answered or not.
            if w == st.window + 1:
                st.used = st.carry + st.in_flight.get(st.window, 0)
            else:
                st.used = 0
            st.in_flight = {k: v for k, v in st.in_flight.items() if k >= w - 1}
            st.window = w
            st.carry = 0
        return w

    # ------------------------------------------------------------ API
    def acquire(self, units: int) -> Reservation:
        """Block until ``units`` fit into the current window; return the reservation."""
        with self._cond:
            while True:
                if self._stopped is not None:
                    raise HostStopped(self._stopped)
                now = self._clock()
                with self._state.held() as st:
                    if now < st.paused_until:
                        wait = st.paused_until - now
                    else:
                        w = self._roll(st, now)
                        # An empty window always admits one request, so a weight above the
                        # budget (a misconfigured tiny limit) still makes progress.
                        if st.used + units <= self.budget or st.used == 0:
                            st.used += units
                            self.reserved += units
                            in_guard = now >= (w + 1) * self.window_s
                            if in_guard:
                                st.carry += units
                            else:
                                st.in_flight[w] = st.in_flight.get(w, 0) + units
                            return Reservation(w, units, in_guard)
                        wait = self.window_start(w + 1) - now
                self._wait(wait)

    def release(self, reservation: Reservation) -> None:
        """The request of ``reservation`` was answered (or failed): it no longer travels."""
        if reservation.in_guard:
            return
        with self._cond, self._state.held() as st:
            w = reservation.window
            left = st.in_flight.get(w, 0) - reservation.units
            if left > 0:
                st.in_flight[w] = left
            else:
                st.in_flight.pop(w, None)
            # Answered after the wall boundary, before this limiter moved on: the server may
            # have counted it in the next window (once moved on, the roll counted it).
            if w == st.window and self._clock() >= (w + 1) * self.window_s:
                st.carry += reservation.units

    def observe(self, window: int, used: int) -> None:
        """Record the server's used-weight figure of a request sent in ``window``."""
        with self._cond, self._state.held() as st:
            if window == st.window and used > st.used:
                st.used = used

    def mark_full(self, window: int) -> None:
        """The server said the window is exhausted (429): send nothing more in it."""
        with self._cond, self._state.held() as st:
            if window == st.window:
                st.used = max(st.used, self.budget)

    def is_full(self, window: int) -> bool:
        """Whether ``window`` is the current window and nothing more fits into it (our
        reservations or the server's used-weight figure reached the budget)."""
        with self._cond, self._state.held() as st:
            return window == st.window and st.used >= self.budget

    @property
    def used(self) -> int:
        """Weight counted in the window last entered (reserved, carried, or the server's
        figure), by this process or, shared, by every job of the host."""
        with self._cond, self._state.held() as st:
            return st.used

    def seconds_to_end(self, window: int) -> float:
        """Seconds from now until ``window`` ends (0 when it is over)."""
        return max(0.0, self.window_start(window + 1) - self._clock())

    def pause_until(self, t: float) -> None:
        with self._cond:
            with self._state.held() as st:
                if t > st.paused_until:
                    st.paused_until = t
            self._cond.notify_all()

    def pause_for(self, seconds: float) -> None:
        self.pause_until(self._clock() + seconds)

    def stop(self, reason: str) -> None:
        with self._cond:
            if self._stopped is None:
                self._stopped = reason
            self._cond.notify_all()

    def close(self) -> None:
        """Let go of the shared state's file (nothing to do for a process's own state)."""
        with self._cond:
            self._state.close()

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
