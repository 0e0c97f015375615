"""Tail build of gen_kline: a symbol whose inputs only grew at the end (issue 11).

After every successful build, ``run_gen_kline`` records (``layout.state_path``, stage
``gen_kline_resume``) what it read and wrote: every kline input file with its size,
modification time and first/last candle (and, for the files reaching the newest segment's
first checkpoint, a digest of each UTC day's rows), the report, the size and mtime of every
output file, a digest of the funding events before the newest segment, and *checkpoints* of
the newest segment: at every UTC day start of its last two row groups, how many of the
rows before it are archive and REST candles.

The next build compares the inputs with that record. A file whose size or mtime changed is
read; with day digests, its first day whose rows differ is where it changed (aws_parse
rewrites the current month's partition on every daily update: the change is the new day,
not the 1st of the month), else its first candle. The earliest change over the new,
changed or deleted files is the first minute that may differ; the latest checkpoint
``t_c`` at or before it splits the newest segment into a kept prefix and a tail. The tail is
recomputed from the input rows at or after ``t_c`` plus one look-back candle, the last real
candle before ``t_c`` (read back from the previous output): it is the candle the gap rules
compare the first new candle with and the close the fill carries forward. Funding is joined
again on the whole rewritten row group after checking that the events of the kept rows did
not change. New gaps in the tail become new segments (``SPn_`` names shift as in a full
build). The output file keeps the previous file's untouched row groups byte for byte
(``parquet_append``); the row groups from the one holding ``t_c`` on are decoded, extended
and re-encoded.

Anything the tail cannot reproduce exactly falls back to the full build: other parameters,
an input change before the first checkpoint (checkpoints: every day start in the last two
row groups and in the last ``CHECKPOINT_DAYS`` days), a previous output changed or missing, input
problems or quality failures in the previous report, a funding column appearing, funding
events changed in the kept rows, a gap right at ``t_c`` that would cut filled rows off the
prefix, a quality gate failing in the tail (the full build reports it), another pyarrow.
"""

from __future__ import annotations

import hashlib
import logging
import time as clock
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from crypto_lakehouse import io, layout, storage
from crypto_lakehouse.generate import parquet_append
from crypto_lakehouse.generate.checks import check_output, funding_rows
from crypto_lakehouse.generate.fill import fill_segment
from crypto_lakehouse.generate.funding import (
    FundingEvents,
    count_outside,
    events_in_range,
    join_funding,
)
from crypto_lakehouse.generate.gaps import find_gaps, segment_names, split_ranges
from crypto_lakehouse.generate.merge import (
    SOURCE_ARCHIVE,
    SOURCE_REST,
    TIME,
    merge_store,
    read_kline_files,
)
from crypto_lakehouse.generate.outputs import SUFFIX, iso_ms, remove_stale, scan_symbol
from crypto_lakehouse.generate.vwap import vwap
from crypto_lakehouse.intervals import DAY_MS
from crypto_lakehouse.schema import KLINE_COLUMNS

log = logging.getLogger(__name__)

# Checkpoints cover at least this many days before a file's end (``checkpoints``): a
# day's archive replacing REST's that late is still a tail build (a monthly archive is
# published before mid-month, ~45 days after its first day).
CHECKPOINT_DAYS = 45
RECORD_STAGE = "gen_kline_resume"
RECORD_VERSION = 2


class Fallback(Exception):
    """The tail build cannot reproduce the full build here; the reason is the message."""


def record_path(data_dir, trade_type: str, symbol: str, interval: str) -> Path:
    from crypto_lakehouse import datasets

    dataset = datasets.tag(datasets.KLINES.name, interval)
    return layout.state_path(data_dir, RECORD_STAGE, trade_type, dataset, symbol)


def file_identity(path) -> list | None:
    """The version of a file (``storage.identity``: size and mtime, or size and ETag on
    S3), None when there is none."""
    return storage.identity(path)


