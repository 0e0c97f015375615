"""The end of a failed run: which jobs failed and the last error line of each one's log.

Snakemake's own ending ("At least one job did not complete successfully") names no job;
its log file does, one "Error in rule …" block per failed job with the job's log path.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path

from crypto_lakehouse.summary import HELD_BACK

_BLOCK_RE = re.compile(r"^Error in rule (\S+):\s*$")
_FIELD_RE = re.compile(r"^\s+(output|log|wildcards|message): (.*)$")
# The last line of a Python traceback: "package.module.SomeError: message" (also our
# shards.DamagedInput: otherwise the JSONDecodeError it was raised from was taken instead).
_EXCEPTION_RE = re.compile(
    r"^[A-Za-z_][\w.]*(Error|Exception|Failure|Failed|Stopped|Exit|DamagedInput)\b"
)
_LOG_SUFFIX = " (check log file(s) for error details)"
# What Snakemake writes above the "Error in rule" block of a local job ended by a signal
# ("Command '…' died with <Signals.SIGKILL: 9>."): the job's own log stops mid-way, at an
# INFO line or nothing, and says nothing of it.
_DIED_RE = re.compile(r"died with <Signals\.(SIG[A-Z0-9]+): (\d+)>\.?\s*$")
_SIGNAL_WHY = {
    "SIGKILL": "killed (kill -9, or the out-of-memory killer)",
    "SIGTERM": "terminated",
    "SIGINT": "interrupted",
}


@dataclass
class FailedJob:
    rule: str
    output: str = ""
    log: str = ""
    wildcards: str = ""
    message: str = ""
    signal: bool = False  # ended by a signal (Snakemake's "died with <Signals.…>" line)


def failed_jobs(snakemake_log) -> list[FailedJob]:
    """The failed jobs of a run, from its Snakemake log file(s) (``onerror`` gets a list),
    in the order they failed."""
    paths = [snakemake_log] if isinstance(snakemake_log, (str, Path)) else snakemake_log
    lines: list[str] = []
    for path in paths or []:
        try:
            lines += Path(path).read_text(errors="replace").splitlines()
        except OSError:
            continue
    jobs: list[FailedJob] = []
    current: FailedJob | None = None
    died = ""  # the signal that ended the job of the next block, from the lines above it
    for line in lines:
        m = _BLOCK_RE.match(line)
        if m:
            current = FailedJob(m.group(1), message=died, signal=bool(died))
            jobs.append(current)
            died = ""
            continue
        d = _DIED_RE.search(line)
        if d:
            name = d.group(1)
            died = f"the job was {_SIGNAL_WHY.get(name, 'ended by a signal')} ({name})"
        if current is None:
            continue
        f = _FIELD_RE.match(line)
        if f:
            value = f.group(2).removesuffix(_LOG_SUFFIX).strip()
            if f.group(1) == "message" and value == "None":
                continue  # keeps the signal found above, if any
            setattr(current, f.group(1), "" if value == "None" else value)
        elif line and not line.startswith(" "):
            current = None  # the block ended
    return jobs


# A message that ends with ":" continues on indented lines (the files a download missed):
# the first few of them join the line, so it says what failed, while it stays this short.
_CONTINUATION_LINES, _MAX_CHARS = 2, 500


def last_error_line(log_path: str | Path) -> str:
    """The exception line closest to the end of a job log, else its last non-empty line;
    when the line ends with ":", its first indented continuation lines are appended, the
    last one shortened with "…" to keep it within ``_MAX_CHARS`` (the exception line itself
    is never cut). A log
    that ends inside a line on a full disk says so: its last error may not be the job's."""
    try:
        text = Path(log_path).read_text(errors="replace")
    except OSError:
        return f"(no log at {log_path})"
    line = _last_error_line(text)
    if line is None:
        return f"(empty log{_disk_note(log_path)})"
    if not text.endswith("\n") and (note := _disk_note(log_path)):
        # Log records end with a newline: this log was cut short, by the full disk it is on.
        return f"{line} (the log is cut short{note})"
    return line


def _last_error_line(text: str) -> str | None:
    lines = [ln.rstrip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln.strip()]
    line = _exception_line(lines)
    if line is not None:
        return line
    return lines[-1].strip() if lines else None


def _exception_line(lines: list[str]) -> str | None:
    """The exception line closest to the end of ``lines`` (non-empty, right-stripped), with
    its continuation lines; None when the log holds none."""
    for i in range(len(lines) - 1, -1, -1):
        if not _EXCEPTION_RE.match(lines[i]):
            continue
        line = lines[i]
        if line.endswith(":"):
            more = lines[i + 1 : i + 1 + _CONTINUATION_LINES]
            for n, part in enumerate(itertools.takewhile(lambda m: m[:1].isspace(), more)):
                joined = f"{line}{' ' if n == 0 else '; '}{part.strip()}"
                if len(joined) > _MAX_CHARS:
                    # Shortened, not dropped: its start names what failed (the file, the
                    # symbol) after a line that only says how many.
                    if len(line) + 1 < _MAX_CHARS - 20:
                        line = joined[: _MAX_CHARS - 1].rstrip() + "…"
                    break
                line = joined
        return line
    return None


