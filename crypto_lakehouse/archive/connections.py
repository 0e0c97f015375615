"""Archive object GETs on plain sockets (:mod:`.wire`): keep-alive connections per worker
thread, origin and slot (two slots let a thread have a zip's and its CHECKSUM's GET on the
way at once), no per-request machinery beyond the socket.

Why not ``requests`` or ``http.client`` here: a download job moves thousands of ~40 KB files
with dozens of threads. ``requests`` + ``urllib3`` spent ~1.5 ms of CPU per request, and 64
threads fighting for the GIL over that work made the downloader CPU-bound and slower than
aria2 at 20 ms latency; ``http.client`` halved that, and reading the head in one ``recv``
instead of line by line through ``email.parser`` took off another third (figures in
``docs/benchmarks.md``). Listings and the REST API stay on
``requests``: there a request carries far more work than its HTTP overhead.

What is kept from ``requests``: proxies from the environment (``HTTP(S)_PROXY``,
``ALL_PROXY``, ``NO_PROXY``; HTTPS through ``CONNECT``, HTTP in absolute form, with
``user:password@`` as Proxy-Authorization; ``https://`` proxy URLs are refused with a clear
error), the CA bundle (``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE``, else certifi's), redirects
(up to ``MAX_REDIRECTS``), a timeout per socket operation. Failures are classified as in
:mod:`.http`: network errors, timeouts and bodies cut short are ``TransientError``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import certifi
import requests.utils

from .. import __version__, io
from . import wire
from .http import ArchiveHTTPError, TransientError, classify, network_error

MAX_REDIRECTS = 5
REDIRECT_STATUS = frozenset({301, 302, 303, 307, 308})
_HEADERS = {
    "User-Agent": f"crypto_lakehouse/{__version__}",
    # Hashes are over the bytes as published; never let a server compress them.
    "Accept-Encoding": "identity",
}
_NETWORK_ERRORS = (OSError, wire.WireError)

Origin = tuple[str, str, int]  # scheme, host, port


@dataclass
class Request:
    """A GET sent on a thread's connection ``slot``, its answer not read yet."""

    url: str
    slot: int
    conn: wire.Connection
    reused: bool  # the connection had carried an answer before: it may have gone stale


@dataclass
class _Route:
    """How requests to one origin travel: directly, or through a proxy."""

    peer: tuple[str, int]  # where the socket connects
    tls_host: str | None  # server name for TLS (the origin's host), None for plain HTTP
    tunnel: str | None  # "host:port" to CONNECT to through the proxy first
    absolute: bool  # plain HTTP through a proxy: request targets are whole URLs
    headers: dict[str, str]  # sent with every request (Host, Proxy-Authorization, ...)
    proxy_headers: dict[str, str]  # sent with CONNECT


def _ca_bundle() -> str:
    return (
        os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or certifi.where()
    )


def _origin(url: str) -> Origin:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    return parts.scheme, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


def _proxy_auth(proxy_url: str) -> dict[str, str]:
    parts = urlsplit(proxy_url)
    if not parts.username:
        return {}
    pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
    return {"Proxy-Authorization": "Basic " + base64.b64encode(pair).decode()}


