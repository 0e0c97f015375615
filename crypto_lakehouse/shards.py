"""Shards: a batch of symbols processed by one job, so the fixed cost of a job (a Python
process, imports, Snakemake's scheduling, a SLURM submission) is paid once per batch.

A symbol's shard is a hash of its name modulo the shard count (``shard_of``): stable across
runs and machines, and adding a symbol never moves another one to a different shard. Every
per-symbol stage uses the same assignment, so shard ``k`` of one stage depends only on
shard ``k`` of the stages before it.

Inside a job (``run_shard``) the symbols run one after another with everything imported
once; a network-bound stage may run them at once on one event loop instead
(``run_shard_concurrently``: the download job, so that its requests in flight are shared by
the shard rather than drained at every symbol's end). Each symbol keeps what a per-symbol job had: its own report and stats files (same
paths as before), its own incremental skip (inside the stage's entry point) and its own
failure isolation: a failing symbol is logged and recorded, the others still run, and
``ShardFailed`` names the failed symbols at the end. The job's own output, the *shard
report*, lists each symbol's status and report path (see docs/summaries.md).

A workflow job (``smk.run_job`` with ``retry_generation`` among its arguments) then ends
successfully all the same, so that the shard's other symbols go on to the next stages
(``configure_job``): the next stage's job skips the symbols its upstream shard reports
list as not done (``upstream_failed``), the stage's summary job fails naming the failed
symbols, and the shard report's ``retry_generation`` (one more than the job was given) is
a changed param for the next run, which reruns the shard. A ``fatal`` failure (a host ban)
still fails the job.

A symbol that fails because a file an earlier stage wrote is missing or unreadable
(``DamagedInput``, raised by the readers inside ``reading_output_of``) is repaired the same
way one stage up: the unreadable file is removed, and the upstream shard report that lists
the symbol gets one more retry generation, so the next run reruns that shard (whose
incremental skip rebuilds a missing output), then this one.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import zlib
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from crypto_lakehouse.io import write_json
from crypto_lakehouse.smk import with_stats_path

log = logging.getLogger(__name__)

__all__ = [
    "DamagedInput",
    "MIN_SYMBOLS_PER_CORE_SHARD",
    "SYMBOLS_PER_AUTO_SHARD",
    "NOT_DONE",
    "ShardFailed",
    "ShardPart",
    "auto_shard_count",
    "configure_job",
    "for_each_symbol",
    "group_by_shard",
    "read_report",
    "reading_output_of",
    "repair_damaged_report",
    "run_shard",
    "run_shard_concurrently",
    "run_shard_parts",
    "shard_of",
    "symbol_path",
    "symbol_reports",
]


class ShardFailed(RuntimeError):
    """Some symbols of a shard failed (the others completed); the message names them.
    ``fatal``: a fatal exception (a host ban) stopped the symbols not yet started."""

    def __init__(self, message: str, fatal: bool = False):
        super().__init__(message)
        self.fatal = fatal


class DamagedInput(Exception):
    """A file that ``stage`` wrote and a later stage reads is missing or unreadable (damaged
    on disk, truncated by a copy, removed by hand). ``missing``: it was not there at all.
    ``removable``: false for a file that stage did not write (a legacy file used in place),
    which is never removed: its rows may be nobody's to rebuild. ``others``: more files of
    ``stage`` with the same defect, removed with it (so one rerun of ``stage`` mends them all)."""

    def __init__(
        self, path, stage: str, problem: str, missing: bool, removable: bool = True, others=()
    ):
        if removable:
            super().__init__(f"{path}, written by {stage}, {problem}")
        else:  # before 2026-12-06 "written by aws_parse, …, aws_parse did not write it"
            super().__init__(
                f"{path}, a file this pipeline did not write ({stage} has no record of it: "
                f"a legacy file used in place?), {problem}"
            )
        self.path, self.stage, self.missing = str(path), stage, missing
        self.removable = removable
        self.others = tuple(str(p) for p in others)


@contextlib.contextmanager
def reading_output_of(
    stage: str, path, removable: Callable[[], bool] | None = None
) -> Iterator[None]:
    """Around a read of ``path``, a file ``stage`` wrote: a missing file or one pyarrow cannot
    decode raises ``DamagedInput`` (repaired by the next run, see the module's docstring).
    Errors of the storage itself (a failing S3 request) are left as they are: the file may
    well be fine. ``removable`` (asked only then): whether ``stage`` wrote this very file,
    for a stage that keeps files it did not write (default: it did)."""
    try:
        yield
    except FileNotFoundError as exc:
        raise DamagedInput(path, stage, "is missing", missing=True) from exc
    except Exception as exc:
        from crypto_lakehouse import storage  # the readers have it loaded already

        if not storage.is_damaged_file_error(exc):
            raise
        problem = f"is unreadable ({type(exc).__name__}: {exc})"
        ours = True if removable is None else removable()
        raise DamagedInput(path, stage, problem, missing=False, removable=ours) from exc


def read_report(path, stage: str | None = None) -> dict:
    """A JSON report ``stage`` wrote (a shard report, a symbol's report or stats beside it;
    default: the stage its path is under) that a later job reads. A missing one, or one that
    is not a JSON object (torn by a crash with ``storage.fsync: false``, zeroed by a disk
    fault), raises ``DamagedInput``: repaired as a damaged data file is, since no run would
    otherwise ever write it again (Snakemake takes an output that exists for done)."""
    import json

    from crypto_lakehouse import layout, storage

    stage = stage or layout.report_name(path).split("/", 1)[0]
    try:
        data = storage.read_bytes(path)
    except FileNotFoundError as exc:
        raise DamagedInput(path, stage, "is missing", missing=True) from exc
    try:
        report = json.loads(data)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        problem = f"is unreadable ({type(exc).__name__}: {exc})"
        raise DamagedInput(path, stage, problem, missing=False) from exc
    if not isinstance(report, dict):
        raise DamagedInput(path, stage, "is not a JSON object", missing=False)
    return report


def repair_damaged_report(exc: DamagedInput, shard_report=None, symbol: str = "") -> str:
    """Remove the unreadable report of ``exc`` and say how the next run rebuilds it: a shard
    report is a Snakemake output, rebuilt because it is missing; a symbol's report or stats
    by a rerun of ``shard_report``, the shard listing ``symbol`` (asked for as in
    ``_repair_damaged``). Returns the message, also set on ``exc``."""
    from crypto_lakehouse import layout

    remove = _remove_shard_report if layout.is_shard_report(exc.path) else _remove
    done = [remove(exc.path)]
    if shard_report is None:
        done.append(f"the next run reruns the job that writes it ({exc.stage}), then this one")
    elif _ask_rerun(shard_report, symbol, exc.path):
        done.append(f"the next run rebuilds it ({layout.report_name(shard_report)})")
    else:
        done.append(f"rebuilt by a run of {exc.stage} for {symbol} (--forcerun {exc.stage})")
    exc.args = (f"{exc.args[0]}: {'; '.join(done)}",)
    return exc.args[0]


# Statuses of a shard report entry that mean "not done": the symbol's next stages skip it.
NOT_DONE = ("failed", "not_run", "upstream_failed")


class _JobContext:
    """What the workflow tells a shard job beyond its symbols (``configure_job``)."""

    def __init__(self) -> None:
        self.upstream_failed: dict[str, str] = {}  # symbol -> why it is not done upstream
        self.upstream_shard_reports: list[str] = []
        self.retry_generation: int | None = None  # None: not a workflow shard job
        # symbol -> archive bytes its upstream entries record as done (``ARCHIVE_BYTES``)
        self.upstream_bytes: dict[str, int] = {}


_JOB = _JobContext()


def configure_job(*, upstream_shard_reports=(), retry_generation: int | None = None) -> None:
    """Set by ``smk.run_job`` before a shard job runs: the upstream shard reports (their
    symbols that are not done are skipped here, as ``upstream_failed``) and the retry
    generation the shard report records (see the module's docstring)."""
    from crypto_lakehouse import layout

    _JOB.upstream_failed = {}
    _JOB.upstream_bytes = {}
    _JOB.upstream_shard_reports = [str(p) for p in upstream_shard_reports]
    for path in upstream_shard_reports:
        try:
            report = read_report(path)
        except DamagedInput as exc:
            if exc.missing:
                continue
            repair_damaged_report(exc)
            raise
        for name, entry in (report.get("symbols") or {}).items():
            symbol = name.rsplit("/", 1)[-1]  # REST entries are "klines-1m/BTCUSDT"
            if entry.get("status") in NOT_DONE:
                _JOB.upstream_failed.setdefault(
                    symbol, _upstream_reason(layout.report_name(path), entry)
                )
            elif isinstance(entry.get(ARCHIVE_BYTES), int):
                # Several upstream reports (gen_kline: parse and REST): the largest figure.
                _JOB.upstream_bytes[symbol] = max(
                    _JOB.upstream_bytes.get(symbol, 0), entry[ARCHIVE_BYTES]
                )
    _JOB.retry_generation = retry_generation


# Shard report entry field: the bytes of the archives (zips) behind the symbol's outputs
# once its job completed it. The download records those it holds (its entry point returns
# them); a later stage copies its upstream entries' figure for each symbol it completed.
# The SLURM runtime of the next job compares them: bytes upstream now minus bytes this
# stage covered last time = the archives it has still to work through (docs/cluster.md).
ARCHIVE_BYTES = "archive_bytes"


def _record_archive_bytes(entry: dict, result: Any) -> None:
    """Copy ``ARCHIVE_BYTES`` of a symbol's result (a dict, e.g. the download's stats)
    into its shard report entry."""
    if isinstance(result, dict) and isinstance(result.get(ARCHIVE_BYTES), int):
        entry[ARCHIVE_BYTES] = result[ARCHIVE_BYTES]


# How the error of a symbol skipped here starts (summaries tell such entries apart by it).
UPSTREAM_REASON_START = "not done upstream ("

# The upstream error carried into a skipped symbol's entry: enough to say what failed (the
# file and the HTTP status of a download) without the whole traceback.
UPSTREAM_ERROR_CHARS = 400


def _upstream_reason(report_name: str, entry: dict) -> str:
    """Why a symbol is skipped here, naming the upstream shard and its error: the summary
    that fails for it (and the failure list at the end of the run) then says what went
    wrong, not only where. An entry that was itself skipped upstream already says both."""
    status, error = entry.get("status"), " ".join(str(entry.get("error") or "").split())
    if status == "upstream_failed" and error:
        return error
    why = f"{UPSTREAM_REASON_START}{report_name}: {status})"
    if not error:
        return why
    if len(error) > UPSTREAM_ERROR_CHARS:
        error = error[: UPSTREAM_ERROR_CHARS - 3] + "..."
    return f"{why}: {error}"


def _skipped_upstream(symbol: str, entry: dict) -> bool:
    """Record ``symbol`` as ``upstream_failed`` when an upstream shard did not finish it: its
    previous report and outputs stay as they are; the upstream rerun brings it back here."""
    reason = _JOB.upstream_failed.get(symbol)
    if reason is None:
        return False
    entry.update(status="upstream_failed", error=reason)
    log.warning("%s: skipped, %s", symbol, reason)
    return True


def shard_of(symbol: str, shards: int) -> int:
    """The shard of a symbol: CRC-32 of its name modulo ``shards`` (stable everywhere;
    Python's ``hash`` of a str changes per process)."""
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards!r}")
    return zlib.crc32(symbol.encode()) % shards


# "shards: auto": enough symbols per job that its fixed cost (process, imports, reading the
# limits, Snakemake's scheduling; ~0.3-1 s) is small beside the work, yet enough jobs on a
# large universe to spread over many cores or cluster nodes.
SYMBOLS_PER_AUTO_SHARD = 32
# ... and on a small universe, enough jobs for the cores of a local run (``parallel``), as
# long as each still carries this many symbols: one trade type of 30 symbols on 8 cores is
# 4 jobs per stage, not one job on one core.
MIN_SYMBOLS_PER_CORE_SHARD = 4


def _power_of_two_at_least(n: float) -> int:
    count = 1
    while count < n:
        count *= 2
    return count


def _power_of_two_at_most(n: int) -> int:
    count = 1
    while count * 2 <= n:
        count *= 2
    return count


def auto_shard_count(
    symbols: int, per_shard: int = SYMBOLS_PER_AUTO_SHARD, parallel: int = 1
) -> int:
    """The shard count of ``shards: auto`` for a trade type listing ``symbols`` symbols: the
    smallest power of two >= symbols / per_shard (at least 1), or, when more, the smallest
    power of two >= ``parallel`` (the jobs of this trade type a local run can run at once)
    but no more than leaves ``MIN_SYMBOLS_PER_CORE_SHARD`` symbols per shard.

    A power of two changes only when the universe (or the cores) doubles or halves, so a
    symbol listed or delisted almost never reassigns the others (a new count reruns every
    shard job once). ``parallel`` must be the same wherever the workflow is planned: a SLURM
    job re-plans on its compute node with other cores (rules/common.smk pins it)."""
    if per_shard < 1:
        raise ValueError(f"per_shard must be >= 1, got {per_shard!r}")
    if parallel < 1:
        raise ValueError(f"parallel must be >= 1, got {parallel!r}")
    by_size = _power_of_two_at_least(symbols / per_shard)
    by_cores = min(
        _power_of_two_at_least(parallel),
        _power_of_two_at_most(symbols // MIN_SYMBOLS_PER_CORE_SHARD),
    )
    return max(by_size, by_cores)


def group_by_shard(symbols: Iterable[str], shards: int) -> dict[int, list[str]]:
    """Non-empty shards only, each with its symbols sorted: ``{shard: [symbol, ...]}``."""
    groups: dict[int, list[str]] = {}
    for symbol in sorted(set(symbols)):
        groups.setdefault(shard_of(symbol, shards), []).append(symbol)
    return dict(sorted(groups.items()))


def symbol_path(directory: str | Path, symbol: str) -> str:
    """A per-symbol record below ``directory``: ``{directory}/{symbol}.json``."""
    return f"{directory}/{symbol}.json"


def _symbol_kwargs(symbol: str, common: dict, symbol_paths: dict, symbol_values: dict) -> dict:
    kwargs = dict(common, symbol=symbol)
    for key, directory in symbol_paths.items():
        kwargs[key] = symbol_path(directory, symbol)
    for key, values in symbol_values.items():
        if symbol in values:
            kwargs[key] = values[symbol]
    return kwargs


def run_shard(
    func: Callable[..., Any],
    *,
    symbols: list[str],
    shard_report: str | Path,
    symbol_paths: dict[str, str],
    symbol_values: dict[str, dict[str, Any]] | None = None,
    shard: int | None = None,
    fatal: tuple[type[BaseException], ...] = (),
    at_once: int = 1,
    **common: Any,
) -> dict:
    """Call ``func`` once per symbol, in order (``at_once`` > 1: that many at a time, on
    threads), and write the shard report.

    ``func`` gets ``common`` plus ``symbol``, ``{key: f"{dir}/{symbol}.json"}`` for each entry
    of ``symbol_paths`` (``report_path`` is required), the symbol's entries of
    ``symbol_values`` (sparse per-symbol values, e.g. a contract size override) and
    ``stats_path`` derived from its report path. A symbol whose call raises is recorded as
    failed; an exception of a ``fatal`` type (a host ban) also stops the remaining symbols.
    Raises ``ShardFailed`` after the shard report was written when any symbol failed.
    """
    part = ShardPart(func, symbols, symbol_paths, symbol_values or {}, common)
    return run_shard_parts(
        [part], shard_report=shard_report, shard=shard, fatal=fatal, at_once=at_once
    )


class ShardPart:
    """One entry point over its symbols within a shard job (e.g. the REST job's klines, then
    its funding). ``label`` prefixes the symbols in the shard report (``"{label}/{symbol}"``)
    when one job runs several parts."""

    def __init__(self, func, symbols, symbol_paths, symbol_values=None, common=None, label=""):
        if "report_path" not in symbol_paths:
            raise ValueError("symbol_paths must give the report_path directory")
        self.func = func
        self.symbols = list(symbols)
        self.symbol_paths = symbol_paths
        self.symbol_values = symbol_values or {}
        self.common = common or {}
        self.label = label


def _import_lazy_numpy_modules() -> None:
    """Import numpy's lazily loaded ``numpy.ma`` before a job's symbols run on threads.

    NumPy 2 loads ``np.ma`` on first access (``numpy.__getattr__``), which is not safe when
    several threads get there at once: ``np.unique`` asks for it, and a REST job's symbols
    (8 at a time, without pandas, which would have imported it) planning their requests at
    the same moment made one of them fail with "RecursionError: maximum recursion depth
    exceeded" in ``import numpy.ma`` (one symbol of 280 in a run, at random)."""
    import numpy.ma  # noqa: F401


def run_shard_parts(
    parts: list[ShardPart],
    *,
    shard_report: str | Path,
    shard: int | None = None,
    fatal: tuple[type[BaseException], ...] = (),
    at_once: int = 1,
) -> dict:
    """``run_shard`` over several parts in one job, in order, with one shard report: a
    ``fatal`` exception in one part also stops the symbols of the parts after it.

    ``at_once`` > 1: the symbols run on that many threads (for network-bound entry points
    whose shared state is thread-safe: the REST client and its limiter, the stages on object
    storage), started in order, part after part, on one pool: a later part's symbols are
    queued once a symbol of the part before has ended, not after its last one (the REST
    job's funding symbols run beside its last klines symbols; no part reads another's
    output). Waiting for that first end keeps a ban met by the first requests (a ``fatal``
    exception) from reaching the later parts: they are then not started. A ``fatal``
    exception stops every symbol not yet started (``not_run``); those already running end
    on their own."""
    started = time.monotonic()
    entries: dict[str, dict] = {}
    stop: list[BaseException] = []  # the first fatal exception, once raised
    lock = threading.Lock()

    def one(part: ShardPart, symbol: str, kwargs: dict) -> None:
        entry = entries[_entry_name(part, symbol)]
        with lock:
            stopped_by = stop[0] if stop else None
        if stopped_by is not None:
            entry.update(status="not_run", error=f"stopped: {stopped_by}")
            return
        if _skipped_upstream(symbol, entry):
            return
        _remove_previous_report(kwargs)
        t0 = time.monotonic()
        try:
            _record_archive_bytes(entry, part.func(**kwargs))
            entry["status"] = "ok"
        except Exception as exc:  # one broken symbol never stops the others
            _record_failure(part, symbol, entry, exc)
            if fatal and isinstance(exc, fatal):
                with lock:
                    stop.append(exc)
        entry["seconds"] = round(time.monotonic() - t0, 3)

    from crypto_lakehouse.layout import folders_scanned_once

    with folders_scanned_once():  # the symbols' stale-file clean-up scans each folder once
        # The shard report lists the symbols in order, whatever order they finish in.
        by_part = [
            [(part, symbol, _start_symbol(part, symbol, entries)) for symbol in part.symbols]
            for part in parts
        ]
        calls = [call for part_calls in by_part for call in part_calls]
        if at_once <= 1 or len(calls) <= 1:
            for part, symbol, kwargs in calls:
                one(part, symbol, kwargs)
        else:
            _import_lazy_numpy_modules()
            futures: list = []
            with ThreadPoolExecutor(max_workers=min(at_once, len(calls))) as pool:
                before: list = []  # the futures of the last part queued
                for part_calls in filter(None, by_part):
                    if before:
                        wait(before, return_when=FIRST_COMPLETED)
                    log.info(
                        "%s: %d symbols, %d at a time",
                        part_calls[0][0].func.__name__, len(part_calls), at_once,
                    )  # fmt: skip
                    before = [pool.submit(one, *call) for call in part_calls]
                    futures += before
                for future in futures:
                    future.result()  # one() records every failure itself
    return _finish_shard(parts, entries, started, shard, shard_report, fatal=bool(stop))


async def run_shard_concurrently(
    func: Callable[..., Any],
    *,
    symbols: list[str],
    shard_report: str | Path,
    symbol_paths: dict[str, str],
    symbol_values: dict[str, dict[str, Any]] | None = None,
    shard: int | None = None,
    at_once: int = 16,
    **common: Any,
) -> dict:
    """``run_shard`` for a coroutine function: the symbols' calls run concurrently on the
    running event loop, ``at_once`` at most (each holds its symbol's listing and state in
    memory: a bound however many symbols a shard has); the caller bounds the shared work,
    e.g. requests in flight.

    Same guarantees per symbol as ``run_shard``: its own paths and report (the previous one
    removed first), its failure recorded in the shard report while the others complete, and
    ``ShardFailed`` after the shard report was written when any symbol failed.
    """
    import asyncio  # here: the other stages' jobs need not import it (~0.015 s)

    started = time.monotonic()
    part = ShardPart(func, symbols, symbol_paths, symbol_values or {}, common)
    entries: dict[str, dict] = {}
    # The shard report lists the symbols in order; their calls' arguments are built once.
    calls = {symbol: _start_symbol(part, symbol, entries) for symbol in part.symbols}
    running = asyncio.Semaphore(max(1, at_once))

    async def one(symbol: str) -> None:
        async with running:
            kwargs = calls[symbol]
            entry = entries[_entry_name(part, symbol)]
            if _skipped_upstream(symbol, entry):
                return
            _remove_previous_report(kwargs)
            t0 = time.monotonic()
            try:
                _record_archive_bytes(entry, await func(**kwargs))
                entry["status"] = "ok"
            except Exception as exc:  # one broken symbol never stops the others
                _record_failure(part, symbol, entry, exc)
            except asyncio.CancelledError as exc:
                # Raised by the symbol's own code (a library's inner task), not a
                # cancellation of this job: a failure of that symbol like any other.
                if asyncio.current_task().cancelling():
                    raise
                _record_failure(part, symbol, entry, exc)
            entry["seconds"] = round(time.monotonic() - t0, 3)

    await asyncio.gather(*(one(symbol) for symbol in part.symbols))
    return _finish_shard([part], entries, started, shard, shard_report)


def _entry_name(part: ShardPart, symbol: str) -> str:
    return f"{part.label}/{symbol}" if part.label else symbol


def _start_symbol(part: ShardPart, symbol: str, entries: dict[str, dict]) -> dict:
    """The symbol's keyword arguments; registers its shard report entry (in call order)."""
    kwargs = with_stats_path(
        part.func, _symbol_kwargs(symbol, part.common, part.symbol_paths, part.symbol_values)
    )
    entries[_entry_name(part, symbol)] = {"report": str(kwargs["report_path"])}
    return kwargs


def _remove_previous_report(kwargs: dict) -> None:
    # The previous run's report must not outlive a failure of this run (a per-symbol job's
    # output was deleted by Snakemake before it reran).
    Path(kwargs["report_path"]).unlink(missing_ok=True)


def _record_failure(part: ShardPart, symbol: str, entry: dict, exc: BaseException) -> None:
    if isinstance(exc, DamagedInput):
        _repair_damaged(symbol, exc)
    log.exception("%s %s failed", part.func.__name__, symbol, exc_info=exc)
    entry.update(status="failed", error=f"{type(exc).__name__}: {exc}")


_UPSTREAM_REPORT_LOCK = threading.Lock()


def _repair_damaged(symbol: str, exc: DamagedInput) -> None:
    """Remove the damaged file and have the next run rebuild it: one more retry generation
    in each upstream shard report of ``exc.stage`` listing ``symbol`` (the upstream stage
    rebuilds a missing output; an unreadable one left in place it might take as done).
    The failure's message then says what was done."""
    from crypto_lakehouse import layout

    if not exc.removable:  # the writer keeps it as it is: rerunning the writer mends nothing
        exc.args = (
            f"{exc.args[0]}: not removed, since its rows may exist nowhere else. Move it out "
            "of the data dir (keep a copy) or put a readable copy in its place, then run "
            f"again: {exc.stage} then rebuilds it from the sources the data dir holds for it, "
            "if any, and this symbol runs again",
        )
        return
    done = [] if exc.missing else [_remove(exc.path)]
    if exc.others:
        gone = [_remove(p) for p in exc.others]
        done.append(f"{gone.count('removed')} of the {len(gone)} other file(s) removed too")
    asked = [
        layout.report_name(path)
        for path in _JOB.upstream_shard_reports
        if layout.report_name(path).split("/", 1)[0] == exc.stage
        and _ask_rerun(path, symbol, exc.path)
    ]
    if asked:
        done.append(f"the next run rebuilds it ({', '.join(asked)}), then this symbol")
    else:  # not a workflow job, or no upstream shard of this job lists the symbol
        done.append(f"rebuilt by a run of {exc.stage} for this symbol (--forcerun {exc.stage})")
    exc.args = (f"{exc.args[0]}: {'; '.join(done)}",)


def _remove(path) -> str:
    from crypto_lakehouse import storage

    try:
        storage.delete(path)
        return "removed"
    except OSError as why:
        return f"could not be removed ({why})"


def _remove_shard_report(path) -> str:
    """Remove an unreadable shard report, and the run summaries that read it: up to date,
    a summary would keep the report from being rebuilt (Snakemake does not rebuild a
    missing input of an output that is up to date), so the next run would have nothing to
    do, leaving the shard's symbols without a report."""
    from crypto_lakehouse import layout

    done = _remove(path)
    for summary in layout.summaries_reading(path):
        _remove(summary)
    return done


@contextlib.contextmanager
def _editing(shard_report) -> Iterator[None]:
    """Exclusive while a job edits an upstream shard report: the threads of one job (REST
    symbols) and the jobs of a run that read the same upstream shard at once (agg_klines
    at two intervals read one aws_parse aggTrades shard), on this host or, the run dir on
    a shared file system, another. Unlocked, two read-modify-writes lost the first's edit.
    A file system that refuses locks: the edit goes on unlocked, with a warning."""
    import fcntl
    import os

    from crypto_lakehouse import layout

    path = layout.shard_report_edits_lock_path(shard_report)
    with _UPSTREAM_REPORT_LOCK:
        if path is None:
            yield
            return
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as exc:
                log.warning("cannot lock %s (%s); editing %s unlocked", path, exc, shard_report)
            yield
        finally:
            os.close(fd)  # releases the lock


def ask_upstream_rerun(stage: str, symbol: str, why: str) -> list[str]:
    """Have the next run rerun the upstream ``stage`` shard(s) of this job that list
    ``symbol`` (one more retry generation, ``why`` recorded under ``rerun_asked``), for a
    reason other than a damaged file: the names of the shard reports asked (none outside a
    workflow job). E.g. the klines parse, on a monthly zip cut short, for its download job
    to take the daily zips of the missing days (``archive.sync._learn_monthly_gaps``)."""
    from crypto_lakehouse import layout

    return [
        layout.report_name(path)
        for path in _JOB.upstream_shard_reports
        if layout.report_name(path).split("/", 1)[0] == stage
        and _ask_rerun(path, symbol, why, record="rerun_asked")
    ]


def _ask_rerun(shard_report, symbol: str, damaged_path, record: str = "damaged") -> bool:
    """Whether the next run reruns ``shard_report``'s job: one more retry generation in it
    if it lists ``symbol`` (a changed param), recording the damaged file. A shard report
    that is missing, or unreadable itself (then removed here), is rebuilt anyway. The
    read-modify-write holds the run dir's ``reports.lock`` (``_editing``)."""
    with _editing(shard_report):
        try:
            report = read_report(shard_report)
        except DamagedInput as exc:
            if not exc.missing:
                _remove_shard_report(shard_report)
            return True
        symbols = report.get("symbols") if isinstance(report, dict) else None
        if not any(n.rsplit("/", 1)[-1] == symbol for n in symbols or {}):
            return False
        generation = report.get("retry_generation")
        report["retry_generation"] = (generation if isinstance(generation, int) else 0) + 1
        report.setdefault(record, {})[symbol] = str(damaged_path)
        write_json(shard_report, report)
    return True


def _finish_shard(parts, entries: dict, started: float, shard, shard_report, fatal=False) -> dict:
    """Write the shard report; raise ``ShardFailed`` naming the failed symbols, if any
    (``upstream_failed`` ones are not this job's failures: they are listed apart)."""
    failed = [s for s, e in entries.items() if e["status"] in ("failed", "not_run")]
    for name, entry in entries.items():
        covered = _JOB.upstream_bytes.get(name.rsplit("/", 1)[-1])
        if entry["status"] == "ok" and covered is not None:
            entry.setdefault(ARCHIVE_BYTES, covered)
    report = {
        "shard": shard,
        "symbols": entries,
        "failed": failed,
        "upstream_failed": [s for s, e in entries.items() if e["status"] == "upstream_failed"],
        "seconds": round(time.monotonic() - started, 3),
    }
    if _JOB.retry_generation is not None:
        report["retry_generation"] = _JOB.retry_generation + (1 if failed else 0)
    write_json(shard_report, report)
    names = "+".join(p.func.__name__ for p in parts)
    if failed:
        shown = ", ".join(failed[:20]) + (
            f" and {len(failed) - 20} more" if len(failed) > 20 else ""
        )
        first = entries[failed[0]]["error"]
        others = "; the other symbols completed" if len(failed) < len(entries) else ""
        raise ShardFailed(
            f"{names}: {len(failed)} of {len(entries)} symbols failed: {shown} "
            f"(first error: {first}){others}",
            fatal=fatal,
        )
    log.info("%s: %d symbols in %.1f s", names, len(entries), report["seconds"])
    return report


def symbol_reports(shard_report: dict) -> list[str]:
    """The per-symbol report paths a shard report lists, in symbol order."""
    return [e["report"] for _, e in sorted(shard_report.get("symbols", {}).items())]


def for_each_symbol(func: Callable[..., Any], **options: Any) -> Callable[..., dict]:
    """The entry point of a shard rule: ``run_shard`` over ``func`` (for ``smk.run_job``).
    On object storage the symbols run ``storage.symbols_at_once`` at a time: their
    requests are round trips, and one symbol at a time would leave the job waiting."""

    def shard_entry(**kwargs):
        if "data_dir" in kwargs and "at_once" not in options:
            from crypto_lakehouse import storage

            options_here = dict(options, at_once=storage.symbols_at_once(kwargs["data_dir"]))
        else:
            options_here = options
        return run_shard(func, **options_here, **kwargs)

    shard_entry.__name__ = f"{func.__name__}_shard"
    return shard_entry
