"""The storage seam: where data lives (a local folder or ``s3://bucket/prefix``) and how it
is read, written, listed and deleted there (docs/storage.md).

Paths. A local data dir gives ``pathlib.Path`` objects, as always. An S3 data dir gives
:class:`ObjectPath` objects: pure paths (pathlib's arithmetic: ``/``, ``parent``, ``name``;
no file-system methods, so a call site that bypasses this module fails instead of writing a
local file) whose text is the URI ``s3://bucket/key``. Every function here also accepts the
URI as a string, or the form pathlib collapses it to (``s3:/bucket/key``).

Semantics. Local writes go through :mod:`crypto_lakehouse.io` (temporary sibling, fsync,
rename, fsync of the folder). On S3 an object becomes visible only when its PUT (or the
completion of its multipart upload) succeeds, so a write is staged completely in a local
spool file first and then uploaded in one call: a writer that fails never starts the
upload, and a process killed during the upload leaves an unfinished multipart upload that
no listing or GET shows. A function returns only once the object is stored, so markers and
state records written next always come after their data.

Built on ``pyarrow.fs`` (LocalFileSystem, S3FileSystem: listings are paginated by it). No
fsspec: pyarrow.fs has every operation needed here.

Credentials never come from the config: S3FileSystem uses the AWS default chain
(``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN``, ``AWS_PROFILE``
and the shared credentials files). Nothing here logs or formats them.

Settings come from the config block ``storage`` and reach each job through its parameters
(key ``storage`` of the job JSON, only the settings that differ from the defaults, so that
adding this seam reruns nothing); :func:`configure` applies them once per process.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import errno
import functools
import json
import os
import re
import tempfile
import threading
import zlib
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Callable, Iterator, NamedTuple

from crypto_lakehouse import io

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.fs as pafs

SCHEME = "s3://"

# The config block's defaults (config/config.schema.yaml): AWS's endpoint and region
# resolution, addressing chosen by the endpoint (s3_endpoint: virtual-hosted on AWS, by path
# elsewhere), durable local writes, four symbols at once per shard job on object storage.
DEFAULTS: dict[str, Any] = {
    "endpoint_url": None,
    "region": None,
    "addressing_style": None,
    "fsync": True,
    "symbols_at_once": 4,
}

_SETTINGS: dict[str, Any] = dict(DEFAULTS)
_S3: pafs.FileSystem | None = None
_S3_LOCK = threading.Lock()


class StorageError(OSError):
    """A storage operation failed; the message names the path (never credentials)."""

    def __init__(self, message: str):
        super().__init__(message + _credentials_hint(message))


# What S3 servers and the AWS SDKs answer when the request's credentials are missing, wrong
# or lack a right on the bucket.
_DENIED_MARKERS = (  # compared without case, spaces and underscores
    "accessdenied",
    "invalidaccesskeyid",
    "signaturedoesnotmatch",
    "nocredentialproviders",
    "unabletolocatecredentials",
)
_CREDENTIAL_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE")


def _credentials_hint(message: str) -> str:
    """For a refused request, where credentials come from and whether this process has any
    of those sources (names of variables and files only, never their values)."""
    if "(the request was refused" in message:  # a copy (pickled, re-raised) has it already
        return ""
    squeezed = "".join(message.lower().replace("_", " ").split())
    if not any(marker in squeezed for marker in _DENIED_MARKERS):
        return ""
    files = [
        Path(os.environ.get(var, default)).expanduser()
        for var, default in (
            ("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials"),
            ("AWS_CONFIG_FILE", "~/.aws/config"),
        )
    ]
    if any(os.environ.get(v) for v in _CREDENTIAL_VARIABLES) or any(f.is_file() for f in files):
        return (
            " (the request was refused: check that the credentials in this environment may "
            "read and write this bucket; docs/storage.md)"
        )
    return (
        " (the request was refused, and neither AWS_ACCESS_KEY_ID nor AWS_PROFILE is set and "
        f"{files[0]} does not exist: give the credentials in the environment or a profile, "
        "never in the config file; docs/storage.md)"
    )


# ------------------------------------------------------------------ request counts
# S3 requests by kind, with the seconds spent waiting for them (summed over threads): the
# profile of a job on object storage (benchmarks/bench_storage.py prints it). "head" is a
# HeadObject (an info or the open of a random-access file), "parquet_read" the ranged GETs
# of one Parquet read or footer, "put" one whole object (PutObject or multipart upload).
_OPS: dict[str, list] = {}
_OPS_LOCK = threading.Lock()


@contextlib.contextmanager
def _request(kind: str) -> Iterator[None]:
    import time

    started = time.perf_counter()
    try:
        yield
    finally:
        elapsed = time.perf_counter() - started
        with _OPS_LOCK:
            entry = _OPS.setdefault(kind, [0, 0.0])
            entry[0] += 1
            entry[1] += elapsed


def request_stats(reset: bool = False) -> dict[str, dict[str, float]]:
    """``{kind: {"count": n, "seconds": s}}`` of the S3 requests made by this process."""
    with _OPS_LOCK:
        out = {k: {"count": n, "seconds": round(t, 4)} for k, (n, t) in sorted(_OPS.items())}
        if reset:
            _OPS.clear()
    return out


# ------------------------------------------------------------------ settings
def job_settings(config_storage: dict | None) -> dict[str, Any]:
    """The settings a job must receive: those of the config block that differ from the
    defaults (an empty dict for a default config, so job parameters do not change)."""
    config_storage = config_storage or {}
    unknown = set(config_storage) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"storage: unknown key(s) {sorted(unknown)}")
    return {k: v for k, v in config_storage.items() if v != DEFAULTS[k]}


def configure(settings: dict | None) -> None:
    """Apply a job's ``storage`` settings to this process (io's fsync switch included)."""
    global _SETTINGS, _S3
    merged = dict(DEFAULTS)
    merged.update(settings or {})
    unknown = set(merged) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"storage: unknown key(s) {sorted(unknown)}")
    if merged["addressing_style"] not in (None, "path", "virtual"):
        raise ValueError("storage.addressing_style: 'path', 'virtual' or null (by endpoint)")
    at_once = merged["symbols_at_once"]
    if isinstance(at_once, bool) or not isinstance(at_once, int) or at_once < 1:
        raise ValueError(f"storage.symbols_at_once: an integer >= 1, not {at_once!r}")
    with _S3_LOCK:
        if merged != _SETTINGS:
            _S3 = None  # rebuilt with the new endpoint on first use
            _CONDITIONAL.clear()
            # The botocore client too: it holds the credentials of the environment it was
            # made in (rebuilt with those of the environment now, as the pyarrow one is).
            _CONDITIONAL_CLIENT.clear()
            _WHOLE_OBJECTS.clear()
        _SETTINGS = merged
    io.configure(fsync=merged["fsync"])


def settings() -> dict[str, Any]:
    return dict(_SETTINGS)


def symbols_at_once(data_dir) -> int:
    """How many symbols a shard job works on at the same time (threads) in ``data_dir``.

    Object storage: ``storage.symbols_at_once`` (default 4). Each request there is a round
    trip (tens of ms on AWS) and a symbol's daily update makes about a hundred of them, most
    one after the other (a footer, then the rows; a HEAD per output, then its upload): one
    symbol at a time, a job would wait on the network most of the time. Local data dirs: 1
    (the work is CPU-bound and the cores already run one job each)."""
    return at_once(data_dir, _SETTINGS["symbols_at_once"])


# ------------------------------------------------------------------ paths
class ObjectPath(PurePosixPath):
    """A path below an ``s3://`` data dir: pathlib arithmetic, text ``s3://bucket/key``."""

    def __str__(self) -> str:
        text = super().__str__()
        return SCHEME + text[4:] if text.startswith("s3:/") else text

    @property
    def bucket(self) -> str:
        return self.parts[1]

    @property
    def key(self) -> str:
        return "/".join(self.parts[2:])


def is_remote(path) -> bool:
    """True for ``s3://…`` (also pathlib's collapsed ``s3:/…``) and ObjectPath."""
    if isinstance(path, ObjectPath):
        return True
    text = os.fspath(path) if not isinstance(path, str) else path
    return text.startswith("s3:/")


def data_path(path) -> Path | ObjectPath:
    """The path object of a data dir or a path below one: ObjectPath for S3, else Path."""
    if isinstance(path, (ObjectPath, Path)) and not (isinstance(path, Path) and is_remote(path)):
        return path
    if is_remote(path):
        obj = ObjectPath(os.fspath(path) if not isinstance(path, str) else path)
        if len(obj.parts) < 2 or not obj.parts[1]:
            raise ValueError(f"{path}: an S3 data dir is s3://bucket[/prefix]")
        return obj
    return Path(path)


def uri(path) -> str:
    """The text of a path: ``s3://bucket/key`` or the local path."""
    return str(data_path(path))


def join(base, *parts: str) -> Path | ObjectPath:
    return data_path(base).joinpath(*parts)


# The AWS SDKs' and CLI's standard variables for a non-AWS endpoint, most specific first
# (the service-specific one wins); AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true turns both off.
ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")


# The region variables the AWS CLI reads, first found wins (for an endpoint of s3_endpoint).
REGION_VARIABLES = ("AWS_REGION", "AWS_DEFAULT_REGION")


def _environment_endpoint() -> tuple[str, str] | None:
    """``(variable, url)`` of the first endpoint variable set (and not empty), or None."""
    if os.environ.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").strip().lower() == "true":
        return None
    for var in ENDPOINT_VARIABLES:
        url = os.environ.get(var, "").strip()
        if url:
            if "://" not in url:
                raise StorageError(
                    f"{var}={url!r}: not an endpoint URL (expected http(s)://host[:port])"
                )
            return var, url.rstrip("/")
    return None


def _endpoint_host(url: str) -> str:
    """The host of an endpoint URL, lower case, without port, brackets or a final dot."""
    from urllib.parse import urlsplit

    return (urlsplit(url).hostname or "").rstrip(".")


