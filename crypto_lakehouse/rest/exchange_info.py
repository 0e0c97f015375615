"""exchangeInfo, fetched once per run: the rate limits to respect and per-symbol facts.

The summary file (``lakehouse/exchange_info/{T}.json``) holds:

- ``request_weight``: ``{"limit", "window_s"}`` of the ``REQUEST_WEIGHT`` pool. Binance states
  the window as ``interval`` × ``intervalNum`` (``MINUTE`` × 1); reading it instead of assuming
  60 s lets the REST jobs follow whatever window the server (or the emulator) announces.
- ``rate_limits``: every entry of ``rateLimits`` with its window in seconds.
- ``symbols``: per symbol ``status`` (``contractStatus`` for COIN-M), ``contract_type``,
  ``contract_size`` (COIN-M only, used by the VWAP fix Q3) and ``onboard_date`` (ms).

It holds no server time, so an unchanged exchange gives identical bytes.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from crypto_lakehouse import storage
from crypto_lakehouse.contracts import read_exchange_info
from crypto_lakehouse.rest import DEFAULT_WEIGHT_LIMIT, EXCHANGE_INFO_WEIGHT
from crypto_lakehouse.rest.client import RestClient
from crypto_lakehouse.rest.limiter import WindowLimiter

log = logging.getLogger(__name__)

_INTERVAL_S = {"SECOND": 1, "MINUTE": 60, "HOUR": 3600, "DAY": 86400}


@dataclass(frozen=True)
class RateLimits:
    weight_limit: int
    window_s: float


def default_rate_limits(trade_type: str) -> RateLimits:
    return RateLimits(DEFAULT_WEIGHT_LIMIT[trade_type], 60.0)


def _window_s(entry: dict) -> float:
    unit = str(entry.get("interval", "")).upper()
    if unit not in _INTERVAL_S:
        raise ValueError(f"rateLimits entry with unknown interval: {entry!r}")
    return float(_INTERVAL_S[unit] * int(entry.get("intervalNum", 1)))


def summarize_exchange_info(raw: dict, trade_type: str) -> dict:
    """Reduce a raw exchangeInfo answer to the facts the pipeline uses."""
    limits = []
    for entry in raw.get("rateLimits") or []:
        limits.append(
            {
                "type": entry.get("rateLimitType"),
                "interval": entry.get("interval"),
                "interval_num": int(entry.get("intervalNum", 1)),
                "limit": int(entry["limit"]),
                "window_s": _window_s(entry),
            }
        )
    weight = [x for x in limits if x["type"] == "REQUEST_WEIGHT"]
    # Several REQUEST_WEIGHT windows would be unusual; the shortest is the binding one.
    weight.sort(key=lambda x: x["window_s"])
    request_weight = (
        {"limit": weight[0]["limit"], "window_s": weight[0]["window_s"]}
        if weight
        else {"limit": DEFAULT_WEIGHT_LIMIT[trade_type], "window_s": 60.0}
    )
    symbols = {}
    for s in raw.get("symbols") or []:
        name = s.get("symbol")
        if not name:
            continue
        symbols[name] = {
            "status": s.get("contractStatus", s.get("status")),
            "contract_type": s.get("contractType"),
            "contract_size": s.get("contractSize"),
            "onboard_date": s.get("onboardDate"),
        }
    return {
        "trade_type": trade_type,
        "request_weight": request_weight,
        "rate_limits": limits,
        "symbols": dict(sorted(symbols.items())),
    }


# Statuses of a symbol that trades, or will (a new listing): anything else in a complete
# exchangeInfo answer (spot BREAK, futures SETTLING / CLOSE, COIN-M DELIVERED), or the symbol
# missing from it, is a symbol that no longer trades (delisted, or halted: REST has no candles
# for a halt either).
TRADING_STATUSES = ("TRADING", "PENDING_TRADING")


def not_trading(exchange_info_path: str | Path | None, symbol: str) -> str | None:
    """Why this run's exchangeInfo says ``symbol`` no longer trades (``"not in exchangeInfo"``,
    ``"exchangeInfo status BREAK"``), else None; None too when that is not known: no summary,
    its request failed (it holds its ``error``), or it lists no symbols. The REST jobs then
    ask nothing past the symbol's last archived data (rest/klines.py, rest/funding.py)."""
    if not exchange_info_path:
        return None
    symbols = _symbol_facts(str(exchange_info_path))
    if not symbols:
        return None
    entry = symbols.get(symbol)
    if entry is None:
        return "not in exchangeInfo"
    status = entry.get("status")
    if status is None or status in TRADING_STATUSES:
        return None
    return f"exchangeInfo status {status}"


def knows_symbols(exchange_info_path: str | Path | None) -> bool:
    """Whether the summary lists symbols, so that ``not_trading`` can tell (False: no file,
    its request failed, or it lists none)."""
    return bool(exchange_info_path) and bool(_symbol_facts(str(exchange_info_path)))


def _symbol_facts(path: str) -> dict:
    """The summary's ``symbols`` (empty when unknown), read once per file version: a REST
    shard job asks for each of its symbols."""
    try:
        st = os.stat(path)  # seam: the summary in the run directory
    except OSError:
        return {}
    return _symbol_facts_of(path, st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=8)
def _symbol_facts_of(path: str, mtime_ns: int, size: int) -> dict:
    info = read_exchange_info(path)
    if not info or info.get("error") or not isinstance(info.get("symbols"), dict):
        return {}
    return info["symbols"]


