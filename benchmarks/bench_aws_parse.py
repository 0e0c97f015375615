"""Benchmark of aws_parse klines: parse throughput against the reading limit, one process.

The limit is measured in the same run on the same files: inflate each zip member and read
it with pyarrow's CSV reader (same options as the parser), nothing else. The parse figure
is the whole ``run_parse_klines`` call on a fresh data folder (checks, quarantine logic,
partition and quality writes, state, report). Both are CSV megabytes per second of one core
(single process, pyarrow without threads), by wall clock and by CPU time (the machine is
shared, so CPU time is the steadier figure); best of ``--repeat`` runs, after a warm-up.

    python benchmarks/bench_aws_parse.py [--days 62] [--repeat 3] [--fsync on|off|both]

``--fsync`` is the config's ``storage.fsync`` (default ``on``, as the pipeline); ``both``
also times the parse with it off, on the same files in the same run, and prints the ratio
(the cost of durable writes on the disk of the temporary folder, ``$TMPDIR`` or ``/tmp``).

``--dataset aggTrades`` measures the tick parser the same way (``run_parse_ticks`` against
inflate + CSV read of the same zips), on ``--days`` synthetic um_futures days of ``--rows``
aggregate trades (emulator format, with header), the parse's peak Arrow memory (in a fresh
process) against one day's Arrow table, and aggTrades → 1m candles on one parsed day.

    python benchmarks/bench_aws_parse.py --dataset aggTrades [--days 2] [--rows 2000000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
import zipfile
from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
from crypto_lakehouse_emulator.generate import write_kline_day

from crypto_lakehouse import io, layout
from crypto_lakehouse.parse.csv_reader import has_header
from crypto_lakehouse.parse.klines import KLINE_CSV, run_parse_klines

SYMBOL, INTERVAL, TRADE_TYPE = "BTCUSDT", "1m", "spot"
AGG_MARKET = "um_futures"


def build_archives(data_dir: Path, first_day: date, days: int) -> dict:
    """Daily 1m zips (+ .verified) under ``data_dir/aws_data``; returns the download report."""
    files = {}
    for i in range(days):
        day = (first_day + timedelta(days=i)).isoformat()
        key = write_kline_day(data_dir / "aws_data", TRADE_TYPE, SYMBOL, INTERVAL, day, seed=7)
        path = layout.aws_path(data_dir, key)
        path.with_name(path.name + ".verified").touch()
        checksum = path.with_name(path.name + ".CHECKSUM").read_text().split()[0]
        files[key] = {"size": path.stat().st_size, "last_modified": day, "sha256": checksum}
    return {"trade_type": TRADE_TYPE, "dataset": f"klines-{INTERVAL}", "symbol": SYMBOL,
            "files": files, "quarantined": {}}  # fmt: skip


def time_csv_reads(paths: list[Path], read_options, convert_options) -> tuple[float, float, int]:
    """Wall and CPU seconds and CSV bytes to inflate and CSV-read every file, no checks;
    ``read_options(data)`` gives the pyarrow ReadOptions of one file's bytes (its header)."""
    t, c = time.perf_counter(), time.process_time()
    total = 0
    for path in paths:
        with zipfile.ZipFile(path) as zf:
            data = zf.read(zf.infolist()[0])
        total += len(data)
        pacsv.read_csv(
            pa.py_buffer(data), read_options=read_options(data), convert_options=convert_options
        )
    return time.perf_counter() - t, time.process_time() - c, total


def read_limit(paths: list[Path]) -> tuple[float, float, int]:
    """The klines limit: the kept kline columns with their types."""
    return time_csv_reads(
        paths,
        lambda data: pacsv.ReadOptions(
            column_names=list(KLINE_CSV.names),
            skip_rows=1 if has_header(data, KLINE_CSV) else 0,
            use_threads=False,
        ),
        pacsv.ConvertOptions(column_types=KLINE_CSV.types, include_columns=KLINE_CSV.kept),
    )


def full_parse(source: Path, report: dict, work: Path) -> tuple[float, float, dict, float]:
    """Wall and CPU seconds of a first parse on a fresh copy, its stats, and the wall
    seconds of a no-op rerun."""
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(source / "aws_data", work / "aws_data")
    kwargs = dict(
        trade_type=TRADE_TYPE,
        symbol=SYMBOL,
        interval=INTERVAL,
        data_dir=work,
        download_report=report,
        report_path=work / "report.json",
        stats_path=work / "stats.json",
    )
    t, c = time.perf_counter(), time.process_time()
    stats = run_parse_klines(**kwargs)
    first, first_cpu = time.perf_counter() - t, time.process_time() - c
    t = time.perf_counter()
    again = run_parse_klines(**kwargs)
    rerun = time.perf_counter() - t
    assert again["files_parsed"] == 0
    return first, first_cpu, stats, rerun


