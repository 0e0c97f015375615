"""``run_features``: the feature files of every candle file of a list of symbols.

For each symbol the candle files are the segments its gen_kline report lists and the
resampled files its resample report lists. Each symbol is skipped when its inputs and the
feature settings did not change (crypto_lakehouse.incremental fingerprints) and fails on
its own: the others are still computed, then the job raises.
"""

from __future__ import annotations

import json
import logging
import time as clock
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from crypto_lakehouse import io, layout, storage
from crypto_lakehouse.contracts import contract_size_for
from crypto_lakehouse.features.indicators import compute_indicators
from crypto_lakehouse.features.microstructure import (
    INPUT_COLUMNS,
    RELEASED_INPUTS,
    release_microstructure,
)
from crypto_lakehouse.features.spec import IndicatorSpec, talib_version, validate_feature_config
from crypto_lakehouse.generate import parquet_append
from crypto_lakehouse.generate import tail as gen_tail
from crypto_lakehouse.generate.outputs import SUFFIX, remove_stale_in
from crypto_lakehouse.generate.vwap import vwap, vwap_column_name
from crypto_lakehouse.incremental import fingerprint
from crypto_lakehouse.resample import tail as resample_tail
from crypto_lakehouse.shards import DamagedInput, read_report, reading_output_of

log = logging.getLogger(__name__)

TIME = "candle_begin_time"
STAGE = "features"
# Bump when the computation changes in a way the inputs and settings do not show.
# 2: the microstructure restarts its rolling sums at every block (block_rows).
# 3: vwap_deviation of a resampled file is against each candle's own VWAP (window_vwap).
FEATURES_VERSION = 3
# Feature files are computed and written in blocks, one row group each, so that a daily
# update of a grown candle file computes its last block and the new rows only and copies
# the other row groups (parquet_append). TA-Lib runs on the whole series every time (cheap,
# and its recursive indicators depend on every earlier row: that keeps them exactly
# TA-Lib's). The microstructure of a block reads warmup_rows() rows before it and starts
# pandas' running window sums there, so its values do not depend on where a build started:
# a tail build writes the bytes of a full build. Blocks of a generated 1m file: 2^17 rows
# (91 days), as its own row groups. Resampled files are shorter (6 years of 1h are 52,560
# rows): 2^15 rows. Smaller blocks keep more of a 1h file, but each block costs pandas'
# per-call overhead: 2^14 made a full build of a 6-year symbol's 28 files ~0.1 s slower
# (docs/benchmarks.md, twenty-seventh part).
BLOCK_ROWS = 1 << 17
RESAMPLED_BLOCK_ROWS = 1 << 15


def block_rows(stage: str) -> int:
    """The block size of the feature files of candle files that ``stage`` writes."""
    return BLOCK_ROWS if stage == "gen_kline" else RESAMPLED_BLOCK_ROWS


# Parquet options of the feature files (docs/features.md, "File format"): LZ4, plain
# encoding, no dictionary. Feature columns are high-entropy float64: zstd with byte-stream-split
# pages is ~20% smaller but costs twice the CPU time of the whole write.
WRITE_OPTIONS = {"compression": "lz4", "use_dictionary": False}
# On S3, a symbol's light feature files (a tail build, or a candle file under LIGHT_BYTES)
# are built this many at a time: each is several round trips.
FILES_AT_ONCE = 4
LIGHT_BYTES = 8 << 20


def stale_record(trade_type: str, interval: str, symbol: str, causes: dict[str, str]) -> dict:
    """The record of ``layout.stale_features_path``: per stale feature file (relative to the
    data dir) the failure of its rebuild, and when that build ran (UTC)."""
    return {
        "trade_type": trade_type,
        "interval": interval,
        "symbol": symbol,
        "failed_at": clock.strftime("%Y-%m-%dT%H:%M:%SZ", clock.gmtime()),
        "files": dict(sorted(causes.items())),
    }


class FeaturesError(RuntimeError):
    """One or more symbols failed; the message lists them (the others were written)."""


# Rows decoded at a time: the decoding buffers of one batch (a few MB) are what the read
# allocates beyond the columns themselves.
READ_BATCH_ROWS = 65_536


def warmup_rows(windows: list[int]) -> int:
    """Rows before a block that its microstructure reads: the window of W per-candle values
    ending at the block's first row starts W - 1 rows before it, and its first value reaches
    two rows further back (Roll's previous close change: close[t-1] - close[t-2])."""
    return max(windows, default=0) + 1


