"""Tick datasets (``aggTrades``, ``trades``): archive zips → one Parquet file per UTC day.

Output: ``parsed_data/{T}/{dataset}/{SYM}/{YYYYMMDD}.pqt`` (``layout.parsed_day_path``).
Columns come from the dataset registry (per market); ids are int64, prices and quantities
float64, flags bool, the time column ``timestamp[ms, UTC]``. Spot files from 2025-01-01 hold
microseconds (registry ``micros_from``); they are truncated to milliseconds like the klines.

Memory: the CSV is read as a stream of record batches (``pyarrow.csv.open_csv`` on the zip
member) and each batch is appended to its day's Parquet writer, so at most one batch is in
memory, never a day or a month. Days are written to staged files (``storage.staged_path``:
a temporary sibling locally, a local spool file for S3) and published (renamed, or uploaded
in one PUT) only when the whole zip passed validation: a defective zip leaves no partial day
behind. On S3 the zip itself is first copied to a local spool file (``storage.local_copy``):
the zip reader's small seeks and reads would each be a ranged GET.

Validation per batch (and across batch boundaries): no empty cell (but in metrics' values),
ids strictly increasing, a row's last id not below its first (aggTrades' trade id range),
times non-decreasing, prices finite, quantities finite and ≥ 0. A
defect raises ``ArchiveDefect`` naming the key and the CSV line; so does a row pyarrow's
reader refuses (``locate_tick_defect`` names its line) and a zip that cannot be read or
inflated. The job quarantines that zip and goes on with the others.
"""

from __future__ import annotations

import contextlib
import logging
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from crypto_lakehouse import datasets, io, layout, storage
from crypto_lakehouse.intervals import DAY_MS
from crypto_lakehouse.parse import (
    load_download_report,
    own_quarantine,
    reported_quarantine,
    select_archives,
    state_file,
)
from crypto_lakehouse.parse.csv_reader import ArchiveDefect
from crypto_lakehouse.parse.validate import Period, archive_period, format_ms, name_period
from crypto_lakehouse.quarantine import quarantine_archive

log = logging.getLogger(__name__)

TIME_TYPE = pa.timestamp("ms", tz="UTC")
BLOCK_SIZE = 8 << 20  # bytes of CSV per record batch
_TRUE, _FALSE = ["true", "True", "TRUE"], ["false", "False", "FALSE"]


def arrow_type(entry: datasets.Dataset, column: str) -> pa.DataType:
    """Parquet type of one tick column: by its role in the registry entry."""
    if column == entry.time_column:
        return TIME_TYPE
    if column in entry.string_columns:
        return pa.string()
    if column == entry.id_column or column.endswith("_id"):
        return pa.int64()
    if column.startswith("is_"):
        return pa.bool_()
    return pa.float64()


def arrow_schema(entry: datasets.Dataset, trade_type: str) -> pa.Schema:
    return pa.schema([(c, arrow_type(entry, c)) for c in entry.columns_for(trade_type)])


def _csv_type(entry, column):
    t = arrow_type(entry, column)
    if t == TIME_TYPE:
        # Text times ("2024-01-01 00:05:00", metrics) are read as timestamps, numbers as int.
        return pa.timestamp("ms") if entry.time_text_format else pa.int64()
    return t


def sniff_header_lines(member) -> int:
    """1 when the CSV starts with a header row (futures files since some date), else 0."""
    head = member.read(64).lstrip(b"\xef\xbb\xbf")
    return 0 if head[:1].isdigit() or head[:1] == b"-" else 1


class _RowDefect(Exception):
    """A defect of one data row, named by its ordinal among the file's data rows (0-based,
    blank lines and the header not counted: the rows pyarrow's reader yields). The caller
    turns it into an ArchiveDefect naming the row's line in the file (``_line_of_row``)."""

    def __init__(self, row: int, what: str):
        super().__init__(what)
        self.row, self.what = row, what


@dataclass
class _Cursor:
    """What validation must carry across batches of one file."""

    last_id: int | None = None
    last_time: int | None = None
    rows: int = 0  # data rows before the current batch (the next row's ordinal)
    days: dict[str, int] = field(default_factory=dict)  # YYYYMMDD -> rows


