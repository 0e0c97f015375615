"""Fill kline days the archive lacks from REST: ``api_data/{T}/klines/{SYM}/{I}/{YYYYMMDD}.pqt``.

Which days (legacy §6.1, quirk Q9 fixed):

- Every UTC day from the symbol's first archived day to ``end_date`` is considered, including
  the days after the last archived day (the recent tail the archive has not published yet).
- A day is *missing* when its parsed archive rows are fewer than a complete day's candles
  (``intervals.candles_per_day``) and it has no ``api_data`` day file yet.
- Only *complete* days are fetched: a day whose last candle closes after the server time taken
  at the start of the job is left alone (``pending``); the next run fetches it once it is over.
  So no day file ever holds an unfinished candle, and rows with ``close_time >= server time``
  are dropped besides (defence in depth).
- An empty answer for a past day writes a 0-row file: the day is done (delisted, not yet
  listed, exchange downtime) and is never asked again.
- A symbol without archive data (``parse_report`` None or no parsed rows) has no first day to
  anchor the range: it is skipped with a log line and its report says ``no_archive``.
- When the archive later holds the complete day, the REST day file is removed: the archive
  replaces it (Q9), and the provenance says ``archive``.

How (binance-facts §5.1): consecutive missing days are grouped into chunks; a chunk is split
into request windows of at most ``limit`` candles, each sent with ``startTime`` and ``endTime``
(needed by COIN-M, which otherwise answers from ``endTime`` backwards). ``limit`` is chosen to
minimise weight per candle: spot weighs 2 for any limit up to 1000; futures weigh 2 for
limits in [100, 500), so a 1m day is three requests of 480 (weight 6, not 10 for one of 1440).
Chunks run on a small thread pool that shares one limiter per host; each chunk writes its day
files atomically one by one, so an interrupted run resumes without refetching stored days.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from crypto_lakehouse import layout, storage
from crypto_lakehouse.intervals import DAY_MS, candles_per_day, grid_offset, interval_ms
from crypto_lakehouse.io import write_json
from crypto_lakehouse.progress import EVERY_S as PROGRESS_EVERY_S
from crypto_lakehouse.progress import Progress, format_duration
from crypto_lakehouse.provenance import (
    PROVENANCE_SCHEMA,
    build_provenance,
    day_iso,
    day_number,
    summarize_provenance,
)
from crypto_lakehouse.rest import KLINES_MAX_LIMIT, archive_days, kline_weight
from crypto_lakehouse.rest.client import (
    HostStopped,
    InvalidSymbol,
    RateLimited,
    RestClient,
    RestError,
    TransientFailure,
)
from crypto_lakehouse.rest.exchange_info import not_trading
from crypto_lakehouse.rest.host import shared_or_own_client, stats_since
from crypto_lakehouse.schema import KLINE_SCHEMA, KLINE_SOURCE_FIELDS, TIME_TYPE, epoch_ms
from crypto_lakehouse.shards import read_report

log = logging.getLogger(__name__)

CM_MAX_WINDOW_MS = 200 * DAY_MS  # COIN-M: endTime - startTime <= 200 days
CHUNK_REQUESTS = 24  # at most this many requests per chunk (bounds the loss of a killed run)
DEFAULT_CONCURRENCY = 4

# (largest limit of the tier, weight); spot has one tier (binance-facts §5.1).
_TIERS = {
    "spot": ((1000, 2),),
    "futures": ((99, 1), (499, 2), (1000, 5), (1500, 10)),
}


# ---------------------------------------------------------------- request plan
@dataclass(frozen=True)
class Window:
    start_ms: int
    end_ms: int  # inclusive, as Binance reads endTime
    limit: int
    weight: int


@dataclass(frozen=True)
class Chunk:
    first_day: int
    n_days: int
    windows: tuple[Window, ...]

    @property
    def days(self) -> range:
        return range(self.first_day, self.first_day + self.n_days)


def _tiers(trade_type: str, interval: str) -> list[tuple[int, int]]:
    tiers = _TIERS["spot" if trade_type == "spot" else "futures"]
    cap_all = KLINES_MAX_LIMIT[trade_type]
    if trade_type == "cm_futures":
        cap_all = min(cap_all, max(1, CM_MAX_WINDOW_MS // interval_ms(interval)))
    return [(min(cap, cap_all), w) for cap, w in tiers]


def check_interval(interval: str) -> tuple[int, int]:
    """(interval ms, candles per day); only intervals that tile a UTC day are supported."""
    ims = interval_ms(interval)
    if ims > DAY_MS or DAY_MS % ims:
        raise ValueError(f"interval {interval!r} does not divide a day; REST day fill needs one")
    return ims, candles_per_day(interval)


def plan_chunks(trade_type: str, interval: str, days) -> list[Chunk]:
    """Group day numbers into chunks of consecutive days with their request windows."""
    ims, cpd = check_interval(interval)
    tiers = _tiers(trade_type, interval)
    chunk_days = _chunk_days(tiers, cpd)
    d = np.unique(np.asarray(list(days), dtype=np.int64))
    if d.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(d) != 1)
    run_starts = np.concatenate(([d[0]], d[breaks + 1]))
    run_ends = np.concatenate((d[breaks], [d[-1]]))
    chunks = []
    for a, b in zip(run_starts.tolist(), run_ends.tolist(), strict=True):
        for first in range(a, b + 1, chunk_days):
            n_days = min(chunk_days, b + 1 - first)
            chunks.append(
                Chunk(first, n_days, _windows(trade_type, tiers, ims, cpd, first, n_days))
            )
    return chunks


def plan_weight(trade_type: str, interval: str, days) -> tuple[int, int]:
    """(chunks, request weight) of ``plan_chunks(trade_type, interval, days)``, without
    building its windows: a chunk's weight depends only on its number of days, so it is
    computed once per length and multiplied by the runs of consecutive days. For
    ``crypto-lakehouse plan``, which adds up millions of days over a universe (building every
    window of 3.2 million days took ~75 s there)."""
    ims, cpd = check_interval(interval)
    tiers = _tiers(trade_type, interval)
    chunk_days = _chunk_days(tiers, cpd)
    d = np.unique(np.asarray(list(days), dtype=np.int64))
    if d.size == 0:
        return 0, 0
    breaks = np.flatnonzero(np.diff(d) != 1)
    run_starts = np.concatenate(([d[0]], d[breaks + 1]))
    run_ends = np.concatenate((d[breaks], [d[-1]]))
    lengths = run_ends - run_starts + 1
    full, rest = lengths // chunk_days, lengths % chunk_days

    def weight(n_days: int) -> int:
        return sum(w.weight for w in _windows(trade_type, tiers, ims, cpd, 0, n_days))

    chunks = int(full.sum()) + int(np.count_nonzero(rest))
    total = int(full.sum()) * weight(chunk_days)
    for n_days, count in zip(*np.unique(rest[rest > 0], return_counts=True), strict=True):
        total += int(count) * weight(int(n_days))
    return chunks, total


def _best_tier(tiers, candles: int) -> tuple[int, int]:
    """(cap, weight) of the tier that fetches ``candles`` at the least total weight."""
    return min(tiers, key=lambda t: (math.ceil(candles / t[0]) * t[1], -t[0]))


def _chunk_days(tiers, cpd: int) -> int:
    """The fewest days per chunk whose weight per candle is within 5 % of the best possible.

    Small chunks lose little work when a run is interrupted; spot 1m needs 2 days (three
    requests of 960 candles instead of two of 720 per day), futures 1m needs 1 (3 × 480).
    """
    ideal = min(w / cap for cap, w in tiers)
    max_days = max(1, CHUNK_REQUESTS * max(cap for cap, _ in tiers) // cpd)
    for n in range(1, max_days + 1):
        cap, w = _best_tier(tiers, n * cpd)
        if math.ceil(n * cpd / cap) * w <= ideal * 1.05 * n * cpd:
            return n
    return max_days


def _windows(trade_type, tiers, ims, cpd, first_day, n_days) -> tuple[Window, ...]:
    candles = n_days * cpd
    cap, _ = _best_tier(tiers, candles)
    n = math.ceil(candles / cap)
    size = math.ceil(candles / n)  # balanced windows, none above the tier's cap
    start0 = first_day * DAY_MS
    stop = (first_day + n_days) * DAY_MS
    out = []
    for i in range(n):
        s = start0 + i * size * ims
        e = min(s + size * ims, stop)
        limit = (e - s) // ims
        out.append(Window(s, e - 1, limit, kline_weight(trade_type, limit)))
    return tuple(out)


# ---------------------------------------------------------------- data
def klines_to_table(
    rows: list, *, lo_ms: int, hi_ms: int, now_ms: int, step_ms: int | None = None
) -> pa.Table:
    """REST kline arrays → legacy 10 columns: closed candles with ``lo <= open < hi``,
    de-duplicated on open time (last answer wins), sorted.

    ``step_ms`` (the interval): an open time off the interval grid is floored onto it. Binance
    answers such candles for real: after the spot outage of 2018-02-08 the BTCUSDT (and
    every other spot) 1m candles opened at ``…:14.789`` until the grid was restored
    (binance-public-data #14, #77; the archive holds the same rows, floored the same way by
    the parse, docs/quality.md); written as they came, every later gen_kline of the symbol
    failed on them. Should a floored candle meet a candle that was on the grid, the latter is kept.

    Columns are converted whole: decimal strings by Arrow's string → float64 cast.
    """
    if not rows:
        return KLINE_SCHEMA.empty_table()
    width = len(rows[0])
    if width != len(KLINE_SOURCE_FIELDS):
        raise RestError(f"kline arrays have {width} fields, expected {len(KLINE_SOURCE_FIELDS)}")
    cols = dict(zip(KLINE_SOURCE_FIELDS, zip(*rows, strict=True), strict=True))
    open_ms = np.asarray(cols["candle_begin_time"], dtype=np.int64)
    close_ms = np.asarray(cols["close_time"], dtype=np.int64)
    keep = (close_ms < now_ms) & (open_ms >= lo_ms) & (open_ms < hi_ms)
    on_grid = np.ones(len(open_ms), dtype=bool)
    if step_ms is not None:
        off = grid_offset(open_ms, step_ms)
        on_grid = off == 0
        if not on_grid.all():
            open_ms = open_ms - off  # floored: still inside the day (day bounds are on it)
    # stable sort by open time (a candle that was on the grid after a floored one of the
    # same time), then keep the last row of each run of equal times
    order = np.lexsort((on_grid, open_ms))
    order = order[keep[order]]
    t = open_ms[order]
    order = order[np.append(t[1:] != t[:-1], True)] if t.size else order
    idx = pa.array(order)
    out = {"candle_begin_time": pa.array(open_ms[order], TIME_TYPE)}
    for name in KLINE_SCHEMA.names[1:]:
        typ = KLINE_SCHEMA.field(name).type
        values = pa.array(cols[name])
        if pa.types.is_string(values.type):
            values = values.cast(pa.float64())
        out[name] = values.take(idx).cast(typ)
    return pa.table(out, schema=KLINE_SCHEMA)


def off_grid_count(rows: list, step_ms: int) -> int:
    """How many REST kline arrays open off the interval grid (``klines_to_table`` floors them)."""
    if not rows:
        return 0
    open_ms = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    return int(np.count_nonzero(grid_offset(open_ms, step_ms)))


def day_file(api_dir: Path, day: int) -> Path:
    return api_dir / f"{day_iso(day).replace('-', '')}.pqt"


def existing_day_files(api_dir: Path) -> dict[int, Path]:
    out = {}
    for p in storage.list_files(api_dir, recursive=False, suffix=".pqt"):
        stem = p.stem
        if len(stem) == 8 and stem.isdigit():
            out[day_number(f"{stem[:4]}-{stem[4:6]}-{stem[6:]}")] = p
    return out


def _readable_day_files(api_dir: Path) -> tuple[dict[int, Path], dict[Path, int]]:
    """``existing_day_files`` whose footer pyarrow can read, and their row counts (for the
    provenance: this run fetches only days without a file, so these stay as read): an
    unreadable one (damaged on disk, cut short by a copy) is removed, so that its day is
    fetched again, as the parse rebuilds an unreadable partition."""
    files = existing_day_files(api_dir)
    rows: dict[Path, int] = {}
    for day, path in list(files.items()):
        try:
            rows[path] = storage.parquet_metadata(path).num_rows
        except Exception as exc:
            if not storage.is_damaged_file_error(exc):
                raise
            log.warning(
                "%s is unreadable (%s: %s); fetching it again", path, type(exc).__name__, exc
            )
            storage.delete(path)
            del files[day]
    return files, rows


# ---------------------------------------------------------------- the job
class _Job:
    """One symbol's fill: shared state of the worker threads."""

    def __init__(self, client, trade_type, symbol, interval, api_dir, now_ms):
        self.client = client
        self.trade_type = trade_type
        self.symbol = symbol
        self.interval = interval
        self.api_dir = api_dir
        self.now_ms = now_ms
        self.cancel = threading.Event()
        self.lock = threading.Lock()
        self.invalid_symbol: str | None = None
        self.host_stopped: str | None = None
        self.rate_limited: str | None = None  # a request of the symbol kept getting 429s
        self.failures: list[str] = []
        self.days_failed = 0
        self.days_fetched = 0
        self.days_empty = 0
        self.candles = 0
        self.off_grid = 0  # candles REST answered off the interval grid (floored)

    def run_chunk(self, chunk: Chunk) -> None:
        if self.cancel.is_set():
            self._not_asked(chunk)
            return
        try:
            rows: list = []
            for w in chunk.windows:
                if self.cancel.is_set():
                    self._not_asked(chunk)
                    return
                rows.extend(
                    self.client.get_json(
                        "/klines",
                        {
                            "symbol": self.symbol,
                            "interval": self.interval,
                            "startTime": w.start_ms,
                            "endTime": w.end_ms,
                            "limit": w.limit,
                        },
                        weight=w.weight,
                    )
                )
            lo, hi = chunk.first_day * DAY_MS, (chunk.first_day + chunk.n_days) * DAY_MS
            step = interval_ms(self.interval)
            table = klines_to_table(rows, lo_ms=lo, hi_ms=hi, now_ms=self.now_ms, step_ms=step)
            off_grid = off_grid_count(rows, step)
        except InvalidSymbol as exc:
            with self.lock:
                self.invalid_symbol = str(exc)
            self.cancel.set()
            return
        except HostStopped as exc:
            with self.lock:
                self.host_stopped = str(exc)
            self.cancel.set()
            return
        except (TransientFailure, RestError) as exc:
            days = _days_text(chunk)
            log.error("%s %s: days %s not fetched: %s", self.symbol, self.interval, days, exc)
            with self.lock:
                self.failures.append(f"{days}: {exc}")
                self.days_failed += chunk.n_days
                if isinstance(exc, RateLimited) and self.rate_limited is None:
                    self.rate_limited = str(exc)
            if isinstance(exc, RateLimited):
                # The host kept answering 429 to this symbol: its other chunks would only
                # draw more 429s (each pausing every symbol of the job) and risk a ban. The
                # symbol fails now; the next run asks again for the days it lacks.
                self.cancel.set()
            return
        if off_grid:
            log.warning(
                "%s %s: days %s: %d candle(s) open off the interval grid; floored onto it",
                self.symbol, self.interval, _days_text(chunk), off_grid,
            )  # fmt: skip
            with self.lock:
                self.off_grid += off_grid
        self._write_days(chunk, table)

    def _not_asked(self, chunk: Chunk) -> None:
        """A chunk skipped because the symbol was given up after 429s counts as failed (an
        invalid symbol or a stopped host end the symbol otherwise)."""
        if self.rate_limited is not None:
            with self.lock:
                self.days_failed += chunk.n_days

    def _write_days(self, chunk: Chunk, table: pa.Table) -> None:
        times = table["candle_begin_time"].cast(pa.int64()).to_numpy()
        bounds = np.searchsorted(
            times, [d * DAY_MS for d in range(chunk.first_day, chunk.first_day + chunk.n_days + 1)]
        )
        for i, day in enumerate(chunk.days):
            part = table.slice(bounds[i], bounds[i + 1] - bounds[i])
            storage.write_parquet(day_file(self.api_dir, day), part)
            with self.lock:
                self.candles += part.num_rows
                if part.num_rows:
                    self.days_fetched += 1
                else:
                    self.days_empty += 1


