"""``run_resample``: every segment file of one symbol to every target interval and offset."""

from __future__ import annotations

import json
import logging
import time as clock
from pathlib import Path

import numpy as np
import pyarrow as pa

from crypto_lakehouse import io, layout, storage
from crypto_lakehouse.generate import tail as gen_tail
from crypto_lakehouse.generate.outputs import SUFFIX, iso_ms, remove_stale_in
from crypto_lakehouse.generate.vwap import vwap_column_name
from crypto_lakehouse.intervals import interval_ms
from crypto_lakehouse.resample import owned as ownership
from crypto_lakehouse.resample import tail
from crypto_lakehouse.resample.targets import (
    reserved_columns,
    validate_aggregations,
    validate_targets,
)
from crypto_lakehouse.resample.validation import ResampleValidationError, validate
from crypto_lakehouse.resample.windows import (
    FUNDING_PRICE,
    FUNDING_RATE,
    FUNDING_TIME,
    TIME,
    Resampled,
    check_contiguous,
    first_full_window,
    resample,
)
from crypto_lakehouse.schema import KLINE_SCHEMA, TIME_TYPE, epoch_ms, numpy_dtype
from crypto_lakehouse.shards import DamagedInput, read_report, reading_output_of

log = logging.getLogger(__name__)

OUTPUTS_AT_ONCE = 8  # a tail build's outputs of one segment written at the same time (S3)
# On a local disk with storage.fsync on: each output waits for its fsync before its rename
# (a journal commit: ~0.3 ms on a quiet disk, 2-5 ms while other writers share it), 13 of
# them one after another per symbol. Written a few at a time, their fsyncs share commits and
# the core computes the next output meanwhile (GIL released in the fsync and Parquet writes).
LOCAL_OUTPUTS_AT_ONCE = 4


def read_columns(path: Path) -> tuple[dict[str, np.ndarray], pa.Schema]:
    """All columns of a generated file as numpy arrays (times as int64 ms).

    Row groups are read one at a time into pre-allocated arrays, so the data is held
    once plus one row group (reading the whole table first would hold it twice).
    """
    parquet = storage.parquet_file(path)
    schema = parquet.schema_arrow
    n = parquet.metadata.num_rows
    columns = {f.name: np.empty(n, dtype=numpy_dtype(f.type)) for f in schema}
    at = 0
    for i in range(parquet.num_row_groups):
        group = parquet.read_row_group(i)
        for field in schema:
            col = group.column(field.name)
            if col.null_count:
                raise ValueError(f"{path}: column {field.name!r} has null values")
            if pa.types.is_timestamp(field.type):
                col = epoch_ms(col)
            pos = at
            for chunk in col.chunks:
                columns[field.name][pos : pos + len(chunk)] = chunk.to_numpy(zero_copy_only=False)
                pos += len(chunk)
        at += group.num_rows
        del group
    return columns, schema


def output_table(
    result: Resampled, in_schema: pa.Schema, vwap_col: str, aggs: dict[str, str], extra: list[str]
) -> pa.Table:
    """Legacy §10.6 column order, then the added columns in ``aggregations`` order."""
    fields = list(KLINE_SCHEMA)
    if vwap_col in result.columns:
        fields.append(pa.field(vwap_col, pa.float64()))
    if FUNDING_RATE in result.columns:
        fields += [
            pa.field(FUNDING_RATE, pa.float64()),
            pa.field(FUNDING_PRICE, pa.float64()),
            pa.field(FUNDING_TIME, TIME_TYPE),
        ]
    for name in extra:
        if aggs[name] in ("first", "last", "max", "min"):
            fields.append(in_schema.field(name))
        else:  # sum or mean: the dtype numpy produced (int64 sums, float64 means)
            fields.append(pa.field(name, pa.from_numpy_dtype(result.columns[name].dtype)))
    arrays = []
    for f in fields:
        values = result.columns[f.name]
        mask = ~result.valid[f.name] if f.name in result.valid else None
        if pa.types.is_timestamp(f.type):
            arrays.append(pa.array(values, type=pa.int64(), mask=mask).view(f.type))
        else:
            arrays.append(pa.array(values, type=f.type, mask=mask))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


