"""Benchmark ``compare`` on two identical copies of pipeline outputs.

    python benchmarks/bench_compare.py [--years 6] [--symbols 30] [--days 60]

1. One symbol with six years of 1m candles: the inputs of ``bench_gen_kline`` go through
   ``run_gen_kline`` and ``run_resample`` (1h × 12 offsets + 5m, as ``bench_resample``; not
   timed); two copies of the resulting ``results_data`` (≈ 3.15 M 1m rows in the symbol's
   segment files, plus the resampled set) are compared with one job in a child process
   pinned to one CPU. Goal (issue 15): ≤ 2 s wall, < 1 GB peak RSS.
2. The output of a 30 symbols × 60 days run (10 spot, 10 um, 10 cm): built directly with the
   pipeline's own job functions (parsed monthly partitions and funding → ``run_gen_kline``
   → ``run_resample``) instead of a Snakemake run against the emulator, which takes minutes
   on the shared machine; the compared tree (parsed_data + results_data) is the same.
   Compared with one job and with two. Goal: ≤ 10 s.

Baseline in the same run: reading every compared file of both copies with
``pyarrow.parquet.read_table``, one file at a time (the I/O and decode floor); the ratio
compare / baseline is printed next to each figure.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_gen_kline import (  # noqa: E402
    build_inputs,
    pin_one_core,
    synthetic_klines,
    table_of,
    usage_since,
)
from bench_resample import TARGETS, gen  # noqa: E402

from crypto_lakehouse import io, layout  # noqa: E402
from crypto_lakehouse.schema import PARSED_FUNDING_SCHEMA, TIME_TYPE  # noqa: E402

HOUR = 3_600_000
COMPARED = ("results_data", "parsed_data")


def resample(data_dir: Path, trade_type: str, symbol: str, gen_report: Path) -> None:
    from crypto_lakehouse.resample import run_resample

    run_resample(
        trade_type=trade_type,
        symbol=symbol,
        interval="1m",
        data_dir=data_dir,
        gen_report=gen_report,
        targets=TARGETS,
        aggregations={},
        report_path=data_dir / "bench" / f"{trade_type}-{symbol}-resample.json",
        stats_path=data_dir / "bench" / f"{trade_type}-{symbol}-resample-stats.json",
    )


def build_one_symbol_six_years(data_dir: Path, years: float) -> int:
    rows = build_inputs(data_dir, years)
    report = gen(data_dir)
    from bench_gen_kline import SYMBOL, TRADE_TYPE

    resample(data_dir, TRADE_TYPE, SYMBOL, report)
    shutil.rmtree(data_dir / "parsed_data")  # part 1 compares the symbol's results only
    return rows


def build_many_symbols(data_dir: Path, n_symbols: int, days: int) -> int:
    from crypto_lakehouse.generate import run_gen_kline

    years = days / 365.25
    rows = 0
    for i in range(n_symbols):
        trade_type = layout.TRADE_TYPES[i % 3]
        symbol = f"S{i:02d}USD_PERP" if trade_type == "cm_futures" else f"S{i:02d}USDT"
        cols = synthetic_klines(years, seed=100 + i)
        t = cols["candle_begin_time"]
        rows += len(t)
        month = t.astype("datetime64[ms]").astype("datetime64[M]")
        bounds = np.flatnonzero(np.r_[True, month[1:] != month[:-1], True])
        folder = layout.parsed_klines_dir(data_dir, trade_type, symbol, "1m")
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            name = str(month[lo]).replace("-", "")
            io.write_parquet(folder / f"{name}.pqt", table_of(cols, lo, hi))
        if trade_type != "spot":
            f_time = np.arange(int(t[0]), int(t[-1]), 8 * HOUR, dtype=np.int64)
            f_arr = pa.array(f_time).view(TIME_TYPE)
            io.write_parquet(
                layout.parsed_funding_path(data_dir, trade_type, symbol),
                pa.Table.from_arrays(
                    [
                        f_arr,
                        pa.array(np.full(len(f_time), 8)),
                        pa.array(np.full(len(f_time), 1e-4)),
                        f_arr,
                    ],
                    schema=PARSED_FUNDING_SCHEMA,
                ),
            )
        report = data_dir / "bench" / f"{trade_type}-{symbol}-gen.json"
        run_gen_kline(
            trade_type=trade_type,
            symbol=symbol,
            interval="1m",
            data_dir=data_dir,
            split_gaps=True,
            with_vwap=True,
            with_funding_rates=trade_type != "spot",
            contract_size=100.0 if trade_type == "cm_futures" else None,
            report_path=report,
            stats_path=data_dir / "bench" / f"{trade_type}-{symbol}-gen-stats.json",
        )
        resample(data_dir, trade_type, symbol, report)
    return rows


def two_copies(data_dir: Path, dest: Path) -> tuple[Path, Path]:
    copies = dest / "legacy", dest / "ours"
    if dest.exists():
        return copies
    for copy in copies:
        for folder in COMPARED:
            if (data_dir / folder).is_dir():
                shutil.copytree(data_dir / folder, copy / folder)
    return copies


def peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM: unlike ru_maxrss, not inherited from the parent)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def perturbed_copy(legacy: Path, ours: Path, dest: Path) -> Path:
    """A copy of ``ours`` whose float columns are multiplied by 1 + 1e-13: every value stays
    within tolerance but no column is bit-equal, so each takes the numeric path (the case of
    files written by two different writers)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if dest.exists():
        return dest
    for path in sorted(ours.rglob("*.pqt")):
        table = pq.read_table(path)
        for i, field in enumerate(table.schema):
            if pa.types.is_floating(field.type):
                table = table.set_column(i, field, pc.multiply(table.column(i), 1 + 1e-13))
        io.write_parquet(dest / path.relative_to(ours), table)
    return dest


