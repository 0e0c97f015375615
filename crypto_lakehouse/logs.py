"""Logging set up once per job (the PyPSA ``configure_logging`` pattern)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


# Set (or run Snakemake with this in the environment) to see job tracebacks on the console.
VERBOSE_ENV = "CRYPTO_LAKEHOUSE_VERBOSE"


class OneLineErrors(logging.Formatter):
    """Console format: an exception as one line naming the log file, which keeps the whole
    traceback (a run of many failing jobs stays readable)."""

    def __init__(self, log_file: str | Path | None):
        super().__init__(FORMAT)
        self.log_file = log_file

    def format(self, record: logging.LogRecord) -> str:
        if not record.exc_info or not self.log_file:
            return super().format(record)
        saved = record.exc_info, record.exc_text
        exc = record.exc_info[1]
        record.exc_info = record.exc_text = None  # the file handler formats the traceback
        try:
            first = str(exc).splitlines()[0] if str(exc) else ""
            return (
                f"{super().format(record)}: {type(exc).__name__}: {first} "
                f"(traceback in {self.log_file})"
            )
        finally:
            record.exc_info, record.exc_text = saved


class LogFile(logging.FileHandler):
    """The job's log file. When a record cannot be written (a full disk), one line on the
    console says so and the file is left alone for the rest of the job, where logging's
    default printed a traceback for every record ("--- Logging error ---"); the console
    keeps every record."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        exc = sys.exc_info()[1]
        if not isinstance(exc, OSError):
            super().handleError(record)
            return
        sys.stderr.write(
            f"crypto_lakehouse: cannot write the log file {self.baseFilename} "
            f"({type(exc).__name__}: {exc}); the console has the job's log\n"
        )
        logging.getLogger().removeHandler(self)
        try:
            self.close()
        except OSError:
            pass  # its buffer cannot be flushed either


def configure_logging(log_file: str | Path | None, level: int = logging.INFO) -> None:
    """Log to the rule's ``log:`` file and to stderr; route uncaught exceptions there too
    (their traceback to the file only, unless ``CRYPTO_LAKEHOUSE_VERBOSE`` is set)."""
    console = logging.StreamHandler(sys.stderr)
    if os.environ.get(VERBOSE_ENV, "") in ("", "0"):
        console.setFormatter(OneLineErrors(log_file))
    handlers: list[logging.Handler] = [console]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(LogFile(log_file))
    logging.basicConfig(level=level, format=FORMAT, handlers=handlers, force=True)

    def _excepthook(exc_type, exc, tb):
        if issubclass(exc_type, KeyboardInterrupt):
            # Ctrl-C (SIGINT): one line, not the traceback of wherever the job was. The
            # process still ends by SIGINT afterwards (Python re-raises it at exit), so the
            # workflow names the job "interrupted (SIGINT)" as before.
            logging.getLogger("crypto_lakehouse").error(
                "interrupted (SIGINT): stopped; what the job had not finished, the next run does"
            )
            return
        logging.getLogger("crypto_lakehouse").error(
            "uncaught exception", exc_info=(exc_type, exc, tb)
        )

    sys.excepthook = _excepthook


def configure_from_snakemake(smk) -> None:
    """Call first thing in every ``scripts/*.py`` wrapper."""
    configure_logging(smk.log[0] if len(smk.log) else None)


# Snakemake writes one log per run to ``.snakemake/log/`` of the directory it runs from and
# never removes one: a daily cron job gathered one more file a day, forever (about 30 KB a
# run for four symbols, more with more jobs). The hooks keep the newest ``keep`` (config key
# ``snakemake_logs_kept``, default 30 in config/config.schema.yaml).
SNAKEMAKE_LOG_SUFFIX = ".snakemake.log"


def prune_snakemake_logs(run_logs, keep: int) -> list[str]:
    """Remove all but the newest ``keep`` Snakemake run logs (``*.snakemake.log``) from the
    folder holding this run's log; ``run_logs`` is what Snakemake hands its onsuccess and
    onerror hooks (a list of paths, maybe empty). Their names begin with the run's start
    time (ISO, so they sort by it); this run's own logs are always kept. Other files are
    left alone, and a log that cannot be removed stays (pruning never fails a run).
    Returns the removed paths."""
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ValueError(f"snakemake_logs_kept must be an integer >= 1, got {keep!r}")
    if isinstance(run_logs, (str, os.PathLike)):
        run_logs = [run_logs]
    current = {Path(p).resolve() for p in run_logs or []}
    removed: list[str] = []
    for folder in {p.parent for p in current}:
        try:
            logs = sorted(
                (p for p in folder.iterdir() if p.name.endswith(SNAKEMAKE_LOG_SUFFIX)),
                key=lambda p: p.name,
            )
        except OSError:
            continue
        for path in logs[: max(len(logs) - keep, 0)]:
            if path.resolve() in current:
                continue
            try:
                path.unlink()
            except OSError:
                continue
            removed.append(str(path))
    return removed