# Why a kept file is in the loaders' record (``kept_record``), as their warning says it.
KEPT_REASON = (
    "a resampled file this pipeline did not write (a legacy data dir's), at a target or "
    "offset the config does not list: the resample runs leave it as it is"
)


def kept_record(trade_type: str, symbol: str, kept: list[str]) -> dict:
    """The record of ``layout.stale_resampled_path``: per kept file (relative to the data
    dir) why it is kept, and when the resample run that recorded these files ran (UTC;
    written again only when the kept files change)."""
    return {
        "kind": "resampled_klines",
        "trade_type": trade_type,
        "symbol": symbol,
        "recorded_at": clock.strftime("%Y-%m-%dT%H:%M:%SZ", clock.gmtime()),
        "files": {rel: KEPT_REASON for rel in sorted(kept)},
    }


def _segments(gen_report, symbol: str) -> list[dict]:
    if gen_report is None:
        return []
    report = read_report(gen_report, "gen_kline")
    if report.get("symbol") != symbol:
        raise ValueError(
            f"gen_kline report {gen_report} is for {report.get('symbol')!r}, not {symbol!r}"
        )
    return list(report.get("segments", []))


def _kept_record_there(data_dir, trade_type: str, symbol: str, marker) -> bool:
    """Whether the symbol's record of kept files (``marker``) is there: from the shard job's
    one listing of the records (``layout.symbols_with_record``), or asked alone outside a
    job."""
    listed = layout.symbols_with_record(data_dir, trade_type, layout.STALE_RESAMPLED_NAME)
    return storage.exists(marker) if listed is None else symbol in listed


