"""``aws_download`` for one (trade type, dataset, symbol): download, verify, mark.

For every selected zip (see ``selection``) the job makes sure that
``aws_data/<key>`` is complete and verified against its ``.CHECKSUM``, with the legacy empty
``<zip>.verified`` marker beside it. Files are fetched on one event loop (``concurrency``
requests in flight), streamed to a temporary file while hashed, renamed into place only when
the SHA-256 matches, and the marker is written last. A killed run therefore never leaves a
``.verified`` for an incomplete zip, nor a partial file at the final path.

Incremental (quirk Q8 fixed): a private state file remembers each verified key's listing
``size``/``last_modified``/``etag`` and its SHA-256. A key whose listing entry is unchanged is
not requested again; a changed one is fetched again. A legacy BHDS ``aws_data`` used in place
is adopted: a zip with ``.verified`` (or with a matching local CHECKSUM) whose size equals
the listing's is hashed locally instead of downloaded.

Failures (quirk Q20 fixed):
- checksum mismatch, malformed CHECKSUM, truncated body, 5xx, timeouts: retried with
  exponential back-off and jitter (``max_retries``);
- a permanent defect (404 on the zip or its CHECKSUM, no CHECKSUM in the listing, a checksum
  that still does not match after the retries) is quarantined under
  ``lakehouse/quarantine/<key>`` with a ``.reason`` file, reported and logged as a warning;
  it is not retried until its listing entry changes, and the job does not fail for it;
- transient failures that outlast the retries: all other files are finished, the state and
  stats are written, then ``SyncError`` lists the failed keys.

A zip the parse job quarantined (structurally bad: moved to the quarantine folder, marker
removed) is reported as quarantined with its ``.reason`` and not fetched again while its
listing entry is the one we verified; a re-upload is fetched and verified anew. A zip
quarantined for a reason the pipeline no longer takes for a defect (``quarantine.released``:
kline candles off the interval grid, before 2026-12-06) is released: moved back, verified
against its CHECKSUM, reported as a file again (``_release``).

Report (the Snakemake output, deterministic)::

    {"trade_type", "dataset", "interval", "symbol",
     "files": {key: {"size", "last_modified", "sha256"}},   # every verified zip held locally
     "quarantined": {key: reason}, "ignored": {key: reason},
     "day_sources": {"YYYY-MM-DD": key}}                     # only with use_monthly_klines

The date range limits what is FETCHED, never what is reported: ``files`` lists every zip of
the symbol and dataset that is present locally and verified (this run's, earlier runs'
outside today's range, adopted legacy files, keys the listing no longer shows). The parse
job removes the rows of a key that leaves this report, so a moving window (``lookback_days``)
must not make yesterday's oldest day disappear. ``day_sources`` keeps the choices of earlier
runs for the days that have left the range.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from crypto_lakehouse import datasets, io, layout, storage
from crypto_lakehouse.archive import connections, http
from crypto_lakehouse.archive.checksum import ChecksumFormatError, parse_checksum, sha256_file
from crypto_lakehouse.archive.selection import key_period, parse_day, select
from crypto_lakehouse.progress import EVERY_S, Progress
from crypto_lakehouse.quarantine import quarantine_archive, release_archive, released
from crypto_lakehouse.shards import run_shard_concurrently

log = logging.getLogger(__name__)

STAGE = "aws_download"
CHECKSUM_SUFFIX = layout.CHECKSUM_SUFFIX
VERIFIED_SUFFIX = layout.VERIFIED_SUFFIX
PROGRESS_EVERY_S = EVERY_S


class SyncError(RuntimeError):
    """Files still missing after the retries because of transient failures."""


class ChecksumMismatch(Exception):
    pass


def dataset_tag(dataset: str, interval: str | None) -> str:
    """``klines-1m`` or ``funding``: the ``{dataset}`` of the lakehouse record paths."""
    return datasets.tag(dataset, interval)


def symbol_dirs(trade_type, dataset, symbol, interval, use_monthly) -> list[str]:
    """The archive folders of one symbol's files (registry periods), finest first."""
    return layout.archive_dir_keys(trade_type, dataset, symbol, interval, use_monthly)


def zip_keys_in(listing, dirs: list[str]) -> list[str]:
    """The listed zips directly inside one of ``dirs`` (not in sub-folders)."""
    return [
        k
        for k in listing
        if k.endswith(".zip") and any(k.startswith(d) and "/" not in k[len(d) :] for d in dirs)
    ]


def _fingerprint(entry: dict | None) -> dict | None:
    if entry is None:
        return None
    return {"size": int(entry["size"]), "last_modified": entry.get("last_modified", "")}


@dataclass
class Outcome:
    key: str
    status: str  # "verified" | "quarantined" | "failed"
    how: str = ""  # verified: "up_to_date" | "adopted" | "downloaded"
    sha256: str = ""
    reason: str = ""
    bytes: int = 0
    retries: int = 0
    retry_wait_s: float = 0.0  # back-off sleeps before the retries
    requests: int = 0
    # A download's commit (CHECKSUM, rename, marker) still on a file thread: the outcome
    # holds only once it is done (``_download`` waits for it).
    committing: asyncio.Future | None = field(default=None, repr=False, compare=False)


