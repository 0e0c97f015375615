"""A probe of the workflow's job processes, for ``bench_stage_targets.py --daily --timeline``
(by hand, never in CI): with ``CL_JOB_PROBE_DIR`` set and this folder on ``PYTHONPATH``,
each ``scripts/*.py`` job appends one JSON line to ``CL_JOB_PROBE_DIR/jobs.jsonl`` at exit:
its script, its log (the job's second argument), the process's start (from ``/proc``,
before the interpreter's own start), its end, its CPU seconds (``getrusage``) and the
number and seconds of its ``os.fsync`` calls. Any other process is left alone. It shadows
another ``sitecustomize`` later on ``PYTHONPATH``.

With the run's job server (crypto_lakehouse/job_server.py) a job is two processes: the job
process Snakemake started, which hands the job over and ends by ``os._exit``, and the
server's forked child that runs it. The job process records itself with ``"handed_over":
true`` (its CPU; the timeline adds it to the job's), and the child records the job, with
the job process's start (passed in ``CL_JOB_PROBE_START``) and its own CPU."""

import os
import sys

_DIR = os.environ.get("CL_JOB_PROBE_DIR")
_SCRIPT = sys.argv[0] if sys.argv else ""
_IN_SERVER = "crypto_lakehouse.job_server" in getattr(sys, "orig_argv", [])
_JOB = os.path.basename(os.path.dirname(_SCRIPT)) == "scripts"

if _DIR and (_JOB or _IN_SERVER):
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

    def _started() -> float:
        """The process's start (epoch seconds): field 22 of /proc/self/stat, in clock
        ticks after boot."""
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            up = float(f.read().split()[0])
        return time.time() - (up - ticks / os.sysconf("SC_CLK_TCK"))

    def _record(**extra) -> None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        start = os.environ.get("CL_JOB_PROBE_START")
        line = {
            "script": os.path.basename(sys.argv[0])[: -len(".py")],
            "log": sys.argv[2] if len(sys.argv) > 2 else None,
            "start": float(start) if start else _started(),
            "end": time.time(),
            "cpu": usage.ru_utime + usage.ru_stime,
            "fsyncs": _fsyncs[0],
            "fsync_s": _fsyncs[1],
            **extra,
        }
        with open(os.path.join(_DIR, "jobs.jsonl"), "a") as f:
            f.write(json.dumps(line) + "\n")

    if _JOB:
        os.fsync = _timed_fsync
        os.environ["CL_JOB_PROBE_START"] = repr(_started())
        atexit.register(_record)
        _exit = os._exit

        def _exit_recorded(status):
            _record(handed_over=True)
            _exit(status)

        os._exit = _exit_recorded
    else:  # the job server: each forked child is a job

        def _in_child() -> None:
            os.fsync = _timed_fsync
            atexit.register(lambda: _record(forked=True))

        os.register_at_fork(after_in_child=_in_child)
