"""The archive side of the emulator: object sources and the S3 ListObjects v1 answer.

A *source* knows a tree of keys. It answers three questions:

- ``list_dir(dir_prefix)``: the sorted direct children of a directory (``dir_prefix`` ends
  with ``/`` or is empty); sub-directories are returned as ``<dir>/`` strings, objects as keys.
  The result may be a lazy sequence (only ``len`` and integer indexing are used), so a
  synthetic universe of millions of keys never materialises a list.
- ``info(key)``: ``ObjectInfo`` (size, last-modified epoch seconds, ETag) or None.
- ``read(key)``: the object's bytes or None.

``list_page`` turns sources into one S3 page (binance-facts §2): at most ``max_keys`` entries,
common prefixes count toward the limit, entries strictly greater than ``marker``, in
lexicographic order; ``NextMarker`` is the last entry of a truncated page.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
import os
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Protocol, Sequence
from xml.sax.saxutils import escape

BUCKET = "data.binance.vision"
S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"
MAX_KEYS = 1000
_XML_DECL = '<?xml version="1.0" encoding="UTF-8"?>\n'


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    last_modified: float  # epoch seconds
    etag: str  # quoted, as S3 sends it


class Source(Protocol):
    def list_dir(self, dir_prefix: str) -> Sequence[str]: ...

    def info(self, key: str) -> ObjectInfo | None: ...

    def read(self, key: str) -> bytes | None: ...


def _is_temp(name: str) -> bool:
    # Temporaries of crypto_lakehouse.io: never visible as objects.
    return name.startswith(".tmp-") and name.endswith(".part")


class DirectorySource:
    """Objects stored as files: ``root/<key>``. LastModified is the file's mtime."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._root = str(self.root)
        self._md5: dict[str, tuple[int, int, str]] = {}
        self._lock = threading.Lock()

    def _path(self, key: str) -> Path | None:
        path = self._file(key)
        return None if path is None else Path(path)

    def list_dir(self, dir_prefix: str) -> Sequence[str]:
        path = self._path(dir_prefix.rstrip("/")) if dir_prefix else self.root
        if path is None or not path.is_dir():
            return []
        out = []
        with os.scandir(path) as it:
            for entry in it:
                if _is_temp(entry.name):
                    continue
                if entry.is_dir():
                    out.append(f"{dir_prefix}{entry.name}/")
                elif entry.is_file():
                    out.append(f"{dir_prefix}{entry.name}")
        out.sort()
        return out

    def _file(self, key: str) -> str | None:
        # A string, not a Path: this runs for every GET and HEAD.
        if not key or key[0] == "/" or "\\" in key or ".." in key.split("/"):
            return None
        return f"{self._root}/{key}"

    def info(self, key: str) -> ObjectInfo | None:
        path = self._file(key)
        if path is None:
            return None
        try:
            st = os.stat(path)
        except (OSError, ValueError):
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        return self._info(key, st, None)

    def _info(self, key: str, st: os.stat_result, body: bytes | None) -> ObjectInfo | None:
        cached = self._md5.get(key)
        if cached and cached[0] == st.st_size and cached[1] == st.st_mtime_ns:
            etag = cached[2]
        else:
            if body is None:
                body = self.read(key)
                if body is None:
                    return None
            etag = hashlib.md5(body).hexdigest()
            with self._lock:
                self._md5[key] = (st.st_size, st.st_mtime_ns, etag)
        return ObjectInfo(st.st_size, st.st_mtime, f'"{etag}"')

    def read(self, key: str) -> bytes | None:
        got = self.fetch(key, meta=False)
        return None if got is None else got[1]

    def fetch(self, key: str, meta: bool = True) -> tuple[ObjectInfo | None, bytes] | None:
        """``(info(key), read(key))`` from one open file (a GET needs both); ``meta=False``
        skips the info."""
        path = self._file(key)
        if path is None:
            return None
        try:
            # O_NONBLOCK: opening a FIFO must not wait for a writer.
            with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb", buffering=0) as f:
                st = os.fstat(f.fileno())
                if not stat.S_ISREG(st.st_mode):
                    return None
                body = f.readall()
        except (OSError, ValueError):
            return None
        if not meta:
            return None, body
        if len(body) != st.st_size:  # the file changed while read: describe what was read
            etag = f'"{hashlib.md5(body).hexdigest()}"'
            return ObjectInfo(len(body), st.st_mtime, etag), body
        return self._info(key, st, body), body


class LazySeq(Sequence[str]):
    """A sorted sequence defined by its length and an index function (for ``bisect``)."""

    def __init__(self, n: int, item: Callable[[int], str]):
        self._n = n
        self._item = item

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self._item(j) for j in range(*i.indices(self._n))]
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(i)
        return self._item(i)


# ---------------------------------------------------------------- listing
@dataclass
class ListPage:
    prefix: str
    delimiter: str
    marker: str
    max_keys: int
    keys: list[str]
    common_prefixes: list[str]
    is_truncated: bool
    next_marker: str | None


def _dir_entries_after(
    sources: Sequence[Source], dir_prefix: str, prefix: str, marker: str
) -> Iterator[str]:
    """Merged sorted entries of a directory that start with ``prefix`` and are > ``marker``."""
    iters = []
    for src in sources:
        seq = src.list_dir(dir_prefix)
        lo = bisect.bisect_left(seq, prefix)
        lo = max(lo, bisect.bisect_right(seq, marker)) if marker else lo
        iters.append(_take_while_prefix(seq, lo, prefix))
    last = None
    for entry in heapq.merge(*iters):
        if entry != last:
            yield entry
            last = entry