def _check_nulls(batch: pa.RecordBatch, entry, cur: _Cursor, label: str) -> None:
    """An empty cell is a null: a defect, except in the value columns of a dataset whose
    files have empty values (metrics, registry ``nullable_values``). Never in the id or
    time column: a row without them cannot be ordered or given a day."""
    for name in batch.schema.names:
        column = batch.column(name)
        if column.null_count and not (
            entry.nullable_values and name not in (entry.id_column, entry.time_column)
        ):
            first_null = int(np.argmin(column.is_valid().to_numpy(zero_copy_only=False)))
            raise _RowDefect(cur.rows + first_null, f"field {name!r} is empty")


_YEAR_1, _YEAR_10000 = -62135596800000, 253402300800000  # ms: what format_ms can show


def _check_period(times: np.ndarray, raw: np.ndarray, bounds, cur: _Cursor, label: str,
                  end_labels: bool = False) -> None:  # fmt: skip
    """Every row inside the file's day or month (``end_labels``: its end included). A time
    outside it is a defect, not a day file of another date: a unit other than the
    registry's (µs read as ms lands in the year 50000, ms read as µs in 1970) or a row of
    another file."""
    start, end, period = bounds
    # End-of-period labels (metrics): the file's last row may be labelled with the period's
    # end, the next day's 00:00:00 (binance-public-data #491: um metrics before 2026-06-25).
    outside = (times < start) | ((times > end) if end_labels else (times >= end))
    if outside.any():
        i = int(np.argmax(outside))
        what = "month" if period.is_month else "day"
        value = int(raw[i])
        shown = format_ms(int(times[i])) + " " if _YEAR_1 <= times[i] < _YEAR_10000 else ""
        unit = "ms" if times[i] == value else "µs"
        hint = ""
        for as_ms, other in ((value, "ms"), (value // 1000, "µs")):
            if start <= as_ms < end + end_labels and other != unit:
                hint = (
                    f"; as {other} it would be inside: the file's unit is not the {unit} expected"
                )
        raise _RowDefect(
            cur.rows + i,
            f"time {shown}(raw {value}) is outside the file's {what} {period.label}{hint}",
        )


def _check_batch(batch: pa.RecordBatch, entry, times: np.ndarray, cur: _Cursor, label: str):
    def fail(i: int, what: str):
        raise _RowDefect(cur.rows + i, what)

    if entry.id_column is not None:
        ids = batch.column(entry.id_column).to_numpy(zero_copy_only=False)
        if cur.last_id is not None and len(ids):
            ids_all = np.concatenate(([cur.last_id], ids))
            offset = -1
        else:
            ids_all, offset = ids, 0
        bad = np.flatnonzero(np.diff(ids_all) <= 0)
        if len(bad):
            i = int(bad[0]) + 1 + offset
            fail(i, f"{entry.id_column} {ids_all[bad[0] + 1]} does not increase")
        if len(ids):
            cur.last_id = int(ids[-1])
    for first_name, last_name in entry.id_ranges:
        # An aggregate trade groups the trades first..last: last below first is no range
        # (agg_klines would count last - first + 1 <= 0 trades for it).
        first = batch.column(first_name).to_numpy(zero_copy_only=False)
        last = batch.column(last_name).to_numpy(zero_copy_only=False)
        reversed_ = last < first
        if reversed_.any():
            i = int(np.argmax(reversed_))
            fail(i, f"{last_name} {last[i]} is below {first_name} {first[i]}")
    t_all = np.concatenate(([cur.last_time], times)) if cur.last_time is not None else times
    bad = np.flatnonzero(np.diff(t_all) < 0)
    if len(bad):
        i = int(bad[0]) + 1 + (-1 if cur.last_time is not None else 0)
        fail(i, f"{entry.time_column} goes back in time")
    for name in (*entry.price_columns, *entry.quantity_columns):
        if name not in batch.schema.names:
            continue
        column = batch.column(name)
        values = column.to_numpy(zero_copy_only=False)
        finite = np.isfinite(values)
        if entry.nullable_values and column.null_count:
            finite |= ~column.is_valid().to_numpy(zero_copy_only=False)
            values = np.where(finite & ~np.isnan(values), values, 0.0)
        if not finite.all():
            fail(int(np.argmin(finite)), f"{name} is not a finite number")
        if name in entry.quantity_columns and (values < 0).any():
            fail(int(np.argmax(values < 0)), f"{name} is negative")
    if len(times):
        cur.last_time = int(times[-1])


def parse_tick_zip(
    zip_path: str | Path,
    *,
    key: str,
    trade_type: str,
    dataset: str,
    symbol: str,
    data_dir: str | Path,
    first_day: str,
    period: Period | None = None,
) -> dict[str, int]:
    """Parse one archive zip into per-day Parquet files; returns {YYYYMMDD: rows}.

    ``first_day`` (ISO) is the first day the zip covers (unit rule of the registry);
    ``period`` the day or month it covers (default: from the date ending ``key``'s name).
    Trades and aggregate trades (datasets with an id column) must lie inside it.
    """
    entry = datasets.get(dataset)
    entry.check_market(trade_type)
    columns = list(entry.columns_for(trade_type))
    schema = arrow_schema(entry, trade_type)
    micros = entry.in_micros(trade_type, first_day)
    label = key
    if period is None:
        period = name_period(key)
    # Where a row's time must lie: the file's period (metrics: its end included, below).
    bounds = (period.start_ms, period.end_ms, period) if period else None
    with storage.local_copy(zip_path) as local_zip, _unreadable_zip_is_a_defect(label):
        return _parse_local_zip(local_zip, label, entry, trade_type, columns, schema, micros,
                                symbol, data_dir, bounds)  # fmt: skip


@contextlib.contextmanager
def _unreadable_zip_is_a_defect(label: str):
    """A zip that cannot be opened or inflated (cut short, not a zip, a bad CRC) is a defect
    of that archive: it is quarantined like a bad row, and the job goes on."""
    try:
        yield
    except zipfile.BadZipFile as exc:
        raise ArchiveDefect(f"{label}: not a readable zip ({exc})") from exc
    except (zipfile.LargeZipFile, NotImplementedError, EOFError, zlib.error) as exc:
        raise ArchiveDefect(f"{label}: cannot inflate zip member ({exc})") from exc


def _parse_local_zip(local_zip, label, entry, trade_type, columns, schema, micros,
                     symbol, data_dir, bounds) -> dict[str, int]:  # fmt: skip
    with zipfile.ZipFile(local_zip) as zf:
        names = [n for n in zf.namelist() if not n.endswith("/")]
        if len(names) != 1:
            raise ArchiveDefect(f"{label}: expected one CSV member, found {len(names)}")
        with zf.open(names[0]) as head:
            header_lines = sniff_header_lines(head)
        cur = _Cursor()
        writers: dict[str, pq.ParquetWriter] = {}
        options = parquet_options(entry, schema)
        # One writer thread: the Parquet encoding and compression of block N (pyarrow
        # releases the GIL) overlaps the inflate, CSV read and checks of block N + 1. At most
        # one block waits for it, so memory stays at two blocks.
        pool = ThreadPoolExecutor(1, thread_name_prefix="tick-writer")
        pending = None
        # Each day file is staged in ``staged`` (storage.staged_path): leaving the block
        # normally publishes them all, an exception (a defect in a later block) none.
        with contextlib.ExitStack() as staged:
            try:
                try:
                    with zf.open(names[0]) as member:
                        batches = _batches(
                            member, entry, columns, header_lines, label, cur,
                            lambda: zf.open(names[0]),
                        )  # fmt: skip
                        for batch in batches:
                            table, slices = _checked_table(batch, entry, schema, micros, cur,
                                                           label, bounds)  # fmt: skip
                            if pending is not None:
                                pending.result()
                            pending = pool.submit(_write_slices, table, slices, entry, schema,
                                                  options, writers, staged, trade_type,
                                                  symbol, data_dir)  # fmt: skip
                except _RowDefect as defect:  # named by its line in the file, blank lines too
                    with zf.open(names[0]) as again:
                        line = _line_of_row(again, header_lines, defect.row)
                    raise ArchiveDefect(f"{label}: line {line}: {defect.what}", line) from None
                if cur.rows == 0 and bounds is not None:
                    _write_empty_days(bounds, entry, schema, options, writers, staged,
                                      trade_type, symbol, data_dir, cur, label)  # fmt: skip
                if pending is not None:
                    pending, wait = None, pending
                    wait.result()
                for writer in writers.values():
                    writer.close()
                writers.clear()
            finally:
                if pending is not None:  # a later block failed: let the writer finish first
                    with contextlib.suppress(Exception):
                        pending.result()
                pool.shutdown()
                for writer in writers.values():
                    with contextlib.suppress(Exception):
                        writer.close()
    return dict(sorted(cur.days.items()))


def _write_empty_days(
    bounds, entry, schema, options, writers, staged, trade_type, symbol, data_dir, cur, label
) -> None:
    """A zip without a data row (a header only, or nothing): every day of its period is a
    published day with zero rows, written as a day file with no row (the schema only) and
    recorded with 0 rows, so that reports, loaders and later stages tell it from a day the
    archive has no file for (docs/datasets.md, "A file without rows")."""
    start, end, _ = bounds
    log.warning("%s: no data row; its days are recorded with 0 rows", label)
    for day_index in range(start // DAY_MS, (end - 1) // DAY_MS + 1):
        day = str(np.datetime64(day_index, "D")).replace("-", "")
        target = layout.parsed_day_path(data_dir, trade_type, entry.name, symbol, day)
        tmp = staged.enter_context(storage.staged_path(target))
        writers[day] = pq.ParquetWriter(tmp, schema, **options)  # seam: staged local file
        writers[day].write_table(schema.empty_table())
        cur.days[day] = 0


def _no_data_row(member, header_lines: int) -> bool:
    """Whether the member holds no data line (empty, blank lines, or a header only)."""
    for first_line, lines in _lines_of(member):
        if lines is None:
            return False
        numbers = np.arange(first_line, first_line + len(lines))
        if ((numbers > header_lines) & (pc.utf8_length(lines).to_numpy() > 0)).any():
            return False
    return True


def _batches(member, entry, columns, header_lines, label, cur, reopen):
    """The CSV's record batches. A row pyarrow refuses (a text in a number column, a
    missing field), in the first block (read by ``open_csv`` itself) or a later one, is an
    ArchiveDefect naming the line: the member is read again (``reopen``) by
    ``locate_tick_defect``; pyarrow's own message names no line, or the block's row."""
    try:
        reader = pacsv.open_csv(
            member,
            read_options=pacsv.ReadOptions(
                column_names=columns, skip_rows=header_lines, block_size=BLOCK_SIZE
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={c: _csv_type(entry, c) for c in columns},
                true_values=_TRUE,
                false_values=_FALSE,
                # Only an empty cell is a null (_check_nulls); "NaN" in a number
                # column is a NaN, refused by the finite check.
                null_values=[""],
                strings_can_be_null=True,
                timestamp_parsers=[entry.time_text_format] if entry.time_text_format else None,
            ),
        )
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                return
            yield batch
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        with reopen() as again:
            if cur.rows == 0 and _no_data_row(again, header_lines):
                # pyarrow refuses an empty member ("Empty CSV file") and a header without
                # a newline; like a header-only file, they are a period without rows.
                return
        with reopen() as again:
            where = locate_tick_defect(again, entry, columns, header_lines)
        if where is not None:
            line, what = where
            raise ArchiveDefect(f"{label}: line {line}: {what}", line) from None
        # Not located (a defect the line scan does not model): the first unread line.
        with reopen() as again:
            line = _line_of_row(again, header_lines, cur.rows)
        raise ArchiveDefect(f"{label}: line ≥ {line}: {exc}", line) from None


# What pyarrow's CSV conversion accepts per column type (an empty cell is a null, checked
# later with its line). Floats: decimals, exponents, nan and inf as pyarrow reads them.
_CELL_RE = {
    "int": r"^([+-]?\d+)?$",
    "float": r"^([+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(?i:nan|inf|infinity))?$",
    "bool": "^(" + "|".join(_TRUE + _FALSE) + ")?$",
    "text_time": r"^(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2})?$",
}
_LOCATE_CHUNK = 8 << 20
# A CSV line of these files is under 200 bytes; one without a newline for this long (a
# damaged or hostile member) is the defect itself, not something to hold in memory.
_MAX_LINE_BYTES = 1 << 20


def _cell_kind(entry: datasets.Dataset, column: str) -> str | None:
    t = _csv_type(entry, column)
    if pa.types.is_timestamp(t):
        return "text_time"
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_floating(t):
        return "float"
    return None  # text: anything goes


def locate_tick_defect(member, entry, columns, header_lines) -> tuple[int, str] | None:
    """(line, what) of the first CSV line pyarrow's reader would refuse: a wrong number of
    fields, or a cell its column's type does not accept. Reads ``member`` in chunks of
    whole lines (vectorised per chunk), so a large member is never held whole. Lines are
    counted as a text editor does (1-based, header included); blank lines are skipped, as
    the reader skips them. None when no line is refused."""
    kinds = [(i, c, _cell_kind(entry, c)) for i, c in enumerate(columns)]
    kinds = [(i, c, k) for i, c, k in kinds if k is not None]
    for first_line, lines in _lines_of(member):
        if lines is None:
            return first_line, f"a line longer than {_MAX_LINE_BYTES} bytes"
        numbers = np.arange(first_line, first_line + len(lines))
        keep = (numbers > header_lines) & (pc.utf8_length(lines).to_numpy() > 0)
        found = _first_refused(lines.filter(pa.array(keep)), numbers[keep], columns, kinds)
        if found is not None:
            return found
    return None


def _lines_of(member):
    """(first line number, lines) per chunk of whole lines of ``member`` (8 MB chunks, a
    line's ``\r`` removed; a last line without a newline included). Lines are counted as a
    text editor does, 1-based."""
    first_line, rest = 1, b""
    while True:
        chunk = member.read(_LOCATE_CHUNK)
        data = rest + chunk
        too_long = False
        if chunk:
            cut = data.rfind(b"\n") + 1
            data, rest = data[:cut], data[cut:]
            too_long = len(rest) > _MAX_LINE_BYTES  # no newline for megabytes: never held
        else:
            rest = b""
        if data:
            text = data.decode("utf-8", errors="replace")
            lines = pc.utf8_rtrim(pa.array(text.removesuffix("\n").split("\n")), characters="\r")
            yield first_line, lines
            first_line += len(lines)
        if too_long:
            yield first_line, None  # the line at first_line is longer than _MAX_LINE_BYTES
            return
        if not chunk:
            return


def _line_of_row(member, header_lines: int, row: int) -> int:
    """The file line (1-based, as an editor counts: header and blank lines included) of
    the data row of ordinal ``row`` (0-based; the rows the CSV reader yields, which skips
    the header and blank lines). Read in chunks, vectorised; past the end: the line after
    the last one."""
    seen, line = 0, 1
    for first_line, lines in _lines_of(member):
        if lines is None:
            break
        numbers = np.arange(first_line, first_line + len(lines))
        rows = numbers[(numbers > header_lines) & (pc.utf8_length(lines).to_numpy() > 0)]
        if row - seen < len(rows):
            return int(rows[row - seen])
        seen += len(rows)
        line = first_line + len(lines)
    return line


def _first_refused(lines, numbers, columns, kinds) -> tuple[int, str] | None:
    if len(lines) == 0:
        return None
    n_fields = pc.add(pc.count_substring(lines, ","), 1).to_numpy()
    found: list[tuple[int, str]] = []
    wrong = np.flatnonzero(n_fields != len(columns))
    if wrong.size:
        i = int(wrong[0])
        found.append((int(numbers[i]), f"{n_fields[i]} fields, expected {len(columns)}"))
    whole = np.flatnonzero(n_fields == len(columns))
    if whole.size:
        fields = pc.split_pattern(lines.take(pa.array(whole)), ",")
        for index, name, kind in kinds:
            values = pc.list_element(fields, index)
            ok = pc.match_substring_regex(values, _CELL_RE[kind]).to_numpy(zero_copy_only=False)
            bad = np.flatnonzero(~ok)
            if bad.size:
                i = int(whole[bad[0]])
                value = values[int(bad[0])].as_py()
                found.append(
                    (int(numbers[i]), f"field {name!r} is not {_KIND_TEXT[kind]}: {value!r}")
                )
    return min(found) if found else None


_KIND_TEXT = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "text_time": "a YYYY-MM-DD HH:MM:SS time",
}


def parquet_options(entry: datasets.Dataset, schema: pa.Schema) -> dict:
    """ParquetWriter options of a tick dataset's day files.

    Measured on a day of 1 M aggregate trades (docs/datasets.md): integer and time columns
    (ids, times: increasing) as DELTA_BINARY_PACKED, dictionary pages for the rest (prices and
    quantities repeat a lot), zstd level 1. That writes in half the CPU time of the default
    (dictionary everywhere, zstd) and gives a smaller file. The registry entry's
    ``parquet_options`` override any of these.
    """
    deltas = [
        f.name for f in schema if pa.types.is_integer(f.type) or pa.types.is_timestamp(f.type)
    ]
    options = {
        "compression": "zstd",
        "compression_level": 1,
        "use_dictionary": [n for n in schema.names if n not in deltas],
        "column_encoding": {n: "DELTA_BINARY_PACKED" for n in deltas},
    }
    options.update(entry.parquet_options)
    return options


def _checked_table(batch, entry, schema, micros, cur, label, bounds=None):
    """Validate one block and give it back as a table of the output schema, with the
    (day, start, end) slices of its rows per UTC day (runs on the reading thread)."""
    order = None
    if entry.sort_rows:
        # A stable sort: rows of one time keep their file order; a defect found in sorted
        # order is named by its row's place in the file (``order``).
        order = pc.sort_indices(batch, [(entry.time_column, "ascending")])
        batch = batch.take(order)
    try:
        _check_nulls(batch, entry, cur, label)
        raw = batch.column(entry.time_column).cast(pa.int64()).to_numpy(zero_copy_only=False)
        times = raw // 1000 if micros else raw
        if bounds is not None:
            _check_period(times, raw, bounds, cur, label, entry.end_labels)
        _check_batch(batch, entry, times, cur, label)
    except _RowDefect as defect:
        if order is not None:
            defect.row = cur.rows + order[defect.row - cur.rows].as_py()
        raise
    day_index = times // DAY_MS
    if entry.end_labels and bounds is not None:
        # A row labelled with the period's end goes to the period's last day: its file, not
        # the next day's (which that day's zip writes, and would overwrite or be clobbered).
        day_index = np.minimum(day_index, (bounds[1] - 1) // DAY_MS)
    cuts = np.flatnonzero(np.diff(day_index)) + 1
    starts = np.concatenate(([0], cuts))
    ends = np.concatenate((cuts, [len(times)]))
    arrays = [
        pa.array(times, pa.int64()).cast(TIME_TYPE) if n == entry.time_column else batch.column(n)
        for n in schema.names
    ]
    table = pa.Table.from_arrays(arrays, schema=schema)
    slices = []
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        if s == e:
            continue
        day = str(np.datetime64(int(day_index[s]), "D")).replace("-", "")
        slices.append((day, s, e))
        cur.days[day] = cur.days.get(day, 0) + (e - s)
    cur.rows += batch.num_rows
    return table, slices


def _write_slices(table, slices, entry, schema, options, writers, staged,
                  trade_type, symbol, data_dir):  # fmt: skip
    """Append one block's rows to their day files (runs on the writer thread)."""
    for day, s, e in slices:
        if day not in writers:
            # A new day closes the previous one: times never go back (checked above).
            for d in list(writers):
                writers.pop(d).close()
            target = layout.parsed_day_path(data_dir, trade_type, entry.name, symbol, day)
            tmp = staged.enter_context(storage.staged_path(target))
            writers[day] = pq.ParquetWriter(tmp, schema, **options)  # seam: staged local file
        writers[day].write_table(table.slice(s, e - s))


# Above this many day files written by a run, one listing of the folder gives their sizes;
# below, a stat each (a daily update writes one per symbol; on S3 a HEAD each).
SIZES_BY_LISTING_FROM = 64


def _day_sizes(day_path, parsed: dict, parsed_before: dict, present: dict) -> dict:
    """{day file name: size} of every day the state lists, for the next run's check: the
    sizes listed before this run, and those of the day files this run wrote
    (``day_path(day)``: the day's file)."""
    written = [day_path(d) for k, v in parsed.items() if v is not parsed_before.get(k)
               for d in v["days"]]  # fmt: skip
    sizes = dict(present)
    if len(written) > SIZES_BY_LISTING_FROM:
        sizes = storage.file_sizes(written[0].parent, sized=".pqt")
    else:
        for path in written:
            found = storage.stat(path)
            sizes[path.name] = found[0] if found else None
    names = sorted({day_path(d).name for v in parsed.values() for d in v.get("days", {})})
    return {n: sizes[n] for n in names if sizes.get(n) is not None}


def _days_taken_by_months(report: dict, usable: dict, periods: dict) -> dict[str, tuple]:
    """{daily key: (its day YYYYMMDD, the monthly key)} of the daily zips whose day the download report's
    ``day_sources`` gives to another usable archive (its monthly zip)."""
    sources = report.get("day_sources") or {}
    taken = {}
    for key in usable:
        period = periods[key]
        if period.is_month:
            continue
        owner = sources.get(period.label)
        if isinstance(owner, str) and owner != key and owner in usable:
            taken[key] = (period.label.replace("-", ""), owner)
    return taken


def _remove_days_no_archive_gives(parsed_before: dict, parsed: dict, day_path) -> None:
    """Delete the day files an earlier run wrote whose day no archive of this run gives any
    more: its zip re-published with a defect (quarantined) or gone from the download
    report. A full build of the same archive has no such file; before 2026-12-07 the old
    rows stayed (and agg_klines kept their candles)."""
    now = {d for v in parsed.values() for d in v.get("days", {})}
    gone = {d for v in parsed_before.values() for d in v.get("days", {})} - now
    for day in sorted(gone):
        log.warning("removing %s: no archive gives its day any more", day_path(day))
        storage.delete(day_path(day))


def _output_day_rows(parsed: dict) -> dict[str, int]:
    """{YYYYMMDD: rows} of the day files: a daily zip's day wins over its month's."""
    day_rows: dict[str, int] = {}
    for key in sorted(parsed, key=lambda k: ("/daily/" in k, k)):
        day_rows.update(parsed[key].get("days") or {})
    return day_rows


def run_parse_ticks(
    *, trade_type: str, dataset: str, symbol: str, data_dir, download_report, report_path
) -> dict:
    """Parse one symbol's verified tick archives (the download report's) incrementally.

    A zip is parsed again only when its SHA-256 changed or one of its day files is gone or
    no longer has the size it was written with (recorded in the state's ``sizes``).
    Monthly zips go first and daily ones after, so that a day present in both ends up from
    the daily file (the finer period wins, as for klines), except a day the download
    report's ``day_sources`` gives to its monthly zip (``download.use_monthly_klines``) that
    the monthly zip holds. A structurally bad zip is
    quarantined with the message naming its key and line; the others go on.
    """
    entry = datasets.get(dataset)
    entry.check_market(trade_type)
    tag = entry.tag()
    state_path = state_file(data_dir, trade_type, tag, symbol)
    state = storage.read_state(state_path)
    stem = layout.archive_stem_prefix(entry.name, symbol)
    periods: dict[str, Period] = {}

    def belongs(key: str) -> bool:
        period = archive_period(key, stem)
        if period is None or not layout.is_archive_key_of(key, trade_type, entry.name, symbol):
            return False
        periods[key] = period
        return True

    report_in = load_download_report(download_report)
    sel = select_archives(report_in, data_dir, state.get("quarantined") or {}, belongs)
    parsed_before: dict[str, dict] = state.get("parsed") or {}
    parsed: dict[str, dict] = {}
    quarantined_now: dict[str, dict] = {}
    # download.use_monthly_klines: a month the download took from its monthly zip takes
    # every day from it (``day_sources``, as the kline parser does), the daily zips held
    # from earlier runs included, so daily updates end as a full build (which downloads
    # the monthly zip only). Without day_sources (the month not wholly in the range, or the
    # monthly zip unusable) a daily zip wins over its month, and so it does on a day the
    # monthly zip holds no row of (a monthly file cut short, binance-public-data #403).
    taken = _days_taken_by_months(report_in, sel.usable, periods)
    order = sorted(sel.usable, key=lambda k: (not periods[k].is_month, k))
    # Days whose day file a daily zip wrote, now owned by their monthly zip: it is read again.
    daily_before = {
        d for k, v in parsed_before.items() if "/daily/" in k for d in v.get("days", {})
    }
    retaken = daily_before.intersection(day for day, _ in taken.values())
    # The day files present before this run, with their sizes: one listing of the symbol's
    # folder, not one request per day (a day written by a monthly zip of this run does not
    # excuse a daily zip whose own day file is missing: the daily file wins). A day file
    # whose size is not the one the last run left (cut short outside a run) counts as
    # missing; a state without sizes (written before they were recorded) checks presence.
    day_dir = layout.parsed_day_path(data_dir, trade_type, entry.name, symbol, "0").parent
    present = storage.file_sizes(day_dir, sized=".pqt") if parsed_before else {}
    sizes_before: dict[str, int] = state.get("sizes") or {}

    def intact(day: str) -> bool:
        name = layout.parsed_day_path(data_dir, trade_type, entry.name, symbol, day).name
        return name in present and sizes_before.get(name, present[name]) == present[name]

    # Days a monthly zip of this run wrote: a daily zip of one of them is parsed again after
    # it (the daily file wins, also when the monthly zip comes in a later run than the daily
    # ones, or is published again).
    days_rewritten: set[str] = set()
    for key in order:
        sha = sel.usable[key]
        old = parsed_before.get(key)
        period = periods[key]
        if key in taken and taken[key][0] in parsed.get(taken[key][1], {}).get("days", {}):
            continue  # its day comes from its monthly zip (day_sources)
        if (
            old
            and old.get("sha256") == sha
            and all(intact(d) for d in old.get("days", {}))
            and (period.is_month or not days_rewritten.intersection(old.get("days", {})))
            and not (period.is_month and retaken.intersection(old.get("days", {})))
        ):
            parsed[key] = old
            continue
        first_day = period.label if not period.is_month else f"{period.label}-01"
        try:
            days = parse_tick_zip(
                layout.aws_path(data_dir, key), key=key, trade_type=trade_type,
                dataset=entry.name, symbol=symbol, data_dir=data_dir, first_day=first_day,
                period=period,
            )  # fmt: skip
        except ArchiveDefect as exc:
            log.warning("quarantined %s", exc)
            quarantine_archive(data_dir, key, str(exc))
            quarantined_now[key] = {"sha256": sha, "reason": str(exc)}
            continue
        parsed[key] = {"sha256": sha, "days": days}
        if period.is_month:
            days_rewritten.update(days)
    _remove_days_no_archive_gives(
        parsed_before, parsed,
        lambda day: layout.parsed_day_path(data_dir, trade_type, entry.name, symbol, day),
    )  # fmt: skip
    quarantined = {k: v for k, v in (state.get("quarantined") or {}).items() if k not in parsed}
    quarantined.update(quarantined_now)
    sizes = _day_sizes(
        lambda day: layout.parsed_day_path(data_dir, trade_type, entry.name, symbol, day),
        parsed, parsed_before, present,
    )  # fmt: skip
    storage.write_json(state_path, {"parsed": parsed, "quarantined": quarantined, "sizes": sizes})
    report = {
        "trade_type": trade_type,
        "dataset": tag,
        "symbol": symbol,
        "files": dict(sorted(parsed.items())),
        "quarantined": reported_quarantine(
            sel, {k: v["reason"] for k, v in quarantined_now.items()}
        ),
        "quarantined_by_parse": own_quarantine(sel, quarantined_now),
        "rows": sum(sum(v["days"].values()) for v in parsed.values()),
        # Days published without a row (their day file holds none): not missing days.
        "days_without_rows": sorted(d for d, n in _output_day_rows(parsed).items() if n == 0),
    }
    io.write_json(report_path, report)
    return report