@storage.uploads_in_background  # S3: PUTs overlap the work; barrier before records
def run_resample(
    *,
    trade_type: str,
    symbol: str,
    interval: str,
    data_dir,
    gen_report,
    targets,
    aggregations=None,
    report_path,
    stats_path,
    incremental: bool = False,
) -> dict:
    """Resample each segment file listed in ``gen_report`` to every target and offset and
    write ``results_data/{T}/resampled_klines/{RI}/{OFFSET}/{NAME}.pqt``.

    Of the symbol's resampled files that this call does not write (a segment that
    disappeared, a target or offset no longer configured), those an earlier run of the
    pipeline wrote, and any in the folder of a configured target and offset, are removed;
    the others (legacy files of a data dir used in place) are kept and listed under ``kept``
    (``resample.owned``). With no ``targets`` (the trade type's were all removed from the
    config) it writes nothing and removes those the pipeline wrote.
    Raises ResampleValidationError, after all other files, the report and the stats are
    written, when an output disagrees with its source; that output is not kept.
    """
    started = clock.perf_counter()
    step_ms = interval_ms(interval)
    plan = validate_targets(targets, base_interval=interval) if targets else []
    vwap_col = vwap_column_name(interval)
    reserved = reserved_columns(interval)  # checked at start-up too (plan.check_config)
    aggs = validate_aggregations(aggregations, reserved=reserved)
    segments = _segments(gen_report, symbol) if plan else []  # none: nothing to read
    root = layout.resampled_root(data_dir, trade_type)

    outputs, failures, dropped = [], [], {}
    written: dict[Path, set[str]] = {}
    seconds = {"read": 0.0, "resample": 0.0, "validate": 0.0, "write": 0.0}
    params = tail.params_of(targets, aggregations, interval)
    record_file = tail.record_path(data_dir, trade_type, symbol, interval)
    # Before the tail record goes (it tells the files of runs before the ownership record).
    recorded, stale_recorded = ownership.read_record_and_mark(data_dir, trade_type, symbol)
    if recorded is None:
        owned = ownership.files_before_the_record(data_dir, trade_type, symbol)
    else:
        owned = set(recorded)
    data = storage.data_path(data_dir)
    configured = {
        layout.resampled_dir(data, trade_type, t.interval, o.name) for t in plan for o in t.offsets
    }
    configured_rel = {d.relative_to(data).as_posix() for d in configured}
    planned = {
        (d / f"{seg['name']}{SUFFIX}").relative_to(data).as_posix()
        for seg in segments
        for d in configured
    }
    if recorded is None or not planned <= owned:  # before they are written: a killed job
        owned |= planned  # leaves none of its files unrecorded
        ownership.write(data_dir, trade_type, symbol, owned, stale_record=stale_recorded)
        recorded = set(owned)
    record = storage.read_state(record_file) if incremental else None
    storage.delete(record_file)  # a failed run leaves no record behind
    if not record or record.get("version") != tail.RECORD_VERSION or record["params"] != params:
        record = None
    # The recorded outputs' identities now, asked once (kept outputs reuse them below).
    current = tail.current_identities(data_dir, record["outputs"]) if record else {}
    unchanged: set[str] = set()  # outputs kept as they are: their identity is current's
    seg_records: dict[str, dict] = {}
    stable: dict[str, dict] = {}  # output file -> its rows a tail build kept (tail.stable_rows)
    modes = {"kept": 0, "tail": 0, "full": 0}
    damaged: list[DamagedInput] = []  # of the failures, those of a gen_kline file
    # A full build's outputs are written a few at a time on a local disk with fsync on
    # (OutputWrites), as a tail build's are; every one is written before the records.
    with OutputWrites(_local_outputs_at_once(data_dir)) as writes:
        for seg in segments:
            name = seg["name"]
            t0 = clock.perf_counter()
            seg_path = storage.join(data_dir, seg["file"])
            identity = gen_tail.file_identity(seg_path)
            prev = (record or {}).get("segments", {}).get(name)
            if (
                prev
                and identity
                and prev["file"] == seg["file"]
                and tail.outputs_intact(prev, record["outputs"], current)
            ):
                done = None
                if prev["identity"] == identity:
                    done = prev["outputs"]
                    unchanged.update(o["file"] for o in done)
                    modes["kept"] += 1
                else:
                    r_s = gen_tail.stable_rows(
                        data_dir, trade_type, symbol, interval, seg["file"], prev["identity"]
                    )
                    if r_s:
                        try:
                            done = _tail_segment(
                                data_dir, seg, prev, r_s, plan, step_ms, vwap_col, aggs, reserved
                            )
                            stable.update(
                                {
                                    o["file"]: {"identity": record["outputs"][o["file"]], "rows": k}
                                    for o, k in done
                                }
                            )
                            done = [o for o, _ in done]
                            modes["tail"] += 1
                        except Exception as exc:  # the full path below is always exact
                            log.info("%s: tail resample not possible (%s), full", seg["file"], exc)
                if done is not None:
                    for o in done:
                        out_dir = layout.resampled_dir(
                            data_dir, trade_type, o["interval"], o["offset"]
                        )
                        written.setdefault(out_dir, set()).add(name)
                    outputs.extend(done)
                    if prev.get("dropped"):
                        dropped[name] = prev["dropped"]
                    seg_records[name] = {
                        "file": seg["file"],
                        "identity": identity,
                        "outputs": done,
                        "dropped": prev.get("dropped"),
                    }
                    continue
            modes["full"] += 1
            n_before = len(outputs)
            try:
                with reading_output_of("gen_kline", seg_path):
                    columns, in_schema = read_columns(seg_path)
                check_contiguous(columns[TIME], step_ms)
            except Exception as exc:  # reported; the other segments still run
                failures.append(f"{seg['file']}: {exc}")
                if isinstance(exc, DamagedInput):
                    damaged.append(exc)
                continue
            known = set(reserved) | set(aggs)
            unused = sorted(set(columns) - known)
            if unused:  # legacy drops columns it has no rule for; say so
                log.warning(
                    "%s: columns without an aggregation are dropped: %s", seg["file"], unused
                )
                dropped[name] = unused
            extra = [c for c in aggs if c in columns]
            seconds["read"] += clock.perf_counter() - t0
            for target in plan:
                for offset in target.offsets:
                    t1 = clock.perf_counter()
                    out_dir = layout.resampled_dir(
                        data_dir, trade_type, target.interval, offset.name
                    )
                    path = out_dir / f"{name}{SUFFIX}"
                    rel = path.relative_to(storage.data_path(data_dir)).as_posix()
                    result = resample(
                        columns,
                        step_ms,
                        target.interval_ms,
                        offset.ms,
                        vwap_col,
                        aggs,
                        contiguous_checked=True,
                    )
                    t2 = clock.perf_counter()
                    try:
                        checks = validate(
                            rel, columns, result, step_ms, target.interval_ms, offset.ms
                        )
                    except ResampleValidationError as exc:
                        log.error("resample validation failed: %s", exc)
                        failures.append(str(exc))
                        continue
                    t3 = clock.perf_counter()
                    metadata = {
                        "interval": target.interval,
                        "offset": offset.name,
                        "source_file": seg["file"],
                        "validation": json.dumps(checks, sort_keys=True),
                    }
                    table = output_table(result, in_schema, vwap_col, aggs, extra)
                    # Plain encoding, as for the 1m files (dictionary pages do not pay off).
                    writes.submit(write_output, path, table, metadata)
                    written.setdefault(out_dir, set()).add(name)
                    seconds["resample"] += t2 - t1
                    seconds["validate"] += t3 - t2
                    seconds["write"] += clock.perf_counter() - t3
                    out_time = result.columns[TIME]
                    outputs.append(
                        {
                            "interval": target.interval,
                            "offset": offset.name,
                            "name": name,
                            "file": rel,
                            "rows": len(result),
                            "first": iso_ms(out_time[0]) if len(result) else None,
                            "last": iso_ms(out_time[-1]) if len(result) else None,
                        }
                    )
            seg_records[name] = {
                "file": seg["file"],
                "identity": identity,
                "outputs": outputs[n_before:],
                "dropped": dropped.get(name),
            }
        waiting_from = clock.perf_counter()
    # The wait for the last writes counts as writing (a submit's wait for a slot does too).
    seconds["write"] += clock.perf_counter() - waiting_from
    kept: list[str] = []  # stale files the pipeline did not write: legacy's, never removed

    def owns(path) -> bool:
        rel = path.relative_to(data).as_posix()
        if rel in owned or rel.rsplit("/", 1)[0] in configured_rel:
            return True
        kept.append(rel)
        return False

    removed = [
        p.relative_to(data).as_posix()
        for p in remove_stale_in(layout.output_folders(root, depth=2), symbol, written, owns)
    ]
    # Every file of the symbol the pipeline wrote and still holds is one of this run's.
    holds = {o["file"] for o in outputs}
    # What the loaders warn about (load_klines with resample, the view resampled_klines):
    # the kept files, which they would otherwise read as current. Written or removed only
    # when the kept files change (the ownership record notes which are recorded); the
    # ownership record says a record may exist before it is written, and until it is
    # removed, so that a killed job never leaves one that no later run removes.
    kept_now = ownership.kept_digest(kept)
    marker = layout.stale_resampled_path(data_dir, trade_type, symbol)
    # The same kept files, and their record deleted by hand (``rm -rf
    # lakehouse/stale_features``, or the symbol's): written again. Asked only when a symbol
    # keeps files, never in a data dir without legacy files: one listing of the trade
    # type's records per shard job (on S3 one LIST), not a request per symbol.
    if kept and kept_now == stale_recorded:
        if not _kept_record_there(data_dir, trade_type, symbol, marker):
            storage.write_json(marker, kept_record(trade_type, symbol, kept))
    elif kept_now != stale_recorded:
        if kept:
            if stale_recorded is None:
                ownership.write(data_dir, trade_type, symbol, recorded, stale_record="pending")
            storage.write_json(marker, kept_record(trade_type, symbol, kept))
        else:
            storage.delete(marker)
    if holds != recorded or kept_now != stale_recorded:
        ownership.write(data_dir, trade_type, symbol, holds, stale_record=kept_now)
    if kept:
        log.info(
            "%s %s: %d resampled file(s) this pipeline did not write kept (e.g. %s)",
            trade_type,
            symbol,
            len(kept),
            min(kept),
        )
    report = {
        "trade_type": trade_type,
        "symbol": symbol,
        "interval": interval,
        "targets": [{"interval": t.interval, "offsets": [o.name for o in t.offsets]} for t in plan],
        "outputs": outputs,
        "removed": sorted(removed),
        "kept": sorted(kept),
        "dropped_columns": dropped,
        "failures": failures,
    }
    io.write_json(report_path, report)
    stats = {
        "trade_type": trade_type,
        "symbol": symbol,
        "interval": interval,
        "seconds": {k: round(v, 4) for k, v in seconds.items()}
        | {"total": round(clock.perf_counter() - started, 4)},
        "segments": len(segments),
        # The outputs of kept segments (unchanged input: their files left as they are) are
        # held, not written (incremental.py adds files_held): the report's "files written".
        "files_written": sum(o["file"] not in unchanged for o in outputs),
        "rows_written": sum(o["rows"] for o in outputs if o["file"] not in unchanged),
        "files_removed": len(removed),
        "failures": failures,
    }
    stats["segments_by_mode"] = modes
    io.write_json(stats_path, stats)
    if damaged:  # the shard job has the file rebuilt, then reruns this (shards.py)
        raise damaged[0]
    if failures:
        raise ResampleValidationError("; ".join(failures))
    rewritten = {o["file"]: None for o in outputs if o["file"] not in unchanged}
    identities = {f: current[f] for f in unchanged} | tail.current_identities(data_dir, rewritten)
    storage.write_json(
        record_file,
        {
            "version": tail.RECORD_VERSION,
            "params": params,
            "segments": seg_records,
            "stable": stable,
            "outputs": {o["file"]: identities[o["file"]] for o in outputs},
        },
    )
    return stats


