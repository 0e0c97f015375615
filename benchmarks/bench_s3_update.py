"""Benchmark the daily update of a shard of symbols on object storage that answers slowly.

    python benchmarks/bench_s3_update.py [--symbols 8] [--years 0.25] [--latency 0.02]
        [--others 0] [--at-once 1,4] [--features]

AWS S3 answers a request in tens of ms; the SeaweedFS of the tests answers on loopback in
about one. Here SeaweedFS sits behind a proxy that delays every answer by ``--latency``
seconds (``tests/latency_proxy.py``). For each ``--at-once`` value (``storage.symbols_at_once``)
the benchmark builds the same data dir: ``--symbols`` symbols of ``--years`` of 1m candles
(``bench_gen_kline``'s inputs under other names), a first gen_kline + resample (1h x 12
offsets and 5m, as ``bench_resample``) built, then one more REST day for every symbol
(``bench_daily_update.add_one_day``). It then times the daily update: the gen_kline shard
then the resample shard (``--features``: then the features shard, default settings), as
their jobs run them (``shards.for_each_symbol`` over the rule entry points, with their
unchanged-inputs check; one process). ``--others N``: the output folders also hold the
files of N other symbols (small stand-ins), as a data dir of the whole universe does.

``--local``: the same update on a local data dir too (one symbol at a time, as local shard
jobs run), for what an S3 data dir costs in CPU.

Printed per value: wall and CPU seconds of each shard, seconds per symbol, each shard's
S3 requests by kind (``storage.request_stats``: count and seconds waited, summed over
threads); then whether the result files of every value are byte-identical. Uploads and
the first build are not timed.
"""

from __future__ import annotations

import argparse
import json
import resource
import secrets
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_daily_update import TARGETS, add_one_day  # noqa: E402
from bench_gen_kline import SYMBOL, TRADE_TYPE, build_inputs  # noqa: E402
from latency_proxy import LatencyProxy  # noqa: E402
from s3_helpers import SeaweedS3, apply_env  # noqa: E402

from crypto_lakehouse import layout, storage  # noqa: E402


def upload_symbols(local: Path, root: str, names: list[str]) -> None:
    """``local``'s files (one symbol's inputs) under ``root`` once per name."""
    files = [p for p in sorted(local.rglob("*")) if p.is_file()]

    def put(args):
        rel, body, name = args
        dest = storage.join(root, rel.replace(SYMBOL, name))
        # A local file rewritten with the same bytes gets a new mtime, which tells a tail
        # build that it changed (an S3 object's ETag stays); the pipeline does not rewrite
        # unchanged partitions either.
        if not storage.is_remote(dest) and dest.is_file() and dest.read_bytes() == body:
            return
        storage.write_bytes(dest, body)

    work = [(p.relative_to(local).as_posix(), p.read_bytes(), n) for p in files for n in names]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, work))


def put_others(root: str, n: int) -> None:
    """Tiny stand-ins for the outputs of ``n`` other symbols in every output folder."""
    folders = [layout.results_klines_dir(root, TRADE_TYPE, "1m")]
    for target in TARGETS:
        if target["interval"] == "1h":
            folders += [
                layout.resampled_dir(root, TRADE_TYPE, "1h", f"{m}m") for m in range(0, 60, 5)
            ]
        else:
            folders.append(layout.resampled_dir(root, TRADE_TYPE, target["interval"], "0m"))
    work = [folder / f"ZZ{i:05d}USDT.pqt" for folder in folders for i in range(n)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda p: storage.write_bytes(p, b"x"), work))


def shard_kwargs(root: str, names: list[str], reports: Path, stage: str) -> dict:
    (reports / stage).mkdir(parents=True, exist_ok=True)
    common = {"trade_type": TRADE_TYPE, "interval": "1m", "data_dir": root}
    if stage == "gen_kline":
        common |= {"split_gaps": True, "with_vwap": True, "with_funding_rates": True,
                   "min_days": 1, "min_price_chg": 0.1}  # fmt: skip
        paths = {"report_path": str(reports / stage)}
    elif stage == "features":  # the default config's indicators and windows
        paths = {"report_path": str(reports / stage), "gen_report": str(reports / "gen_kline"),
                 "resample_report": str(reports / "resample")}  # fmt: skip
    else:
        common |= {"targets": TARGETS, "aggregations": {}}
        paths = {"report_path": str(reports / stage), "gen_report": str(reports / "gen_kline")}
    return {"symbols": names, "shard_report": str(reports / stage / "shard.json"),
            "symbol_paths": paths, **common}  # fmt: skip


