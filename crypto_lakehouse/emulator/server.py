"""The emulator's HTTP server: archive listing and objects, REST dispatch, faults, counters.

Loopback only (127.0.0.1, ephemeral port). Two layers:

- ``Emulator.respond(method, target, headers, body)`` answers one request without knowing
  about sockets: routing, listing, objects, ranges, faults and counters, giving a ``Reply``
  (status, headers with Content-Length, body, ``drop``, ``close``, and the injected latency
  to wait before answering).
- The transport: one asyncio event loop in a daemon thread (``Emulator.start``). HTTP/1.1 is
  parsed by hand: keep-alive (HTTP/1.1 default, ``Connection: close`` honoured), pipelined
  requests answered in order, Content-Length request bodies, origin- and absolute-form
  targets, idle connections closed after ``Emulator.idle_timeout`` seconds. Latency is a
  timer, so concurrent requests wait in parallel without a thread each; archive requests are
  answered on the loop, REST requests (handlers may sleep or lock) in a thread pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from email.utils import formatdate
from http import HTTPStatus
from pathlib import Path
from typing import Any, Callable, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from .archive import (
    BUCKET,
    DirectorySource,
    ObjectInfo,
    Source,
    error_xml,
    http_time,
    list_page,
    page_xml,
)
from .faults import Faults, corrupt

log = logging.getLogger(__name__)

REST_PREFIXES = ("/api/", "/fapi/", "/dapi/")
SERVER = "AmazonS3"  # the Server header, as S3 sends it
BACKLOG = 1024  # a 64-thread downloader opens its connections in one burst
REST_WORKERS = 32  # threads running REST handlers (they may sleep: injected delays)
MAX_HEAD = 65536  # bytes of request line + headers
MAX_HEADERS = 100
MAX_BODY = 64 << 20  # request bodies (POST) are read and ignored
MAX_QUEUED = 64  # pipelined requests waiting on one connection before reading pauses

_METHODS = ("GET", "HEAD", "POST")
_REST_5XX = b'{"code":-1000,"msg":"An unknown error occurred while processing the request."}'
_REST_404 = b'{"code":-1,"msg":"emulator: no such endpoint"}'


class RestHandler(Protocol):
    def handle(
        self, method: str, path: str, query: dict[str, str], headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes] | None: ...


@dataclass
class Reply:
    """One answer. ``headers`` always hold Content-Length: for HEAD the length a GET would
    have (``body`` is then not sent). ``drop``: send half the body, then close the connection.
    ``close``: close the connection after the answer. ``latency``: seconds to wait first."""

    status: int
    headers: dict[str, str]
    body: bytes = b""
    drop: bool = False
    close: bool = False
    latency: float = 0.0


def _reply(
    status: int,
    body: bytes,
    headers: dict[str, str] | None = None,
    drop: bool = False,
    close: bool = False,
) -> Reply:
    hdrs = {"Content-Type": "application/xml"}
    for name, value in (headers or {}).items():
        if name.lower() != "content-length":
            hdrs[name] = value
    hdrs["Content-Length"] = str(len(body))
    if drop:
        hdrs["Connection"] = "close"
    return Reply(status, hdrs, body, drop=drop, close=close or drop)


def _error(status: int, code: str, message: str, key: str = "", close: bool = False) -> Reply:
    return _reply(status, error_xml(code, message, key), close=close)


def _split_target(target: str) -> tuple[str, str]:
    """(decoded path, raw query) of an origin-form (``/key?q``) or absolute-form
    (``http://host/key?q``) request target."""
    if target[:1] == "/" and target[1:2] != "/":  # origin-form: what urlsplit would give
        path, _, query = target.partition("#")[0].partition("?")
        return (unquote(path) if "%" in path else path), query
    if target.startswith("//"):  # a path, not a network location (as http.server does)
        target = "/" + target.lstrip("/")
    url = urlsplit(target)
    return unquote(url.path), url.query


def _header(headers: dict[str, str], name: str) -> str | None:
    """Case-insensitive lookup; ``name`` as clients usually spell it is tried first."""
    value = headers.get(name)
    if value is not None:
        return value
    lower = name.lower()
    for key, value in headers.items():
        if key.lower() == lower:
            return value
    return None


class Emulator:
    """Binance archive (+ optional REST) on ``base_url``; see docs/architecture.md.

    ``mirror_dir``: files at ``mirror_dir/<bucket key>``. ``listing``: another source (e.g. a
    ``SyntheticUniverse``) merged with the mirror; the mirror wins for a key in both.
    ``last_modified``: per-key override (epoch seconds, datetime or ISO string) of LastModified.
    ``track_keys=False`` skips the per-key ``get_counts`` (memory for multi-million-key runs).
    ``idle_timeout``: seconds after which an idle connection is closed (read at ``start``).
    """

    idle_timeout: float = 60.0

    def __init__(
        self,
        mirror_dir: str | Path | None = None,
        faults: Faults | None = None,
        rest: RestHandler | None = None,
        listing: Source | None = None,
        track_keys: bool = True,
    ):
        self.mirror_dir = Path(mirror_dir) if mirror_dir is not None else None
        self.faults = faults if faults is not None else Faults()
        self.rest = rest
        self.sources: list[Source] = []
        if self.mirror_dir is not None:
            self.sources.append(DirectorySource(self.mirror_dir))
        if listing is not None:
            self.sources.append(listing)
        self.track_keys = track_keys
        self.last_modified: dict[str, Any] = {}
        self.counts: Counter[str] = Counter()
        self.get_counts: Counter[str] = Counter()
        self._attempts: Counter[tuple[str, str]] = Counter()
        self._bodies_served: set[str] = set()  # corrupt_first keys already served once
        self._lock = threading.Lock()
        self._server: _LoopServer | None = None
        self.base_url = ""
        self.port = 0

    # ------------------------------------------------------------ lifecycle
    def start(self, port: int = 0) -> "Emulator":
        """Listen on 127.0.0.1 and serve from a daemon thread running an event loop; ``port``
        0 picks a free ephemeral port. Returns once listening."""
        if self._server is not None:
            return self
        self._server = _LoopServer(self, port)
        self.port = self._server.port
        self.base_url = f"http://127.0.0.1:{self.port}"
        log.info("emulator serving on %s", self.base_url)
        return self

    def stop(self) -> None:
        """Close the listening socket and every open connection; end the loop's thread."""
        if self._server is None:
            return
        self._server.stop()
        self._server = None

    def __enter__(self) -> "Emulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------ counters
    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counts[name] += n

    def reset_counts(self) -> None:
        with self._lock:
            self.counts.clear()
            self.get_counts.clear()

    def next_attempt(self, kind: str, key: str) -> int:
        """1-based number of this request for ``key`` (fault decisions depend on it), or 0
        when no active fault looks at it.

        Kept apart from ``get_counts`` so ``reset_counts`` does not make ``corrupt_first``
        keys corrupt again.
        """
        with self._lock:
            if kind == "get" and self.track_keys:
                self.get_counts[key] += 1
            if not self.faults.counts_attempts(key):
                return 0  # no decision depends on it: do not grow the table
            self._attempts[(kind, key)] += 1
            return self._attempts[(kind, key)]

    def first_body(self, key: str) -> bool:
        """True exactly once per ``corrupt_first`` key: the first body served for it."""
        if key not in self.faults.corrupt_first:
            return False
        with self._lock:
            if key in self._bodies_served:
                return False
            self._bodies_served.add(key)
            return True

    # ------------------------------------------------------------ objects
    def info(self, key: str) -> ObjectInfo | None:
        if self.faults.hides_checksum(key):
            return None
        for src in self.sources:
            meta = src.info(key)
            if meta is not None:
                override = self.last_modified.get(key)
                if override is not None:
                    meta = ObjectInfo(meta.size, _epoch(override), meta.etag)
                return meta
        return None

    def read(self, key: str) -> bytes | None:
        if self.faults.hides_checksum(key):
            return None
        for src in self.sources:
            body = src.read(key)
            if body is not None:
                return body
        return None

    def fetch(self, key: str) -> tuple[ObjectInfo, bytes] | None:
        """``(info(key), read(key))``, from one open file for a mirror's object."""
        if self.faults.hides_checksum(key):
            return None
        for src in self.sources:
            both = getattr(src, "fetch", None)
            if both is None:
                meta = src.info(key)
                if meta is None:
                    continue
                body = self.read(key)
                if body is None:
                    return None
            else:
                got = both(key)
                if got is None:
                    continue
                meta, body = got
            override = self.last_modified.get(key)
            if override is not None:
                meta = ObjectInfo(meta.size, _epoch(override), meta.etag)
            return meta, body
        return None

    # ------------------------------------------------------------ answers
    def respond(
        self, method: str, target: str, headers: dict[str, str], body: bytes = b""
    ) -> Reply:
        """The answer to one request, independent of the transport.

        ``target``: the request target (``/key?query`` or ``http://host/key?query``);
        ``headers``: request headers (any case); ``body``: the request body (ignored). REST
        paths call ``rest.handle``, which may block: an event loop runs those elsewhere.
        An exception inside becomes a 500 InternalError that closes the connection.
        """
        return self._respond(method, target, None, headers)

    def _rest_latency(self) -> float:
        """The latency of a REST request. The server waits it *before* the handler runs (so
        the handler's clock sees the request after it, as over a network); ``respond`` puts
        it in ``Reply.latency`` instead."""
        return self.faults.latency if self.faults.apply_to_rest else 0.0

    def _respond(
        self,
        method: str,
        target: str,
        split: tuple[str, str] | None,
        headers: dict[str, str],
        rest_latency_waited: bool = False,
    ) -> Reply:
        try:
            if method not in _METHODS:
                return _error(501, "NotImplemented", f"method {method} not implemented", close=True)
            path, raw_query = split if split is not None else _split_target(target)
            query = (
                {k: v[-1] for k, v in parse_qs(raw_query, keep_blank_values=True).items()}
                if raw_query
                else {}
            )
            if path.startswith(REST_PREFIXES):
                reply = self._rest(method, path, query, headers)
                if rest_latency_waited:
                    reply.latency = 0.0
                return reply
            if method == "POST":
                return _error(405, "MethodNotAllowed", "only GET and HEAD")
            return self._archive(method, path, query, headers)
        except Exception:  # a bug in the emulator must not look like a hung server
            log.exception("emulator error on %s %s", method, target)
            return _error(500, "InternalError", "emulator exception", close=True)

    def _rest(
        self, method: str, path: str, query: dict[str, str], headers: dict[str, str]
    ) -> Reply:
        self.count("rest")
        faults = self.faults
        latency = 0.0
        if faults.apply_to_rest:
            latency = faults.latency
            status = faults.fail_status(path, self.next_attempt("rest", path))
            if status is not None:
                self.count("fault_5xx")
                reply = _reply(status, _REST_5XX, {"Content-Type": "application/json"})
                reply.latency = latency
                return reply
        result = self.rest.handle(method, path, query, dict(headers)) if self.rest else None
        if result is None:
            self.count("not_found")
            reply = _reply(404, _REST_404, {"Content-Type": "application/json"})
        else:
            status, extra, body = result
            reply = _reply(status, body, {"Content-Type": "application/json", **(extra or {})})
        reply.latency = latency
        return reply

    def _archive(
        self, method: str, path: str, query: dict[str, str], headers: dict[str, str]
    ) -> Reply:
        head = method == "HEAD"
        rel = path.lstrip("/")
        # Path-style addressing: /data.binance.vision[/<key>]
        if rel == BUCKET or rel == BUCKET + "/":
            rel = ""
        elif rel.startswith(BUCKET + "/"):
            rel = rel[len(BUCKET) + 1 :]
        latency = self.faults.latency + self.faults.slow_keys.get(rel, 0.0)
        reply = self._listing(query) if rel == "" else self._object(rel, head, headers)
        reply.latency = latency
        return reply

    def _listing(self, query: dict[str, str]) -> Reply:
        self.count("list")
        prefix = query.get("prefix", "")
        status = self.faults.fail_status("?" + prefix, self.next_attempt("list", prefix))
        if status is not None:
            self.count("fault_5xx")
            return _error(status, "InternalError" if status == 500 else "SlowDown", "injected")
        try:
            max_keys = int(query.get("max-keys", "1000"))
            if max_keys < 0:
                raise ValueError
        except ValueError:
            return _error(400, "InvalidArgument", "max-keys must be a non-negative integer")
        page = list_page(
            self.sources,
            prefix=prefix,
            delimiter=query.get("delimiter", ""),
            marker=query.get("marker", ""),
            max_keys=max_keys,
            hidden=self.faults.hides_checksum,
        )
        return _reply(200, page_xml(page, self.info))

    def _object(self, key: str, head: bool, headers: dict[str, str]) -> Reply:
        faults = self.faults
        if head:
            self.count("head")
            n = self.next_attempt("head", key)
        else:
            self.count("get")
            n = self.next_attempt("get", key)
        status = faults.fail_status(key, n)
        if status is not None:
            self.count("fault_5xx")
            code = "InternalError" if status == 500 else "SlowDown"
            return _error(status, code, "injected", key)
        got = (self.info(key), b"") if head else self.fetch(key)
        meta, body = got if got is not None else (None, None)
        if meta is None or body is None:
            self.count("not_found")
            return _error(404, "NoSuchKey", "The specified key does not exist.", key)
        hdrs = {
            "Content-Type": "application/zip" if key.endswith(".zip") else "binary/octet-stream",
            "ETag": meta.etag,
            "Last-Modified": http_time(meta.last_modified),
            "Accept-Ranges": "bytes",
        }
        if head:
            hdrs["Content-Length"] = str(meta.size)
            return Reply(200, hdrs)
        if faults.corrupts(key, self.first_body(key)):
            self.count("fault_corrupt")
            body = corrupt(body)
        status = 200
        span = _byte_range(_header(headers, "Range"), len(body))
        if span == "invalid":
            return _reply(
                416,
                error_xml("InvalidRange", "The requested range is not satisfiable"),
                {"Content-Range": f"bytes */{len(body)}"},
            )
        if span is not None:
            start, end = span
            hdrs["Content-Range"] = f"bytes {start}-{end}/{len(body)}"
            body = body[start : end + 1]
            status = 206
        drop = faults.drops(key, n)
        if drop:
            self.count("fault_drop")
        else:
            self.count("get_bytes", len(body))
        return _reply(status, body, hdrs, drop=drop)


def _epoch(value: Any) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, datetime):
        return value.timestamp()
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def _byte_range(header: str | None, size: int):
    """``(start, end)`` of a single ``bytes=a-b`` / ``a-`` / ``-n`` range, None for no or an
    unsupported (multi-range) header, ``"invalid"`` for an unsatisfiable one."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first, _, last = header[len("bytes=") :].strip().partition("-")
    try:
        if first == "":
            n = int(last)
            if n <= 0:
                return "invalid"
            return max(0, size - n), size - 1
        start = int(first)
        end = min(int(last), size - 1) if last else size - 1
    except ValueError:
        return None
    if start >= size or end < start:
        return "invalid"
    return start, end


# ---------------------------------------------------------------- transport
_STATUS_LINES = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n" for s in HTTPStatus}
_date_cache: tuple[int, str] = (0, "")


def _http_date() -> str:
    """The Date header, formatted once per second."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, usegmt=True))
    return _date_cache[1]


