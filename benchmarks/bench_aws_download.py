"""Benchmark: our ``run_sync`` against ``aria2c -j32 -x4`` (the legacy downloader).

Run by hand (not in CI)::

    python benchmarks/bench_aws_download.py [--symbols 20] [--days 100] [--latency 0.02]
        [--concurrency 32] [--jobs 1 | --mode sequential|cores2] [--work DIR]
        [--baseline CHECKOUT [--runs 2] [--no-aria2]] [--fsync on|off|both]

What it does:

1. Builds a mirror of ``symbols × days`` spot 1m daily archives (zip + CHECKSUM each) in the
   Binance formats. To keep set-up fast, 8 template days are generated with
   ``crypto_lakehouse_emulator.generate`` and their bytes are reused for every key (each key
   still gets its own CHECKSUM sidecar). Cached in ``--work`` between runs.
2. Serves it with the emulator in a *separate process* (``python -m crypto_lakehouse_emulator``)
   with ``--latency`` seconds added to every request, so server and client do not share a GIL.
3. Lists the archive with ``run_listing`` (not timed).
4. Times ``run_sync`` over all symbols into an empty data dir: one call per symbol, with
   ``--jobs`` of them at a time in worker processes, as Snakemake runs ``aws_download_symbol``
   jobs: ``--jobs 1`` (= ``--mode sequential``, in this process) is ``--cores 1``, ``--jobs 2``
   (= ``--mode cores2``) is ``--cores 2``, ``--jobs 4`` is any ``--cores`` >= 4 with the
   default profile (its ``archive_http: 4``). ``--concurrency`` is the config's
   ``download.concurrency`` (requests in flight per job). Ours verifies every SHA-256 and
   writes the ``.verified`` markers.
5. Times ``aria2c -i <list> -j32 -x4 -q`` on the same zip + CHECKSUM URLs into an empty
   directory (no verification, as in legacy ``aws_download``). The goal ratio is against
   this. Then, for reference only, the legacy ``verify`` step over aria2's files (SHA-256
   against the CHECKSUM, an empty ``.verified`` marker; two processes): the legacy script
   runs it after the download, so aria2 + verify is what the legacy step costs in all.
6. Prints files/s (zips + CHECKSUMs), MB/s and CPU per file (user + system, of this process
   and its reaped children: the pool workers or aria2c, never the emulator) for both, and
   the ratio.

With ``--baseline CHECKOUT`` (a checkout of another version of this repository, e.g.
``git worktree add --detach /tmp/old <commit>``) step 4 is repeated with that checkout's
``run_sync`` on the same mirror and emulator, ``--runs`` times each, interleaved (ours,
baseline, baseline, ours, ...), and the ratio ours / baseline is printed per run pair; both
run in a fresh child process (``python -c``, the checkout first on ``sys.path``), timed
inside it after the imports. ``--no-aria2`` skips steps 5-6. The imports are never counted:
the timer starts after them and the pool workers are forked after them, so a worker counts
only what it does lazily at its first symbol. A pipeline job is a fresh interpreter running
its shard's symbols in turn: ``bench_download_phases.py`` measures that shape and splits the
CPU into imports, first symbol and steady state.

``--fsync`` is the config's ``storage.fsync`` for our downloader (default ``on``, as the
pipeline); ``both`` times ours with it on, then off, into fresh data dirs, and prints the
ratio (the cost of durable writes on the ``--work`` disk). With ``--baseline`` the first mode
given applies to every checkout that has the switch (a checkout from before it never fsyncs).

Reading the figures: on a 2-core machine client and emulator share the cores, and both
clients write every file to ``--work``. aria2 fsyncs each file and its control file, so on a
disk where that is slow it is disk-bound; on tmpfs (``--work /dev/shm/...``) it comes close
to its own latency bound (32 in flight / 20 ms). Ours is CPU-bound (HTTP, SHA-256, three
file creations per archive: CHECKSUM, zip and ``.verified``, each written atomically). Run
both storages to see which regime a figure comes from.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import date, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "emulator"))  # the emulator distribution, not installed

from crypto_lakehouse import io, layout  # noqa: E402
from crypto_lakehouse.archive.listing import run_listing  # noqa: E402
from crypto_lakehouse.archive.sync import run_sync  # noqa: E402

N_TEMPLATES = 8


def symbol_names(n: int) -> list[str]:
    # Letters only, all passing the spot filter (quote USDT, no UP/DOWN/BULL/BEAR suffix).
    return [f"S{chr(65 + i // 26)}{chr(65 + i % 26)}USDT" for i in range(n)]


def build_mirror(mirror: Path, n_symbols: int, n_days: int) -> int:
    """Write the mirror unless it already holds this shape; returns the zip count."""
    marker = mirror / ".bench-shape.json"
    shape = {"symbols": n_symbols, "days": n_days, "templates": N_TEMPLATES}
    if marker.exists() and json.loads(marker.read_text()) == shape:
        return n_symbols * n_days
    from crypto_lakehouse_emulator.generate import write_kline_day

    shutil.rmtree(mirror, ignore_errors=True)
    tpl_dir = mirror.parent / "templates"
    shutil.rmtree(tpl_dir, ignore_errors=True)
    first = date(2024, 1, 1)
    templates = []
    for i in range(N_TEMPLATES):
        key = write_kline_day(tpl_dir, "spot", "TPLUSDT", "1m", first + timedelta(days=i))
        templates.append((tpl_dir / key).read_bytes())
    for s, sym in enumerate(symbol_names(n_symbols)):
        for d in range(n_days):
            key = layout.daily_kline_key("spot", sym, "1m", (first + timedelta(days=d)).isoformat())
            data = templates[(s + d) % N_TEMPLATES]
            path = mirror / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            digest = hashlib.sha256(data).hexdigest()
            Path(f"{path}.CHECKSUM").write_text(f"{digest}  {path.name}")
    shutil.rmtree(tpl_dir, ignore_errors=True)
    marker.write_text(json.dumps(shape))
    return n_symbols * n_days


def start_emulator(mirror: Path, latency: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "crypto_lakehouse_emulator", "--mirror", str(mirror),
         "--latency", str(latency)],
        stdout=subprocess.PIPE, text=True, cwd=REPO,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "emulator")])},
    )  # fmt: skip
    base_url = proc.stdout.readline().strip()
    if not base_url.startswith("http://127.0.0.1:"):
        proc.kill()
        raise SystemExit(f"emulator did not start: {base_url!r}")
    return proc, base_url


def _sync_symbol(args: tuple) -> dict:
    symbol, details_dir, data_dir, base_url, concurrency, fsync = args
    io.configure(fsync=fsync)
    return run_sync(
        trade_type="spot", dataset="klines", interval="1m", symbol=symbol,
        details_path=Path(details_dir) / f"{symbol}.json", data_dir=data_dir,
        archive_url=base_url, start_date=None, end_date=None, use_monthly_klines=False,
        concurrency=concurrency, max_retries=5, timeout_s=30,
        report_path=Path(data_dir) / "reports" / f"{symbol}.json",
        stats_path=Path(data_dir) / "stats" / f"{symbol}.json",
    )  # fmt: skip


def cpu_seconds() -> float:
    """User + system CPU of this process and its reaped children (pool workers, aria2c)."""
    own, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def time_ours(symbols, details_dir, data_dir, base_url, concurrency, n_jobs, fsync=True):
    """``(wall s, CPU s, bytes)``."""
    jobs = [(s, str(details_dir), str(data_dir), base_url, concurrency, fsync) for s in symbols]
    c0 = cpu_seconds()
    t0 = time.perf_counter()
    if n_jobs == 1:
        stats = [_sync_symbol(j) for j in jobs]
    else:
        with ProcessPoolExecutor(max_workers=n_jobs) as pool:
            stats = list(pool.map(_sync_symbol, jobs))
    seconds = time.perf_counter() - t0
    return seconds, cpu_seconds() - c0, sum(s["bytes"] for s in stats)


# Times ``run_sync`` of the checkout first on sys.path, in a fresh process: argv[1] is a JSON
# list of jobs, argv[2] the number of jobs at a time. Prints {"seconds", "cpu", "bytes"}.
_CHILD = """
import json, resource, sys, time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from crypto_lakehouse.archive.sync import run_sync