class _Syncer:
    def __init__(self, *, data_dir, archive_url, max_retries, timeout_s, listing, local_files):
        self.data_dir = storage.data_path(data_dir)
        self.local_files: LocalFiles = local_files  # the symbol's files when its sync began
        self.archive_url = archive_url.rstrip("/")
        self.max_retries = max_retries
        self.timeout_s = timeout_s
        self.listing = listing
        self.downloader = None  # opened by ``_download`` inside its event loop
        self.files = None  # a _FileBatches, also opened by ``_download``

    # -------------------------------------------------------------- paths
    def local(self, key: str) -> Path:
        return layout.aws_path(self.data_dir, key)

    def url(self, key: str) -> str:
        """The object's URL: the key percent-encoded, so that a ``%``, ``?`` or ``#`` in it
        is sent as data and never decoded by the server into another path."""
        return f"{self.archive_url}/{urllib.parse.quote(key, safe='/')}"

    def verified_marker(self, key: str) -> Path:
        return self.local(key + VERIFIED_SUFFIX)

    # -------------------------------------------------------------- jobs
    def adopt(self, key: str, expected_size: int) -> Outcome | None:
        """A local zip already complete (legacy ``.verified``, or a matching local
        CHECKSUM): hash it locally. None when it cannot be trusted."""
        path = self.local(key)
        marker = self.verified_marker(key)
        if storage.size(path) != expected_size:
            return None
        digest = sha256_file(path)
        checksum_path = self.local(key + CHECKSUM_SUFFIX)
        if storage.exists(checksum_path):
            try:
                expected = parse_checksum(
                    storage.read_bytes(checksum_path), str(checksum_path)
                ).sha256
            except ChecksumFormatError:
                expected = None
            if expected != digest:
                return None
        elif not storage.exists(marker):
            return None
        if not storage.exists(marker):
            storage.touch(marker)
        return Outcome(key, "verified", "adopted", sha256=digest)

    async def fetch(self, key: str) -> Outcome:
        """Download ``key`` and its CHECKSUM, verify, mark; retries inside."""
        checksum_key = key + CHECKSUM_SUFFIX
        out = Outcome(key, "failed")
        if checksum_key not in self.listing:
            return self.quarantine(out, "no CHECKSUM file in the archive listing")
        final = self.local(key)
        expected: str | None = None
        checksum_body: bytes | None = None  # written with the zip (commit), not before
        body_kept = False
        retry = 0
        zip_url = self.url(key)
        while True:
            zip_answer: asyncio.Task | None = None
            temp_opening: asyncio.Future | None = None
            try:
                # The zip's GET goes out at once; while its answer travels the CHECKSUM is
                # fetched (when needed): one round trip per archive instead of two.
                zip_answer = asyncio.ensure_future(self.downloader.open_get(zip_url))
                # Creating files can block for milliseconds on a busy ext4 journal: on a
                # worker thread, not on the loop that carries every other transfer, and
                # while the answers travel, so that it adds nothing to the archive's time
                # (waiting for it after the CHECKSUM cost ~5 ms of a 30 ms archive at 20 ms
                # latency). The files of the archives arriving together go in one batch (no
                # hand-off per file: measured in docs/benchmarks.md, issue 19).
                temp_opening = self.files.run(_TempZip, final)
                if expected is None:
                    out.requests += 2
                    checksum_body = await self.downloader.get_bytes(self.url(checksum_key))
                    line = parse_checksum(checksum_body, checksum_key)
                    if line.file_name != final.name:
                        log.warning("%s names %r, not %r", checksum_key, line.file_name, final.name)
                    expected = line.sha256
                else:
                    out.requests += 1
                temp, temp_opening = await temp_opening, None
                with temp as (fd, tmp):
                    answer, zip_answer = zip_answer, None
                    resp = await answer
                    n_bytes, digest = await connections.stream_to_fd(resp, zip_url, fd)
                    out.bytes += n_bytes
                    if digest != expected:
                        if retry >= self.max_retries:
                            # Keep the defective body (and its CHECKSUM) for inspection.
                            self._write_checksum(key, checksum_body)
                            dest = layout.quarantine_path(self.data_dir, key)
                            storage.move_local_file(tmp, dest)
                            body_kept = True
                        raise ChecksumMismatch(
                            f"SHA-256 {digest} of the zip does not match the CHECKSUM "
                            f"{expected} ({retry + 1} attempt(s))"
                        )
                    temp.committed = True
                # Not awaited here: the worker sends its next archive's GETs while the
                # commit runs (it cost ~2-4 ms of a 30 ms archive at 20 ms latency).
                out.committing = self.files.run(self._commit, key, temp, checksum_body)
                out.status, out.how, out.sha256 = "verified", "downloaded", digest
                return out
            except http.Unreachable:
                raise  # the host is not there: the job stops (no retries, no other files)
            except http.NotFound as exc:
                what = "CHECKSUM" if exc.url.endswith(CHECKSUM_SUFFIX) else "zip"
                if checksum_body is not None:  # quarantined with the zip's record
                    self._write_checksum(key, checksum_body)
                return self.quarantine(out, f"{what} not found (404) although listed")
            except ChecksumFormatError as exc:
                # Not a checksum at all (not "<64 hex> <name>"): a defect of the object, not
                # of the transfer (truncated bodies are TransientError); retrying cannot help.
                return self.quarantine(out, str(exc))
            except ChecksumMismatch as exc:
                if retry >= self.max_retries:
                    return self.quarantine(out, str(exc), kept_body=body_kept)
                expected = None  # Binance sometimes regenerates the CHECKSUM, not the zip
                reason = str(exc)
            except (http.TransientError, http.HTTPStatusError) as exc:
                if retry >= self.max_retries or isinstance(exc, http.HTTPStatusError):
                    out.reason = str(exc)
                    return out
                reason = str(exc)
            finally:
                if temp_opening is not None:  # the CHECKSUM step failed: no zip to write
                    _abandon_temp(temp_opening)
                if zip_answer is not None:  # the CHECKSUM step failed: drop the zip's answer
                    await _discard(zip_answer)
            log.info("%s: retry %d/%d after %s", key, retry + 1, self.max_retries, reason)
            delay = http.backoff_delay(retry)
            await asyncio.sleep(delay)
            retry += 1
            out.retries += 1
            out.retry_wait_s += delay

    def _write_checksum(self, key: str, checksum_body: bytes) -> None:
        storage.write_bytes(self.local(key + CHECKSUM_SUFFIX), checksum_body)

    def _commit(self, key: str, temp: _TempZip, checksum_body: bytes | None) -> None:
        """A verified zip into place: its CHECKSUM (when fetched), the zip, the marker last."""
        if checksum_body is not None:
            self._write_checksum(key, checksum_body)
        temp.finish(self.verified_marker(key))

    def quarantine(self, out: Outcome, reason: str, kept_body: bool = False) -> Outcome:
        """Move what we have of a defective file out of ``aws_data``; never ``.verified``."""
        key = out.key
        quarantine_archive(self.data_dir, key, reason, discard_local=kept_body)
        log.warning("quarantined %s: %s", key, reason)
        out.status, out.reason = "quarantined", reason
        return out