def _group_starts(parquet: pq.ParquetFile) -> np.ndarray:
    """First row of each row group, then the number of rows."""
    meta = parquet.metadata
    return np.cumsum([0, *(meta.row_group(i).num_rows for i in range(meta.num_row_groups))])


def _decode_into(
    path: Path, parquet: pq.ParquetFile, groups: range, into: dict[str, np.ndarray], times: list
) -> None:
    """Decode row groups ``groups`` of the columns ``into`` names into its arrays (each as
    long as those groups' rows), batch by batch; the time column's batches are appended to
    ``times`` (when it is not None).

    Decoded batch by batch into arrays allocated first: reading the whole table and then
    converting it would hold the file twice, and leave the table's freed pages in pieces the
    later columns cannot reuse (+0.1 GB peak, all of it fresh memory, on a 6-year 1m file).
    """
    if not len(groups):
        return
    starts = _group_starts(parquet)
    rows = int(starts[groups.stop] - starts[groups.start])
    columns = [TIME, *into] if times is not None else list(into)
    start = 0
    for batch in parquet.iter_batches(
        batch_size=READ_BATCH_ROWS, row_groups=groups, columns=columns, use_threads=False
    ):
        stop = start + batch.num_rows
        for name, values in into.items():
            # NaN for a null, as Table.to_numpy (a null candle value is never read as 0)
            values[start:stop] = batch.column(name).to_numpy(zero_copy_only=False)
        if times is not None:
            times.append(batch.column(TIME))
        start = stop
    if start != rows:
        raise ValueError(f"{path}: read {start} rows of the {rows} its metadata lists")


def _read_candles(
    path: Path,
    parquet: pq.ParquetFile,
    columns: list[str],
    first_row: int = 0,
    whole_columns: list[str] = (),
) -> tuple[dict, pa.Array, dict]:
    """The float64 arrays of ``columns`` and the time column of a candle file, rows
    ``first_row`` to the end (only the row groups holding them are decoded), and the
    arrays of ``whole_columns`` over all rows (what TA-Lib needs for a tail build).

    Each column chunk is decoded once (on S3 a ranged GET): the row groups before
    ``first_row``'s are read for ``whole_columns`` only, the others for both sets."""
    starts = _group_starts(parquet)
    n_groups, rows = len(starts) - 1, int(starts[-1])
    group = max(0, int(np.searchsorted(starts, first_row, side="right")) - 1)
    base = int(starts[min(group, n_groups)])
    whole = {name: np.empty(rows, dtype=np.float64) for name in whole_columns}
    _decode_into(path, parquet, range(0, min(group, n_groups)), whole, None)
    tail = {name: values[base:] for name, values in whole.items()}
    tail |= {name: np.empty(rows - base, dtype=np.float64) for name in columns if name not in tail}
    times: list = []
    _decode_into(path, parquet, range(min(group, n_groups), n_groups), tail, times)
    skip = first_row - base
    # Copies of the whole columns' tails: the whole arrays are freed before the tail's use.
    candles = {
        name: tail[name][skip:].copy() if name in whole else tail[name][skip:] for name in columns
    }
    if not times:
        return candles, pa.array([], type=parquet.schema_arrow.field(TIME).type), whole
    return candles, pa.concat_arrays(times).slice(skip), whole


def _blocked_microstructure(
    inputs: dict[str, np.ndarray],
    base_row: int,
    rows: int,
    from_row: int,
    windows: list[int],
    block: int,
) -> dict[str, list[np.ndarray]]:
    """The microstructure columns of rows ``[from_row, rows)``, ``block`` rows at a time
    (``from_row`` a multiple of it), each column as its blocks' arrays (written as one
    chunked column: no copy into a whole-file array); ``inputs`` hold rows
    ``[base_row, rows)`` and reach back ``warmup_rows`` before ``from_row`` (or to row 0)."""
    warm = warmup_rows(windows)
    out: dict[str, list[np.ndarray]] = {}
    for start in range(from_row, max(rows, from_row + 1), block):
        lo, hi = max(0, start - warm), min(start + block, rows)
        # Views: the microstructure does not write to its inputs (compute_microstructure).
        part = {k: v[lo - base_row : hi - base_row] for k, v in inputs.items()}
        for k, values in release_microstructure(part, windows).items():
            out.setdefault(k, []).append(values[start - lo :])
    return out