def one(job):
    symbol, details_dir, data_dir, base_url, concurrency, fsync = job
    try:  # a checkout from before storage.fsync never fsyncs
        from crypto_lakehouse import io
        io.configure(fsync=fsync)
    except (ImportError, AttributeError):
        pass
    return run_sync(
        trade_type="spot", dataset="klines", interval="1m", symbol=symbol,
        details_path=Path(details_dir) / f"{symbol}.json", data_dir=data_dir,
        archive_url=base_url, concurrency=concurrency, max_retries=5, timeout_s=30,
        report_path=Path(data_dir) / "reports" / f"{symbol}.json",
        stats_path=Path(data_dir) / "stats" / f"{symbol}.json",
    )

def cpu():
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

jobs, n_jobs = json.loads(sys.argv[1]), int(sys.argv[2])
c0, t0 = cpu(), time.perf_counter()
if n_jobs == 1:
    stats = [one(j) for j in jobs]
else:
    with ProcessPoolExecutor(max_workers=n_jobs) as pool:
        stats = list(pool.map(one, jobs))
seconds = time.perf_counter() - t0
print(json.dumps({"seconds": seconds, "cpu": cpu() - c0, "bytes": sum(s["bytes"] for s in stats)}))
"""


def time_checkout(
    checkout: Path, symbols, details_dir, data_dir, base_url, concurrency, n_jobs, fsync=True
):
    """``(wall s, CPU s, bytes)`` of ``run_sync`` from ``checkout``, in a child process."""
    jobs = [(s, str(details_dir), str(data_dir), base_url, concurrency, fsync) for s in symbols]
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(jobs), str(n_jobs)],
        env={**os.environ, "PYTHONPATH": str(checkout)}, cwd=checkout,
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["seconds"], result["cpu"], result["bytes"]


def time_aria2(keys, base_url, out_dir: Path, work: Path):
    """``(wall s, CPU s, bytes)``."""
    input_file = work / "aria2-input.txt"
    lines = []
    for key in keys:
        for k in (key, f"{key}.CHECKSUM"):
            lines.append(f"{base_url}/{k}\n  dir={out_dir / Path(k).parent}\n")
    input_file.write_text("".join(lines))
    c0 = cpu_seconds()
    t0 = time.perf_counter()
    result = subprocess.run(["aria2c", "-i", str(input_file), "-j32", "-x4", "-q"])
    seconds = time.perf_counter() - t0
    cpu = cpu_seconds() - c0
    if result.returncode != 0:
        print(f"warning: aria2c exited with {result.returncode}", file=sys.stderr)
    n_bytes = sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file())
    return seconds, cpu, n_bytes


def check_verified(data_dir: Path, n_zips: int) -> None:
    n_verified = len(list((data_dir / "aws_data").rglob("*.zip.verified")))
    assert n_verified == n_zips, f"only {n_verified} of {n_zips} verified"


def _legacy_verify_one(zip_path: str) -> bool:
    """Legacy ``verify`` of one zip (legacy-behaviour §4): SHA-256 against the first token of
    ``<zip>.CHECKSUM``; an empty ``<zip>.verified`` on success."""
    expected = Path(f"{zip_path}.CHECKSUM").read_text().split()[0]
    if hashlib.sha256(Path(zip_path).read_bytes()).hexdigest() != expected:
        return False
    Path(f"{zip_path}.verified").touch()
    return True


def time_legacy_verify(out_dir: Path) -> tuple[float, float]:
    """``(wall s, CPU s)`` of the legacy verify step over aria2's files, in a pool of two
    processes (legacy: ``os.cpu_count() - 2`` workers, which is 0 on this machine)."""
    zips = [str(p) for p in out_dir.rglob("*.zip")]
    c0 = cpu_seconds()
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=2) as pool:
        ok = sum(pool.map(_legacy_verify_one, zips, chunksize=64))
    seconds = time.perf_counter() - t0
    if ok != len(zips):
        print(f"warning: legacy verify passed {ok} of {len(zips)} zips", file=sys.stderr)
    return seconds, cpu_seconds() - c0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--symbols", type=int, default=20)
    p.add_argument("--days", type=int, default=100)
    p.add_argument("--latency", type=float, default=0.02, help="seconds per request")
    p.add_argument(
        "--concurrency", type=int, default=32, help="requests in flight per job (config default)"
    )
    p.add_argument("--mode", choices=("sequential", "cores2"), help="--jobs 1 or 2")
    p.add_argument("--jobs", type=int, help="download jobs at a time (default 1)")
    p.add_argument("--work", type=Path, default=Path("/tmp/bench_aws_download"))
    p.add_argument("--baseline", type=Path, help="a checkout of another version to compare")
    p.add_argument("--runs", type=int, default=2, help="runs of each with --baseline")
    p.add_argument("--no-aria2", action="store_true", help="skip aria2c and legacy verify")
    p.add_argument(
        "--fsync", choices=("on", "off", "both"), default="on", help="storage.fsync of ours"
    )
    args = p.parse_args(argv)
    if args.jobs is None:
        args.jobs = 2 if args.mode == "cores2" else 1
    logging.basicConfig(level=logging.WARNING)
    if not args.no_aria2 and shutil.which("aria2c") is None:
        raise SystemExit("aria2c not found (Debian: apt-get install -y aria2)")

    work = args.work
    mirror = work / "mirror"
    n_zips = build_mirror(mirror, args.symbols, args.days)
    n_files = 2 * n_zips  # zip + CHECKSUM
    symbols = symbol_names(args.symbols)
    emu, base_url = start_emulator(mirror, args.latency)
    try:
        listing_dir = work / "listing"
        shutil.rmtree(listing_dir, ignore_errors=True)
        run_listing(
            trade_type="spot", dataset="klines", interval="1m", symbols=symbols,
            listing_url=base_url, out_index=listing_dir / "klines-1m.json",
            details_dir=listing_dir / "klines-1m", concurrency=16,
        )  # fmt: skip
        keys = []
        for sym in symbols:
            details = json.loads((listing_dir / "klines-1m" / f"{sym}.json").read_text())
            keys += [e["key"] for e in details if e["key"].endswith(".zip")]
        assert len(keys) == n_zips, (len(keys), n_zips)

        data_dir = work / "ours"
        runs = []  # (name, wall s, CPU s, bytes)
        fsync_modes = {"on": [True], "off": [False], "both": [True, False]}[args.fsync]
        if args.baseline is None:
            for fsync in fsync_modes:
                shutil.rmtree(data_dir, ignore_errors=True)
                runs.append((f"run_sync (download + SHA-256), fsync {'on' if fsync else 'off'}",
                             *time_ours(symbols, listing_dir / "klines-1m", data_dir, base_url,
                                        args.concurrency, args.jobs, fsync)))  # fmt: skip
                check_verified(data_dir, n_zips)
        else:
            # Interleaved, so that a change of the machine's load hits both alike.
            order = [("ours", REPO), ("baseline", args.baseline.resolve())]
            for i in range(args.runs):
                for name, checkout in order if i % 2 == 0 else order[::-1]:
                    shutil.rmtree(data_dir, ignore_errors=True)
                    runs.append((f"{name} run {i + 1}", *time_checkout(
                        checkout, symbols, listing_dir / "klines-1m", data_dir, base_url,
                        args.concurrency, args.jobs, fsync_modes[0])))  # fmt: skip
                    check_verified(data_dir, n_zips)

        if not args.no_aria2:
            aria_dir = work / "aria2"
            shutil.rmtree(aria_dir, ignore_errors=True)
            aria_s, aria_cpu, aria_bytes = time_aria2(keys, base_url, aria_dir, work)
            n_aria = sum(1 for p in aria_dir.rglob("*") if p.is_file() and p.suffix != ".aria2")
            verify_s, verify_cpu = time_legacy_verify(aria_dir)
    finally:
        emu.terminate()
        emu.wait(timeout=10)

    def line(name, seconds, cpu, n, n_bytes):
        print(
            f"{name:<34} {n:>6} files {n_bytes / 1e6:>8.1f} MB {seconds:>7.2f} s "
            f"{n / seconds:>8.1f} files/s {n_bytes / 1e6 / seconds:>7.2f} MB/s "
            f"CPU {cpu * 1000 / n:.2f} ms/file"
        )

    print(
        f"mirror: {args.symbols} symbols x {args.days} days = {n_zips} zips + {n_zips} "
        f"CHECKSUMs; latency {args.latency * 1000:.0f} ms/request; ours: {args.jobs} job(s) at a time, "
        f"{args.concurrency} requests in flight per job; load average "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    for name, seconds, cpu, n_bytes in runs:
        line(name, seconds, cpu, n_files, n_bytes)
    if args.baseline is not None:
        for i in range(args.runs):
            (_, ours_s, ours_cpu, _), (_, base_s, base_cpu, _) = sorted(
                runs[2 * i : 2 * i + 2], key=lambda r: not r[0].startswith("ours")
            )
            print(f"run {i + 1}: ratio files/s ours / baseline {base_s / ours_s:.2f}, "
                  f"CPU per file ours / baseline {ours_cpu / base_cpu:.2f}")  # fmt: skip
    if args.baseline is None and len(runs) == 2:
        print(f"ratio files/s fsync on / off: {runs[1][1] / runs[0][1]:.2f}")
    if args.no_aria2:
        return 0
    ours_s = runs[0][1]
    line("aria2c -j32 -x4 (no verification)", aria_s, aria_cpu, n_aria, aria_bytes)
    line(
        "  + legacy verify (2 processes)",
        aria_s + verify_s,
        aria_cpu + verify_cpu,
        n_aria,
        aria_bytes,
    )
    print(f"ratio files/s {runs[0][0]} / aria2: {(n_files / ours_s) / (n_aria / aria_s):.2f}")
    legacy_rate = n_aria / (aria_s + verify_s)
    print(f"ratio files/s {runs[0][0]} / (aria2 + legacy verify): "
          f"{(n_files / ours_s) / legacy_rate:.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
