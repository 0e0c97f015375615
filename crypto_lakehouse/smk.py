"""Glue between a rule and a package entry point.

Each ``scripts/<rule>.py`` is two lines: it hands one entry point to :func:`run_job`, which
sets up logging and calls it with the keyword arguments the rule passed as JSON
(``job_json`` in ``rules/common.smk``: the rule's args plus its named inputs and outputs).
Rules with few jobs may use ``script:`` instead and :func:`run_rule`. Scripts never read
the config.
"""

from __future__ import annotations

import gc
import importlib.abc
import inspect
import json
import logging
import os
import sys
import threading
from typing import Any, Callable

from crypto_lakehouse.layout import stats_path_for
from crypto_lakehouse.logs import configure_from_snakemake, configure_logging


def _named(namedlist) -> dict[str, Any]:
    return {k: v for k, v in namedlist.items()}


def build_kwargs(smk, func: Callable) -> dict[str, Any]:
    """Keyword arguments of a ``script:`` rule: its named params, inputs and outputs."""
    kwargs: dict[str, Any] = {}
    for source in (_named(smk.params), _named(smk.input), _named(smk.output)):
        for key, value in source.items():
            if key in kwargs:
                raise TypeError(f"argument {key!r} given twice to {func.__name__}")
            kwargs[key] = value
    return with_stats_path(func, kwargs)