def stable_rows(
    data_dir, trade_type, symbol, interval, seg_file: str, read_identity, record: dict | None = None
) -> int:
    """Rows of ``seg_file`` unchanged since the version of identity ``read_identity`` (0:
    unknown), from this stage's record of its last tail build: what a later stage that read
    that version may keep of its own output (resample, features)."""
    if record is None:
        record = storage.read_state(record_path(data_dir, trade_type, symbol, interval))
    prev = (record or {}).get("previous")
    if not prev or prev["file"] != seg_file or [prev["size"], prev["mtime_ns"]] != read_identity:
        return 0
    return int(prev["stable_rows"])


def day_digests(store: dict[str, np.ndarray], lo: int, hi: int) -> dict[str, str]:
    """``UTC day number -> digest`` of the store rows ``[lo, hi)`` (one input file) that fall
    on that day, every kline column, in file order: two versions of a file whose digests of
    a day are equal hold the same rows in the same order on that day, so they give the same
    merge there (the duplicate rule keeps the last row of a minute: order matters)."""
    day = store[TIME][lo:hi] // DAY_MS
    if not len(day):
        return {}
    order = None if bool(np.all(day[1:] >= day[:-1])) else np.argsort(day, kind="stable")
    if order is not None:
        day = day[order]
    starts = np.flatnonzero(np.r_[True, day[1:] != day[:-1]])
    stops = np.r_[starts[1:], len(day)]
    columns = []
    for name in KLINE_COLUMNS:
        col = store[name][lo:hi]
        columns.append(np.ascontiguousarray(col if order is None else col[order]))
    out = {}
    for a, b in zip(starts.tolist(), stops.tolist(), strict=True):  # one pass per day
        h = hashlib.blake2b(digest_size=16)
        for col in columns:
            h.update(col[a:b].tobytes())
        out[str(int(day[a]))] = h.hexdigest()
    return out


def horizon_ms(newest: dict, step_ms: int) -> int | None:
    """The earliest change a tail build can take (the newest segment's first checkpoint):
    input files wholly before it need no day digests (a change there means a full build)."""
    cps = newest["checkpoints"]
    return newest["first_ms"] + cps[0][0] * step_ms if cps else None


def input_entries(
    paths: list[Path],
    spans: dict[Path, tuple[int, int]],
    identities: dict,
    store: dict[str, np.ndarray],
    horizon: int | None,
) -> dict[str, list]:
    """``name -> [size, mtime_ns, first ms, last ms, day digests or None]`` of files read
    into a store; day digests only for files reaching ``horizon`` (see ``horizon_ms``)."""
    time = store[TIME]
    out = {}
    for path in paths:
        lo, hi = spans[path]
        first, last = (int(time[lo:hi].min()), int(time[lo:hi].max())) if hi > lo else (None, None)
        digests = None
        if horizon is not None and last is not None and last >= horizon:
            digests = day_digests(store, lo, hi)
        out[path.name] = [*identities[path], first, last, digests]
    return out


def funding_digest(events: FundingEvents, before_ms: int) -> str:
    """Digest of the funding events before ``before_ms`` (those of the older segments)."""
    stop = int(np.searchsorted(events.time, before_ms, side="left"))
    h = hashlib.sha256(np.ascontiguousarray(events.time[:stop]).tobytes())
    h.update(np.ascontiguousarray(events.rate[:stop]).tobytes())
    return h.hexdigest()