def waiting_note(client) -> str | None:
    """What a REST job's progress line adds while its requests wait on the host's limits
    (the request-weight budget of the minute, a 429 pause): the line's day count and ETA
    stand still then, for up to a minute."""
    blocked_for = getattr(client, "blocked_for", None)
    seconds = blocked_for() if blocked_for is not None else None
    if seconds is None:
        return None
    return f"waiting on the host's rate limit, next request in {format_duration(seconds)}"


def _days_text(chunk: Chunk) -> str:
    return f"{day_iso(chunk.first_day)}..{day_iso(chunk.first_day + chunk.n_days - 1)}"


def _load_parse_report(parse_report):
    if parse_report is None or isinstance(parse_report, dict):
        return parse_report
    return read_report(parse_report, "aws_parse")


def run_api_klines(
    *,
    trade_type: str,
    symbol: str,
    interval: str,
    data_dir: str | Path,
    api_url: str,
    parse_report,
    exchange_info_path: str | Path | None,
    end_date: str | None,
    weight_share: float = 0.8,
    max_retries: int = 5,
    timeout_s: float = 15.0,
    report_path: str | Path,
    stats_path: str | Path,
    concurrency: int = DEFAULT_CONCURRENCY,
    backoff_base_s: float = 1.0,
    client: RestClient | None = None,
) -> dict:
    """Fetch the symbol's missing complete days; write day files, provenance, report, stats.

    Raises ``HostStopped`` (418/403), ``RateLimited`` (a request still answered 429 after
    ``max_retries`` waits: the symbol's remaining days are not asked) or ``TransientFailure``
    (retries exhausted, after all other days were done); an invalid symbol (-1121/-1122) is
    skipped and reported.
    ``client``: the job's shared client of the host (``rest.host``); one is opened when absent.
    """
    t0 = time.monotonic()
    ims, cpd = check_interval(interval)
    api_dir = layout.api_klines_dir(data_dir, trade_type, symbol, interval)
    prov_path = layout.provenance_path(data_dir, trade_type, interval, symbol)
    storage.remove_stale_temps(api_dir)
    report = {
        "trade_type": trade_type,
        "symbol": symbol,
        "interval": interval,
        "end_date": end_date,
        "status": "ok",
        "invalid_symbol": False,
    }
    stats = {"days_planned": 0, "days_fetched": 0, "days_empty": 0, "candles": 0}

    archive = archive_days.load(data_dir, trade_type, symbol, interval)
    if _load_parse_report(parse_report) is None or archive.empty:
        log.info(
            "%s %s %s: no archive data, no first day to anchor REST: skipped",
            trade_type,
            symbol,
            interval,
        )
        storage.write_parquet(prov_path, PROVENANCE_SCHEMA.empty_table())
        report.update(
            status="no_archive",
            rest_day_files=0,
            rest_empty_day_files=0,
            **summarize_provenance(
                PROVENANCE_SCHEMA.empty_table(),
                last_candle_ms=None,
                interval_ms=ims,
                end_day=day_number(end_date) if end_date else 0,
            ),
        )
        return _finish(report, stats, report_path, stats_path, t0)

    # A symbol this run's exchangeInfo says no longer trades (delisted): REST has no candles
    # after its last trade, and the archive publishes its days up to it; asking for each new
    # day (an empty answer every run, forever) is what stops. Its missing days inside the
    # archived history are still asked, once each, as for any symbol.
    delisted = not_trading(exchange_info_path, symbol)
    if delisted:
        report.update(status="delisted", delisted=delisted)
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
    with client_context:
        try:
            now_ms = client.start_time_ms()
        except (HostStopped, TransientFailure, RestError):
            stats.update(
                stats_since(client, counters_before), seconds=round(time.monotonic() - t0, 3)
            )
            write_json(stats_path, stats)
            raise
        first_day = int(archive.first_ms // DAY_MS)
        end_day = day_number(end_date) if end_date else now_ms // DAY_MS
        last_complete_day = now_ms // DAY_MS - 1
        archive_counts = archive.counts
        existing, known_rows = _readable_day_files(api_dir)

        fetch_to = min(end_day, last_complete_day)
        if delisted:
            fetch_to = min(fetch_to, max(archive_counts))
            log.info(
                "%s %s %s: %s; no REST day after its last archived day %s",
                trade_type, symbol, interval, delisted, day_iso(max(archive_counts)),
            )  # fmt: skip
        days = np.arange(first_day, fetch_to + 1, dtype=np.int64)
        short = np.array([archive_counts.get(int(d), 0) for d in days], dtype=np.int64) < cpd
        todo = [int(d) for d in days[short] if int(d) not in existing]
        chunks = plan_chunks(trade_type, interval, todo)
        stats["days_planned"] = len(todo)
        log.info(
            "%s %s %s: %d days to fetch in %d chunks (%d requests)",
            trade_type,
            symbol,
            interval,
            len(todo),
            len(chunks),
            sum(len(c.windows) for c in chunks),
        )

        job = _Job(client, trade_type, symbol, interval, api_dir, now_ms)
        t_fetch = time.monotonic()
        progress = Progress(
            f"api_download {trade_type} klines-{interval} {symbol}", len(todo), unit="days",
            logger=log, status=lambda: waiting_note(client),
        )  # fmt: skip
        with ThreadPoolExecutor(max_workers=max(1, int(concurrency))) as pool:
            pending = {pool.submit(job.run_chunk, chunk): chunk for chunk in chunks}
            while pending:
                done, _ = wait(pending, timeout=PROGRESS_EVERY_S)
                for future in done:
                    progress.add(pending.pop(future).n_days)
                    future.result()
                progress.maybe_log()
        if chunks:
            progress.maybe_log(force=True)
        fetch_s = time.monotonic() - t_fetch
        stats.update(stats_since(client, counters_before))  # rate_limit_wait_s included

    superseded = _drop_superseded(api_dir, archive_counts, cpd)
    table, last_candle = _provenance(
        api_dir, archive, first_day, end_day, last_complete_day, cpd, known_rows
    )
    storage.write_parquet(prov_path, table)
    existing = existing_day_files(api_dir)
    rest_rows = table["rest_rows"].to_numpy()
    fetched = table["rest_fetched"].to_numpy()
    report.update(
        rest_day_files=len(existing),
        rest_empty_day_files=int((fetched & (rest_rows == 0)).sum()),
        **summarize_provenance(table, last_candle_ms=last_candle, interval_ms=ims, end_day=end_day),
    )
    if job.invalid_symbol:
        log.warning("%s %s: invalid symbol, skipped: %s", trade_type, symbol, job.invalid_symbol)
        report.update(status="invalid_symbol", invalid_symbol=True)
    stats.update(
        days_fetched=job.days_fetched,
        days_empty=job.days_empty,
        days_failed=job.days_failed,
        rest_days_superseded=superseded,
        candles=job.candles,
        candles_off_grid=job.off_grid,
        fetch_seconds=round(fetch_s, 3),
        candles_per_min=round(job.candles / fetch_s * 60, 1) if fetch_s > 0 else 0.0,
        errors=job.failures[:20],
    )
    result = _finish(report, stats, report_path, stats_path, t0)
    if job.host_stopped:
        raise HostStopped(job.host_stopped)
    if job.rate_limited:
        raise RateLimited(
            f"{trade_type} {symbol} {interval}: given up after HTTP 429s, "
            f"{job.days_failed} day(s) not fetched; {job.rate_limited}"
        )
    if job.failures:
        raise TransientFailure(
            f"{trade_type} {symbol} {interval}: {len(job.failures)} chunk(s) not fetched "
            f"after retries; first: {job.failures[0]}"
        )
    return result


def _drop_superseded(api_dir: Path, archive_counts: dict[int, int], cpd: int) -> int:
    """Remove REST day files of days the archive now holds completely (Q9)."""
    n = 0
    for day, path in sorted(existing_day_files(api_dir).items()):
        if int(archive_counts.get(day, 0)) >= cpd:
            storage.delete(path)
            log.info("%s: archive day complete, REST day file removed", path)
            n += 1
    return n


def _provenance(api_dir, archive, first_day, end_day, last_complete_day, cpd, known_rows=None):
    """``known_rows``: row counts of day files read earlier in the run (not read again)."""
    archive_counts = archive.counts
    files = {d: p for d, p in existing_day_files(api_dir).items() if first_day <= d <= end_day}
    known_rows = known_rows or {}
    rest_counts = {
        d: known_rows[p] if p in known_rows else storage.parquet_metadata(p).num_rows
        for d, p in sorted(files.items())
    }
    # Days with rows in both sources: count distinct candles of the union.
    both = [d for d, n in rest_counts.items() if n and archive_counts.get(d, 0)]
    union = {}
    rest_max = None
    for d in both:
        rest_t = _file_times(files[d])
        union[d] = int(np.union1d(rest_t, archive.times_between(d * DAY_MS, (d + 1) * DAY_MS)).size)
    nonempty = [d for d, n in rest_counts.items() if n]
    if nonempty:
        rest_max = int(_file_times(files[max(nonempty)]).max())
    horizon = (end_day + 1) * DAY_MS
    candidates = [x for x in (archive.last_before(horizon), rest_max) if x is not None]
    table = build_provenance(
        first_day=first_day,
        last_day=end_day,
        last_complete_day=last_complete_day,
        expected_rows=cpd,
        archive_rows=archive_counts,
        rest_rows=rest_counts,
        union_rows=union,
    )
    return table, (max(candidates) if candidates else None)


def _file_times(path: Path) -> np.ndarray:
    col = storage.read_parquet(path, columns=["candle_begin_time"])["candle_begin_time"]
    return epoch_ms(col).to_numpy()


def _finish(report, stats, report_path, stats_path, t0) -> dict:
    stats["seconds"] = round(time.monotonic() - t0, 3)
    write_json(report_path, report)
    write_json(stats_path, stats)
    return stats
