"""A probe of the workflow's job processes, for ``bench_stage_targets.py --daily --timeline``
(by hand, never in CI): with ``CL_JOB_PROBE_DIR`` set and this folder on ``PYTHONPATH``,
each ``scripts/*.py`` job appends one JSON line to ``CL_JOB_PROBE_DIR/jobs.jsonl`` at exit:
its script, its log (the job's second argument), the process's start (from ``/proc``,
before the interpreter's own start), its end, its CPU seconds (``getrusage``) and the
number and seconds of its ``os.fsync`` calls. Any other process is left alone. It shadows
another ``sitecustomize`` later on ``PYTHONPATH``."""

import os
import sys

_DIR = os.environ.get("CL_JOB_PROBE_DIR")
_SCRIPT = sys.argv[0] if sys.argv else ""

if _DIR and os.path.basename(os.path.dirname(_SCRIPT)) == "scripts":
    import atexit
    import json
    import resource
    import time

    _fsyncs = [0, 0.0]
    _fsync = os.fsync

    def _timed_fsync(fd):
        t = time.perf_counter()
        try:
            return _fsync(fd)
        finally:
            _fsyncs[0] += 1
            _fsyncs[1] += time.perf_counter() - t

    os.fsync = _timed_fsync

    def _started() -> float:
        """The process's start (epoch seconds): field 22 of /proc/self/stat, in clock
        ticks after boot."""
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            up = float(f.read().split()[0])
        return time.time() - (up - ticks / os.sysconf("SC_CLK_TCK"))

    def _record() -> None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        line = {
            "script": os.path.basename(_SCRIPT)[: -len(".py")],
            "log": sys.argv[2] if len(sys.argv) > 2 else None,
            "start": _started(),
            "end": time.time(),
            "cpu": usage.ru_utime + usage.ru_stime,
            "fsyncs": _fsyncs[0],
            "fsync_s": _fsyncs[1],
        }
        with open(os.path.join(_DIR, "jobs.jsonl"), "a") as f:
            f.write(json.dumps(line) + "\n")

    atexit.register(_record)
