"""Read one symbol's archive and REST candles and merge them (legacy §8.1).

Columns are handled as numpy arrays (times as int64 ms) because every later step
(gap scan, fill, checks) is a whole-column numpy operation; reading straight into
pre-allocated arrays keeps the peak memory near one copy of the data.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from crypto_lakehouse.schema import KLINE_COLUMNS, KLINE_SCHEMA

log = logging.getLogger(__name__)

TIME = "candle_begin_time"
SOURCE_ARCHIVE = 0
SOURCE_REST = 1


@dataclass
class Candles:
    """Column arrays of equal length; ``candle_begin_time`` is int64 ms UTC."""

    columns: dict[str, np.ndarray]
    source: np.ndarray  # int8 per row: SOURCE_ARCHIVE or SOURCE_REST
    problems: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.columns[TIME])

    @property
    def time(self) -> np.ndarray:
        return self.columns[TIME]


def _numpy_dtype(arrow_type: pa.DataType) -> np.dtype:
    return np.dtype("int64") if pa.types.is_timestamp(arrow_type) else arrow_type.to_pandas_dtype()


def _conformed(path: Path) -> pa.Table:
    """The file's ten kline columns cast to the legacy schema; ValueError names the defect."""
    table = pq.read_table(path)
    missing = [c for c in KLINE_COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"missing columns {missing}")
    table = table.select(list(KLINE_COLUMNS)).cast(KLINE_SCHEMA)
    for name in KLINE_COLUMNS:
        if table.column(name).null_count:
            raise ValueError(f"null values in column {name!r}")
    return table


def read_kline_files(paths: list[Path]) -> tuple[dict[str, np.ndarray], list[str]]:
    """Concatenate kline files in the given order into pre-allocated arrays.

    A file that cannot be read or has the wrong columns is skipped and named in the
    returned problem list, so one bad file never stops the symbol.
    """
    tables: list[tuple[Path, int]] = []
    problems: list[str] = []
    for path in paths:
        try:
            tables.append((path, pq.ParquetFile(path).metadata.num_rows))
        except Exception as exc:  # unreadable footer: any pyarrow/OS error
            problems.append(f"{path}: unreadable parquet ({exc})")
    total = sum(n for _, n in tables)
    out = {f.name: np.empty(total, dtype=_numpy_dtype(f.type)) for f in KLINE_SCHEMA}
    pos = 0
    for path, _ in tables:
        try:
            table = _conformed(path)
        except Exception as exc:
            problems.append(f"{path}: {exc}")
            continue
        n = table.num_rows
        for name in KLINE_COLUMNS:
            col = table.column(name)
            if name == TIME:
                col = col.cast(pa.int64())
            at = pos
            for chunk in col.chunks:  # copy each chunk once, straight into place
                out[name][at : at + len(chunk)] = chunk.to_numpy(zero_copy_only=False)
                at += len(chunk)
        pos += n
    if pos < total:  # some files were skipped
        out = {k: v[:pos] for k, v in out.items()}
    for p in problems:
        log.warning("skipping kline file %s", p)
    return out, problems


def keep_last_index(time: np.ndarray) -> np.ndarray | None:
    """Indices that sort ``time`` ascending, keeping the last row of each duplicate time;
    ``None`` when ``time`` is already strictly ascending (the usual case: no copy needed)."""
    n = len(time)
    if n < 2 or bool(np.all(time[1:] > time[:-1])):
        return None
    order = np.argsort(time, kind="stable")
    sorted_time = time[order]
    last = np.ones(n, dtype=bool)
    last[:-1] = sorted_time[1:] != sorted_time[:-1]
    return order[last]


def _traded_rows(candles: dict[str, np.ndarray]) -> np.ndarray | None:
    """Rows to keep after de-duplication and ``volume > 0``; ``None`` means all, in order."""
    order = keep_last_index(candles[TIME])
    volume = candles["volume"] if order is None else candles["volume"][order]
    traded = volume > 0
    if order is None:
        return None if traded.all() else np.flatnonzero(traded)
    return order[traded]


def _take(values: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
    return values if rows is None else values[rows]


def merge_candles(archive: dict[str, np.ndarray], rest: dict[str, np.ndarray]) -> Candles:
    """Legacy merge with ``exclude_empty=True``.

    Archive: de-duplicate (keep last), sort, keep volume > 0. REST: keep volume > 0. Then
    archive + REST de-duplicated keeping the last row, so REST wins on the same minute
    (and the later of two REST rows wins). Both inputs being sorted after their own
    de-duplication, the union is a merge of two sorted arrays (no sort of the whole).
    """
    rows_a = _traded_rows(archive)
    rows_r = _traded_rows(rest)
    time_a = _take(archive[TIME], rows_a)
    time_r = _take(rest[TIME], rows_r)
    if len(time_r) and len(time_a):
        hit = np.minimum(np.searchsorted(time_r, time_a), len(time_r) - 1)
        kept = time_r[hit] != time_a  # archive minutes that REST does not replace
        if not kept.all():
            rows_a = np.flatnonzero(kept) if rows_a is None else rows_a[kept]
            time_a = time_a[kept]
    n_a, n_r = len(time_a), len(time_r)
    # Position of every row in the merged, ascending result.
    pos_a = np.arange(n_a) + np.searchsorted(time_r, time_a)
    pos_r = np.arange(n_r) + np.searchsorted(time_a, time_r, side="right")
    archive_first = n_a == 0 or int(pos_a[-1]) == n_a - 1  # REST only after the archive
    columns: dict[str, np.ndarray] = {}
    for name in KLINE_COLUMNS:
        part_a = _take(archive[name], rows_a)
        if n_r == 0:
            columns[name] = part_a  # a view of the input when nothing was dropped
            continue
        merged = np.empty(n_a + n_r, dtype=part_a.dtype)
        if archive_first:
            merged[:n_a] = part_a
            merged[n_a:] = _take(rest[name], rows_r)
        else:
            merged[pos_a] = part_a
            merged[pos_r] = _take(rest[name], rows_r)
        columns[name] = merged
    source = np.full(n_a + n_r, SOURCE_ARCHIVE, dtype=np.int8)
    source[pos_r] = SOURCE_REST
    return Candles(columns=columns, source=source)
