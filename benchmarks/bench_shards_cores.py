"""Benchmark: `shards: auto` sized for a local run's cores against one shard per trade type
(what `auto` gave before it looked at the cores), in the same run.

    python benchmarks/bench_shards_cores.py [--symbols 12] [--days 60] [--runs 2] [--cores N]

One trade type (spot, ``--symbols`` of `bench_vs_legacy.py`'s symbol names, ``--days`` of
1m archives from its mirror builder, served with REST by its emulator process); the five
legacy targets (`aws_download aws_parse api_download gen_kline resample`) on a fresh data dir
with ``--cores`` (default: this host's CPUs), once with the default `shards: auto` and once
with `shards: 1`, alternating, ``--runs`` times. Prints the wall seconds of each, the shard
count `auto` chose (from the run's shard reports) and the ratio one-shard / auto; then
checks that both runs wrote the same Parquet tables. The mirror is cached in ``--work``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_vs_legacy as legacy_bench  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402


def run_once(url: str, work: Path, end: date, shards, cores: int) -> tuple[float, int]:
    shutil.rmtree(work, ignore_errors=True)
    config = legacy_bench.our_config(url, work / "data", end)
    config.update(trade_types=["spot"], symbols={"spot": "all"}, shards=shards)
    cmd_config = work / "config.json"
    work.mkdir(parents=True)
    cmd_config.write_text(json.dumps(config))
    cmd, env = legacy_bench.ours_command(work, cmd_config, legacy_bench.WHOLE)
    cmd[cmd.index("--cores") + 1] = str(cores)
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    reports = work / "data/lakehouse/reports/gen_kline/spot/klines-1m/shards"
    return seconds, len(list(reports.glob("*.json")))


def tables(data: Path) -> dict[str, object]:
    out = {}
    for path in sorted((data / "results_data").rglob("*.pqt")):
        out[path.relative_to(data).as_posix()] = pq.read_table(path)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--symbols", type=int, default=12)
    ap.add_argument("--days", type=int, default=60)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--first-day", default="2024-01-01")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "bench_shards")
    args = ap.parse_args()
    if args.symbols > len(legacy_bench.BASES):
        raise SystemExit(f"at most {len(legacy_bench.BASES)} symbols")

    symbols = {"spot": [f"{b}USDT" for b in legacy_bench.BASES[: args.symbols]]}
    first = date.fromisoformat(args.first_day)
    end = first + timedelta(days=args.days - 1)
    args.work.mkdir(parents=True, exist_ok=True)
    mirror, _ = legacy_bench.build_mirrors(args.work, symbols, first, args.days)
    now = datetime(end.year, end.month, end.day, tzinfo=timezone.utc) + timedelta(days=2)
    print(legacy_bench.environment_line())
    print(f"spot {args.symbols} symbols x {args.days} days, --cores {args.cores}, "
          f"load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    with legacy_bench.EmulatorProcess(mirror, symbols, first, int(now.timestamp() * 1000)) as url:
        for run in range(1, args.runs + 1):
            auto_s, auto_n = run_once(url, args.work / "auto", end, "auto", args.cores)
            one_s, one_n = run_once(url, args.work / "one", end, 1, args.cores)
            same = tables(args.work / "auto/data")
            other = tables(args.work / "one/data")
            equal = same.keys() == other.keys() and all(same[k].equals(other[k]) for k in same)
            print(
                f"run {run}: auto ({auto_n} shards) {auto_s:.2f} s, one shard ({one_n}) "
                f"{one_s:.2f} s: one/auto = {one_s / auto_s:.2f}x; "
                f"{len(same)} result tables {'equal' if equal else 'DIFFERENT'}"
            )
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