def child_compare(legacy: Path, ours: Path, jobs: int) -> None:
    if jobs == 1:
        pin_one_core()
    from crypto_lakehouse.compare import compare_dirs

    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    report = compare_dirs(legacy, ours, jobs=jobs)
    usage = usage_since(before, started) | {"peak_rss_mb": peak_rss_mb()}
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    usage["workers_peak_rss_mb"] = round(children.ru_maxrss / 1024, 1)
    usage["workers_cpu_s"] = round(children.ru_utime + children.ru_stime, 2)
    usage["files"] = len(report.pairs)
    usage["rows"] = sum(p.legacy_rows or 0 for p in report.pairs)
    usage["exit_code"] = report.exit_code()
    print(json.dumps(usage))


def child_baseline(legacy: Path, ours: Path) -> None:
    pin_one_core()
    import pyarrow.parquet as pq

    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    for root in (legacy, ours):
        for folder in COMPARED:
            for path in sorted((root / folder).rglob("*.pqt")):
                pq.read_table(path)
    print(json.dumps(usage_since(before, started) | {"peak_rss_mb": peak_rss_mb()}))


def run_child(*args: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, *args], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(title: str, legacy: Path, ours: Path, goal_s: float, jobs_list) -> None:
    base = run_child("--baseline", str(legacy), str(ours))
    base_cpu = base["user_s"] + base["sys_s"]
    print(f"\n{title}")
    print(
        f"  baseline (read both copies, one core): {base['wall_s']:.2f} s wall, "
        f"CPU {base_cpu:.2f} s, {base['peak_rss_mb']:.0f} MB peak"
    )
    for jobs in jobs_list:
        r = run_child("--compare", str(legacy), str(ours), "--jobs", str(jobs))
        cpu = r["user_s"] + r["sys_s"] + r["workers_cpu_s"]
        workers = f", workers ≤ {r['workers_peak_rss_mb']:.0f} MB each" if jobs > 1 else ""
        print(
            f"  compare --jobs {jobs}: {r['wall_s']:.2f} s wall (goal ≤ {goal_s:g} s; "
            f"×{r['wall_s'] / base['wall_s']:.2f} the baseline), CPU {cpu:.2f} s "
            f"(×{cpu / base_cpu:.2f}), peak RSS {r['peak_rss_mb']:.0f} MB{workers}; "
            f"{r['files']} files, {r['rows']:,} legacy rows, exit {r['exit_code']}"
        )


def build(folder: Path, which: str, args) -> int:
    if (folder / "built.json").exists():  # --keep: reuse
        return json.loads((folder / "built.json").read_text())["rows"]
    shutil.rmtree(folder, ignore_errors=True)
    shutil.rmtree(folder.with_name(folder.name + "-copies"), ignore_errors=True)
    argv = ["--build", which, str(folder), "--years", str(args.years)]
    argv += ["--symbols", str(args.symbols), "--days", str(args.days)]
    rows = run_child(*argv)["rows"]
    (folder / "built.json").write_text(json.dumps({"rows": rows}))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--years", type=float, default=6)
    parser.add_argument("--symbols", type=int, default=30)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--compare", nargs=2, type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--baseline", nargs=2, type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--jobs", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--build", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--keep", type=Path, help="build the data here and keep it")
    args = parser.parse_args()
    if args.build:
        which, folder = args.build
        if which == "one":
            rows = build_one_symbol_six_years(Path(folder), args.years)
        else:
            rows = build_many_symbols(Path(folder), args.symbols, args.days)
        print(json.dumps({"rows": rows}))
        return
    if args.compare:
        child_compare(*args.compare, args.jobs)
        return
    if args.baseline:
        child_baseline(*args.baseline)
        return
    # The data is built in child processes: the parent stays small, so the children's peak
    # RSS figures are theirs alone.
    with tempfile.TemporaryDirectory() as tmp:
        tmp = args.keep or Path(tmp)
        t0 = time.perf_counter()
        rows = build(tmp / "one", "one", args)
        legacy, ours = two_copies(tmp / "one", tmp / "one-copies")
        print(
            f"built: one symbol, {rows:,} archive rows, gen_kline + resample "
            f"({time.perf_counter() - t0:.0f} s, not timed)"
        )
        measure(f"one symbol, {args.years:g} years of 1m + resampled set", legacy, ours, 2, [1])
        skewed = perturbed_copy(legacy, ours, tmp / "one-copies" / "ours-skewed")
        measure(
            "the same, every float value of ours × (1 + 1e-13): no column bit-equal",
            legacy,
            skewed,
            2,
            [1],
        )
        t0 = time.perf_counter()
        rows = build(tmp / "many", "many", args)
        legacy, ours = two_copies(tmp / "many", tmp / "many-copies")
        print(
            f"\nbuilt: {args.symbols} symbols × {args.days} days, {rows:,} archive rows "
            f"({time.perf_counter() - t0:.0f} s, not timed)"
        )
        measure(
            f"{args.symbols} symbols × {args.days} days (parsed_data + results_data)",
            legacy,
            ours,
            10,
            [1, 2],
        )


if __name__ == "__main__":
    main()
