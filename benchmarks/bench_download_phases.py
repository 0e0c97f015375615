"""Benchmark: where a download job process spends its CPU (issue 19 gate, fixed or per file).

Run by hand (not in CI)::

    python benchmarks/bench_download_phases.py --baseline CHECKOUT [--symbols 12] [--days 100]
        [--latency 0.02] [--jobs 4] [--runs 2] [--work DIR]

Same mirror and emulator as ``bench_aws_download.py`` (its helpers; the emulator in its own
process). For ours and for the checkout given (e.g. ``git worktree add --detach /tmp/old
<commit>``), interleaved, each in fresh child processes (``python -c``, the checkout first
on ``sys.path``), ``storage.fsync`` off for both (a checkout from before the switch never
fsyncs), CPU as user + system of the process (``getrusage``, its threads included):

1. **start + imports**: a fresh interpreter that imports ``run_sync`` (what every pipeline
   job process pays once; ``bench_aws_download.py`` does not count it: its timer starts
   after the imports and its pool workers are forked after them).
2. **shard job**: one process runs ``run_sync`` for every symbol in turn, as the
   ``aws_download_shard`` job does: CPU of the first symbol (session, loop, threads and
   whatever is done lazily at the first request) and the mean of the others (steady state),
   then the CPU per file of the whole process, imports included (the fixed cost amortised
   over the shard).
3. **forked pool** (as ``bench_aws_download.py --jobs N``): ``--jobs`` worker processes
   forked after the imports share the symbols; per process, its first symbol and the mean of
   its others.

Files are zips + CHECKSUMs (two per archive). The machine is shared: read the CPU figures,
not the wall clock, and compare the two checkouts of the same round.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_aws_download as bench  # noqa: E402

# argv[1]: JSON [symbols, details_dir, data_dir, base_url, jobs]. Prints one JSON line.
_CHILD = """
import resource
def cpu_ms():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return (r.ru_utime + r.ru_stime) * 1000
start_ms = cpu_ms()
import json, os, sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from crypto_lakehouse.archive.sync import run_sync
try:  # a checkout from before storage.fsync never fsyncs
    from crypto_lakehouse import io
    io.configure(fsync=False)
except (ImportError, AttributeError):
    pass
import_ms = cpu_ms()
symbols, details_dir, data_dir, base_url, jobs = json.loads(sys.argv[1])

def one(symbol):
    c0 = cpu_ms()
    stats = run_sync(
        trade_type="spot", dataset="klines", interval="1m", symbol=symbol,
        details_path=Path(details_dir) / f"{symbol}.json", data_dir=data_dir,
        archive_url=base_url, concurrency=32, max_retries=5, timeout_s=30,
        report_path=Path(data_dir) / "reports" / f"{symbol}.json",
        stats_path=Path(data_dir) / "stats" / f"{symbol}.json",
    )
    return os.getpid(), cpu_ms() - c0, 2 * stats["files_downloaded"]

if jobs == 1:
    runs = [one(s) for s in symbols]
else:
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        runs = list(pool.map(one, symbols))
print(json.dumps({"start_ms": start_ms, "import_ms": import_ms - start_ms,
                  "total_ms": cpu_ms(), "runs": runs}))
"""


def run_child(checkout: Path, symbols, details_dir, data_dir, base_url, jobs) -> dict:
    shutil.rmtree(data_dir, ignore_errors=True)
    out = subprocess.run(
        [sys.executable, "-c", _CHILD,
         json.dumps([symbols, str(details_dir), str(data_dir), base_url, jobs])],
        env={**os.environ, "PYTHONPATH": str(checkout)}, cwd=checkout,
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def per_process(runs) -> tuple[list[float], list[float], int]:
    """(first symbol ms of each process, every later symbol's ms, files of a symbol)."""
    by_pid: dict[int, list[float]] = {}
    for pid, ms, _files in runs:
        by_pid.setdefault(pid, []).append(ms)
    firsts = [v[0] for v in by_pid.values()]
    rest = [ms for v in by_pid.values() for ms in v[1:]]
    return firsts, rest, runs[0][2]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--baseline", type=Path, required=True, help="a checkout to compare")
    p.add_argument("--symbols", type=int, default=12)
    p.add_argument("--days", type=int, default=100)
    p.add_argument("--latency", type=float, default=0.02, help="seconds per request")
    p.add_argument("--jobs", type=int, default=4, help="worker processes of the forked pool")
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--work", type=Path, default=Path("/tmp/bench_download_phases"))
    args = p.parse_args(argv)

    bench.build_mirror(args.work / "mirror", args.symbols, args.days)
    symbols = bench.symbol_names(args.symbols)
    emu, base_url = bench.start_emulator(args.work / "mirror", args.latency)
    results: dict[str, list[tuple[dict, dict]]] = {"ours": [], "baseline": []}
    try:
        listing_dir = args.work / "listing"
        shutil.rmtree(listing_dir, ignore_errors=True)
        bench.run_listing(
            trade_type="spot", dataset="klines", interval="1m", symbols=symbols,
            listing_url=base_url, out_index=listing_dir / "klines-1m.json",
            details_dir=listing_dir / "klines-1m", concurrency=16,
        )  # fmt: skip
        order = [("ours", bench.REPO), ("baseline", args.baseline.resolve())]
        for i in range(args.runs):
            for name, checkout in order if i % 2 == 0 else order[::-1]:
                common = (checkout, symbols, listing_dir / "klines-1m", args.work / "data",
                          base_url)  # fmt: skip
                results[name].append((run_child(*common, 1), run_child(*common, args.jobs)))
    finally:
        emu.terminate()
        emu.wait(timeout=10)

    print(
        f"{args.symbols} symbols x {args.days} days, latency {args.latency * 1000:.0f} ms, "
        f"forked pool of {args.jobs}; load average "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}; CPU ms (user + system)"
    )
    print(
        f"{'':<10} {'start':>6} {'imports':>8} | shard job: {'1st sym':>8} {'later':>7} "
        f"{'ms/file':>8} {'+imports':>9} | forked: {'1st sym':>8} {'later':>7} {'ms/file':>8}"
    )
    for name, rounds in results.items():
        for seq, pool in rounds:
            first, rest, files = per_process(seq["runs"])
            n_files = sum(r[2] for r in seq["runs"])
            pool_first, pool_rest, _ = per_process(pool["runs"])
            print(
                f"{name:<10} {seq['start_ms']:>6.0f} {seq['import_ms']:>8.0f} | "
                f"{'':>11} {first[0]:>8.0f} {statistics.mean(rest):>7.1f} "
                f"{statistics.mean(rest) / files:>8.3f} {seq['total_ms'] / n_files:>9.3f} | "
                f"{'':>7} {statistics.mean(pool_first):>8.0f} {statistics.mean(pool_rest):>7.1f} "
                f"{statistics.mean(pool_rest) / files:>8.3f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
