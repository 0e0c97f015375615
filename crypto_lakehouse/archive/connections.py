"""Archive object GETs on aiohttp: one event loop per download job, one connection pool.

A download job moves thousands of ~40 KB objects with dozens of requests in flight. On an
event loop those requests cost no thread each and no GIL hand-off per file; the pool
(``aiohttp.TCPConnector``) holds up to ``download.concurrency`` keep-alive connections.

What the session does for us (documented aiohttp behaviour, not ours to maintain):
proxies from the environment (``trust_env=True``: ``HTTP(S)_PROXY``, ``ALL_PROXY``,
``NO_PROXY``, ``~/.netrc``; HTTPS through ``CONNECT``, HTTP in absolute form), redirects,
chunked bodies, and a body shorter than its ``Content-Length`` raised as
``ClientPayloadError``. TLS verifies against ``REQUESTS_CA_BUNDLE`` or ``CURL_CA_BUNDLE``
when set (the variables the listing and REST clients on ``requests`` honour too), else
certifi's bundle.

Failures are classified in one place, :mod:`.http` (``classify`` for a status,
``network_error`` for an exception).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import ssl

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


def new_session(concurrency: int, timeout_s: float) -> aiohttp.ClientSession:
    """A session whose pool holds up to ``concurrency`` connections (call inside a loop)."""
    connector = aiohttp.TCPConnector(
        limit=max(1, concurrency),
        limit_per_host=0,
        ssl=ssl.create_default_context(cafile=ca_bundle()),
    )
    return aiohttp.ClientSession(
        connector=connector,
        headers=_HEADERS,
        trust_env=True,
        auto_decompress=False,
        # No total limit: a large zip may take minutes; a stalled socket may not.
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=timeout_s, sock_read=timeout_s),
    )


async def open_get(session: aiohttp.ClientSession, url: str) -> aiohttp.ClientResponse:
    """GET ``url`` following redirects; the response with a 2xx status, body unread.

    Raises the classified error (:func:`.http.classify`, :func:`.http.network_error`).
    """
    try:
        # ``encoded=True``: the URL is sent as built (keys percent-encoded by the caller),
        # never re-quoted or normalised.
        resp = await session.get(yarl.URL(url, encoded=True), max_redirects=MAX_REDIRECTS)
    except aiohttp.TooManyRedirects as exc:
        raise TransientError(url, f"more than {MAX_REDIRECTS} redirects") from exc
    except NETWORK_ERRORS as exc:
        raise network_error(url, exc) from exc
    error = classify(url, resp.status)
    if error is not None:
        resp.release()
        raise error
    return resp


async def get_bytes(session: aiohttp.ClientSession, url: str) -> bytes:
    """The whole body of a small object; a short body raises ``TransientError``."""
    resp = await open_get(session, url)
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