def feature_table(
    path: Path,
    specs: list[IndicatorSpec],
    windows: list[int],
    vwap_col: str,
    contract_size: float | None,
    seconds: dict[str, float] | None = None,
    from_row: int = 0,
    block: int = BLOCK_ROWS,
    window_vwap: bool = False,
) -> pa.Table:
    """The features of one candle file: its time column, then the feature columns (float64);
    rows ``from_row`` (a multiple of ``block``) to the end.

    ``vwap_deviation`` (when the file has the VWAP column ``vwap_col``) is against that
    column, or with ``window_vwap`` (a resampled file, whose ``vwap_col`` is the VWAP of the
    window's first minute) against each candle's own VWAP: its quote volume over its volume
    (COIN-M: contracts × contract size over the coin amount), the open for a candle without
    trades, within ``[low, high]``, as gen_kline computes a 1m candle's."""
    seconds = seconds if seconds is not None else {}
    t0 = clock.perf_counter()
    parquet = storage.parquet_file(path)
    names = parquet.schema_arrow.names
    wanted = [TIME, *INPUT_COLUMNS]
    missing = [c for c in wanted if c not in names]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}")
    has_vwap = vwap_col in names
    micro_names = wanted[1:] + ([vwap_col] if has_vwap and not window_vwap else [])
    rows = parquet.metadata.num_rows
    base_row = max(0, from_row - warmup_rows(windows))
    # TA-Lib needs the whole series of the columns its functions take.
    ta_inputs = sorted({n for s in specs for n in s.inputs}) if from_row else []
    candles, times, whole = _read_candles(path, parquet, micro_names, base_row, ta_inputs)
    if from_row:
        times = times.slice(from_row - base_row)
    else:
        whole = candles
    t1 = clock.perf_counter()
    columns = {k: v[from_row:] for k, v in compute_indicators(specs, whole).items()}
    del whole
    t2 = clock.perf_counter()
    # The microstructure's inputs (each block reads its rows of them as views).
    if has_vwap and window_vwap:
        own = vwap(candles["volume"], candles["quote_volume"], candles["open"], contract_size)
        candles[vwap_col] = np.clip(own, candles["low"], candles["high"])
    quote_volume = candles.pop("quote_volume")
    if contract_size is None:
        notional = quote_volume
    else:  # COIN-M: volume counts contracts of contract_size USD (quirk Q3)
        notional = candles["volume"] * contract_size
    del quote_volume
    inputs = {name: candles.pop(name) for name in RELEASED_INPUTS}
    inputs["notional"] = notional
    del notional
    if has_vwap:
        inputs["vwap"] = candles.pop(vwap_col)
    del candles
    columns.update(_blocked_microstructure(inputs, base_row, rows, from_row, windows, block))
    del inputs
    t3 = clock.perf_counter()
    for key, value in (("read", t1 - t0), ("indicators", t2 - t1), ("microstructure", t3 - t2)):
        seconds[key] = seconds.get(key, 0.0) + value
    fields = [pa.field(TIME, times.type)] + [pa.field(c, pa.float64()) for c in columns]
    arrays = [
        pa.chunked_array([pa.array(v) for v in values], pa.float64())
        if isinstance(values, list)
        else values
        for values in columns.values()
    ]
    return pa.Table.from_arrays([times, *arrays], schema=pa.schema(fields))


def _symbol_report(path, stage: str, symbol: str) -> dict:
    """A stage's report of ``symbol``: it must exist, be readable and be that symbol's."""
    report = read_report(path, stage)
    if report.get("symbol") != symbol:
        raise ValueError(f"{stage} report {path} is for {report.get('symbol')!r}")
    return report


def _report_symbol(path) -> str:
    """Whose report ``path`` is; for one that cannot be read, its name (``{SYM}.json``): the
    symbol's own read then fails and the report is rebuilt (shards.read_report)."""
    try:
        return read_report(path).get("symbol")
    except DamagedInput:
        return Path(path).stem


