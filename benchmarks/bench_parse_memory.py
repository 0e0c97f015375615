"""Peak memory of the klines parse (``run_parse_klines``) on one archive, in a fresh process.

Builds (once, into ``--src``, kept between calls) emulator kline zips of one spot symbol:

- ``monthly_1s``: one monthly ``1s`` zip (2025-01, microsecond stamps: 2.68 M rows);
- ``two_monthly_1s``: two of them (2025-01 and 2025-02);
- ``daily_1s``: one daily ``1s`` zip (2025-02-01, 86,400 rows);
- ``month_of_daily_1s``: 31 daily ``1s`` zips (2025-03);
- ``daily_1m``: 31 daily ``1m`` zips (2024-10), the ordinary daily update's kind of file.

Each ``--case`` is parsed on a fresh copy of its zips, ``--runs`` times, each in a new
Python process, which reports its peak RSS (``VmHWM``), Arrow's pool peak
(``pa.default_memory_pool().max_memory()``), wall and CPU seconds, and per step of the
parse's Timer (read, check, merge, quality, write) the highest RSS and Arrow bytes
sampled every 2 ms while that step ran (tracemalloc does not see Arrow's memory).

    python benchmarks/bench_parse_memory.py --src /tmp/parse_mem_src --case monthly_1s --runs 3

``--s3``: the data dir on a SeaweedFS server on 127.0.0.1 (``tests/s3_helpers.py``; the
zips uploaded first, the job's process reads and writes the bucket).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
from datetime import date, timedelta
from pathlib import Path

SYMBOL, TRADE_TYPE = "BTCUSDT", "spot"
CASES = {"monthly_1s": "1s", "two_monthly_1s": "1s", "daily_1s": "1s", "month_of_daily_1s": "1s",
         "daily_1m": "1m"}  # fmt: skip


def build(src: Path, case: str) -> dict:
    """The case's zips (+ .verified) under ``src/case/aws_data``; its download report."""
    from crypto_lakehouse_emulator.generate import write_kline_day, write_kline_month

    from crypto_lakehouse import layout

    folder = src / case
    report_path = folder / "report.json"
    if report_path.exists():
        return json.loads(report_path.read_text())
    mirror = folder / "aws_data"
    interval = CASES[case]
    if case == "monthly_1s":
        keys = [write_kline_month(mirror, TRADE_TYPE, SYMBOL, interval, "2025-01", seed=7)]
    elif case == "two_monthly_1s":
        keys = [write_kline_month(mirror, TRADE_TYPE, SYMBOL, interval, m, seed=7)
                for m in ("2025-01", "2025-02")]  # fmt: skip
    elif case == "daily_1s":
        keys = [write_kline_day(mirror, TRADE_TYPE, SYMBOL, interval, "2025-02-01", seed=7)]
    elif case == "month_of_daily_1s":
        keys = [write_kline_day(mirror, TRADE_TYPE, SYMBOL, interval, date(2025, 3, d), seed=7)
                for d in range(1, 32)]  # fmt: skip
    else:
        first = date(2024, 10, 1)
        keys = [
            write_kline_day(mirror, TRADE_TYPE, SYMBOL, interval, first + timedelta(days=i), seed=7)
            for i in range(31)
        ]
    files = {}
    for key in keys:
        path = layout.aws_path(folder, key)
        layout.verified_marker(path).touch()
        checksum = Path(str(path) + ".CHECKSUM").read_text().split()[0]
        files[key] = {"size": path.stat().st_size, "last_modified": "x", "sha256": checksum}
    report = {"trade_type": TRADE_TYPE, "dataset": f"klines-{interval}", "symbol": SYMBOL,
              "files": files, "quarantined": {}}  # fmt: skip
    report_path.write_text(json.dumps(report))
    return report


