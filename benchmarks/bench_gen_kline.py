"""Benchmark gen_kline on one synthetic symbol with six years of 1m candles.

    python benchmarks/bench_gen_kline.py [--years 6] [--keep DIR]

Builds the inputs (monthly archive files, a month of REST day files, 8-hourly funding in
the archive and on REST, a few holes, zero-volume minutes and one split-worthy gap) in a
temporary data_dir, then runs ``run_gen_kline`` in a child process pinned to one CPU and
prints its wall time, the stage timings and the child's peak RSS.
Goal (issue): under 4 s and under 1 GB peak.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from crypto_lakehouse import io, layout  # noqa: E402
from crypto_lakehouse.schema import (  # noqa: E402
    API_FUNDING_SCHEMA,
    KLINE_SCHEMA,
    PARSED_FUNDING_SCHEMA,
    TIME_TYPE,
)

MIN = 60_000
HOUR = 3_600_000
DAY = 86_400_000
START = 1_514_764_800_000  # 2018-01-01 00:00 UTC
TRADE_TYPE, SYMBOL, INTERVAL = "um_futures", "BTCUSDT", "1m"


def synthetic_klines(years: float, seed: int = 7) -> dict[str, np.ndarray]:
    """A random-walk minute series with a 3-day pause (+30 %), 2000 missing minutes and
    500 zero-volume minutes."""
    rng = np.random.default_rng(seed)
    n = int(years * 365.25 * 1440)
    time_ms = START + np.arange(n, dtype=np.int64) * MIN
    gap_at = n // 3
    time_ms[gap_at:] += 3 * DAY
    close = 10_000.0 * np.exp(np.cumsum(rng.normal(0, 5e-4, n)))
    open_ = np.empty(n)
    open_[0] = close[0]
    open_[1:] = close[:-1]
    open_[gap_at:] *= 1.3  # the market reopens 30 % higher after the pause
    close[gap_at:] *= 1.3
    spread = np.abs(rng.normal(0, 2e-4, n)) * close
    high = np.maximum(open_, close) + spread
    low = np.minimum(open_, close) - spread
    volume = rng.gamma(2.0, 5.0, n)
    volume[rng.choice(n, 500, replace=False)] = 0.0
    vwap = low + (high - low) * rng.random(n)
    keep = np.ones(n, dtype=bool)
    keep[rng.choice(n, 2000, replace=False)] = False
    keep[[0, gap_at, n - 1]] = True
    cols = {
        "candle_begin_time": time_ms,
        "open": open_,
        "high": high,
        "low": low,
        "close": close,
        "volume": volume,
        "quote_volume": volume * vwap,
        "trade_num": rng.integers(1, 500, n),
        "taker_buy_base_asset_volume": volume / 2,
        "taker_buy_quote_asset_volume": volume * vwap / 2,
    }
    return {k: v[keep] for k, v in cols.items()}


def table_of(cols: dict[str, np.ndarray], lo: int, hi: int) -> pa.Table:
    arrays = [
        pa.array(cols[f.name][lo:hi]).view(TIME_TYPE)
        if f.name == "candle_begin_time"
        else pa.array(cols[f.name][lo:hi], type=f.type)
        for f in KLINE_SCHEMA
    ]
    return pa.Table.from_arrays(arrays, schema=KLINE_SCHEMA)


def build_inputs(data_dir: Path, years: float) -> int:
    cols = synthetic_klines(years)
    t = cols["candle_begin_time"]
    month = t.astype("datetime64[ms]").astype("datetime64[M]")
    bounds = np.flatnonzero(np.r_[True, month[1:] != month[:-1], True])
    archive_dir = layout.parsed_klines_dir(data_dir, TRADE_TYPE, SYMBOL, INTERVAL)
    last_days = t[-1] - 30 * DAY
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        name = str(month[lo]).replace("-", "")
        io.write_parquet(archive_dir / f"{name}.pqt", table_of(cols, lo, hi))
    # REST repeats the last 30 days (REST wins on every one of those minutes).
    day = t.astype("datetime64[ms]").astype("datetime64[D]")
    rest_dir = layout.api_klines_dir(data_dir, TRADE_TYPE, SYMBOL, INTERVAL)
    first_rest = int(np.searchsorted(t, last_days))
    day_bounds = np.flatnonzero(np.r_[True, day[first_rest + 1 :] != day[first_rest:-1], True])
    for lo, hi in zip(day_bounds[:-1], day_bounds[1:], strict=True):
        lo, hi = lo + first_rest, hi + first_rest
        name = str(day[lo]).replace("-", "")
        io.write_parquet(rest_dir / f"{name}.pqt", table_of(cols, lo, hi))
    # Funding every 8 h over the whole range; REST holds the last 1000 events.
    f_time = np.arange(START, int(t[-1]), 8 * HOUR, dtype=np.int64)
    rate = np.random.default_rng(1).normal(1e-4, 5e-5, len(f_time))
    f_arr = pa.array(f_time).view(TIME_TYPE)
    io.write_parquet(
        layout.parsed_funding_path(data_dir, TRADE_TYPE, SYMBOL),
        pa.Table.from_arrays(
            [f_arr, pa.array(np.full(len(f_time), 8)), pa.array(rate), f_arr],
            schema=PARSED_FUNDING_SCHEMA,
        ),
    )
    rest_f = pa.array(f_time[-1000:] + 8).view(TIME_TYPE)
    io.write_parquet(
        layout.api_funding_path(data_dir, TRADE_TYPE, SYMBOL),
        pa.Table.from_arrays(
            [rest_f, f_arr[-1000:], pa.array(rate[-1000:])], schema=API_FUNDING_SCHEMA
        ),
    )
    return len(t)


def pin_one_core() -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)


def child(data_dir: Path) -> None:
    pin_one_core()
    from crypto_lakehouse.generate import run_gen_kline

    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    stats = run_gen_kline(
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
        report_path=data_dir / "bench" / "report.json",
        stats_path=data_dir / "bench" / "stats.json",
    )
    print(json.dumps(usage_since(before, started) | stats))


def usage_since(before: resource.struct_rusage, started: float) -> dict:
    """Wall, user and system seconds since ``before``/``started``, and the peak RSS.

    System time is reported apart: on some virtual machines a page fault costs ~0.1 ms,
    so first-touch memory shows up there rather than in the computation (user time)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "wall_s": round(time.perf_counter() - started, 3),
        "user_s": round(usage.ru_utime - before.ru_utime, 3),
        "sys_s": round(usage.ru_stime - before.ru_stime, 3),
        "page_faults": usage.ru_minflt - before.ru_minflt,
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
    }


def report_figures(result: dict, what: str, goal_s: float) -> None:
    cpu = result["user_s"] + result["sys_s"]
    print(f"{what} wall time : {result['wall_s']:.2f} s (goal < {goal_s:g} s, one core)")
    print(
        f"{what} CPU time  : {cpu:.2f} s = user {result['user_s']:.2f} + system "
        f"{result['sys_s']:.2f} ({result['page_faults']:,} page faults)"
    )
    print(f"peak RSS (child)    : {result['peak_rss_mb']:.0f} MB")
    print(f"stage seconds       : {result['seconds']}")


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
        t0 = time.perf_counter()
        rows = build_inputs(data_dir, args.years)
        print(f"inputs: {rows:,} archive rows built in {time.perf_counter() - t0:.1f} s")
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(data_dir)],
            check=True,
            capture_output=True,
            text=True,
        )
        result = json.loads(out.stdout.strip().splitlines()[-1])
        report_figures(result, "gen_kline", 4)
        print(f"rows                : {result['rows']}")
        print(f"files written       : {result['files_written']} (goal peak RSS < 1024 MB)")


if __name__ == "__main__":
    main()