def _candle_files(data_dir: Path, gen_report, resample_report, symbol: str) -> list[dict]:
    """(candle file, feature file, output folder, segment name) of every candle file."""
    files = []
    gen = _symbol_report(gen_report, "gen_kline", symbol)
    for seg in gen.get("segments", []):
        out_dir = layout.features_dir(data_dir, gen["trade_type"], gen["interval"])
        files.append(
            {"source": seg["file"], "dir": out_dir, "name": seg["name"], "stage": "gen_kline"}
        )
    if resample_report is not None:
        res = _symbol_report(resample_report, "resample", symbol)
        for out in res.get("outputs", []):
            out_dir = layout.resampled_features_dir(
                data_dir, res["trade_type"], out["interval"], out["offset"]
            )
            files.append(
                {"source": out["file"], "dir": out_dir, "name": out["name"], "stage": "resample"}
            )
    return files


def _owned_dirs(data_dir: Path, trade_type: str, interval: str) -> list[Path]:
    """Every feature folder this stage writes for a trade type (for stale-file removal)."""
    dirs = [layout.features_dir(data_dir, trade_type, interval)]
    root = layout.resampled_features_root(data_dir, trade_type)
    dirs += layout.output_folders(root, depth=2)
    return dirs


def _symbol_features(
    *,
    data_dir: Path,
    trade_type: str,
    interval: str,
    symbol: str,
    files: list[dict],
    specs: list[IndicatorSpec],
    windows: list[int],
    contract_size: float | None,
    seconds: dict[str, float],
    previous: dict[str, dict],
    built: dict[str, dict],
    counts: dict[str, int],
    stale_causes: dict[str, str],
) -> tuple[dict, list[DamagedInput]]:
    """Write one symbol's feature files and remove those whose candle file is no longer
    listed; its report section, and the ``DamagedInput`` failures among the section's
    failures. A feature file whose rebuild fails (an exception computing, reading or
    writing it) is kept as it was, listed under ``stale``. ``previous``: what the last
    build of the same settings recorded per candle file (``_write_features``); ``built`` is
    filled with this build's records and ``counts`` counts the files kept, tail-built and
    built in full, and the rows computed; ``stale_causes`` gets each stale file's failure."""
    vwap_col = vwap_column_name(interval)
    outputs, failures = [], []
    # Feature files whose rebuild failed, kept as the last good build wrote them: from an
    # earlier version of their candle file (or other settings), not in ``outputs``.
    stale: list[str] = []
    damaged: list[DamagedInput] = []  # of the failures, those of a file another stage wrote
    written: dict[Path, set[str]] = {}
    metadata = {
        "indicators": json.dumps([s.as_config() for s in specs]),
        "microstructure_windows": json.dumps(windows),
        "talib_version": talib_version(),
    }
    paths = {f["source"]: f["dir"] / f"{f['name']}{SUFFIX}" for f in files}
    # The identities of every candle file (recorded for the next build's tail) and of
    # every feature file (still the one the last build wrote?), asked at once: on S3 a
    # HEAD each, in one concurrent round instead of two round trips per file.
    # (The candle files' from the digest's answers: ``storage.inputs_asked_once``.)
    wanted = [data_dir / f["source"] for f in files] + list(paths.values())
    now = storage.identities(wanted, by_listing=False)
    rewritten: dict[str, Path] = {}  # candle file -> its feature file written here
    tail_records: dict[str, dict] = {}  # writer stage -> its tail record (_kept_blocks)

    def plan(f: dict):
        """``(record, None)`` of a file kept as it is, else ``(None, kept blocks)``."""
        path, source, prev = paths[f["source"]], data_dir / f["source"], previous.get(f["source"])
        with reading_output_of(f["stage"], source):
            intact = prev is not None and now[path] == prev["output"]
            if intact and prev["source"] == now[source]:
                return prev, None  # neither the candle file nor its features changed
            return None, _kept_blocks(
                data_dir, trade_type, symbol, interval, f, prev, intact, tail_records
            )

    def build(item) -> tuple[dict | None, Exception | None, dict[str, float]]:
        """The file's new record, or the exception that stopped it; its seconds."""
        f, keep = item
        source, spent = data_dir / f["source"], {}
        try:
            with reading_output_of(f["stage"], source):
                record = _write_features(
                    source, paths[f["source"]], keep, block_rows(f["stage"]), specs, windows,
                    vwap_col, contract_size, spent, {**metadata, "source_file": f["source"]},
                    window_vwap=f["stage"] == "resample",
                )  # fmt: skip
            record["source"] = now[source]
            return record, None, spent
        except Exception as exc:  # reported below; the symbol's other files still run
            return None, exc, spent

    planned: dict[str, tuple] = {}  # candle file -> (record, None) | (None, keep) | exception
    for f in files:
        try:
            planned[f["source"]] = plan(f)
        except Exception as exc:
            planned[f["source"]] = exc
    # On S3 each file's builds are round trips (the candle rows, the previous footer, the
    # kept bytes): light ones (a tail, or a small candle file) go FILES_AT_ONCE at a time;
    # a heavy full build runs alone, so memory stays one big file per symbol.
    todo = [
        (f, p[1]) for f in files if isinstance(p := planned[f["source"]], tuple) and p[0] is None
    ]

    def light(item) -> bool:
        f, keep = item
        return bool(keep) or (now[data_dir / f["source"]] or [0])[0] < LIGHT_BYTES

    at_once = storage.at_once(data_dir, FILES_AT_ONCE)
    first = [item for item in todo if light(item)]
    results = dict(
        zip(
            (f["source"] for f, _ in first),
            storage.concurrently(build, first, at_once),
            strict=True,
        )
    )
    results |= {item[0]["source"]: build(item) for item in todo if not light(item)}
    for f in files:
        path = paths[f["source"]]
        rel = path.relative_to(data_dir).as_posix()
        outcome = planned[f["source"]]
        exc = outcome if isinstance(outcome, Exception) else None
        record = None if exc else outcome[0]
        if exc is None and record is not None:
            counts["kept"] += 1
        elif exc is None:
            record, exc, spent = results[f["source"]]
            for key, value in spent.items():
                seconds[key] = seconds.get(key, 0.0) + value
            if exc is None:
                counts["tail" if record["tail"] else "full"] += 1
                counts["rows_computed"] += record.pop("computed")
                rewritten[f["source"]] = path
        if exc is not None:  # reported; the symbol's other files still run
            message = f"{f['source']}: {exc}"
            if now[path] is not None:  # the last good build's file stays, marked stale
                written.setdefault(f["dir"], set()).add(f["name"])
                stale.append(rel)
                stale_causes[rel] = message
                message += f" (previous feature file {rel} kept, stale, until a run rebuilds it)"
            log.error("features of %s", message)
            failures.append(message)
            if isinstance(exc, DamagedInput):
                damaged.append(exc)
            continue
        built[f["source"]] = record
        written.setdefault(f["dir"], set()).add(f["name"])
        outputs.append({"source": f["source"], "file": rel, "rows": record["rows"]})
    # The new feature files' identities for the record, at once (after their uploads).
    written_ids = storage.identities(list(rewritten.values()), by_listing=False)
    for source_file, path in rewritten.items():
        built[source_file]["output"] = written_ids[path]
    removed = [
        p.relative_to(data_dir).as_posix()
        for p in remove_stale_in(_owned_dirs(data_dir, trade_type, interval), symbol, written)
    ]
    section = {"outputs": outputs, "removed": sorted(removed), "failures": failures}
    if stale:
        section["stale"] = stale
    return section, damaged


