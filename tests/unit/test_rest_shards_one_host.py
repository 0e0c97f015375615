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
from crypto_lakehouse.rest.host import SYMBOLS_AT_ONCE
from crypto_lakehouse.rest.klines import DEFAULT_CONCURRENCY
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


def run_jobs_at_once(
    tmp, url, shards: list[list[str]], *, meanwhile=None, timeout_s=90.0
) -> list[dict]:
    """Each shard's ``run_host_shard`` in its own Python process, started together; their
    shard results (the function's return values; None for a job that failed). ``meanwhile``:
    called once the jobs have been let go."""
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
    if meanwhile is not None:
        meanwhile()
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
PER_JOB = SYMBOLS_AT_ONCE  # every symbol of a job in flight at once


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


def test_a_429_they_did_not_cause_makes_the_jobs_wait_as_retry_after_asks_without_a_ban(
    emulator, tmp_path
):
    # Another client of the IP uses up the host's weight while the jobs run (the limit is
    # far off for them: 2400 a minute): every request for 3 s is answered 429. Each thread
    # of a job has at most one request under way, so the jobs, backing off as Retry-After
    # asks, send at most that many (6 x 32) during the 3 s; the emulator bans (418) beyond.
    # Jobs that did not wait (retrying at once) would send each request six times.
    symbols = [f"S{i:02d}USDT" for i in range(JOBS * PER_JOB)]
    under_way = JOBS * SYMBOLS_AT_ONCE * DEFAULT_CONCURRENCY
    rest = _setup(tmp_path, symbols, limit=2400, window_s=60, ban_after=under_way)
    write_json(tmp_path / "ei.json", {"request_weight": {"limit": 2400, "window_s": 60.0}})
    emu = emulator(rest=rest)
    shards = [symbols[n * PER_JOB : (n + 1) * PER_JOB] for n in range(JOBS)]

    def exhaust_while_running():
        deadline = time.monotonic() + 30
        while rest.counters("um").get("requests/klines", 0) < 40:
            assert time.monotonic() < deadline, "the jobs sent no requests"
            time.sleep(0.002)
        rest.exhaust("um", 3.0)

    t0 = time.monotonic()
    results = run_jobs_at_once(tmp_path, emu.base_url, shards, meanwhile=exhaust_while_running)
    c = rest.counters("um")
    assert 0 < c.get("429", 0) <= under_way and c.get("418", 0) == 0, c
    assert all(r is not None and r["failed"] == [] for r in results)
    # each job's /time and its symbols' klines, and each request answered 429 once more
    assert c["requests"] == JOBS + 6 * len(symbols) + c["429"]
    day_files = [f"{day_iso_compact(d)}.pqt" for d in (D, D + 1)]
    assert _days_fetched(tmp_path, symbols) == {s: day_files for s in symbols}
    assert time.monotonic() - t0 >= 3.0


def test_both_um_pools_are_shared_in_the_run_dir(tmp_path):
    from crypto_lakehouse.rest.host import open_host_client

    budget_dir = layout.rest_budget_dir(str(tmp_path / "run"))
    make = dict(trade_type="um_futures", api_url="http://127.0.0.1:9", exchange_info_path=None)
    with open_host_client(**make, rest_budget_dir=budget_dir) as a:
        with open_host_client(**make, rest_budget_dir=budget_dir) as b:
            a.weight_limiter.acquire(7)
            a.funding_limiter.acquire(1)
            assert (b.weight_limiter.used, b.funding_limiter.used) == (7, 1)
    assert sorted(p.name for p in Path(budget_dir).iterdir()) == [
        "um_futures.fundingRate.json",
        "um_futures.weight.json",
    ]
    with open_host_client(**make) as alone:  # no folder: the process's own windows
        assert (alone.weight_limiter.used, alone.funding_limiter.used) == (0, 0)
