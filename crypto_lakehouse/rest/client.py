"""GET requests to one Binance API host, within its rate limits, with Binance's error rules.

What each answer means (binance-facts §5.3, legacy quirks Q1 and Q12 fixed):

- 200: the JSON body. ``X-MBX-USED-WEIGHT-1M`` (present on every answer) feeds the limiter.
- 429: a limit was hit. Every thread of the job waits ``Retry-After`` seconds (limits are per
  IP), then the same request is sent again. Without the header, or when the answer's
  used-weight figure fills the window, the wait lasts to the end of the window. Each 429 uses
  one of the request's ``max_retries`` retries (the same budget as 5xx and timeouts): a
  request the host keeps answering 429 fails with ``RateLimited`` after that many waits, in
  bounded time, instead of holding its job. Waiting as told is what keeps a client clear of
  the 418 ban Binance gives to clients that continue after 429s (binance-facts §5.3).
  When ``RATE_LIMITED_TO_STOP`` requests in a row give up so (no answer 200 between them,
  whatever their symbols), the host is limiting the whole IP: every request to it stops, as
  for a ban, instead of each remaining symbol of the job waiting out its own retries.
- 418 (IP banned) or 403 (WAF): every request to the host stops at once (continuing would
  extend the ban); the job fails with a message naming the host and the wait Binance asked for.
- 400 with code -1121/-1122: ``InvalidSymbol``; the caller skips the symbol.
- Other 4xx: ``RestError`` (a bug in the request; retrying cannot help).
- 5xx, timeouts, connection errors: retried with exponential back-off and jitter, at most
  ``max_retries`` times per request. After ``breaker_threshold`` consecutive failures on the
  host the circuit breaker opens: every thread pauses (doubling each time it re-opens).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import asdict, dataclass

import requests

from crypto_lakehouse import retry as retry_policy
from crypto_lakehouse.reachability import unreachable_cause
from crypto_lakehouse.rest import API_PREFIX, INVALID_SYMBOL_CODES, SERVER_TIME_WEIGHT
from crypto_lakehouse.rest.limiter import HostStopped, WindowLimiter

log = logging.getLogger(__name__)

USED_WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"

__all__ = [
    "ClientStats",
    "HostStopped",
    "InvalidSymbol",
    "MeteredClient",
    "RateLimited",
    "RestClient",
    "RestError",
    "TransientFailure",
]


class RestError(RuntimeError):
    """A permanent error answer (4xx other than rate limits)."""

    def __init__(self, message: str, status: int = 0, code: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class InvalidSymbol(RestError):
    """Binance answered -1121 (invalid symbol) or -1122 (invalid symbol status)."""


class TransientFailure(RuntimeError):
    """5xx answers, timeouts or connection errors outlasted the retries."""


class RateLimited(TransientFailure):
    """The host answered 429 to every try of one request (``max_retries`` waits): the caller
    stops asking for that symbol rather than provoke more 429s."""


@dataclass
class ClientStats:
    requests: int = 0
    weight: int = 0
    http_429: int = 0
    http_418: int = 0
    http_403: int = 0
    http_5xx: int = 0
    network_errors: int = 0
    retries: int = 0
    breaker_opens: int = 0
    retry_wait_s: float = 0.0  # back-off sleeps before retries (5xx, timeouts)
    rate_limit_wait_s: float = 0.0  # blocked in the limiters (weight, 429 pauses, funding)

    def as_dict(self) -> dict:
        out = asdict(self)
        for key in ("retry_wait_s", "rate_limit_wait_s"):
            out[key] = round(out[key], 3)
        return out


# Requests given up after 429s in a row (no 200 between) that stop every request to the
# host: a limit on the IP, not on one symbol (which gives up alone, RateLimited).
RATE_LIMITED_TO_STOP = 3


class RestClient:
    """Thread-safe GET client for one API host (``api_url`` without trailing slash)."""

    def __init__(
        self,
        api_url: str,
        trade_type: str,
        *,
        weight_limiter: WindowLimiter,
        funding_limiter: WindowLimiter | None = None,
        max_retries: int = 5,
        timeout_s: float = 15.0,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 60.0,
        breaker_threshold: int = 5,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.prefix = API_PREFIX[trade_type]
        self.trade_type = trade_type
        self.weight_limiter = weight_limiter
        self.funding_limiter = funding_limiter
        self.max_retries = int(max_retries)
        self.timeout_s = float(timeout_s)
        self.backoff_base_s = float(backoff_base_s)
        self.backoff_max_s = float(backoff_max_s)
        self.breaker_threshold = int(breaker_threshold)
        self._stats = ClientStats()
        self._lock = threading.Lock()
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._consecutive_failures = 0
        self._breaker_level = 0
        self._rate_limited_in_row = 0  # requests given up after 429s since the last 200
        self._start_time_ms: int | None = None
        self._start_time_lock = threading.Lock()

    # ------------------------------------------------------------ plumbing
    def _session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = requests.Session()
            self._local.session = s
            with self._lock:
                self._sessions.append(s)
        return s

    def close(self) -> None:
        with self._lock:
            for s in self._sessions:
                s.close()
            self._sessions.clear()
        for lim in self._limiters():
            lim.close()

    def __enter__(self) -> "RestClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _count(self, meter: ClientStats | None = None, **inc: float) -> None:
        with self._lock:
            for stats in (self._stats, meter) if meter is not None else (self._stats,):
                for k, v in inc.items():
                    setattr(stats, k, getattr(stats, k) + v)

    def meter(self) -> "MeteredClient":
        """A view of this client that also counts its own requests apart: a symbol's stats
        when several symbols share the client at the same time (``rest.host``)."""
        return MeteredClient(self)

    @property
    def stats(self) -> ClientStats:
        """The counters, with the time this client's limiters kept threads waiting: every
        job reports its waits whatever it calls (klines, funding, exchangeInfo)."""
        with self._lock:
            self._stats.rate_limit_wait_s = sum(x.waited_s for x in self._limiters())
            return self._stats

    def blocked_for(self) -> float | None:
        """Seconds until requests blocked in this client's limiters try again; None when
        none is blocked (``WindowLimiter.blocked_for``)."""
        waits = [w for w in (x.blocked_for() for x in self._limiters()) if w is not None]
        return max(waits) if waits else None

    def _limiters(self) -> list[WindowLimiter]:
        return [x for x in (self.weight_limiter, self.funding_limiter) if x is not None]

    @staticmethod
    def _release(reservations: list) -> None:
        # Answered (or failed): from now on the request's window is known to the server.
        for limiter, reservation in reservations:
            limiter.release(reservation)

    def _thread_waited_s(self) -> float:
        return sum(x.thread_waited_s() for x in self._limiters())

    def _stop_host(self, message: str) -> None:
        for lim in self._limiters():
            lim.stop(message)

    # ------------------------------------------------------------ failures
    def _backoff(self, attempt: int) -> float:
        return retry_policy.backoff_delay(attempt - 1, self.backoff_base_s, self.backoff_max_s)

    def _on_success(self) -> None:
        with self._lock:
            self._consecutive_failures = 0
            self._breaker_level = 0
            self._rate_limited_in_row = 0

    def _given_up_on_429(self, message: str) -> RateLimited | HostStopped:
        """What to raise for a request the host kept answering 429: ``RateLimited``, or
        ``HostStopped`` (every request to the host stopped) when it is the
        ``RATE_LIMITED_TO_STOP``-th such request in a row."""
        log.error(message)
        with self._lock:
            self._rate_limited_in_row += 1
            in_row = self._rate_limited_in_row
        if in_row < RATE_LIMITED_TO_STOP:
            return RateLimited(message)
        stop = (
            f"{self.api_url}: {in_row} requests in a row gave up after HTTP 429 answers "
            f"(rest.max_retries={self.max_retries} retries each), the last: {message}. The host "
            "is limiting every request from this IP: all requests to it stopped, so as not to "
            "draw a ban (418); the next run fetches what is missing."
        )
        log.error(stop)
        self._stop_host(stop)
        return HostStopped(stop)

    def _on_failure(self, meter: ClientStats | None = None) -> None:
        with self._lock:
            self._consecutive_failures += 1
            if self._consecutive_failures < self.breaker_threshold:
                return
            self._consecutive_failures = 0
            self._breaker_level += 1
            level = self._breaker_level
            self._stats.breaker_opens += 1
            if meter is not None:
                meter.breaker_opens += 1
        pause = self._backoff(level + 1)
        log.warning(
            "%s: %d consecutive failures, circuit breaker open: pausing all requests %.1f s",
            self.api_url,
            self.breaker_threshold,
            pause,
        )
        for lim in self._limiters():
            lim.pause_for(pause)

    # ------------------------------------------------------------ requests
    def get_json(
        self,
        endpoint: str,
        params: dict | None = None,
        *,
        weight: int = 1,
        funding: bool = False,
        meter: ClientStats | None = None,
    ):
        """GET ``{api_url}{prefix}{endpoint}`` and return the decoded JSON body. ``meter``:
        counters of the caller's own (``MeteredClient``), counted besides the client's."""
        url = f"{self.api_url}{self.prefix}{endpoint}"
        where = f"{url}?{requests.compat.urlencode(params or {})}"
        attempt = 0  # retries so far: 429s, 5xx, timeouts and dropped connections alike
        while True:
            waited_before = self._thread_waited_s()
            reservations = []
            if funding and self.funding_limiter is not None:
                reservations.append((self.funding_limiter, self.funding_limiter.acquire(1)))
            reserved = self.weight_limiter.acquire(weight)
            reservations.append((self.weight_limiter, reserved))
            window = reserved.window
            if meter is not None:
                # The client's own figure is the limiters' (every thread); the caller's is
                # the time its own request was blocked (this thread, in these acquires).
                waited = self._thread_waited_s() - waited_before
                with self._lock:
                    meter.rate_limit_wait_s += waited
            self._count(meter, weight=weight)
            try:
                resp = self._session().get(url, params=params, timeout=self.timeout_s)
            except (requests.Timeout, requests.ConnectionError) as exc:
                self._count(meter, network_errors=1)
                cause = unreachable_cause(exc)
                if cause is not None:
                    # No retry brings back a host that does not resolve, refuses or fails
                    # TLS: stop every request to it at once, naming the cause.
                    message = f"{self.api_url}: cannot reach the host: {cause}"
                    log.error(message)
                    self._stop_host(message)
                    raise HostStopped(message) from exc
                error = f"{type(exc).__name__}: {exc}"
            else:
                self._count(meter, requests=1)
                used = resp.headers.get(USED_WEIGHT_HEADER)
                if used is not None and used.isdigit():
                    self.weight_limiter.observe(window, int(used))
                status = resp.status_code
                if status == 200:
                    self._on_success()
                    return resp.json()
                if status == 429:
                    self._count(meter, http_429=1)
                    attempt += 1
                    wait, why = self._rate_limit_wait(resp, reservations)
                    # Paused even when this request gives up: the other threads' requests
                    # must wait as the host asked too.
                    for lim in self._limiters():
                        lim.pause_for(wait)
                    if attempt > self.max_retries:
                        message = (
                            f"{where}: the host kept answering HTTP 429 (rate limit), "
                            f"{attempt} times in a row for this request (rest.max_retries="
                            f"{self.max_retries}); Retry-After="
                            f"{resp.headers.get('Retry-After', 'absent')}"
                        )
                        raise self._given_up_on_429(message)
                    log.warning(
                        "%s: HTTP 429, retry %d/%d: every request to the host waits %.1f s (%s)",
                        where,
                        attempt,
                        self.max_retries,
                        wait,
                        why,
                    )
                    continue
                if status in (418, 403):
                    self._count(meter, **{f"http_{status}": 1})
                    what = "IP banned (418)" if status == 418 else "blocked by the WAF (403)"
                    message = (
                        f"{self.api_url}: {what} on {where}; Retry-After="
                        f"{resp.headers.get('Retry-After', '?')} s. All requests to this host "
                        "stopped; wait before running again."
                    )
                    log.error(message)
                    self._stop_host(message)
                    raise HostStopped(message)
                if 400 <= status < 500:
                    code, msg = _error_body(resp)
                    text = f"{where}: HTTP {status} code={code} msg={msg!r}"
                    if code in INVALID_SYMBOL_CODES:
                        raise InvalidSymbol(text, status, code)
                    raise RestError(text, status, code)
                self._count(meter, http_5xx=1)
                error = f"HTTP {status}"
            finally:
                self._release(reservations)
            # transient failure: back off and retry this request
            self._on_failure(meter)
            attempt += 1
            if attempt > self.max_retries:
                raise TransientFailure(f"{where}: {error} after {self.max_retries} retries")
            delay = self._backoff(attempt)
            self._count(meter, retries=1, retry_wait_s=delay)
            log.info(
                "%s: %s, retry %d/%d in %.2f s", where, error, attempt, self.max_retries, delay
            )
            time.sleep(delay)

    def _rate_limit_wait(self, resp: requests.Response, reservations: list) -> tuple[float, str]:
        """Seconds every request to the host waits after a 429 answer to a request holding
        ``reservations``, and why (for the log: the wait it states is the one that happens)."""
        header = resp.headers.get("Retry-After")
        try:
            retry_after = max(0.0, float(header))
        except (TypeError, ValueError):
            # No usable header: the window that was exceeded ends at the next boundary. Which
            # pool it was (weight, um fundingRate) is unknown: every pool the request used.
            for lim, reserved in reservations:
                lim.mark_full(reserved.window)
            wait = max(lim.seconds_to_end(reserved.window) for lim, reserved in reservations)
            return wait, "no Retry-After: to the end of the rate-limit window"
        window = reservations[-1][1].window  # the weight reservation comes last
        if self.weight_limiter.is_full(window):
            # The answer's used-weight figure (or our reservations) filled the window: the
            # limiter admits nothing more before it ends, whatever Retry-After says.
            to_end = self.weight_limiter.seconds_to_end(window)
            if to_end > retry_after:
                return to_end, f"Retry-After {header} s; the window's weight is used up: to its end"
        return retry_after, "Retry-After"

    def server_time_ms(self, meter: ClientStats | None = None) -> int:
        return int(self.get_json("/time", weight=SERVER_TIME_WEIGHT, meter=meter)["serverTime"])

    def start_time_ms(self, meter: ClientStats | None = None) -> int:
        """The server time taken once, at the first call: "now" for every symbol of the job
        (which days are complete, where funding ends), instead of one ``/time`` request per
        symbol. A failed request is not remembered: the next caller asks again."""
        with self._start_time_lock:
            if self._start_time_ms is None:
                self._start_time_ms = self.server_time_ms(meter)
            return self._start_time_ms


class MeteredClient:
    """A ``RestClient`` seen by one caller (a symbol of a shard job): requests go through the
    shared client (its session pool, limiters, circuit breaker, counters) and are counted a
    second time in this view's own ``stats``, so that symbols running at the same time each
    report their own requests, weight and waits, not each other's."""

    def __init__(self, client: RestClient) -> None:
        self.client = client
        self._stats = ClientStats()

    @property
    def stats(self) -> ClientStats:
        return self._stats

    def get_json(self, endpoint: str, params: dict | None = None, **kwargs):
        return self.client.get_json(endpoint, params, meter=self._stats, **kwargs)

    def start_time_ms(self) -> int:
        return self.client.start_time_ms(meter=self._stats)

    def blocked_for(self) -> float | None:
        return self.client.blocked_for()

    def server_time_ms(self) -> int:
        return self.client.server_time_ms(meter=self._stats)

    def __enter__(self) -> "MeteredClient":
        return self

    def __exit__(self, *exc) -> None:
        pass  # the shared client is closed by its owner


def _error_body(resp: requests.Response) -> tuple[int | None, str]:
    try:
        body = resp.json()
        return int(body.get("code")), str(body.get("msg", ""))
    except (ValueError, TypeError, AttributeError, json.JSONDecodeError):
        return None, resp.text[:200]
