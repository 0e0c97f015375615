"""Several REST shard jobs of one host at once, each its own process (issue 11): together
they stay within the host's weight limit, as one job does alone.

Each job (``rest.host.run_host_shard``) keeps up to 32 requests in flight (8 symbols of 4);
a process sees another's weight only in the used-weight header of answers to requests that
have already arrived, so N processes pacing on that header alone can each fill the window's
remaining budget in the same round trip. The jobs of one host share a ledger of the window's
weight in the run directory (``limiter.SharedWindowState``), so every reservation counts for
all of them before its request is sent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from crypto_lakehouse_emulator.rest import RestEmulator

from crypto_lakehouse import layout
from crypto_lakehouse.io import write_json
from tests.unit.test_rest_funding import DAY, HOUR, D, write_first_kline

REPO = Path(__file__).resolve().parents[2]

# A child: imports first, then waits for the go file, so that the jobs start together (the
# emulated windows are 2 s: an import's second would spread them over windows).
CHILD = """
import json, os, sys, time
from crypto_lakehouse.rest.host import run_host_shard
args = json.load(open(sys.argv[1]))
while not os.path.exists(sys.argv[2]):
    time.sleep(0.005)
json.dump(run_host_shard(**args), open(sys.argv[3], "w"))
"""


def _rest(symbols, **emulator_kw):
    rest = RestEmulator(now_ms=(D + 2) * DAY + HOUR, **emulator_kw)
    for i, symbol in enumerate(symbols):
        rest.add_synthetic_klines("um", symbol, start_ms=D * DAY, seed=i)
    return rest


def _shard_args(tmp, url, shard, symbols, run_dir):
    reports = tmp / "reports"
    return dict(
        shard=shard,
        shard_report=str(reports / f"shards/{shard}.json"),
        klines={
            "symbols": symbols,
            "symbol_paths": {"report_path": str(reports / "klines-1m")},
            "symbol_values": {"parse_report": {s: str(tmp / "parse.json") for s in symbols}},
        },
        interval="1m",
        trade_type="um_futures",
        data_dir=str(tmp),
        api_url=url,
        end_date=None,
        exchange_info_path=str(tmp / "ei.json"),
        rest_budget_dir=layout.rest_budget_dir(str(run_dir)),
    )


def run_jobs_at_once(tmp, url, shards: list[list[str]], *, timeout_s=90.0) -> list[dict]:
    """Each shard's ``run_host_shard`` in its own Python process, started together; their
    shard results (the function's return values; None for a job that failed)."""
    go = tmp / "go"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "emulator")]))
    procs = []
    for n, symbols in enumerate(shards):
        args_path, out_path = tmp / f"args{n}.json", tmp / f"result{n}.json"
        write_json(args_path, _shard_args(tmp, url, n, symbols, tmp / "run"))
        cmd = [sys.executable, "-c", CHILD, str(args_path), str(go), str(out_path)]
        procs.append((subprocess.Popen(cmd, env=env, cwd=tmp), out_path))
    time.sleep(1.0 + 0.3 * len(shards))  # the imports (2 cores shared)
    go.write_text("")
    results = []
    for proc, out_path in procs:
        ok = proc.wait(timeout=timeout_s) == 0
        results.append(json.loads(out_path.read_text()) if ok else None)
    return results


def _setup(tmp, symbols, limit, window_s, **emulator_kw):
    rest = _rest(symbols, window_s=window_s, weight_limits={"um": limit}, **emulator_kw)
    write_json(tmp / "parse.json", {})
    for symbol in symbols:
        write_first_kline(tmp, symbol, "um_futures", D * DAY)
    return rest


def _days_fetched(tmp, symbols):
    out = {}
    for symbol in symbols:
        api_dir = layout.api_klines_dir(tmp, "um_futures", symbol, "1m")
        out[symbol] = sorted(p.name for p in api_dir.glob("*.pqt"))
    return out


JOBS = 6
PER_JOB = 8  # rest.host.SYMBOLS_AT_ONCE: every symbol of a job in flight at once


def test_shard_jobs_of_one_host_at_once_stay_within_its_limit(emulator, tmp_path):
    # 6 jobs x 8 symbols x 2 days x 3 requests of weight 2: 576 weight against 200 per 2 s
    # window (a budget of 160): the jobs wait on the limit for several windows. Each job
    # alone keeps within it; together, 6 x 32 requests in flight of weight 2 are 384.
    symbols = [f"S{i:02d}USDT" for i in range(JOBS * PER_JOB)]
    rest = _setup(tmp_path, symbols, limit=200, window_s=2)
    write_json(tmp_path / "ei.json", {"request_weight": {"limit": 200, "window_s": 2.0}})
    emu = emulator(rest=rest)
    shards = [symbols[n * PER_JOB : (n + 1) * PER_JOB] for n in range(JOBS)]
    results = run_jobs_at_once(tmp_path, emu.base_url, shards)
    c = rest.counters("um")
    assert c.get("429", 0) == 0 and c.get("418", 0) == 0, c
    assert all(r is not None and r["failed"] == [] for r in results)
    assert c["requests/klines"] == 6 * len(symbols)
    day_files = [f"{day_iso_compact(d)}.pqt" for d in (D, D + 1)]
    assert _days_fetched(tmp_path, symbols) == {s: day_files for s in symbols}


def day_iso_compact(day: int) -> str:
    from crypto_lakehouse.provenance import day_iso

    return day_iso(day).replace("-", "")
