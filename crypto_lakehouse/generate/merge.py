"""Read one symbol's archive and REST candles and merge them (legacy §8.1).

Columns are numpy arrays (times as int64 ms) because every later step (gap scan, fill,
checks) is a whole-column numpy operation. All files are read straight into one
pre-allocated "store" (archive rows, then REST rows) and the merge only computes which
store row each merged candle is; the fill then gathers every column once from the store.
That keeps the data in memory about twice (store + one filled segment) at the peak.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from crypto_lakehouse import storage
from crypto_lakehouse.schema import KLINE_COLUMNS, KLINE_SCHEMA, conformed, epoch_ms, numpy_dtype

log = logging.getLogger(__name__)

TIME = "candle_begin_time"
SOURCE_ARCHIVE = 0
SOURCE_REST = 1


@dataclass
class Candles:
    """Merged candles: row ``i`` is ``store[...][rows[i]]`` (``rows`` None: every store row,
    in order). ``time`` is already gathered (int64 ms UTC, ascending, unique)."""

    store: dict[str, np.ndarray]
    rows: np.ndarray | None
    time: np.ndarray
    source: np.ndarray  # int8 per merged row: SOURCE_ARCHIVE or SOURCE_REST

    def __len__(self) -> int:
        return len(self.time)

    def gather(self, name: str) -> np.ndarray:
        values = self.store[name]
        return values if self.rows is None else values[self.rows]


def _conformed(path: Path, reading=None) -> pa.Table:
    """The file's ten kline columns cast to the legacy schema; ValueError names the defect.
    ``reading``: the context its read runs in (``read_kline_files``)."""
    with reading(path) if reading is not None else contextlib.nullcontext():
        table = storage.read_parquet(path)
    missing = [c for c in KLINE_COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"missing columns {missing}")
    table = conformed(table.select(list(KLINE_COLUMNS)), KLINE_SCHEMA)
    for name in KLINE_COLUMNS:
        if table.column(name).null_count:
            raise ValueError(f"null values in column {name!r}")
    return table


def read_kline_files(
    *groups: list[Path], spans: dict[Path, tuple[int, int]] | None = None, reading=None
) -> tuple[dict[str, np.ndarray], list[int], list[str]]:
    """Concatenate the kline files of every group, in order, into pre-allocated arrays.

    Returns the arrays, the number of rows each group contributed and the problems. A file
    that cannot be read or has the wrong columns is skipped and named in the problem list,
    so one bad file never stops the symbol. ``spans``, when given, receives the store row
    range ``[start, stop)`` of each file read.

    ``reading(path)``, when given, is the context each file's reads run in
    (``shards.reading_output_of`` for the file's writer): a ``shards.DamagedInput`` it
    raises (a file the pipeline wrote and can rebuild, damaged), a ``storage.StorageError``
    (a failing store: the file may be fine) or an error of the machine
    (``storage.is_machine_error``: no permission, no file handle left) stops the read
    instead of leaving the file out: a build without it would lose its rows for good.
    """
    # S3: every file fetched ahead (whole objects, a window at a time) while the footers
    # and then the files are read in this order.
    paths = [path for paths in groups for path in paths]
    with storage.read_ahead(paths, window=INPUTS_AHEAD):
        return _read_kline_files(groups, spans, reading)


# S3: a symbol's input files fetched at the same time at most (read-ahead threads): a year
# of monthly partitions (13) and a few REST days in one round of GETs. With a window of 8
# the other five were a suffix-range GET each for their footers (row counts, which size
# the store before any rows are read), then a second round of whole GETs started only as
# the reader took the first files. The read-ahead's byte budget (storage.READ_AHEAD_BYTES)
# still bounds what is held.
INPUTS_AHEAD = 16


def _read_kline_files(groups, spans, reading=None):
    from crypto_lakehouse.shards import DamagedInput

    def stops(exc: Exception) -> bool:
        return reading is not None and (
            isinstance(exc, (DamagedInput, storage.StorageError)) or storage.is_machine_error(exc)
        )

    def footer(path) -> tuple[int | None, Exception | None]:
        try:
            with reading(path) if reading is not None else contextlib.nullcontext():
                return storage.parquet_metadata(path).num_rows, None
        except Exception as exc:  # unreadable footer: any pyarrow/OS error
            return None, exc

    items = [(g, path) for g, paths in enumerate(groups) for path in paths]
    # S3: the footers of the files beyond the read-ahead window (INPUTS_AHEAD files: more
    # than a year of monthly partitions) are asked at once, not one after the other (a
    # suffix-range GET each); those in the window come from its GETs.
    away = [
        i
        for i, (_, path) in enumerate(items)
        if storage.is_remote(path) and not storage.in_read_ahead(path)
    ]
    footers = dict(
        zip(away, storage.concurrently(footer, [items[i][1] for i in away]), strict=True)
    )
    sized: list[tuple[int, Path, int]] = []
    problems: list[str] = []
    for i, (g, path) in enumerate(items):
        n_rows, exc = footers[i] if i in footers else footer(path)
        if exc is not None:
            if stops(exc):
                raise exc
            problems.append(f"{path}: unreadable parquet ({exc})")
        else:
            sized.append((g, path, n_rows))
    total = sum(n for _, _, n in sized)
    out = {f.name: np.empty(total, dtype=numpy_dtype(f.type)) for f in KLINE_SCHEMA}
    group_rows = [0] * len(groups)
    pos = 0
    for g, path, _ in sized:
        try:
            table = _conformed(path, reading)
        except Exception as exc:
            if stops(exc):
                raise
            problems.append(f"{path}: {exc}")
            continue
        for name in KLINE_COLUMNS:
            col = table.column(name)
            if name == TIME:
                col = epoch_ms(col)
            at = pos
            for chunk in col.chunks:  # copy each chunk once, straight into place
                out[name][at : at + len(chunk)] = chunk.to_numpy(zero_copy_only=False)
                at += len(chunk)
        if spans is not None:
            spans[path] = (pos, pos + table.num_rows)
        pos += table.num_rows
        group_rows[g] += table.num_rows
    if pos < total:  # some files were skipped
        out = {k: v[:pos] for k, v in out.items()}
    for p in problems:
        log.warning("skipping kline file %s", p)
    return out, group_rows, problems


def keep_last_index(time: np.ndarray, then: np.ndarray | None = None) -> np.ndarray | None:
    """Indices that sort ``time`` ascending, keeping the last row of each duplicate time;
    ``None`` when ``time`` is already strictly ascending (the usual case: no copy needed).
    ``then``: a second key; among rows of one time the one with the largest ``then`` (of
    those, the last) is kept."""
    n = len(time)
    if n < 2 or bool(np.all(time[1:] > time[:-1])):
        return None
    order = np.argsort(time, kind="stable") if then is None else np.lexsort((then, time))
    sorted_time = time[order]
    last = np.ones(n, dtype=bool)
    last[:-1] = sorted_time[1:] != sorted_time[:-1]
    return order[last]


def floor_off_grid(time: np.ndarray, step_ms: int) -> np.ndarray | None:
    """Floor the open times off the interval grid onto it, in place; returns which rows were
    on the grid (None when every row was: the usual case, nothing changed).

    For the archive rows of gen_kline: a legacy BHDS ``parsed_data`` partition used in place
    keeps Binance's off-grid candles as the archive holds them (spot after the 2018-02-08
    outage, ``…:14.789``), which the parse floors since 2026-12-06 (docs/quality.md); before,
    every gen_kline of such a symbol failed (``candle at … is not on the … grid``) on a file
    the pipeline never rewrites. ``merge_store(on_grid=…)`` then lets a candle that was on
    the grid win its minute over a floored one, the rule of the parse's REST twin
    (``rest.klines.klines_to_table``)."""
    from crypto_lakehouse.intervals import grid_offset

    if not len(time):
        return None
    off = grid_offset(time, step_ms)
    if not off.any():
        return None
    time -= off
    return off == 0


def _traded_rows(
    time: np.ndarray, volume: np.ndarray, on_grid: np.ndarray | None = None
) -> np.ndarray:
    """Rows left after de-duplication (keep last; with ``on_grid``, a row that was on the
    grid before a floored one of its time), sorting and ``volume > 0``."""
    order = keep_last_index(time, on_grid)  # of one time, an on-grid row over a floored one
    if order is None:
        return np.flatnonzero(volume > 0)
    return order[volume[order] > 0]


def merge_store(
    store: dict[str, np.ndarray], n_archive: int, on_grid: np.ndarray | None = None
) -> Candles:
    """Legacy merge with ``exclude_empty=True`` over a store of archive then REST rows.

    Archive: de-duplicate (keep last), sort, keep volume > 0. REST: keep volume > 0. Then
    archive + REST de-duplicated keeping the last row, so REST wins on the same minute
    (and the later of two REST rows wins). Both parts being sorted after their own
    de-duplication, the union is a merge of two sorted arrays (no sort of the whole).
    ``on_grid`` (per archive row, from ``floor_off_grid``): a floored archive candle loses
    its minute to one that was on the grid, whatever their order.
    """
    time, volume = store[TIME], store["volume"]
    rows_a = _traded_rows(time[:n_archive], volume[:n_archive], on_grid)
    rows_r = n_archive + _traded_rows(time[n_archive:], volume[n_archive:])
    time_a, time_r = time[rows_a], time[rows_r]
    if len(time_r) and len(time_a):
        hit = np.minimum(np.searchsorted(time_r, time_a), len(time_r) - 1)
        kept = time_r[hit] != time_a  # archive minutes that REST does not replace
        if not kept.all():
            rows_a, time_a = rows_a[kept], time_a[kept]
    n_a, n_r = len(rows_a), len(rows_r)
    if n_r == 0:
        rows, merged_time = rows_a, time_a
    elif n_a == 0 or time_a[-1] < time_r[0]:  # REST only after the archive (the usual case)
        rows, merged_time = np.concatenate((rows_a, rows_r)), np.concatenate((time_a, time_r))
    else:
        pos_a = np.arange(n_a) + np.searchsorted(time_r, time_a)
        pos_r = np.arange(n_r) + np.searchsorted(time_a, time_r, side="right")
        rows = np.empty(n_a + n_r, dtype=np.int64)
        rows[pos_a], rows[pos_r] = rows_a, rows_r
        merged_time = time[rows]
    source = np.full(len(rows), SOURCE_ARCHIVE, dtype=np.int8)
    source[rows >= n_archive] = SOURCE_REST
    if len(rows) == len(time) and bool(np.all(rows[1:] > rows[:-1])):
        rows = None  # every store row kept, in order: work on the store itself
    return Candles(store=store, rows=rows, time=merged_time, source=source)


def merge_candles(archive: dict[str, np.ndarray], rest: dict[str, np.ndarray]) -> Candles:
    """``merge_store`` for two separate column dicts (archive, REST)."""
    store = {k: np.concatenate((archive[k], rest[k])) for k in KLINE_COLUMNS}
    return merge_store(store, len(archive[TIME]))