CHILD = textwrap.dedent(
    """
    import json, resource, sys, threading, time
    from contextlib import contextmanager
    import pyarrow as pa
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    import crypto_lakehouse.parse as parse_pkg
    from crypto_lakehouse.parse.klines import run_parse_klines

    args = json.loads(sys.argv[1])
    if args.get("storage"):
        from crypto_lakehouse import storage
        storage.configure(args.pop("storage"))
    current = ["setup"]
    peaks = {}
    original_step = parse_pkg.Timer.step

    @contextmanager
    def step(self, name):
        before, current[0] = current[0], name
        try:
            with original_step(self, name):
                yield
        finally:
            current[0] = before

    parse_pkg.Timer.step = step
    page = resource.getpagesize()
    done = threading.Event()

    def sample():
        with open("/proc/self/statm") as fh:
            while not done.is_set():
                fh.seek(0)
                rss = int(fh.read().split()[1]) * page
                arrow = pa.total_allocated_bytes()
                rss_peak, arrow_peak = peaks.get(current[0], (0, 0))
                peaks[current[0]] = (max(rss_peak, rss), max(arrow_peak, arrow))
                time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t, c = time.perf_counter(), time.process_time()
    stats = run_parse_klines(**args)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    done.set()
    sampler.join()
    with open("/proc/self/status") as fh:
        hwm = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
    print(json.dumps({
        "peak_rss_mb": round(hwm / 1024, 1),
        "arrow_max_mb": round(pa.default_memory_pool().max_memory() / 2**20, 1),
        "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
        "files_parsed": stats["files_parsed"], "csv_mb": round(stats["csv_bytes"] / 1e6, 1),
        "steps_mb": {k: [round(r / 2**20), round(a / 2**20)] for k, (r, a) in peaks.items()},
    }))
    """
)


def run_once(src: Path, case: str, report: dict, s3=None) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench_parse_memory_") as tmp:
        work = Path(tmp)
        env = None
        if s3 is None:
            shutil.copytree(src / case / "aws_data", work / "aws_data")
            data_dir = str(work)
        else:
            import os
            import secrets

            from crypto_lakehouse import storage

            data_dir = f"s3://{secrets.token_hex(4)}"
            s3.create_bucket(data_dir[5:])
            for path in sorted((src / case / "aws_data").rglob("*")):
                if path.is_file():
                    rel = path.relative_to(src / case)
                    storage.write_bytes(f"{data_dir}/{rel}", path.read_bytes())
            env = {**os.environ, **s3.env}
        args = dict(
            trade_type=TRADE_TYPE, symbol=SYMBOL, interval=CASES[case], data_dir=data_dir,
            download_report=report, report_path=str(work / "report.json"),
            stats_path=str(work / "stats.json"),
        )  # fmt: skip
        if s3 is not None:
            args["storage"] = s3.storage_settings
        out = subprocess.run(
            [sys.executable, "-c", CHILD, json.dumps(args)], capture_output=True, text=True,
            env=env,
        )  # fmt: skip
        if out.returncode:
            raise SystemExit(out.stderr)
        return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, required=True, help="where the zips are built / kept")
    ap.add_argument("--case", choices=sorted(CASES), action="append")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--s3", action="store_true", help="data dir on a local SeaweedFS server")
    args = ap.parse_args()
    s3 = None
    if args.s3:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from s3_helpers import SeaweedS3, apply_env

        s3 = SeaweedS3(Path(tempfile.mkdtemp(prefix="bench_parse_memory_s3_")), 16, 512).start()
        apply_env(s3.env)
        from crypto_lakehouse import storage

        storage.configure(s3.storage_settings)
    try:
        for case in args.case or sorted(CASES):
            report = build(args.src, case)
            runs = [run_once(args.src, case, report, s3) for _ in range(args.runs)]
            for r in runs:
                print(json.dumps({"case": case, "s3": args.s3, **r}), flush=True)
            if len(runs) > 1:
                med = {k: statistics.median(r[k] for r in runs)
                       for k in ("peak_rss_mb", "arrow_max_mb", "wall_s", "cpu_s")}  # fmt: skip
                print(json.dumps({"case": case, "s3": args.s3, "median": med}), flush=True)
    finally:
        if s3 is not None:
            s3.stop()
            shutil.rmtree(s3.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
