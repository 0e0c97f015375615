"""Funding history after the archive from REST: ``api_data/{T}/funding_rate/{SYM}.pqt``.

Legacy fetched the latest 1000 records without a start time, only for symbols with archive
funding (§7, Q5). Here (Q5 fixed):

- Called for every um/cm symbol with klines or archive funding (the workflow takes the union).
- Start: one ms after the newest event already known, i.e. the later of the last archived event
  (``parsed_data/{T}/funding/{SYM}.pqt``) and the last stored REST event. With neither, from the
  symbol's first parsed kline day (any interval); with no klines either, from epoch 0, which
  Binance answers with the symbol's first records. Never before the run's first day
  (``start_date``, or the ``lookback_days`` window's; ``plan.resolve_dates``): the date range
  limits fetching (docs/config.md), so epoch 0 is used only for a run over all history.
- Head: REST must cover everything after the archive (or from the first kline day). Where that
  lower bound lies before what the stored file was fetched from, the span in between is fetched
  too. It happens after a backfill: ``start_date`` moved earlier, so the archive's last event or
  the first kline day moved back while the stored REST events began later. The lower bound the
  stored events cover is kept in a record (``lakehouse/state/api_download_funding/...``, written
  after the file); a file without one counts as covered from its first event.
- End: the server time, but not after the end of ``end_date`` (inclusive), so a run with a
  fixed ``end_date`` is reproducible.
- Pages of ``limit=1000`` by ``startTime`` (next start = last ``fundingTime`` + 1) until a
  page holds fewer than 1000 records.
- Incremental: stored records are kept; new ones are appended, de-duplicated on
  ``funding_time`` (last wins) and sorted by ``candle_begin_time`` (the hour floor).
- A symbol with no funding at all (delivery contracts, spot pairs) gets no file, so that
  downstream never invents a funding column for it (Q19).
- um ``fundingRate`` has its own pool (500 requests per 5 minutes) and no request weight;
  cm weighs 1.
"""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from crypto_lakehouse import layout, storage
from crypto_lakehouse.intervals import DAY_MS
from crypto_lakehouse.io import write_json
from crypto_lakehouse.parse import wrote_funding_file, wrote_partition
from crypto_lakehouse.provenance import day_number, ms_iso
from crypto_lakehouse.rest.client import (
    HostStopped,
    InvalidSymbol,
    RestClient,
    RestError,
    TransientFailure,
)
from crypto_lakehouse.rest.exchange_info import not_trading
from crypto_lakehouse.rest.host import shared_or_own_client, stats_since
from crypto_lakehouse.schema import API_FUNDING_SCHEMA, TIME_TYPE, epoch_ms
from crypto_lakehouse.shards import DamagedInput, reading_output_of

log = logging.getLogger(__name__)

PAGE_LIMIT = 1000
HOUR_MS = 3_600_000
RECORD_STAGE = "api_download_funding"


def coverage_record_path(data_dir, trade_type: str, symbol: str) -> Path:
    """Record of the lower bound the stored REST events were fetched from."""
    return layout.state_path(data_dir, RECORD_STAGE, trade_type, "funding", symbol)


def _max_time(path: Path, column: str, wrote) -> int | None:
    """The latest time of a parsed funding file, None when there is none (no archive
    funding); an unreadable one raises ``shards.DamagedInput`` (``wrote``: whether the parse
    wrote it, asked only then)."""
    try:
        with reading_output_of("aws_parse", path, wrote):
            return _column_max(storage.read_parquet(path, columns=[column])[column])
    except DamagedInput as exc:
        if exc.missing:
            return None
        raise


def _column_max(col) -> int | None:
    if len(col) == 0:
        return None
    return int(epoch_ms(col).to_numpy().max())


def _fetch_span(
    client, trade_type: str, symbol: str, lo: int, hi: int, stats: dict, *, into: list[dict]
) -> None:
    """Append the funding events of [lo, hi] to ``into``, in pages of PAGE_LIMIT by
    ``startTime``; pages already fetched stay there when a later one fails."""
    s = lo
    while s <= hi:
        page = client.get_json(
            "/fundingRate",
            {"symbol": symbol, "startTime": s, "endTime": hi, "limit": PAGE_LIMIT},
            weight=0 if trade_type == "um_futures" else 1,
            funding=trade_type == "um_futures",
        )
        stats["pages"] += 1
        into.extend(page)
        if len(page) < PAGE_LIMIT:
            break
        nxt = int(page[-1]["fundingTime"]) + 1
        if nxt <= s:  # a server not moving forward would loop forever
            raise RestError(f"{symbol}: fundingRate page does not advance past {s}")
        s = nxt


