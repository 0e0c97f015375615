"""Progress lines of a job: done of total, rate and ETA, at most every few seconds.

Snakemake's own percentage counts jobs and goes backwards when checkpoints add jobs; these
lines count the work inside a job (files, bytes, days), e.g.

    aws_download spot klines-1m BTCUSDT: 120/666 files, 40.1/146.0 MB, 8.0 MB/s, ETA 13 s

They go through ``logging`` (the job's log file and stderr, which Snakemake shows on the
console), one plain line each: no carriage returns or terminal control characters. Any
job function can use one; it does not depend on how jobs are grouped.
"""

from __future__ import annotations

import logging
import math
import time

EVERY_S = 2.0  # at most one line per EVERY_S seconds (besides the final one)

log = logging.getLogger(__name__)


def format_duration(seconds: float) -> str:
    """``45 s``, ``3 min 05 s``, ``2 h 07 min``."""
    if not math.isfinite(seconds):
        return "unknown"
    s = int(round(max(seconds, 0.0)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class Progress:
    """Counts units (files, days, …) and optionally bytes towards known totals.

    The ETA divides what is left by the rate so far: by bytes when a byte total is known
    (downloads are byte-bound), else by units. Not thread-safe: call it from one thread
    (the job's main thread, which collects the workers' results).
    """

    def __init__(
        self,
        label: str,
        total: int,
        unit: str = "files",
        total_bytes: int | None = None,
        every_s: float = EVERY_S,
        logger: logging.Logger | None = None,
        clock=time.monotonic,
        status=None,
    ):
        self.label = label
        self.total = int(total)
        self.unit = unit
        self.total_bytes = total_bytes
        self.every_s = every_s
        self.log = logger or log
        self.clock = clock
        self.done = 0
        self.bytes = 0
        self.started = clock()
        self.last_line = self.started
        self.lines = 0
        # () -> text or None: what the work waits on right now, added to the line (the ETA
        # alone stands still then, e.g. while a REST job waits on the host's weight budget).
        self.status = status

    def add(self, units: int = 1, nbytes: int = 0) -> None:
        self.done += units
        self.bytes += nbytes

    def eta_seconds(self) -> float:
        elapsed = self.clock() - self.started
        if self.total_bytes:
            left, done = self.total_bytes - self.bytes, self.bytes
        else:
            left, done = self.total - self.done, self.done
        if left <= 0:
            return 0.0
        if done <= 0 or elapsed <= 0:
            return math.inf
        return left * elapsed / done

    def line(self) -> str:
        parts = [f"{self.done}/{self.total} {self.unit}"]
        elapsed = self.clock() - self.started
        if self.total_bytes is not None:
            done_mb, total_mb = self.bytes / 1e6, self.total_bytes / 1e6
            parts.append(f"{min(done_mb, total_mb):.1f}/{total_mb:.1f} MB")
            if elapsed > 0 and self.bytes:
                parts.append(f"{done_mb / elapsed:.1f} MB/s")
        elif elapsed > 0 and self.done:
            parts.append(f"{self.done / elapsed:.1f} {self.unit}/s")
        parts.append(f"ETA {format_duration(self.eta_seconds())}")
        waiting = self.status() if self.status is not None else None
        if waiting:
            parts.append(waiting)
        return f"{self.label}: {', '.join(parts)}"

    def maybe_log(self, force: bool = False) -> bool:
        """Log a line if ``every_s`` passed since the last one (or ``force``)."""
        now = self.clock()
        if not force and now - self.last_line < self.every_s:
            return False
        self.last_line = now
        self.lines += 1
        self.log.info("%s", self.line())
        return True

    def finish(self) -> None:
        """The closing line, for work long enough to have had a progress line (short
        jobs log their own summary line anyway)."""
        if self.lines:
            self.maybe_log(force=True)
