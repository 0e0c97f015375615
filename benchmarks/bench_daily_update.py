"""Benchmark the daily update of one symbol: six years of 1m candles grow by one day.

    python benchmarks/bench_daily_update.py [--years 6] [--features] [--no-fsync]

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


def run_candles(data_dir: Path, incremental: bool) -> dict:
    """gen_kline then resample, as their jobs run them."""
    from crypto_lakehouse.generate import run_gen_kline
    from crypto_lakehouse.resample import run_resample

    out = data_dir / "bench"
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


def run_features(data_dir: Path) -> dict:
    """The features of every candle file with the default settings, as bench_features runs
    them; the previous build's record decides what is computed again, as in the job."""
    from bench_features import run

    return {"features": run(data_dir)}


def child(data_dir: Path, incremental: bool, part: str, fsync: bool = True) -> None:
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
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    with io.deferred_dir_syncs():
        if part == "features":
            result = run_features(data_dir)
        else:
            result = run_candles(data_dir, incremental)
    print(json.dumps(usage_since(before, started) | result))


def add_one_day(data_dir: Path) -> None:
    """The next day as a REST file: the last day's candles one day later, prices scaled so
    the series continues; three more funding events on REST. The archive's last monthly
    partition is rewritten too (same rows, new file), as aws_parse does when a day of the
    current month arrives: its day digests are unchanged, so the tail starts at the new day
    (before the content-based change point: at that month's first day)."""
    archive_dir = layout.parsed_klines_dir(data_dir, TRADE_TYPE, SYMBOL, INTERVAL)
    last_month = sorted(archive_dir.glob("*.pqt"))[-1]
    io.write_parquet(last_month, pq.read_table(last_month))
    rest_dir = layout.api_klines_dir(data_dir, TRADE_TYPE, SYMBOL, INTERVAL)
    last = sorted(rest_dir.glob("*.pqt"))[-1]
    table = pq.read_table(last)
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


def timed(data_dir: Path, incremental: bool, with_features: bool, fsync: bool = True) -> dict:
    """The candle stages' child, then (``with_features``) the features' child; wall and CPU
    summed."""
    result: dict = {}
    for part in ("candles", "features") if with_features else ("candles",):
        args = [sys.executable, __file__, "--child", str(data_dir), "--part", part]
        args += ["--incremental"] if incremental else []
        args += [] if fsync else ["--no-fsync"]
        out = subprocess.run(args, check=True, capture_output=True, text=True)
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
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--incremental", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--part", default="candles", help=argparse.SUPPRESS)
    parser.add_argument(
        "--features",
        action="store_true",
        help="also the features of every candle file (default settings), as the default "
        "config builds them",
    )
    parser.add_argument(
        "--no-fsync", action="store_true", help="as with storage.fsync: false (scratch disks)"
    )
    args = parser.parse_args()
    if args.child:
        child(args.child, args.incremental, args.part, not args.no_fsync)
        return
    feats, fsync = args.features, not args.no_fsync
    with tempfile.TemporaryDirectory() as tmp:
        inc, ref = Path(tmp) / "inc", Path(tmp) / "ref"
        rows = build_inputs(inc, args.years)
        first = timed(inc, True, feats, fsync)  # no previous build: a full build
        add_one_day(inc)
        shutil.copytree(inc, ref)
        # The full recompute of the features: no record of a previous build.
        shutil.rmtree(layout.state_path(ref, "features", "x", "x", "x").parents[2], True)
        # The copy's dirty pages written out first: an fsync in the timed update would wait
        # for them (ext4 commits the journal with every dirty page of the file system).
        os.sync()
        update = timed(inc, True, feats, fsync)
        full = timed(ref, False, feats, fsync)
        print(f"inputs: {rows:,} minutes + one REST day (one core per run; fsync {fsync})")
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
        print(f"update / full (wall)   : {update['wall_s'] / full['wall_s']:.1%} (goal <= 1.5 s)")
        print(f"gen_kline tail         : {update['gen'].get('incremental')}")
        print(f"gen_kline seconds      : {update['gen'].get('seconds')}")
        print(f"resample segments      : {update['resample'].get('segments_by_mode')}")
        if feats:
            f = update["features"]
            print(f"features files         : {f['files_by_mode']}, rows {f['rows_computed']:,}")
            print(f"features seconds       : {f['seconds']}")
        print(f"outputs byte-identical : {same_outputs(inc, ref)}")


if __name__ == "__main__":
    main()
