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

The lock files live in the run directory (config ``run_dir``): for a local data dir always
``{data_dir}/lakehouse`` (one run per data dir, whatever ``run_dir`` says), for an ``s3://``
data dir the local run directory. A flock cannot span machines, so an S3 data dir is also
guarded by a **lease object** ``{data_dir}/lakehouse/run.lease.json`` (holder id, host, PID,
start, heartbeat): a run refuses to start while another run's lease is live, renews its own
every ``LEASE_HEARTBEAT_S`` (and stops, ``stop_this_run``, if it finds it taken over) and
deletes it when it exits. A lease is stale once its
heartbeat is older than ``LEASE_STALE_S`` (its run died without deleting it), or at once
when its holder ran on this host and its process is gone (kill -9, then a plain rerun).
The heartbeat's age is the store's: the object's LastModified against the Date of the
answer that read it, so that no machine's clock counts (before 2026-12-06 it was the
holder's clock against the reader's: a machine whose clock ran more than ``LEASE_STALE_S``
ahead took over the lease of a live run).
Taking, renewing and deleting the lease are compare-and-swaps on the object (conditional
requests: ``If-None-Match: *`` to create it, ``If-Match: <etag>`` to take over a stale one,
renew it or delete it; storage.py sends them through botocore, pyarrow.fs cannot): of runs
starting at the same moment exactly one gets it. A store that does not honour conditional
writes (measured once per process) falls back to write, wait ``LEASE_SETTLE_S``, read back
(the one whose record was overwritten backs off), which leaves open writes landing less
than that apart; a warning says so (docs/storage.md, "Shared buckets").
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
import uuid
from pathlib import Path

from crypto_lakehouse import layout, storage

log = logging.getLogger(__name__)

# Locks this process holds: resolved lock path -> open descriptor (kept open: closing it
# would release the lock).
_HELD: dict[str, int] = {}


class DataDirBusy(RuntimeError):
    """Another live run holds the data dir."""


# The lease of an S3 data dir: renewed every minute, stale after ten without renewal; on a
# store without conditional writes, the read-back after writing it waits long enough for a
# concurrent writer's PUT to land.
LEASE_HEARTBEAT_S = 60.0
LEASE_STALE_S = 600.0
LEASE_SETTLE_S = 1.0

# Leases this process holds: lease URI -> _Lease.
_LEASES: dict[str, _Lease] = {}


def lock_dir(data_dir: str | Path, run_dir: str | Path | None = None) -> Path:
    """Where the lock files are: ``{data_dir}/lakehouse`` for a local data dir (whatever
    the run directory), the local run directory for an S3 data dir."""
    if storage.is_remote(data_dir):
        return Path(run_dir if run_dir is not None else layout.default_run_dir(str(data_dir)))
    return Path(layout.default_run_dir(os.fspath(data_dir)))


def lock_path(data_dir: str | Path, run_dir: str | Path | None = None) -> Path:
    return Path(layout.run_lock_path(str(lock_dir(data_dir, run_dir))))


def jobs_lock_path(data_dir: str | Path, run_dir: str | Path | None = None) -> Path:
    return Path(layout.jobs_lock_path(str(lock_dir(data_dir, run_dir))))


def _open_lock_file(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)


def hold_job_lock(data_dir: str | Path, log_path: str | None = None) -> bool:
    """Called by a job process (``smk.run_job``): hold the jobs lock shared until it exits.

    For an S3 data dir the lock is in the run directory, found from the job's log path
    (``{run_dir}/logs/…``); without one there is nothing to hold. Returns False when the
    file system refuses locks (the job runs anyway) or nothing was held.
    """
    run_dir = None
    if storage.is_remote(data_dir):
        try:
            run_dir = layout.run_dir_of_log(log_path or "")
        except ValueError:
            return False
    path = jobs_lock_path(data_dir, run_dir)
    key = str(path.resolve())
    if key in _HELD:
        return True
    fd = _open_lock_file(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)  # only a starting run's probe holds it exclusively
    except OSError as exc:
        os.close(fd)
        log.warning("cannot hold %s (%s); running without it", path, exc)
        return False
    _HELD[key] = fd
    return True


