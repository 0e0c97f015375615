"""The emulator's HTTP server: archive listing and objects, REST dispatch, faults, counters.

Loopback only (127.0.0.1, ephemeral port). Two layers:

- ``Emulator.respond(method, target, headers, body)`` answers one request without knowing
  about sockets: routing, listing, objects, ranges, faults and counters, giving a ``Reply``
  (status, headers with Content-Length, body, ``drop``, ``close``, and the injected latency
  to wait before answering).
- The transport: aiohttp's low-level web server on an event loop in a daemon thread
  (``Emulator.start``); HTTP itself (keep-alive, pipelining, request bodies, origin- and
  absolute-form targets) is aiohttp's. Idle connections close after
  ``Emulator.idle_timeout`` seconds. Latency is ``asyncio.sleep``, so concurrent requests
  wait in parallel without a thread each; archive requests are answered on the loop, REST
  requests (handlers may sleep or lock) in a thread pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from aiohttp import web

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
        # Requests being answered now, and the most at once since the start (or
        # ``reset_counts``): what a client keeps in flight. Updated on the server's loop.
        self.in_flight = 0
        self.peak_in_flight = 0
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
            self.peak_in_flight = self.in_flight

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
class _LoopServer:
    """The listening socket and an aiohttp low-level server on an event loop in a daemon
    thread. Archive requests are answered on the loop; REST requests (handlers may sleep or
    lock) in a thread pool. Latency is ``asyncio.sleep``: concurrent requests wait in
    parallel without a thread each."""

    def __init__(self, emu: Emulator, port: int = 0):
        self.emu = emu
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
        self._web: web.Server | None = None
        self._server: asyncio.AbstractServer | None = None
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
                self._server = loop.run_until_complete(self._listen(sock))
            except BaseException as e:
                self._failure = e
                sock.close()
                return
            finally:
                self._ready.set()
            loop.run_forever()
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        finally:
            loop.close()

    async def _listen(self, sock: socket.socket) -> asyncio.AbstractServer:
        self._web = web.Server(  # inside the loop: aiohttp takes the running one
            self._handle, keepalive_timeout=float(self.emu.idle_timeout), access_log=None
        )
        return await self.loop.create_server(self._web, sock=sock, backlog=BACKLOG)

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        emu = self.emu
        emu.in_flight += 1
        emu.peak_in_flight = max(emu.peak_in_flight, emu.in_flight)
        try:
            return await self._answer(request)
        finally:
            emu.in_flight -= 1

    async def _answer(self, request: web.BaseRequest) -> web.StreamResponse:
        emu = self.emu
        method, target = request.method, request.raw_path
        headers = dict(request.headers)
        try:
            split = _split_target(target)
        except ValueError:
            split = None  # _respond answers 500
        if split is not None and method in _METHODS and split[0].startswith(REST_PREFIXES):
            # The latency first (the handler's clock sees the request after it, as over a
            # network), then the handler on a worker thread.
            latency = emu._rest_latency()
            if latency > 0:
                await asyncio.sleep(latency)
            reply = await self.loop.run_in_executor(
                self._rest_pool(), emu._respond, method, target, split, headers, latency > 0
            )
        else:
            reply = emu._respond(method, target, split, headers)
        if reply.latency > 0:
            await asyncio.sleep(reply.latency)
        if log.isEnabledFor(logging.DEBUG):  # the CLI's --verbose: every request
            log.debug(
                '%s "%s %s" %d %s', request.remote, method, target, reply.status,
                reply.headers.get("Content-Length", "-"),
            )  # fmt: skip
        return await self._send(request, reply)

    @staticmethod
    async def _send(request: web.BaseRequest, reply: Reply) -> web.StreamResponse:
        try:
            reason = HTTPStatus(reply.status).phrase
        except ValueError:
            reason = "Unknown"
        resp = web.StreamResponse(
            status=reply.status, reason=reason, headers={"Server": SERVER, **reply.headers}
        )
        if reply.close:
            resp.force_close()
        await resp.prepare(request)
        body = reply.body
        if request.method != "HEAD" and body:
            # ``drop``: half the body, then the connection closes (``close`` is set): the
            # client sees fewer bytes than Content-Length.
            await resp.write(body[: len(body) // 2] if reply.drop else body)
        await resp.write_eof()
        return resp

    def _rest_pool(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(REST_WORKERS, thread_name_prefix="emulator-rest")
            return self._pool

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()  # the listening socket closes
        if self._web is not None:
            await self._web.shutdown(timeout=0.5)
        self.loop.stop()

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