def _agg_build(data_dir: Path, first_day: date, days: int, rows: int) -> dict:
    from crypto_lakehouse_emulator.ticks import write_daily_agg_trades

    files = {}
    for i in range(days):
        day = (first_day + timedelta(days=i)).isoformat()
        key = write_daily_agg_trades(data_dir / "aws_data", AGG_MARKET, SYMBOL, day, rows, seed=i)
        path = layout.aws_path(data_dir, key)
        layout.verified_marker(path).touch()
        checksum = Path(layout.checksum_key(str(path))).read_text().split()[0]
        files[key] = {"size": path.stat().st_size, "last_modified": day, "sha256": checksum}
    return {"trade_type": AGG_MARKET, "dataset": "aggTrades", "symbol": SYMBOL,
            "files": files, "quarantined": {}}  # fmt: skip


def _agg_limit(paths: list[Path]) -> tuple[float, float, int]:
    from crypto_lakehouse import datasets
    from crypto_lakehouse.parse import ticks

    entry = datasets.AGG_TRADES
    cols = list(entry.columns_for(AGG_MARKET))
    return time_csv_reads(
        paths,
        lambda data: pacsv.ReadOptions(
            column_names=cols, skip_rows=1 if not data[:1].isdigit() else 0, use_threads=False
        ),
        pacsv.ConvertOptions(
            column_types={n: ticks._csv_type(entry, n) for n in cols},
            true_values=ticks._TRUE,
            false_values=ticks._FALSE,
        ),
    )


def _agg_parse(work: str, report: dict, queue) -> None:
    """In a fresh process: wall/CPU seconds and the Arrow pool's peak of one first parse."""
    import pyarrow.parquet as pq

    from crypto_lakehouse.parse.ticks import run_parse_ticks

    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    # Warm-up outside the timing (lazy codec and kernel set-up), as the klines figure's.
    warm = Path(work) / "warm.pqt"
    pq.write_table(pa.table({"x": [1]}), warm, compression="zstd")
    warm.unlink()
    t, c = time.perf_counter(), time.process_time()
    out = run_parse_ticks(
        trade_type=AGG_MARKET, dataset="aggTrades", symbol=SYMBOL, data_dir=work,
        download_report=report, report_path=Path(work) / "report.json",
    )  # fmt: skip
    queue.put((time.perf_counter() - t, time.process_time() - c,
               pa.default_memory_pool().max_memory(), out["rows"]))  # fmt: skip


