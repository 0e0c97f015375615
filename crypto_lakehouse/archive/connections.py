"""Archive object GETs on aiohttp: one event loop per download job, one connection pool.

A download job moves thousands of ~40 KB objects with dozens of requests in flight. On an
event loop those requests cost no thread each and no GIL hand-off per file; the pool
(``aiohttp.TCPConnector``) holds up to ``download.concurrency`` keep-alive connections.

What aiohttp does for us (not ours to maintain): HTTPS through ``CONNECT`` proxies and
plain HTTP in absolute form, redirects, chunked bodies, keep-alive and stale connections,
and a body shorter than its ``Content-Length`` raised as ``ClientPayloadError``. Proxies
come from the environment (``HTTP(S)_PROXY``, ``ALL_PROXY``, ``NO_PROXY``, read by the
standard library, once per origin). TLS verifies against ``REQUESTS_CA_BUNDLE`` or
``CURL_CA_BUNDLE`` when set (the variables the listing and REST clients on ``requests``
honour too), else certifi's bundle.

Failures are classified in one place, :mod:`.http` (``classify`` for a status,
``network_error`` for an exception).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
import ssl
import urllib.request

import aiohttp
import certifi
import yarl

from .. import __version__, io
from .http import TransientError, classify, network_error

MAX_REDIRECTS = 5
_HEADERS = {
    "User-Agent": f"crypto_lakehouse/{__version__}",
    # Hashes are over the bytes as published; never let a server compress them.
    "Accept-Encoding": "identity",
}
# Errors of the connection or the body; ``asyncio.TimeoutError`` is a socket read or
# connect that outlasted ``timeout_s``.
NETWORK_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)
CHUNK_BYTES = 1 << 16


def ca_bundle() -> str:
    return (
        os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or certifi.where()
    )


@functools.lru_cache(maxsize=4)
def _tls_context(cafile: str) -> ssl.SSLContext:
    # Loading a bundle costs ~30 ms: once per process, and only when HTTPS is used.
    return ssl.create_default_context(cafile=cafile)


def _env_proxy(origin: tuple[str, str, int]) -> tuple[yarl.URL | None, dict[str, str]]:
    """The proxy for an origin from the environment (``HTTP(S)_PROXY``, ``ALL_PROXY``,
    ``NO_PROXY``, as ``urllib.request`` reads them), credentials split off."""
    scheme, host, port = origin
    proxies = urllib.request.getproxies()
    proxy = proxies.get(scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(f"{host}:{port}"):
        return None, {}
    if "://" not in proxy:
        proxy = f"http://{proxy}"  # a bare host:port, as requests accepts too
    url = yarl.URL(proxy)
    auth = aiohttp.BasicAuth.from_url(url)
    headers = {"Proxy-Authorization": auth.encode()} if auth is not None else {}
    return url.with_user(None), headers


class Downloader:
    """One aiohttp session for a download job (open it inside the job's event loop).

    Its pool holds up to ``concurrency`` keep-alive connections. Proxies are looked up in
    the environment once per origin: aiohttp's ``trust_env`` looks them up again on every
    request, on a worker thread, which doubled the CPU per file in the benchmark.
    """

    def __init__(self, concurrency: int, timeout_s: float):
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=max(1, concurrency), limit_per_host=0),
            headers=_HEADERS,
            cookie_jar=aiohttp.DummyCookieJar(),  # S3 sets none we need; skip the work
            auto_decompress=False,
            # No total limit: a large zip may take minutes; a stalled socket may not.
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=timeout_s, sock_read=timeout_s),
        )
        self._routes: dict[tuple[str, str, int], dict] = {}

    async def __aenter__(self) -> Downloader:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        await self.session.close()

    def _route(self, url: yarl.URL) -> dict:
        origin = (url.scheme, url.host or "", url.port or 0)
        route = self._routes.get(origin)
        if route is None:
            proxy, proxy_headers = _env_proxy(origin)
            # Credentials go on the CONNECT for HTTPS, on each request for plain HTTP
            # (absolute form): aiohttp sends ``proxy_headers`` only with a CONNECT.
            key = "proxy_headers" if url.scheme == "https" else "headers"
            route = {"proxy": proxy, key: proxy_headers or None}
            if url.scheme == "https":
                route["ssl"] = _tls_context(ca_bundle())
            self._routes[origin] = route
        return route

    async def open_get(self, url: str) -> aiohttp.ClientResponse:
        """GET ``url`` following redirects; the response with a 2xx status, body unread.

        Raises the classified error (:func:`.http.classify`, :func:`.http.network_error`).
        """
        # ``encoded=True``: the URL is sent as built (keys percent-encoded by the caller),
        # never re-quoted or normalised.
        target = yarl.URL(url, encoded=True)
        try:
            resp = await self.session.get(
                target, max_redirects=MAX_REDIRECTS, **self._route(target)
            )
        except aiohttp.TooManyRedirects as exc:
            raise TransientError(url, f"more than {MAX_REDIRECTS} redirects") from exc
        except NETWORK_ERRORS as exc:
            raise network_error(url, exc) from exc
        error = classify(url, resp.status)
        if error is not None:
            resp.release()
            raise error
        return resp

    async def get_bytes(self, url: str) -> bytes:
        """The whole body of a small object; a short body raises ``TransientError``."""
        resp = await self.open_get(url)
        try:
            return await resp.read()
        except NETWORK_ERRORS as exc:
            raise network_error(url, exc) from exc
        finally:
            resp.release()


async def stream_to_fd(resp: aiohttp.ClientResponse, url: str, fd: int) -> tuple[int, str]:
    """Write the body of ``resp`` through the descriptor ``fd``, hashing on the fly.

    Returns ``(n_bytes, sha256_hex)``. A body cut short raises ``TransientError``; disk
    errors propagate as they are (they are not the network's).
    """
    digest = hashlib.sha256()
    n_bytes = 0
    try:
        while True:
            try:
                chunk = await resp.content.read(CHUNK_BYTES)
            except NETWORK_ERRORS as exc:
                raise network_error(url, exc) from exc
            if not chunk:
                break
            io.write_all(fd, chunk)  # small objects into the page cache: not worth a thread
            digest.update(chunk)
            n_bytes += len(chunk)
    finally:
        resp.release()
    return n_bytes, digest.hexdigest()
