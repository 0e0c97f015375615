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
            out[name][pos : pos + n] = col.to_numpy()
        pos += n
    if pos < total:  # some files were skipped
        out = {k: v[:pos] for k, v in out.items()}
    for p in problems:
        log.warning("skipping kline file %s", p)
    return out, problems


def keep_last_index(time: np.ndarray) -> np.ndarray:
    """Indices that sort ``time`` ascending, keeping the last row of each duplicate time."""
    n = len(time)
    if n < 2 or bool(np.all(time[1:] > time[:-1])):
        return np.arange(n)
    order = np.argsort(time, kind="stable")
    sorted_time = time[order]
    last = np.ones(n, dtype=bool)
    last[:-1] = sorted_time[1:] != sorted_time[:-1]
    return order[last]


def merge_candles(archive: dict[str, np.ndarray], rest: dict[str, np.ndarray]) -> Candles:
    """Legacy merge with ``exclude_empty=True``.

    Archive: de-duplicate (keep last), sort, keep volume > 0. REST: keep volume > 0.
    Then archive + REST, de-duplicate keeping the last, so REST wins on the same minute.
    """
    idx_a = keep_last_index(archive[TIME])
    idx_a = idx_a[archive["volume"][idx_a] > 0]
    idx_r = np.flatnonzero(rest["volume"] > 0)
    time = np.concatenate((archive[TIME][idx_a], rest[TIME][idx_r]))
    keep = keep_last_index(time)
    # Positions of the kept rows in the concatenation of the two full inputs.
    n_archive_total = len(archive[TIME])
    global_idx = np.concatenate((idx_a, n_archive_total + idx_r))[keep]
    from_archive = keep < len(idx_a)
    identity = len(rest[TIME]) == 0 and len(global_idx) == n_archive_total
    identity = identity and bool(np.all(global_idx == np.arange(n_archive_total)))
    columns: dict[str, np.ndarray] = {}
    for name in KLINE_COLUMNS:
        if identity:  # already sorted, unique and traded: no copy
            columns[name] = archive[name]
        elif len(rest[TIME]) == 0:
            columns[name] = archive[name][global_idx]
        else:
            columns[name] = np.concatenate((archive[name], rest[name]))[global_idx]
    source = np.where(from_archive, SOURCE_ARCHIVE, SOURCE_REST).astype(np.int8)
    return Candles(columns=columns, source=source)