def _jobs_still_running(data_dir: str | Path, run_dir: str | Path | None = None) -> bool:
    """Whether some job process (of a run whose main process died) still holds the jobs lock."""
    fd = _open_lock_file(jobs_lock_path(data_dir, run_dir))
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


def read_holder(data_dir: str | Path, run_dir: str | Path | None = None) -> dict | None:
    """What the lock file says about its (last) holder; None when empty or unreadable."""
    try:
        text = lock_path(data_dir, run_dir).read_text()
        return json.loads(text) if text.strip() else None
    except (OSError, ValueError):
        return None


def acquire(data_dir: str | Path, run_dir: str | Path | None = None) -> dict:
    """Take the data-dir lock for this process (no waiting); returns the holder record.

    Idempotent within a process. Raises DataDirBusy naming the live holder.
    """
    path = lock_path(data_dir, run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = str(path.resolve())
    if key in _HELD:
        return read_holder(data_dir, run_dir) or {}
    # Opened without truncation: the file is only rewritten once the lock is ours.
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DataDirBusy(
            f"data dir {data_dir} is in use by another run: "
            f"{describe_holder(read_holder(data_dir, run_dir))}"
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


def release(data_dir: str | Path, run_dir: str | Path | None = None) -> None:
    """Give the lock back (the OS does it anyway when the process exits)."""
    key = str(lock_path(data_dir, run_dir).resolve())
    fd = _HELD.pop(key, None)
    if fd is not None:
        os.close(fd)


def _under(path: str, root: Path, workdir: Path) -> bool:
    p = Path(path)
    resolved = Path(os.path.normpath(p if p.is_absolute() else workdir / p))
    return resolved == root or root in resolved.parents


def recover_snakemake_locks(
    data_dir: str | Path, workdir: str | Path, run_dir: str | Path | None = None
) -> list[Path]:
    """Remove Snakemake's lock files in ``workdir`` that lock files of ``data_dir`` or of
    the run directory (where Snakemake's outputs are).

    Call only while holding the data-dir lock: then no live run uses this data dir, so such
    locks were left by a run that was killed. Lock files of other data dirs (another config
    run from the same directory) are left alone. Returns the files removed.
    """
    if str(lock_path(data_dir, run_dir).resolve()) not in _HELD:
        raise RuntimeError("recover_snakemake_locks needs the data-dir lock")
    workdir = Path(workdir).absolute()
    snakemake_locks = workdir / ".snakemake" / "locks"
    local_dirs = [] if storage.is_remote(data_dir) else [Path(data_dir)]
    if run_dir is not None:
        local_dirs.append(Path(run_dir))
    roots = [Path(os.path.normpath(workdir / d)) for d in local_dirs]
    removed = []
    lock_files = sorted(snakemake_locks.glob("*.lock")) if snakemake_locks.is_dir() else []
    for lock_file in lock_files:
        try:
            entries = [ln.strip() for ln in lock_file.read_text().splitlines() if ln.strip()]
        except OSError:
            continue
        if any(_under(e, root, workdir) for e in entries for root in roots):
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


def hold_for_run(
    data_dir: str | Path,
    workdir: str | Path,
    *,
    main_process: bool,
    dry_run: bool,
    run_dir: str | Path | None = None,
):
    """Called while the Snakefile is parsed: the run's main process takes the data-dir lock
    (and for an S3 data dir its lease) and recovers Snakemake's stale locks; job
    subprocesses, SLURM jobs and dry runs do nothing (a dry run writes nothing, so it
    neither takes nor waits for the lock).

    Returns the holder record, or None when nothing was taken. Raises DataDirBusy.
    """
    if not main_process or dry_run:
        return None
    info = acquire(data_dir, run_dir)
    if _jobs_still_running(data_dir, run_dir):
        release(data_dir, run_dir)
        raise DataDirBusy(
            f"data dir {data_dir}: jobs of an earlier run whose main process is gone are still "
            f"running (they hold {jobs_lock_path(data_dir, run_dir)}; `fuser -v` on it names "
            "them). Wait for them or stop them; nothing was started."
        )
    if storage.is_remote(data_dir):
        try:
            take_lease(data_dir, run_dir, on_lost=stop_this_run)
        except BaseException:
            release(data_dir, run_dir)
            raise
    recover_snakemake_locks(data_dir, workdir, run_dir)
    # No job of this run has started and no other run is alive: every temp file in the
    # derived folders is a killed writer's leftover (S3 holds none: storage.py).
    roots = list(layout.derived_roots(data_dir))
    # The run dir too, unless it is one of them ({data_dir}/lakehouse): a run_dir set in the
    # config, and the local default run dir of an S3 data dir (its summaries, reports, logs).
    if run_dir is not None and Path(run_dir) not in roots:
        roots.append(Path(run_dir))
    swept = sum(storage.remove_stale_temps(root) for root in roots)
    if swept:
        log.warning("removed %d temp file(s) left by a killed run in %s", swept, data_dir)
    return info


# ---------------------------------------------------------------- the lease of an S3 data dir
def read_lease(data_dir: str | Path) -> dict | None:
    """The lease record of an S3 data dir; None when there is none (or it is unreadable)."""
    try:
        lease = storage.read_json(layout.data_lease_path(data_dir), default=None)
    except ValueError:
        return None
    return lease if isinstance(lease, dict) else None


def _process_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, TypeError, ValueError):
        return True
    return True


def lease_is_live(lease: dict | None, now: float | None = None, age_s: float | None = None) -> bool:
    """Whether a lease still keeps other runs out: renewed within ``LEASE_STALE_S``, and,
    when its holder ran on this host, that process still exists. ``age_s``: the seconds
    since the lease object was written, by the store's clock (``storage.Versioned``); only
    without it, the record's ``heartbeat_unix`` against ``now`` (this machine's clock)."""
    if not lease:
        return False
    now = time.time() if now is None else now
    try:
        age = now - float(lease["heartbeat_unix"])
    except (KeyError, TypeError, ValueError):
        return False
    if age_s is not None:
        age = age_s
    if age > LEASE_STALE_S:
        return False
    if lease.get("host") == socket.gethostname() and not _process_alive(lease.get("pid")):
        return False
    return True


def describe_lease(lease: dict, age_s: float | None = None) -> str:
    beat = lease.get("heartbeat_unix")
    if age_s is not None:
        ago = f"{age_s:.0f} s ago"
    elif isinstance(beat, (int, float)):
        ago = f"{time.time() - float(beat):.0f} s ago"
    else:
        ago = "?"
    return f"{describe_holder(lease)}, run dir {lease.get('run_dir')}, last heartbeat {ago}"


class _Lease:
    """A lease this process holds: its record, the etag of our last write (None on a
    store without conditional writes) and the heartbeat thread."""

    def __init__(self, path, record: dict, etag: str | None, deletes_conditional: bool):
        self.path = path
        self.record = record
        self.etag = etag
        self.deletes_conditional = deletes_conditional
        self.on_lost = None  # called by the heartbeat thread when another run took it
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None


def _lease_bytes(record: dict) -> bytes:
    return storage.json_text(record).encode()


def _parse_lease(content: bytes | None) -> dict | None:
    try:
        lease = json.loads(content) if content else None
    except ValueError:
        return None
    return lease if isinstance(lease, dict) else None


def _busy(data_dir, path, current: dict, age_s: float | None = None) -> DataDirBusy:
    return DataDirBusy(
        f"data dir {data_dir} is in use by another run: {describe_lease(current, age_s)} (lease "
        f"{path}; stale {LEASE_STALE_S / 60:.0f} min after its last heartbeat). Wait for "
        "it to finish, or stop it; nothing was started."
    )


def _lost_race(data_dir, current: dict | None) -> DataDirBusy:
    return DataDirBusy(
        f"data dir {data_dir}: another run took the lease at the same moment "
        f"({describe_lease(current) if current else 'its record is gone'}); nothing was started."
    )


def _conditional_support(data_dir) -> storage.ConditionalSupport:
    """What the bucket's store honours (measured once per process, storage.py); without
    conditional writes, a warning naming the race that stays open."""
    probe = layout.data_lease_path(data_dir).with_name(f"run.lease.probe-{uuid.uuid4().hex}")
    support = storage.conditional_support(probe)
    if not support.writes:
        log.warning(
            "the store of %s does not honour conditional writes (If-None-Match / If-Match): "
            "the run lease falls back to write, wait %g s, read back; two runs on different "
            "machines whose lease writes land at nearly the same moment can both proceed "
            '(docs/storage.md, "Shared buckets")',
            data_dir,
            LEASE_SETTLE_S,
        )
    return support


def _new_record(run_dir) -> dict:
    now = time.time()
    return {
        "holder": uuid.uuid4().hex,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        "heartbeat_unix": now,
        "cwd": os.getcwd(),
        "run_dir": os.path.abspath(run_dir) if run_dir is not None else None,
    }


def _ours_now(path, record: dict) -> tuple[dict | None, str | None]:
    """After a lost condition: the current lease, and its etag if it is still our own
    record (a write of ours that landed although its answer was lost and the request was
    retried), else None."""
    found = storage.read_versioned(path)
    current = _parse_lease(found[0]) if found else None
    if current == record:
        return current, found[1]
    return current, None


def _claim_conditional(data_dir, path, record: dict) -> str:
    """Compare-and-swap: create the lease if there is none (If-None-Match: *), or replace
    a stale one only if nobody replaced it since we read it (If-Match: its etag). Of
    several runs doing this at once exactly one succeeds. Returns our lease's etag."""
    found, current, age_s = _lease_at(path)
    if lease_is_live(current, age_s=age_s):
        raise _busy(data_dir, path, current, age_s)
    try:
        if found is None:
            return storage.put_if_absent(path, _lease_bytes(record))
        log.warning(
            "taking over the stale lease of %s: %s",
            data_dir,
            describe_lease(current, age_s) if current else "an unreadable record",
        )
        return storage.put_if_unchanged(path, _lease_bytes(record), found.etag)
    except storage.PreconditionFailed:
        current, etag = _ours_now(path, record)
        if etag is None:
            raise _lost_race(data_dir, current) from None
        return etag


def _claim_by_read_back(data_dir, path, record: dict) -> None:
    """A store without conditional writes: write the lease, wait, read it back; of runs
    writing within the same moment, the one whose record was overwritten backs off."""
    _, current, age_s = _lease_at(path)
    if lease_is_live(current, age_s=age_s):
        raise _busy(data_dir, path, current, age_s)
    if current:
        log.warning(
            "taking over the stale lease of %s: %s", data_dir, describe_lease(current, age_s)
        )
    storage.write_json(path, record)
    time.sleep(LEASE_SETTLE_S)
    back = read_lease(data_dir)
    if not back or back.get("holder") != record["holder"]:
        raise _lost_race(data_dir, back)


def _claim(data_dir, run_dir=None) -> _Lease:
    """Take the lease (no registration, no heartbeat): a _Lease, or DataDirBusy."""
    path = layout.data_lease_path(data_dir)
    support = _conditional_support(data_dir)
    record = _new_record(run_dir)
    if support.writes:
        etag = _claim_conditional(data_dir, path, record)
    else:
        _claim_by_read_back(data_dir, path, record)
        etag = None
    return _Lease(path, record, etag, support.deletes)


def take_lease(data_dir: str | Path, run_dir: str | Path | None = None, on_lost=None) -> dict:
    """Take the lease of an S3 data dir for this process (idempotent) and renew it until
    the process exits; raises DataDirBusy naming a live holder. ``on_lost(lease)`` is
    called (on the heartbeat thread) if a heartbeat finds that another run took the lease
    over: a run's main process stops then (``stop_this_run``)."""
    key = str(layout.data_lease_path(data_dir))
    if key in _LEASES:
        return _LEASES[key].record
    lease = _claim(data_dir, run_dir)
    lease.on_lost = on_lost
    _LEASES[key] = lease
    lease.thread = threading.Thread(
        target=_renew_lease, args=(lease,), name="lease-heartbeat", daemon=True
    )
    lease.thread.start()
    atexit.register(release_lease, data_dir)
    return lease.record


def renew_once(lease: _Lease) -> bool:
    """One heartbeat: rewrite the lease with the time now, only if it is still ours.
    False when it is not (another run took it over, or it was deleted): stop renewing.
    A store error is logged and the next beat tries again."""
    beat = {**lease.record, "heartbeat_unix": time.time()}
    try:
        if lease.etag is not None:
            try:
                lease.etag = storage.put_if_unchanged(lease.path, _lease_bytes(beat), lease.etag)
            except storage.PreconditionFailed:
                current, etag = _ours_now(lease.path, beat)
                if etag is None:
                    log.error("the lease %s is no longer ours (now: %s)", lease.path, current)
                    return False
                lease.etag = etag
        else:
            # No compare-and-swap: a takeover landing between this read and the write is
            # overwritten (the fallback's race, docs/storage.md).
            current = storage.read_json(lease.path, default=None)
            if not current or current.get("holder") != lease.record["holder"]:
                log.error("the lease %s is no longer ours (now: %s)", lease.path, current)
                return False
            storage.write_json(lease.path, beat)
        lease.record.update(beat)
    except Exception as exc:  # a flaky store: try again at the next beat
        log.warning("lease %s not renewed: %s", lease.path, exc)
    return True


def _renew_lease(lease: _Lease) -> None:
    while not lease.stop.wait(LEASE_HEARTBEAT_S):
        if not renew_once(lease):
            if lease.on_lost is not None and not lease.stop.is_set():
                lease.on_lost(lease)
            return


def stop_this_run(lease: _Lease) -> None:
    """The lease of the run in this process was taken over: its heartbeat went stale (no
    renewal for ``LEASE_STALE_S``: the machine slept, or lost the store), and another run
    now holds the data dir. Two runs must not write at once, so this one stops: SIGTERM to
    this process, which Snakemake's scheduler takes as "start no new job, exit once the
    running ones finish" (their writes are atomic and a next run redoes what they leave)."""
    current, age_s = read_lease_at(lease.path)
    how = (
        f"was taken over by another run ({describe_lease(current, age_s)}) after this run's "
        "heartbeat went stale"
        if current
        else "is gone (deleted by something other than this run), so nothing keeps other runs out"
    )
    log.error(
        'the lease %s %s; this run stops: no new job is started (docs/storage.md, "Shared '
        'buckets")',
        lease.path,
        how,
    )
    os.kill(os.getpid(), signal.SIGTERM)


def read_lease_at(path) -> tuple[dict | None, float | None]:
    """The lease record at ``path`` (None when absent or unreadable) and its age by the
    store's clock (``storage.Versioned.age_s``; None when not known)."""
    try:
        _, current, age_s = _lease_at(path)
    except Exception:  # only for a message: the store may be failing
        return None, None
    return current, age_s


def _lease_at(path) -> tuple[storage.Versioned | None, dict | None, float | None]:
    """The lease object at ``path`` as read (None when absent), its record (None when
    absent or unreadable) and its age by the store's clock (``storage.Versioned.age_s``)."""
    found = storage.read_versioned(path)
    if found is None:
        return None, None, None
    return found, _parse_lease(found.body), found.age_s


def release_lease(data_dir: str | Path) -> None:
    """Stop renewing this process's lease of ``data_dir`` and delete it if still ours."""
    lease = _LEASES.pop(str(layout.data_lease_path(data_dir)), None)
    if lease is None:
        return
    lease.stop.set()
    if lease.thread is not None:
        lease.thread.join(timeout=30)  # a beat in flight changes the etag
    with contextlib.suppress(Exception):
        if lease.etag is not None and lease.deletes_conditional:
            try:
                storage.delete_if_unchanged(lease.path, lease.etag)
            except storage.PreconditionFailed:
                pass  # taken over (or gone): not ours to delete
            return
        # No conditional DELETE: read, compare, delete (a takeover landing in between
        # would be deleted; it is stale-proof only on stores with If-Match on DELETE).
        current = read_lease(data_dir)
        if current and current.get("holder") == lease.record["holder"]:
            storage.delete(lease.path)