def _local_outputs_at_once(data_dir) -> int:
    """Outputs of a full build written at the same time: LOCAL_OUTPUTS_AT_ONCE on a local
    disk with fsync on, else one after another (on S3 the uploads already overlap the work:
    ``storage.uploads_in_background``)."""
    if storage.is_remote(data_dir) or not io.fsync_enabled():
        return 1
    return LOCAL_OUTPUTS_AT_ONCE


class OutputWrites:
    """Writes submitted in order, up to ``at_once`` running at a time on threads (1: each
    runs at once in the calling thread, as before 2026-12-07).

    Each output of a full build waited for its fsync before its rename, then the next one
    was computed: 13 outputs per segment, each fsync a journal commit of its own (~0.4 ms
    on this machine's quiet disk, several ms while other writers share it). A few at a time,
    their fsyncs share commits and the next output is computed meanwhile (the Parquet
    encode and the fsync release the GIL). At most ``at_once`` tables wait in memory. Leaving
    the ``with`` block waits for every write; the first failure is raised then (or as soon
    as a later submit finds it), unless another exception is leaving the block."""

    def __init__(self, at_once: int):
        self.at_once = max(1, int(at_once))
        self._pool = None
        self._running: list = []

    def __enter__(self) -> OutputWrites:
        if self.at_once > 1:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(self.at_once, thread_name_prefix="resample-write")
        return self

    def submit(self, func, *args) -> None:
        if self._pool is None:
            func(*args)
            return
        while len(self._running) >= self.at_once:
            self._running.pop(0).result()
        self._running.append(self._pool.submit(func, *args))

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._pool is None:
            return
        self._pool.shutdown(wait=True)
        running, self._running = self._running, []
        if exc_type is None:
            for future in running:
                future.result()