class ThreadConnections:
    """Keep-alive connections, one per (worker thread, origin, slot).

    ``get(url)`` answers ``(final url, connection, response)`` with the body unread; the
    caller reads it (``connection.body(response)``) before the thread's next request.
    ``close()`` closes them all.
    """

    def __init__(self, timeout_s: float):
        self.timeout_s = timeout_s
        self._local = threading.local()
        self._all: set[wire.Connection] = set()
        self._lock = threading.Lock()
        self._tls: ssl.SSLContext | None = None
        self._routes: dict[Origin, _Route] = {}

    # ------------------------------------------------------------ connections
    def _route(self, url: str, origin: Origin) -> _Route:
        route = self._routes.get(origin)
        if route is None:  # resolved once per origin: NO_PROXY matching is slow
            route = self._routes[origin] = _plan_route(url, origin)
        return route

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context(cafile=_ca_bundle())
        return self._tls

    def _connect(self, url: str, route: _Route) -> wire.Connection:
        sock = socket.create_connection(route.peer, timeout=self.timeout_s)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if route.tunnel is not None:
                tunnel = wire.Connection(sock).request(
                    "CONNECT", route.tunnel, {"Host": route.tunnel, **route.proxy_headers}
                )
                if tunnel is None or not 200 <= tunnel.status < 300:
                    status = "no answer" if tunnel is None else f"HTTP {tunnel.status}"
                    raise TransientError(url, f"proxy refused CONNECT {route.tunnel}: {status}")
            if route.tls_host is not None:
                sock = self._tls_context().wrap_socket(sock, server_hostname=route.tls_host)
        except BaseException:
            sock.close()
            raise
        conn = wire.Connection(sock)
        with self._lock:
            self._all.add(conn)
        return conn

    def _connection(self, url: str, origin: Origin, route: _Route, slot: int) -> wire.Connection:
        pool = self._local.__dict__.setdefault("pool", {})
        conn = pool.get((origin, slot))
        if conn is None or not conn.reusable:
            if conn is not None:  # ended by the server (Connection: close): forget it
                conn.close()
                with self._lock:
                    self._all.discard(conn)
            conn = pool[(origin, slot)] = self._connect(url, route)
        return conn

    def drop(self, url: str, slot: int = 0) -> None:
        """Close this thread's connection ``slot`` to the origin of ``url`` (after a failure
        the connection's state is unknown); the next request opens a new one."""
        conn = self._local.__dict__.get("pool", {}).pop((_origin(url), slot), None)
        if conn is not None:
            conn.close()
            with self._lock:
                self._all.discard(conn)

    # ------------------------------------------------------------ requests
    def send(self, url: str, slot: int = 0) -> Request:
        """Send a GET on this thread's connection ``slot`` to the origin of ``url``; the
        answer is read by :meth:`get`. Two slots let one thread have two requests on the
        way at once (a zip's answer travels while its CHECKSUM is read)."""
        origin = _origin(url)
        route = self._route(url, origin)
        if route.absolute:
            target = url
        else:
            parts = urlsplit(url)
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        for attempt in (0, 1):
            reused = False
            try:
                conn = self._connection(url, origin, route, slot)
                reused = conn.used
                conn.send("GET", target, route.headers)
                return Request(url, slot, conn, reused)
            except ArchiveHTTPError:
                self.drop(url, slot)
                raise
            except (BrokenPipeError, ConnectionResetError) as exc:
                self.drop(url, slot)
                if reused and attempt == 0:
                    continue  # the server closed an idle keep-alive connection: reconnect
                raise TransientError(url, f"{type(exc).__name__}: {exc}") from exc
            except _NETWORK_ERRORS as exc:
                self.drop(url, slot)
                raise network_error(url, exc) from exc
        raise AssertionError("unreachable")

    def _answer(self, request: Request) -> tuple[Request, wire.Response]:
        """The answer's head, with the request it answers (a new one when ``request`` met a
        stale connection and was sent again)."""
        url, slot = request.url, request.slot
        try:
            response = request.conn.response("GET")
            if response is not None:
                return request, response
            error: BaseException | None = None
        except ConnectionResetError as exc:
            error = exc
        except _NETWORK_ERRORS as exc:
            self.drop(url, slot)
            raise TransientError(url, f"{type(exc).__name__}: {exc}") from exc
        self.drop(url, slot)
        if request.reused:
            # A kept-alive connection the server had closed while idle: ask again on a new
            # one (which is not reused, so this happens at most once).
            return self._answer(self.send(url, slot))
        reason = "connection closed before an answer" if error is None else repr(error)
        raise TransientError(url, reason)

    def get(
        self, url: str, slot: int = 0, request: Request | None = None
    ) -> tuple[str, wire.Connection, wire.Response]:
        """GET ``url`` (or read the answer to ``request``, already sent for it) following
        redirects; ``(final url, connection, response)`` with a 2xx status, body unread.

        Raises the classified error (:func:`.http.classify`) for any other status, after
        reading the error body so that the connection stays usable.
        """
        if request is None:
            request = self.send(url, slot)
        for _ in range(MAX_REDIRECTS + 1):
            request, response = self._answer(request)
            url, conn = request.url, request.conn
            location = response.headers.get("location")
            if response.status in REDIRECT_STATUS and location:
                self.discard(request, response)
                request = self.send(urljoin(url, location), slot)
                continue
            error = classify(url, response.status)
            if error is not None:
                self.discard(request, response)
                raise error
            return url, conn, response
        raise TransientError(url, f"more than {MAX_REDIRECTS} redirects")

    def discard(self, request: Request, response: wire.Response) -> None:
        """Read and drop a body so the connection can carry the next request."""
        try:
            for _ in request.conn.body(response):
                pass
        except _NETWORK_ERRORS:
            self.drop(request.url, request.slot)

    def abandon(self, request: Request) -> None:
        """Give up a sent request whose answer will not be read: close its connection."""
        self.drop(request.url, request.slot)

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()