class _Request:
    """A parsed request waiting for its answer. ``error``: the parser's answer (400, ...)."""

    __slots__ = ("method", "target", "headers", "body", "close", "keep_alive_10", "error")

    def __init__(self, method: str, target: str, headers: dict[str, str], close: bool):
        self.method = method
        self.target = target
        self.headers = headers
        self.body = b""
        self.close = close  # close the connection after the answer
        self.keep_alive_10 = False  # an HTTP/1.0 client asked for keep-alive
        self.error: Reply | None = None


def _bad(status: int, message: str) -> _Request:
    req = _Request("GET", "", {}, close=True)
    code = "BadRequest" if status == 400 else HTTPStatus(status).phrase.replace(" ", "")
    req.error = _error(status, code, message, close=True)
    return req


def _parse_head(head: bytes) -> tuple[_Request, int]:
    """A request (or a ``_bad`` one) from its request line and headers; and the length of its
    body (``Content-Length``), negative when the client waits for ``100 Continue``."""
    text = head.decode("latin-1")
    if text.count("\n") == text.count("\r\n"):
        lines = text.split("\r\n")
    else:  # bare LF line ends (tolerated, as http.server does)
        lines = [line.rstrip("\r") for line in text.split("\n")]
    words = lines[0].split()
    if len(words) != 3:
        return _bad(400, "malformed request line"), 0
    method, target, version = words
    if version == "HTTP/1.1":
        http11 = True
    else:
        major, dot, minor = version[5:].partition(".")
        if not (
            version.startswith("HTTP/")
            and dot
            and major.isascii()
            and major.isdigit()
            and minor.isascii()
            and minor.isdigit()
        ):
            return _bad(400, "malformed HTTP version"), 0
        if int(major) >= 2:
            return _bad(505, "HTTP version not supported"), 0
        http11 = (int(major), int(minor)) >= (1, 1)
    headers: dict[str, str] = {}
    lower: dict[str, str] = {}  # lower-case name -> value
    last = ""
    for line in lines[1:]:
        if line[:1] in (" ", "\t"):  # obsolete line folding
            if not last:
                return _bad(400, "malformed header"), 0
            headers[last] += " " + line.strip()
            lower[last.lower()] = headers[last]
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or " " in name or "\t" in name:
            return _bad(400, "malformed header"), 0
        key = name.lower()
        value = value.strip()
        if key in lower:  # the first one wins (as email.message does)
            last = ""
            if key == "content-length" and lower[key] != value:
                return _bad(400, "conflicting Content-Length"), 0
            continue
        if len(lower) >= MAX_HEADERS:
            return _bad(431, "too many headers"), 0
        headers[name] = lower[key] = value
        last = name
    conn = lower.get("connection")
    tokens = {t.strip().lower() for t in conn.split(",")} if conn else set()
    keep_alive = "keep-alive" in tokens
    close = "close" in tokens or (not http11 and not keep_alive)
    req = _Request(method, target, headers, close)
    req.keep_alive_10 = not http11 and not close
    if "transfer-encoding" in lower:
        return _bad(501, "Transfer-Encoding is not supported; send Content-Length"), 0
    length = 0
    text = lower.get("content-length")
    if text is not None:
        if not (text.isascii() and text.isdigit()):
            return _bad(400, "malformed Content-Length"), 0
        length = int(text)
        if length > MAX_BODY:
            return _bad(413, "request body too large"), 0
    if length and http11 and lower.get("expect", "").lower() == "100-continue":
        return req, -length
    return req, length


