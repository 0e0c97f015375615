"""Atomic file writing: every file the pipeline writes goes through here.

A file is written to a temporary sibling and renamed into place, so a run killed at any
moment leaves either the old file or the new one, never a half-written file that a later
run could mistake for complete. Temporary names start with ``.tmp-`` and end with ``.part``
so that globs such as ``*.pqt`` or ``*.zip`` never pick them up.

Durability (config ``storage.fsync``, on by default): a rename is atomic but not durable.
After an OS crash or a power loss the journal may hold the new name while the data blocks
were never written, so a ``.verified`` marker or a state record written next could vouch
for an empty or truncated file. Each commit therefore fsyncs the file, renames it, then
fsyncs the directory (the rename itself), and only then returns: anything written after it
(markers, reports, state) refers to a file that is on the disk (inside a job's commit group,
:func:`deferred_dir_syncs`, the folder fsync waits for the next record instead, with the
same guarantee for that record). A job sets the switch once
per process (:func:`configure`, from ``crypto_lakehouse.smk.run_job``); scratch data dirs on
tmpfs may turn it off.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import json
import os
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

if TYPE_CHECKING:
    import pyarrow as pa

# Folders known to exist: a downloader creates thousands of files in a few folders, and a
# mkdir per file (a failing syscall plus a stat) was a visible share of its CPU time.
_KNOWN_DIRS: set[str] = set()
_TMP_COUNTER = itertools.count()

# storage.fsync: set once per process by configure() (a job's entry point).
_FSYNC = True


def configure(*, fsync: bool = True) -> None:
    """Set this process's durability switch (``storage.fsync`` of the config)."""
    global _FSYNC
    _FSYNC = bool(fsync)


def fsync_enabled() -> bool:
    return _FSYNC


# A group of deferred folder fsyncs (``deferred_dir_syncs``), or None: every commit then
# fsyncs its folder at once. _GROUP_LOCK guards it (writers may run on threads).
_GROUP: _PendingDirs | None = None
_GROUP_LOCK = threading.Lock()
# Held while a barrier takes its pending folders and fsyncs them: a barrier on another thread
# (a download or REST job writes its symbols' files on several threads) returns only after
# the folders taken before it are on the disk, not while they are still being synced.
_SYNC_LOCK = threading.Lock()
_RECORD_WRITE = threading.local()  # .active: this thread is writing a record


class _PendingDirs:
    """Folders whose latest renames are not yet durable: those of data files (synced before
    the next record) and those of records (synced when the group ends). Dicts keep the
    order of first use."""

    def __init__(self) -> None:
        self.data: dict[str, None] = {}
        self.records: dict[str, None] = {}


def _commit_dir(folder: Path) -> None:
    """After a rename into ``folder``: fsync it now, or, inside ``deferred_dir_syncs``,
    remember it for the next barrier (data) or the group's end (records)."""
    group = _GROUP
    if group is None or not _FSYNC:
        fsync_dir(folder)
        return
    with _GROUP_LOCK:
        pending = group.records if getattr(_RECORD_WRITE, "active", False) else group.data
        pending[str(folder)] = None


def _sync_pending(which: str) -> None:
    """fsync each pending folder of ``which`` ("data" or "records") once, then forget them."""
    group = _GROUP
    if group is None:
        return
    with _SYNC_LOCK:
        with _GROUP_LOCK:
            folders = list(getattr(group, which))
            getattr(group, which).clear()
        for folder in folders:
            try:
                fsync_dir(folder)
            except FileNotFoundError:  # removed since (e.g. a stale output folder): nothing to sync
                pass


def sync_pending_data_dirs() -> None:
    """The folders of the data files committed so far are made durable (their renames are on
    the disk). Part of the record barrier: a record written next vouches for durable files."""
    _sync_pending("data")


@contextlib.contextmanager
def writing_record() -> Iterator[None]:
    """Mark the commits of this block (on this thread) as a record's: inside
    ``deferred_dir_syncs`` its folder is synced when the group ends, not before the next
    record."""
    before = getattr(_RECORD_WRITE, "active", False)
    _RECORD_WRITE.active = True
    try:
        yield
    finally:
        _RECORD_WRITE.active = before