# Threads that create and rename files for the event loop, a batch of archives per call
# (``_FileBatches``): a batch stuck on a slow disk does not hold up the next ones.
FILE_THREADS = 4


_FILE_THREADS: tuple[int, ThreadPoolExecutor] | None = None  # (pid, pool)


def _file_threads() -> ThreadPoolExecutor:
    """The file threads of this process, kept from one job's run to the next: starting
    them for each symbol blocked the loop ~1-2 ms per thread on a loaded machine. Per
    process id: a pool inherited through a fork has no threads in the child."""
    global _FILE_THREADS
    if _FILE_THREADS is None or _FILE_THREADS[0] != os.getpid():
        _FILE_THREADS = (
            os.getpid(),
            ThreadPoolExecutor(FILE_THREADS, thread_name_prefix="aws-files"),
        )
    return _FILE_THREADS[1]


def _loop_factory():
    """uvloop's event loop where it exists (Linux, macOS): in the download benchmark it cut
    the CPU per file by about a quarter against asyncio's own loop, the fallback."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


class _TempZip:
    """A zip's temporary file (:func:`io.atomic_file`) whose opening and closing run on
    worker threads: ``with temp as (fd, tmp)`` removes it on an error; after a clean exit
    ``finish(marker)`` closes it, renames it into place and writes the ``.verified`` marker
    last (the zip is complete and right)."""

    def __init__(self, final: Path):
        self._cm = storage.atomic_file(final)
        self.fd, self.tmp = self._cm.__enter__()
        self.committed = False

    def __enter__(self):
        return self.fd, self.tmp

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None or not self.committed:
            self._cm.__exit__(exc_type or RuntimeError, exc or RuntimeError("abandoned"), tb)
        return False

    def finish(self, marker: Path) -> None:
        self._cm.__exit__(None, None, None)
        storage.touch(marker)


class _FileBatches:
    """File operations of many archives in one worker-thread call.

    ``run(fn, *args)`` queues a call; the calls queued during one turn of the event loop go
    to a worker thread together and their results come back together: two thread hand-offs
    per batch instead of per file, while a slow ``open`` on a busy journal never stalls the
    loop that carries every transfer.
    """

    def __init__(self, loop, executor):
        self._loop = loop
        self._executor = executor
        self._queued: list = []
        self._running: set = set()  # batches on a thread (concurrent futures)

    def run(self, fn, *args) -> asyncio.Future:
        future = self._loop.create_future()
        if not self._queued:
            self._loop.call_soon(self._flush)
        self._queued.append((fn, args, future))
        return future

    def _flush(self) -> None:
        if not self._queued:
            return  # flushed early by ``drain``
        batch, self._queued = self._queued, []
        done = self._executor.submit(_run_batch, batch)
        self._running.add(done)
        done.add_done_callback(self._running.discard)
        done.add_done_callback(lambda d: self._deliver(batch, d))

    def _deliver(self, batch: list, done) -> None:
        """On the file thread: hand a batch's results to the loop; if the loop is already
        closed (nothing awaits them any more), drop its temporary zips here."""
        results = done.result()
        try:
            self._loop.call_soon_threadsafe(_settle, batch, results)
        except RuntimeError:  # the loop is closed
            for ok, value in results:
                if ok and isinstance(value, _TempZip):
                    value.__exit__(RuntimeError, RuntimeError("abandoned"), None)

    async def drain(self) -> None:
        """Wait until every queued call has run (the threads outlive the job's loop)."""
        self._flush()
        while self._running:
            await asyncio.wait([asyncio.wrap_future(d) for d in list(self._running)])
        await asyncio.sleep(0)  # the batches' results settle (``_settle``)


def _run_batch(batch: list) -> list:
    results = []
    for fn, args, _future in batch:
        try:
            results.append((True, fn(*args)))
        except BaseException as exc:  # handed to the waiting coroutine
            results.append((False, exc))
    return results


def _settle(batch: list, results: list) -> None:
    for (_fn, _args, future), (ok, value) in zip(batch, results, strict=True):
        if future.cancelled():
            if ok and isinstance(value, _TempZip):
                value.__exit__(RuntimeError, RuntimeError("abandoned"), None)
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


def _abandon_temp(opening: asyncio.Future) -> None:
    """Give up a temporary zip being opened: removed when it arrives (``_settle``) or now."""
    if opening.cancel() or opening.cancelled() or opening.exception() is not None:
        return  # cancelled (with the fetch, or now): ``_settle`` removes it
    temp = opening.result()
    temp.__exit__(RuntimeError, RuntimeError("abandoned"), None)


async def _discard(answer: asyncio.Task) -> None:
    """Give up a zip GET whose answer will not be read: cancel it, or close its answer."""
    if not answer.done():
        answer.cancel()
    try:
        resp = await answer
    except (asyncio.CancelledError, Exception):  # its error is moot: the attempt failed
        return
    resp.close()


def run_sync(
    *,
    trade_type: str,
    dataset: str,
    interval: str | None,
    symbol: str,
    details_path,
    data_dir,
    archive_url: str,
    start_date: str | None = None,
    end_date: str | None = None,
    use_monthly_klines: bool = False,
    concurrency: int = 32,
    max_retries: int = 5,
    timeout_s: float = 30.0,
    report_path,
    stats_path,
) -> dict:
    """Download and verify one symbol's archive zips in ``[start_date, end_date]``, with
    ``concurrency`` requests in flight (its own event loop and connection pool)."""
    args = dict(
        trade_type=trade_type, dataset=dataset, interval=interval, symbol=symbol,
        details_path=details_path, data_dir=data_dir, archive_url=archive_url,
        start_date=start_date, end_date=end_date, use_monthly_klines=use_monthly_klines,
        max_retries=max_retries, report_path=report_path, stats_path=stats_path,
    )  # fmt: skip

    async def alone() -> dict:
        async with JobNetwork(concurrency, timeout_s) as net:
            return await sync_symbol(net, **args)

    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(alone())


def run_sync_shard(
    *,
    symbols: list[str],
    shard_report,
    symbol_paths: dict[str, str],
    symbol_values: dict | None = None,
    shard: int | None = None,
    concurrency: int = 32,
    timeout_s: float = 30.0,
    **common,
) -> dict:
    """The ``aws_download_shard`` job: the symbols of the shard at once on one event loop
    (up to ``concurrency / 2`` of them), sharing ``concurrency`` requests in flight and one
    connection pool
    (:class:`JobNetwork`); per symbol everything ``run_sync`` does (its paths, state, report
    and failure isolation: ``shards.run_shard_concurrently``).

    Run one after another, each symbol drained the job's requests in flight at its end and
    opened its own pool's connections: a 45-day symbol is ~90 requests, ~0.15-0.3 s at 20 ms
    latency (docs/benchmarks.md, issue 11, seventh part).
    """

    async def job() -> dict:
        async with JobNetwork(concurrency, timeout_s) as net:

            async def run_sync(**kwargs) -> dict:  # the name in the shard's log and errors
                return await sync_symbol(net, **kwargs)

            # As many symbols at once as fetch slots: a daily update (one archive per
            # symbol) still fills every slot, and memory holds that many listings, not the
            # shard's.
            return await run_shard_concurrently(
                run_sync, symbols=symbols, shard_report=shard_report,
                symbol_paths=symbol_paths, symbol_values=symbol_values, shard=shard,
                at_once=net.slots_total, **common,
            )  # fmt: skip

    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(job())


class JobNetwork:
    """What the symbols of one download job share, on its event loop: one aiohttp session
    whose pool holds ``concurrency`` connections, and ``(concurrency + 1) // 2`` fetch
    slots (each fetch has two requests on the way: a zip and its CHECKSUM), so that the job
    never has more than ``concurrency`` requests in flight however many symbols run."""

    def __init__(self, concurrency: int, timeout_s: float):
        self.slots_total = max(1, (concurrency + 1) // 2)
        self.slots = asyncio.Semaphore(self.slots_total)
        self.timeout_s = timeout_s
        self._downloader: connections.Downloader | None = None

    @property
    def downloader(self) -> connections.Downloader:
        """The session, opened at the first use (a run with nothing to fetch opens none)."""
        if self._downloader is None:
            # Two connections per slot: with fewer, a zip's GET would wait for its CHECKSUM's.
            self._downloader = connections.Downloader(2 * self.slots_total, self.timeout_s)
        return self._downloader

    async def __aenter__(self) -> JobNetwork:
        return self

    async def __aexit__(self, *exc) -> None:
        if self._downloader is not None:
            await self._downloader.close()


async def sync_symbol(
    net: JobNetwork,
    *,
    trade_type: str,
    dataset: str,
    interval: str | None,
    symbol: str,
    details_path,
    data_dir,
    archive_url: str,
    start_date: str | None = None,
    end_date: str | None = None,
    use_monthly_klines: bool = False,
    max_retries: int = 5,
    report_path,
    stats_path,
    listing_error: str | None = None,
) -> dict:
    """``run_sync`` of one symbol on the running loop, with the job's network ``net``.

    File work that may block (reading the listing details and the state, stat calls,
    adopting local files, the fsynced writes of state, stats and report) runs on a worker
    thread, so that it never stalls the transfers of the other symbols of the job.

    ``listing_error``: the symbol's listing failed in this run (the listing index's
    ``failed``); nothing is downloaded and the symbol fails with that error (its files
    and records stay as they were; the next run lists it again).
    """
    started = time.monotonic()
    if trade_type not in layout.TRADE_TYPES:
        raise ValueError(f"unknown trade type {trade_type!r}; expected {layout.TRADE_TYPES}")
    if not layout.is_valid_symbol(symbol):
        raise ValueError(f"invalid symbol name {symbol!r}")
    tag = dataset_tag(dataset, interval)
    spec = datasets.get(tag)
    kind = spec.name
    use_monthly = bool(use_monthly_klines) and spec.monthly_optional
    label = f"{trade_type} {tag} {symbol}"
    if listing_error:
        raise SyncError(f"{label}: not downloaded, its listing failed: {listing_error}")
    start, end = parse_day(start_date), parse_day(end_date)

    try:
        details = await asyncio.to_thread(io.read_json, details_path, None) if details_path else []
    except ValueError as exc:  # torn (a crash with storage.fsync: false), zeroed (a disk fault)
        from crypto_lakehouse.archive.listing import relist_symbol

        await asyncio.to_thread(relist_symbol, details_path, symbol, exc)
        raise SyncError(
            f"{label}: listing details {details_path} are unreadable "
            f"({type(exc).__name__}: {exc}): removed; the next run lists {symbol} again"
        ) from exc
    if details is None:
        raise FileNotFoundError(f"{label}: listing details {details_path} do not exist")
    listing = {e["key"]: e for e in details}
    dirs = symbol_dirs(trade_type, kind, symbol, interval, use_monthly)
    scan_dirs = symbol_dirs(trade_type, kind, symbol, interval, True)  # every period
    zip_keys = zip_keys_in(listing, dirs)
    state_file = layout.state_path(data_dir, STAGE, trade_type, tag, symbol)

    def read_local_state() -> tuple[dict, LocalFiles, dict]:
        for d in dirs:  # partial files of a killed run
            storage.remove_stale_temps(layout.aws_path(data_dir, d))
        state = storage.read_state(state_file)
        local = LocalFiles(data_dir, scan_dirs)
        found = _parse_quarantined(data_dir, state.get("verified", {}), listing, local)
        if _release(data_dir, state, found, listing, label):
            local = LocalFiles(data_dir, scan_dirs)  # the released zips are back
        return state, local, found

    state, local, parse_quarantined = await asyncio.to_thread(read_local_state)
    verified_state: dict = state.get("verified", {})
    quarantined_state: dict = state.get("quarantined", {})
    # Day choices of earlier runs (monthly klines), kept for days outside today's range.
    day_sources: dict = state.get("day_sources", {}) if use_monthly else {}
    # Days a monthly zip (by sha256) holds no row of, learnt from the parse's quality record.
    monthly_gaps: dict = state.get("monthly_gaps", {}) if use_monthly else {}
    if use_monthly and spec.has_interval:
        await asyncio.to_thread(
            _learn_monthly_gaps, monthly_gaps, verified_state, zip_keys,
            layout.quality_path(data_dir, trade_type, interval, symbol, kind), label,
        )  # fmt: skip
    gap_days = {k: {parse_day(d) for d in v["days"]} for k, v in monthly_gaps.items() if v["days"]}

    # Quarantined by the parse job since the last run: not fetched again until re-uploaded.
    for key, reason in parse_quarantined.items():
        log.info("%s: quarantined by aws_parse (%s); not fetched again", key, reason)
        del verified_state[key]
        quarantined_state[key] = {
            "zip": _fingerprint(listing.get(key)),
            "checksum": _fingerprint(listing.get(key + CHECKSUM_SUFFIX)),
            "reason": reason,
        }

    def known_quarantine(key: str) -> bool:
        return _still_quarantined(quarantined_state.get(key), listing, key)

    syncer = _Syncer(
        data_dir=data_dir,
        archive_url=archive_url,
        max_retries=max_retries,
        timeout_s=net.timeout_s,
        listing=listing,
        local_files=local,
    )
    outcomes: dict[str, Outcome] = {}
    ignored: dict[str, str] = {}
    try:
        # Two passes at most: a monthly zip quarantined in pass 1 is replaced by its
        # month's daily zips in pass 2.
        for _ in range(2):
            unusable = {k for k in zip_keys if known_quarantine(k)}
            selection = select(
                zip_keys, start, end, use_monthly=use_monthly, record_days=use_monthly,
                unusable=unusable, monthly_gaps=gap_days,
            )  # fmt: skip
            ignored = selection.ignored
            todo = [f.key for f in selection.files if f.key not in outcomes]
            if not todo:
                break
            await _run_pass(net, syncer, todo, listing, verified_state, quarantined_state,
                            known_quarantine, outcomes, label)  # fmt: skip
            for key in todo:
                o = outcomes[key]
                if o.status == "verified":
                    entry = listing[key]
                    verified_state[key] = {
                        "size": int(entry["size"]),
                        "last_modified": entry.get("last_modified", ""),
                        "etag": entry.get("etag", ""),
                        "sha256": o.sha256,
                    }
                    quarantined_state.pop(key, None)
                elif o.status == "quarantined":
                    verified_state.pop(key, None)
                    quarantined_state[key] = {
                        "zip": _fingerprint(listing.get(key)),
                        "checksum": _fingerprint(listing.get(key + CHECKSUM_SUFFIX)),
                        "reason": o.reason,
                    }
            if not (use_monthly and any(o.status == "quarantined" for o in outcomes.values())):
                break
        # Held locally (any date): the range limits fetching, not the report.
        held, adopted = await asyncio.to_thread(
            _held_files, syncer, scan_dirs, listing, verified_state, outcomes, net.slots_total
        )
        if use_monthly:
            day_sources.update(selection.day_sources)
            day_sources = {d: k for d, k in sorted(day_sources.items()) if k in held}
    finally:
        # A re-published monthly zip (another sha256) is checked again once parsed.
        monthly_gaps = {
            k: v for k, v in sorted(monthly_gaps.items())
            if verified_state.get(k, {}).get("sha256") == v["sha256"]
        }  # fmt: skip
        await asyncio.to_thread(
            storage.write_json,
            state_file,
            {"verified": verified_state, "quarantined": quarantined_state,
             "day_sources": day_sources, "monthly_gaps": monthly_gaps},
        )  # fmt: skip

    for key, reason in ignored.items():
        log.warning("%s: ignored %s: %s", label, key, reason)
    selected = {f.key for f in selection.files}
    verified = {k: o for k, o in outcomes.items() if o.status == "verified" and k in selected}
    # Quarantined now, or earlier and not fetched again (outside the range): still defective.
    quarantined = {k: q["reason"] for k, q in quarantined_state.items() if k not in held}
    quarantined.update({k: o.reason for k, o in outcomes.items() if o.status == "quarantined"})
    failed = {k: o.reason for k, o in outcomes.items() if o.status == "failed"}
    seconds = time.monotonic() - started
    downloaded = [o for o in outcomes.values() if o.how == "downloaded"]
    n_bytes = sum(o.bytes for o in outcomes.values())
    stats = {
        "trade_type": trade_type,
        "dataset": tag,
        "symbol": symbol,
        "files_total": len(selected),
        "files_done": len(verified),
        "files_downloaded": len(downloaded),
        "files_adopted": sum(o.how == "adopted" for o in outcomes.values()) + adopted,
        "files_held": len(held),
        "files_up_to_date": sum(o.how == "up_to_date" for o in outcomes.values()),
        "files_quarantined": len(quarantined),
        "files_failed": len(failed),
        "files_ignored": len(ignored),
        "requests": sum(o.requests for o in outcomes.values()),
        "retries": sum(o.retries for o in outcomes.values()),
        "retry_wait_s": round(sum(o.retry_wait_s for o in outcomes.values()), 3),
        "errors": len(failed),
        "warnings": len(quarantined) + len(ignored),
        "bytes": n_bytes,
        # Bytes of every zip held (verified): the parse's work when it has parsed none of
        # them (shards.ARCHIVE_BYTES: the SLURM runtime of the parse job grows with it).
        "archive_bytes": sum(int(e["size"]) for k, e in held.items() if k.endswith(".zip")),
        "mb": round(n_bytes / 1e6, 3),
        "seconds": round(seconds, 3),
        "files_per_s": round(len(downloaded) / seconds, 2) if seconds else 0.0,
        "mb_per_s": round(n_bytes / 1e6 / seconds, 3) if seconds else 0.0,
    }
    await asyncio.to_thread(io.write_json, stats_path, stats)
    log.info(
        "%s: %d/%d verified (%d downloaded, %d adopted, %d up to date), %d quarantined, "
        "%d failed, %.1f MB in %.1f s (%.1f files/s, %.1f MB/s), %d retries",
        label, stats["files_done"], stats["files_total"], stats["files_downloaded"],
        stats["files_adopted"], stats["files_up_to_date"], len(quarantined), len(failed),
        stats["mb"], seconds, stats["files_per_s"], stats["mb_per_s"], stats["retries"],
    )  # fmt: skip
    if failed:
        lines = "\n".join(f"  {k}: {r}" for k, r in sorted(failed.items()))
        raise SyncError(
            f"{label}: {len(failed)} file(s) still missing after {max_retries} retries "
            f"(transient failures; rerun to resume):\n{lines}"
        )

    report = {
        "trade_type": trade_type,
        "dataset": tag,
        "interval": interval if spec.has_interval else None,
        "symbol": symbol,
        "files": dict(sorted(held.items())),
        "quarantined": dict(sorted(quarantined.items())),
        "ignored": dict(sorted(ignored.items())),
    }
    if use_monthly:
        report["day_sources"] = day_sources
    await asyncio.to_thread(io.write_json, report_path, report)
    return stats


def _learn_monthly_gaps(gaps: dict, verified_state: dict, zip_keys, record_path, label) -> None:
    """Record in ``gaps`` (``{key: {"sha256", "days"}}``) the days each verified monthly zip
    holds no row of, from the parse's quality record (docs/quality.md: a row per day with
    its ``source`` key and ``rows``): a monthly file cut short (binance-public-data #403:
    ALICEUSDT 2024-07 holds 7 days) then gives way to the daily zips of those days
    (``selection.select``), instead of REST. The record is read only while some monthly zip
    (by sha256) is not yet learnt, and a zip is learnt once the record has its days."""
    listed = set(zip_keys)
    todo = {
        k: e["sha256"]
        for k, e in verified_state.items()
        if k in listed and key_period(k).monthly and gaps.get(k, {}).get("sha256") != e["sha256"]
    }
    if not todo:
        return
    try:
        record = storage.read_parquet(record_path, columns=["date", "source", "rows"])
    except FileNotFoundError:
        return  # not parsed yet
    except storage.StorageError:
        raise
    except (OSError, ValueError) as exc:
        log.warning("%s: quality record %s unreadable (%s); monthly gaps not checked",
                    label, record_path, exc)  # fmt: skip
        return
    from crypto_lakehouse.quality import empty_days_of

    source = set(record.column("source").to_pylist())
    days = record.column("date").to_pylist()
    for key, sha in todo.items():
        if key not in source:
            continue  # the parse has not read this zip yet
        # Days before the symbol's first row (its listing month) are no gap: no zip holds them.
        missing = [days[i].isoformat() for i in empty_days_of(record, key)]
        gaps[key] = {"sha256": sha, "days": missing}
        if missing:
            log.warning(
                "%s: %s holds no row of %d day(s) (%s … %s); their daily zips are taken "
                "where listed", label, key, len(missing), missing[0], missing[-1],
            )  # fmt: skip


async def _run_pass(
    net, syncer, keys, listing, verified_state, quarantined_state, known_quarantine, outcomes,
    label,
):  # fmt: skip
    """Classify each key (up to date / quarantined / adopt / fetch) and run the work."""
    work = await asyncio.to_thread(
        _classify, syncer, keys, listing, verified_state, quarantined_state, known_quarantine,
        outcomes,
    )  # fmt: skip

    # Progress over the work only (files already up to date or quarantined take no time);
    # bytes count a file's listed size once it is verified, downloaded or adopted.
    work_bytes = sum(int(listing[key]["size"]) for key, _ in work)
    progress = Progress(f"{STAGE} {label}", len(work), total_bytes=work_bytes, logger=log)

    if work:
        await _download(net, syncer, work, listing, outcomes, progress)
        progress.maybe_log(force=True)


def _classify(
    syncer, keys, listing, verified_state, quarantined_state, known_quarantine, outcomes
) -> list[tuple[str, str]]:
    """The work of a pass, ``[(key, "adopt" | "fetch")]``; records the keys that need none
    (up to date, known quarantine) in ``outcomes``. On a worker thread. The keys of a pass
    were not touched by this run yet: the symbol's file snapshot holds their state."""
    files = syncer.local_files
    work: list[tuple[str, str]] = []
    for key in keys:
        entry = listing[key]
        size = int(entry["size"])
        known = verified_state.get(key)
        marker = syncer.verified_marker(key)
        if known_quarantine(key):
            reason = quarantined_state[key]["reason"]
            outcomes[key] = Outcome(key, "quarantined", reason=reason)
            continue
        if known is not None and _fingerprint(known) == _fingerprint(entry):
            if files.has(key + VERIFIED_SUFFIX) and files.size(key) == size:
                outcomes[key] = Outcome(key, "verified", "up_to_date", sha256=known["sha256"])
                continue
        elif known is not None:
            # Re-published (Q8): the old marker must go before anything else happens.
            log.info("%s changed in the listing; fetching it again", key)
            storage.delete(marker)
            work.append((key, "fetch"))
            continue
        work.append((key, "adopt" if files.size(key) == size else "fetch"))
    return work


async def _download(net: JobNetwork, syncer, work, listing, outcomes, progress) -> None:
    """Run one symbol's work on the job's network: its fetches take the job's slots, so that
    the symbols of a job together keep at most ``concurrency`` requests in flight.

    Adoption hashes local files: on worker threads. An ``Unreachable`` host stops every
    worker of the symbol; files not started are not attempted.
    """
    loop = asyncio.get_running_loop()
    items = iter(work)

    async def record(o: Outcome) -> None:
        if o.committing is not None:
            await o.committing  # a disk error raises here and stops the job
            o.committing = None
        outcomes[o.key] = o
        progress.add(1, int(listing[o.key]["size"]))
        progress.maybe_log()

    async def worker():
        previous = None  # this worker's last outcome, its commit perhaps still running
        for key, action in items:  # one iterator shared by the workers: each item once
            o = None
            async with net.slots:
                if action == "adopt":
                    size = int(listing[key]["size"])
                    o = await loop.run_in_executor(None, syncer.adopt, key, size)
                    if o is None:
                        storage.delete(syncer.verified_marker(key))
                if o is None:
                    o = await syncer.fetch(key)
            if previous is not None:
                await record(previous)
            previous = o
        if previous is not None:
            await record(previous)

    syncer.downloader = net.downloader
    syncer.files = _FileBatches(loop, _file_threads())
    tasks = [asyncio.ensure_future(worker()) for _ in range(min(len(work), net.slots_total))]
    try:
        done, _pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # the first failure (Unreachable, disk errors)
    finally:
        # Also when this symbol is cancelled (Ctrl-C: asyncio.Runner cancels the job's
        # task): asyncio.wait does not cancel the workers it waits for. Left running, they
        # went on fetching (and retrying on the closed session) after the job's network
        # closed, and queued commits after the drain below: their thread batches ended on
        # the closed loop ("RuntimeError: Event loop is closed" in the log) and the exit
        # waited for them. Now they stop here, and the drain waits for the commits already
        # handed to the file threads: each is whole (zip, then its marker) or not started.
        for task in tasks:
            task.cancel()
        try:
            await _settled(tasks)
        finally:
            await _settled([asyncio.ensure_future(syncer.files.drain())])
            syncer.downloader = syncer.files = None


async def _settled(tasks: list) -> None:
    """Wait until ``tasks`` have ended (their errors are the caller's business), even if
    this coroutine is cancelled meanwhile (a second Ctrl-C): cleanup is not cut short, and
    the cancellation is raised once they have ended."""
    pending = [t for t in tasks if not t.done()]
    cancelled = False
    while pending:
        try:
            await asyncio.wait(pending)
        except asyncio.CancelledError:
            cancelled = True
        pending = [t for t in pending if not t.done()]
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved: no "exception was never retrieved" at exit
    if cancelled:
        raise asyncio.CancelledError


def _still_quarantined(recorded: dict | None, listing: dict, key: str) -> bool:
    """A key quarantined with the zip and CHECKSUM the listing still shows: a sync does not
    fetch it again (a re-upload, new size or LastModified, gets a new try)."""
    return (
        recorded is not None
        and recorded["zip"] == _fingerprint(listing.get(key))
        and recorded["checksum"] == _fingerprint(listing.get(key + CHECKSUM_SUFFIX))
    )


def _release(data_dir, state: dict, parse_found: dict, listing: dict, label: str) -> int:
    """Release the zips quarantined for a reason the pipeline no longer takes for a defect
    (``quarantine.released``: candles off the interval grid, before 2026-12-06), whether a
    sync recorded them (``state["quarantined"]``) or the parse moved them since
    (``parse_found``, from ``_parse_quarantined``), while the listing still shows the bytes
    that were quarantined (a re-upload is fetched anyway): the zip and its CHECKSUM go back
    into ``aws_data`` and the records are dropped, so this sync verifies the zip against its
    CHECKSUM (adopted, not downloaded) and the parse reads it again. Returns how many."""
    recorded = state.get("quarantined") or {}
    keys = sorted(
        {k for k, q in recorded.items() if released(q.get("reason"))
         and _still_quarantined(q, listing, k)}
        | {k for k, reason in parse_found.items() if released(reason)}
    )  # fmt: skip
    for key in keys:
        log.info(
            "%s: %s released from quarantine: it was quarantined for candles off the interval "
            "grid, which the parse floors onto it since 2026-12-06",
            label, key,
        )  # fmt: skip
        release_archive(data_dir, key)
        recorded.pop(key, None)
        parse_found.pop(key, None)
    return len(keys)


def keys_not_fetched_again(
    data_dir, trade_type: str, tag: str, symbol: str, listing: dict, scan_dirs: list[str]
) -> dict[str, str]:
    """``key -> reason`` of the symbol's zips its next sync will not fetch although they
    are missing from ``aws_data``: quarantined by a download, or by the parse since, and
    not re-uploaded (as ``run_sync`` decides). What ``crypto-lakehouse plan`` counts as
    quarantined instead of "to download"."""
    state = storage.read_state(layout.state_path(data_dir, STAGE, trade_type, tag, symbol))
    found = {
        key: q.get("reason", "")
        for key, q in (state.get("quarantined") or {}).items()
        if _still_quarantined(q, listing, key)
    }
    local = LocalFiles(data_dir, scan_dirs)
    found.update(_parse_quarantined(data_dir, state.get("verified", {}), listing, local))
    # released by the next sync (``_release``): verified from the quarantined copy
    return {k: r for k, r in found.items() if not released(r)}


def _parse_quarantined(
    data_dir, verified_state: dict, listing: dict, local: LocalFiles
) -> dict[str, str]:
    """Keys verified by an earlier run whose zip the parse job has since moved to quarantine.

    Such a key is missing from ``aws_data`` while its quarantined copy has the size we
    verified; unless the listing shows a re-upload (new size or LastModified), fetching it
    again would bring back the same defective bytes, run after run. Returns key -> reason.
    """
    found: dict[str, str] = {}
    for key, known in verified_state.items():
        entry = listing.get(key)
        if entry is not None and _fingerprint(entry) != _fingerprint(known):
            continue  # re-uploaded: the new bytes deserve a new try
        if local.size(key) is not None:
            continue
        kept = layout.quarantine_path(data_dir, key)
        if _size_of(kept) != int(known["size"]):
            continue
        try:
            reason = storage.read_text(f"{kept}.reason").strip()
        except OSError:
            reason = ""
        found[key] = reason or "quarantined by aws_parse"
    return found


def _held_files(syncer, dirs, listing, verified_state, outcomes, concurrency):
    """Every zip of the symbol's folders that is present and verified, with its report entry.

    This run's outcomes decide for the keys they cover. Other keys count when the zip and
    its marker exist: known ones (state) when the size still matches what was verified,
    unknown ones (a legacy ``aws_data`` outside the range, a key the listing no longer
    shows) after local adoption, which also records them in the state. Returns
    ``(held, number adopted)``.
    """

    def entry(known: dict) -> dict:
        return {k: known[k] for k in ("size", "last_modified", "sha256")}

    held = {k: entry(verified_state[k]) for k, o in outcomes.items() if o.status == "verified"}
    to_adopt: list[tuple[str, int]] = []
    files = syncer.local_files  # the keys not in this run's outcomes are untouched
    for key in sorted((files.verified_zips(dirs) | set(verified_state)) - set(outcomes)):
        try:
            key_period(key)
        except ValueError:
            continue  # not an archive name of this dataset; the parse job would ignore it
        size = files.size(key)
        if size is None or not files.has(key + VERIFIED_SUFFIX):
            continue
        known = verified_state.get(key)
        if known is not None and int(known["size"]) == size:
            held[key] = entry(known)
            continue
        listed = listing.get(key)
        to_adopt.append((key, int(listed["size"]) if listed else size))
    if not to_adopt:
        return held, 0
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        results = list(pool.map(lambda item: syncer.adopt(*item), to_adopt))
    adopted = 0
    for (key, size), o in zip(to_adopt, results, strict=True):
        if o is None:
            log.warning("%s: local zip with .verified cannot be verified; not reported", key)
            continue
        listed = listing.get(key) or {}
        verified_state[key] = {
            "size": size,
            "last_modified": listed.get("last_modified", ""),
            "etag": listed.get("etag", ""),
            "sha256": o.sha256,
        }
        held[key] = entry(verified_state[key])
        adopted += 1
    return held, adopted


def _size_of(path: Path) -> int | None:
    return storage.size(path)


class LocalFiles:
    """The files of a symbol's archive folders with the zips' sizes, listed once per folder
    when its sync starts (``storage.file_sizes``). Asking each archive's and marker's size
    and existence one by one cost ~3 stat calls per archive of the whole history on every
    run (an S3 HEAD each): ~0.13 CPU s per 3-year symbol in a daily update. The snapshot is
    only asked about keys this run has not touched yet; its own writes go to the store."""

    def __init__(self, data_dir, dirs: list[str]):
        self.sizes: dict[str, int] = {}  # zips only: no other file's size is asked
        self.keys: set[str] = set()
        for d in dirs:
            for name, size in storage.file_sizes(layout.aws_path(data_dir, d), ".zip").items():
                self.keys.add(d + name)
                if size is not None:
                    self.sizes[d + name] = size

    def size(self, key: str) -> int | None:
        """Size of a zip, None when there is none."""
        return self.sizes.get(key)

    def has(self, key: str) -> bool:
        return key in self.keys

    def verified_zips(self, dirs: list[str]) -> set[str]:
        """Keys of the zips with a ``.verified`` marker in the given folders."""
        prefixes = tuple(dirs)
        return {
            k for k in self.sizes if k + VERIFIED_SUFFIX in self.keys and k.startswith(prefixes)
        }