def load_rate_limits(exchange_info_path: str | Path | None, trade_type: str) -> RateLimits:
    """Weight limit and window from a summary file; Binance's defaults when absent or when
    this run's exchangeInfo request failed (the file holds its ``error``), or when the file
    cannot be read (then removed, so that the next run that needs it asks again)."""
    info = read_exchange_info(exchange_info_path) if exchange_info_path else None
    if not info or "request_weight" not in info:
        if exchange_info_path:
            log.warning(
                "%s: no exchange info%s, using default weight limit %d per minute",
                exchange_info_path,
                f" (its request failed: {info['error']})" if info and info.get("error") else "",
                DEFAULT_WEIGHT_LIMIT[trade_type],
            )
        return default_rate_limits(trade_type)
    rw = info["request_weight"]
    return RateLimits(int(rw["limit"]), float(rw["window_s"]))


def run_exchange_info(
    *,
    trade_type: str,
    api_url: str,
    out_path: str | Path,
    timeout_s: float = 15.0,
    max_retries: int = 5,
    after_failure: dict | None = None,
) -> dict:
    """Fetch ``{prefix}/exchangeInfo`` once and write its summary to ``out_path``
    (``after_failure``: the failed request it follows, ``run_exchange_infos``)."""
    t0 = time.monotonic()
    limiter = WindowLimiter(DEFAULT_WEIGHT_LIMIT[trade_type], name=f"{trade_type}-weight")
    with RestClient(
        api_url, trade_type, weight_limiter=limiter, max_retries=max_retries, timeout_s=timeout_s
    ) as client:
        raw = client.get_json("/exchangeInfo", weight=EXCHANGE_INFO_WEIGHT[trade_type])
        summary = summarize_exchange_info(raw, trade_type)
        if after_failure is not None:
            summary["after_failure"] = after_failure
        storage.write_json(out_path, summary)
        stats = {
            "symbols": len(summary["symbols"]),
            "request_weight": summary["request_weight"],
            "seconds": round(time.monotonic() - t0, 3),
            **client.stats.as_dict(),
        }
    log.info(
        "%s exchangeInfo: %d symbols, weight limit %d per %.0f s",
        trade_type,
        stats["symbols"],
        summary["request_weight"]["limit"],
        summary["request_weight"]["window_s"],
    )
    return stats


def _complete(path) -> bool:
    """Whether ``path`` holds a complete summary (not a failed request's record)."""
    info = read_exchange_info(path)
    return bool(info) and not info.get("error") and "request_weight" in info


def run_exchange_infos(
    *,
    fetches: list[dict],
    after_failure: dict | None = None,
    asked_for: dict | None = None,
    keep: list[str] | tuple = (),
) -> dict:
    """Rule ``exchange_info``: ``run_exchange_info`` for every trade type of the run, in one
    process, concurrently (one job start per run instead of one per trade type).

    A trade type whose request fails (its host down or in maintenance) does not hold back
    the others: its file holds the ``error`` and ``failed_at_unix`` instead, the job ends
    successfully, its REST jobs use Binance's default weight limits (``load_rate_limits``)
    and a COIN-M contract size asked of it names the failure (``contracts``). The next run
    fetches again (``plan.failure_time``, part of the job's rerun value); ``after_failure``
    (that failure and the run's end date, when the files the job replaces hold one) is
    recorded in complete files, so the value stays the same once they are.

    ``keep``: trade types whose complete summary, from a run of the same end date and
    arguments, stays as it is (``plan.exchange_info_kept``: the rerun after a failure asks
    the failed trade types only; the rule's outputs are ``update()`` files, so Snakemake
    leaves them in place for this); it is written again with the same bytes, newer than the
    rerun stamp. ``asked_for`` (the run's end date and arguments) is recorded with a
    failure, for that decision.
    """
    results: dict[str, dict] = {}
    failed = 0
    kept = [f for f in fetches if f["trade_type"] in keep and _complete(f["out_path"])]
    for f in kept:
        storage.write_bytes(f["out_path"], storage.read_bytes(f["out_path"]))
        results[f["trade_type"]] = {"kept": True}
        log.info("%s exchangeInfo: kept from this end date's run, not asked again", f["trade_type"])
    asked = [f for f in fetches if f not in kept]
    with ThreadPoolExecutor(max_workers=max(1, len(asked))) as pool:
        futures = {
            f["trade_type"]: (
                f,
                pool.submit(run_exchange_info, **f, after_failure=after_failure),
            )
            for f in asked
        }
        for trade_type, (fetch, fut) in futures.items():
            try:
                results[trade_type] = fut.result()
            except Exception as exc:  # recorded in its file, the others go on
                failed += 1
                cause = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                log.error("%s exchangeInfo failed", trade_type, exc_info=exc)
                record = {"trade_type": trade_type, "error": f"{type(exc).__name__}: {cause}"}
                failure = dict(record, failed_at_unix=time.time())
                if asked_for is not None:
                    failure["asked_for"] = asked_for
                storage.write_json(fetch["out_path"], failure)
                results[trade_type] = {"error": record["error"]}
    if failed:
        log.error(
            "exchangeInfo failed for %d of %d trade types (above): their REST jobs use the "
            "default weight limits; the next run asks them again (only them)",
            failed,
            len(fetches),
        )
    return results