# Free space below which an empty or cut-short log is blamed on its disk.
_FULL_DISK_BYTES = 1 << 20


def _disk_note(log_path: str | Path) -> str:
    """For an empty or cut-short log: its disk's free space when (nearly) none is left, the
    likely reason the job could not write (all of) its log."""
    import shutil

    try:
        free = shutil.disk_usage(Path(log_path).parent).free
    except OSError:
        return ""
    if free >= _FULL_DISK_BYTES:
        return ""
    return f"; the disk holding it is full: {free} bytes free"


# The executor's advice that ends its message (the SLURM plugin's): the log path follows.
_MESSAGE_TAIL_RE = re.compile(r"\s*For further error details see .*$")


def _cause(job: FailedJob) -> str:
    """The job's last error line; when its log holds no exception (the job was killed from
    outside: a SLURM job cancelled, out of its time or memory; a local job ended by a signal,
    kill -9 or the out-of-memory killer), the executor's message or the signal, which says
    so, followed by where the log stops."""
    message = _MESSAGE_TAIL_RE.sub("", job.message).strip()
    if not job.log:
        return message
    log = job.log.split(",")[0].strip()
    line = last_error_line(log)
    if not message:
        return line
    if job.signal and not line.startswith(("(empty log", "(no log at")):
        # The signal ended the job, whatever its log says last: after Ctrl-C a download
        # job's log ends with "RuntimeError: Event loop is closed" (a thread's callback to
        # the closed loop), which was given alone, as if the job had failed by itself.
        return f"{message} (the job's log ends: {line})"
    try:
        text = Path(log).read_text(errors="replace")
    except OSError:
        text = ""
    if _exception_line([ln.rstrip() for ln in text.splitlines() if ln.strip()]) is not None:
        return line
    if line.startswith(("(empty log", "(no log at")):
        return f"{message} {line}"
    return f"{message} (the job's log ends: {line})"


_SUMMARY_STAGE_RE = re.compile(r"SymbolsFailed: (\S+) ")


def _held_back_only(cause: str) -> bool:
    """Whether a failed job is a summary that failed only because every symbol it names
    was skipped for an earlier stage's failure, in each of its trade types."""
    return all(HELD_BACK in part for part in cause.split(" | "))


def _grouped(snakemake_log) -> tuple[list[tuple[FailedJob, str]], list[str]]:
    """The failed jobs with their causes, but the summaries held back by the others' failures
    (one failed download fails the summaries of every later stage, each repeating its
    error): those are given as their stage names only. When no other job failed in this run
    (nothing above to point to), every job is listed in full."""
    causes = [(job, _cause(job)) for job in failed_jobs(snakemake_log)]
    held = [(job, cause) for job, cause in causes if _held_back_only(cause)]
    if len(held) == len(causes):
        return causes, []
    stages = []
    for job, cause in held:
        m = _SUMMARY_STAGE_RE.search(cause)
        stages.append(m.group(1) if m else job.rule)
    return [jc for jc in causes if jc not in held], stages


def _held_back_line(stages: list[str]) -> str:
    return f"summaries of {', '.join(stages)}: their symbols were {HELD_BACK} (above)"


def failure_report(snakemake_log) -> str:
    """One line per failed job (rule, output or wildcards) and its last error line; the
    summaries held back by those failures on one more line."""
    jobs, held_stages = _grouped(snakemake_log)
    if not jobs:
        return ""
    out = [f"crypto_lakehouse: {len(jobs) + len(held_stages)} job(s) failed:"]
    for job, cause in jobs:
        what = job.output or job.wildcards
        out.append(f"  {job.rule} {what}".rstrip())
        out.append(f"    {cause}")
        if job.log:
            out.append(f"    log: {job.log}")
    if held_stages:
        out.append(f"  and the {_held_back_line(held_stages)}")
    return "\n".join(out)


def failure_lines(snakemake_log) -> list[str]:
    """``"{rule}: {last error line} (log: {path})"`` per failed job, for the report page
    a failed run writes; the summaries held back by those failures on one more line."""
    jobs, held_stages = _grouped(snakemake_log)
    lines = [f"{job.rule}: {cause}" + (f" (log: {job.log})" if job.log else "")
             for job, cause in jobs]  # fmt: skip
    if held_stages:
        lines.append(f"The {_held_back_line(held_stages)}")
    return lines