def _head_end(buf: bytearray) -> tuple[int, int]:
    """(end of the first request head, length of the blank line after it), or (-1, 0)."""
    crlf = buf.find(b"\r\n\r\n")
    lf = buf.find(b"\n\n")
    if lf >= 0 and (crlf < 0 or lf < crlf):
        return lf, 2
    if crlf >= 0:
        return crlf, 4
    return -1, 0


class _Connection(asyncio.Protocol):
    """One client connection: parse requests, answer them one after the other."""

    def __init__(self, server: "_LoopServer"):
        self.server = server
        self.emu = server.emu
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.peer = "-"
        self.buf = bytearray()
        self.queue: deque[_Request] = deque()
        self.reading_body: _Request | None = None  # a request whose body is still arriving
        self.body_left = 0
        self.busy = False  # a request is being answered (waiting for its latency or REST)
        self.finished = False  # no further request is read or answered
        self.eof = False
        self.reading = True  # False after a request that cannot be parsed
        self.write_paused = False
        self.read_paused = False
        self.in_next = False
        self.last_active = self.loop.time()

    # ------------------------------------------------------------ asyncio callbacks
    def connection_made(self, transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if peer else "-"
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.connections.add(self)

    def connection_lost(self, exc) -> None:
        self.finished = True
        self.queue.clear()
        self.server.connections.discard(self)

    def data_received(self, data: bytes) -> None:
        self.last_active = self.loop.time()
        if self.finished or not self.reading:
            return
        self.buf += data
        self._parse()
        if len(self.queue) >= MAX_QUEUED and not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()
        self._next()

    def eof_received(self) -> bool:
        self.eof = True
        # Answer what was asked, then close (keeping the write side open until then).
        return self.busy or bool(self.queue)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._next()

    # ------------------------------------------------------------ requests
    def _parse(self) -> None:
        buf = self.buf
        while buf and self.reading and not self.finished:
            if self.reading_body is not None:
                if len(buf) < self.body_left:
                    return
                req = self.reading_body
                req.body = bytes(buf[: self.body_left])
                del buf[: self.body_left]
                self.reading_body = None
                self.queue.append(req)
                continue
            # Blank lines before a request line are ignored (RFC 9112 §2.2).
            while buf[:2] == b"\r\n" or buf[:1] == b"\n":
                del buf[: 2 if buf[:1] == b"\r" else 1]
            if not buf:
                return
            end, skip = _head_end(buf)
            if end < 0:
                if len(buf) > MAX_HEAD:
                    self._stop_reading(_bad(431, "request head too large"))
                return
            if end > MAX_HEAD:
                self._stop_reading(_bad(431, "request head too large"))
                return
            req, length = _parse_head(bytes(buf[:end]))
            del buf[: end + skip]
            if req.error is not None:
                self._stop_reading(req)
                return
            if length < 0:  # Expect: 100-continue
                length = -length
                if len(buf) < length and not self.busy and not self.queue:
                    self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            if length:
                self.reading_body, self.body_left = req, length
                continue
            self.queue.append(req)

    def _stop_reading(self, req: _Request) -> None:
        """A request that cannot be parsed: answer it after the ones before, then close."""
        self.queue.append(req)
        self.buf.clear()
        self.reading_body = None
        self.reading = False  # data arriving later is ignored: the answer closes the connection

    def _next(self) -> None:
        """Answer queued requests in order; at most one at a time."""
        if self.in_next:
            return
        self.in_next = True
        try:
            while self.queue and not self.busy and not self.write_paused and not self.finished:
                req = self.queue.popleft()
                self.busy = True
                self._start(req)
            if self.read_paused and len(self.queue) < MAX_QUEUED // 2 and not self.finished:
                self.read_paused = False
                self.transport.resume_reading()
        finally:
            self.in_next = False

    def _start(self, req: _Request) -> None:
        if req.error is not None:
            self._ready(req, req.error)
            return
        try:
            split = _split_target(req.target)
        except ValueError:
            split = None  # _respond answers 500
        if split is not None and req.method in _METHODS and split[0].startswith(REST_PREFIXES):
            self.server.run_blocking(self, req, split)
            return
        self._ready(req, self.emu._respond(req.method, req.target, split, req.headers))

    def _ready(self, req: _Request, reply: Reply) -> None:
        if reply.latency > 0:
            self.loop.call_later(reply.latency, self._write, req, reply)
        else:
            self._write(req, reply)

    def _write(self, req: _Request, reply: Reply) -> None:
        self.busy = False
        transport = self.transport
        if self.finished or transport is None or transport.is_closing():
            return
        close = reply.close or req.close
        parts = [
            _STATUS_LINES.get(reply.status) or f"HTTP/1.1 {reply.status} \r\n",
            f"Server: {SERVER}\r\nDate: {_http_date()}\r\n",
        ]
        parts += [f"{name}: {value}\r\n" for name, value in reply.headers.items()]
        if close and "Connection" not in reply.headers:
            parts.append("Connection: close\r\n")
        elif req.keep_alive_10 and not close:
            parts.append("Connection: keep-alive\r\n")
        parts.append("\r\n")
        head = "".join(parts).encode("latin-1")
        body = reply.body
        if req.method == "HEAD" or not body:
            transport.write(head)
        elif reply.drop:
            # Half the body, then close: the client sees fewer bytes than Content-Length.
            transport.write(head + body[: len(body) // 2])
        else:
            transport.write(head + body)
        self.last_active = self.loop.time()
        if log.isEnabledFor(logging.DEBUG):  # the CLI's --verbose: every request
            log.debug(
                '%s "%s %s" %d %s',
                self.peer,
                req.method,
                req.target,
                reply.status,
                reply.headers.get("Content-Length", "-"),
            )
        if close:
            self.finished = True
            self.queue.clear()
            transport.close()
        elif self.eof and not self.queue:
            self.finished = True
            transport.close()
        else:
            self._next()


class _LoopServer:
    """The listening socket and an event loop serving it from a daemon thread."""

    def __init__(self, emu: Emulator, port: int = 0):
        self.emu = emu
        self.connections: set[_Connection] = set()
        self.idle_timeout = float(emu.idle_timeout)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))
            sock.listen(BACKLOG)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        self.loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self.thread = threading.Thread(
            target=self._run, args=(sock,), name=f"emulator-{self.port}", daemon=True
        )
        self.thread.start()
        self._ready.wait()
        if self._failure is not None:
            self.thread.join(timeout=5)
            raise self._failure

    # ------------------------------------------------------------ loop thread
    def _run(self, sock: socket.socket) -> None:
        loop = self.loop
        asyncio.set_event_loop(loop)
        try:
            try:
                self._server = loop.run_until_complete(
                    loop.create_server(lambda: _Connection(self), sock=sock, backlog=BACKLOG)
                )
            except BaseException as e:
                self._failure = e
                sock.close()
                return
            finally:
                self._ready.set()
            self._sweeper = loop.call_later(self._sweep_period(), self._sweep)
            loop.run_forever()
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        finally:
            loop.close()

    def _sweep_period(self) -> float:
        return max(0.05, min(5.0, self.idle_timeout / 4))

    def _sweep(self) -> None:
        """Close connections idle (nothing read, nothing being answered) for too long."""
        deadline = self.loop.time() - self.idle_timeout
        for conn in list(self.connections):
            if not conn.busy and not conn.queue and conn.last_active < deadline:
                conn.finished = True
                if conn.transport is not None:
                    conn.transport.close()
        self._sweeper = self.loop.call_later(self._sweep_period(), self._sweep)

    async def _shutdown(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            # Accept no more, but let connections accepted a moment ago get their protocol
            # (a task each) first: closing the server under such a task leaks its socket.
            for sock in self._server.sockets:
                self.loop.remove_reader(sock.fileno())
            me = asyncio.current_task()
            accepting = [t for t in asyncio.all_tasks() if t is not me]
            if accepting:
                await asyncio.wait(accepting, timeout=2)
            self._server.close()  # the listening socket closes (and resets its backlog)
        for conn in list(self.connections):
            conn.finished = True
            if conn.transport is not None:
                conn.transport.abort()
        await asyncio.sleep(0)  # abort()'s callbacks close the sockets
        self.loop.stop()

    # ------------------------------------------------------------ REST in threads
    def run_blocking(self, conn: _Connection, req: _Request, split: tuple[str, str]) -> None:
        """Answer a REST ``req`` in a worker thread (handlers may sleep), then write it from
        the loop. The injected latency is waited first (a timer), as a network would."""
        latency = self.emu._rest_latency()
        if latency > 0:
            self.loop.call_later(latency, self._submit, conn, req, split, True)
        else:
            self._submit(conn, req, split, False)

    def _submit(
        self, conn: _Connection, req: _Request, split: tuple[str, str], waited: bool
    ) -> None:
        if conn.finished:
            return  # the client left (or the server stops) while the latency passed
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(REST_WORKERS, thread_name_prefix="emulator-rest")
            pool = self._pool
        respond = self.emu._respond
        future = pool.submit(respond, req.method, req.target, split, req.headers, waited)
        future.add_done_callback(self._deliver(conn, req))

    def _deliver(self, conn: _Connection, req: _Request) -> Callable[[Future], None]:
        def done(future: Future) -> None:
            if future.cancelled():
                return  # the server stopped
            reply = future.result()  # _respond turns exceptions into a 500 Reply
            with contextlib.suppress(RuntimeError):  # the loop is closed: the server stopped
                self.loop.call_soon_threadsafe(conn._ready, req, reply)

        return done

    # ------------------------------------------------------------ lifecycle
    def stop(self) -> None:
        if threading.current_thread() is self.thread:
            self.loop.create_task(self._shutdown())  # from the loop: the thread ends by itself
            return
        with contextlib.suppress(RuntimeError):  # the loop already ended
            self.loop.call_soon_threadsafe(lambda: self.loop.create_task(self._shutdown()))
        self.thread.join(timeout=10)
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