def run_shards(root: str, names: list[str], reports: Path, features: bool) -> dict:
    from crypto_lakehouse.jobs import run_features_rule, run_gen_kline_rule, run_resample_rule
    from crypto_lakehouse.shards import for_each_symbol

    out = {}
    stages = [("gen_kline", run_gen_kline_rule), ("resample", run_resample_rule)]
    stages += [("features", run_features_rule)] if features else []
    for stage, func in stages:
        before = resource.getrusage(resource.RUSAGE_SELF)
        started = time.perf_counter()
        storage.request_stats(reset=True)
        report = for_each_symbol(func)(**shard_kwargs(root, names, reports, stage))
        after = resource.getrusage(resource.RUSAGE_SELF)
        if report["failed"]:
            raise SystemExit(f"{stage}: {report['failed']} failed")
        modes = {}
        for name in names:
            stats = json.loads((reports.parent / "stats" / stage / f"{name}.json").read_text())
            mode = (stats.get("incremental") or {}).get("mode", "full")
            if stage == "resample":
                mode = "+".join(f"{k}{n}" for k, n in stats["segments_by_mode"].items() if n)
            elif stage == "features":
                mode = "+".join(
                    f"{k}{n}"
                    for k, n in stats["files_by_mode"].items()
                    if n and k != "rows_computed"
                )
            modes[mode] = modes.get(mode, 0) + 1
        out[stage] = {
            "modes": modes,
            "wall_s": time.perf_counter() - started,
            "cpu_s": after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime,
            "requests": storage.request_stats(reset=True),
        }
    return out


def result_files(root: str) -> dict[str, bytes]:
    base = storage.data_path(storage.join(root, "results_data"))
    return {
        p.relative_to(base).as_posix(): storage.read_bytes(p)
        for p in storage.list_files(base, suffix=".pqt")
        if not p.name.startswith("ZZ")
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--symbols", type=int, default=8)
    ap.add_argument("--years", type=float, default=0.25)
    ap.add_argument("--latency", type=float, default=0.02, help="seconds added to each answer")
    ap.add_argument("--others", type=int, default=0, help="other symbols' files per folder")
    ap.add_argument("--at-once", default="1,4", help="storage.symbols_at_once values")
    ap.add_argument("--features", action="store_true", help="the features shard too")
    ap.add_argument(
        "--local",
        action="store_true",
        help="also the same update on a local data dir (fsync on), for the CPU an S3 data dir adds",
    )
    args = ap.parse_args()
    names = [f"S{i:03d}USDT" for i in range(args.symbols)]
    values = [int(v) for v in args.at_once.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        server = SeaweedS3(Path(tmp) / "seaweed", volumes=64, volume_mb=256).start()
        proxy = LatencyProxy(server.port, args.latency)
        try:
            apply_env(server.env)
            server.create_bucket("bench")
            direct = server.storage_settings
            slow = dict(direct, endpoint_url=f"http://127.0.0.1:{proxy.port}")
            local = Path(tmp) / "inputs"
            build_inputs(local, args.years)
            grown = Path(tmp) / "grown"
            build_inputs(grown, args.years)
            add_one_day(grown)
            roots: dict = {v: f"s3://bench/at{v}-{secrets.token_hex(3)}" for v in values}
            if args.local:
                roots["local"] = str(Path(tmp) / "local-data")
            for v, root in roots.items():  # untimed, without the proxy's latency
                storage.configure(dict(direct, symbols_at_once=4))
                upload_symbols(local, root, names)
                put_others(root, args.others)
                run_shards(root, names, Path(tmp) / f"reports{v}" / "reports", args.features)
                upload_symbols(grown, root, names)
            print(
                f"{len(names)} symbols x {args.years} years of 1m candles, one more day each; "
                f"{args.others} other symbols' files per output folder; "
                f"+{args.latency * 1000:.0f} ms per answer"
            )
            results = {}
            for v, root in roots.items():
                storage.configure(dict(slow, symbols_at_once=1 if v == "local" else v))
                timing = run_shards(
                    root, names, Path(tmp) / f"reports{v}" / "reports", args.features
                )
                total = sum(t["wall_s"] for t in timing.values())
                shards = ", ".join(
                    f"{stage} {t['wall_s']:.2f} s ({t['cpu_s']:.2f} CPU)"
                    for stage, t in timing.items()
                )
                label = "local data dir" if v == "local" else f"symbols_at_once {v}"
                cpu = sum(t["cpu_s"] for t in timing.values())
                print(
                    f"{label}: {shards}; {total / len(names):.2f} s and "
                    f"{cpu / len(names):.2f} CPU s per symbol"
                )
                for stage, t in timing.items():
                    n = sum(r["count"] for r in t["requests"].values())
                    kinds = ", ".join(
                        f"{k} {r['count']} ({r['seconds']:.1f} s)" for k, r in t["requests"].items()
                    )
                    print(
                        f"  {stage} {t['modes']}; requests {n / len(names):.0f} per symbol: {kinds}"
                    )
                storage.configure(direct)
                results[v] = result_files(root)
            first = next(iter(results.values()))
            same = all(r == first for r in results.values())
            print(f"result files byte-identical across values: {same} ({len(first)} files)")
        finally:
            proxy.stop()
            server.stop()


if __name__ == "__main__":
    main()
