"""One client per API host and job: the limits are read once (exchangeInfo), and every
symbol of a shard job spends from the same weight budget (issue 11).

The REST stage runs one job per (trade type, shard) for klines *and* funding
(``run_host_shard``): one process, one import, one limiter for both datasets, instead of a
job per dataset each learning the limits anew."""

from __future__ import annotations

import contextlib
from pathlib import Path

from crypto_lakehouse import layout
from crypto_lakehouse.rest import FUNDING_REQUEST_LIMIT, FUNDING_WINDOW_MINUTES
from crypto_lakehouse.rest.client import RestClient
from crypto_lakehouse.rest.exchange_info import load_rate_limits
from crypto_lakehouse.rest.limiter import WindowLimiter

# Symbols of a REST shard job in flight at once (threads sharing the job's client and
# limiter). A daily update asks one to three requests per symbol, each a few ms of the
# server's time: one after another, the job mostly waited on answers and fsyncs. Each symbol
# has up to ``klines.DEFAULT_CONCURRENCY`` requests in flight, so a job at most 8 x 4; the
# weight limiter, not this bound, keeps the host's limits (every request reserves first).
SYMBOLS_AT_ONCE = 8


def open_host_client(
    *,
    trade_type: str,
    api_url: str,
    exchange_info_path: str | Path | None,
    weight_share: float = 0.8,
    max_retries: int = 5,
    timeout_s: float = 15.0,
    backoff_base_s: float = 1.0,
    rest_budget_dir: str | Path | None = None,
) -> RestClient:
    """A client for the trade type's host with its weight limiter (and, for um, the
    separate fundingRate request pool). Use it as a context manager. ``rest_budget_dir``
    (the run's ``layout.rest_budget_dir``): the limiters' windows are shared with every
    other job of the host given the same folder (``limiter.SharedWindowState``); None: this
    process's own (a job alone on its host)."""

    def shared(pool: str) -> str | None:
        if rest_budget_dir is None:
            return None
        return layout.rest_budget_path(str(rest_budget_dir), trade_type, pool)

    limits = load_rate_limits(exchange_info_path, trade_type)
    weight_limiter = WindowLimiter(
        limits.weight_limit,
        share=weight_share,
        window_s=limits.window_s,
        name=f"{trade_type}-weight",
        shared_path=shared("weight"),
    )
    funding_limiter = None
    if trade_type == "um_futures":
        funding_limiter = WindowLimiter(
            FUNDING_REQUEST_LIMIT,
            share=weight_share,
            window_s=limits.window_s * FUNDING_WINDOW_MINUTES,
            name="um-fundingRate",
            shared_path=shared("fundingRate"),
        )
    return RestClient(
        api_url,
        trade_type,
        weight_limiter=weight_limiter,
        funding_limiter=funding_limiter,
        max_retries=max_retries,
        timeout_s=timeout_s,
        backoff_base_s=backoff_base_s,
    )


def shared_or_own_client(client: RestClient | None, **client_args):
    """``(client, context)``: a view of the shard's shared client counting this caller's
    requests apart (``RestClient.meter``; the job closes the client), or a client of its own
    (``open_host_client(**client_args)``) that the context closes."""
    if client is not None:
        view = client.meter()
        return view, contextlib.nullcontext(view)
    own = open_host_client(**client_args)
    return own, own


def stats_since(client: RestClient, before: dict) -> dict:
    """The client's counters minus a snapshot taken before a symbol started."""
    now = client.stats.as_dict()
    return {
        k: round(v - before.get(k, 0), 3) if isinstance(v, float) else v - before.get(k, 0)
        for k, v in now.items()
    }


def for_each_symbol_on_host(entry):
    """Entry point of a REST shard job: ``entry`` (``run_api_klines`` or ``run_api_funding``)
    for each symbol of the shard (``shards.run_shard``), all through one client of the host,
    so exchangeInfo is read once and one limiter paces the whole job. A ban (418/403) stops
    the remaining symbols at once: continuing would extend it."""

    def api_shard(**kwargs) -> dict:
        from crypto_lakehouse.rest.limiter import HostStopped
        from crypto_lakehouse.shards import run_shard

        client_args = {
            k: kwargs[k]
            for k in ("trade_type", "api_url", "exchange_info_path", "weight_share", "max_retries")
            if k in kwargs
        }
        client_args["timeout_s"] = kwargs.get("timeout_s", 15.0)
        with open_host_client(**client_args) as client:
            return run_shard(entry, client=client, fatal=(HostStopped,), **kwargs)

    api_shard.__name__ = f"{entry.__name__}_shard"
    return api_shard


def run_host_shard(
    *,
    trade_type: str,
    api_url: str,
    exchange_info_path: str | Path | None,
    shard_report: str | Path,
    klines: dict,
    interval: str,
    funding: dict | None = None,
    shard: int | None = None,
    start_date: str | None = None,
    weight_share: float = 0.8,
    max_retries: int = 5,
    timeout_s: float = 15.0,
    rest_budget_dir: str | Path | None = None,
    **common,
) -> dict:
    """Entry point of the REST shard job (rule ``api_download_shard``): the shard's klines
    symbols (``run_api_klines``), then its funding symbols (``run_api_funding``, futures),
    through one client of the host; one shard report lists both (``"klines-1m/BTCUSDT"``,
    ``"funding/BTCUSDT"``). ``klines`` and ``funding`` give each part's ``symbols``,
    ``symbol_paths`` and optional ``symbol_values`` (see ``shards.run_shard``); ``common``
    (``data_dir``, ``end_date``) goes to every symbol, ``start_date`` (the run's first day,
    None for all history) to the funding symbols. The symbols of a part run
    ``SYMBOLS_AT_ONCE`` at a time; "now" is the server time taken once per job
    (``RestClient.start_time_ms``). A ban (418/403) stops every symbol not yet started, in
    both parts, at once: continuing would extend it. ``rest_budget_dir``: the run's shared
    rate-limit windows (``open_host_client``), so that the host's jobs running at once
    together stay within its limits."""
    from crypto_lakehouse.rest.limiter import HostStopped
    from crypto_lakehouse.shards import run_shard_parts

    client_args = dict(
        trade_type=trade_type,
        api_url=api_url,
        exchange_info_path=exchange_info_path,
        weight_share=weight_share,
        max_retries=max_retries,
        timeout_s=timeout_s,
    )
    with open_host_client(**client_args, rest_budget_dir=rest_budget_dir) as client:
        shared = dict(common, **client_args, client=client)
        parts = []
        if klines.get("symbols"):
            from crypto_lakehouse.rest.klines import run_api_klines

            parts.append(_part(run_api_klines, klines, dict(shared, interval=interval), interval))
        if funding and funding.get("symbols"):
            from crypto_lakehouse.rest.funding import run_api_funding

            funding_common = dict(shared, start_date=start_date)
            parts.append(_part(run_api_funding, funding, funding_common, None))
        return run_shard_parts(
            parts,
            shard_report=shard_report,
            shard=shard,
            fatal=(HostStopped,),
            at_once=SYMBOLS_AT_ONCE,
        )


def _part(func, part: dict, common: dict, interval: str | None):
    from crypto_lakehouse.shards import ShardPart

    return ShardPart(
        func,
        part["symbols"],
        part["symbol_paths"],
        part.get("symbol_values"),
        common,
        label=f"klines-{interval}" if interval else "funding",
    )
