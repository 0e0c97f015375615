"""Benchmark the features stage on one synthetic symbol with six years of 1m candles.

    python benchmarks/bench_features.py [--years 6]

Builds the gen_kline inputs of ``bench_gen_kline``, runs gen_kline and resample (1h × 12
offsets + 5m, not timed), then in a child process pinned to one CPU runs ``run_features``
with the default settings on every candle file (the 1m segments and the 13 resampled
files) and prints wall time, CPU time, stage timings and the child's peak RSS. A second
child measures the floor in the same run: the bare TA-Lib calls of the default indicators
on every file plus a Parquet write of the same feature tables (same columns, same options).
Goal (issue): ≤ 4 s wall on one core, < 1.5 GB peak.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_gen_kline import (  # noqa: E402
    INTERVAL,
    SYMBOL,
    TRADE_TYPE,
    build_inputs,
    pin_one_core,
    report_figures,
    usage_since,
)
from bench_resample import TARGETS, gen  # noqa: E402


def prepare(data_dir: Path) -> None:
    from crypto_lakehouse.resample import run_resample

    gen(data_dir)
    run_resample(
        trade_type=TRADE_TYPE,
        symbol=SYMBOL,
        interval=INTERVAL,
        data_dir=data_dir,
        gen_report=data_dir / "bench" / "gen_report.json",
        targets=TARGETS,
        aggregations={},
        report_path=data_dir / "bench" / "resample_report.json",
        stats_path=data_dir / "bench" / "resample_stats.json",
    )


def first_build(data_dir: Path) -> None:
    """Every timed run is a first build (not timed): a previous child's state would make the
    job skip, and replacing its files would add the deletion of ~0.5 GB of old files."""
    for state in (data_dir / "lakehouse" / "state" / "features").rglob("*.json"):
        state.unlink()
    for folder in ("features", "resampled_features"):
        shutil.rmtree(data_dir / "results_data" / TRADE_TYPE / folder, ignore_errors=True)


def run(data_dir: Path, bench: Path | None = None) -> dict:
    """The features with the default settings; the reports in ``bench`` (default
    ``data_dir/bench``; a local folder when ``data_dir`` is on S3)."""
    from crypto_lakehouse.features import run_features
    from crypto_lakehouse.features.spec import DEFAULT_INDICATORS, DEFAULT_WINDOWS

    bench = data_dir / "bench" if bench is None else bench
    return run_features(
        trade_type=TRADE_TYPE,
        interval=INTERVAL,
        data_dir=data_dir,
        symbols=[SYMBOL],
        gen_reports=[str(bench / "gen_report.json")],
        resample_reports=[str(bench / "resample_report.json")],
        indicators=list(DEFAULT_INDICATORS),
        windows=list(DEFAULT_WINDOWS),
        report_path=bench / "features_report.json",
        stats_path=bench / "features_stats.json",
    )


def setup_child(default_allocator: bool) -> None:
    """One core, and the allocator settings of the job process (scripts/features_shard.py)."""
    pin_one_core()
    if not default_allocator:
        from crypto_lakehouse.features.allocator import keep_freed_memory

        keep_freed_memory()


def child(data_dir: Path, default_allocator: bool) -> None:
    """Times what a job process does after Python starts: the imports of the features code
    (pandas, TA-Lib, pyarrow.parquet: ~0.5 s CPU, reported as ``import_s``), the allocator
    settings of scripts/features_shard.py, then ``run_features``."""
    first_build(data_dir)
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    setup_child(default_allocator)
    import crypto_lakehouse.features.job  # noqa: F401

    imported = time.perf_counter()
    stats = run(data_dir)
    print(
        json.dumps(
            usage_since(before, started) | stats | {"import_s": round(imported - started, 3)}
        )
    )


def child_floor(data_dir: Path, default_allocator: bool) -> None:
    """Bare TA-Lib calls (function API) and a Parquet write of the same tables."""
    setup_child(default_allocator)
    import pyarrow.parquet as pq
    import talib

    from crypto_lakehouse import io
    from crypto_lakehouse.features.job import WRITE_OPTIONS

    report = json.loads((data_dir / "bench" / "features_report.json").read_text())
    outputs = [o for s in report["symbols"].values() for o in s["outputs"]]
    talib_s = write_s = cpu_s = 0.0
    for out in outputs:
        close = pq.read_table(data_dir / out["source"], columns=["close"])
        close = close.column("close").to_numpy()
        t0, c0 = time.perf_counter(), time.process_time()
        talib.RSI(close, 14)
        talib.MACD(close, 12, 26, 9)
        talib.BBANDS(close, 20, 2, 2)
        for period in (20, 50, 200):
            talib.EMA(close, period)
        talib_s += time.perf_counter() - t0
        cpu_s += time.process_time() - c0
        table = pq.read_table(data_dir / out["file"])
        floor_file = data_dir / "bench" / "floor.pqt"
        floor_file.unlink(missing_ok=True)  # a first write, as in the timed child
        t1, c1 = time.perf_counter(), time.process_time()
        io.write_parquet(floor_file, table, **WRITE_OPTIONS)
        write_s += time.perf_counter() - t1
        cpu_s += time.process_time() - c1
        del table
    print(
        json.dumps(
            {"talib_s": round(talib_s, 3), "write_s": round(write_s, 3), "cpu_s": round(cpu_s, 3)}
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--years", type=float, default=6)
    parser.add_argument("--keep", type=Path, help="build the inputs here and keep them")
    parser.add_argument(
        "--reuse", type=Path, help="inputs built before with --keep DIR: only time the children"
    )
    parser.add_argument(
        "--default-allocator",
        action="store_true",
        help="run the children without keep_freed_memory (as before; for comparison)",
    )
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--floor", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.default_allocator)
        return
    if args.floor:
        child_floor(args.floor, args.default_allocator)
        return
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.reuse or args.keep or Path(tmp)
        if not args.reuse:
            rows = build_inputs(data_dir, args.years)
            prepare(data_dir)
            print(f"inputs: {rows:,} archive rows, gen_kline and resample done")
        extra = ["--default-allocator"] if args.default_allocator else []
        results = []
        for flag in ("--child", "--floor"):
            out = subprocess.run(
                [sys.executable, __file__, flag, str(data_dir), *extra],
                check=True,
                capture_output=True,
                text=True,
            )
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        result, floor = results
        print(f"load average        : {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        report_figures(result, "features", 4)
        print(f"files / rows        : {result['files_written']} / {result['rows_written']:,}")
        bare = floor["talib_s"] + floor["write_s"]
        print(
            f"floor (same run)    : {bare:.2f} s = bare TA-Lib {floor['talib_s']:.2f} "
            f"+ Parquet write of the same tables {floor['write_s']:.2f}"
        )
        cpu = result["user_s"] + result["sys_s"]
        print(f"floor CPU time      : {floor['cpu_s']:.2f} s")
        print(
            f"features / floor    : {result['wall_s'] / bare:.2f}x wall, "
            f"{cpu / floor['cpu_s']:.2f}x CPU"
        )


if __name__ == "__main__":
    main()
