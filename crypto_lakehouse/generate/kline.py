"""``run_gen_kline``: one symbol's merged, gap-split and gap-filled kline files (legacy §8)."""

from __future__ import annotations

import json
import logging
import time as clock
from pathlib import Path

import numpy as np
import pyarrow as pa

from crypto_lakehouse import io, layout, storage
from crypto_lakehouse.generate import parquet_append, tail
from crypto_lakehouse.generate.checks import QualityGateError, check_output
from crypto_lakehouse.generate.fill import fill_segment
from crypto_lakehouse.generate.funding import (
    FUNDING_COLUMN,
    FundingEvents,
    count_outside,
    events_in_range,
    join_funding,
    read_funding,
)
from crypto_lakehouse.generate.gaps import find_gaps, segment_names, split_ranges
from crypto_lakehouse.generate.merge import (
    SOURCE_ARCHIVE,
    SOURCE_REST,
    TIME,
    floor_off_grid,
    merge_store,
    read_kline_files,
)
from crypto_lakehouse.generate.outputs import SUFFIX, iso_ms, remove_stale, scan_symbol
from crypto_lakehouse.generate.vwap import vwap, vwap_column_name
from crypto_lakehouse.intervals import interval_ms
from crypto_lakehouse.schema import KLINE_SCHEMA, TIME_TYPE

log = logging.getLogger(__name__)


def output_schema(vwap_col: str | None, with_funding: bool) -> pa.Schema:
    """Legacy §10.5: the ten kline columns, then ``avg_price_1m``, then ``funding_rate``."""
    fields = list(KLINE_SCHEMA)
    if vwap_col:
        fields.append(pa.field(vwap_col, pa.float64()))
    if with_funding:
        fields.append(pa.field(FUNDING_COLUMN, pa.float64()))
    return pa.schema(fields)