@contextlib.contextmanager
def deferred_dir_syncs() -> Iterator[None]:
    """A job's commit group: fewer folder fsyncs, the same durability order.

    Inside it a file is still fsynced before its rename, but the folder fsync that makes the
    rename durable is deferred: the folders of data files are synced once each at the next
    record barrier (before any report, state record or marker that could vouch for them is
    written), the folders of records once each when the group ends (when the job's entry
    point returns or raises). A symbol whose outputs are 13 files in 13 folders pays one
    journal commit for all 13 renames instead of 13, and a job's records one per folder
    instead of one per record. Records among themselves are not ordered until the group
    ends: none vouches for another one's rename (a record lost in a crash means the stage
    redoes that symbol's work). Nested groups are one group.
    """
    global _GROUP
    with _GROUP_LOCK:
        outer = _GROUP is not None
        if not outer:
            _GROUP = _PendingDirs()
    if outer:
        yield
        return
    ok = False
    try:
        yield
        ok = True
    finally:
        try:
            _sync_pending("data")
            _sync_pending("records")
        except OSError:
            if ok:
                raise
            # The body's exception is the one to report; this one only in the log.
            import logging

            logging.getLogger(__name__).exception("folder fsync after a failed job")
        finally:
            with _GROUP_LOCK:
                _GROUP = None


