"""Benchmark resample on one synthetic symbol with six years of 1m candles.

    python benchmarks/bench_resample.py [--years 6]

Builds the gen_kline inputs of ``bench_gen_kline``, runs gen_kline (not timed), then runs
``run_resample`` to 1h × 12 offsets (offset step 5m) plus 5m/0m in a child process pinned
to one CPU and prints wall time, CPU time, stage timings and the child's peak RSS.
Goal (issue): under 5 s on one core.
"""

from __future__ import annotations

import argparse
import json
import resource
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

TARGETS = [{"interval": "1h", "offset_step": "5m"}, {"interval": "5m", "offset_step": "0m"}]


def gen(data_dir: Path) -> Path:
    from crypto_lakehouse.generate import run_gen_kline

    report = data_dir / "bench" / "gen_report.json"
    run_gen_kline(
        trade_type=TRADE_TYPE,
        symbol=SYMBOL,
        interval=INTERVAL,
        data_dir=data_dir,
        split_gaps=True,
        with_vwap=True,
        with_funding_rates=True,
        min_days=1,
        min_price_chg=0.1,
        contract_size=None,
        report_path=report,
        stats_path=data_dir / "bench" / "gen_stats.json",
    )
    return report


def child(data_dir: Path) -> None:
    pin_one_core()
    from crypto_lakehouse.resample import run_resample

    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    stats = run_resample(
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
    print(json.dumps(usage_since(before, started) | stats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--years", type=float, default=6)
    parser.add_argument("--keep", type=Path, help="build the inputs here and keep them")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.keep or Path(tmp)
        rows = build_inputs(data_dir, args.years)
        gen(data_dir)
        print(f"inputs: {rows:,} archive rows, gen_kline done")
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(data_dir)],
            check=True,
            capture_output=True,
            text=True,
        )
        result = json.loads(out.stdout.strip().splitlines()[-1])
        report_figures(result, "resample", 5)
        print(f"files / rows        : {result['files_written']} / {result['rows_written']:,}")


if __name__ == "__main__":
    main()
