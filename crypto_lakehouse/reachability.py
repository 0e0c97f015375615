"""Is a host there at all? Failures no retry can fix, and the check before a run starts.

A failed name lookup, a refused connection, a TLS handshake that fails or a network that
has no route to the host do not heal in the seconds a back-off waits: the download and
REST clients treat them as fatal (:func:`unreachable_cause`), and the workflow asks every
endpoint in use once before any job starts (:func:`preflight`, Snakefile ``onstart``), so
that a run without network ends within seconds with one line per endpoint.
"""

from __future__ import annotations

import errno
import os
import socket
import ssl
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

# Setting this variable (or Snakemake's --verbose) adds the exception chain to the message.
from crypto_lakehouse.logs import VERBOSE_ENV

# Seconds the pre-run check waits for a host (connect and first byte). A host that does not
# answer a single small request in this time is reported as unreachable.
PREFLIGHT_TIMEOUT_S = 5.0

# A TLS stream cut short is a dropped connection (transient), not a failed handshake.
_TLS_CUT = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLWantReadError, ssl.SSLWantWriteError)
_NO_ROUTE = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.EHOSTDOWN}


def _chain(exc: BaseException):
    """The exception and everything it wraps (causes, contexts, urllib3 reasons, args)."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [e.__cause__, e.__context__, getattr(e, "reason", None)]
        todo += [a for a in getattr(e, "args", ()) if isinstance(a, BaseException)]


def unreachable_cause(exc: BaseException) -> str | None:
    """A short cause when ``exc`` means the host cannot be reached at all, else None
    (timeouts, resets and cut bodies are transient and stay retried)."""
    for e in _chain(exc):
        if isinstance(e, socket.gaierror):
            return f"name resolution failed ({e.strerror or e})"
        if isinstance(e, ConnectionRefusedError):
            return "connection refused"
        if isinstance(e, ssl.SSLError) and not isinstance(e, _TLS_CUT):
            detail = getattr(e, "verify_message", None) or getattr(e, "reason", None) or e
            return f"TLS failure ({detail})"
        if isinstance(e, OSError) and e.errno in _NO_ROUTE:
            return f"host unreachable ({os.strerror(e.errno)})"
    for e in _chain(exc):
        name = type(e).__name__
        if name == "NameResolutionError":  # urllib3 2.x wraps the gaierror in a string
            return "name resolution failed"
        if name == "SSLError":  # requests.exceptions.SSLError
            return f"TLS failure ({e})"
    return None


@dataclass(frozen=True)
class Endpoint:
    key: str  # the config key, e.g. "endpoints.um_api"
    url: str  # a cheap URL on that host
    base: str  # the configured base URL


@dataclass(frozen=True)
class Failure:
    endpoint: Endpoint
    cause: str
    detail: str  # the traceback (shown with --verbose)

    def message(self) -> str:
        keys = "config keys" if "," in self.endpoint.key else "config key"
        return f"cannot reach {self.endpoint.base} ({keys} {self.endpoint.key}): {self.cause}"


def probe(endpoint: Endpoint, timeout_s: float = PREFLIGHT_TIMEOUT_S) -> Failure | None:
    """One GET; any HTTP answer (even an error status) means the host is there."""
    # Imported here: this module is loaded with the Snakefile, and requests (~0.17 s) is
    # needed only when a run with jobs starts (onstart), not for a run with nothing to do.
    import requests

    try:
        with requests.get(endpoint.url, timeout=timeout_s, stream=True) as resp:
            resp.status_code  # noqa: B018 (an answer arrived: that is all we ask)
        return None
    except requests.RequestException as exc:
        cause = unreachable_cause(exc)
        if cause is None:
            kind = "no answer" if isinstance(exc, requests.Timeout) else type(exc).__name__
            cause = f"{kind} within {timeout_s:g} s" if kind == "no answer" else kind
        return Failure(endpoint, cause, "".join(traceback.format_exception(exc)).rstrip())


def preflight(endpoints: list[Endpoint], timeout_s: float = PREFLIGHT_TIMEOUT_S) -> list[Failure]:
    """Probe every distinct endpoint at once; the failures, in the given order."""
    if not endpoints:
        return []
    with ThreadPoolExecutor(max_workers=len(endpoints)) as pool:
        results = list(pool.map(lambda e: probe(e, timeout_s), endpoints))
    return [r for r in results if r is not None]


def workflow_endpoints(config: dict, trade_types: list[str], targets: list[str]) -> list[Endpoint]:
    """The endpoints a run of ``targets`` talks to, each with one cheap URL.

    The listing and archive hosts serve every stage (each starts from the listing); the REST
    hosts of the trade types in use are needed unless only archive stages are asked for.
    """
    from crypto_lakehouse.rest import API_PREFIX, PING_ENDPOINT

    endpoints = config["endpoints"]
    out = [
        Endpoint("endpoints.listing", f"{endpoints['listing']}?prefix=data/&max-keys=1",
                 endpoints["listing"]),
        Endpoint("endpoints.archive", f"{endpoints['archive']}/", endpoints["archive"]),
    ]  # fmt: skip
    archive_only = {"aws_download", "aws_parse", "list_archive"}
    if not targets or not set(targets) <= archive_only:
        keys = {"spot": "spot_api", "um_futures": "um_api", "cm_futures": "cm_api"}
        for trade_type in trade_types:
            base = endpoints[keys[trade_type]]
            url = f"{base}{API_PREFIX[trade_type]}{PING_ENDPOINT}"
            out.append(Endpoint(f"endpoints.{keys[trade_type]}", url, base))
    # One probe per base URL (the emulator or a proxy may serve several keys), naming them all.
    unique: dict[str, Endpoint] = {}
    for e in out:
        first = unique.get(e.base)
        unique[e.base] = (
            e if first is None else Endpoint(f"{first.key}, {e.key}", first.url, e.base)
        )
    return list(unique.values())


def verbose_requested(snakemake_verbose: bool = False) -> bool:
    return snakemake_verbose or os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def report(failures: list[Failure], verbose: bool = False) -> str:
    lines = [f.message() for f in failures]
    if verbose:
        lines += [f"{f.endpoint.url}:\n{f.detail}" for f in failures]
    else:
        lines.append(f"(details: --verbose or {VERBOSE_ENV}=1)")
    return "\n".join(lines)