def with_stats_path(func: Callable, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Add ``stats_path`` (derived from ``report_path``) when the entry point takes it."""
    accepted = inspect.signature(func).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in accepted.values())
    wants_stats = "stats_path" in accepted or takes_any
    if wants_stats and "stats_path" not in kwargs and "report_path" in kwargs:
        kwargs["stats_path"] = stats_path_for(kwargs["report_path"])
    return kwargs


def apply_storage_settings(kwargs: dict[str, Any]) -> None:
    """Take the job's ``storage`` settings (config block ``storage``, non-defaults only) out
    of its arguments and apply them to this process (crypto_lakehouse.storage.configure)."""
    from crypto_lakehouse import storage

    storage.configure(kwargs.pop("storage", None))


def run_rule(smk, func: Callable) -> Any:
    configure_from_snakemake(smk)
    kwargs = build_kwargs(smk, func)
    apply_storage_settings(kwargs)
    logging.getLogger("crypto_lakehouse").info(
        "rule %s: %s(%s)", smk.rule, func.__name__, ", ".join(sorted(kwargs))
    )
    return func(**kwargs)


class _PandasRefused(importlib.abc.MetaPathFinder):
    """Makes ``import pandas`` fail as if pandas were not installed (see ``refuse_pandas``)."""

    def find_spec(self, name, path=None, target=None):
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError(
                f"No module named {name!r}: this job refuses pandas "
                "(crypto_lakehouse.smk.refuse_pandas; pass uses_pandas=True to run_job)",
                name=name,
            )
        return None


def refuse_pandas() -> bool:
    """Make this process run as if pandas were not installed; False when it is imported
    already (then nothing changes).

    pyarrow imports pandas, when installed, at its first numpy conversion (``pa.array`` of
    an ndarray, ``ChunkedArray.to_numpy``) only to ask whether the object is a pandas one:
    ~0.2 CPU s per job process for nothing, since these jobs never build pandas objects.
    Without pandas pyarrow takes its own numpy paths (pandas is an optional dependency of
    pyarrow), the same bytes.
    """
    if "pandas" in sys.modules:
        return False
    if not any(isinstance(f, _PandasRefused) for f in sys.meta_path):
        sys.meta_path.insert(0, _PandasRefused())
    return True


def run_job(func: Callable, argv: list[str] | None = None, *, uses_pandas: bool = True) -> Any:
    """``scripts/<rule>.py JOB_JSON LOG_FILE``: run one job of a shell: rule.

    ``uses_pandas=False``: the job's code never needs pandas (``refuse_pandas``); a job whose
    stage does not use it says so, to save the import. Called with the process's own
    ``sys.argv`` (``argv`` None: a script, whose process ends after the job), it then skips
    the collection at exit (``skip_exit_collection``)."""
    ends_process = argv is None
    argv = sys.argv if argv is None else argv
    if not uses_pandas:
        refuse_pandas()
    if len(argv) != 3:
        raise SystemExit(f"usage: {argv[0]} JOB_JSON LOG_FILE (called by the workflow's rules)")
    configure_logging(argv[2])
    kwargs = json.loads(argv[1])
    apply_storage_settings(kwargs)
    kwargs = with_stats_path(func, kwargs)
    if "data_dir" in kwargs:
        # Keeps a next run out while this job lives, even if its run's main process died.
        from crypto_lakehouse import lock

        lock.hold_job_lock(kwargs["data_dir"], argv[2])
    shard_context = {
        key: kwargs.pop(key)
        for key in ("upstream_shard_reports", "retry_generation")
        if key in kwargs
    }
    if shard_context:
        from crypto_lakehouse import shards

        shards.configure_job(**shard_context)
    logger = logging.getLogger("crypto_lakehouse")
    logger.info("%s(%s)", func.__name__, ", ".join(sorted(kwargs)))
    forked = os.environ.get("CRYPTO_LAKEHOUSE_JOB_SERVER_CHILD")
    if forked:  # crypto_lakehouse.job_server
        logger.info("run by the run's job server (process %s)", forked)
    try:
        return _call_job(func, kwargs, shard_context, logger)
    finally:
        if ends_process:
            skip_exit_collection()


def _call_job(func: Callable, kwargs: dict[str, Any], shard_context: dict, logger) -> Any:
    try:
        return func(**kwargs)
    except Exception as exc:
        # A shard job whose failed symbols are recorded in its report ends successfully, so
        # that the shard's other symbols go on to the next stages; the stage's summary job
        # fails naming them, and the report's retry_generation reruns the shard next time
        # (crypto_lakehouse.shards). A fatal failure (a host ban) still fails the job.
        if shard_context.get("retry_generation") is None:
            raise
        from crypto_lakehouse.shards import ShardFailed

        if not isinstance(exc, ShardFailed) or exc.fatal:
            raise
        logger.error("%s; the job ends successfully: the next run retries them", exc)
        return None


def cancel_scheduler_timers() -> int:
    """Cancel the pending ``threading.Timer`` threads of this process; returns how many.

    For the workflow's ``onsuccess``/``onerror`` (the main process, after the scheduler has
    returned). Snakemake's scheduler starts a non-daemon ``threading.Timer`` of one
    ``--max-jobs-per-timespan`` period (default 1 s) each time it loops with jobs still
    waiting, to wake itself again; nothing waits for those wake-ups once the run has ended,
    yet the interpreter joins every non-daemon thread before it exits, so every run ended up
    to a second after its last job (measured: ~1.0 s of a 5-6 s ``aws_download``;
    docs/benchmarks.md, issue 11, seventh part). Cancelling a timer only skips its
    callback (a semaphore release for the finished scheduler).
    """
    timers = [
        t
        for t in threading.enumerate()
        if isinstance(t, threading.Timer) and t is not threading.current_thread()
    ]
    for timer in timers:
        timer.cancel()
    return len(timers)


def skip_exit_collection() -> None:
    """Freeze the objects the garbage collector tracks now (``gc.freeze``, O(1); counting
    them would walk them all).

    For objects that live until the process ends: the main process's at the end of the
    Snakefile's parse (the loaded modules and the rules) and in ``onsuccess``/``onerror``
    (after the run), a job script's after its entry point (``run_job``). The interpreter's
    full collections, while planning and at exit, walk every tracked object, most of them
    the imported modules' functions, classes and dicts, which are never garbage: ~0.1 s at
    the exit of every Snakemake run with its ~2,000 modules, 0.1-0.2 s of planning the full
    universe, ~0.03 s at the exit of a job with pyarrow and numpy (docs/benchmarks.md,
    issue 11, thirty-fifth part). Those collections skip frozen objects; the rest of the
    exit is unchanged (``atexit`` handlers, the logging shutdown, stream flushes, the
    modules' teardown by reference count), and objects created later are collected as
    before. Not collected any more: objects already unreachable in a reference cycle when
    this is called; their finalizers (``__del__``) never run. In a process that goes on
    (Snakemake used as a library, several runs in one process) such garbage stays until
    the process ends.
    """
    gc.freeze()


def record_params_without_pandas() -> bool:
    """Let Snakemake's params records import pandas only when a job param could be a pandas
    object; returns False (nothing changed) if this Snakemake's internals differ.

    For the workflow's main process. Snakemake 9 compares each existing output's recorded
    params with the job's (the ``params`` rerun trigger) through a serializer chosen once:
    the pandas one whenever pandas is *installed*, and that one starts with ``import
    pandas`` — ~0.35 CPU s of most Snakemake starts here (docs/benchmarks.md, issue 11,
    eleventh part), for a workflow whose params are strings and numbers. A value can only be a
    pandas object if pandas is imported already, so choosing the pandas serializer only
    when ``"pandas" in sys.modules`` gives the same records for every value.
    """
    try:
        import snakemake.persistence as persistence
    except ImportError:
        return False
    # PersistenceBase since Snakemake 9.? (file and database records), Persistence before.
    base = getattr(persistence, "PersistenceBase", None) or getattr(
        persistence, "Persistence", None
    )
    if not (
        isinstance(getattr(base, "__dict__", {}).get("_serialize_param"), property)
        and callable(getattr(base, "_serialize_param_pandas", None))
        and callable(getattr(base, "_serialize_param_builtin", None))
    ):
        return False

    def serializer(self):
        if "pandas" in sys.modules:
            return self._serialize_param_pandas
        return self._serialize_param_builtin

    base._serialize_param = property(serializer)
    return True


def retry_with_fresh_params() -> bool:
    """Let a job Snakemake retries (``--retries``) evaluate its params again, as it does its
    resources; returns False (nothing changed) if this Snakemake's internals differ.

    For the workflow's main process. Snakemake 9 (``jobs.py``, ``Job.attempt``'s setter)
    clears a job's resources when it raises the attempt, so the resource functions see the
    new attempt (``sizing.retry_factor`` doubles the runtime and memory), but keeps the
    params it evaluated for the first attempt. With ``cluster.launcher: srun`` the rule's
    threads, memory and runtime reach srun only through a params function
    (``job_python`` in rules/common.smk): the second attempt of a job SLURM had ended past
    its time limit asked the same ``--time`` again and was ended again (seen on the test
    cluster, tests/slurm/test_slurm_srun_time_limit.py). The executor plugin reads the
    resources themselves and was not affected. Params are evaluated again only for a
    retried job; their records (the ``params`` rerun trigger) are written when the job
    ends, from whichever attempt succeeded, and no rule's params depend on the attempt
    other than through the resources.
    """
    try:
        from snakemake.jobs import Job
    except ImportError:
        return False
    attempt = Job.__dict__.get("attempt")
    if not (isinstance(attempt, property) and attempt.fset and "_params" in Job.__slots__):
        return False
    set_attempt = attempt.fset
    if getattr(set_attempt, "_fresh_params", False):
        return True  # patched already (the Snakefile read twice in one process)

    def set_attempt_fresh_params(self, value):
        set_attempt(self, value)
        self._params = None

    set_attempt_fresh_params._fresh_params = True
    Job.attempt = attempt.setter(set_attempt_fresh_params)
    return True