def _plan_route(url: str, origin: Origin) -> _Route:
    scheme, host, port = origin
    default_port = 443 if scheme == "https" else 80
    host_header = host if port == default_port else f"{host}:{port}"
    if ":" in host and not host.startswith("["):
        host_header = f"[{host}]" if port == default_port else f"[{host}]:{port}"
    headers = {"Host": host_header, **_HEADERS}
    tls_host = host if scheme == "https" else None
    proxy = requests.utils.select_proxy(url, requests.utils.get_environ_proxies(url))
    if proxy is None:
        return _Route((host, port), tls_host, None, False, headers, {})
    if "://" not in proxy:
        proxy = f"http://{proxy}"  # requests accepts a bare host:port too
    p_scheme, p_host, p_port = _origin(proxy)
    if p_scheme != "http":
        raise ValueError(
            f"proxy {proxy!r} for {url}: only http:// proxy URLs are supported for archive "
            "downloads (HTTPS still travels encrypted through them with CONNECT)"
        )
    auth = _proxy_auth(proxy)
    if scheme == "https":
        return _Route((p_host, p_port), tls_host, f"{host}:{port}", False, headers, auth)
    return _Route((p_host, p_port), None, None, True, {**headers, **auth}, {})


def get_bytes(conns: ThreadConnections, url: str, slot: int = 0) -> bytes:
    """The whole body of a small object; a short body raises ``TransientError``."""
    final, conn, response = conns.get(url, slot)
    try:
        return b"".join(bytes(chunk) for chunk in conn.body(response))
    except _NETWORK_ERRORS as exc:
        conns.drop(final, slot)
        raise TransientError(url, f"{type(exc).__name__}: {exc}") from exc


def stream_to_file(
    conns: ThreadConnections,
    url: str,
    dest: Path | int,
    slot: int = 0,
    request: Request | None = None,
) -> tuple[int, str]:
    """GET ``url`` (or read the answer to ``request``, already sent) into ``dest`` (a
    temporary path, or a descriptor open for writing), hashing on the fly.

    Returns ``(n_bytes, sha256_hex)``. A body shorter than its Content-Length, or a
    connection dropped mid-body, raises ``TransientError``; disk errors propagate.
    """
    final, conn, response = conns.get(url, slot, request)
    digest = hashlib.sha256()
    n_bytes = 0
    try:
        fd = dest if isinstance(dest, int) else os.open(dest, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            chunks = conn.body(response)
            while True:
                try:
                    chunk = next(chunks, None)  # reads the socket only: errors are the network's
                except _NETWORK_ERRORS as exc:
                    raise TransientError(url, f"{type(exc).__name__}: {exc}") from exc
                if chunk is None:
                    break
                io.write_all(fd, chunk)
                digest.update(chunk)
                n_bytes += len(chunk)
        finally:
            if fd is not dest:
                os.close(fd)
    except BaseException:
        conns.drop(final, slot)  # a body left half read makes the connection unusable
        raise
    return n_bytes, digest.hexdigest()
