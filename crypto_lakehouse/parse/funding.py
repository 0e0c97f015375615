"""aws_parse for funding rates: verified monthly archives to one file per symbol.

Output: ``parsed_data/{T}/funding/{SYM}.pqt`` (legacy §5.2, schema §10.2 plus the archive's
``funding_interval_hours``). Legacy quirk Q13 is fixed: only verified archives are read,
rows are de-duplicated on ``funding_time`` keeping the last, and when no data remains the
output is removed rather than left stale.

Incremental like the klines: each archive owns its month; only months whose archive is new,
changed or gone are re-read, the rows of the other months are kept from the existing file
(which is small: about 90 rows per month at 8 h).

Rows no tracked archive ever owned (a legacy BHDS file used in place, months whose archives
lie outside the download range) are kept: only the months of archives parsed now, and of
tracked archives that left the report or were quarantined, are replaced or removed. So the
output is removed only when every row it held came from archives we tracked, and a file the
pipeline did not write that cannot be read is left as it is (its archives wait).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from crypto_lakehouse import io, layout, storage
from crypto_lakehouse.parse import (
    Timer,
    funding_written,
    load_download_report,
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
    read_csv_bytes,
    read_zip_member,
)
from crypto_lakehouse.parse.validate import (
    Period,
    archive_period,
    check_finite,
    check_times,
    format_ms,
)
from crypto_lakehouse.quarantine import quarantine_archive
from crypto_lakehouse.schema import PARSED_FUNDING_SCHEMA, TIME_TYPE

log = logging.getLogger(__name__)

DATASET = "funding"
HOUR_MS = 3_600_000

FUNDING_CSV = CsvSpec(
    names=("calc_time", "funding_interval_hours", "last_funding_rate"),
    types={
        "calc_time": pa.int64(),
        "funding_interval_hours": pa.int64(),
        "last_funding_rate": pa.float64(),
    },
    header_prefix=b"calc_time",
)


def _keep_last_per_time(ms: np.ndarray) -> np.ndarray:
    """Indices, in time order, of the last row of each distinct time (file order decides)."""
    order = np.argsort(ms, kind="stable")
    sorted_ms = ms[order]
    last = np.ones(ms.size, dtype=bool)
    last[:-1] = sorted_ms[1:] != sorted_ms[:-1]
    return order[last]


def read_funding_archive(
    path: str | Path,
    key: str,
    period: Period,
    timer: Timer | None = None,
    limit: InflateLimit = DEFAULT_INFLATE_LIMIT,
) -> tuple[pa.Table, int, int]:
    """One monthly archive as a table in the parsed funding schema, de-duplicated.

    Returns (table, CSV bytes, duplicate rows dropped). Raises ArchiveDefect naming ``key``
    and the first bad line.
    """
    timer = timer or Timer()
    with timer.step("read"):
        data = read_zip_member(path, key, limit)
        table, header_lines = read_csv_bytes(data, FUNDING_CSV, key)
    with timer.step("check"):
        raw = table.column("calc_time").to_numpy()
        # Funding times carry a few ms of jitter: no grid; repeats are resolved, not refused.
        hours = table.column("funding_interval_hours").to_numpy()

        def check_hours() -> None:
            if (hours <= 0).any():
                i = int(np.argmax(hours <= 0))
                line = i + 1 + header_lines
                raise ArchiveDefect(
                    f"{key}: line {line}: funding_interval_hours {int(hours[i])} "
                    "is not a positive number of hours",
                    line,
                )

        ms, _, _ = first_defect(
            lambda: check_times(raw, period, None, header_lines, key, reject_duplicates=False),
            lambda: check_finite(table, header_lines, key),
            check_hours,
        )
        keep = _keep_last_per_time(ms)
        ms = ms[keep]
        time_col = pa.array(ms).view(TIME_TYPE)
        hour_col = pa.array(ms - ms % HOUR_MS).view(TIME_TYPE)
        out = pa.Table.from_arrays(
            [
                time_col,
                pa.array(hours[keep]),
                pa.array(table.column("last_funding_rate").to_numpy()[keep]),
                hour_col,
            ],
            schema=PARSED_FUNDING_SCHEMA,
        )
    return out, len(data), int(raw.size - keep.size)


def _read_existing(path: Path) -> tuple[pa.Table | None, str | None]:
    """(table, None), (None, None) when absent, or (None, why it cannot be used)."""
    if not storage.exists(path):
        return None, None
    try:
        table = storage.read_parquet(path)
    except (OSError, pa.ArrowException) as exc:
        return None, f"unreadable ({exc})"
    if table.schema.remove_metadata() != PARSED_FUNDING_SCHEMA:
        return None, "not in the parsed funding schema"
    return table, None


def _outside_periods(table: pa.Table, periods: list[Period]) -> pa.Table:
    """Rows of ``table`` whose funding_time lies in none of ``periods`` (``table`` itself
    when that is every row)."""
    if not periods:
        return table
    ms = table.column("funding_time").cast(pa.int64()).to_numpy()
    inside = np.zeros(ms.size, dtype=bool)
    for p in periods:
        inside |= (ms >= p.start_ms) & (ms < p.end_ms)
    return table.filter(pa.array(~inside)) if inside.any() else table


def _summary(table: pa.Table | None) -> dict:
    if table is None or table.num_rows == 0:
        return {"rows": 0, "first": None, "last": None}
    ts = table.column("funding_time").cast(pa.int64())
    return {
        "rows": table.num_rows,
        "first": format_ms(ts[0].as_py()),
        "last": format_ms(ts[-1].as_py()),
    }


def _interval_counts(table: pa.Table | None) -> dict[str, int]:
    if table is None or table.num_rows == 0:
        return {}
    counts = pc.value_counts(table.column("funding_interval_hours")).to_pylist()
    return {str(c["values"]): int(c["counts"]) for c in sorted(counts, key=lambda c: c["values"])}


def run_parse_funding(
    *,
    trade_type,
    symbol,
    data_dir,
    download_report,
    report_path,
    stats_path,
    max_inflate_ratio: float = DEFAULT_INFLATE_LIMIT.ratio,
    max_inflated_bytes: int = DEFAULT_INFLATE_LIMIT.ceiling,
) -> dict:
    """Parse one symbol's verified funding archives (entry point of rule ``aws_parse_funding``).

    Returns the run stats (also written to ``stats_path``); the deterministic report goes to
    ``report_path``: ``{"trade_type", "symbol", "dataset", "rows", "first", "last", "files",
    "quarantined", "quality"}``.
    """
    timer = Timer()
    limit = InflateLimit(max_inflate_ratio, max_inflated_bytes)
    out_path = layout.parsed_funding_path(data_dir, trade_type, symbol)
    storage.remove_stale_temps_of(out_path)  # the folder is shared by every symbol's job
    state_path = state_file(data_dir, trade_type, DATASET, symbol)
    state = storage.read_state(state_path)
    periods: dict[str, Period] = {}

    def belongs(key: str) -> bool:
        period = archive_period(key, layout.archive_stem_prefix(DATASET, symbol))
        if period is None or not period.is_month:
            return False
        if not layout.is_archive_key_of(key, trade_type, DATASET, symbol):
            return False
        periods[key] = period
        return True

    sel = select_archives(
        load_download_report(download_report), data_dir, state.get("quarantined") or {}, belongs
    )
    old_files = {k: v for k, v in (state.get("files") or {}).items() if belongs(k)}
    old_dups: dict[str, int] = dict(state.get("duplicates") or {})
    existing, problem = _read_existing(out_path)
    state_has_rows = bool((state.get("output") or {}).get("rows"))
    written_by_us = funding_written(state) and storage.exists(out_path)
    untracked_output = None
    if problem and not written_by_us:
        # Not ours and not readable: overwriting it would lose rows nobody can rebuild.
        untracked_output = f"{problem}; not overwritten: move it away to parse the archives"
        log.error("%s is %s", out_path, untracked_output)
    elif problem:
        log.warning("funding file %s is %s; rebuilding it", out_path, problem)
    # Without a trustworthy existing file (or state) every archive is read again.
    full_rebuild = existing is None and (state_has_rows or storage.exists(out_path)) or not state

    changed = sorted(k for k, sha in sel.usable.items() if full_rebuild or old_files.get(k) != sha)
    gone = sorted(k for k in old_files if k not in sel.usable)
    waiting = changed if untracked_output else []
    if untracked_output:
        changed, gone = [], []

    quarantined_now: dict[str, dict] = {}
    new_tables: list[pa.Table] = []
    dups = {k: n for k, n in old_dups.items() if k in sel.usable}
    files_parsed = csv_bytes = 0
    for key in changed:
        path = layout.aws_path(data_dir, key)
        try:
            table, n, dropped = read_funding_archive(path, key, periods[key], timer, limit)
        except ArchiveDefect as exc:
            reason = str(exc)
            log.error("quarantined %s", reason)
            quarantine_archive(data_dir, key, reason)
            quarantined_now[key] = {"sha256": sel.usable[key], "reason": reason}
            dups.pop(key, None)
            continue
        files_parsed += 1
        csv_bytes += n
        dups[key] = dropped
        if dropped:
            log.warning("%s: %d repeated funding_time rows dropped (kept the last)", key, dropped)
        new_tables.append(table)

    usable = {k: v for k, v in sel.usable.items() if k not in quarantined_now and k not in waiting}
    result = existing
    written = written_by_us
    # Months re-read now, and months of tracked archives that are gone or quarantined; a new
    # archive found defective replaces nothing (rows of its month, if any, are not ours).
    replaced = [periods[k] for k in changed if k in usable]
    replaced += [periods[k] for k in old_files if k not in usable]
    kept = None if existing is None else _outside_periods(existing, replaced)
    if untracked_output or (not new_tables and kept is not None and kept is existing):
        pass  # nothing to add, nothing of ours to take away: the file stays as it is
    elif changed or gone or full_rebuild:
        with timer.step("write"):
            parts = [p for p in [kept, *new_tables] if p is not None and p.num_rows]
            if parts:
                combined = pa.concat_tables(parts)
                ms = combined.column("funding_time").cast(pa.int64()).to_numpy()
                result = combined.take(pa.array(_keep_last_per_time(ms)))
                storage.write_parquet(out_path, result)
                written = True
            else:
                # Every row it held came from archives we tracked, and they are gone.
                result = None
                written = False
                storage.delete(out_path)

    output = _summary(result)
    bad = {k: v for k, v in (state.get("quarantined") or {}).items() if k not in usable}
    bad.update(quarantined_now)
    storage.write_json(
        state_path,
        {
            "files": dict(sorted(usable.items())),
            "duplicates": dict(sorted((k, v) for k, v in dups.items() if k in usable)),
            "output": output,
            "written": written,
            "quarantined": dict(sorted(bad.items())),
        },
    )
    found_now = {k: v["reason"] for k, v in quarantined_now.items()}
    report = {
        "trade_type": trade_type,
        "symbol": symbol,
        "dataset": DATASET,
        **output,
        "files": dict(sorted(usable.items())),
        "quarantined": reported_quarantine(sel, found_now),
        "quality": {
            "duplicates_dropped": sum(v for k, v in dups.items() if k in usable),
            "funding_interval_hours": _interval_counts(result),
        },
        "untracked_output": untracked_output,
    }
    io.write_json(report_path, report)
    stats = {
        "trade_type": trade_type,
        "symbol": symbol,
        "dataset": DATASET,
        "files_parsed": files_parsed,
        "files_unchanged": len(usable) - files_parsed,
        "files_unverified": sorted(sel.unverified),
        "files_ignored": len(sel.ignored),
        "files_quarantined": len(quarantined_now),
        "files_waiting": waiting,
        "quarantined": found_now,
        "csv_bytes": csv_bytes,
        **throughput_stats(timer, csv_bytes),
    }
    io.write_json(stats_path, stats)
    log.info(
        "%s %s funding: %d files parsed, %d quarantined, %d rows",
        trade_type,
        symbol,
        files_parsed,
        len(quarantined_now),
        output["rows"],
    )
    return stats