def with_deferred_dir_syncs(func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` (a job's entry point) run inside ``deferred_dir_syncs``."""
    import functools

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with deferred_dir_syncs():
            return func(*args, **kwargs)

    return wrapper


def fsync_dir(folder: str | Path) -> None:
    """Make the latest renames/creations in ``folder`` durable (no-op when fsync is off)."""
    if not _FSYNC:
        return
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit_temp(tmp: str | Path, path: str | Path) -> None:
    """Rename a finished, closed temporary file onto ``path`` durably: fsync its content,
    rename, fsync the directory. For writers that hold a temp *path* (``new_temp_path``:
    streamed Parquet); ``atomic_file`` does the same with its open descriptor."""
    if _FSYNC:
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    os.replace(tmp, path)
    _commit_dir(Path(path).parent)


def local_path(path: str | Path) -> Path:
    """``path`` as a local Path; an S3 path (``s3://``, or pathlib's ``s3:/``) is refused:
    it must go through crypto_lakehouse.storage, never become a local folder named s3:."""
    if str(path).startswith("s3:/"):
        raise ValueError(f"{path}: an S3 path; use crypto_lakehouse.storage")
    return Path(path)


def _ensure_dir(folder: Path) -> None:
    key = str(folder)
    if key not in _KNOWN_DIRS:
        folder.mkdir(parents=True, exist_ok=True)
        _KNOWN_DIRS.add(key)


def _temp_sibling(path: Path) -> tuple[Path, int]:
    """Create a unique temporary file beside ``path``; its path and a write descriptor.

    A process/thread/counter name with O_EXCL instead of tempfile.mkstemp: same guarantee
    (never an existing file), without drawing random names.
    """
    stem = f".tmp-{path.name}.{os.getpid()}-{threading.get_ident()}-"
    while True:
        tmp = path.with_name(f"{stem}{next(_TMP_COUNTER)}.part")
        try:
            return tmp, os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:  # left by an earlier process with the same pid
            continue
        except FileNotFoundError:  # the folder was removed since we saw it
            _KNOWN_DIRS.discard(str(path.parent))
            _ensure_dir(path.parent)
            continue


def new_temp_path(path: str | Path) -> Path:
    """A fresh empty temporary file beside ``path`` (the name ``remove_stale_temps`` knows),
    for writers that need a path (streamed Parquet); the caller renames or removes it."""
    path = local_path(path)
    _ensure_dir(path.parent)
    tmp, fd = _temp_sibling(path)
    os.close(fd)
    return tmp


@contextlib.contextmanager
def atomic_file(path: str | Path, *, durable: bool = True) -> Iterator[tuple[int, Path]]:
    """Yield ``(fd, temporary path)`` beside ``path``: write through the descriptor; on
    success it is closed and the file renamed onto ``path``.

    On any exception the temporary file is removed and the target is left untouched (the
    caller may also move the temporary file away itself before raising). An ``OSError``
    that names no file (``ENOSPC`` from a write, pyarrow's "Error writing bytes to file")
    is raised again as an ``OSError`` of the same errno naming ``path``.

    ``durable=False`` (a cache, :func:`write_cache`): atomic, but neither the file nor its
    folder is fsynced.
    """
    path = local_path(path)
    _ensure_dir(path.parent)
    tmp_path, fd = _temp_sibling(path)
    try:
        try:
            yield fd, tmp_path
            if _FSYNC and durable:
                # The same inode as tmp_path, also when the caller wrote through the path.
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp_path, path)
        if durable:
            _commit_dir(path.parent)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        if isinstance(exc, OSError) and exc.errno is not None and exc.filename is None:
            # A write or fsync error (a full disk, a quota, an I/O error) names no file.
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the target's directory; rename it onto ``path`` on success.

    On any exception the temporary file is removed and the target is left untouched.
    """
    with atomic_file(path) as (_fd, tmp_path):
        yield tmp_path


def write_all(fd: int, data) -> None:
    """``os.write`` until every byte of ``data`` (bytes-like) is written."""
    with memoryview(data) as view:
        done = 0
        while done < len(view):
            done += os.write(fd, view[done:])


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_file(path) as (fd, _tmp):
        write_all(fd, data)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode())


# Called before a record (JSON report, state, marker) is written: the storage seam's
# barrier, which waits for the data uploads still in flight (crypto_lakehouse.storage
# sets it; io cannot import storage, which builds on io).
_RECORD_BARRIER: Callable[[], None] | None = None


def set_record_barrier(barrier: Callable[[], None] | None) -> None:
    global _RECORD_BARRIER
    _RECORD_BARRIER = barrier


def _barrier() -> None:
    if _RECORD_BARRIER is not None:
        _RECORD_BARRIER()
    sync_pending_data_dirs()


def write_record(path: str | Path, data: bytes) -> None:
    """A record (state, report, summary): written after the record barrier (pending data
    uploads stored, pending data folders synced), its own folder synced as a record's."""
    _barrier()
    with writing_record():
        write_bytes(path, data)


def write_cache(path: str | Path, data: bytes) -> None:
    """A cache file: a record that only saves work, read back by a reader that takes a
    missing, torn or older one as absent or stale and redoes the work (a stage's state,
    ``storage.read_state``). After the record barrier like any record (data written before it
    is durable first, so it never vouches for data that a crash could lose), atomic, but not
    fsynced, nor its folder: a crash may leave the older file, none, or (on a file system
    that does not order a rename after its data) an empty one, all of which the reader
    survives. Two fsyncs fewer per cache write (a REST symbol writes two: docs/benchmarks.md,
    "session 30, api")."""
    _barrier()
    with atomic_file(path, durable=False) as (fd, _tmp):
        write_all(fd, data)


def write_json(path: str | Path, obj: Any) -> None:
    """Deterministic JSON (sorted keys), so an unchanged state gives identical bytes.
    A record (:func:`write_record`)."""
    write_record(path, (json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n").encode())


def write_json_if_changed(path: str | Path, obj: Any) -> bool:
    """Write only when the content differs; keeps the mtime of unchanged files.

    Returns True when the file was (re)written.
    """
    text = json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n"
    path = local_path(path)
    if path.exists() and path.read_text() == text:
        return False
    write_record(path, text.encode())
    return True


def read_json(path: str | Path, default: Any = None) -> Any:
    path = local_path(path)
    if not path.exists():
        return default
    return json.loads(path.read_text())


def touch(path: str | Path) -> None:
    """Create an empty marker file (e.g. the legacy ``<zip>.verified``).

    Creating an empty file is atomic in itself (there is no content to be half-written),
    so no temporary file is needed. It is not fsynced: a marker lost in a crash only makes
    the next run check its file again, and the file it vouches for was made durable before.
    """
    path = local_path(path)
    _barrier()
    _ensure_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    except FileNotFoundError:  # the folder was removed since we saw it
        _KNOWN_DIRS.discard(str(path.parent))
        _ensure_dir(path.parent)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    os.close(fd)


def write_parquet(
    path: str | Path, table: pa.Table, metadata: dict[str, str] | None = None, **write_options
) -> int:
    """Write a Parquet file atomically (zstd, like the legacy polars writer); its size in
    bytes.

    ``metadata`` is merged into the schema's key-value metadata (values as strings).
    ``write_options`` go to ``pyarrow.parquet.write_table`` (e.g. ``use_dictionary=False``
    for high-cardinality float data, where dictionary pages only cost time and space).
    """
    with atomic_path(path) as tmp:
        write_parquet_to(tmp, table, metadata, **write_options)
        return os.path.getsize(tmp)


def write_parquet_to(where, table: pa.Table, metadata=None, **write_options) -> None:
    """Write Parquet (zstd) straight to ``where`` (a temporary path of a staged write)."""
    if metadata:
        merged = dict(table.schema.metadata or {})
        merged.update({k.encode(): str(v).encode() for k, v in metadata.items()})
        table = table.replace_schema_metadata(merged)
    # Imported here: the download jobs use this module but not Parquet, and pyarrow (with
    # numpy and its BLAS threads) costs ~120 ms per job start.
    import pyarrow.parquet as pq

    pq.write_table(table, where, **{"compression": "zstd", **write_options})


TEMP_GLOB = ".tmp-*.part"


def remove_stale_temps(directory: str | Path) -> int:
    """Delete leftover ``.tmp-*.part`` files of a killed writer below ``directory``.

    Only for a directory whose temp files are provably orphans: one that no other live
    writer uses. The data-dir lock (``crypto_lakehouse.lock``) guarantees that no other run
    writes in the data dir; within a run, call it only from the job that owns the directory
    (a shared folder such as ``api_data/{T}/funding_rate/`` takes ``remove_stale_temps_of``).
    """
    # This runs at every run's start over the derived folders of the whole data dir (one
    # listing per folder, the cost of the walk): os.scandir with a prefix and suffix test
    # took ~60 % of os.walk with fnmatch (0.005 s against 0.0085 s for the ~470 folders of
    # the 13 x 45 benchmark data dir; issue 11), which was half of Path.rglob. The same
    # entries as os.walk: no link to a folder is followed, a folder is never a temp file.
    n = 0
    pending = [os.fspath(directory)]
    while pending:
        try:
            entries = os.scandir(pending.pop())
        except OSError:  # gone, or not a folder: os.walk skipped it as well
            continue
        with entries:
            for entry in entries:
                if entry.is_dir():
                    if not entry.is_symlink():
                        pending.append(entry.path)
                elif _is_temp_name(entry.name):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
                        n += 1
    return n


def _is_temp_name(name: str) -> bool:
    """``name`` matches ``TEMP_GLOB`` (``.tmp-*.part``), without fnmatch's translation."""
    return name.startswith(".tmp-") and name.endswith(".part") and len(name) >= 10


_TEMP_NAME = re.compile(r"^\.tmp-(?P<target>.+)\.\d+-\d+-\d+\.part$")


def temp_target(name: str) -> str | None:
    """The target file name of a temp name (``.tmp-{name}.{pid}-{thread}-{n}.part``)."""
    m = _TEMP_NAME.match(name)
    return m.group("target") if m else None


def remove_stale_temps_of(path: str | Path) -> int:
    """Delete leftover temp files of the one target ``path`` (its writer owns that name)."""
    path = Path(path)
    n = 0
    prefix = f".tmp-{path.name}."
    for p in path.parent.glob(f"{glob.escape(prefix)}*.part") if path.parent.is_dir() else []:
        if temp_target(p.name) == path.name:  # the exact name, not "{name}X"
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                n += 1
    return n