def _is_ip_host(url: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(_endpoint_host(url))
    except ValueError:
        return False
    return True


def _is_aws_host(url: str) -> bool:
    """Whether the endpoint is one of AWS's own (``*.amazonaws.com``, China's
    ``*.amazonaws.com.cn``): those serve virtual-hosted requests (``bucket.host``)."""
    return _endpoint_host(url).endswith((".amazonaws.com", ".amazonaws.com.cn"))


# The region in an AWS S3 endpoint's host name: s3.eu-west-1.amazonaws.com,
# s3-eu-west-1.amazonaws.com, s3.dualstack.us-east-2.amazonaws.com,
# s3-fips.us-gov-west-1.amazonaws.com, s3.cn-north-1.amazonaws.com.cn, bucket.s3.<region>...
_AWS_REGION_IN_HOST = re.compile(
    r"(?:^|\.)s3(?:[.-](?:fips|dualstack|external-1))*[.-]"
    r"([a-z]{2}(?:-gov|-iso[a-z]*)?-[a-z]+-\d+)\.amazonaws\.com(?:\.cn)?$"
)


def _aws_host_region(url: str) -> str | None:
    """The region an AWS regional endpoint names in its host (None for another host or for
    the global ``s3.amazonaws.com``): a request signed for another region is refused
    (AuthorizationHeaderMalformed), and an explicit endpoint is not redirected."""
    match = _AWS_REGION_IN_HOST.search(_endpoint_host(url))
    return match.group(1) if match else None


def s3_endpoint() -> dict[str, Any]:
    """The S3 connection settings every client of this process uses (the pyarrow file
    system here, the lease's conditional requests): ``endpoint_url``, ``region`` (the
    configured one; else, without an endpoint, None: the AWS chain decides; with one, the
    region an AWS regional endpoint names in its host, else ``AWS_REGION`` or
    ``AWS_DEFAULT_REGION``, else us-east-1: an AWS profile's region is not read then) and
    ``addressing_style``. Credentials are not part of it: each client
    takes them from the AWS default chain.

    The endpoint, as the AWS SDKs choose it: the config key ``storage.endpoint_url``, else
    ``AWS_ENDPOINT_URL_S3``, else ``AWS_ENDPOINT_URL`` (read at each call: a reader used
    without :func:`configure` honours them too), else AWS. An endpoint whose host is an IP
    address is addressed by path: a bucket cannot be a sub-domain of an address.

    Addressing without ``addressing_style`` (null, the default): virtual-hosted for AWS (no
    endpoint, or a ``*.amazonaws.com`` one), by path for any other endpoint. A host name of
    a self-hosted store (``https://minio.lan:9000``) would need a wildcard DNS entry
    (``bucket.minio.lan``) for virtual addressing, which MinIO, SeaweedFS and Ceph setups
    rarely have, while all of them serve path-style requests; a service that refuses them
    needs ``addressing_style: virtual``."""
    endpoint = _SETTINGS["endpoint_url"]
    if not endpoint:
        found = _environment_endpoint()
        endpoint = found[1] if found else None
    region = _SETTINGS["region"]
    if not region and endpoint:
        # Not left to the clients: pyarrow's would look the bucket's region up. An AWS
        # regional endpoint's own region (what it signs for), else the environment's region
        # as the AWS CLI reads it, else us-east-1 (what self-hosted stores expect unless
        # configured otherwise, e.g. MinIO's MINIO_REGION).
        region = _aws_host_region(endpoint) or next(
            (os.environ[v].strip() for v in REGION_VARIABLES if os.environ.get(v, "").strip()),
            "us-east-1",
        )
    style = _SETTINGS["addressing_style"]
    if style is None:
        style = "path" if endpoint and not _is_aws_host(endpoint) else "virtual"
    if endpoint and _is_ip_host(endpoint):
        style = "path"
    return {"endpoint_url": endpoint, "region": region, "addressing_style": style}


_S3_ENDPOINT: dict[str, Any] | None = None  # the s3_endpoint() _S3 was made with


def _s3() -> pafs.FileSystem:
    global _S3, _S3_ENDPOINT
    endpoint = s3_endpoint()
    with _S3_LOCK:
        if _S3 is None or _S3_ENDPOINT != endpoint:
            import pyarrow.fs as pafs

            opts: dict[str, Any] = {}
            if endpoint["endpoint_url"]:
                scheme, _, host = endpoint["endpoint_url"].partition("://")
                opts.update(scheme=scheme, endpoint_override=host.rstrip("/"))
            if endpoint["region"]:
                opts["region"] = endpoint["region"]
            virtual = endpoint["addressing_style"] == "virtual"
            opts["force_virtual_addressing"] = virtual and bool(endpoint["endpoint_url"])
            # Delayed open: a small object is one PutObject at close instead of a multipart
            # upload (three requests); errors still surface at the explicit close in _put.
            _S3 = pafs.S3FileSystem(allow_delayed_open=True, **opts)
            _S3_ENDPOINT = endpoint
        return _S3


def filesystem(path) -> tuple[pafs.FileSystem, str]:
    """``(pyarrow file system, path inside it)`` of a local path or an S3 path."""
    p = data_path(path)
    if isinstance(p, ObjectPath):
        return _s3(), f"{p.bucket}/{p.key}".rstrip("/")
    import pyarrow.fs as pafs

    return pafs.LocalFileSystem(), str(Path(p).absolute())


# ------------------------------------------------------------------ reads
def exists(path) -> bool:
    p = data_path(path)
    if not isinstance(p, ObjectPath):
        return p.exists()
    import pyarrow.fs as pafs

    _settle(p)
    fs, inner = filesystem(p)
    with _request("head"):
        info = fs.get_file_info(inner)
    return info.type != pafs.FileType.NotFound


def is_file(path) -> bool:
    p = data_path(path)
    if not isinstance(p, ObjectPath):
        return p.is_file()
    import pyarrow.fs as pafs

    _settle(p)
    fs, inner = filesystem(p)
    with _request("head"):
        info = fs.get_file_info(inner)
    return info.type == pafs.FileType.File


def size(path) -> int | None:
    """Size in bytes, None when there is no such file."""
    p = data_path(path)
    if not isinstance(p, ObjectPath):
        try:
            return p.stat().st_size
        except FileNotFoundError:
            return None
    import pyarrow.fs as pafs

    _settle(p)
    fs, inner = filesystem(p)
    with _request("head"):
        info = fs.get_file_info(inner)
    return info.size if info.type == pafs.FileType.File else None


def stat(path) -> tuple[int, int] | None:
    """``(size, mtime_ns)`` of a file, None when there is none."""
    p = data_path(path)
    if not isinstance(p, ObjectPath):
        try:
            st = p.stat()
        except FileNotFoundError:
            return None
        return st.st_size, st.st_mtime_ns
    import pyarrow.fs as pafs

    _settle(p)
    fs, inner = filesystem(p)
    with _request("head"):
        info = fs.get_file_info(inner)
    if info.type != pafs.FileType.File:
        return None
    return info.size, info.mtime_ns or 0


def identity(path) -> list | None:
    """What tells one version of a file from the next, None when there is none (tail
    builds record it for every file they read or wrote). Local: ``[size, mtime_ns]``. S3:
    ``[size, ETag]``, one HEAD: an object's LastModified has one-second resolution, so two
    uploads of one size within a second would look the same."""
    p = data_path(path)
    if not isinstance(p, ObjectPath):
        size_mtime = stat(p)
        return None if size_mtime is None else list(size_mtime)
    return _kept_answer("head", p, lambda: _head_identity(p))


def _head_identity(p: ObjectPath) -> list | None:
    _settle(p)
    stored = _stored_identity(p)
    if stored is not None:
        return stored
    try:
        with _conditional(p, "head"), _request("head"):
            answer = _conditional_client().head_object(Bucket=p.bucket, Key=p.key)
    except PreconditionFailed:
        return None  # a 404
    return [answer["ContentLength"], answer["ETag"]]


def _stored_identity(p: ObjectPath) -> list | None:
    """``[size, ETag]`` of the version of ``p`` that a ``background_uploads()`` block of
    this process stored (its signed PUT's answer) and nothing in this process wrote or
    deleted since, while that block is open: no HEAD needed. gen_kline HEADed each output it
    had just uploaded for its tail record (one more round trip after the upload). Kept only
    while the job's block is open: nothing else writes a job's outputs while it runs (one
    run per data dir), whereas a later job in the same process (the tests) may find an
    object replaced by another client."""
    key = str(p)
    for uploads in _open_uploads():
        with uploads.cond:
            stored = uploads.stored.get(key)
        if stored is not None:
            return list(stored)
    return None


HEADS_AT_ONCE = 16  # identities(by_listing=False): HEADs in flight at most


def at_once(path, n: int = HEADS_AT_ONCE) -> int:
    """How many of a job's requests to ``path`` run at the same time: ``n`` on object
    storage (each request a round trip, which threads overlap), 1 on a local disk (the work
    is CPU-bound and the cores already run a job each)."""
    return n if is_remote(path) else 1


def concurrently(func, items, at_once: int = HEADS_AT_ONCE) -> list:
    """``[func(item) for item in items]``, up to ``at_once`` items at a time on threads:
    on S3 each request is a round trip, and objects handled one after the other leave a
    job waiting on the network. One item (or ``at_once`` 1) runs in the calling thread.
    The first exception is raised after every item has finished."""
    items = list(items)
    if len(items) < 2 or at_once < 2:
        return [func(item) for item in items]
    from concurrent.futures import ThreadPoolExecutor

    kept = _KEPT.get(threading.get_ident())
    if kept is not None:  # the caller's kept answers serve its helpers too
        func = functools.partial(_sharing_kept, kept, func)
    with ThreadPoolExecutor(min(at_once, len(items))) as pool:
        futures = [pool.submit(func, item) for item in items]
    return [f.result() for f in futures]


def identities(paths, *, by_listing: bool = True) -> dict:
    """``{path: identity(path)}`` of many files: locally a stat each. On S3, ``by_listing``:
    one LIST per folder (its entries carry size and ETag) instead of a HEAD per object, for
    folders the paths fill (a symbol's own partitions); otherwise (files in folders shared
    by every symbol, where a LIST would page through all of them) a HEAD each,
    ``HEADS_AT_ONCE`` at a time."""
    out: dict = {}
    folders: dict[ObjectPath, list] = {}
    heads: list = []
    for path in paths:
        p = data_path(path)
        if not isinstance(p, ObjectPath):
            out[path] = identity(p)
        elif by_listing:
            folders.setdefault(p.parent, []).append((path, p))
        else:
            heads.append(path)
    out.update(zip(heads, concurrently(identity, heads), strict=True))
    for folder, members in folders.items():
        listed = _listing(folder)
        for path, p in members:
            out[path] = listed.get(p.name)
    return out


# ------------------------------------------------------------------ a job's inputs asked once
# {thread ident: {(kind, URI): answer, or _UNASKED}} of the threads inside
# ``inputs_asked_once`` and of the helper threads ``concurrently`` runs for them.
_KEPT: dict[int, dict[tuple[str, str], Any]] = {}
_KEPT_LOCK = threading.Lock()
_KEPT_CHANGES = [0]  # writes of kept paths: an answer asked across one is not kept
_UNASKED = object()


@contextlib.contextmanager
def inputs_asked_once(paths) -> Iterator[None]:
    """Within the block, this thread asks S3 once about each of ``paths`` (a job's inputs:
    an earlier stage wrote them, and nothing writes them while the job runs): a folder's
    listing and a file's identity are kept and reused. The unchanged-inputs digest, the
    build's file list and a tail build's checks each asked the same inputs of a symbol, a
    round trip each. A write or delete by this process drops what was kept of the object
    and of its folder's listing. Local paths are not affected."""
    keys = {
        (kind, str(p)): _UNASKED
        for p in map(data_path, paths)
        if isinstance(p, ObjectPath)
        for kind in ("list", "head")  # an input may be a folder or a file
    }
    me = threading.get_ident()
    with _KEPT_LOCK:
        outer = _KEPT.get(me)
        _KEPT[me] = {**keys, **(outer or {})}
    try:
        yield
    finally:
        with _KEPT_LOCK:
            if outer is None:
                del _KEPT[me]
            else:
                _KEPT[me] = outer


def _sharing_kept(kept: dict, func, item):
    """``func(item)`` in a helper thread, with the kept answers of the thread it helps."""
    me = threading.get_ident()
    with _KEPT_LOCK:
        _KEPT[me] = kept
    try:
        return func(item)
    finally:
        with _KEPT_LOCK:
            _KEPT.pop(me, None)


def _kept_answer(kind: str, p: ObjectPath, ask):
    """``ask()``, or the answer kept for ``(kind, p)`` inside ``inputs_asked_once``."""
    kept = _KEPT.get(threading.get_ident())
    key = (kind, str(p))
    if kept is None or key not in kept:
        return ask()
    with _KEPT_LOCK:
        answer = kept[key]
        if answer is _UNASKED:  # this thread asks; the others asking meanwhile wait for it
            kept[key] = asking = _Asking()
            changes = _KEPT_CHANGES[0]
    if isinstance(answer, _Asking):
        answer.wait()
        return copy.copy(answer.answer) if answer.answered else ask()
    if answer is not _UNASKED:
        return copy.copy(answer)
    try:
        answer = ask()
    except BaseException:
        with _KEPT_LOCK:
            if kept.get(key) is asking:
                kept[key] = _UNASKED
        asking.set()
        raise
    asking.answer, asking.answered = answer, True
    with _KEPT_LOCK:
        if kept.get(key) is asking:
            # Kept unless this process wrote an input while it was asked.
            kept[key] = answer if changes == _KEPT_CHANGES[0] else _UNASKED
    asking.set()
    return copy.copy(answer)


class _Asking(threading.Event):
    """An answer being asked by another thread."""

    answer: Any = None
    answered = False


def _changing(p: ObjectPath) -> None:
    """Before an object is written or deleted: forget what was kept of it and of its
    folder's listing, and the identity of the version a block stored."""
    for uploads in _open_uploads():
        with uploads.cond:
            uploads.stored.pop(str(p), None)
    if not _KEPT:
        return
    stale = (("head", str(p)), ("list", str(p.parent)))
    with _KEPT_LOCK:
        _KEPT_CHANGES[0] += 1
        for kept in _KEPT.values():
            for key in stale:
                if key in kept:
                    kept[key] = _UNASKED


def _listing(folder: ObjectPath, name_prefix: str = "") -> dict[str, list]:
    """``{name: [size, ETag]}`` of the objects directly in ``folder`` whose names start
    with ``name_prefix`` (writers' temporary files left out): one delimited ListObjectsV2,
    paginated, after the folder's pending uploads (or the listing kept by
    ``inputs_asked_once``)."""
    if name_prefix:
        return _list_folder(folder, name_prefix)
    return _kept_answer("list", folder, lambda: _list_folder(folder, ""))


def _list_folder(folder: ObjectPath, name_prefix: str) -> dict[str, list]:
    """One delimited listing: signed GETs (``_WholeObjects.list``), or botocore's paginator
    without a signer."""
    _settle_below(folder)
    found = {}
    prefix = f"{folder.key}/{name_prefix}"
    signed = _whole_objects()
    if signed is not None:
        with _request("list"):
            entries = [e for page in signed.list_pages(folder, prefix) for e in page]
    else:
        pages = _conditional_client().get_paginator("list_objects_v2")
        with _conditional(folder, "list"), _request("list"):
            entries = [
                (entry["Key"], entry["Size"], entry["ETag"])
                for page in pages.paginate(Bucket=folder.bucket, Prefix=prefix, Delimiter="/")
                for entry in page.get("Contents", [])
            ]
    for key, size, etag in entries:
        name = key.rsplit("/", 1)[-1]
        if name and not _is_writer_temp(name):
            found[name] = [size, etag]
    return found


def _is_writer_temp(name: str) -> bool:
    """A writer's temporary file (``io.TEMP_GLOB``): never listed as data."""
    return name.startswith(".tmp-") and name.endswith(".part")


def listed_identities(directory, suffix: str = "") -> dict:
    """``{path: identity}`` of the files directly in an S3 folder whose names end with
    ``suffix`` (sorted), from one listing: its entries carry size and ETag."""
    p = _object_path(directory)
    listed = _listing(p)
    return {p / name: listed[name] for name in sorted(listed) if name.endswith(suffix)}


def all_exist(paths) -> bool:
    """Whether every one of ``paths`` is a file (on S3 their HEADs at once)."""
    paths = list(paths)
    if not any(is_remote(p) for p in paths):
        return all(exists(p) for p in paths)
    return all(v is not None for v in identities(paths, by_listing=False).values())


@contextlib.contextmanager
def _naming_the_file(p) -> Iterator[None]:
    """pyarrow's errors for a damaged Parquet file ("Parquet magic bytes not found",
    "Couldn't deserialize thrift", "Corrupt snappy compressed data") do not say which file;
    they are raised again, same type, with the path in front. Missing files and the OS's
    own errors (which carry the file name) pass unchanged."""
    import pyarrow as pa

    try:
        yield
    except StorageError:
        raise  # names the object already
    except pa.ArrowInvalid as exc:
        if str(p) in str(exc):
            raise
        raise type(exc)(f"{uri(p)}: {exc}") from exc
    except OSError as exc:
        if exc.errno is not None or isinstance(exc, FileNotFoundError) or str(p) in str(exc):
            raise
        raise OSError(f"{uri(p)}: {exc}") from exc


def parquet_metadata(path):
    """The footer of a Parquet file (row count, row groups) without reading its data."""
    import pyarrow.parquet as pq

    p = data_path(path)
    with _naming_the_file(p):
        if not isinstance(p, ObjectPath):
            return pq.ParquetFile(p).metadata
        reading = _read_ahead()
        ahead = reading.peek(str(p)) if reading is not None else None
        if ahead is None:
            signed = _whole_objects()
            if signed is not None:
                ahead = _footer_bytes(p, signed)
        if ahead is not None:
            import pyarrow as pa

            return pq.ParquetFile(pa.BufferReader(ahead)).metadata
        with _request("parquet_read"), _open_object(p) as f:
            return pq.ParquetFile(f).metadata


FOOTER_GUESS_BYTES = 64 << 10  # as pyarrow's first footer read


def _footer_bytes(p: ObjectPath, signed: _WholeObjects) -> bytes:
    """The end of a Parquet object holding its footer, by suffix-range GETs: the last 64
    KiB, and only when the footer is longer, the footer's length. pyarrow's
    ``open_input_file`` asked the size with a HEAD first, then read the last 64 KiB: two
    round trips, one after the other (gen_kline's inputs beyond the read-ahead window,
    tail builds' previous outputs). pyarrow reads the metadata from these bytes alone."""
    _settle(p)
    with _reading(p), _request("parquet_read"):
        tail = signed.get(p, last=FOOTER_GUESS_BYTES)
        if len(tail) == FOOTER_GUESS_BYTES and tail[-4:] == b"PAR1":
            need = int.from_bytes(tail[-8:-4], "little") + 8
            if need > len(tail):
                tail = signed.get(p, last=need)
    return tail


def parquet_file(path):
    """A ``pq.ParquetFile`` (row groups read one at a time); on S3 over ranged GETs."""
    import pyarrow.parquet as pq

    p = data_path(path)
    with _naming_the_file(p):
        if not isinstance(p, ObjectPath):
            return pq.ParquetFile(p)
        return pq.ParquetFile(_open_object(p))


def open_input(path):
    """A readable, seekable binary file (``with``-closable) or FileNotFoundError.

    Local: the file itself. S3: the whole object, fetched in one GET (archives are read
    whole anyway, and a zip read through ranged GETs costs one round trip per seek)."""
    p = data_path(path)
    if not isinstance(p, ObjectPath):
        return open(p, "rb")  # noqa: SIM115 (the caller closes it)
    import io as pyio

    return pyio.BytesIO(read_bytes(p))


@contextlib.contextmanager
def local_copy(path) -> Iterator[Path]:
    """A local file path holding ``path``'s content, for readers that need a real file and
    seek a lot (a tick zip: the zip reader's small reads would each be a ranged GET).

    Local: the file itself. S3: the object streamed to a spool file in ``$TMPDIR`` (memory
    stays bounded, unlike :func:`open_input`), removed when the block ends."""
    p = data_path(path)
    if not isinstance(p, ObjectPath):
        yield p
        return
    import shutil

    _settle(p)
    fs, inner = filesystem(p)
    spool = _spool_path()
    try:
        with _reading(p), _request("get"), fs.open_input_stream(inner) as src:
            with open(spool, "wb") as dst:
                shutil.copyfileobj(src, dst, 8 << 20)
        yield spool
    finally:
        spool.unlink(missing_ok=True)


@contextlib.contextmanager
def random_access(path) -> Iterator:
    """A pyarrow random-access file (``size()``, ``read_at(n, offset)``) on a local file
    or an object (each read one ranged GET), closed when the block ends."""
    import pyarrow as pa

    p = data_path(path)
    with _naming_the_file(p):
        source = pa.OSFile(str(p)) if not isinstance(p, ObjectPath) else _open_object(p)
    try:
        yield source
    finally:
        source.close()


def size_of_open(source) -> int:
    """Size of a file returned by :func:`open_input` (no second request on S3)."""
    here = source.tell()
    end = source.seek(0, 2)
    source.seek(here)
    return end


def _open_object(p: ObjectPath):
    """A random-access pyarrow file on an object (ranged GETs: Parquet column chunks)."""
    _settle(p)
    fs, inner = filesystem(p)
    with _reading(p):
        return fs.open_input_file(inner)


def read_bytes(path) -> bytes:
    p = data_path(path)
    if not isinstance(p, ObjectPath):
        return p.read_bytes()
    reading = _read_ahead()
    ahead = reading.get(str(p)) if reading is not None else None
    if ahead is not None:
        return ahead
    return _get(p)


def _get(p: ObjectPath, admit=None) -> bytes | None:
    """The whole object in one plain GET (:class:`_WholeObjects`: no HEAD first). Without a
    signer (no credentials in the AWS chain, or AWS without a known region) through
    pyarrow: its HEAD (the size), then one GET of all its bytes. (pyarrow's input *stream*
    does not know the size: its ``read()`` fetched 256 KiB at a time, one ranged GET each,
    13 round trips for a 3 MB partition, and SeaweedFS spent ~9x the CPU of one GET on
    them.) ``admit(size)`` (the read-ahead's byte budget) is asked once the size is known
    (the GET's headers, or pyarrow's HEAD) and before the body is read; when it says no,
    the body is not read and the answer is None (the request's seconds in
    ``request_stats`` include a wait for that budget)."""
    _settle(p)
    getter = _whole_objects()
    if getter is not None:
        with _reading(p), _request("get"):
            return getter.get(p, admit)
    fs, inner = filesystem(p)
    with _reading(p), _request("get"), fs.open_input_file(inner) as f:
        if admit is not None and not admit(f.size()):
            return None
        return f.read()


# Bytes of objects a read-ahead may hold that its reader has not taken yet (fetched or
# being fetched). A larger object is still fetched when nothing else is held, or when the
# reader asks for it: ahead of the reader there is at most this much, or one object. Eight
# monthly 1s kline zips (130 MB each) were fetched at once before 2026-12-07: +1 GB at the
# parse's peak on S3, per symbol at once.
READ_AHEAD_BYTES = 128 << 20


@functools.cache
def _send_errors() -> tuple[type[BaseException], ...]:
    """What a signed request raises when no answer came: socket errors and timeouts, and
    ``http.client``'s (a cut answer: ``IncompleteRead``; a connection closed before the
    answer: ``RemoteDisconnected``). Imported on first use (job processes on a local data
    dir never load ``http.client``)."""
    import http.client

    return (OSError, http.client.HTTPException)


def _origin_and_target(url: str) -> tuple[tuple[str, str, int], str]:
    """``((scheme, host, port), path?query)`` of an absolute http(s) URL."""
    scheme, _, rest = url.partition("://")
    authority, slash, target = rest.partition("/")
    host, colon, port = authority.rpartition(":")
    if not colon or not port.isdigit() or authority.endswith("]"):
        host, port = authority, ("443" if scheme == "https" else "80")
    return (scheme, host.strip("[]"), int(port)), slash + target


class _Answer(NamedTuple):
    status: int
    headers: Any  # http.client.HTTPMessage: case-insensitive ``get``
    data: bytes | None  # None: the body was not read (``admit`` refused it)


class _NotSent(ConnectionError):
    """A request that failed before any of it reached the store (the connection could not
    be made): safe to send again whatever its method."""

    not_sent = True


class _Connections:
    """Keep-alive ``http.client`` connections by origin, at most ``size`` idle ones kept
    (the threads of every symbol at once: ``_whole_objects``'s pool size). A connection is
    taken by one request at a time; one that the store closed meanwhile (seen by a poll
    before it is reused), or whose answer says it will close, is not used again. Timeouts:
    10 s to connect, 30 s for each read (as urllib3's before)."""

    CONNECT_TIMEOUT, READ_TIMEOUT = 10, 30

    def __init__(self, size: int):
        self.size = size
        self.idle: dict[tuple, list] = {}
        self.lock = threading.Lock()
        self.tls = None

    def _take(self, origin: tuple):
        import select

        while True:
            with self.lock:
                idle = self.idle.get(origin)
                conn = idle.pop() if idle else None
            if conn is None:
                return self._connect(origin)
            # An idle keep-alive connection is readable only when the store has closed it.
            poller = select.poll()
            poller.register(conn.sock, select.POLLIN)
            if not poller.poll(0):
                return conn
            conn.close()

    def _connect(self, origin: tuple):
        import http.client

        scheme, host, port = origin
        if scheme == "https":
            if self.tls is None:
                import ssl

                from botocore.httpsession import get_cert_path

                ca = os.environ.get("AWS_CA_BUNDLE") or get_cert_path(True)
                self.tls = ssl.create_default_context(cafile=ca)
            conn = http.client.HTTPSConnection(
                host, port, timeout=self.CONNECT_TIMEOUT, context=self.tls
            )
        else:
            conn = http.client.HTTPConnection(host, port, timeout=self.CONNECT_TIMEOUT)
        try:
            conn.connect()
        except OSError as exc:
            conn.close()
            raise _NotSent(f"cannot connect to {host}:{port}: {exc}") from exc
        conn.sock.settimeout(self.READ_TIMEOUT)
        import socket

        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def _give_back(self, origin: tuple, conn) -> None:
        with self.lock:
            idle = self.idle.setdefault(origin, [])
            if len(idle) < self.size:
                idle.append(conn)
                return
        conn.close()

    def request(self, origin, method: str, target: str, headers, body, admit) -> _Answer:
        conn = self._take(origin)
        try:
            conn.request(method, target, body=body, headers=headers)
            response = conn.getresponse()
            if response.status == 200 and admit is not None:
                if not admit(int(response.headers.get("Content-Length") or 0)):
                    conn.close()  # its body unread: not to be used again
                    return _Answer(response.status, response.headers, None)
            data = response.read()
        except BaseException:
            conn.close()
            raise
        if response.will_close:
            conn.close()
        else:
            self._give_back(origin, conn)
        return _Answer(response.status, response.headers, data)


class _WholeObjects:
    """Whole-object GETs without a HEAD and whole-object PUTs that keep the answer's ETag:
    SigV4-signed ``GET``/``PUT /bucket/key`` (botocore's signer and the AWS default
    credential chain), sent on pooled keep-alive ``http.client`` connections
    (:class:`_Connections`).

    pyarrow's ``open_input_file`` asks the size first (a HeadObject, one more round trip
    per object, and ~0.6 ms of SeaweedFS's CPU); its C++ overload taking a FileInfo with
    the size is not exposed to Python (pyarrow 26). botocore's ``get_object`` sends no HEAD
    but spends ~1.3 ms of CPU per request in its client pipeline, more than pyarrow's HEAD
    and GET together (tried and reverted in December 2026); signing and sending the one
    request directly costs ~0.6 ms through urllib3, ~0.35 ms on an ``http.client``
    connection (measured December 2026: the parse's 367 archive GETs were 0.25 s of its
    client CPU). A plain GET (no Range) returns the object as it is when the GET is
    served, whole: no size known in advance can go stale. The body's length is checked
    against its Content-Length (``http.client``'s ``IncompleteRead``), so a cut connection
    is an error, not a short read. Retried as urllib3 retried them before: 3 attempts on
    connection errors (a request not known to be sent: any method; GET/PUT/DELETE
    otherwise) and, for GET and PUT, on 500/502/503/504.

    A PUT (:meth:`put`, objects up to ``SIGNED_PUT_MAX_BYTES``) is one ``PutObject`` of the
    complete body, with its CRC32 (``x-amz-checksum-crc32``), which the store checks
    against the body it received: a body cut short, even one cut right after the headers,
    is refused, never stored. (SeaweedFS 4.48 stores a PUT whose connection closed right
    after its headers as an *empty* object; with the checksum it stores nothing, tested.
    The payload's SHA-256 in the signature, botocore's default over HTTP, costs more CPU and
    SeaweedFS does not check it; so the payload is ``UNSIGNED-PAYLOAD``.) Its answer's ETag
    is the new object's version: the job that wrote it need not HEAD it for the identity of
    its tail record (``_stored_identity``). A 28 MB upload on loopback SeaweedFS: ~190 ms
    against pyarrow's ~290 (a multipart upload), 1.5 MB ~40 against ~70 at 20 ms per
    answer, and pyarrow does not give the ETag."""

    def __init__(self, endpoint: dict, credentials, pool_size: int):
        self.endpoint = endpoint
        self.credentials = credentials
        self.region = endpoint["region"]
        self.connections = _Connections(pool_size)

    def url(self, p: ObjectPath) -> str:
        return self.bucket_url(p.bucket, p.key)

    def bucket_url(self, bucket: str, key: str = "") -> str:
        """The URL of ``key`` in ``bucket`` (no key: the bucket's, for listings)."""
        from urllib.parse import quote

        key = quote(key, safe="/~")
        endpoint = self.endpoint["endpoint_url"]
        if endpoint is None:  # AWS, virtual-hosted (a region is known: _whole_objects)
            return f"https://{bucket}.s3.{self.region}.amazonaws.com/{key}"
        scheme, _, host = endpoint.rstrip("/").partition("://")
        if self.endpoint["addressing_style"] == "virtual":
            return f"{scheme}://{bucket}.{host}/{key}"
        return f"{scheme}://{host}/{bucket}/{key}"

    def send(self, method: str, url: str, *, headers=None, body=None, admit=None) -> _Answer:
        """One SigV4-signed request (botocore's signer, the credentials of the chain) on a
        pooled connection, with its retries and timeouts; the answer, its body read. A body
        is sent as ``UNSIGNED-PAYLOAD`` (``_UnsignedPayload``). ``admit(size)``: asked of a
        200 answer's Content-Length before its body is read; when it says no, the answer's
        ``data`` is None (the body unread, the connection closed). Raises OSError or
        ``http.client.HTTPException`` (``_send_errors()``) when no answer came."""
        import time

        from botocore.auth import S3SigV4Auth
        from botocore.awsrequest import AWSRequest

        request = AWSRequest(method=method, url=url, headers=headers or {})
        if body is not None:
            request.context["client_config"] = _UNSIGNED_PAYLOAD
        S3SigV4Auth(self.credentials.get_frozen_credentials(), "s3", self.region).add_auth(request)
        signed = dict(request.headers.items())
        origin, target = _origin_and_target(url)
        for attempt in range(3):
            if attempt:
                time.sleep(0.05 * 2 ** (attempt - 1) if attempt > 1 else 0)
            try:
                answer = self.connections.request(origin, method, target, signed, body, admit)
            except _send_errors() as exc:
                if attempt == 2 or not (
                    getattr(exc, "not_sent", False) or method in ("GET", "PUT", "DELETE")
                ):
                    raise
                continue
            if attempt < 2 and method in ("GET", "PUT") and answer.status in (500, 502, 503, 504):
                continue
            return answer
        raise AssertionError("unreachable")

    def get(self, p: ObjectPath, admit=None, last: int | None = None) -> bytes | None:
        """The object's bytes; with ``admit``, None when ``admit(size)`` (the size from the
        answer's Content-Length) refuses it, the body unread and the connection closed.
        ``last``: only its last ``last`` bytes (a suffix Range: all of a shorter object)."""
        ranged = {} if last is None else {"Range": f"bytes=-{last}"}
        try:
            answer = self.send("GET", self.url(p), headers=ranged, admit=admit)
        except _send_errors() as exc:
            raise StorageError(f"{p}: GET failed: {exc}") from exc
        data = answer.data
        if answer.status == 200 or (last is not None and answer.status == 206):
            return data
        if last is not None and answer.status == 416:  # an empty object has no last bytes
            return b""
        code = _error_code(data)
        if answer.status == 404:  # as pyarrow's HEAD: a missing bucket is missing too
            raise FileNotFoundError(
                f"{p}: no such {'bucket' if code == 'NoSuchBucket' else 'object'}"
            )
        raise StorageError(f"{p}: GET failed: HTTP {answer.status} {code}".rstrip())

    def put(self, p: ObjectPath, body) -> list:
        """Store ``body`` (bytes-like: bytes, a memory-mapped pyarrow buffer) as the object
        ``p`` in one PutObject; returns its identity ``[size, ETag]`` from the answer."""
        size = memoryview(body).nbytes
        crc32 = zlib.crc32(body).to_bytes(4, "big")  # the GIL released for large bodies
        headers = {
            "Content-Length": str(size),
            "x-amz-checksum-crc32": base64.b64encode(crc32).decode(),
        }
        try:
            answer = self.send("PUT", self.url(p), headers=headers, body=body)
        except _send_errors() as exc:
            raise StorageError(f"{p}: upload failed: {exc}") from exc
        etag = answer.headers.get("ETag")
        if answer.status == 200 and etag:
            return [size, etag]
        code = "no ETag in the answer" if answer.status == 200 else _error_code(answer.data)
        raise StorageError(f"{p}: upload failed: HTTP {answer.status} {code}".rstrip())

    def list_pages(self, folder: ObjectPath, prefix: str) -> Iterator[list[tuple[str, int, str]]]:
        """Pages of ``(key, size, ETag)`` of the objects directly under ``prefix`` in
        ``folder``'s bucket: delimited ListObjectsV2 (continuation tokens), each page one
        signed GET.
        botocore's paginator spent ~65-130 ms of client CPU on a listing of 1,100 keys
        (its response parser turns every LastModified into a datetime); this one a few."""
        from urllib.parse import quote, urlencode
        from xml.etree import ElementTree

        ns = "{http://s3.amazonaws.com/doc/2006-03-01/}"
        base = self.bucket_url(folder.bucket)
        token = None
        while True:
            query = {"delimiter": "/", "list-type": "2", "prefix": prefix}
            if token is not None:
                query["continuation-token"] = token
            url = f"{base}?{urlencode(sorted(query.items()), quote_via=quote, safe='-_.~')}"
            try:
                answer = self.send("GET", url)
            except _send_errors() as exc:
                raise StorageError(f"{folder}: list failed: {exc}") from exc
            if answer.status != 200:
                code = _error_code(answer.data)
                raise StorageError(f"{folder}: list failed: HTTP {answer.status} {code}".rstrip())
            page = ElementTree.fromstring(answer.data)
            yield [
                (
                    entry.findtext(f"{ns}Key"),
                    int(entry.findtext(f"{ns}Size")),
                    entry.findtext(f"{ns}ETag"),
                )
                for entry in page.iter(f"{ns}Contents")
            ]
            token = page.findtext(f"{ns}NextContinuationToken")
            if page.findtext(f"{ns}IsTruncated") != "true" or not token:
                return


def _error_code(body: bytes | None) -> str:
    """The ``<Code>`` of an S3 error answer's XML ('' when there is none)."""
    code = re.search(rb"<Code>([^<]*)</Code>", body or b"")
    return code.group(1).decode(errors="replace") if code else ""


class _UnsignedPayload:
    """botocore's S3 signer reads ``client_config.s3['payload_signing_enabled']`` to
    decide whether to hash the body into the signature; over plain HTTP it always does
    otherwise (a SHA-256 of every byte uploaded)."""

    s3 = {"payload_signing_enabled": False}


_UNSIGNED_PAYLOAD = _UnsignedPayload()

# Objects up to this size are uploaded by one signed PutObject (``_WholeObjects.put``: its
# ETag kept, less CPU); larger ones by pyarrow's multipart upload (parts in parallel, each
# retried alone; S3 takes at most 5 GB in one PUT).
SIGNED_PUT_MAX_BYTES = 512 << 20


# [((endpoint settings, pool size, credential variables), _WholeObjects or None)]
_WHOLE_OBJECTS: list = []


def _whole_objects() -> _WholeObjects | None:
    """The signed GET of this process's endpoint and credentials, or None (pyarrow reads)
    when there is nothing to sign with (no credentials found by the AWS chain: pyarrow's
    client decides what to send) or no region is known (AWS without a configured region:
    pyarrow looks the bucket's region up)."""
    endpoint = s3_endpoint()
    pool = _SETTINGS["symbols_at_once"] * HEADS_AT_ONCE + 8
    key = (endpoint, pool, tuple(os.environ.get(v) for v in _CREDENTIAL_VARIABLES))
    with _S3_LOCK:
        if _WHOLE_OBJECTS and _WHOLE_OBJECTS[0][0] == key:
            return _WHOLE_OBJECTS[0][1]
    getter = None
    if endpoint["region"]:
        import botocore.session

        credentials = botocore.session.get_session().get_credentials()
        if credentials is not None:
            getter = _WholeObjects(endpoint, credentials, pool)
    with _S3_LOCK:
        _WHOLE_OBJECTS[:] = [(key, getter)]
    return getter


class _ReadAhead:
    """Objects a job is about to read in order, fetched ``window`` at a time on threads:
    on S3 each GET is a round trip, so reading one archive after the other would leave the
    parse waiting on the network most of the time. Memory: at most ``window`` objects and
    at most ``budget`` bytes of them (``READ_AHEAD_BYTES``; a larger object alone) that
    the reader has not taken; a fetch waits, once its size is known (the GET's
    headers, or pyarrow's HEAD), until the bytes fit."""

    def __init__(self, paths: list[ObjectPath], window: int, budget: int | None = None):
        from concurrent.futures import ThreadPoolExecutor

        self.pending = [str(p) for p in paths]
        self.by_key = {str(p): p for p in paths}
        self.futures: dict = {}
        self.pool = ThreadPoolExecutor(max_workers=window, thread_name_prefix="read-ahead")
        self.window = window
        self.budget = READ_AHEAD_BYTES if budget is None else budget
        self.cond = threading.Condition()
        self.held = 0  # bytes admitted and not yet taken by the reader (or dropped)
        self.sizes: dict[str, int] = {}  # key -> bytes admitted
        self.wanted: set[str] = set()  # the reader waits for it: admitted whatever the bytes
        self.peeked: set[str] = set()  # the reader peeks: not admitted now, never waited for
        self.closed = False
        self._fill()

    def _fill(self) -> None:
        while self.pending and len(self.futures) < self.window:
            key = self.pending.pop(0)
            self.futures[key] = self.pool.submit(_get, self.by_key[key], self._admission(key))

    def _admission(self, key: str):
        def admit(size: int) -> bool:
            with self.cond:
                while True:
                    if self.closed:
                        return False
                    if key in self.wanted or not self.held or self.held + size <= self.budget:
                        self.held += size
                        self.sizes[key] = size
                        return True
                    if key in self.peeked:
                        return False  # the reader reads the footer itself, the object later
                    self.cond.wait()

        return admit

    def _release(self, key: str) -> None:
        with self.cond:
            self.held -= self.sizes.pop(key, 0)
            self.cond.notify_all()

    def _mark(self, marks: set[str], key: str) -> None:
        with self.cond:
            marks.add(key)
            self.cond.notify_all()

    def get(self, key: str) -> bytes | None:
        if key not in self.futures:
            if key not in self.by_key or key not in self.pending:
                return None  # not announced, or already given: the caller reads it
            # The reader skipped ahead (objects it turned out not to need): forget them.
            self._drop_before(self.pending.index(key) + 1, list(self.futures))
            self._fill()
            return None
        announced = list(self.futures)
        self._drop_before(0, announced[: announced.index(key)])
        future = self.futures.pop(key)
        self._mark(self.wanted, key)
        self._fill()
        try:
            return future.result()  # None: not fetched (the caller reads it)
        except OSError:
            return None  # read again by the caller: the same error, raised in its place
        finally:
            self._release(key)  # the reader holds it now

    def peek(self, key: str) -> bytes | None:
        """The object if it is in the window, without taking it (a footer read before the
        object itself is read); None when it would wait for the budget."""
        future = self.futures.get(key)
        if future is None:
            return None
        self._mark(self.peeked, key)
        try:
            return future.result()
        except OSError:
            return None

    def _drop_before(self, n_pending: int, skipped_keys: list[str]) -> None:
        del self.pending[:n_pending]
        for skipped in skipped_keys:
            future = self.futures.pop(skipped)
            future.cancel()
            # Its bytes count until its fetch has ended (now, if it had).
            future.add_done_callback(lambda _, key=skipped: self._release(key))
            self._mark(self.peeked, skipped)  # waiting for the budget: give up

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        for future in self.futures.values():
            future.cancel()
        self.pool.shutdown(wait=True)


# Per thread: the symbols of a shard job may run on threads (symbols_at_once), each
# reading its own objects in its own block.
_THREAD = threading.local()


def _read_ahead() -> _ReadAhead | None:
    return getattr(_THREAD, "read_ahead", None)


@contextlib.contextmanager
def read_ahead(paths, window: int = 8) -> Iterator[None]:
    """Within the block, S3 objects of ``paths`` (read in that order, each once; the
    reader may skip some) are fetched ``window`` at a time in the background; local paths
    need nothing. A block inside another one (same thread) uses the outer one's
    announcement; each thread has its own."""
    remote = [data_path(p) for p in paths if is_remote(p)]
    if not remote or _read_ahead() is not None:
        yield
        return
    ahead = _THREAD.read_ahead = _ReadAhead(remote, window)
    try:
        yield
    finally:
        _THREAD.read_ahead = None
        ahead.close()


def in_read_ahead(path) -> bool:
    """Whether this thread's read-ahead window holds ``path`` (fetched or being fetched):
    its reads, footer included, need no request of their own."""
    reading = _read_ahead()
    return reading is not None and str(data_path(path)) in reading.futures


def read_text(path) -> str:
    return read_bytes(path).decode()


def read_json(path, default: Any = None) -> Any:
    try:
        return json.loads(read_bytes(path))
    except FileNotFoundError:
        return default


def read_state(path) -> dict:
    """A stage's private record of what it did (``layout.state_path``): only ever a cache
    that lets a rerun skip work, so a missing one reads as ``{}``, and so does one that is
    not a JSON object (torn by a crash with ``storage.fsync: false``, zeroed by a disk
    fault, a foreign file), with a warning naming it: the stage then redoes what the record
    would have let it skip, and writes a good one. A storage error still raises (a failing
    S3 request is no reason to redo years of work)."""
    try:
        state = json.loads(read_bytes(path))
    except FileNotFoundError:
        return {}
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        problem = f"{type(exc).__name__}: {exc}"
    else:
        if isinstance(state, dict):
            return state
        problem = f"a JSON {type(state).__name__}, not an object"
    import logging

    logging.getLogger(__name__).warning(
        "%s: unreadable (%s); the stage redoes what it recorded", uri(path), problem
    )
    return {}


# Parquet objects up to this size are read from S3 in one GET (partitions, quality
# records); larger ones (whole-history results) through coalesced ranged GETs.
WHOLE_PARQUET_READ_BYTES = 32 << 20


def read_parquet(
    path, *, listed_size: int | None = None, small: bool = False, **options
) -> pa.Table:
    """A whole Parquet file (``pq.ParquetFile(...).read(**options)``: columns=...); a
    damaged file's error names it.

    ``listed_size``: the object's size in a listing the caller just made. On S3, up to
    ``WHOLE_PARQUET_READ_BYTES``, the object is then fetched whole in one GET without
    asking its size first (a HEAD, one more round trip). The size only chooses between the
    whole read and ranged reads: the GET returns the object as the store holds it when it
    is served, so an object replaced since the listing is read whole, never cut at the
    listed size.

    ``small``: the caller knows the object to be far below ``WHOLE_PARQUET_READ_BYTES``
    (a symbol's quality record: a row per day), without a listing (its folder holds every
    symbol's): on S3 one GET of the whole object, no HEAD for its size first."""
    p = data_path(path)
    with _naming_the_file(p):
        return _read_parquet(p, listed_size, small, **options)


def _read_parquet(p, listed_size: int | None = None, small: bool = False, **options) -> pa.Table:
    import pyarrow.parquet as pq

    if not isinstance(p, ObjectPath):
        return pq.ParquetFile(p).read(**options)
    import pyarrow as pa

    reading = _read_ahead()
    ahead = reading.get(str(p)) if reading is not None else None
    if ahead is None and (
        small or (listed_size is not None and listed_size <= WHOLE_PARQUET_READ_BYTES)
    ):
        ahead = _get(p)
    if ahead is not None:
        return pq.ParquetFile(pa.BufferReader(ahead)).read(**options)
    with _request("parquet_read"), _open_object(p) as f:
        if f.size() <= WHOLE_PARQUET_READ_BYTES:
            # One GET for the whole object instead of one per column chunk (the footer,
            # then each column of each row group: a round trip each on S3).
            return pq.ParquetFile(pa.BufferReader(f.read())).read(**options)
        # Large files: only the columns asked for, their ranges coalesced and fetched
        # concurrently.
        return pq.ParquetFile(f, pre_buffer=True).read(**options)


def sha256(path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open_input(path) as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _file_infos(base, recursive: bool) -> tuple[str, list]:
    """``(inner path, pyarrow FileInfos)`` below a folder (none when it is absent): the one
    listing of :func:`list_files` and :func:`file_sizes` (on S3 after the folder's pending
    uploads, paginated by pyarrow)."""
    import pyarrow.fs as pafs

    if isinstance(base, ObjectPath):
        _settle_below(base)
    fs, inner = filesystem(base)
    selector = pafs.FileSelector(inner, recursive=recursive, allow_not_found=True)
    try:
        if isinstance(base, ObjectPath):
            with _request("list"):
                return inner, fs.get_file_info(selector)
        return inner, fs.get_file_info(selector)
    except NotADirectoryError:
        return inner, []
    except OSError as exc:
        if isinstance(base, ObjectPath) and not isinstance(exc, StorageError):
            # Named, with what to check when refused (pyarrow's message names the key only).
            raise StorageError(f"{base}: list failed: {exc}") from exc
        raise


def list_files(directory, *, recursive: bool = True, suffix: str = "") -> list:
    """Files below ``directory`` (sorted paths of the same kind; none when it is absent).

    Temporary files of writers (``io.TEMP_GLOB``) are never listed. On S3 the listing is
    paginated (ListObjectsV2 continuation tokens), so any number of keys comes back; the
    files directly in a folder come from its one delimited listing (``_listing``)."""
    import pyarrow.fs as pafs

    base = data_path(directory)
    if isinstance(base, ObjectPath) and not recursive:
        return [base / name for name in sorted(_listing(base)) if name.endswith(suffix)]
    inner, infos = _file_infos(base, recursive)
    out = []
    for info in infos:
        if info.type != pafs.FileType.File:
            continue
        rel = info.path[len(inner) :].lstrip("/")
        name = rel.rsplit("/", 1)[-1]
        if not name.endswith(suffix) or _is_writer_temp(name):
            continue
        out.append(base / rel)
    return sorted(out, key=str)


def broken_links(directory, *, depth: int = 1, suffix: str = "") -> list[Path]:
    """Symbolic links at most ``depth`` levels below a local ``directory`` whose target does
    not exist (a file whose name ends with ``suffix``, or a folder): ``list_files`` leaves
    them out, as if nothing were there. An S3 dir has none (empty list)."""
    base = data_path(directory)
    if isinstance(base, ObjectPath):
        return []
    found: list[Path] = []

    def scan(folder: Path, left: int) -> None:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            return  # absent or unreadable: list_files' business
        for entry in entries:
            if entry.is_symlink() and not os.path.exists(entry.path):
                if entry.name.endswith(suffix) or left > 1:
                    found.append(Path(entry.path))
            elif left > 1 and entry.is_dir():
                scan(Path(entry.path), left - 1)

    scan(base, depth)
    return sorted(found, key=str)


def walk_files(directory, *, suffix: str = "") -> Iterator:
    """The files below ``directory`` ending with ``suffix``, one folder's listing at a time
    (depth first, sorted): memory bounded by the largest folder whatever the tree holds,
    where ``list_files`` holds every path at once. Writers' temporary files are left out."""
    import pyarrow.fs as pafs

    base = data_path(directory)
    inner, infos = _file_infos(base, False)
    files, folders = [], []
    for info in infos:
        name = info.path[len(inner) :].strip("/")
        if info.type == pafs.FileType.Directory:
            folders.append(name)
        elif info.type == pafs.FileType.File and name.endswith(suffix):
            if not _is_writer_temp(name):
                files.append(name)
    del infos
    for name in sorted(files):
        yield base / name
    for name in sorted(folders):
        yield from walk_files(base / name, suffix=suffix)


def file_sizes(directory, sized: str = "") -> dict[str, int | None]:
    """``{name: size}`` of the files directly in ``directory`` (empty when absent), the size
    only for names ending with ``sized`` (None for the others): one listing (local:
    ``scandir`` and a stat per sized file; S3: the listing's sizes) where a caller would
    otherwise ask file after file (an S3 HEAD each)."""
    p = data_path(directory)
    if isinstance(p, ObjectPath):
        import pyarrow.fs as pafs

        _, infos = _file_infos(p, recursive=False)
        return {
            i.base_name: i.size if i.base_name.endswith(sized) else None
            for i in infos
            if i.type == pafs.FileType.File
        }
    sizes: dict[str, int | None] = {}
    try:
        with os.scandir(p) as entries:
            for entry in entries:
                try:
                    if not entry.is_file(follow_symlinks=False):
                        continue
                    sized_entry = entry.name.endswith(sized)
                    sizes[entry.name] = (
                        entry.stat(follow_symlinks=False).st_size if sized_entry else None
                    )
                except FileNotFoundError:  # removed meanwhile
                    continue
    except (FileNotFoundError, NotADirectoryError):
        return {}
    return sizes


def file_names(directory) -> set[str]:
    """Names of the files directly in ``directory`` (none when absent; writers' temporary
    files included locally, S3 has none): one listing where a caller would otherwise test
    files one by one."""
    p = data_path(directory)
    if not isinstance(p, ObjectPath):
        try:
            with os.scandir(p) as entries:  # the names' types come with them: no stat
                return {e.name for e in entries if e.is_file(follow_symlinks=False)}
        except OSError:
            return set()
    return set(_listing(p))


def subdirs(directory, depth: int = 1) -> list:
    """Folders exactly ``depth`` levels below ``directory`` (sorted; on S3 the prefixes
    that hold objects, one delimited LIST per folder above that depth: never a listing
    of the files below, which are every symbol's)."""
    import pyarrow.fs as pafs

    p = data_path(directory)
    if not isinstance(p, ObjectPath):
        if not p.is_dir():
            return []
        return sorted(d for d in p.glob("/".join(["*"] * depth)) if d.is_dir())

    def folders_in(folder: ObjectPath) -> list:
        inner, infos = _file_infos(folder, recursive=False)
        return [
            folder / info.path[len(inner) :].strip("/")
            for info in infos
            if info.type == pafs.FileType.Directory
        ]

    level = [p]
    for _ in range(depth):  # the folders of a level listed at once
        level = [below for found in concurrently(folders_in, level) for below in found]
    return sorted(level, key=str)


def files_named(directory, prefixes) -> list:
    """Files directly in ``directory`` whose names start with one of ``prefixes`` (sorted;
    writers' temporary files left out). On S3 one LIST per prefix, of the keys that start
    with it: a symbol's files in a folder every symbol writes to, without paging through
    the others' (``list_files`` of such a folder grows with the universe)."""
    p = data_path(directory)
    prefixes = tuple(prefixes)
    if not isinstance(p, ObjectPath):
        # The names alone, no stat of every entry (pyarrow's listing stats each file: 12 ms
        # for a folder of 2,000 symbols' files, once per folder and symbol of a daily run).
        try:
            with os.scandir(p) as entries:
                found = [
                    p / e.name
                    for e in entries
                    if e.name.startswith(prefixes) and not _is_writer_temp(e.name) and e.is_file()
                ]
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(found, key=str)
    listed = concurrently(lambda prefix: _listing(p, prefix), prefixes)
    return sorted({p / name for names in listed for name in names}, key=str)


def is_dir(path) -> bool:
    """A local folder, or an S3 prefix with at least one object below it.

    On S3 the listing stops at the first page that holds an object (one request, whatever
    is below): it was the listing of every key below, paginated by 1,000, and the loaders
    ask it of folders such as ``results_data/{T}/resampled_klines`` that hold every
    symbol's files (10 sequential pages for 9,600 objects; docs/loading.md)."""
    p = data_path(path)
    if not isinstance(p, ObjectPath):
        return p.is_dir()
    return _any_object_below(p)


def _any_object_below(p: ObjectPath) -> bool:
    """Whether a key below ``p`` names an object (folder markers, keys ending in ``/``,
    are none; writers' temporary names neither); False for a missing bucket, as the
    listing of a missing bucket gave."""
    from botocore.exceptions import ClientError

    _settle_below(p)
    prefix = f"{p.key}/" if p.key else ""
    pages = _conditional_client().get_paginator("list_objects_v2")
    with _conditional(p, "list"), _request("list"):
        try:
            # Pages of 64 keys: a short answer (a page of 1,000 keys is ~0.3 MB of XML).
            pages_of_64 = pages.paginate(
                Bucket=p.bucket, Prefix=prefix, PaginationConfig={"PageSize": 64}
            )
            for page in pages_of_64:
                for entry in page.get("Contents", []):
                    name = entry["Key"].rsplit("/", 1)[-1]
                    if name and not _is_writer_temp(name):
                        return True
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code", "")) == "NoSuchBucket":
                return False
            raise
    return False


def remove_stale_temps(directory) -> int:
    """io.remove_stale_temps for a local folder; S3 never holds temporary objects (writes
    are staged locally), so there is nothing to remove there."""
    p = data_path(directory)
    if isinstance(p, ObjectPath) or not p.is_dir():
        return 0
    return io.remove_stale_temps(p)


def temp_files(directory) -> list[Path]:
    """Temporary files (``io.TEMP_GLOB``) a killed writer left in a local folder; none on
    S3, where nothing is written before it is complete."""
    p = data_path(directory)
    if isinstance(p, ObjectPath) or not p.is_dir():
        return []
    return sorted(p.glob(io.TEMP_GLOB))


def remove_stale_temps_of(path) -> int:
    """io.remove_stale_temps_of for a local file (nothing to do on S3)."""
    p = data_path(path)
    return 0 if isinstance(p, ObjectPath) else io.remove_stale_temps_of(p)


# ------------------------------------------------------------------ background uploads
# A PUT to an object store costs a round trip plus the server's work (about 40 ms per
# 1.5 MB Parquet partition on SeaweedFS here); waiting for each one would leave the job
# idle. Inside ``background_uploads()`` a data write returns once its bytes are staged
# (in memory or a spool file) and a bounded pool of threads uploads it. The barrier
# ``flush()`` waits for every pending upload and raises the failures, naming the objects.
# It runs before anything that vouches for data (records written by write_json /
# write_json_if_changed / touch here, and every io.write_json: state records, markers,
# stage reports) and when the block ends, so a record is never stored before its data.
# Reads, listings, deletes and moves of an object with a pending upload wait for it
# first, so a job sees its own writes. Each thread that opens a block has its own (the
# symbols of a shard job may run on threads: one symbol's barrier waits for its own
# uploads and raises its own failures only); reads wait for a pending upload of any block.
DEFAULT_UPLOAD_WORKERS = 4
DEFAULT_UPLOAD_BYTES = 256 << 20  # staged bytes in flight at most (memory / spool space)


class _Uploads:
    def __init__(self, workers: int, max_bytes: int):
        from concurrent.futures import ThreadPoolExecutor

        # Only the writes of the thread that opened the block go to the background and
        # only its records pass the barrier. Other threads (a lock's lease renewal, another
        # symbol without a block) write synchronously and never take its upload failures.
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="upload")
        self.max_bytes = max_bytes
        self.cond = threading.Condition()
        self.in_flight = 0  # staged bytes submitted and not yet uploaded
        self.pending: dict[str, Any] = {}  # object URI -> Future of its latest upload
        self.errors: list[StorageError] = []  # failed uploads the barrier has not raised
        # object URI -> [size, ETag] of the version this block stored (the PUT's answer),
        # until the process writes or deletes the object again: ``_stored_identity``.
        self.stored: dict[str, list] = {}

    def submit(self, dest: ObjectPath, nbytes: int, upload, cleanup=None) -> None:
        key = str(dest)
        self.wait_for(key)  # two versions of one object are stored in their order
        with self.cond:
            # One object larger than the cap still goes, alone.
            while self.in_flight and self.in_flight + nbytes > self.max_bytes:
                self.cond.wait()
            self.in_flight += nbytes
            self.pending[key] = self.pool.submit(self._run, dest, nbytes, upload, cleanup)

    def _run(self, dest, nbytes, upload, cleanup) -> StorageError | None:
        failure = None
        try:
            self.keep(dest, upload())
        except Exception as exc:
            failure = exc if isinstance(exc, StorageError) else StorageError(f"{dest}: {exc}")
        finally:
            if cleanup is not None:
                cleanup()
            with self.cond:
                self.in_flight -= nbytes
                if failure is not None:
                    self.errors.append(failure)
                self.cond.notify_all()
        return failure

    def keep(self, dest: ObjectPath, identity: list | None) -> None:
        """Keep the identity of a version of ``dest`` this block stored (None: unknown)."""
        if identity is not None:
            with self.cond:
                self.stored[str(dest)] = identity

    def wait_for(self, key: str, *, raise_failure: bool = True) -> None:
        """Wait for the pending upload of one object; raise its failure (``raise_failure``:
        the block's own thread; another thread only waits, the owner's barrier raises).
        The upload stays pending until it has finished: every thread that asks meanwhile
        waits for it too (a symbol's HEAD of its own output while another symbol's listing
        of the shared folder waited for that upload once saw the object's old version)."""
        with self.cond:
            future = self.pending.get(key)
        if future is None:
            return
        failure = future.result()
        self._forget({key: future})
        if failure is not None and raise_failure:
            raise failure

    def wait_below(self, prefix: str, *, raise_failure: bool = True) -> None:
        with self.cond:
            keys = [k for k in self.pending if k.startswith(prefix)]
        for key in keys:
            self.wait_for(key, raise_failure=raise_failure)

    def _forget(self, finished: dict[str, Any]) -> None:
        """Drop finished uploads from ``pending`` (unless a newer upload of the key took
        their place)."""
        with self.cond:
            for key, future in finished.items():
                if self.pending.get(key) is future:
                    del self.pending[key]

    def drain(self) -> list[StorageError]:
        """Wait for every pending upload; return (and forget) the failures."""
        with self.cond:
            pending = dict(self.pending)
        for future in pending.values():
            future.result()
        self._forget(pending)
        with self.cond:
            errors, self.errors = self.errors, []
        return errors


_OPEN_UPLOADS: set[_Uploads] = set()  # the blocks of every thread, for _settle
_OPEN_UPLOADS_LOCK = threading.Lock()


def _uploads() -> _Uploads | None:
    """The background uploads of the calling thread's block, if it opened one."""
    return getattr(_THREAD, "uploads", None)


def _open_uploads() -> list[_Uploads]:
    with _OPEN_UPLOADS_LOCK:
        return list(_OPEN_UPLOADS)


def flush() -> None:
    """The barrier: wait for every pending background upload; raise StorageError naming
    the object(s) whose upload failed. Nothing to do outside ``background_uploads()`` (or
    in a thread other than the one that opened it)."""
    uploads = _uploads()
    if uploads is None:
        return
    errors = uploads.drain()
    if errors:
        more = f" (and {len(errors) - 1} more failed upload(s))" if len(errors) > 1 else ""
        raise StorageError(f"{errors[0]}{more}") from errors[0]


@contextlib.contextmanager
def background_uploads(
    workers: int = DEFAULT_UPLOAD_WORKERS, max_bytes: int = DEFAULT_UPLOAD_BYTES
) -> Iterator[None]:
    """Within the block, S3 data writes upload in the background (see above); the block
    ends with the barrier. Nested blocks share the outer one. A block left by an
    exception still waits for its uploads (their failures are logged, the exception
    stands). Local data dirs are unaffected (their writes stay synchronous)."""
    if _uploads() is not None:
        yield
        return
    uploads = _THREAD.uploads = _Uploads(workers, max_bytes)
    with _OPEN_UPLOADS_LOCK:
        _OPEN_UPLOADS.add(uploads)
    ok = False
    try:
        yield
        ok = True
    finally:
        try:
            if ok:
                flush()
            else:
                for error in uploads.drain():
                    import logging

                    logging.getLogger(__name__).error("%s", error)
        finally:
            _THREAD.uploads = None
            with _OPEN_UPLOADS_LOCK:
                _OPEN_UPLOADS.discard(uploads)
            uploads.pool.shutdown(wait=True)


io.set_record_barrier(flush)


def uploads_in_background(func):
    """Decorator of a job's entry point: its body runs in ``background_uploads()``."""
    import functools

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with background_uploads():
            return func(*args, **kwargs)

    return wrapper


def _is_missing(exc: OSError) -> bool:
    """pyarrow reports a missing object as a FileNotFoundError or, depending on the
    request, as an OSError whose text says so."""
    text = str(exc).lower()
    return isinstance(exc, FileNotFoundError) or "not found" in text or "does not exist" in text


# Errors of the machine, not of a file's bytes: a full disk or quota, a read-only file
# system, no permission, no file handles or memory left. Seen inside a read of a file (or a
# job that reads one file and writes another: a features file on a full disk), they say
# nothing of the file read, which must not be taken for damaged (and removed).
_NOT_THE_FILES_FAULT = frozenset(
    {
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EROFS,
        errno.EACCES,
        errno.EPERM,
        errno.EMFILE,
        errno.ENFILE,
        errno.ENOMEM,
    }
)


def is_machine_error(exc: BaseException) -> bool:
    """Whether ``exc`` is an error of the machine (``_NOT_THE_FILES_FAULT``: a full disk,
    no permission, no file handle or memory left), which says nothing of the file read:
    neither damaged nor to be left out as a bad input (the job fails; a later run reads it)."""
    return isinstance(exc, OSError) and exc.errno in _NOT_THE_FILES_FAULT


def is_damaged_file_error(exc: BaseException) -> bool:
    """Whether ``exc``, raised by a read of a Parquet file, says that the file itself cannot
    be decoded (damaged on disk, cut short by a copy, not Parquet at all), rather than that
    it is missing, that the storage failed (``StorageError``: a failing S3 request) or that
    the machine did (a full disk, no permission: ``_NOT_THE_FILES_FAULT``)."""
    import pyarrow as pa

    if is_machine_error(exc):
        return False
    return isinstance(exc, (pa.ArrowInvalid, OSError)) and not isinstance(
        exc, (StorageError, FileNotFoundError)
    )


@contextlib.contextmanager
def _reading(p: ObjectPath) -> Iterator[None]:
    """Errors of a read of ``p``: FileNotFoundError naming the object when it is missing,
    StorageError naming it otherwise."""
    try:
        yield
    except StorageError:
        raise
    except OSError as exc:
        if _is_missing(exc):
            raise FileNotFoundError(f"{p}: no such object") from None
        raise StorageError(f"{p}: {exc}") from exc


def _settle(p: ObjectPath) -> None:
    """Before touching an object: its pending upload (if any) is finished. A failed upload
    is raised in the thread whose block it belongs to only."""
    own = _uploads()
    for uploads in _open_uploads():
        uploads.wait_for(str(p), raise_failure=uploads is own)


def _settle_below(p: ObjectPath) -> None:
    own = _uploads()
    for uploads in _open_uploads():
        uploads.wait_below(str(p).rstrip("/") + "/", raise_failure=uploads is own)


# ------------------------------------------------------------------ writes
_SPOOL_COUNTER = iter(range(1 << 62))


def _spool_path() -> Path:
    """A fresh local file for staging an object (``$TMPDIR``)."""
    name = (
        f".tmp-crypto_lakehouse-{os.getpid()}-{threading.get_ident()}-{next(_SPOOL_COUNTER)}.part"
    )
    return Path(tempfile.gettempdir()) / name


def _put(dest: ObjectPath, body) -> list | None:
    """Store ``body`` (bytes or a pyarrow buffer) as one object. Up to
    ``SIGNED_PUT_MAX_BYTES`` (and with a signer: ``_whole_objects``) one signed PutObject,
    which returns the new object's identity ``[size, ETag]``. Otherwise a single write into
    pyarrow's output stream (a PUT, or a multipart upload completed only by ``close``),
    then an explicit ``close`` so that its errors are raised here (pyarrow.fs.copy_files
    and a stream closed by its destructor only print upload errors, never raise them);
    None: pyarrow does not give the ETag."""
    _changing(dest)
    signed = _whole_objects()
    if signed is not None and memoryview(body).nbytes <= SIGNED_PUT_MAX_BYTES:
        with _request("put"):
            return signed.put(dest, body)
    fs, inner = filesystem(dest)
    try:
        with _request("put"):
            out = fs.open_output_stream(inner)
            out.write(body)
            out.close()
    except OSError as exc:
        raise StorageError(f"{dest}: upload failed: {exc}") from exc
    return None


def _upload(local: Path, dest: ObjectPath) -> list | None:
    """Upload a complete local file as one object (memory-mapped: no copy in memory);
    ``_put``'s answer."""
    import pyarrow as pa

    with pa.memory_map(str(local)) as source:
        return _put(dest, source.read_buffer())


def _upload_spool(spool: Path, dest: ObjectPath) -> None:
    """Upload a complete spool file (now, or in the background), then remove it."""

    def cleanup() -> None:
        spool.unlink(missing_ok=True)

    _changing(dest)
    uploads = _uploads()
    if uploads is None:
        try:
            _upload(spool, dest)
        finally:
            cleanup()
        return
    try:
        uploads.submit(dest, spool.stat().st_size, lambda: _upload(spool, dest), cleanup)
    except BaseException:  # not submitted (an earlier upload of dest failed): no spool left
        cleanup()
        raise


@contextlib.contextmanager
def staged_path(path) -> Iterator[Path]:
    """Yield a local path to write ``path``'s whole content to; published on success.

    Local: io.atomic_path (temporary sibling, fsync, rename, fsync of the folder). S3: a
    spool file uploaded in one call once the body returns. On an exception nothing is
    published and the old file or object stays."""
    p = data_path(path)
    if not isinstance(p, ObjectPath):
        with io.atomic_path(p) as tmp:
            yield tmp
        return
    spool = _spool_path()
    spool.touch()
    try:
        yield spool
    except BaseException:
        spool.unlink(missing_ok=True)
        raise
    _upload_spool(spool, p)


@contextlib.contextmanager
def atomic_file(path) -> Iterator[tuple[int, Path]]:
    """``io.atomic_file`` for any store: yield ``(fd, local temporary path)``; on success
    the content is published at ``path`` (local: durable rename; S3: one upload)."""
    p = data_path(path)
    if not isinstance(p, ObjectPath):
        with io.atomic_file(p) as opened:
            yield opened
        return
    spool = _spool_path()
    fd = os.open(spool, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            yield fd, spool
        finally:
            os.close(fd)
    except BaseException:
        spool.unlink(missing_ok=True)
        raise
    _upload_spool(spool, p)


def write_bytes(path, data: bytes) -> None:
    """Data: on S3 uploaded in the background inside ``background_uploads()``."""
    p = data_path(path)
    if not isinstance(p, ObjectPath):
        io.write_bytes(p, data)
        return
    uploads = _uploads()
    if uploads is None:
        _put(p, data)
    else:
        data = bytes(data)  # the caller may reuse a mutable buffer
        uploads.submit(p, len(data), lambda: _put(p, data))


def _write_record(path, data: bytes) -> None:
    """A record (state, summary, marker): after the barrier, stored before returning."""
    flush()
    p = data_path(path)
    if not isinstance(p, ObjectPath):
        io.write_record(p, data)  # io's part of the barrier too (io.deferred_dir_syncs)
        return
    _settle(p)
    identity = _put(p, data)
    uploads = _uploads()
    if uploads is not None:
        uploads.keep(p, identity)


def write_text(path, text: str) -> None:
    write_bytes(path, text.encode())


def _json_text(obj: Any) -> str:
    return json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n"


def write_json(path, obj: Any) -> None:
    """Deterministic JSON (sorted keys), as io.write_json. A record: written after the
    barrier (every pending upload stored), and stored when this returns."""
    _write_record(path, _json_text(obj).encode())


def json_text(obj: Any) -> str:
    """The exact text :func:`write_json` stores for ``obj`` (for a digest of a record
    without reading it back)."""
    return _json_text(obj)


def write_json_if_changed(path, obj: Any) -> bool:
    return write_json_text_if_changed(path, _json_text(obj))


def write_json_text_if_changed(path, text: str) -> bool:
    """:func:`write_json_if_changed` of a record's text already made by :func:`json_text`
    (a caller that also digests the text encodes it once)."""
    return _write_text_if_changed(path, text, _write_record)


def _write_text_if_changed(path, text: str, write: Callable[[Any, bytes], None]) -> bool:
    """``write(path, text)`` unless the stored text is ``text`` already (True when written)."""
    try:
        if read_text(path) == text:
            return False
    except FileNotFoundError:
        pass
    write(path, text.encode())
    return True


def write_cache_json(path, obj: Any) -> None:
    """:func:`write_json` of a cache (a state record read back with :func:`read_state`,
    which takes a missing or torn one as absent): locally atomic but not fsynced
    (``io.write_cache``); on S3 one upload, as any record."""
    _write_cache(path, _json_text(obj).encode())


def write_cache_json_if_changed(path, obj: Any) -> bool:
    """:func:`write_cache_json` when the content differs (True when written)."""
    return _write_text_if_changed(path, _json_text(obj), _write_cache)


def _write_cache(path, data: bytes) -> None:
    p = data_path(path)
    if isinstance(p, ObjectPath):
        _write_record(p, data)  # an upload is stored when it returns: nothing to spare
        return
    flush()  # the barrier, as for any record
    io.write_cache(p, data)


def touch(path) -> None:
    """An empty marker (``.verified``): io.touch locally, an empty object on S3."""
    p = data_path(path)
    if not isinstance(p, ObjectPath):
        io.touch(p)  # after io's record barrier (flush)
    else:
        _write_record(p, b"")


def write_parquet(path, table: pa.Table, metadata: dict[str, str] | None = None, **options) -> int:
    """Parquet (zstd), atomically, as io.write_parquet; on S3 through a spool file. Returns
    the file's size in bytes."""
    p = data_path(path)
    if not isinstance(p, ObjectPath):
        return io.write_parquet(p, table, metadata, **options)
    with staged_path(p) as tmp:
        io.write_parquet_to(tmp, table, metadata, **options)
        return os.path.getsize(tmp)


# ------------------------------------------------------------------ delete, move
def delete(path, *, missing_ok: bool = True) -> None:
    p = data_path(path)
    if not isinstance(p, ObjectPath):
        p.unlink(missing_ok=missing_ok)
        return
    _settle(p)
    if not missing_ok and not exists(p):
        raise FileNotFoundError(f"{p}: no such object")
    try:
        _delete_object(p)
    except PreconditionFailed:  # a 404: gone already
        if not missing_ok:
            raise FileNotFoundError(f"{p}: no such object") from None


def _delete_object(p: ObjectPath) -> None:
    """One DeleteObject (S3 answers it for a missing key too). Not pyarrow's delete_file:
    it then looks for the parent "directory" and writes a marker object when it is empty
    (two more round trips, and under concurrent deletes it took 0.9 s instead of 0.06 s
    at 20 ms per answer: docs/benchmarks.md). Nothing here uses directory markers."""
    _changing(p)
    with _conditional(p, "delete"), _request("delete"):
        _conditional_client().delete_object(Bucket=p.bucket, Key=p.key)


def move(src, dst) -> None:
    """Rename a file (local: durable rename; S3: copy then delete of the source)."""
    s, d = data_path(src), data_path(dst)
    if not isinstance(s, ObjectPath) and not isinstance(d, ObjectPath):
        d.parent.mkdir(parents=True, exist_ok=True)
        io.commit_temp(s, d)
        return
    if isinstance(s, ObjectPath) != isinstance(d, ObjectPath):
        raise ValueError(f"move across stores: {s} → {d}")
    _settle(s)
    _settle(d)
    _changing(d)
    fs, inner_src = filesystem(s)
    _, inner_dst = filesystem(d)
    try:
        with _request("copy"):
            fs.copy_file(inner_src, inner_dst)
        _delete_object(s)
    except FileNotFoundError:
        raise FileNotFoundError(f"{s}: no such object") from None
    except OSError as exc:
        if "NO_SUCH_KEY" in str(exc) or "does not exist" in str(exc):
            raise FileNotFoundError(f"{s}: no such object") from None
        raise StorageError(f"{s} → {d}: move failed: {exc}") from exc


def move_local_file(local: Path, dst) -> None:
    """Put a local file (a defective download kept for inspection) at ``dst``: a rename
    on a local data dir, an upload then removal of the local file on S3."""
    d = data_path(dst)
    if not isinstance(d, ObjectPath):
        d.parent.mkdir(parents=True, exist_ok=True)
        io.commit_temp(local, d)
        return
    _settle(d)
    _upload(Path(local), d)
    Path(local).unlink(missing_ok=True)


def ensure_dir(path) -> None:
    """Create a local folder (S3 has no folders: nothing to do)."""
    p = data_path(path)
    if not isinstance(p, ObjectPath):
        p.mkdir(parents=True, exist_ok=True)


def ensure_parent(path) -> None:
    """Create a local file's folder (S3 has no folders: nothing to do)."""
    p = data_path(path)
    if not isinstance(p, ObjectPath):
        p.parent.mkdir(parents=True, exist_ok=True)


# ------------------------------------------------------------------ conditional requests
# Compare-and-swap on one small object (the run lease of an S3 data dir, crypto_lakehouse/
# lock.py): a PUT with ``If-None-Match: *`` creates it only if absent, a PUT or DELETE with
# ``If-Match: <etag>`` replaces or removes it only if unchanged since it was read. pyarrow.fs
# cannot send these headers, so these few requests go through botocore (signed requests,
# the AWS default credential chain, the endpoint settings of s3_endpoint()). botocore is
# imported on first use: job processes never make these requests and never load it.
class PreconditionFailed(StorageError):
    """A conditional request lost: the object exists (If-None-Match), or changed or is
    gone (If-Match)."""


class ConditionalRequestsUnsupported(StorageError):
    """The store refuses conditional requests (501 NotImplemented)."""


class ConditionalSupport(NamedTuple):
    """What the store honours, as measured by :func:`conditional_support`."""

    writes: bool  # PUT with If-None-Match: * and with If-Match
    deletes: bool  # DELETE with If-Match


# (endpoint settings, bucket) -> measured support; cleared by configure()
_CONDITIONAL: dict[tuple, ConditionalSupport] = {}
_CONDITIONAL_CLIENT: list = []  # [(endpoint settings, botocore client)]


def _conditional_client():
    import botocore.session
    from botocore.config import Config

    endpoint = s3_endpoint()
    # One connection per request in flight: HEAD rounds of every symbol running at once
    # (botocore's default pool of 10 discarded the others' connections, a new TCP and TLS
    # handshake each, with a "Connection pool is full" warning in the job's log).
    pool = _SETTINGS["symbols_at_once"] * HEADS_AT_ONCE + 8
    with _S3_LOCK:
        if _CONDITIONAL_CLIENT and _CONDITIONAL_CLIENT[0][0] == (endpoint, pool):
            return _CONDITIONAL_CLIENT[0][1]
        style = "virtual" if endpoint["addressing_style"] == "virtual" else "path"
        client = botocore.session.get_session().create_client(
            "s3",
            endpoint_url=endpoint["endpoint_url"],
            region_name=endpoint["region"],
            config=Config(
                s3={"addressing_style": style},
                connect_timeout=10,
                read_timeout=30,
                max_pool_connections=pool,
            ),
        )
        _CONDITIONAL_CLIENT[:] = [((endpoint, pool), client)]
        return client


def _object_path(path) -> ObjectPath:
    p = data_path(path)
    if not isinstance(p, ObjectPath):
        raise ValueError(f"{path}: conditional requests are for s3:// objects")
    return p


@contextlib.contextmanager
def _conditional(p: ObjectPath, what: str) -> Iterator[None]:
    """botocore's errors of a request on ``p`` as this module's (no credentials in them:
    botocore's messages name the operation, the code and the server's message)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        # 412: the condition failed; 409 ConditionalRequestConflict: AWS's answer to a
        # concurrent conditional write on the same key; 404 on If-Match: the object is gone.
        if status in (409, 412) or code in ("PreconditionFailed", "ConditionalRequestConflict"):
            raise PreconditionFailed(f"{p}: {what}: precondition failed ({code})") from None
        if code in ("NoSuchKey", "NotFound", "404") or (status == 404 and "Bucket" not in code):
            raise PreconditionFailed(f"{p}: {what}: no such object") from None
        if status == 501 or code == "NotImplemented":
            raise ConditionalRequestsUnsupported(f"{p}: {what}: {code}") from None
        raise StorageError(f"{p}: {what} failed: {code} {error.get('Message', '')}") from exc
    except BotoCoreError as exc:
        raise StorageError(f"{p}: {what} failed: {exc}") from exc


# S3's smallest part but the last: a copied prefix shorter than this cannot be a part.
MIN_PART_BYTES = 5 << 20
# A copied part is at most 5 GiB: a longer prefix is copied in parts of this size.
COPY_PART_BYTES = 4 << 30
_PART_COPY_REFUSED: set[tuple] = set()  # (endpoint settings, bucket) refusing UploadPartCopy


def write_prefix_and_rest(path, source, prefix_bytes: int, rest: bytes) -> bool:
    """Publish the object ``path`` as the first ``prefix_bytes`` of the object ``source``
    followed by ``rest``, the prefix copied inside the store (a multipart upload whose first
    part is an UploadPartCopy of that byte range): its bytes are neither downloaded nor
    uploaded again. ``path`` may be ``source``: the copy is taken before the new object
    replaces it, which happens only when the upload completes. False, with nothing written,
    when it cannot be done that way: local paths, a prefix shorter than a part, a store
    that refuses part copies (remembered per process); the caller then writes the file
    itself."""
    dest, src = data_path(path), data_path(source)
    if not (isinstance(dest, ObjectPath) and isinstance(src, ObjectPath)):
        return False
    refused_key = (tuple(s3_endpoint().items()), dest.bucket)
    if prefix_bytes < MIN_PART_BYTES or refused_key in _PART_COPY_REFUSED:
        return False
    _settle(src)
    _settle(dest)
    _changing(dest)
    client = _conditional_client()
    bucket, key = dest.bucket, dest.key
    with _conditional(dest, "multipart upload"), _request("put"):
        upload = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    # Parts of COPY_PART_BYTES; a short remainder joins the part before it (every part
    # but the last needs MIN_PART_BYTES).
    bounds = list(range(0, prefix_bytes, COPY_PART_BYTES))[1:]
    if bounds and prefix_bytes - bounds[-1] < MIN_PART_BYTES:
        bounds.pop()
    ranges = list(zip([0, *bounds], [*bounds, prefix_bytes], strict=True))
    parts = []
    try:
        try:
            for number, (lo, hi) in enumerate(ranges, start=1):
                with _conditional(dest, "part copy"), _request("copy"):
                    copied = client.upload_part_copy(
                        Bucket=bucket, Key=key, UploadId=upload, PartNumber=number,
                        CopySource={"Bucket": src.bucket, "Key": src.key},
                        CopySourceRange=f"bytes={lo}-{hi - 1}",
                    )  # fmt: skip
                parts.append({"PartNumber": number, "ETag": copied["CopyPartResult"]["ETag"]})
        except (ConditionalRequestsUnsupported, StorageError):
            _PART_COPY_REFUSED.add(refused_key)
            client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload)
            return False
        with _conditional(dest, "upload part"), _request("put"):
            last = client.upload_part(
                Bucket=bucket, Key=key, UploadId=upload, PartNumber=len(parts) + 1, Body=rest
            )
        parts.append({"PartNumber": len(parts) + 1, "ETag": last["ETag"]})
        with _conditional(dest, "complete upload"), _request("put"):
            completed = client.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts}
            )
    except BaseException:
        with contextlib.suppress(Exception):  # the error above is the one to report
            client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload)
        raise
    uploads = _uploads()
    if uploads is not None and completed.get("ETag"):  # its identity: no HEAD for it
        uploads.keep(dest, [prefix_bytes + len(rest), completed["ETag"]])
    return True


class Versioned(NamedTuple):
    """An object as :func:`read_versioned` found it."""

    body: bytes
    etag: str
    # Seconds since the object was last written, by the store's own clock: the answer's
    # Date header minus the object's LastModified (whole seconds). None when the answer
    # lacks either. Unlike a time written into the object, it does not depend on the
    # writer's clock nor on this machine's (the lease's staleness, lock.py).
    age_s: float | None = None


def _age_s(answer: dict) -> float | None:
    from email.utils import parsedate_to_datetime

    try:
        written = answer["LastModified"]
        date = answer["ResponseMetadata"]["HTTPHeaders"]["date"]
        return (parsedate_to_datetime(date) - written).total_seconds()
    except (KeyError, TypeError, ValueError):
        return None


def read_versioned(path) -> Versioned | None:
    """``(content, etag, age_s)`` of an object, None when there is none."""
    p = _object_path(path)
    _settle(p)
    client = _conditional_client()
    try:
        with _conditional(p, "read"), _request("get"):
            answer = client.get_object(Bucket=p.bucket, Key=p.key)
            body = answer["Body"].read()
    except PreconditionFailed:
        return None  # a 404
    return Versioned(body, answer["ETag"], _age_s(answer))


def bucket_exists(path) -> bool:
    """Whether the bucket of an S3 path exists (one HeadBucket); StorageError when the
    store cannot say (unreachable, credentials refused)."""
    from botocore.exceptions import BotoCoreError, ClientError

    p = _object_path(path)
    try:
        with _request("head"):
            _conditional_client().head_bucket(Bucket=p.bucket)
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if status == 404 or code in ("NoSuchBucket", "NotFound", "404"):
            return False
        raise StorageError(f"s3://{p.bucket}: head bucket failed: {code}") from exc
    except BotoCoreError as exc:
        raise StorageError(f"s3://{p.bucket}: head bucket failed: {exc}") from exc
    return True


def put_if_absent(path, data: bytes) -> str:
    """Create the object only if there is none (``If-None-Match: *``); its etag.
    PreconditionFailed when it exists."""
    p = _object_path(path)
    _settle(p)
    _changing(p)
    with _conditional(p, "create"), _request("put"):
        answer = _conditional_client().put_object(
            Bucket=p.bucket, Key=p.key, Body=data, IfNoneMatch="*"
        )
    return answer["ETag"]


def put_if_unchanged(path, data: bytes, etag: str) -> str:
    """Replace the object only if its etag is still ``etag`` (``If-Match``); the new
    etag. PreconditionFailed when it changed or is gone."""
    p = _object_path(path)
    _settle(p)
    _changing(p)
    with _conditional(p, "replace"), _request("put"):
        answer = _conditional_client().put_object(
            Bucket=p.bucket, Key=p.key, Body=data, IfMatch=etag
        )
    return answer["ETag"]


def delete_if_unchanged(path, etag: str) -> None:
    """Delete the object only if its etag is still ``etag`` (``If-Match`` on DELETE).
    PreconditionFailed when it changed or is gone. Only for a store whose
    :func:`conditional_support` says ``deletes`` (others delete unconditionally)."""
    p = _object_path(path)
    _settle(p)
    _changing(p)
    with _conditional(p, "delete"), _request("delete"):
        _conditional_client().delete_object(Bucket=p.bucket, Key=p.key, IfMatch=etag)


def conditional_support(probe_path) -> ConditionalSupport:
    """Whether the store of ``probe_path`` honours conditional requests, measured once per
    process and bucket on a throw-away object at ``probe_path`` (removed again).

    A store may refuse the headers (501, or 400 for an unknown one) or ignore them (the
    request succeeds as if unconditional): a second ``If-None-Match: *`` PUT and an
    ``If-Match`` PUT and DELETE with a wrong etag must each fail with 412 (or AWS's 409).
    An error of the plain PUT creating it (access, network) is raised."""
    p = _object_path(probe_path)
    key = (tuple(s3_endpoint().items()), p.bucket)
    if key in _CONDITIONAL:
        return _CONDITIONAL[key]
    wrong = '"' + "0" * 32 + '"'  # no content has this MD5 etag

    def refused(request) -> bool:
        """Whether a request that must fail its condition did; any other answer (it
        succeeded, 501, a 400 for an unknown header) counts as no support."""
        try:
            request()
        except PreconditionFailed:
            return True
        except StorageError:
            pass
        return False

    _put(p, b"probe")  # a plain PUT: its errors (access, network) are the caller's
    try:  # created: removed again whatever the probes do
        writes = refused(lambda: put_if_absent(p, b"probe")) and refused(
            lambda: put_if_unchanged(p, b"probe", wrong)
        )
        deletes = refused(lambda: delete_if_unchanged(p, wrong))
    finally:
        delete(p)
    support = _CONDITIONAL[key] = ConditionalSupport(writes, writes and deletes)
    return support