def first_kline_ms(data_dir, trade_type: str, symbol: str) -> int | None:
    """Earliest parsed candle of the symbol over all intervals (first partition of each)."""
    root = storage.data_path(data_dir) / "parsed_data" / trade_type / "klines" / symbol
    firsts = []
    for interval_dir in storage.subdirs(root):
        parts = storage.list_files(interval_dir, recursive=False, suffix=".pqt")
        if parts:
            wrote = functools.partial(
                wrote_partition, data_dir, trade_type, symbol, interval_dir.name, parts[0]
            )
            with reading_output_of("aws_parse", parts[0], wrote):
                col = storage.read_parquet(parts[0], columns=["candle_begin_time"])
            col = col["candle_begin_time"]
            if len(col):
                firsts.append(int(epoch_ms(col).to_numpy().min()))
    return min(firsts) if firsts else None


def records_to_table(records: list[dict]) -> pa.Table:
    """REST fundingRate objects → API_FUNDING_SCHEMA (unknown fields ignored)."""
    if not records:
        return API_FUNDING_SCHEMA.empty_table()
    t = np.array([int(r["fundingTime"]) for r in records], dtype=np.int64)
    rate = np.array([float(r["fundingRate"]) for r in records], dtype=np.float64)
    return pa.table(
        {
            "funding_time": pa.array(t, TIME_TYPE),
            "candle_begin_time": pa.array(t - t % HOUR_MS, TIME_TYPE),
            "funding_rate": pa.array(rate, pa.float64()),
        },
        schema=API_FUNDING_SCHEMA,
    )


def merge_funding(stored: pa.Table, new: pa.Table) -> pa.Table:
    """Stored and new events, one per funding_time (the newest answer wins), sorted by
    (candle_begin_time, funding_time)."""
    both = pa.concat_tables([stored.cast(API_FUNDING_SCHEMA), new])
    times = both["funding_time"].cast(pa.int64()).to_numpy()
    # keep the last occurrence of each funding_time: first occurrence in the reversed order
    _, first_rev = np.unique(times[::-1], return_index=True)
    keep = np.sort(len(times) - 1 - first_rev)
    kept = both.take(pa.array(keep))
    order = pc.sort_indices(
        kept, sort_keys=[("candle_begin_time", "ascending"), ("funding_time", "ascending")]
    )
    return kept.take(order)