def main_agg_trades(args) -> None:
    import multiprocessing as mp

    import pyarrow.parquet as pq

    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="bench_aws_parse_agg_") as tmp:
        tmp = Path(tmp)
        first = date.fromisoformat(args.first_day)
        report = _agg_build(tmp / "src", first, args.days, args.rows)
        paths = [layout.aws_path(tmp / "src", k) for k in sorted(report["files"])]
        limits, limits_cpu, fulls, fulls_cpu, peaks = [], [], [], [], []
        for i in range(args.repeat):
            seconds, cpu, csv_bytes = _agg_limit(paths)
            limits.append(seconds)
            limits_cpu.append(cpu)
            work = tmp / f"run{i}"
            shutil.copytree(tmp / "src" / "aws_data", work / "aws_data")
            queue = ctx.Queue()
            proc = ctx.Process(target=_agg_parse, args=(str(work), report, queue))
            proc.start()
            wall, cpu, peak, rows = queue.get()
            proc.join()
            assert rows == args.days * args.rows
            fulls.append(wall)
            fulls_cpu.append(cpu)
            peaks.append(peak)
        day = first.strftime("%Y%m%d")
        day_table = pq.read_table(
            layout.parsed_day_path(tmp / "run0", AGG_MARKET, "aggTrades", SYMBOL, day)
        )
    from crypto_lakehouse.generate.agg_candles import candles_from_agg_trades

    candle_s = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        candles_from_agg_trades(day_table, "1m")
        candle_s.append(time.perf_counter() - t)
    mb = csv_bytes / 1e6
    limit_mbs, limit_cpu_mbs = mb / min(limits), mb / min(limits_cpu)
    parse_mbs, parse_cpu_mbs = mb / min(fulls), mb / min(fulls_cpu)
    print(json.dumps({
        "dataset": "aggTrades", "trade_type": AGG_MARKET, "days": args.days,
        "rows_per_day": args.rows, "csv_mb": round(mb, 2),
        "limit_mb_per_s": round(limit_mbs, 1), "parse_mb_per_s": round(parse_mbs, 1),
        "parse_vs_limit": round(parse_mbs / limit_mbs, 3),
        "limit_cpu_mb_per_s": round(limit_cpu_mbs, 1),
        "parse_cpu_mb_per_s": round(parse_cpu_mbs, 1),
        "parse_vs_limit_cpu": round(parse_cpu_mbs / limit_cpu_mbs, 3),
        "peak_arrow_mb": round(max(peaks) / 1e6, 1),
        "one_day_table_mb": round(day_table.nbytes / 1e6, 1),
        "peak_vs_day_table": round(max(peaks) / day_table.nbytes, 3),
        "candles_1m_from_one_day_seconds": round(min(candle_s), 3),
    }, indent=1))  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", choices=["klines", "aggTrades"], default="klines")
    ap.add_argument("--days", type=int, default=None, help="62 klines days, 2 aggTrades days")
    ap.add_argument("--rows", type=int, default=2_000_000, help="aggTrades rows per day")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--first-day", default="2024-10-01")
    ap.add_argument("--fsync", choices=("on", "off", "both"), default="on", help="klines only")
    args = ap.parse_args()
    if args.dataset == "aggTrades":
        args.days = args.days or 2
        main_agg_trades(args)
        return
    args.days = args.days or 62

    with tempfile.TemporaryDirectory(prefix="bench_aws_parse_") as tmp:
        tmp = Path(tmp)
        report = build_archives(tmp / "src", date.fromisoformat(args.first_day), args.days)
        paths = [layout.aws_path(tmp / "src", k) for k in sorted(report["files"])]
        full_parse(tmp / "src", report, tmp / "warm")  # imports and caches
        read_limit(paths[:5])
        limits, limits_cpu, fulls, fulls_cpu, reruns = [], [], [], [], []
        unsynced, unsynced_cpu = [], []
        stats: dict = {}
        for i in range(args.repeat):
            seconds, cpu, csv_bytes = read_limit(paths)
            limits.append(seconds)
            limits_cpu.append(cpu)
            if args.fsync != "off":
                io.configure(fsync=True)
                first, first_cpu, stats, rerun = full_parse(tmp / "src", report, tmp / f"run{i}")
                fulls.append(first)
                fulls_cpu.append(first_cpu)
                reruns.append(rerun)
                assert stats["csv_bytes"] == csv_bytes and stats["files_parsed"] == args.days
            if args.fsync != "on":
                io.configure(fsync=False)
                first, first_cpu, stats, rerun = full_parse(tmp / "src", report, tmp / f"off{i}")
                unsynced.append(first)
                unsynced_cpu.append(first_cpu)
                if args.fsync == "off":
                    fulls.append(first)
                    fulls_cpu.append(first_cpu)
                    reruns.append(rerun)
                io.configure(fsync=True)

    mb = csv_bytes / 1e6
    limit_mbs, limit_cpu_mbs = mb / min(limits), mb / min(limits_cpu)
    parse_mbs, parse_cpu_mbs = mb / min(fulls), mb / min(fulls_cpu)
    result = {
        "files": args.days,
        "csv_mb": round(mb, 2),
        "zip_mb": round(sum(f["size"] for f in report["files"].values()) / 1e6, 2),
        "limit_mb_per_s": round(limit_mbs, 1),
        "parse_mb_per_s": round(parse_mbs, 1),
        "parse_vs_limit": round(parse_mbs / limit_mbs, 3),
        "limit_cpu_mb_per_s": round(limit_cpu_mbs, 1),
        "parse_cpu_mb_per_s": round(parse_cpu_mbs, 1),
        "parse_vs_limit_cpu": round(parse_cpu_mbs / limit_cpu_mbs, 3),
        "parse_seconds": round(min(fulls), 3),
        "noop_rerun_seconds": round(min(reruns), 4),
        "parse_cpu_timings_last_run": stats.get("cpu_timings"),
        "fsync": args.fsync,
    }
    if args.fsync == "both":
        result["parse_seconds_fsync_off"] = round(min(unsynced), 3)
        result["parse_mb_per_s_fsync_off"] = round(mb / min(unsynced), 1)
        result["parse_fsync_on_vs_off"] = round(min(unsynced) / min(fulls), 3)
        result["parse_cpu_fsync_on_vs_off"] = round(min(unsynced_cpu) / min(fulls_cpu), 3)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