def checkpoints(
    grid0: int,
    step_ms: int,
    n_rows: int,
    pos: np.ndarray,
    source: np.ndarray,
    base_row: int = 0,
    base: tuple[int, int] = (0, 0),
    earlier: list | None = None,
) -> list[list[int]]:
    """``[row, archive rows before it, REST rows before it]`` at every day start of the last
    two row groups (and at the end). ``pos``/``source``: grid row and source of the real
    candles from ``base_row`` on; ``base``: the counts before ``base_row``; ``earlier``:
    checkpoints of rows before ``base_row`` (kept when they are still in those groups).

    Two groups, not one: a row group begins mid-day (2^17 minutes are 91.02 days), so with
    the last group's day starts only, the first days after a file crossed into a new group
    had no checkpoint before the day the archive replaced REST, and the update was a full
    build. A checkpoint in the group before costs one more group re-encoded, rarely.

    And at every day start of the last ``CHECKPOINT_DAYS`` days, when those reach further
    back: two groups of 2^17 rows are 182 days at 1m but 1.5 days at 1s, where an archive
    publishing two or more days behind REST (binance-facts §6) made every update a full
    build of the whole 1s history (a tail from 45 days back re-encodes ~30 groups)."""
    last_group = max(n_rows - 1, 0) // parquet_append.ROW_GROUP_ROWS
    first_row = max(last_group - 1, 0) * parquet_append.ROW_GROUP_ROWS + 1
    first_row = min(first_row, max(n_rows - CHECKPOINT_DAYS * (DAY_MS // step_ms), 0) + 1)
    lo = max(first_row, base_row)
    rows = np.arange(lo, n_rows + 1, dtype=np.int64)
    rows = rows[((grid0 + rows * step_ms) % DAY_MS == 0) | (rows == n_rows)]
    pos_a = pos[source == SOURCE_ARCHIVE]
    pos_r = pos[source == SOURCE_REST]
    n_a = base[0] + np.searchsorted(pos_a, rows, side="left")
    n_r = base[1] + np.searchsorted(pos_r, rows, side="left")
    kept = [c for c in (earlier or []) if first_row <= c[0] < lo]
    return kept + np.column_stack((rows, n_a, n_r)).tolist()


@dataclass
class Job:
    """What ``run_gen_kline`` resolved for one symbol, shared by the full and tail builds."""

    params: dict
    trade_type: str
    symbol: str
    interval: str
    data_dir: Path
    step_ms: int
    archive_paths: list[Path]
    rest_paths: list[Path]
    events: FundingEvents
    funding_col: str | None
    vwap_col: str | None
    vwap_rule: str
    coin_contract: float | None
    split_gaps: bool
    min_days: float
    min_price_chg: float
    schema: pa.Schema
    report_path: Path
    stats_path: Path


def _first_changed_day(old: dict[str, str], new: dict[str, str]) -> int | None:
    """Start (ms) of the first UTC day whose rows differ between two digest maps."""
    days = [int(d) for d in old.keys() | new.keys() if old.get(d) != new.get(d)]
    return min(days) * DAY_MS if days else None


def _changed_inputs(recorded: dict, paths: list[Path], current: dict) -> list[Path]:
    """The files of ``paths`` whose identity (``current``) is not the recorded one."""
    return [p for p in paths if (recorded.get(p.name) or [None, None])[:2] != current[p]]


def _diff_inputs(
    recorded: dict,
    paths: list[Path],
    current: dict,
    kept: dict[Path, dict[str, np.ndarray]],
    keep_from: int | None,
) -> tuple[int | None, dict[str, list]]:
    """Earliest candle time that may differ from the recorded inputs (None: nothing
    differs) and the current entries (``current``: the identities of ``paths``).

    A file whose size or mtime changed is read: when the record holds its day digests
    (aws_parse rewrites the current month's partition on every daily update), the change
    starts at the first day whose rows differ, else at the first candle of either version.
    The rows of a changed file reaching ``keep_from`` (the horizon: only such files can be
    read again for the new tail) go to ``kept``, so that the tail does not read it twice
    (a second GET on S3); older ones are dropped, so memory stays at the tail's size."""
    earliest: int | None = None

    def changed_at(t):
        nonlocal earliest
        if t is not None:
            earliest = t if earliest is None else min(earliest, t)

    entries = {}
    names = set()
    for path in paths:
        names.add(path.name)
        ident = current[path]
        rec = recorded.get(path.name)
        if rec is not None and rec[:2] == ident:
            entries[path.name] = rec
            continue
        spans: dict[Path, tuple[int, int]] = {}
        store, _, problems = read_kline_files([path], spans=spans)
        if problems:
            raise Fallback("input problems")
        entries[path.name] = input_entries([path], spans, {path: ident}, store, horizon=None)[
            path.name
        ]
        last = entries[path.name][3]
        if keep_from is not None and last is not None and last >= keep_from:
            kept[path] = store
        digests = entries[path.name][4] = day_digests(store, *spans[path])
        if rec is not None and rec[4] is not None:
            changed_at(_first_changed_day(rec[4], digests))
            continue
        changed_at(entries[path.name][2])
        if rec is not None:
            changed_at(rec[2])
    for name, rec in recorded.items():
        if name not in names:
            changed_at(rec[2])
    return earliest, entries


def _columns_of(table: pa.Table) -> dict[str, np.ndarray]:
    out = {}
    for name in table.column_names:
        col = table.column(name)
        if pa.types.is_timestamp(col.type):
            col = col.cast(pa.int64())
        out[name] = col.to_numpy()
    return out


def _coverage(source: np.ndarray, base: tuple[int, int], n_rows: int) -> dict[str, int]:
    n_archive = base[0] + int(np.count_nonzero(source == SOURCE_ARCHIVE))
    n_rest = base[1] + int(np.count_nonzero(source == SOURCE_REST))
    return {
        "archive_minutes": n_archive,
        "rest_minutes": n_rest,
        "filled_minutes": n_rows - n_archive - n_rest,
    }


def _funding_gate(events: FundingEvents, first: int, last: int, step_ms: int) -> str:
    """The ``funding_events`` gate of a file of candles ``first`` … ``last`` (as
    ``check_output``)."""
    return str(len(funding_rows(events.time, events.rate, first, last, step_ms)))


def _read_selected(
    sel_a: list[Path], sel_r: list[Path], kept: dict[Path, dict[str, np.ndarray]]
) -> tuple[dict[str, np.ndarray], int]:
    """The rows of the archive files ``sel_a`` then the REST files ``sel_r``, in that order,
    and the number of archive rows; the files in ``kept`` (read by ``_diff_inputs``) are
    not read again."""
    spans: dict[Path, tuple[int, int]] = {}
    to_read = ([p for p in sel_a if p not in kept], [p for p in sel_r if p not in kept])
    read, (n_read_a, _), problems = read_kline_files(*to_read, spans=spans)
    if problems:
        raise Fallback("input problems")
    if len(to_read[0]) == len(sel_a) and len(to_read[1]) == len(sel_r):
        return read, n_read_a

    def rows_of(path: Path) -> dict[str, np.ndarray]:
        return kept[path] if path in kept else {c: read[c][slice(*spans[path])] for c in read}

    parts = [rows_of(p) for p in [*sel_a, *sel_r]]
    n_read_a = sum(len(part[TIME]) for part in parts[: len(sel_a)])
    return {c: np.concatenate([part[c] for part in parts]) for c in KLINE_COLUMNS}, n_read_a


def run_tail(previous: dict, job: Job) -> dict:
    """The tail build; raises Fallback when only the full build is exact."""
    from crypto_lakehouse.generate.kline import segment_metadata, to_table, write_segment

    started = clock.perf_counter()
    if previous.get("version") != RECORD_VERSION:
        raise Fallback("no usable record of the previous build")
    if previous.get("params") != job.params:
        raise Fallback("parameters changed")
    old_report = previous["report"]
    old_segments = old_report.get("segments") or []
    if old_report.get("input_problems") or old_report.get("quality_failures"):
        raise Fallback("the previous build had input problems or quality failures")
    if not old_segments or old_segments[-1]["name"] != job.symbol:
        raise Fallback("no previous newest segment")
    if job.events.problems:
        raise Fallback("funding input problems")
    if old_report.get("funding_column") != (job.funding_col is not None):
        raise Fallback("the funding column appears or disappears")
    data_dir = storage.data_path(job.data_dir)
    out_dir = layout.results_klines_dir(data_dir, job.trade_type, job.interval)
    # Asked at once (on S3 a HEAD each, every symbol's files share the folder); the symbol's
    # files for the stale-file clean-up listed meanwhile, before the writes (a listing of
    # the folder after them waits for their uploads: one more round trip after them).
    current, scanned = storage.concurrently(
        lambda ask: ask(),
        [
            lambda: storage.identities(
                [data_dir / rel for rel in previous["outputs"]], by_listing=False
            ),
            lambda: scan_symbol(out_dir, job.symbol),
        ],
        storage.at_once(data_dir, 2),
    )
    for rel, ident in previous["outputs"].items():
        if current[data_dir / rel] != ident:
            raise Fallback(f"previous output {rel} changed or missing")
    newest = previous["newest"]
    grid0, n_old, step = newest["first_ms"], newest["rows"], job.step_ms
    if previous["funding_before_newest"] != funding_digest(job.events, grid0):
        raise Fallback("funding events of the older segments changed")

    # On S3 one LIST per folder, not a HEAD per file; the changed files are fetched at once.
    current = storage.identities([*job.archive_paths, *job.rest_paths])
    recorded_a, recorded_r = previous["inputs"]["archive"], previous["inputs"]["rest"]
    changed = _changed_inputs(recorded_a, job.archive_paths, current)
    changed += _changed_inputs(recorded_r, job.rest_paths, current)
    kept_inputs: dict[Path, dict[str, np.ndarray]] = {}
    horizon = horizon_ms(newest, step)
    with storage.read_ahead(changed):
        changed_a, entries_a = _diff_inputs(
            recorded_a, job.archive_paths, current, kept_inputs, horizon
        )
        changed_r, entries_r = _diff_inputs(
            recorded_r, job.rest_paths, current, kept_inputs, horizon
        )
    changes = [t for t in (changed_a, changed_r) if t is not None]
    t_change = min(changes) if changes else grid0 + n_old * step
    usable = [c for c in newest["checkpoints"] if grid0 + c[0] * step <= t_change]
    if not usable:
        raise Fallback(f"inputs changed from {iso_ms(t_change)}, before the first checkpoint")
    r_c, base_a, base_r = usable[-1]
    t_c = grid0 + r_c * step
    group = (r_c - 1) // parquet_append.ROW_GROUP_ROWS
    group_start = group * parquet_append.ROW_GROUP_ROWS

    # The kept prefix of the row group being rewritten, and the look-back candle.
    newest_path = data_dir / old_segments[-1]["file"]
    parquet = storage.parquet_file(newest_path)
    if parquet.schema_arrow.remove_metadata() != job.schema:
        raise Fallback("the previous output has another schema")
    kept = _columns_of(parquet.read_row_group(group).slice(0, r_c - group_start))
    traded = np.flatnonzero(kept["volume"] > 0)
    if not len(traded):
        raise Fallback("no real candle in the kept rows of the row group rewritten")
    look_back = int(traded[-1])
    if job.funding_col:
        before = parquet.read_row_groups(list(range(group)), columns=[job.funding_col])
        stored = np.concatenate((before.column(job.funding_col).to_numpy(), kept[job.funding_col]))
        grid = grid0 + np.arange(r_c, dtype=np.int64) * step
        if not np.array_equal(stored, join_funding(grid, step, job.events)):
            raise Fallback("funding events of the kept rows changed")

    # The input rows from t_c on, after the look-back candle.
    def from_tc(paths, entries):
        return [p for p in paths if entries[p.name][3] is not None and entries[p.name][3] >= t_c]

    sel_a, sel_r = from_tc(job.archive_paths, entries_a), from_tc(job.rest_paths, entries_r)
    read, n_read_a = _read_selected(sel_a, sel_r, kept_inputs)
    del kept_inputs
    keep = read[TIME] >= t_c
    n_archive = 1 + int(np.count_nonzero(keep[:n_read_a]))
    store = {
        c: np.concatenate((kept[c][look_back : look_back + 1], read[c][keep]))
        for c in KLINE_COLUMNS
    }
    read_rows = len(read[TIME])
    del read
    candles = merge_store(store, n_archive)
    if job.vwap_col:
        store[job.vwap_col] = vwap(
            store["volume"], store["quote_volume"], store["open"], job.coin_contract
        )
    if job.split_gaps:
        gaps = find_gaps(
            candles.time,
            store["open"],
            store["close"],
            job.min_days,
            job.min_price_chg,
            rows=candles.rows,
        )
        ranges = split_ranges(candles.time, gaps)
    else:
        ranges = [(0, len(candles))]
    look_back_ms = grid0 + (group_start + look_back) * step
    if ranges[0][1] == 1 and look_back_ms < t_c - step:
        raise Fallback("a gap right after filled rows of the kept prefix")

    def filled_range(start, stop):
        rows = slice(start, stop) if candles.rows is None else candles.rows[start:stop]
        return fill_segment(store, step, job.vwap_col, rows=rows, time=candles.time[start:stop])

    # The continuing segment: kept rows of the group holding t_c, then the recomputed rows.
    first = filled_range(*ranges[0])
    skip = (t_c - look_back_ms) // step
    columns = {
        name: np.concatenate((kept[name], first[name][skip:]))
        for name in job.schema.names
        if name != job.funding_col
    }
    del first
    n_new = group_start + len(columns[TIME])
    if job.funding_col:
        columns[job.funding_col] = join_funding(columns[TIME], step, job.events)
    last_ms = int(columns[TIME][-1])
    n_total = len(old_segments) + len(ranges) - 1
    names = segment_names(job.symbol, n_total)

    def gates_for(label, cols, offset, first_ms, stop_ms):
        part = {k: v[offset:] for k, v in cols.items()}
        gates = {"contiguous": "passed", "unique_minutes": "passed", "ohlc": "passed"}
        if job.vwap_col:
            gates["vwap_in_range"] = "passed"
        if len(part[TIME]):
            inside = events_in_range(job.events, int(part[TIME][0]), stop_ms, step)
            gates = check_output(
                label,
                part,
                step,
                vwap_col=job.vwap_col,
                funding_col=job.funding_col,
                funding_time=job.events.time[inside],
                funding_rate=job.events.rate[inside],
            )
        if job.funding_col:
            gates["funding_events"] = _funding_gate(job.events, first_ms, stop_ms, step)
        return gates

    def entry(name, rel, n_rows, first_ms, stop_ms, coverage, n_events):
        return {
            "name": name,
            "file": rel,
            "rows": n_rows,
            "first": iso_ms(first_ms),
            "last": iso_ms(stop_ms),
            **coverage,
            "funding_events": n_events,
        }

    def n_events_in(first_ms, stop_ms):
        if not job.funding_col:
            return 0
        inside = events_in_range(job.events, first_ms, stop_ms, step)
        return inside.stop - inside.start

    writes = []  # (path, table or None, metadata, keep_groups)
    name = names[len(old_segments) - 1]
    path = out_dir / f"{name}{SUFFIX}"
    rel = path.relative_to(data_dir).as_posix()
    coverage = _coverage(candles.source[1 : ranges[0][1]], (base_a, base_r), n_new)
    gates = gates_for(rel, columns, r_c - group_start, grid0, last_ms)
    n_events = n_events_in(grid0, last_ms)
    metadata = segment_metadata(
        job.interval,
        job.vwap_rule,
        job.funding_col is not None,
        n_events,
        coverage,
        n_new,
        gates,
    )
    writes.append((path, to_table(columns, job.schema), metadata, group))
    segments = [*old_segments[:-1], entry(name, rel, n_new, grid0, last_ms, coverage, n_events)]
    grid_ranges = [(_ms(s["first"]), _ms(s["last"])) for s in old_segments[:-1]]
    grid_ranges.append((grid0, last_ms))
    pos = (candles.time[1 : ranges[0][1]] - grid0) // step
    new_newest = {
        "first_ms": grid0,
        "rows": n_new,
        "checkpoints": checkpoints(
            grid0,
            step,
            n_new,
            pos,
            candles.source[1 : ranges[0][1]],
            r_c,
            (base_a, base_r),
            newest["checkpoints"],
        ),
    }
    for (start, stop), name in zip(ranges[1:], names[len(old_segments) :], strict=True):
        seg = filled_range(start, stop)
        seg_first, seg_last = int(seg[TIME][0]), int(seg[TIME][-1])
        if job.funding_col:
            seg[job.funding_col] = join_funding(seg[TIME], step, job.events)
        path = out_dir / f"{name}{SUFFIX}"
        rel = path.relative_to(data_dir).as_posix()
        n_rows = len(seg[TIME])
        coverage = _coverage(candles.source[start:stop], (0, 0), n_rows)
        gates = gates_for(rel, seg, 0, seg_first, seg_last)
        n_events = n_events_in(seg_first, seg_last)
        metadata = segment_metadata(
            job.interval,
            job.vwap_rule,
            job.funding_col is not None,
            n_events,
            coverage,
            n_rows,
            gates,
        )
        writes.append((path, to_table(seg, job.schema), metadata, None))
        segments.append(entry(name, rel, n_rows, seg_first, seg_last, coverage, n_events))
        grid_ranges.append((seg_first, seg_last))
        pos = (candles.time[start:stop] - seg_first) // step
        new_newest = {
            "first_ms": seg_first,
            "rows": n_rows,
            "checkpoints": checkpoints(seg_first, step, n_rows, pos, candles.source[start:stop]),
        }

    # Every check passed: write (the continuing file first: it reads the previous newest).
    old_identity = previous["outputs"][old_segments[-1]["file"]]  # checked above
    for path, table, metadata, keep_groups in writes:
        if keep_groups is None:
            write_segment(path, table, metadata)
        else:
            parquet_append.append_rows(
                path, newest_path, keep_groups, table, metadata=metadata, use_dictionary=False
            )
    removed = sorted(
        p.relative_to(data_dir).as_posix()
        for p in remove_stale(out_dir, job.symbol, set(names), scanned=scanned)
    )
    report = {
        "trade_type": job.trade_type,
        "symbol": job.symbol,
        "interval": job.interval,
        "no_data": False,
        "segments": segments,
        "removed": removed,
        "funding_column": job.funding_col is not None,
        "funding_events_outside_segments": (
            count_outside(job.events, grid_ranges, step) if job.funding_col else 0
        ),
        "input_problems": [],
        "quality_failures": [],
    }
    io.write_json(job.report_path, report)
    recomputed = len(candles) - 1
    stats = {
        "trade_type": job.trade_type,
        "symbol": job.symbol,
        "interval": job.interval,
        "seconds": {"total": round(clock.perf_counter() - started, 4)},
        "rows": {
            "archive": n_read_a,
            "rest": read_rows - n_read_a,
            "merged": recomputed,
            "output": sum(s["rows"] for s in segments),
            "funding_events": len(job.events),
        },
        "files_written": len(writes),
        "files_removed": len(removed),
        "input_problems": 0,
        "quality_failures": [],
        "incremental": {
            "mode": "tail",
            "from": iso_ms(t_c),
            "rows_rewritten": n_new
            - group_start
            + sum(s["rows"] for s in segments[len(old_segments) :]),
            "row_groups_kept": group,
        },
    }
    io.write_json(job.stats_path, stats)
    continuing = segments[len(old_segments) - 1]
    stable = None
    if continuing["name"] == job.symbol:
        stable = {  # "mtime_ns" holds the ETag on S3 (file_identity)
            "file": continuing["file"],
            "size": old_identity[0],
            "mtime_ns": old_identity[1],
            "stable_rows": r_c,
        }
    save_record(
        job,
        inputs={"archive": entries_a, "rest": entries_r},
        report=report,
        newest=new_newest,
        previous=stable,
    )
    return stats


def _ms(iso: str) -> int:
    return int(np.datetime64(iso.rstrip("Z"), "ms").astype(np.int64))


def save_record(
    job: Job, *, inputs: dict, report: dict, newest: dict, previous: dict | None
) -> None:
    data_dir = storage.data_path(job.data_dir)
    files = [s["file"] for s in report["segments"]]
    current = storage.identities([data_dir / rel for rel in files], by_listing=False)
    outputs = {rel: current[data_dir / rel] for rel in files}
    # Day digests of files now wholly before the horizon are of no use any more.
    horizon = horizon_ms(newest, job.step_ms)
    for entries in inputs.values():
        for entry in entries.values():
            if entry[4] is not None and (horizon is None or entry[3] is None or entry[3] < horizon):
                entry[4] = None
    storage.write_json(
        record_path(job.data_dir, job.trade_type, job.symbol, job.interval),
        {
            "version": RECORD_VERSION,
            "params": job.params,
            "inputs": inputs,
            "funding_before_newest": funding_digest(job.events, newest["first_ms"]),
            "report": report,
            "outputs": outputs,
            "newest": newest,
            "previous": previous,
        },
    )
