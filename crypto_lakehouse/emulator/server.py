"""The emulator's HTTP server: archive listing and objects, REST dispatch, faults, counters.

Loopback only (127.0.0.1, ephemeral port), one daemon thread per connection, HTTP/1.1 with
Content-Length on every answer so clients can keep connections alive.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections import Counter
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol
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


class RestHandler(Protocol):
    def handle(
        self, method: str, path: str, query: dict[str, str], headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes] | None: ...


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024  # a 64-thread downloader opens its connections in one burst

    def __init__(self, emulator: "Emulator", port: int = 0):
        self.emulator = emulator
        self.open_sockets: set[socket.socket] = set()
        self.sockets_lock = threading.Lock()
        super().__init__(("127.0.0.1", port), _Handler)

    def process_request(self, request, client_address):
        # Headers and body go out in two writes; without TCP_NODELAY, Nagle on this side and
        # delayed ACKs on the client stall every small response by ~40 ms.
        with contextlib.suppress(OSError):
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.sockets_lock:
            self.open_sockets.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self.sockets_lock:
            self.open_sockets.discard(request)
        super().shutdown_request(request)

    def close_open_sockets(self) -> None:
        """Cut idle keep-alive connections so their threads end with the server."""
        with self.sockets_lock:
            socks = list(self.open_sockets)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class Emulator:
    """Binance archive (+ optional REST) on ``base_url``; see docs/architecture.md.

    ``mirror_dir``: files at ``mirror_dir/<bucket key>``. ``listing``: another source (e.g. a
    ``SyntheticUniverse``) merged with the mirror; the mirror wins for a key in both.
    ``last_modified``: per-key override (epoch seconds, datetime or ISO string) of LastModified.
    ``track_keys=False`` skips the per-key ``get_counts`` (memory for multi-million-key runs).
    """

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
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.base_url = ""
        self.port = 0

    # ------------------------------------------------------------ lifecycle
    def start(self, port: int = 0) -> "Emulator":
        """Serve from a daemon thread; ``port`` 0 picks a free ephemeral port."""
        if self._server is not None:
            return self
        self._server = _Server(self, port)
        self.port = self._server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"emulator-{self.port}",
            daemon=True,
        )
        self._thread.start()
        log.info("emulator serving on %s", self.base_url)
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.close_open_sockets()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

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


def _epoch(value: Any) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, datetime):
        return value.timestamp()
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "AmazonS3"
    timeout = 60  # idle keep-alive connections end by themselves

    server: _Server

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format, *args):  # noqa: A002 - stdlib signature
        log.debug("%s %s", self.address_string(), format % args)

    @property
    def emu(self) -> Emulator:
        return self.server.emulator

    # ------------------------------------------------------------ plumbing
    def _send(
        self,
        status: int,
        body: bytes,
        headers: dict[str, str] | None = None,
        head: bool = False,
        drop: bool = False,
    ) -> None:
        self.send_response(status)
        hdrs = {"Content-Type": "application/xml"}
        hdrs.update(headers or {})
        for name, value in hdrs.items():
            if name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        if drop:
            self.send_header("Connection", "close")
        self.end_headers()
        if head:
            return
        if drop:
            # Half the body, then a hard close: the client sees a short read.
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self.wfile.write(body)

    def _error(self, status: int, code: str, message: str, key: str = "", head=False) -> None:
        self._send(status, error_xml(code, message, key), head=head)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self._dispatch("POST")

    # ------------------------------------------------------------ routing
    def _dispatch(self, method: str) -> None:
        try:
            url = urlsplit(self.path)
            path = unquote(url.path)
            query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
            if path.startswith(REST_PREFIXES):
                self._rest(method, path, query)
            elif method == "POST":
                self._error(405, "MethodNotAllowed", "only GET and HEAD")
            else:
                self._archive(method, path, query, bool(url.query))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception:  # a bug in the emulator must not look like a hung server
            log.exception("emulator error on %s %s", method, self.path)
            self.close_connection = True
            try:
                self._error(500, "InternalError", "emulator exception")
            except OSError:
                pass

    def _rest(self, method: str, path: str, query: dict[str, str]) -> None:
        emu = self.emu
        emu.count("rest")
        faults = emu.faults
        if faults.apply_to_rest:
            if faults.latency:
                time.sleep(faults.latency)
            status = faults.fail_status(path, emu.next_attempt("rest", path))
            if status is not None:
                emu.count("fault_5xx")
                body = b'{"code":-1000,"msg":"An unknown error occurred while processing the request."}'
                self._send(status, body, {"Content-Type": "application/json"})
                return
        result = emu.rest.handle(method, path, query, dict(self.headers)) if emu.rest else None
        if result is None:
            emu.count("not_found")
            body = b'{"code":-1,"msg":"emulator: no such endpoint"}'
            self._send(404, body, {"Content-Type": "application/json"})
            return
        status, headers, body = result
        headers = {"Content-Type": "application/json", **(headers or {})}
        self._send(status, body, headers, head=method == "HEAD")

    def _archive(self, method: str, path: str, query: dict[str, str], has_query: bool) -> None:
        emu = self.emu
        head = method == "HEAD"
        rel = path.lstrip("/")
        # Path-style addressing: /data.binance.vision[/<key>]
        if rel == BUCKET or rel == BUCKET + "/":
            rel = ""
        elif rel.startswith(BUCKET + "/"):
            rel = rel[len(BUCKET) + 1 :]
        faults = emu.faults
        if faults.latency:
            time.sleep(faults.latency)
        if rel == "":
            self._listing(query, head)
            return
        self._object(rel, head)

    def _listing(self, query: dict[str, str], head: bool) -> None:
        emu = self.emu
        emu.count("list")
        prefix = query.get("prefix", "")
        status = emu.faults.fail_status("?" + prefix, emu.next_attempt("list", prefix))
        if status is not None:
            emu.count("fault_5xx")
            self._error(status, "InternalError" if status == 500 else "SlowDown", "injected")
            return
        try:
            max_keys = int(query.get("max-keys", "1000"))
            if max_keys < 0:
                raise ValueError
        except ValueError:
            self._error(400, "InvalidArgument", "max-keys must be a non-negative integer")
            return
        page = list_page(
            emu.sources,
            prefix=prefix,
            delimiter=query.get("delimiter", ""),
            marker=query.get("marker", ""),
            max_keys=max_keys,
            hidden=emu.faults.hides_checksum,
        )
        self._send(200, page_xml(page, emu.info), head=head)

    def _object(self, key: str, head: bool) -> None:
        emu = self.emu
        faults = emu.faults
        if head:
            emu.count("head")
            n = emu.next_attempt("head", key)
        else:
            emu.count("get")
            n = emu.next_attempt("get", key)
        status = faults.fail_status(key, n)
        if status is not None:
            emu.count("fault_5xx")
            self._error(status, "InternalError" if status == 500 else "SlowDown", "injected", key)
            return
        meta = emu.info(key)
        body = emu.read(key) if meta is not None and not head else b""
        if meta is None or body is None:
            emu.count("not_found")
            self._error(404, "NoSuchKey", "The specified key does not exist.", key, head=head)
            return
        headers = {
            "Content-Type": "application/zip" if key.endswith(".zip") else "binary/octet-stream",
            "ETag": meta.etag,
            "Last-Modified": http_time(meta.last_modified),
            "Accept-Ranges": "bytes",
        }
        if head:
            self.send_response(200)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(meta.size))
            self.end_headers()
            return
        if faults.corrupts(key, emu.first_body(key)):
            emu.count("fault_corrupt")
            body = corrupt(body)
        status = 200
        span = _byte_range(self.headers.get("Range"), len(body))
        if span == "invalid":
            self._send(
                416,
                error_xml("InvalidRange", "The requested range is not satisfiable"),
                {"Content-Range": f"bytes */{len(body)}"},
            )
            return
        if span is not None:
            start, end = span
            headers["Content-Range"] = f"bytes {start}-{end}/{len(body)}"
            body = body[start : end + 1]
            status = 206
        drop = faults.drops(key, n)
        if drop:
            emu.count("fault_drop")
        else:
            emu.count("get_bytes", len(body))
        self._send(status, body, headers, drop=drop)


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