def write_output(path: Path, table: pa.Table, metadata: dict[str, str]) -> None:
    """Plain encoding, as for the 1m files (dictionary pages do not pay off), and fixed
    row groups, so that a tail build can keep the unchanged ones (parquet_append)."""
    storage.write_parquet(
        path,
        table,
        metadata=metadata,
        use_dictionary=False,
        row_group_size=tail.ROW_GROUP_ROWS,
    )


def _tail_segment(data_dir, seg, prev, r_s, plan, step_ms, vwap_col, aggs, reserved) -> list:
    """Recompute the windows of one segment from its first changed row (``resample.tail``);
    returns the report entries, each with the number of leading rows it kept. Raises when
    only the full path is exact."""
    seg_path = storage.join(data_dir, seg["file"])
    grid0 = int(np.datetime64(seg["first"].rstrip("Z"), "ms").astype(np.int64))
    stable_ms = grid0 + r_s * step_ms
    old = {(o["interval"], o["offset"]): o for o in prev["outputs"]}
    jobs = []
    for target in plan:
        for offset in target.offsets:
            entry = old[(target.interval, offset.name)]
            kept = tail.kept_windows(entry["rows"], grid0, stable_ms, target.interval_ms, offset.ms)
            w0 = first_full_window(grid0, target.interval_ms, offset.ms)
            start_row = (w0 + kept * target.interval_ms - grid0) // step_ms
            jobs.append((target, offset, entry, kept, w0, start_row))
    first_row = min(j[-1] for j in jobs)
    columns, in_schema, base = tail.read_rows_from(seg_path, first_row)
    if len(columns[TIME]) and int(columns[TIME][0]) != grid0 + base * step_ms:
        raise ValueError("the segment does not start where the report says")
    check_contiguous(columns[TIME], step_ms)
    extra = [c for c in aggs if c in columns]

    def one_output(job) -> tuple[dict, int]:
        target, offset, entry, kept, w0, start_row = job
        at = max(0, start_row - base)
        sub = {k: v[at:] for k, v in columns.items()}
        path = storage.join(data_dir, entry["file"])
        result = resample(
            sub, step_ms, target.interval_ms, offset.ms, vwap_col, aggs, contiguous_checked=True
        )
        checks = validate(entry["file"], sub, result, step_ms, target.interval_ms, offset.ms)
        rows = kept + len(result)
        checks["windows"] = str(rows)
        metadata = {
            "interval": target.interval,
            "offset": offset.name,
            "source_file": seg["file"],
            "validation": json.dumps(checks, sort_keys=True),
        }
        tail.write_joined(
            path, kept, output_table(result, in_schema, vwap_col, aggs, extra), metadata
        )
        first, last = tail.window_times(w0, rows, target.interval_ms)
        return (
            {
                "interval": target.interval,
                "offset": offset.name,
                "name": seg["name"],
                "file": entry["file"],
                "rows": rows,
                "first": iso_ms(first) if rows else None,
                "last": iso_ms(last) if rows else None,
            },
            kept,
        )

    # On S3 each output's previous footer, kept rows and copy are round trips of their
    # own (~8): the outputs of the segment go at the same time. Locally a few at a time
    # while each waits for its fsync (LOCAL_OUTPUTS_AT_ONCE); one after another without.
    if storage.is_remote(seg_path):
        at_once = OUTPUTS_AT_ONCE
    else:
        at_once = LOCAL_OUTPUTS_AT_ONCE if io.fsync_enabled() else 1
    return storage.concurrently(one_output, jobs, at_once)
