"""Benchmark the daily update of one symbol: six years of 1m candles grow by one day.

    python benchmarks/bench_daily_update.py [--years 6]

Builds the inputs of ``bench_gen_kline`` (3.15 M minutes, REST day files for the last 30
days, funding), runs gen_kline + resample (1h × 12 offsets and 5m, as ``bench_resample``)
once to have a previous build, then adds one REST day file (and its three funding events).
On a copy of that grown data_dir it runs the full recompute; on the original the
incremental (tail) build. Each run is a child process pinned to one CPU; wall and CPU
seconds are printed side by side and the output files of both are compared byte for byte.
Goal (issue 11): the one-day update (gen_kline + resample) at most 1.5 s.
"""

from __future__ import annotations

import argparse
import filecmp
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


def run_both(data_dir: Path, incremental: bool) -> dict:
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


def child(data_dir: Path, incremental: bool) -> None:
    pin_one_core()
    # As the gen_kline and resample jobs run (smk.run_job(uses_pandas=False), one commit
    # group): without this, pyarrow's first numpy conversion imported pandas inside the
    # timed update (~0.2 s that no job pays).
    from crypto_lakehouse.smk import refuse_pandas

    refuse_pandas()
    import crypto_lakehouse.generate  # noqa: F401  imports are not part of the update
    import crypto_lakehouse.resample  # noqa: F401

    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    with io.deferred_dir_syncs():
        result = run_both(data_dir, incremental)
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


def timed(data_dir: Path, incremental: bool) -> dict:
    args = [sys.executable, __file__, "--child", str(data_dir)]
    out = subprocess.run(
        args + (["--incremental"] if incremental else []),
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def same_outputs(a: Path, b: Path) -> bool:
    root_a = layout.results_klines_dir(a, TRADE_TYPE, INTERVAL).parent.parent
    root_b = layout.results_klines_dir(b, TRADE_TYPE, INTERVAL).parent.parent
    files = sorted(p.relative_to(root_a) for p in root_a.rglob("*.pqt"))
    other = sorted(p.relative_to(root_b) for p in root_b.rglob("*.pqt"))
    return files == other and all(filecmp.cmp(root_a / f, root_b / f, shallow=False) for f in files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--years", type=float, default=6)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--incremental", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.incremental)
        return
    with tempfile.TemporaryDirectory() as tmp:
        inc, ref = Path(tmp) / "inc", Path(tmp) / "ref"
        rows = build_inputs(inc, args.years)
        first = timed(inc, incremental=True)  # no previous build: a full build
        add_one_day(inc)
        shutil.copytree(inc, ref)
        update = timed(inc, incremental=True)
        full = timed(ref, incremental=False)
        print(f"inputs: {rows:,} minutes + one REST day (one core per run)")
        print(f"{'':22} {'wall s':>8} {'CPU s':>8} {'gen_kline s':>12} {'resample s':>11}")
        for label, r in (
            ("first build (full)", first),
            ("full recompute", full),
            ("daily update (tail)", update),
        ):
            cpu = r["user_s"] + r["sys_s"]
            gen_s = r["gen"]["seconds"]["total"]
            res_s = r["resample"]["seconds"]["total"]
            print(f"{label:22} {r['wall_s']:8.2f} {cpu:8.2f} {gen_s:12.2f} {res_s:11.2f}")
        print(f"update / full (wall)   : {update['wall_s'] / full['wall_s']:.1%} (goal <= 1.5 s)")
        print(f"gen_kline tail         : {update['gen'].get('incremental')}")
        print(f"resample segments      : {update['resample'].get('segments_by_mode')}")
        print(f"outputs byte-identical : {same_outputs(inc, ref)}")


if __name__ == "__main__":
    main()
