"""Benchmark of api_download klines: candles per minute against the bound set by the weight limit.

Run by hand (not in CI)::

    python benchmarks/bench_api_download.py [--market um|spot|cm] [--days 120]
        [--limit 120] [--window 2] [--share 0.8] [--concurrency 4]

What it does:

1. Starts the emulator with a ``RestEmulator`` in a *separate process* (server and client do not
   share a GIL): one synthetic symbol listed on day D0, "now" = the day after the last day,
   weight limit ``--limit`` per window of ``--window`` seconds (a shortened minute), announced
   in exchangeInfo like Binance does.
2. Writes one parsed archive day (D0) so that the symbol has an anchor; the ``--days`` days
   after it are missing and must come from REST.
3. Runs ``run_exchange_info`` (the job learns the limit and window), waits for a window
   boundary, then times ``run_api_klines`` at default settings (``weight_share`` 0.8).
4. Prints the figures as JSON.

The bound: a job may spend ``share × limit`` weight per window, and each candle costs
``weight_per_candle = Σ request weights / Σ candles`` of the job's request plan
(um/cm 1m: 2 / 480; spot 1m: 2 / 960). So

    bound (candles/min) = share × limit × (60 / window_s) / weight_per_candle

``ratio`` = achieved / bound with achieved = candles / elapsed. Because the last window is
usually partial, ``ratio_whole_windows`` also divides by the elapsed time rounded up to whole
windows (a conservative figure). Goal: ≥ 0.9 and zero 429s.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "emulator"))  # the emulator distribution, not installed

from crypto_lakehouse_emulator.rest import RestEmulator  # noqa: E402
from crypto_lakehouse_emulator.server import Emulator  # noqa: E402

from crypto_lakehouse import layout  # noqa: E402
from crypto_lakehouse.intervals import DAY_MS  # noqa: E402
from crypto_lakehouse.io import write_parquet  # noqa: E402
from crypto_lakehouse.provenance import day_iso  # noqa: E402
from crypto_lakehouse.rest.exchange_info import run_exchange_info  # noqa: E402
from crypto_lakehouse.rest.klines import klines_to_table, plan_chunks, run_api_klines  # noqa: E402

TRADE_TYPE = {"spot": "spot", "um": "um_futures", "cm": "cm_futures"}
D0 = 19_000  # 2022-01-08
SEED = 11


def make_rest(args) -> RestEmulator:
    rest = RestEmulator(
        now_ms=(D0 + args.days + 1) * DAY_MS + 60_000,
        window_s=args.window,
        weight_limits={args.market: args.limit},
    )
    rest.add_synthetic_klines(args.market, args.symbol, start_ms=D0 * DAY_MS, seed=SEED)
    return rest


def serve(args, conn) -> None:
    """Child process: serve until told to stop, then send the REST counters back."""
    with Emulator(rest=(rest := make_rest(args))) as emu:
        conn.send(emu.base_url)
        conn.recv()
        conn.send(rest.counters(args.market))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--market", choices=sorted(TRADE_TYPE), default="um")
    p.add_argument("--symbol", default="BENCHUSDT")
    p.add_argument("--days", type=int, default=120)
    p.add_argument("--limit", type=int, default=120, help="weight limit per window")
    p.add_argument("--window", type=float, default=2.0, help="window length in seconds")
    p.add_argument("--share", type=float, default=0.8)
    p.add_argument("--concurrency", type=int, default=4)
    args = p.parse_args(argv)
    trade_type = TRADE_TYPE[args.market]

    parent, child = mp.Pipe()
    proc = mp.Process(target=serve, args=(args, child), daemon=True)
    proc.start()
    url = parent.recv()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            data_dir = Path(tmp)
            rows = make_rest(args).klines_rows(
                args.market, args.symbol, "1m", D0 * DAY_MS, (D0 + 1) * DAY_MS
            )
            archive = klines_to_table(rows, lo_ms=0, hi_ms=2**62, now_ms=2**62)
            write_parquet(
                layout.parsed_klines_dir(data_dir, trade_type, args.symbol, "1m") / "202201.pqt",
                archive,
            )
            ei = data_dir / "exchange_info.json"
            run_exchange_info(trade_type=trade_type, api_url=url, out_path=ei, timeout_s=10)
            plan = plan_chunks(trade_type, "1m", range(D0 + 1, D0 + 1 + args.days))
            weight = sum(w.weight for c in plan for w in c.windows)
            candles = sum(w.limit for c in plan for w in c.windows)
            weight_per_candle = weight / candles
            bound = args.share * args.limit * (60 / args.window) / weight_per_candle

            # start at a window boundary so the first window is a whole one
            now = time.time()
            time.sleep(args.window - now % args.window + 0.06)
            t0 = time.monotonic()
            stats = run_api_klines(
                trade_type=trade_type,
                symbol=args.symbol,
                interval="1m",
                data_dir=data_dir,
                api_url=url,
                parse_report={"partitions": {}},
                exchange_info_path=ei,
                end_date=day_iso(D0 + args.days),
                weight_share=args.share,
                report_path=data_dir / "report.json",
                stats_path=data_dir / "stats.json",
                concurrency=args.concurrency,
            )
            elapsed = time.monotonic() - t0
    finally:
        parent.send("stop")
        counters = parent.recv()
        proc.join(10)

    achieved = stats["candles"] / elapsed * 60
    whole = -(-elapsed // args.window) * args.window
    out = {
        "market": args.market,
        "days": args.days,
        "limit_per_window": args.limit,
        "window_s": args.window,
        "share": args.share,
        "concurrency": args.concurrency,
        "weight_per_candle": round(weight_per_candle, 6),
        "bound_candles_per_min": round(bound),
        "candles": stats["candles"],
        "elapsed_s": round(elapsed, 2),
        "achieved_candles_per_min": round(achieved),
        "ratio": round(achieved / bound, 3),
        "ratio_whole_windows": round(stats["candles"] / whole * 60 / bound, 3),
        "requests": stats["requests"],
        "weight": stats["weight"],
        "http_429_client": stats["http_429"],
        "http_429_server": counters.get("429", 0),
        "http_418_server": counters.get("418", 0),
        "retries": stats["retries"],
    }
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