def _kept_blocks(
    data_dir, trade_type, symbol, interval, f: dict, prev, intact: bool, records: dict
) -> int:
    """Leading blocks of the previous feature file (``intact``: still the one ``prev``
    records) that a tail build keeps: those wholly within the rows of the candle file that
    its writer's last tail build (gen_kline's or resample's) left as they were in the
    version the previous features were computed from (0: a full build). ``records``:
    each writer's tail record, read once per symbol (a GET each on S3, not one per file)."""
    if not intact:
        return 0
    writer = gen_tail if f["stage"] == "gen_kline" else resample_tail
    if f["stage"] not in records:
        path = writer.record_path(data_dir, trade_type, symbol, interval)
        records[f["stage"]] = storage.read_state(path)
    stable = writer.stable_rows(
        data_dir, trade_type, symbol, interval, f["source"], prev["source"], records[f["stage"]]
    )
    return min(stable, prev["rows"]) // block_rows(f["stage"])


def _write_features(
    source, path, keep, block, specs, windows, vwap_col, contract_size, seconds, metadata,
    window_vwap=False,
) -> dict:  # fmt: skip
    """Compute and write the feature file of ``source`` in blocks of ``block`` rows, keeping
    its first ``keep`` blocks (row groups) when it has them; its record (``rows``,
    ``tail``, rows ``computed``; the caller adds the ``output`` identity). ``window_vwap``:
    a resampled file (``feature_table``)."""
    table = feature_table(
        source, specs, windows, vwap_col, contract_size, seconds, keep * block, block,
        window_vwap,
    )  # fmt: skip
    t0 = clock.perf_counter()
    if keep:
        try:
            parquet_append.append_rows(
                path, path, keep, table, metadata=metadata, rows_per_group=block,
                **WRITE_OPTIONS,
            )  # fmt: skip
        except parquet_append.UnsupportedFile as exc:  # another writer or layout: in full
            log.info("features of %s: %s; computed in full", source, exc)
            return _write_features(
                source, path, 0, block, specs, windows, vwap_col, contract_size, seconds,
                metadata, window_vwap,
            )  # fmt: skip
    else:
        storage.write_parquet(path, table, metadata=metadata, row_group_size=block, **WRITE_OPTIONS)
    seconds["write"] = seconds.get("write", 0.0) + clock.perf_counter() - t0
    return {
        "rows": keep * block + table.num_rows,
        "computed": table.num_rows,
        "tail": keep > 0,
    }


