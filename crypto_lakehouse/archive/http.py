"""HTTP for the archive: failure classes, retries with exponential back-off and jitter, and
``requests`` sessions for the listings (object downloads: :mod:`.connections`, on aiohttp).

Listings and the REST API stay on ``requests`` (synchronous, a thread per request at most):
a listing page carries ~1000 keys of XML to parse and a REST call waits for its weight
budget, so the HTTP overhead per request does not matter there, and REST pacing by
``X-MBX-USED-WEIGHT-1M`` is simplest to keep exact one blocking request at a time. The
archive downloads, where per-request overhead decided throughput, run on aiohttp.

Failure classes (legacy-behaviour Q20):
- ``NotFound`` (404): the object does not exist; permanent, never retried here.
- ``TransientError``: connection errors, timeouts, truncated bodies, 5xx, 429 and 403
  (the archive has answered transient AccessDenied, binance-facts §1.1); retried.
- ``HTTPStatusError``: any other status; permanent.
- ``Unreachable``: failed name lookup, refused connection, TLS failure, no route to the
  host (:func:`crypto_lakehouse.reachability.unreachable_cause`), HTTP 418 (IP banned);
  fatal, never retried:
  waiting does not bring a host back, it only hides the cause under thousands of retries.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from crypto_lakehouse import retry as retry_policy
from crypto_lakehouse.reachability import unreachable_cause

if TYPE_CHECKING:
    import requests

log = logging.getLogger(__name__)

# Back-off before retry n (0-based): crypto_lakehouse.retry. Module-level so that tests can
# shorten it.
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0
TRANSIENT_STATUS = frozenset({403, 429, 500, 502, 503, 504})


# ``requests`` is imported on first use, not with this module: a download job (aiohttp,
# :mod:`.connections`) needs only the failure classes below, and importing requests cost
# ~80 ms of CPU per job process (issue 19, docs/benchmarks.md).
@functools.cache
def _network_errors() -> tuple[type[BaseException], ...]:
    """Errors of the connection or the body, raised by requests, urllib3 or the socket."""
    import requests
    from urllib3.exceptions import HTTPError as Urllib3Error

    return (requests.RequestException, Urllib3Error, ConnectionError, TimeoutError)


class ArchiveHTTPError(Exception):
    def __init__(self, url: str, message: str):
        super().__init__(f"{url}: {message}")
        self.url = url


class NotFound(ArchiveHTTPError):
    pass


class TransientError(ArchiveHTTPError):
    pass


class HTTPStatusError(ArchiveHTTPError):
    pass


class Unreachable(ArchiveHTTPError):
    pass


def network_error(url: str, exc: BaseException) -> ArchiveHTTPError:
    """The classified error for an exception of the connection or the body."""
    cause = unreachable_cause(exc)
    if cause is not None:
        return Unreachable(url, cause)
    if isinstance(exc, TimeoutError) and not str(exc):
        return TransientError(url, f"{type(exc).__name__}: timed out")
    return TransientError(url, f"{type(exc).__name__}: {exc}")


def backoff_delay(retry: int) -> float:
    return retry_policy.backoff_delay(retry, BACKOFF_BASE_S, BACKOFF_CAP_S)


def new_session(pool_size: int = 10, base_url: str | None = None) -> requests.Session:
    """A session whose connection pool holds ``pool_size`` keep-alive connections.

    Retries are ours (``adapter max_retries=0``) so that every failure is counted. With
    ``base_url`` (every request goes to that host), the proxy settings of the environment
    (``HTTP_PROXY``, ``NO_PROXY``, ...) are resolved once here instead of on every request,
    which costs about a millisecond of CPU per request in requests.
    """
    import requests
    from requests.adapters import HTTPAdapter

    session = requests.Session()
    if base_url is not None:
        session.proxies = requests.utils.get_environ_proxies(base_url)
        session.trust_env = False
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=max(pool_size, 1), max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class ThreadSessions:
    """One ``requests.Session`` per worker thread (a Session is not documented as
    thread-safe); all are closed together."""

    def __init__(self, base_url: str | None = None):
        self.base_url = base_url
        self._local = threading.local()
        self._all: list[requests.Session] = []
        self._lock = threading.Lock()

    def get(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = new_session(pool_size=2, base_url=self.base_url)
            self._local.session = session
            with self._lock:
                self._all.append(session)
        return session

    def close(self) -> None:
        with self._lock:
            for session in self._all:
                session.close()
            self._all.clear()


def classify(url: str, status: int) -> ArchiveHTTPError | None:
    """The error class of an HTTP status (None for 2xx): the one place that decides, for
    the listings and the archive downloads, what is retried."""
    if 200 <= status < 300:
        return None
    if status == 418:  # Binance's "IP banned": waiting inside a job does not lift it
        return Unreachable(url, "HTTP 418 (IP banned)")
    if status == 404:
        return NotFound(url, "404 Not Found")
    if status in TRANSIENT_STATUS or status >= 500:
        return TransientError(url, f"HTTP {status}")
    return HTTPStatusError(url, f"HTTP {status}")


def get_once(session: requests.Session, url: str, *, params=None, timeout_s: float) -> bytes:
    """One GET of a small body; raises the classified error on failure."""
    try:
        resp = session.get(url, params=params, timeout=timeout_s)
        body = resp.content
    except _network_errors() as exc:  # incl. ChunkedEncodingError: body cut short
        raise network_error(url, exc) from exc
    error = classify(resp.url or url, resp.status_code)
    if error is not None:
        raise error
    expected = None if resp.headers.get("Content-Encoding") else resp.headers.get("Content-Length")
    if expected is not None and expected.isdigit() and int(expected) != len(body):
        raise TransientError(url, f"truncated body: {len(body)} of {expected} bytes")
    return body


def get_with_retries(
    session: requests.Session,
    url: str,
    *,
    params=None,
    timeout_s: float,
    max_retries: int,
    on_retry: Callable[[ArchiveHTTPError], None] | None = None,
) -> bytes:
    """GET a small body, retrying transient failures ``max_retries`` times.

    Raises ``NotFound``/``HTTPStatusError`` at once and the last ``TransientError`` when
    the retries are exhausted.
    """
    retry = 0
    while True:
        try:
            return get_once(session, url, params=params, timeout_s=timeout_s)
        except TransientError as exc:
            if retry >= max_retries:
                raise
            if on_retry is not None:
                on_retry(exc)
            log.debug("retry %d/%d after %s", retry + 1, max_retries, exc)
            time.sleep(backoff_delay(retry))
            retry += 1