def to_table(columns: dict[str, np.ndarray], schema: pa.Schema) -> pa.Table:
    arrays = []
    for f in schema:
        values = columns[f.name]
        if f.name == TIME:
            arrays.append(pa.array(values, type=pa.int64()).view(TIME_TYPE))
        else:
            arrays.append(pa.array(values, type=f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _contract_size_for(trade_type: str, symbol: str, with_vwap: bool, contract_size):
    if trade_type != "cm_futures" or not with_vwap:
        return None
    if contract_size is None:
        raise ValueError(
            f"cm_futures symbol {symbol}: no contract size for the COIN-M VWAP; "
            f"set it under the config key `contract_sizes` (e.g. contract_sizes: {{{symbol}: 100}})"
        )
    if not float(contract_size) > 0:
        raise ValueError(
            f"cm_futures symbol {symbol}: contract size {contract_size!r} must be > 0 "
            f"(config key `contract_sizes`)"
        )
    return float(contract_size)


def _relative(path: Path, data_dir) -> str:
    return storage.data_path(path).relative_to(storage.data_path(data_dir)).as_posix()


def vwap_rule_of(vwap_col: str | None, coin_contract: float | None) -> str:
    if not vwap_col:
        return "none"
    if coin_contract:
        return f"volume*contract_size/quote_volume (contract_size={coin_contract:g})"
    return "quote_volume/volume"


def segment_metadata(
    interval: str,
    vwap_rule: str,
    funding_joined: bool,
    n_events: int,
    coverage: dict[str, int],
    n_rows: int,
    gates: dict[str, str],
) -> dict[str, str]:
    """The key-value metadata of one output file (the same for a full and a tail build)."""
    n_real = coverage["archive_minutes"] + coverage["rest_minutes"]
    return {
        "interval": interval,
        "vwap": vwap_rule,
        "funding_joined": "true" if funding_joined else "false",
        "funding_events": n_events,
        "source_coverage": json.dumps(coverage, sort_keys=True),
        # Share of rows that are real candles rather than synthesised fill.
        "quality_score": f"{n_real / n_rows:.6f}",
        "quality_gates": json.dumps(gates, sort_keys=True),
    }


def write_segment(path: Path, table: pa.Table, metadata: dict[str, str]) -> None:
    """Plain encoding (on real 1m data dictionary pages make files bigger and slower) and
    fixed row groups, so that a tail build can keep the unchanged ones (parquet_append)."""
    storage.write_parquet(
        path,
        table,
        metadata=metadata,
        use_dictionary=False,
        row_group_size=parquet_append.ROW_GROUP_ROWS,
    )


@storage.uploads_in_background  # S3: PUTs overlap the work; barrier before records
def run_gen_kline(
    *,
    trade_type: str,
    symbol: str,
    interval: str,
    data_dir,
    split_gaps: bool,
    with_vwap: bool,
    with_funding_rates: bool,
    min_days: float = 1,
    min_price_chg: float = 0.1,
    contract_size: float | None = None,
    report_path,
    stats_path,
    incremental: bool = False,
) -> dict:
    """Merge archive and REST candles, split at gaps, fill each segment and write one file
    per segment to ``results_data/{T}/klines/{I}/{NAME}.pqt``. Only this symbol's files are
    written or removed. Raises QualityGateError (after writing the other files, the report
    and the stats) when a file breaks a quality gate; that file is not kept.

    ``incremental``: when the previous build's record shows that the inputs only grew at
    the end, recompute just the tail (``generate.tail``); the files are the same bytes.
    """
    if trade_type not in layout.TRADE_TYPES:
        raise ValueError(
            f"unknown trade type {trade_type!r} (expected one of {layout.TRADE_TYPES})"
        )
    step_ms = interval_ms(interval)
    min_days, min_price_chg = float(min_days), float(min_price_chg)  # config may give ints
    coin_contract = _contract_size_for(trade_type, symbol, with_vwap, contract_size)
    seconds: dict[str, float] = {}
    started = clock.perf_counter()
    input_dirs = [
        layout.parsed_klines_dir(data_dir, trade_type, symbol, interval),
        layout.api_klines_dir(data_dir, trade_type, symbol, interval),
    ]
    remote = storage.is_remote(data_dir)
    with storage.inputs_asked_once(input_dirs):  # S3: each folder listed once (identities)
        # S3: the two listings at once (a round trip each).
        archive_paths, rest_paths = storage.concurrently(
            lambda d: storage.list_files(d, recursive=False, suffix=SUFFIX),
            input_dirs,
            2 if remote else 1,
        )
        return _build(
            archive_paths, rest_paths, trade_type=trade_type, symbol=symbol,
            interval=interval, data_dir=data_dir, split_gaps=split_gaps, with_vwap=with_vwap,
            with_funding_rates=with_funding_rates, min_days=min_days,
            min_price_chg=min_price_chg, coin_contract=coin_contract, step_ms=step_ms,
            report_path=report_path, stats_path=stats_path, incremental=incremental,
            started=started, seconds=seconds,
        )  # fmt: skip


def _build(
    archive_paths, rest_paths, *, trade_type, symbol, interval, data_dir, split_gaps,
    with_vwap, with_funding_rates, min_days, min_price_chg, coin_contract, step_ms,
    report_path, stats_path, incremental, started, seconds,
) -> dict:  # fmt: skip
    """run_gen_kline's work, its inputs listed."""
    tick = started

    def lap(name: str) -> None:
        nonlocal tick
        now = clock.perf_counter()
        seconds[name] = round(now - tick, 4)
        tick = now

    with_funding = with_funding_rates and trade_type in layout.FUTURES_TRADE_TYPES
    events = FundingEvents(np.empty(0, np.int64), np.empty(0, np.float64))
    if with_funding:
        events = read_funding(data_dir, trade_type, symbol, strict=True)
    # Q19: the column exists whenever the symbol has funding, never invented otherwise.
    funding_col = FUNDING_COLUMN if with_funding and len(events) else None
    vwap_col = vwap_column_name(interval) if with_vwap else None
    lap("read_funding")
    job = tail.Job(
        params={
            "trade_type": trade_type,
            "symbol": symbol,
            "interval": interval,
            "split_gaps": bool(split_gaps),
            "with_vwap": bool(with_vwap),
            "with_funding_rates": bool(with_funding_rates),
            "min_days": min_days,
            "min_price_chg": min_price_chg,
            "contract_size": coin_contract,
            "row_group_rows": parquet_append.ROW_GROUP_ROWS,
            "pyarrow": pa.__version__,
        },
        trade_type=trade_type,
        symbol=symbol,
        interval=interval,
        data_dir=Path(data_dir),
        step_ms=step_ms,
        archive_paths=archive_paths,
        rest_paths=rest_paths,
        events=events,
        funding_col=funding_col,
        vwap_col=vwap_col,
        vwap_rule=vwap_rule_of(vwap_col, coin_contract),
        coin_contract=coin_contract,
        split_gaps=bool(split_gaps),
        min_days=min_days,
        min_price_chg=min_price_chg,
        schema=output_schema(vwap_col, funding_col is not None),
        report_path=Path(report_path),
        stats_path=Path(stats_path),
    )
    out_dir = layout.results_klines_dir(data_dir, trade_type, interval)
    record_file = tail.record_path(data_dir, trade_type, symbol, interval)
    previous = storage.read_state(record_file) if incremental else None
    scanned = None  # this symbol's files in out_dir (outputs.scan_symbol)
    if previous:
        storage.delete(record_file)  # a build that fails must leave no record behind
    else:
        # A full build: its stale files listed now, at the same time as the delete (S3: a
        # round trip each), instead of after the new files' uploads, which a listing of
        # their folder waits for. Its own new files are kept, listed or not.
        _, scanned = storage.concurrently(
            lambda do: do(),
            [lambda: storage.delete(record_file), lambda: scan_symbol(out_dir, symbol)],
            storage.at_once(data_dir, 2),
        )
    if previous:
        try:
            return tail.run_tail(previous, job)
        except tail.Fallback as why:
            log.info("%s %s %s: full build (%s)", trade_type, symbol, interval, why)
        except Exception as exc:  # the full build is always exact: never fail for the tail
            log.warning(
                "%s %s %s: tail build failed (%r), full build", trade_type, symbol, interval, exc
            )
        started = tick = clock.perf_counter()
        seconds.clear()

    identities = storage.identities((*archive_paths, *rest_paths))
    spans: dict[Path, tuple[int, int]] = {}
    store, (n_archive_rows, n_rest_rows), read_problems = read_kline_files(
        archive_paths,
        rest_paths,
        spans=spans,
        reading=_reading_input(data_dir, trade_type, symbol, interval, rest_paths),
    )
    _refuse_rest_off_grid(store[TIME], n_archive_rows, rest_paths, spans, step_ms)
    on_grid = _floor_archive_off_grid(store[TIME], n_archive_rows, archive_paths, spans, step_ms)
    rows_in = {"archive": n_archive_rows, "rest": n_rest_rows}
    lap("read")
    candles = merge_store(store, n_archive_rows, on_grid)
    lap("merge")
    problems = read_problems + events.problems

    if vwap_col and len(candles):
        # On every store row (dropped rows included): cheaper than gathering twice.
        store[vwap_col] = vwap(store["volume"], store["quote_volume"], store["open"], coin_contract)
    lap("vwap")

    if not len(candles):
        ranges: list[tuple[int, int]] = []
    elif split_gaps:
        gaps = find_gaps(
            candles.time,
            store["open"],
            store["close"],
            min_days,
            min_price_chg,
            rows=candles.rows,
        )
        ranges = split_ranges(candles.time, gaps)
    else:
        ranges = [(0, len(candles))]
    names = segment_names(symbol, len(ranges))
    lap("split")

    if scanned is None:  # the tail build fell back: listed before the writes too
        scanned = scan_symbol(out_dir, symbol)
    schema, vwap_rule = job.schema, job.vwap_rule
    segments, failures, written, grid_ranges = [], [], set(), []
    fill_seconds = check_seconds = write_seconds = 0.0
    for (start, stop), name in zip(ranges, names, strict=True):
        t0 = clock.perf_counter()
        rows = slice(start, stop) if candles.rows is None else candles.rows[start:stop]
        filled = fill_segment(store, step_ms, vwap_col, rows=rows, time=candles.time[start:stop])
        grid = filled[TIME]
        grid_ranges.append((int(grid[0]), int(grid[-1])))
        if funding_col:
            filled[funding_col] = join_funding(grid, step_ms, events)
        t1 = clock.perf_counter()
        path = out_dir / f"{name}{SUFFIX}"
        rel = _relative(path, data_dir)
        try:
            in_range = events_in_range(events, int(grid[0]), int(grid[-1]), step_ms)
            gates = check_output(
                rel,
                filled,
                step_ms,
                vwap_col=vwap_col,
                funding_col=funding_col,
                funding_time=events.time[in_range],
                funding_rate=events.rate[in_range],
            )
        except QualityGateError as exc:
            log.error("quality gate failed: %s", exc)
            failures.append(str(exc))
            continue
        t2 = clock.perf_counter()
        source = candles.source[start:stop]
        n_archive = int(np.count_nonzero(source == SOURCE_ARCHIVE))
        n_rest = int(np.count_nonzero(source == SOURCE_REST))
        n_rows = len(grid)
        n_events = in_range.stop - in_range.start if funding_col else 0
        coverage = {
            "archive_minutes": n_archive,
            "rest_minutes": n_rest,
            "filled_minutes": n_rows - n_archive - n_rest,
        }
        metadata = segment_metadata(
            interval, vwap_rule, funding_col is not None, n_events, coverage, n_rows, gates
        )
        write_segment(path, to_table(filled, schema), metadata)
        written.add(name)
        del filled
        t3 = clock.perf_counter()
        fill_seconds += t1 - t0
        check_seconds += t2 - t1
        write_seconds += t3 - t2
        segments.append(
            {
                "name": name,
                "file": rel,
                "rows": n_rows,
                "first": iso_ms(grid[0]),
                "last": iso_ms(grid[-1]),
                **coverage,
                "funding_events": n_events,
            }
        )
    seconds.update(
        fill=round(fill_seconds, 4), checks=round(check_seconds, 4), write=round(write_seconds, 4)
    )
    tick = clock.perf_counter()
    removed = sorted(
        _relative(p, data_dir) for p in remove_stale(out_dir, symbol, written, scanned=scanned)
    )
    lap("remove_stale")

    report = {
        "trade_type": trade_type,
        "symbol": symbol,
        "interval": interval,
        "no_data": not len(candles),
        "segments": segments,
        "removed": removed,
        "funding_column": funding_col is not None,
        "funding_events_outside_segments": (
            count_outside(events, grid_ranges, step_ms) if funding_col else 0
        ),
        "input_problems": sorted(problems),
        "quality_failures": failures,
    }
    if not len(candles):
        log.warning("%s %s %s: no candles with volume > 0, no output", trade_type, symbol, interval)
    io.write_json(report_path, report)
    seconds["total"] = round(clock.perf_counter() - started, 4)
    stats = {
        "trade_type": trade_type,
        "symbol": symbol,
        "interval": interval,
        "seconds": seconds,
        "rows": {
            **rows_in,
            "merged": len(candles),
            "output": sum(s["rows"] for s in segments),
            "funding_events": len(events),
        },
        "files_written": len(segments),
        "files_removed": len(removed),
        "input_problems": len(problems),
        "quality_failures": failures,
    }
    io.write_json(stats_path, stats)
    if failures:
        raise QualityGateError("; ".join(failures))
    if segments and not problems:
        start, stop = ranges[-1]
        grid0 = grid_ranges[-1][0]
        n_rows = segments[-1]["rows"]
        newest = {
            "first_ms": grid0,
            "rows": n_rows,
            "checkpoints": tail.checkpoints(
                grid0,
                step_ms,
                n_rows,
                (candles.time[start:stop] - grid0) // step_ms,
                candles.source[start:stop],
            ),
        }
        horizon = tail.horizon_ms(newest, step_ms)
        tail.save_record(
            job,
            inputs={
                "archive": tail.input_entries(archive_paths, spans, identities, store, horizon),
                "rest": tail.input_entries(rest_paths, spans, identities, store, horizon),
            },
            report=report,
            newest=newest,
            previous=None,
        )
    return stats


def _refuse_rest_off_grid(time, n_archive_rows: int, rest_paths, spans, step_ms: int) -> None:
    """REST day files holding a candle off the interval grid fail the symbol as
    ``shards.DamagedInput`` of ``api_download``: removed (all of them at once), and the REST
    shard rerun by the next run, which fetches their days again, floored onto the grid
    (``rest.klines.klines_to_table``). Only a REST fill before 2026-12-06 stored such candles
    as answered (spot after the 2018-02-08 outage, ``…:14.789``); before, every gen_kline of
    the symbol failed on them (``candle at … is not on the … grid``) until the user deleted
    the file. Not floored here: the fresh fetch is what a new build would hold."""
    from crypto_lakehouse.intervals import grid_offset
    from crypto_lakehouse.shards import DamagedInput

    bad = n_archive_rows + np.flatnonzero(grid_offset(time[n_archive_rows:], step_ms))
    if not bad.size:
        return
    files = []  # (path, first row off the grid), in reading order
    for path in rest_paths:
        start, stop = spans.get(path, (0, 0))
        i = int(np.searchsorted(bad, start))
        if i < bad.size and bad[i] < stop:
            files.append((path, int(bad[i])))
    path, row = files[0]
    raise DamagedInput(
        path,
        "api_download",
        f"holds a candle at {iso_ms(time[row])} off the {step_ms} ms interval grid (stored as "
        "answered before 2026-12-06; REST candles are floored onto the grid since)"
        + (f"; so do {len(files) - 1} other REST day file(s)" if len(files) > 1 else ""),
        missing=False,
        others=[p for p, _ in files[1:]],
    )


def _floor_archive_off_grid(time, n_archive_rows: int, archive_paths, spans, step_ms: int):
    """Floor the parsed (archive) candles off the interval grid onto it, in place
    (``merge.floor_off_grid``); returns the on-grid mask for ``merge_store`` or None.

    Only a legacy BHDS partition used in place holds such rows (the parse floors them since
    2026-12-06 and never rewrites a file it did not write); the file stays as it is on disk
    and is named in the log."""
    on_grid = floor_off_grid(time[:n_archive_rows], step_ms)
    if on_grid is None:
        return None
    floored = np.flatnonzero(~on_grid)
    files = [
        path
        for path in archive_paths
        if path in spans
        and np.searchsorted(floored, spans[path][0]) < np.searchsorted(floored, spans[path][1])
    ]
    taken = np.isin(time[floored], time[:n_archive_rows][on_grid])
    log.warning(
        "%s: %d parsed candle(s) open off the %d ms interval grid (not written by this "
        "pipeline: a legacy partition used in place?), floored onto it as the parse does; "
        "%d of them lose their minute to a candle on the grid (first floored onto %s%s)",
        files[0] if files else "parsed_data", floored.size, step_ms, int(taken.sum()),
        iso_ms(time[floored[0]]),
        f"; {len(files) - 1} other file(s) hold such rows too" if len(files) > 1 else "",
    )  # fmt: skip
    return on_grid


def _reading_input(data_dir, trade_type: str, symbol: str, interval: str, rest_paths):
    """The context of each input file's reads (``merge.read_kline_files``): a file the
    parse or the REST fill wrote that is missing or cannot be decoded fails the symbol as
    ``shards.DamagedInput`` (removed, and its writer's shard rerun by the next run), rather
    than being left out of the build: before 2026-12-06 a parsed month with a damaged page
    was skipped with a warning, the generated file written again without its rows, and the
    run ended successfully. A parsed partition the parse did not write (a legacy one used in
    place) is named, not removed."""
    import functools

    from crypto_lakehouse.parse import wrote_partition
    from crypto_lakehouse.shards import reading_output_of

    rest = {str(p) for p in rest_paths}

    def reading(path):
        if str(path) in rest:
            return reading_output_of("api_download", path)
        wrote = functools.partial(wrote_partition, data_dir, trade_type, symbol, interval, path)
        return reading_output_of("aws_parse", path, wrote)

    return reading
