"""aws_parse for klines: verified daily/monthly archives to monthly Parquet partitions.

Output: ``parsed_data/{T}/klines/{SYM}/{I}/{YYYYMM}.pqt`` (legacy §5.1, schema §10.1),
plus the quality record (docs/quality.md), a deterministic report and run stats.

Incremental model: every UTC day of a month is owned by one archive (a daily archive beats
a monthly one for its day, unless the download report's ``day_sources`` says otherwise).
The state remembers which archives (by sha256) built the partitions. A month is rebuilt only
when the archives of that month changed; inside it, only the days whose owner or owner's
content changed are re-read, the other days keep their rows from the existing partition.
So a re-published archive replaces exactly the rows of its day or month (legacy Q8 fixed),
a key that left the report takes its rows with it, and a daily update reads only new files.

Rows no tracked archive ever owned are never dropped: a partition on disk that no archive
of the state or the report maps to (a legacy BHDS ``parsed_data`` used in place, a month
whose archives lie outside the download range) is left untouched and reported under
``untracked_partitions``; when a month is rebuilt, existing rows of days that no archive
owns now and none owned before are kept. Only the days of a key that left the report or
was quarantined lose their rows. A foreign partition that cannot be read is not
overwritten: its month's archives wait (not parsed) until it is moved away.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from crypto_lakehouse import datasets, io, layout, quality, storage
from crypto_lakehouse.intervals import DAY_MS, interval_ms
from crypto_lakehouse.parse import (
    Timer,
    load_download_report,
    own_quarantine,
    reported_quarantine,
    select_archives,
    state_file,
    throughput_stats,
)
from crypto_lakehouse.parse.csv_reader import (
    DEFAULT_INFLATE_LIMIT,
    ArchiveDefect,
    CsvSpec,
    InflateLimit,
    first_defect,
    has_header,
    normalise_csv_bytes,
    open_zip_member,
    read_csv_bytes,
    read_csv_stream,
    read_zip_member,
)
from crypto_lakehouse.parse.validate import (
    MICROSECOND_THRESHOLD,
    Period,
    archive_period,
    check_finite,
    check_times,
    format_ms,
    grid_offset,
    identical_copies,
)
from crypto_lakehouse.progress import Progress
from crypto_lakehouse.quarantine import quarantine_archive
from crypto_lakehouse.schema import KLINE_COLUMNS, KLINE_SCHEMA, KLINE_SOURCE_FIELDS, TIME_TYPE

log = logging.getLogger(__name__)

_INT_COLUMNS = ("candle_begin_time", "trade_num")
KLINE_CSV = CsvSpec(
    names=KLINE_SOURCE_FIELDS,
    types={c: pa.int64() if c in _INT_COLUMNS else pa.float64() for c in KLINE_COLUMNS},
    header_prefix=b"open_time",
)
_PARTITION_RE = re.compile(r"^\d{6}$")
# Plain encoding like the legacy polars files (prices and volumes hardly repeat, so
# dictionary pages only cost time); min/max statistics on the time column, which is what
# readers filter on, and not on the nine value columns (a third of the write time).
PARTITION_WRITE_OPTIONS = {"use_dictionary": False, "write_statistics": ["candle_begin_time"]}


def _checked(
    table: pa.Table, header_lines: int, key: str, period: Period, step: int
) -> tuple[pa.Table, int]:
    """Run the structural checks on one archive's rows; returns them with ms UTC times and
    the number of rows dropped as identical copies of an earlier row (docs/quality.md)."""
    raw = table.column("candle_begin_time").to_numpy()
    copies = identical_copies(raw, table)
    ms, _ = first_defect(
        lambda: check_times(raw, period, step, header_lines, key, copies=copies),
        lambda: check_finite(table, header_lines, key),
    )
    dropped = 0 if copies is None else int(copies.sum())
    if dropped:
        first = int(np.argmax(copies))
        log.warning(
            "%s: %d row(s) repeat an earlier row in every field, dropped (first: line %d, %s)",
            key, dropped, first + 1 + header_lines, format_ms(int(ms[first])),
        )  # fmt: skip
        keep = ~copies
        table, raw, ms = table.filter(pa.array(keep)), raw[keep], ms[keep]
    factor = 1000 if int(raw.max()) >= MICROSECOND_THRESHOLD else 1
    floored = np.flatnonzero(raw // factor != ms)
    if floored.size:
        # Real rows (Binance's spot outage of 2018-02-08: check_times), not a defect.
        log.warning(
            "%s: %d candle(s) open off the %d s interval grid, floored onto it (first: line "
            "%d, %s)", key, floored.size, step // 1000, floored[0] + 1 + header_lines,
            format_ms(int(raw[floored[0]] // factor)),
        )  # fmt: skip
    table = table.set_column(
        0, pa.field("candle_begin_time", TIME_TYPE), pa.array(ms).view(TIME_TYPE)
    )
    if not bool(np.all(ms[1:] > ms[:-1])):
        table = table.sort_by("candle_begin_time")  # rows out of order, none repeated
    return table, dropped


def read_kline_archive(
    path: str | Path,
    key: str,
    period: Period,
    interval: str,
    timer: Timer | None = None,
    limit: InflateLimit = DEFAULT_INFLATE_LIMIT,
) -> tuple[pa.Table, int]:
    """One archive as a table in the legacy schema (ms UTC); returns (table, CSV bytes).

    Raises ArchiveDefect naming ``key`` and the first bad line.
    """
    timer = timer or Timer()
    with timer.step("read"):
        data = read_zip_member(path, key, limit)
        table, header_lines = read_csv_bytes(data, KLINE_CSV, key)
    with timer.step("check"):
        table, _ = _checked(table, header_lines, key, period, interval_ms(interval))
    return table, len(data)


@dataclass
class _Member:
    key: str
    period: Period
    data: bytes | bytearray  # the CSV member, trailing blank lines trimmed, ending in \n
    header_lines: int
    rows: int

    @property
    def body(self) -> memoryview:
        start = self.data.index(b"\n") + 1 if self.header_lines else 0
        return memoryview(self.data)[start:]


# CSV bytes read with one pyarrow call: a month of daily 1m files (~3 MB) is one call, a
# month of daily 1s files (~400 MB of CSV) about seven, so the CSV held at once stays near
# this size however large the month (before 2026-12-07 a month's CSV was held twice: the
# files' bytes and their join). A member that declares more than this (a monthly 1s zip:
# ~414 MB) is not inflated whole: it is parsed as it is inflated, CSV_BLOCK_BYTES at a
# time (before, its whole CSV and its rows were held together: ~700 MB at the peak; blocks
# of 4 / 8 / 16 MB peaked at 448 / 460 / 516 MB, in the same CPU time).
CSV_BATCH_BYTES = 64 * 1024 * 1024
CSV_BLOCK_BYTES = 4 * 1024 * 1024
# Chunks at least this long on average are written as they are (``_concat_by_time``).
LARGE_CHUNK_ROWS = 4096


def read_kline_archives(
    items: list[tuple[str, Path, Period]],
    interval: str,
    timer: Timer | None = None,
    limit: InflateLimit = DEFAULT_INFLATE_LIMIT,
    copies: dict[str, int] | None = None,
) -> tuple[dict[str, pa.Table], dict[str, str], dict[str, int]]:
    """Several archives (one month's) read with few CSV calls; same result as one by one.

    Returns (tables by key, defect messages by key, CSV bytes by key); ``copies``, if
    given, receives the rows dropped as identical copies by key (files with any). The files are read
    in order and parsed in groups of up to ``CSV_BATCH_BYTES`` of CSV, each group with ONE
    pyarrow call over its joined rows (a call per small daily file costs about a third
    more), its checks run once over the group's columns; a group's bytes are released
    before the next group is read. A member larger than a group is parsed as it is
    inflated (``read_csv_stream``, CSV_BLOCK_BYTES at a time) and checked alone. Whenever
    something is wrong the affected files go through ``read_kline_archive``'s per-file
    path, which names the file and line.
    """
    timer = timer or Timer()
    step = interval_ms(interval)
    tables: dict[str, pa.Table] = {}
    defects: dict[str, str] = {}
    sizes: dict[str, int] = {}
    members: list[_Member] = []
    held = 0
    for key, path, period in items:
        with timer.step("read"):
            try:
                data, streamed = _read_member(path, key, limit)
            except ArchiveDefect as exc:
                defects[key] = str(exc)
                continue
        if streamed is not None:
            table, header_lines, sizes[key] = streamed
            del streamed
            try:
                with timer.step("check"):
                    tables[key], n = _checked(table, header_lines, key, period, step)
                if n and copies is not None:
                    copies[key] = n
            except ArchiveDefect as exc:
                defects[key] = str(exc)
            del table
            continue
        with timer.step("read"):
            sizes[key] = len(data)
            header_lines = 1 if has_header(data, KLINE_CSV) else 0
            rows = data.count(b"\n") - header_lines
        if members and held + len(data) > CSV_BATCH_BYTES:
            _read_group(members, step, timer, tables, defects, copies)
            members, held = [], 0
        members.append(_Member(key, period, data, header_lines, rows))
        held += len(data)
        del data
    if members:
        _read_group(members, step, timer, tables, defects, copies)
    return tables, defects, sizes


def _read_member(
    path: Path, key: str, limit: InflateLimit
) -> tuple[bytes | bytearray | None, tuple[pa.Table, int, int] | None]:
    """One archive's member: (its CSV bytes, None), or for a member larger than
    CSV_BATCH_BYTES (None, ``read_csv_stream``'s table, header lines and CSV bytes).

    A large member the streamed read leaves alone (a row pyarrow refuses, over the cap, no
    data row) is read whole as before, so its verdict and message are the whole read's."""
    with open_zip_member(path, key, limit) as member:
        if member.declared_size <= CSV_BATCH_BYTES:
            return normalise_csv_bytes(member.read_all()), None
        streamed = read_csv_stream(member, KLINE_CSV, CSV_BLOCK_BYTES)
    if streamed is not None:
        return None, streamed
    return normalise_csv_bytes(read_zip_member(path, key, limit)), None


def _read_group(
    members: list[_Member],
    step: int,
    timer: Timer,
    tables: dict[str, pa.Table],
    defects: dict[str, str],
    copies: dict[str, int] | None = None,
) -> None:
    """Parse and check one group of read_kline_archives into ``tables`` / ``defects``."""
    copies = {} if copies is None else copies
    batch = None
    with timer.step("read"):
        if all(m.rows > 0 for m in members):
            # One file (a monthly zip, a large day) is read as it is: no joined copy.
            joined = members[0].data if len(members) == 1 else b"".join(m.body for m in members)
            try:
                batch = read_csv_bytes(joined, KLINE_CSV, "batch")[0]
            except ArchiveDefect:
                batch = None  # some file is bad: the per-file path below finds which
            del joined
            if batch is not None and batch.num_rows != sum(m.rows for m in members):
                batch = None
    if batch is None:
        for m in members:
            try:
                with timer.step("read"):
                    table, header_lines = read_csv_bytes(m.data, KLINE_CSV, m.key)
                with timer.step("check"):
                    tables[m.key], n = _checked(table, header_lines, m.key, m.period, step)
                if n:
                    copies[m.key] = n
            except ArchiveDefect as exc:
                defects[m.key] = str(exc)
        return
    for m in members:  # parsed: the CSV bytes go before the checks' arrays are made
        m.data = b""

    with timer.step("check"):
        counts = np.array([m.rows for m in members], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
        raw = batch.column("candle_begin_time").to_numpy()
        factor = np.repeat(
            np.where(np.maximum.reduceat(raw, offsets) >= MICROSECOND_THRESHOLD, 1000, 1), counts
        )
        ms = raw // factor
        start = np.repeat([m.period.start_ms for m in members], counts)
        end = np.repeat([m.period.end_ms for m in members], counts)
        bad = (ms < start) | (ms >= end) | (raw % factor != 0) | (grid_offset(ms, step) != 0)
        for column in batch.columns[1:]:
            if pa.types.is_floating(column.type):
                bad |= ~np.isfinite(column.to_numpy())
        ascending = np.ones(ms.size, dtype=bool)
        ascending[1:] = ms[1:] > ms[:-1]
        ascending[offsets] = True  # a file may start below the previous file's end
        file_of_row = np.repeat(np.arange(len(members)), counts)
        suspects = set(np.unique(file_of_row[bad | ~ascending]).tolist())
        batch = batch.set_column(
            0, pa.field("candle_begin_time", TIME_TYPE), pa.array(ms).view(TIME_TYPE)
        )
        for i, m in enumerate(members):
            rows = batch.slice(int(offsets[i]), int(counts[i]))
            if i not in suspects:
                tables[m.key] = rows
                continue
            # Exact verdict and message from the per-file checks, on the original values.
            original = rows.set_column(
                0, "candle_begin_time", pa.array(raw[offsets[i] :][: counts[i]])
            )
            try:
                tables[m.key], n = _checked(original, m.header_lines, m.key, m.period, step)
                if n:
                    copies[m.key] = n
            except ArchiveDefect as exc:
                defects[m.key] = str(exc)


# ---------------------------------------------------------------- day ownership
def day_owners(periods: dict[str, Period], day_sources: dict[int, str]) -> dict[int, str]:
    """Day number -> key of the archive whose rows that day takes."""
    owners: dict[int, str] = {}
    # Monthly first so that daily archives override them day by day.
    for key, period in sorted(periods.items(), key=lambda kv: (not kv[1].is_month, kv[0])):
        for d in period.day_numbers():
            owners[d] = key
    for d, key in day_sources.items():
        if key in periods and d in owners:
            owners[d] = key
    return owners


def _day_sources_by_month(raw: dict | None) -> dict[str, dict[int, str]]:
    """``{"YYYY-MM-DD": key}`` from the download report, grouped by partition month."""
    out: dict[str, dict[int, str]] = defaultdict(dict)
    for day, key in (raw or {}).items():
        try:
            y, m, d = (int(x) for x in day.split("-"))
        except (ValueError, AttributeError):
            continue
        p = archive_period(f"x-{y:04d}-{m:02d}-{d:02d}.zip", "x-")
        if p and isinstance(key, str):
            out[p.month][p.start_ms // DAY_MS] = key
    return out


# ---------------------------------------------------------------- partitions
def _load_partition(
    path: Path, listed: bool | None = None, listed_size: int | None = None
) -> tuple[pa.Table | None, str | None]:
    """(table, None), (None, None) when absent, or (None, why it cannot be used).

    ``listed``: whether the job's listing of the folder holds the partition (then its
    existence is not asked again: on S3 that was a HEAD per month, one after the other);
    None: asked here. ``listed_size``: its size in that listing (on S3 the read then sends
    one GET and no HEAD: ``storage.read_parquet``)."""
    if listed is False or (listed is None and not storage.exists(path)):
        return None, None
    try:
        table = storage.read_parquet(path, listed_size=listed_size)
    except FileNotFoundError:
        return None, None  # removed since the listing
    except (OSError, pa.ArrowException) as exc:
        return None, f"unreadable ({exc})"
    if table.schema.remove_metadata() != KLINE_SCHEMA:
        return None, "not in the legacy kline schema"
    ms = table.column("candle_begin_time").cast(pa.int64()).to_numpy()
    if not bool(np.all(ms[1:] >= ms[:-1])):
        table = table.sort_by("candle_begin_time")  # a foreign file need not be sorted
    return table, None


def _read_partition(path: Path) -> pa.Table | None:
    """The existing partition, or None when absent or not usable (then rebuilt)."""
    table, problem = _load_partition(path)
    if problem:
        log.warning("partition %s is %s; rebuilding it", path, problem)
    return table


def _day_numbers(table: pa.Table) -> np.ndarray:
    return table.column("candle_begin_time").cast(pa.int64()).to_numpy() // DAY_MS


def _rows_of_days(table: pa.Table, days: set[int]) -> pa.Table:
    if not days:
        return table.slice(0, 0)
    return table.filter(pa.array(np.isin(_day_numbers(table), sorted(days))))


def _kept_rows(table: pa.Table, unchanged: set[int], tracked: set[int]) -> pa.Table:
    """Rows of days whose owner did not change, and of days no archive owns or owned."""
    day = _day_numbers(table)
    keep = np.isin(day, sorted(unchanged)) | ~np.isin(day, sorted(tracked))
    return table if bool(keep.all()) else table.filter(pa.array(keep))


def _concat_by_time(parts: list[pa.Table]) -> pa.Table:
    """Concatenate time-sorted parts into one sorted, single-chunk table.

    Parts cover disjoint days, so when their [first, last] ranges do not interleave a
    concatenation in order of first time is already sorted: no row-level sort needed.
    """
    parts = [p for p in parts if p.num_rows]
    if not parts:
        return KLINE_SCHEMA.empty_table()
    bounds = []
    for p in parts:
        ts = p.column("candle_begin_time")
        bounds.append((ts[0].value, ts[-1].value))
    order = sorted(range(len(parts)), key=lambda i: bounds[i][0])
    table = pa.concat_tables([parts[i] for i in order])
    if any(bounds[a][1] >= bounds[b][0] for a, b in zip(order, order[1:], strict=False)):
        table = table.sort_by("candle_begin_time")
    # One chunk per daily archive (1,440 rows of 1m) makes the Parquet writer 2-3x slower:
    # combine first. Chunks of a streamed member's blocks (~27,000 rows) or of pyarrow's
    # own 1 MB blocks (~6,700 rows) are written as fast as one chunk (a month of 1s: 0.78 s
    # either way), and the file is byte for byte the same (tests/unit/test_parse_streamed.py):
    # combined, a month of 1s was held twice (+200 MB).
    if table.num_rows >= LARGE_CHUNK_ROWS * max(c.num_chunks for c in table.columns):
        return table
    return table.combine_chunks()


def _partition_summary(table: pa.Table) -> dict:
    ts = table.column("candle_begin_time").cast(pa.int64())
    return {
        "rows": table.num_rows,
        "first": format_ms(ts[0].as_py()),
        "last": format_ms(ts[-1].as_py()),
    }


class ForeignPartitionUnreadable(Exception):
    """A partition the pipeline did not write cannot be read: it must not be overwritten."""


class _MonthJob:
    """Rebuilds one monthly partition; keeps at most one month of one symbol in memory."""

    def __init__(self, run: _KlineRun, month: str, usable: dict[str, str], old: dict[str, str]):
        self.run = run
        self.month = month
        self.usable = dict(usable)  # key -> sha256 of this month's archives
        self.old = old  # key -> sha256 that built the existing partition
        self.path = run.part_dir / f"{month}.pqt"

    def _owners(self, keys, day_sources) -> dict[int, str]:
        return day_owners({k: self.run.periods[k] for k in keys}, day_sources)

    def execute(self) -> tuple[pa.Table | None, pa.Table | None]:
        run = self.run
        # S3: the job's listing says whether the partition exists. Locally a stat asks (the
        # listing leaves symbolic links out: a legacy partition linked in place is one).
        listed = self.month in run.on_disk if storage.is_remote(self.path) else None
        existing, problem = _load_partition(
            self.path, listed=listed, listed_size=run.on_disk_bytes.get(self.month)
        )
        if problem and self.month not in run.own_partitions:
            raise ForeignPartitionUnreadable(problem)
        if problem:
            log.warning("partition %s is %s; rebuilding it", self.path, problem)
        old_owner = self._owners(self.old, run.old_day_sources.get(self.month, {}))
        day_sources = run.day_sources.get(self.month, {})
        loaded: dict[str, pa.Table] = {}
        while True:
            owner = self._owners(self.usable, day_sources)
            refresh = {
                d
                for d, k in owner.items()
                if existing is None or old_owner.get(d) != k or self.old.get(k) != self.usable[k]
            }
            needed = sorted({owner[d] for d in refresh} - set(loaded))
            if not needed:
                break
            for key, table in run.read_many({k: self.usable[k] for k in needed}).items():
                if table is None:
                    del self.usable[key]  # quarantined: its days go to another owner or none
                else:
                    loaded[key] = table
        parts = []
        if existing is not None:
            # Days that left every owner (key gone or quarantined) lose their rows; days no
            # tracked archive ever owned (legacy rows) keep them.
            parts.append(_kept_rows(existing, set(owner) - refresh, set(owner) | set(old_owner)))
        by_key: dict[str, set[int]] = defaultdict(set)
        for d in refresh:
            by_key[owner[d]].add(d)
        for key, days in sorted(by_key.items()):
            table = loaded[key]
            whole = len(days) == len(run.periods[key].day_numbers())
            parts.append(table if whole else _rows_of_days(table, days))
        with run.timer.step("merge"):
            klines = _concat_by_time(parts)
        q = None
        if owner:
            with run.timer.step("quality"):
                q = quality.day_quality(_owned_rows(klines, owner), run.interval, owner)
        return (klines if klines.num_rows else None), q


def _owned_rows(klines: pa.Table, owner: dict[int, str]) -> pa.Table:
    """The rows the quality record measures: those of days an archive owns."""
    day = _day_numbers(klines)
    owned = np.isin(day, sorted(owner))
    return klines if bool(owned.all()) else klines.filter(pa.array(owned))


class _KlineRun:
    def __init__(
        self, *, trade_type, symbol, interval, data_dir, download_report, limit, dataset="klines"
    ):
        self.limit = limit
        self.trade_type, self.symbol, self.interval = trade_type, symbol, interval
        self.data_dir = data_dir
        self.dataset = datasets.tag(dataset, interval)
        self.timer = Timer()
        self.part_dir = layout.parsed_klines_dir(
            data_dir, trade_type, symbol, interval, datasets.get(dataset).name
        )
        storage.remove_stale_temps(self.part_dir)  # this job owns the folder
        self.state_path = state_file(data_dir, trade_type, self.dataset, symbol)
        self.state = storage.read_state(self.state_path)
        self.report_in = load_download_report(download_report)
        interval_ms(interval)  # refuse an unsupported interval before touching anything
        self.stem_prefix = layout.archive_stem_prefix(self.dataset, symbol, interval)
        self.periods: dict[str, Period] = {}
        self.sel = select_archives(
            self.report_in, data_dir, self.state.get("quarantined") or {}, self._belongs
        )
        self.day_sources = _day_sources_by_month(self.report_in.get("day_sources"))
        self.old_day_sources = _day_sources_by_month(self.state.get("day_sources"))
        self.quarantined_now: dict[str, dict] = {}
        # key -> rows dropped as identical copies (docs/quality.md), kept in the state for
        # archives not read again; an archive read now replaces its count.
        self.duplicates: dict[str, int] = dict(self.state.get("duplicates") or {})
        self.own_partitions: set[str] = set()  # months this pipeline wrote (from the state)
        self.on_disk: set[str] = set()  # months with a partition in the job's listing
        self.on_disk_bytes: dict[str, int | None] = {}  # their sizes in that listing
        self.files_parsed = 0
        self.csv_bytes = 0
        self.duplicates_now = 0  # rows dropped as identical copies by this run
        self.read_now: set[str] = set()  # archives read (and found sound) by this run

    def _belongs(self, key: str) -> bool:
        period = archive_period(key, self.stem_prefix)
        if period is None or not layout.is_archive_key_of(
            key, self.trade_type, self.dataset, self.symbol, self.interval
        ):
            return False
        self.periods[key] = period
        return True

    def read_many(self, shas: dict[str, str]) -> dict[str, pa.Table | None]:
        """Validated archives by key; None for those found defective (now quarantined)."""
        items = [(k, layout.aws_path(self.data_dir, k), self.periods[k]) for k in sorted(shas)]
        copies: dict[str, int] = {}
        with storage.read_ahead([path for _, path, _ in items]):  # S3: GETs in parallel
            tables, defects, sizes = read_kline_archives(
                items, self.interval, self.timer, self.limit, copies
            )
        self.read_now.update(tables)
        for key in tables:
            self.duplicates.pop(key, None)
        self.duplicates.update(copies)
        self.duplicates_now += sum(copies.values())
        for key, reason in sorted(defects.items()):
            log.error("quarantined %s", reason)
            quarantine_archive(self.data_dir, key, reason)
            self.quarantined_now[key] = {"sha256": shas[key], "reason": reason}
        self.files_parsed += len(tables)
        self.csv_bytes += sum(sizes.values())
        return {k: tables.get(k) for k in shas}

    def execute(self, report_path, stats_path) -> dict:
        old_files: dict[str, str] = {
            k: v for k, v in (self.state.get("files") or {}).items() if self._belongs(k)
        }
        old_parts: dict[str, dict] = dict(self.state.get("partitions") or {})
        new_by_month: dict[str, dict[str, str]] = defaultdict(dict)
        for key, sha in self.sel.usable.items():
            new_by_month[self.periods[key].month][key] = sha
        old_by_month: dict[str, dict[str, str]] = defaultdict(dict)
        for key, sha in old_files.items():
            old_by_month[self.periods[key].month][key] = sha
        # One listing gives the partitions on disk and their sizes: a partition whose size
        # differs from the one written (damaged, truncated, replaced by hand) is rebuilt.
        on_disk_bytes = {
            name[: -len(".pqt")]: size
            for name, size in storage.file_sizes(self.part_dir, sized=".pqt").items()
            if name.endswith(".pqt") and _PARTITION_RE.match(name[: -len(".pqt")])
        }
        self.on_disk_bytes = on_disk_bytes
        on_disk = self.on_disk = set(on_disk_bytes)
        written_bytes: dict[str, int] = dict(self.state.get("partition_bytes") or {})
        for month in sorted(set(old_parts) & on_disk - set(written_bytes)):
            # Written before sizes were recorded: its footer is checked once, then its size
            # on disk is the one to keep.
            try:
                storage.parquet_metadata(self.part_dir / f"{month}.pqt")
                written_bytes[month] = on_disk_bytes[month]
            except (OSError, pa.ArrowException):
                written_bytes[month] = -1  # damaged: rebuilt below

        partitions = {m: v for m, v in old_parts.items()}
        self.own_partitions.update(old_parts)
        untracked: dict[str, str] = {}  # month -> why its partition is left as it is
        blocked: set[str] = set()  # keys waiting for an unreadable foreign partition
        quality_parts: list[pa.Table] = []
        rebuilt: set[str] = set()
        written = removed = 0
        months = sorted(set(new_by_month) | set(old_by_month) | on_disk | set(old_parts))
        progress = Progress(
            f"aws_parse {self.trade_type} {self.dataset} {self.symbol}", len(months),
            unit="months", logger=log,
        )  # fmt: skip

        def unchanged(month: str) -> bool:
            return (
                new_by_month.get(month, {}) == old_by_month.get(month, {})
                and self.day_sources.get(month, {}) == self.old_day_sources.get(month, {})
                and (month in old_parts) == (month in on_disk)
                and written_bytes.get(month, on_disk_bytes.get(month)) == on_disk_bytes.get(month)
            )

        # S3: the archives of every month to rebuild, in the order read_many reads them,
        # fetched ahead across month boundaries (a month may skip some of its keys).
        ahead = [
            layout.aws_path(self.data_dir, key)
            for month in months
            if not unchanged(month)
            for key in sorted(new_by_month.get(month, {}))
        ]
        with storage.read_ahead(ahead):
            for i, month in enumerate(months):
                progress.done = i
                progress.maybe_log()
                if (
                    month not in new_by_month
                    and month not in old_by_month
                    and month not in old_parts
                ):
                    untracked[month] = (
                        "no tracked archive"  # legacy or out-of-range data: ours to keep
                    )
                    continue
                if unchanged(month):
                    continue
                job = _MonthJob(
                    self, month, new_by_month.get(month, {}), old_by_month.get(month, {})
                )
                try:
                    table, q = job.execute()
                except ForeignPartitionUnreadable as exc:
                    waiting = sorted(new_by_month.get(month, {}))
                    untracked[month] = (
                        f"{exc}; not overwritten: move it away to parse its {len(waiting)} archive(s)"
                    )
                    log.error("%s/%s.pqt is %s", self.part_dir, month, untracked[month])
                    blocked.update(waiting)
                    continue
                rebuilt.add(month)
                if q is not None:
                    quality_parts.append(q)
                path = self.part_dir / f"{month}.pqt"
                with self.timer.step("write"):
                    if table is None:
                        partitions.pop(month, None)
                        written_bytes.pop(month, None)
                        if storage.exists(path):
                            storage.delete(path)
                            removed += 1
                    else:
                        written_bytes[month] = storage.write_parquet(
                            path, table, **PARTITION_WRITE_OPTIONS
                        )
                        partitions[month] = _partition_summary(table)
                        written += 1
                # The month's rows go before the next month is built (held until the next
                # assignment, they were two months in memory at once).
                del table
        progress.done = len(months)
        progress.finish()

        usable = {
            k: v
            for k, v in self.sel.usable.items()
            if k not in self.quarantined_now and k not in blocked
        }
        with self.timer.step("quality"):
            qtable = self._update_quality(rebuilt, quality_parts, partitions, usable)

        self._ask_for_daily_zips(qtable, usable)
        bad = {k: v for k, v in (self.state.get("quarantined") or {}).items() if k not in usable}
        bad.update(self.quarantined_now)
        duplicates = {k: n for k, n in sorted(self.duplicates.items()) if k in usable and n}
        new_state = {
            "files": usable,
            "duplicates": duplicates,
            "partitions": dict(sorted(partitions.items())),
            "partition_bytes": {
                m: written_bytes[m] for m in sorted(written_bytes) if m in partitions
            },
            "day_sources": self.report_in.get("day_sources") or {},
            "quarantined": dict(sorted(bad.items())),
        }
        storage.write_json(self.state_path, new_state)

        found_now = {k: v["reason"] for k, v in self.quarantined_now.items()}
        report = {
            "trade_type": self.trade_type,
            "symbol": self.symbol,
            "dataset": self.dataset,
            "partitions": new_state["partitions"],
            "files": dict(sorted(usable.items())),
            "quarantined": reported_quarantine(self.sel, found_now),
            "quarantined_by_parse": own_quarantine(self.sel, found_now),
            "quality": {
                **quality.summarize(qtable),
                "duplicates_dropped": sum(duplicates.values()),
            },
            "untracked_partitions": dict(sorted(untracked.items())),
        }
        io.write_json(report_path, report)
        stats = {
            "trade_type": self.trade_type,
            "symbol": self.symbol,
            "dataset": self.dataset,
            "files_listed": len(self.sel.usable)
            + len(self.sel.unverified)
            + len(self.sel.known_bad),
            "files_parsed": self.files_parsed,
            "files_unchanged": len(usable) - self.files_parsed,
            "files_unverified": sorted(self.sel.unverified),
            "files_ignored": len(self.sel.ignored),
            "files_quarantined": len(self.quarantined_now),
            "quarantined": found_now,
            "partitions_written": written,
            "partitions_removed": removed,
            "partitions_untracked": len(untracked),
            "files_waiting": sorted(blocked),
            "duplicates_dropped": self.duplicates_now,
            "csv_bytes": self.csv_bytes,
            **throughput_stats(self.timer, self.csv_bytes),
        }
        io.write_json(stats_path, stats)
        return stats

    def _ask_for_daily_zips(self, qtable: pa.Table, usable: dict[str, str]) -> None:
        """A monthly zip read now that holds no row of some of the days it owns after the
        symbol's first row (cut short, binance-public-data #403; ``quality.empty_days_of``), with monthly klines in use (the download report has
        ``day_sources``): the next run reruns this symbol's download job, which learns those
        days from the quality record and takes their daily zips (docs/config.md)."""
        if not self.report_in.get("day_sources") or not qtable.num_rows:
            return
        monthly = {k for k in self.read_now if k in usable and self.periods[k].is_month}
        if not monthly:
            return
        short = {k: quality.empty_days_of(qtable, k).size for k in sorted(monthly)}
        short = {k: n for k, n in short.items() if n}
        if not short:
            return
        from crypto_lakehouse import shards

        why = "; ".join(f"{k} holds no row of {n} day(s)" for k, n in short.items())
        asked = shards.ask_upstream_rerun("aws_download", self.symbol, why)
        log.warning(
            "%s: %s; %s", self.symbol, why,
            f"the next run's download ({', '.join(asked)}) takes their daily zips where listed"
            if asked else "a run of aws_download for this symbol takes their daily zips "
            "where listed (--forcerun aws_download_shard)",
        )  # fmt: skip

    def _update_quality(self, rebuilt, new_rows, partitions, usable) -> pa.Table:
        qpath = layout.quality_path(
            self.data_dir,
            self.trade_type,
            self.interval,
            self.symbol,
            datasets.get(self.dataset).name,
        )
        old = None
        if self.state:  # read without asking first whether it exists, or its size (HEADs)
            try:
                old = storage.read_parquet(qpath, small=True)
            except FileNotFoundError:
                pass
            except storage.StorageError:
                raise  # the store failed (its HEAD raised here before): not a lost record
            except (OSError, pa.ArrowException):
                pass
            if old is not None and old.schema.remove_metadata() != quality.QUALITY_SCHEMA:
                old = None
        if old is None:
            # Record lost or from an unknown run: measure the untouched partitions again.
            for month in sorted(set(partitions) - rebuilt):
                new_rows.append(self._quality_from_partition(month, usable))
            rebuilt = rebuilt | set(partitions)
        elif not rebuilt:
            return old
        table = quality.merge_quality(old, rebuilt, new_rows, self.interval)
        if table.num_rows == 0:
            storage.delete(qpath)
        else:
            storage.write_parquet(qpath, table)
        return table

    def _quality_from_partition(self, month: str, usable: dict[str, str]) -> pa.Table:
        periods = {k: self.periods[k] for k in usable if self.periods[k].month == month}
        owner = day_owners(periods, self.day_sources.get(month, {}))
        table = _read_partition(self.part_dir / f"{month}.pqt")
        if table is None:
            table = KLINE_SCHEMA.empty_table()
        return quality.day_quality(_owned_rows(table, owner), self.interval, owner)


@storage.uploads_in_background  # S3: PUTs overlap the work; barrier before records
def run_parse_klines(
    *,
    trade_type,
    symbol,
    interval,
    data_dir,
    download_report,
    report_path,
    stats_path,
    max_inflate_ratio: float = DEFAULT_INFLATE_LIMIT.ratio,
    max_inflated_bytes: int = DEFAULT_INFLATE_LIMIT.ceiling,
    dataset: str = "klines",
) -> dict:
    """Parse one symbol's verified kline archives (entry point of rule ``aws_parse_klines``).

    ``dataset``: any kline-layout registry dataset (``markPriceKlines``, ...); its partitions
    go to ``parsed_data/{T}/{dataset}/{SYM}/{I}/{YYYYMM}.pqt``.

    Returns the run stats (also written to ``stats_path``); the deterministic report goes to
    ``report_path``. Defective archives are quarantined and reported, never raised.
    """
    run = _KlineRun(
        trade_type=trade_type,
        symbol=symbol,
        interval=interval,
        data_dir=data_dir,
        download_report=download_report,
        limit=InflateLimit(max_inflate_ratio, max_inflated_bytes),
        dataset=dataset,
    )
    stats = run.execute(report_path, stats_path)
    log.info(
        "%s %s %s: %d files parsed, %d quarantined, %.1f MB/s",
        trade_type,
        symbol,
        interval,
        stats["files_parsed"],
        stats["files_quarantined"],
        stats["mb_per_s"] or 0.0,
    )
    return stats