def _take_while_prefix(seq: Sequence[str], lo: int, prefix: str) -> Iterator[str]:
    for i in range(lo, len(seq)):
        entry = seq[i]
        if not entry.startswith(prefix):
            return
        yield entry


def _walk(sources: Sequence[Source], dir_prefix: str) -> Iterator[str]:
    """All keys below ``dir_prefix`` in lexicographic order (a sorted tree walk is sorted)."""
    for entry in _dir_entries_after(sources, dir_prefix, dir_prefix, ""):
        if entry.endswith("/"):
            yield from _walk(sources, entry)
        else:
            yield entry


def _entries(
    sources: Sequence[Source], prefix: str, delimiter: str, marker: str
) -> Iterable[tuple[str, bool]]:
    """(entry, is_common_prefix) in order, for any delimiter."""
    dir_prefix = prefix[: prefix.rfind("/") + 1]
    if delimiter == "/":
        for entry in _dir_entries_after(sources, dir_prefix, prefix, marker):
            yield entry, entry.endswith("/")
        return
    # Generic path (no or unusual delimiter): roll keys up below the prefix.
    last_cp = None
    for key in _walk(sources, dir_prefix):
        if not key.startswith(prefix):
            continue
        if delimiter:
            cut = key.find(delimiter, len(prefix))
            if cut >= 0:
                cp = key[: cut + len(delimiter)]
                if cp != last_cp and cp > marker:
                    last_cp = cp
                    yield cp, True
                continue
        if key > marker:
            yield key, False


def list_page(
    sources: Sequence[Source],
    prefix: str = "",
    delimiter: str = "",
    marker: str = "",
    max_keys: int = MAX_KEYS,
    hidden: Callable[[str], bool] = lambda key: False,
) -> ListPage:
    max_keys = max(0, min(int(max_keys), MAX_KEYS))
    keys: list[str] = []
    cps: list[str] = []
    truncated = False
    last = None
    n = 0
    for entry, is_cp in _entries(sources, prefix, delimiter, marker):
        if not is_cp and hidden(entry):
            continue
        if n == max_keys:
            truncated = True
            break
        (cps if is_cp else keys).append(entry)
        last = entry
        n += 1
    next_marker = last if truncated and delimiter else None
    return ListPage(prefix, delimiter, marker, max_keys, keys, cps, truncated, next_marker)


def iso_time(epoch: float) -> str:
    """S3 LastModified: ``2026-04-01T08:06:34.000Z``."""
    whole = int(epoch // 1)
    millis = int(round((epoch - whole) * 1000))
    if millis == 1000:
        whole, millis = whole + 1, 0
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{millis:03d}Z"


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_http_times: dict[int, str] = {}  # epoch second -> http_time


def http_time(epoch: float) -> str:
    """``Mon, 01 Apr 2026 08:06:34 GMT``, as ``formatdate(epoch, usegmt=True)``; cached per
    second (it runs for every GET and HEAD, and a mirror's files share few seconds)."""
    whole = int(epoch // 1)
    if epoch - whole >= 0.9999995:  # formatdate rounds to microseconds first
        whole += 1
    text = _http_times.get(whole)
    if text is None:
        t = time.gmtime(whole)
        text = "%s, %02d %s %04d %02d:%02d:%02d GMT" % (
            _DAYS[t.tm_wday],
            t.tm_mday,
            _MONTHS[t.tm_mon - 1],
            t.tm_year,
            t.tm_hour,
            t.tm_min,
            t.tm_sec,
        )
        if len(_http_times) >= 65536:
            _http_times.clear()
        _http_times[whole] = text
    return text


def page_xml(
    page: ListPage, info: Callable[[str], ObjectInfo | None], bucket: str = BUCKET
) -> bytes:
    """Render a page like S3: Contents first, then CommonPrefixes."""
    parts = [
        _XML_DECL,
        f'<ListBucketResult xmlns="{S3_NS}">',
        f"<Name>{escape(bucket)}</Name>",
        f"<Prefix>{escape(page.prefix)}</Prefix>",
        f"<Marker>{escape(page.marker)}</Marker>",
    ]
    if page.next_marker is not None:
        parts.append(f"<NextMarker>{escape(page.next_marker)}</NextMarker>")
    parts.append(f"<MaxKeys>{page.max_keys}</MaxKeys>")
    if page.delimiter:
        parts.append(f"<Delimiter>{escape(page.delimiter)}</Delimiter>")
    parts.append(f"<IsTruncated>{'true' if page.is_truncated else 'false'}</IsTruncated>")
    for key in page.keys:
        meta = info(key)
        if meta is None:  # vanished between listing and stat: S3 would not list it either
            continue
        parts.append(
            f"<Contents><Key>{escape(key)}</Key>"
            f"<LastModified>{iso_time(meta.last_modified)}</LastModified>"
            f"<ETag>{escape(meta.etag)}</ETag><Size>{meta.size}</Size>"
            "<StorageClass>STANDARD</StorageClass></Contents>"
        )
    for cp in page.common_prefixes:
        parts.append(f"<CommonPrefixes><Prefix>{escape(cp)}</Prefix></CommonPrefixes>")
    parts.append("</ListBucketResult>")
    return "".join(parts).encode()


def error_xml(code: str, message: str, resource: str = "") -> bytes:
    extra = f"<Key>{escape(resource)}</Key>" if resource else ""
    return (
        f"{_XML_DECL}<Error><Code>{escape(code)}</Code><Message>{escape(message)}</Message>"
        f"{extra}<RequestId>EMULATOR</RequestId></Error>"
    ).encode()
