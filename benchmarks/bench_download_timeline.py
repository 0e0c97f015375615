"""Timeline of the ``aws_download`` target against the emulator at a given latency: where the
end-to-end time goes (Snakemake's start, the listing checkpoint and its request rounds, the
download jobs, the summary, the exit), and ``aria2c -j32 -x4`` on the same URLs.

Run by hand (not in CI); ``aria2c`` must be on PATH for ``--aria2``::

    python benchmarks/bench_download_timeline.py --mirror DIR [--latency 0.02] [--reps 3] \
        [--checkout /tmp/base --checkout .] [--aria2] [--work DIR]

``--mirror``: an archive mirror, e.g. the one ``bench_vs_legacy.py`` caches in its ``--work``
(``mirror-13x45-2024-01-01``). The emulator runs in its own process (``python -m
crypto_lakehouse_emulator --verbose``); each request it answers is timed when its log line
arrives here. Each repetition runs every ``--checkout`` once, in the order given (alternated
A/B), on a fresh data dir below ``--work`` (the filesystem of ``--work`` matters: aria2c
fsyncs its control file three times per file, and our jobs fsync each file, so a busy disk
slows both; ``/dev/shm`` takes the disk out).

Per run it prints: the wall, the CPU of Snakemake and its jobs (children's rusage), the time
to the first job, each job's start and end as Snakemake reports them (its output read line by
line, timed on arrival), the listing's requests grouped in rounds (a request whose answer
came more than ``0.75 * latency`` after the previous one's starts a new group, below), the
download requests and any key fetched twice. Then medians per checkout.

Listing answers are grouped: an answer more than ``0.75 * latency`` after the previous one
starts a new group. A request sent after an answer (a symbol's folder after the list of
symbols) is answered at least ``latency`` later, so each group boundary is at least one
request in sequence; the first group is the run's reachability probe (Snakemake's main
process, before the first job).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

REQUEST = re.compile(r'"(?P<method>[A-Z]+) (?P<target>\S+)" (?P<status>\d+)')
JOB_START = re.compile(r"^local(?:checkpoint|rule) (?P<rule>\w+):")
JOB_ID = re.compile(r"^\s+jobid: (?P<id>\d+)")
JOB_END = re.compile(r"^Finished jobid: (?P<id>\d+) \(Rule: (?P<rule>\w+)\)")


def child_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


class Emulator:
    """``python -m crypto_lakehouse_emulator --verbose`` in its own process; ``requests``:
    (seconds on ``time.perf_counter``, method, target) of every answer, as logged."""

    def __init__(self, mirror: Path, latency: float):
        env = dict(os.environ, PYTHONPATH=f"{REPO / 'emulator'}{os.pathsep}{REPO}")
        cmd = [sys.executable, "-m", "crypto_lakehouse_emulator", "--mirror", str(mirror)]
        cmd += ["--latency", str(latency), "--verbose"]
        self.proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http"):
            raise SystemExit(f"emulator did not start: {self.proc.stderr.read()[-2000:]}")
        self.requests: list[tuple[float, str, str]] = []
        self._lines: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            m = REQUEST.search(line)
            if m:
                self.requests.append((time.perf_counter(), m["method"], m["target"]))

    def since(self, t0: float) -> list[tuple[float, str, str]]:
        return [(t - t0, m, k) for t, m, k in self.requests if t >= t0]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def rounds(times: list[float], gap: float) -> list[int]:
    """Sizes of the groups of answers whose consecutive times differ by at most ``gap``."""
    out: list[int] = []
    last = None
    for t in sorted(times):
        if last is None or t - last > gap:
            out.append(0)
        out[-1] += 1
        last = t
    return out


def run_ours(checkout: Path, emu: Emulator, mirror_end: date, work: Path, latency: float) -> dict:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    cfg = {
        "data_dir": str(work / "data"),
        "endpoints": {k: emu.url for k in ("archive", "listing", "spot_api", "um_api", "cm_api")},
        "symbols": {t: "all" for t in ("spot", "um_futures", "cm_futures")},
        "start_date": None,
        "end_date": mirror_end.isoformat(),
        "lookback_days": None,
        "features": {"enabled": False},
    }
    (work / "config.json").write_text(json.dumps(cfg))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(checkout / "Snakefile")]
    cmd += ["--directory", str(work), "aws_download", "--cores", str(os.cpu_count())]
    cmd += ["--configfile", str(work / "config.json")]
    env = dict(os.environ, PYTHONPATH=f"{checkout}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    lines: list[tuple[float, str]] = []
    c0 = child_cpu()
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    for line in proc.stdout:
        lines.append((time.perf_counter() - t0, line.rstrip("\n")))
    proc.wait()
    wall = time.perf_counter() - t0
    cpu = child_cpu() - c0
    (work / "snakemake.out").write_text("".join(f"{t:8.3f} {x}\n" for t, x in lines))
    if proc.returncode != 0:
        raise SystemExit(f"{checkout}: snakemake failed ({proc.returncode}); {work}/snakemake.out")
    time.sleep(0.2)  # the emulator's last log lines
    jobs: dict[str, dict] = {}
    pending = None
    for t, x in lines:
        if m := JOB_START.match(x):
            pending = (t, m["rule"])
        elif (m := JOB_ID.match(x)) and pending is not None:
            jobs[m["id"]] = {"rule": pending[1], "start": pending[0]}
            pending = None
        elif m := JOB_END.match(x):
            jobs.setdefault(m["id"], {"rule": m["rule"], "start": t})["end"] = t
    reqs = emu.since(t0)
    listing = [t for t, _, k in reqs if k.startswith("/?")]
    downloads = [k for _, _, k in reqs if not k.startswith("/?")]
    starts = [j["start"] for j in jobs.values()]
    return {
        "wall": wall,
        "cpu": cpu,
        "first_job": min(starts) if starts else float("nan"),
        "jobs": sorted(jobs.values(), key=lambda j: j["start"]),
        "listing_rounds": rounds(listing, 0.75 * latency),
        "downloads": len(downloads),
        "fetched_twice": len(downloads) - len(set(downloads)),
        "methods": sorted({m for _, m, _ in reqs}),
    }


def run_aria2(emu: Emulator, mirror: Path, work: Path) -> tuple[float, float]:
    keys = sorted(
        p.relative_to(mirror).as_posix()
        for p in mirror.rglob("*")
        if p.is_file() and p.name.endswith((".zip", ".CHECKSUM"))
    )
    out = work / "aria2-out"
    shutil.rmtree(out, ignore_errors=True)
    listing = work / "aria2.txt"
    listing.parent.mkdir(parents=True, exist_ok=True)
    listing.write_text("".join(f"{emu.url}/{k}\n  dir={out / Path(k).parent}\n" for k in keys))
    c0, t0 = child_cpu(), time.perf_counter()
    subprocess.run(["aria2c", "-i", str(listing), "-j32", "-x4", "-q"], check=True)
    return time.perf_counter() - t0, child_cpu() - c0


def disk_pressure() -> str:
    """The kernel's I/O pressure: a busy disk slows aria2c's fsyncs (see the docstring)."""
    try:
        with open("/proc/pressure/io") as fh:
            return f"disk pressure {fh.readline().split()[1].split('=')[1]} % (some, avg10)"
    except (OSError, IndexError):
        return "disk pressure unknown"


def mirror_end_date(mirror: Path) -> date:
    days = [
        re.search(r"(\d{4}-\d{2}-\d{2})\.zip$", p.name)
        for p in mirror.rglob("*.zip")
        if "/daily/" in p.as_posix()
    ]
    return max(date.fromisoformat(m[1]) for m in days if m)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--mirror", type=Path, required=True, help="archive mirror directory")
    ap.add_argument("--latency", type=float, default=0.02, help="seconds per request (0.02)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument(
        "--checkout",
        type=Path,
        action="append",
        help="checkout whose Snakefile and code run (repeat for A/B; default: this one)",
    )
    ap.add_argument("--aria2", action="store_true", help="also aria2c -j32 -x4, same URLs")
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench_download_timeline"))
    ap.add_argument("--verbose", action="store_true", help="every job's start and end")
    args = ap.parse_args()
    checkouts = [c.resolve() for c in (args.checkout or [REPO])]
    end = mirror_end_date(args.mirror)
    print(f"load average at start: {os.getloadavg()}; cores: {os.cpu_count()}; {disk_pressure()}")
    emu = Emulator(args.mirror, args.latency)
    results: dict[str, list[dict]] = {str(c): [] for c in checkouts}
    aria: list[tuple[float, float]] = []
    try:
        for rep in range(args.reps):
            for c in checkouts:
                r = run_ours(c, emu, end, args.work / "ours", args.latency)
                results[str(c)].append(r)
                by_rule: dict[str, list[dict]] = {}
                for j in r["jobs"]:
                    by_rule.setdefault(j["rule"], []).append(j)
                phases = ", ".join(
                    f"{rule} x{len(js)} {min(j['start'] for j in js):.2f}-"
                    f"{max(j.get('end', j['start']) for j in js):.2f}"
                    for rule, js in by_rule.items()
                )
                print(
                    f"rep {rep + 1} {c}: wall {r['wall']:.2f} s, CPU {r['cpu']:.2f} s, first job "
                    f"at {r['first_job']:.2f} s; {phases}; listing requests "
                    f"{sum(r['listing_rounds'])} in answer groups {r['listing_rounds']}; downloads "
                    f"{r['downloads']} ({r['fetched_twice']} fetched twice; "
                    f"{'/'.join(r['methods'])})"
                )
                if args.verbose:
                    for j in r["jobs"]:
                        print(f"    {j['rule']:22s} {j['start']:6.2f} {j.get('end', 0):6.2f}")
            if args.aria2:
                aria.append(run_aria2(emu, args.mirror, args.work))
                print(
                    f"rep {rep + 1} aria2c -j32 -x4: {aria[-1][0]:.2f} s ({aria[-1][1]:.2f} CPU s)"
                )
    finally:
        emu.stop()
    for c, rs in results.items():
        wall = statistics.median(r["wall"] for r in rs)
        line = f"median {c}: wall {wall:.2f} s, CPU {statistics.median(r['cpu'] for r in rs):.2f} s"
        if aria:
            line += f"; ours / aria2 (medians) {wall / statistics.median(a[0] for a in aria):.2f}"
        print(line)
    if aria:
        print(f"median aria2c: {statistics.median(a[0] for a in aria):.2f} s")
    print(f"load average at end: {os.getloadavg()}; {disk_pressure()}")


if __name__ == "__main__":
    main()