@storage.uploads_in_background  # S3: PUTs overlap the work; barrier before records
def run_features(
    *,
    trade_type: str,
    interval: str,
    data_dir,
    symbols: list[str],
    gen_reports: list[str],
    resample_reports: list[str] = (),
    indicators: list[dict] | None = None,
    windows: list[int] | None = None,
    exchange_info=None,
    contract_size_overrides: dict | None = None,
    report_path,
    stats_path,
) -> dict:
    """Write ``results_data/{T}/features/{I}/{NAME}.pqt`` for each generated segment and
    ``results_data/{T}/resampled_features/{RI}/{OFFSET}/{NAME}.pqt`` for each resampled file
    of ``symbols``, each symbol's reports found among ``gen_reports``/``resample_reports``
    by their ``symbol``. One report and one stats file for the whole list. Raises
    FeaturesError after everything else is written when a symbol or file failed.
    """
    started = clock.perf_counter()
    data_dir = storage.data_path(data_dir)
    settings_in: dict = {}  # None: the defaults (DEFAULT_INDICATORS, DEFAULT_WINDOWS)
    if indicators is not None:
        settings_in["indicators"] = indicators
    if windows is not None:
        settings_in["microstructure"] = {"windows": windows}
    specs, windows = validate_feature_config(settings_in)
    gen_by_symbol = {_report_symbol(p): p for p in gen_reports}
    res_by_symbol = {_report_symbol(p): p for p in resample_reports or ()}
    overrides = contract_size_overrides or {}
    settings = {
        "version": FEATURES_VERSION,
        "talib": talib_version(),
        "trade_type": trade_type,
        "interval": interval,
        "indicators": [s.as_config() for s in specs],
        "windows": windows,
    }
    sections: dict[str, dict] = {}
    failures: list[str] = []
    seconds: dict[str, float] = {}
    kept: set[str] = set()  # symbols skipped as unchanged
    damaged: list[DamagedInput] = []
    counts = {"kept": 0, "tail": 0, "full": 0, "rows_computed": 0}
    # The symbols whose earlier build left a record of stale files (usually none): one
    # listing for the job, rather than a DELETE per symbol built (on S3 a request each).
    marked = {
        path.parent.name
        for path in storage.list_files(layout.stale_features_root(data_dir, trade_type))
        if path.name == f"klines-{interval}.json"
    }
    for symbol in symbols:
        state_file = layout.state_path(data_dir, STAGE, trade_type, f"klines-{interval}", symbol)
        file_records: dict[str, dict] = {}
        try:
            if symbol not in gen_by_symbol:
                raise FileNotFoundError(f"no gen_kline report for {symbol} among {gen_reports}")
            gen_report, res_report = gen_by_symbol[symbol], res_by_symbol.get(symbol)
            files = _candle_files(data_dir, gen_report, res_report, symbol)
            contract_size = None
            if trade_type == "cm_futures":
                contract_size = contract_size_for(exchange_info, symbol, overrides.get(symbol))
            inputs = [gen_report, *([res_report] if res_report else [])]
            inputs += [data_dir / f["source"] for f in files]
            # On S3 the candle files' identities are asked once, for the digest and
            # the tail decision.
            with storage.inputs_asked_once(inputs):
                digest = fingerprint(inputs, {**settings, "contract_size": contract_size})
                state = storage.read_state(state_file)
                section = state.get("section")
                # What the last build of these settings recorded per candle file, for its tail
                # builds.
                same = fingerprint(
                    [],
                    {
                        **settings,
                        "contract_size": contract_size,
                        "blocks": [BLOCK_ROWS, RESAMPLED_BLOCK_ROWS],
                    },
                )
                previous = {}
                if state.get("settings") == same:
                    previous = state.get("files") or {}
                if (
                    state.get("fingerprint") == digest
                    and section is not None
                    and storage.all_exist(data_dir / o["file"] for o in section["outputs"])
                ):
                    log.info("features %s %s: inputs unchanged, outputs kept", trade_type, symbol)
                    # The report is the one a rebuild gives: whether the work was done again
                    # is the stats' business (a rerun after a kill must not change reports).
                    sections[symbol] = section
                    kept.add(symbol)
                    continue
                # A failed or killed build must not look unchanged: no fingerprint. The
                # previous build's per-file records stay, so that a rerun after a kill
                # rebuilds in full only the files this build rewrote (their identity no
                # longer matches) and keeps or tail-builds the others.
                if previous:
                    storage.write_json(state_file, {"settings": same, "files": previous})
                else:
                    storage.delete(state_file)
                stale_causes: dict[str, str] = {}
                section, damaged_here = _symbol_features(
                    data_dir=data_dir,
                    trade_type=trade_type,
                    interval=interval,
                    symbol=symbol,
                    files=files,
                    specs=specs,
                    windows=windows,
                    contract_size=contract_size,
                    seconds=seconds,
                    previous=previous,
                    built=file_records,
                    counts=counts,
                    stale_causes=stale_causes,
                )
                # What the loaders warn about (load_features, the DuckDB views): the stale
                # files and why, until a build leaves none.
                marker = layout.stale_features_path(data_dir, trade_type, interval, symbol)
                if stale_causes:
                    storage.write_json(marker, stale_record(trade_type, interval, symbol,
                                                            stale_causes))  # fmt: skip
                elif symbol in marked:
                    storage.delete(marker)
        except Exception as exc:  # one broken symbol never stops the others
            if isinstance(exc, DamagedInput):  # an upstream report
                damaged.append(exc)
            log.error("features %s %s failed: %s", trade_type, symbol, exc)
            sections[symbol] = {"outputs": [], "removed": [], "failures": [str(exc)]}
            failures.append(f"{symbol}: {exc}")
            continue
        sections[symbol] = section
        damaged += damaged_here
        if section["failures"]:
            failures += [f"{symbol}: {msg}" for msg in section["failures"]]
        else:
            storage.write_json(
                state_file,
                {
                    "fingerprint": digest,
                    "section": section,
                    "settings": same,
                    "files": file_records,
                },
            )
    columns = [c for s in specs for c in s.columns]
    report = {
        "trade_type": trade_type,
        "interval": interval,
        "symbols": sections,
        "indicator_columns": columns,
        "windows": windows,
        "failures": failures,
    }
    if len(symbols) == 1:
        report["symbol"] = symbols[0]
    io.write_json(report_path, report)
    built = [s for sym, s in sections.items() if sym not in kept]
    stats = {
        "trade_type": trade_type,
        "interval": interval,
        "symbols": len(symbols),
        "skipped_unchanged": len(kept),
        "files_written": sum(len(s["outputs"]) for s in built),
        "rows_written": sum(o["rows"] for s in built for o in s["outputs"]),
        "files_removed": sum(len(s["removed"]) for s in built),
        "files_by_mode": {mode: counts[mode] for mode in ("kept", "tail", "full")},
        "rows_computed": counts.pop("rows_computed"),
        "seconds": {k: round(v, 4) for k, v in seconds.items()}
        | {"total": round(clock.perf_counter() - started, 4)},
        "failures": failures,
    }
    io.write_json(stats_path, stats)
    if damaged and len(symbols) == 1:  # a shard job's symbol: the shard has the file
        raise damaged[0]  # rebuilt, then reruns this one (shards.py)
    if failures:
        raise FeaturesError("; ".join(failures))
    return stats
