"""SLURM runtime of the CPU shard jobs that read archives: it grows with the archive bytes
the job has still to work through (docs/cluster.md, "Runtime and memory of a job").

A parse job works through the zips its symbols' downloads hold and it has not parsed yet;
the aggTrades candles job through the aggTrades days parsed since its last run. Both are
known at planning without a request: the shard reports record, per symbol, the bytes of
the zips behind its outputs (``shards.ARCHIVE_BYTES``: the download's held zips, copied
by each later stage for the symbols it completed), and the listing index the bytes of each
symbol's listed zips (before its download ran). Everything here reads small local files
of the run directory; the listing index is cached per file version (``plan.load_index``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from crypto_lakehouse.shards import ARCHIVE_BYTES

BASE_MINUTES = 10  # a job's start, imports, the shard's reports; SLURM's own start
# Archive (zip) megabytes a job works through per minute of its request. Measured on the
# 2-core development machine (2026-12-07, local disk; docs/cluster.md): the tick parse
# alone 33-41 zip MB/s (aggTrades, trades of the emulator, which inflate 3.9-4.6x), about
# 0.75 of that on object storage (docs/benchmarks.md, tick parser), and 9 MB/s wall in a
# whole run with the machine's load at 5-6 (4 s of CPU for 26 s). 300 MB a minute is
# 5 MB/s: room for slower or shared nodes and files that inflate more.
ARCHIVE_MB_PER_MINUTE = 300
# A job whose previous attempt started and did not finish (SLURM ended it past its time
# limit, or it crashed) asks this many times its estimate.
UNFINISHED_FACTOR = 2


def done_bytes(shard_report: str | Path) -> dict[str, int | None]:
    """{symbol: archive bytes} of the completed (``ok``) entries of a stage's shard report;
    None for an entry written before the figure existed (it counts as covering every
    archive: as before, the job asks its fixed part only). ``{}`` when the report is
    missing or unreadable (e.g. removed when its job started, then killed)."""
    try:
        with open(shard_report) as fh:  # seam: a shard report of the run directory
            report = json.load(fh)
    except (OSError, ValueError):
        return {}
    symbols = report.get("symbols") if isinstance(report, dict) else None
    if not isinstance(symbols, dict):
        return {}
    done: dict[str, int | None] = {}
    for name, entry in symbols.items():
        if isinstance(entry, dict) and entry.get("status") == "ok":
            value = entry.get(ARCHIVE_BYTES)
            done[name.rsplit("/", 1)[-1]] = value if isinstance(value, int) else None
    return done


def listed_bytes(index: Mapping, symbols: Iterable[str]) -> dict[str, int]:
    """{symbol: bytes of its listed zips} from a listing index (entries written before the
    index recorded ``bytes`` give none)."""
    entries = index.get("symbols") or {}
    found = {}
    for symbol in symbols:
        value = (entries.get(symbol) or {}).get("bytes")
        if isinstance(value, int):
            found[symbol] = value
    return found


def pending_by_symbol(
    symbols: Iterable[str],
    upstream: Mapping[str, int | None],
    done: Mapping[str, int | None],
    listed: Mapping[str, int],
) -> list[int]:
    """Archive bytes each of the shard's symbols has still to be worked through (in the
    order of ``symbols``): the bytes upstream holds now (its shard report's figure; before
    it ran, or from a version without the figure, the listing's) less those this stage
    covered when it last completed the symbol (``done``; none when it did not complete it:
    everything is to do)."""
    pending = []
    for symbol in symbols:
        if symbol in done and done[symbol] is None:
            pending.append(0)  # completed by a version without the figure: as before
            continue
        now = upstream.get(symbol)
        if now is None:
            now = listed.get(symbol, 0)
        pending.append(max(0, now - (done.get(symbol) or 0)))
    return pending


def pending_bytes(
    symbols: Iterable[str],
    upstream: Mapping[str, int | None],
    done: Mapping[str, int | None],
    listed: Mapping[str, int],
) -> int:
    """Archive bytes the shard's symbols have still to be worked through: the sum of
    ``pending_by_symbol``."""
    return sum(pending_by_symbol(symbols, upstream, done, listed))


# Memory of the kline parses (aws_parse_klines, aws_parse_kline_layout: the same code). Peak
# RSS of the job's function in its own process (benchmarks/bench_parse_memory.py), one spot
# symbol of 1s emulator klines, first build, 2026-12-07 on the 2-core development machine,
# after a large member was parsed as it is inflated (docs/cluster.md): one monthly zip (130
# MB, 2.68 M rows) 447-451 MB, two 451 MB, a month of 31 daily zips 480 MB, one daily zip 150 MB, a
# month of daily 1m zips 137 MB; on an s3:// data dir (SeaweedFS) one monthly zip 510 MB,
# two 631 MB (the next zip is fetched ahead). The peak is a month's partition (at most a
# month of 1s) and what is read ahead, whatever the number of months or zips: before,
# 693 / 949 / 652 MB locally and 725 / 1,193 MB on S3 for the same files, and up to
# 2,058 MB on S3 before the read-ahead was bounded. Asked: this per symbol worked on at once
# (about 1.5 times the S3 peak, twice the local one); before, 1000 + 0.5 per MB of zips
# still to parse, at least 2000 (+ 1000 per further symbol at once); the kline-layout parse
# asked 2000 for a measured 152-161 MB.
PARSE_KLINES_MEM_PER_SYMBOL_MB = 1000


def parse_klines_mem_mb(at_once: int = 1, factor: int = 1) -> int:
    """A kline parse job's ``mem_mb``: ``PARSE_KLINES_MEM_PER_SYMBOL_MB`` for each symbol it
    works on at once (``storage.symbols_at_once``, at most its symbols), times ``factor`` (a
    retry: the previous attempt may have been ended for its memory). Not the zip bytes it
    has to parse: its peak does not grow with them (a month at a time, a member block by
    block)."""
    return _mem_request(PARSE_KLINES_MEM_PER_SYMBOL_MB * max(1, at_once), 0, factor)


def _mem_request(need_mb: float, floor_mb: float, factor: int) -> int:
    """A job's ``mem_mb``: its need, at least ``floor_mb`` (what it asked before), times
    the retry ``factor``."""
    return int(max(1, factor) * math.ceil(max(floor_mb, need_mb)))


def unfinished_attempt(log_path: str | Path, shard_report: str | Path) -> bool:
    """Whether the job's previous attempt started and did not finish: Snakemake removes a
    job's log and outputs before it starts, the job writes its log, and a job that ends
    (its symbols done or failed) writes its shard report. A log without the report: SLURM
    ended it (time limit, memory, scancel) or it crashed."""
    log_written = os.path.exists(log_path)  # seam: run directory
    return log_written and not os.path.exists(shard_report)  # seam: run directory


def retry_factor(attempt: int, unfinished: bool) -> int:
    """How many times its estimate a shard job asks: Snakemake's ``attempt`` (``--retries``),
    at least ``UNFINISHED_FACTOR`` when its previous attempt started and did not finish. The
    larger of the two, never their product, and always times the estimate, never times a
    previous request: a job ended again and again asks twice its estimate each time."""
    return max(1, attempt, UNFINISHED_FACTOR if unfinished else 1)


def runtime_minutes(
    n_symbols: int,
    minutes_per_symbol: float,
    archive_bytes: int = 0,
    *,
    mb_per_minute: float = ARCHIVE_MB_PER_MINUTE,
    factor: int = 1,
    cap: int | None = None,
) -> int:
    """The job's SLURM runtime in minutes: ``BASE_MINUTES`` + ``minutes_per_symbol`` per
    symbol + one minute per ``mb_per_minute`` MB of archives to work through, times
    ``factor`` (a retry: Snakemake's attempt, or ``UNFINISHED_FACTOR``), at most ``cap``
    (config ``cluster.max_runtime_minutes``: the partition's MaxTime; None: no cap). A
    request above the partition's MaxTime is refused by sbatch; a clamped one runs, and
    SLURM may end it at the cap (docs/cluster.md: give the shard fewer symbols)."""
    work = math.ceil(archive_bytes / 1e6 / mb_per_minute) if archive_bytes > 0 else 0
    minutes = int(max(1, factor) * math.ceil(BASE_MINUTES + minutes_per_symbol * n_symbols + work))
    return capped(minutes, cap)


def capped(minutes: int, cap: int | None) -> int:
    """``minutes`` at most ``cap`` (config ``cluster.max_runtime_minutes``; None or 0: no
    cap, and a cap is at least a minute)."""
    return min(minutes, max(1, cap)) if cap else minutes


class RuntimeClamps:
    """The jobs of one run whose runtime request ``cluster.max_runtime_minutes`` clamped,
    for one warning line at the end of the run (``warning``), not one per job: a job SLURM
    then ends at the cap would otherwise not say that it asked for more. A job evaluated
    again (a retry asks more) keeps its largest request."""

    def __init__(self) -> None:
        self.asked: dict[str, int] = {}  # job -> minutes it asked before the cap
        self.cap: int | None = None

    def limit(self, job: str, minutes: int, cap: int | None) -> int:
        """``minutes`` at most ``cap`` (None: no cap), the job recorded when clamped."""
        limited = capped(minutes, cap)
        if limited < minutes:
            self.cap = limited
            self.asked[job] = max(minutes, self.asked.get(job, 0))
        return limited

    def warning(self, shown: int = 10) -> str | None:
        """One line naming the clamped jobs (the largest requests first, at most ``shown``)
        and the cap; None when no job was clamped."""
        if not self.asked:
            return None
        jobs = sorted(self.asked.items(), key=lambda item: (-item[1], item[0]))
        named = ", ".join(f"{job} (asked {minutes} min)" for job, minutes in jobs[:shown])
        more = f" and {len(jobs) - shown} more" if len(jobs) > shown else ""
        n = len(jobs)
        return (
            f"warning: {n} job{'s' if n > 1 else ''} asked for more runtime than config "
            f"cluster.max_runtime_minutes ({self.cap} min) and got {self.cap}: {named}{more}; "
            "on SLURM a job whose work does not fit is ended at that limit: give its symbols "
            "more shards or raise the key to a partition's longer MaxTime (docs/cluster.md)"
        )


# The candle stages (gen_kline, resample, features) read a symbol's parsed candles, which
# hold what its kline zips held: their work follows those zips' bytes (``archive_bytes`` of
# the parse's shard report, copied by each candle stage), ~40 bytes of zip per candle row
# whatever the interval (emulator 1m day 59 KB / 1,440 rows, 1s day 3.3 MB / 86,400 rows).
# Measured 2026-12-07 on the 2-core development machine, one core, 1m series of 0.53 M and
# 6.3 M rows (benchmarks/bench_gen_kline.py, bench_resample.py, bench_features.py --years 1
# and 12): gen_kline 1.0 s / 6.5 s, resample 0.6 s / 4.1 s, features 0.9 s / 8.0 s, i.e.
# 31-60 zip MB/s; 300 zip MB a
# minute (5 MB/s) leaves room for shared nodes, object storage and many resample targets.
CANDLE_MB_PER_MINUTE = 300
CANDLE_MINUTES_PER_SYMBOL = 0.25  # a symbol's reads of its records, checks and writes
# Memory: a symbol whose history is built whole (no tail build) is held in memory. Peak RSS
# 270-280 MB at 0.53 M rows and 1,311-1,463 MB at 6.3 M rows (the runs above): 180-206 bytes
# a row over ~180 MB, i.e. 4.5-5.2 MB of RSS per MB of kline zips. A whole workflow run of
# 120 days of 1s candles (504 MB of emulator zips, 10.4 M rows; two resample targets):
# gen_kline 1,831 MB, resample 1,028 MB, features 3,034 MB, i.e. up to 6.0 MB per MB for
# features (it holds the base and the resampled candles with their indicator columns).
# Asked: 500 MB + 6 per MB of zips (gen_kline, resample), + 9 per MB (features).
# A tail build (the stage completed the symbol last time) reads the new days, except the
# features' (their indicators run over the whole series, docs/features.md): its next daily
# update in the same run peaked at 148 MB (gen_kline) and 1,019 MB (features: 1.7 MB per MB
# over ~180 MB); asked for features 3 per MB of the symbol's zips.
CANDLE_MEM_BASE_MB = 500
CANDLE_MEM_PER_ZIP_MB = {"gen_kline": 6, "resample": 6, "features": 9}
CANDLE_TAIL_MEM_PER_ZIP_MB = {"gen_kline": 0, "resample": 0, "features": 3}
# What every candle job asked before (a tail build, small symbols), and per further symbol
# it works on at the same time (object storage: ``storage.symbols_at_once``).
CANDLE_MEM_FLOOR_MB = 2000
CANDLE_MEM_FLOOR_PER_SYMBOL_MB = 1000


def history_bytes(
    symbols: Iterable[str],
    upstream: Mapping[str, int | None],
    done: Mapping[str, int | None],
    listed: Mapping[str, int],
) -> tuple[list[int], list[int]]:
    """The archive bytes behind each symbol's whole history (the upstream report's figure,
    else the listing's, else what the stage last covered), split into the symbols the stage
    builds whole (it did not complete them last time: no tail build applies) and those it
    completed (a tail build)."""
    full, tail = [], []
    for symbol in symbols:
        now = upstream.get(symbol)
        if now is None:
            now = listed.get(symbol, done.get(symbol) or 0)
        (tail if symbol in done else full).append(now)
    return full, tail


def candle_mem_mb(
    stage: str,
    full_bytes: Iterable[int],
    tail_bytes: Iterable[int] = (),
    at_once: int = 1,
    factor: int = 1,
) -> int:
    """A candle job's ``mem_mb``: ``CANDLE_MEM_BASE_MB`` + per MB of zips of the ``at_once``
    symbols needing most (in memory together), the stage's ``CANDLE_MEM_PER_ZIP_MB`` for a
    symbol built whole, ``CANDLE_TAIL_MEM_PER_ZIP_MB`` for a tail build; at least what it
    asked before (``CANDLE_MEM_FLOOR_MB`` + ``CANDLE_MEM_FLOOR_PER_SYMBOL_MB`` per further
    symbol at once), times ``factor`` (a retry: the previous attempt may have been ended for
    its memory)."""
    at_once = max(1, at_once)
    needs = [CANDLE_MEM_PER_ZIP_MB[stage] * max(0, b) / 1e6 for b in full_bytes]
    needs += [CANDLE_TAIL_MEM_PER_ZIP_MB[stage] * max(0, b) / 1e6 for b in tail_bytes]
    need = CANDLE_MEM_BASE_MB + sum(sorted(needs, reverse=True)[:at_once])
    floor = CANDLE_MEM_FLOOR_MB + CANDLE_MEM_FLOOR_PER_SYMBOL_MB * (at_once - 1)
    return _mem_request(need, floor, factor)
