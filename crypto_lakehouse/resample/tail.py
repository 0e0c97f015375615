"""Tail build of resample (issue 11): only the windows that touch changed 1m rows.

``run_resample`` records (``layout.state_path``, stage ``resample_resume``) the size and
mtime of every 1m segment file it read and of every file it wrote, with their report
entries. On the next run a segment file whose size and mtime did not change keeps its
outputs as they are. A segment file that gen_kline rewrote by a tail build says so in
gen_kline's record (``generate.tail``): its first ``stable_rows`` rows are those of the
version this job last read. Then for every target and offset the windows that end at or
before the first changed minute are kept from the previous output and the rest (the last,
possibly partial, window included) are computed from the 1m rows they cover; the file is
rewritten from both parts (keeping its untouched row groups, ``parquet_append``). Anything
else (other targets or aggregations, an output changed or missing, another schema) takes
the full path for that segment. The tests compare the bytes with a full build.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from crypto_lakehouse import layout, storage
from crypto_lakehouse.generate import parquet_append
from crypto_lakehouse.resample.windows import TIME, first_full_window

RECORD_STAGE = "resample_resume"
# Row groups of the resampled files. A tail build re-encodes the last, partial group and
# merges the footer of the kept ones in Python (parquet_append), so the cost of a daily
# update is ~ (rows per group) / 2 encoded plus (groups x columns) footer entries. 16,384
# rows (~1.9 years of 1h, ~57 days of 5m) is near the least of both for the default
# targets: a one-day tail of 12 x 1h + 5m files went from 0.23 s (2^17 rows, every 1h
# file rewritten whole) to 0.15 s (docs/benchmarks.md, seventeenth part).
ROW_GROUP_ROWS = 1 << 14
RECORD_VERSION = 1


def record_path(data_dir, trade_type: str, symbol: str, interval: str) -> Path:
    from crypto_lakehouse import datasets

    dataset = datasets.tag(datasets.KLINES.name, interval)
    return layout.state_path(data_dir, RECORD_STAGE, trade_type, dataset, symbol)


def params_of(targets, aggregations, interval: str) -> dict:
    return {
        "targets": targets,
        "aggregations": aggregations,
        "interval": interval,
        "row_group_rows": ROW_GROUP_ROWS,
        "pyarrow": pa.__version__,
    }


def current_identities(data_dir, recorded: dict) -> dict:
    """``{output file: its identity now}`` of the outputs a record lists, asked all at once
    (on S3 concurrent HEADs: the output folders hold every symbol's files)."""
    paths = {f: storage.join(data_dir, f) for f in recorded}
    now = storage.identities(list(paths.values()), by_listing=False)
    return {f: now[p] for f, p in paths.items()}


def outputs_intact(entry: dict, recorded: dict, current: dict) -> bool:
    """Every output of a recorded segment still has the recorded identity (size and
    mtime, or size and ETag on S3): ``recorded`` from the record, ``current`` from
    :func:`current_identities`."""
    for out in entry["outputs"]:
        ident = recorded.get(out["file"])
        if ident is None or current.get(out["file"]) != ident:
            return False
    return True


def stable_rows(
    data_dir, trade_type, symbol, interval, out_file: str, read_identity, record: dict | None = None
) -> int:
    """Leading rows of the resampled file ``out_file`` unchanged since its version of
    identity ``read_identity`` (0: unknown), from this stage's record of its last run: a
    tail build keeps the windows before the first changed minute (features reads it)."""
    if record is None:
        record = storage.read_state(record_path(data_dir, trade_type, symbol, interval))
    entry = (record.get("stable") or {}).get(out_file)
    if not entry or entry["identity"] != read_identity:
        return 0
    return int(entry["rows"])


def read_rows_from(path: Path, first_row: int) -> tuple[dict[str, np.ndarray], pa.Schema, int]:
    """The columns of ``path`` from the start of the row group holding ``first_row`` to the
    end (times as int64 ms), the schema and the row the arrays start at."""
    parquet = storage.parquet_file(path)
    sizes = [parquet.metadata.row_group(i).num_rows for i in range(parquet.num_row_groups)]
    starts = np.cumsum([0, *sizes])
    group = max(0, int(np.searchsorted(starts, first_row, side="right")) - 1)
    group = min(group, max(0, len(sizes) - 1))
    table = parquet.read_row_groups(list(range(group, len(sizes))))
    columns = {}
    for field in table.schema:
        col = table.column(field.name)
        if col.null_count:
            raise ValueError(f"{path}: column {field.name!r} has null values")
        if pa.types.is_timestamp(field.type):
            col = col.cast(pa.int64())
        columns[field.name] = col.to_numpy()
    return columns, parquet.schema_arrow, int(starts[group])


def kept_windows(old_rows: int, grid0: int, stable_ms: int, ri_ms: int, offset_ms: int) -> int:
    """How many leading windows of a previous output lie wholly before ``stable_ms``."""
    w0 = first_full_window(grid0, ri_ms, offset_ms)
    if stable_ms - ri_ms < w0:
        return 0
    return min(old_rows, (stable_ms - ri_ms - w0) // ri_ms + 1)


def write_joined(path: Path, kept: int, tail: pa.Table, metadata: dict[str, str]) -> pa.Table:
    """``path`` rewritten as its first ``kept`` rows followed by ``tail``; the same bytes as
    ``write_output`` of the whole table (untouched row groups are copied, not decoded)."""
    rg = ROW_GROUP_ROWS
    keep_groups = kept // rg
    head = storage.parquet_file(path)
    groups = range(keep_groups, head.num_row_groups)
    old = head.read_row_groups(list(groups)) if kept > keep_groups * rg else None
    parts = []
    if old is not None:
        parts.append(old.slice(0, kept - keep_groups * rg).replace_schema_metadata(None))
    parts.append(tail)
    rest = pa.concat_tables(parts).combine_chunks() if len(parts) > 1 else tail
    parquet_append.append_rows(
        path, path, keep_groups, rest, metadata=metadata, rows_per_group=rg, use_dictionary=False
    )
    return rest


def window_times(first_ms: int, rows: int, ri_ms: int) -> tuple[int | None, int | None]:
    if not rows:
        return None, None
    return first_ms, first_ms + (rows - 1) * ri_ms


__all__ = [
    "RECORD_STAGE",
    "TIME",
    "kept_windows",
    "current_identities",
    "outputs_intact",
    "params_of",
    "read_rows_from",
    "record_path",
    "stable_rows",
    "window_times",
    "write_joined",
]
