"""The data-dir lock: one run at a time per data directory, whatever its working directory.

Snakemake locks the working directory (``.snakemake/locks``), not ``data_dir``: two runs
started from different directories with the same config would otherwise delete each
other's outputs and temp files. The run's main process (the one that parses the Snakefile
to schedule jobs, not a job subprocess, a SLURM job or a dry run) takes an exclusive
``fcntl.flock`` on ``{data_dir}/lakehouse/run.lock`` and keeps it until it exits; the OS
drops it when that process dies, even by kill -9, so a crash never leaves a stale lock.

The holder writes its host, PID, start time and working directory into the file, so a
refused run can say who holds it. Holding the lock is also the proof the restart logic
needs: while it is held, no other run on this data dir is alive, so Snakemake's locks on
this data dir's files left by a killed run are stale and are removed
(``recover_snakemake_locks``), and temp files in a directory a job owns are stale.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path

from crypto_lakehouse import io, layout, storage

log = logging.getLogger(__name__)

LOCK_NAME = "run.lock"
# Held shared by every job process for its lifetime: a job that outlives its run's main
# process (the main was killed, a SLURM job still runs) keeps the next run out.
JOBS_LOCK_NAME = "jobs.lock"

# Locks this process holds: resolved lock path -> open descriptor (kept open: closing it
# would release the lock).
_HELD: dict[str, int] = {}


class DataDirBusy(RuntimeError):
    """Another live run holds the data dir."""


def lock_path(data_dir: str | Path) -> Path:
    return layout.lakehouse_dir(data_dir) / LOCK_NAME


def jobs_lock_path(data_dir: str | Path) -> Path:
    return layout.lakehouse_dir(data_dir) / JOBS_LOCK_NAME


def _open_lock_file(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)


def hold_job_lock(data_dir: str | Path) -> bool:
    """Called by a job process (``smk.run_job``): hold the jobs lock shared until it exits.

    Returns False when the file system refuses locks (the job runs anyway), and for an
    S3 data dir (no local lock file to hold; docs/storage.md).
    """
    if storage.is_remote(data_dir):
        return False
    key = str(jobs_lock_path(data_dir).resolve())
    if key in _HELD:
        return True
    fd = _open_lock_file(jobs_lock_path(data_dir))
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)  # only a starting run's probe holds it exclusively
    except OSError as exc:
        os.close(fd)
        log.warning("cannot hold %s (%s); running without it", jobs_lock_path(data_dir), exc)
        return False
    _HELD[key] = fd
    return True


def _jobs_still_running(data_dir: str | Path) -> bool:
    """Whether some job process (of a run whose main process died) still holds the jobs lock."""
    fd = _open_lock_file(jobs_lock_path(data_dir))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def describe_holder(info: dict | None) -> str:
    if not info:
        return "a run that has not yet written its name (host, PID and start time unknown)"
    return (
        f"PID {info.get('pid')} on host {info.get('host')}, started {info.get('started')} "
        f"in {info.get('cwd')}"
    )


def read_holder(data_dir: str | Path) -> dict | None:
    """What the lock file says about its (last) holder; None when empty or unreadable."""
    try:
        text = lock_path(data_dir).read_text()
        return json.loads(text) if text.strip() else None
    except (OSError, ValueError):
        return None


def acquire(data_dir: str | Path) -> dict:
    """Take the data-dir lock for this process (no waiting); returns the holder record.

    Idempotent within a process. Raises DataDirBusy naming the live holder.
    """
    path = lock_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = str(path.resolve())
    if key in _HELD:
        return read_holder(data_dir) or {}
    # Opened without truncation: the file is only rewritten once the lock is ours.
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DataDirBusy(
            f"data dir {data_dir} is in use by another run: {describe_holder(read_holder(data_dir))}"
            f" (lock {path}). Wait for it to finish, or stop it; nothing was started."
        ) from None
    info = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cwd": os.getcwd(),
        "argv": sys.argv,
    }
    # Rewritten in place, never replaced: the lock belongs to this inode.
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(info, sort_keys=True) + "\n").encode(), 0)
    os.fsync(fd)
    _HELD[key] = fd
    return info


def release(data_dir: str | Path) -> None:
    """Give the lock back (the OS does it anyway when the process exits)."""
    key = str(lock_path(data_dir).resolve())
    fd = _HELD.pop(key, None)
    if fd is not None:
        os.close(fd)


def _under(path: str, root: Path, workdir: Path) -> bool:
    p = Path(path)
    resolved = Path(os.path.normpath(p if p.is_absolute() else workdir / p))
    return resolved == root or root in resolved.parents


def recover_snakemake_locks(data_dir: str | Path, workdir: str | Path) -> list[Path]:
    """Remove Snakemake's lock files in ``workdir`` that lock files of ``data_dir``.

    Call only while holding the data-dir lock: then no live run uses this data dir, so such
    locks were left by a run that was killed. Lock files of other data dirs (another config
    run from the same directory) are left alone. Returns the files removed.
    """
    if str(lock_path(data_dir).resolve()) not in _HELD:
        raise RuntimeError("recover_snakemake_locks needs the data-dir lock")
    workdir = Path(workdir).absolute()
    lock_dir = workdir / ".snakemake" / "locks"
    root = Path(os.path.normpath(Path(data_dir).absolute()))
    removed = []
    for lock_file in sorted(lock_dir.glob("*.lock")) if lock_dir.is_dir() else []:
        try:
            entries = [ln.strip() for ln in lock_file.read_text().splitlines() if ln.strip()]
        except OSError:
            continue
        if any(_under(e, root, workdir) for e in entries):
            with contextlib.suppress(FileNotFoundError):
                lock_file.unlink()
            removed.append(lock_file)
    if removed:
        log.warning(
            "removed %d stale Snakemake lock file(s) of %s left by a killed run: %s",
            len(removed),
            data_dir,
            ", ".join(p.name for p in removed),
        )
    return removed


def hold_for_run(data_dir: str | Path, workdir: str | Path, *, main_process: bool, dry_run: bool):
    """Called while the Snakefile is parsed: the run's main process takes the data-dir lock
    and recovers Snakemake's stale locks; job subprocesses, SLURM jobs and dry runs do
    nothing (a dry run writes nothing, so it neither takes nor waits for the lock).

    Returns the holder record, or None when nothing was taken. Raises DataDirBusy.
    """
    if not main_process or dry_run:
        return None
    info = acquire(data_dir)
    if _jobs_still_running(data_dir):
        release(data_dir)
        raise DataDirBusy(
            f"data dir {data_dir}: jobs of an earlier run whose main process is gone are still "
            f"running (they hold {jobs_lock_path(data_dir)}; `fuser -v` on it names them). "
            "Wait for them or stop them; nothing was started."
        )
    recover_snakemake_locks(data_dir, workdir)
    # No job of this run has started and no other run is alive: every temp file in the
    # derived folders is a killed writer's leftover.
    swept = sum(io.remove_stale_temps(root) for root in layout.derived_roots(data_dir))
    if swept:
        log.warning("removed %d temp file(s) left by a killed run in %s", swept, data_dir)
    return info