def run_api_funding(
    *,
    trade_type: str,
    symbol: str,
    data_dir: str | Path,
    api_url: str,
    parse_report,
    end_date: str | None,
    start_date: str | None = None,
    weight_share: float = 0.8,
    max_retries: int = 5,
    timeout_s: float = 15.0,
    report_path: str | Path,
    stats_path: str | Path,
    exchange_info_path: str | Path | None = None,
    backoff_base_s: float = 1.0,
    client: RestClient | None = None,
) -> dict:
    """Fetch the symbol's funding events after the newest known one, and those of a span
    before the stored ones that REST must cover too (a backfill), within ``start_date`` (the
    run's resolved first day; None: all history) and ``end_date``; see module docstring.

    ``exchange_info_path`` (optional) supplies the weight limit and window; without it the
    Binance defaults apply. ``parse_report`` is accepted for the workflow's dependency only:
    the parsed funding file itself says what the archive holds. ``client``: the job's shared
    client of the host (``rest.host``); one is opened when absent.
    """
    if trade_type not in layout.FUTURES_TRADE_TYPES:
        raise ValueError(f"funding exists for um_futures and cm_futures only, not {trade_type!r}")
    t0 = time.monotonic()
    out_path = layout.api_funding_path(data_dir, trade_type, symbol)
    storage.remove_stale_temps_of(out_path)  # the folder is shared by every symbol's job
    try:
        stored = storage.read_parquet(out_path)
    except FileNotFoundError:
        stored = API_FUNDING_SCHEMA.empty_table()
    except Exception as exc:
        if not storage.is_damaged_file_error(exc):
            raise
        # Removed and fetched again from the lower bound below, as on a first run.
        log.warning("%s is unreadable (%s: %s); fetching its events again", out_path,
                    type(exc).__name__, exc)  # fmt: skip
        storage.delete(out_path)
        stored = API_FUNDING_SCHEMA.empty_table()
    last_archived = _max_time(
        layout.parsed_funding_path(data_dir, trade_type, symbol),
        "funding_time",
        functools.partial(wrote_funding_file, data_dir, trade_type, symbol),
    )
    last_stored = _column_max(stored["funding_time"])  # the file read above: no second GET
    if last_archived is not None:
        lower_ms, start_from = last_archived + 1, "last_event"
    else:
        first = first_kline_ms(data_dir, trade_type, symbol)
        lower_ms = (first - first % DAY_MS) if first is not None else 0
        start_from = "first_kline_day" if first is not None else "epoch"
    if start_date and lower_ms < day_number(start_date) * DAY_MS:
        # Nothing before the run's first day: with neither archive funding nor klines (a
        # start_date past the archive) the epoch fallback fetched the whole history.
        lower_ms, start_from = day_number(start_date) * DAY_MS, "start_date"
    record_path = coverage_record_path(data_dir, trade_type, symbol)
    head: tuple[int, int] | None = None  # [lo, hi] before the stored events, to fetch too
    if last_stored is None:
        start_ms = lower_ms
    else:
        start_ms = max(lower_ms - 1, last_stored) + 1
        start_from = "last_event"
        first_stored = int(stored["funding_time"].cast(pa.int64()).to_numpy().min())
        if lower_ms < first_stored:  # the record is read only when it can matter
            covered_from = storage.read_state(record_path).get("covered_from_ms")
            if not isinstance(covered_from, int):
                covered_from = first_stored
            if lower_ms < covered_from:
                head = (lower_ms, covered_from - 1)

    # A symbol this run's exchangeInfo says no longer trades (delisted) has no funding events
    # after its last trade, and the archive's monthly files hold them up to it: once some of
    # its events are known, the tail after them is not asked again (a request every run,
    # forever, for nothing). With none known, its history is asked once, as for any symbol.
    delisted = not_trading(exchange_info_path, symbol)
    ask_tail = not (delisted and (last_archived is not None or last_stored is not None))
    if not ask_tail:
        log.info(
            "%s %s: %s; funding after its last known event not asked", trade_type, symbol, delisted
        )
    client, client_context = shared_or_own_client(
        client,
        trade_type=trade_type,
        api_url=api_url,
        exchange_info_path=exchange_info_path,
        weight_share=weight_share,
        max_retries=max_retries,
        timeout_s=timeout_s,
        backoff_base_s=backoff_base_s,
    )
    counters_before = client.stats.as_dict()
    report = {
        "trade_type": trade_type,
        "symbol": symbol,
        "end_date": end_date,
        "status": "ok",
        "invalid_symbol": False,
    }
    if delisted:
        report.update(status="delisted", delisted=delisted)
    stats = {"pages": 0, "new_records": 0, "start_from": start_from}
    fetched: list[dict] = []
    head_done = False
    failure: Exception | None = None
    with client_context:
        try:
            now_ms = client.start_time_ms()
            end_ms = (
                now_ms if not end_date else min(now_ms, (day_number(end_date) + 1) * DAY_MS - 1)
            )
            if head is not None:
                _fetch_span(client, trade_type, symbol, *head, stats, into=fetched)
                head_done = True
            if ask_tail:
                _fetch_span(client, trade_type, symbol, start_ms, end_ms, stats, into=fetched)
        except InvalidSymbol as exc:
            log.warning("%s %s: invalid symbol, funding skipped: %s", trade_type, symbol, exc)
            report.update(status="invalid_symbol", invalid_symbol=True)
        except (HostStopped, TransientFailure, RestError) as exc:
            failure = exc  # keep the pages already fetched: they are contiguous from start
        stats.update(stats_since(client, counters_before))

    new = records_to_table(fetched)
    if new.num_rows:
        # only records of the spans asked: a server ignoring startTime must not rewrite history
        times = new["funding_time"].cast(pa.int64())
        asked = pc.greater_equal(times, start_ms)
        if head is not None:
            in_head = pc.and_(pc.greater_equal(times, head[0]), pc.less_equal(times, head[1]))
            asked = pc.or_(asked, in_head)
        new = new.filter(asked)
    merged = merge_funding(stored, new) if new.num_rows else stored
    if new.num_rows:
        storage.write_parquet(out_path, merged)
    if merged.num_rows and (last_stored is None or head_done):
        # After the file (the record barrier): a record never claims events the file does
        # not hold. A cache (not fsynced): a lost, older or torn one only fetches the head
        # span again (the stored file counts as covered from its first event).
        storage.write_cache_json(record_path, {"covered_from_ms": lower_ms})
    times = merged["funding_time"].cast(pa.int64()).to_numpy() if merged.num_rows else np.array([])
    report.update(
        records=merged.num_rows,
        first_funding_time=ms_iso(int(times.min())) if times.size else None,
        last_funding_time=ms_iso(int(times.max())) if times.size else None,
        last_archived_funding_time=ms_iso(last_archived) if last_archived is not None else None,
    )
    stats.update(
        new_records=new.num_rows,
        seconds=round(time.monotonic() - t0, 3),
        error=str(failure) if failure else None,
    )
    write_json(report_path, report)
    write_json(stats_path, stats)
    if failure is not None:
        raise failure
    return stats
