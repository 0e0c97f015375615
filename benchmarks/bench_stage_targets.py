"""One legacy target at a time, several checkouts interleaved: wall and CPU of ``snakemake
TARGET`` on a data dir whose upstream targets are done (issue 11).

Run by hand (not in CI)::

    python benchmarks/bench_stage_targets.py --checkout A_DIR --checkout B_DIR \
        [--targets api_download gen_kline] [--reps 6] [--symbols 13 --days 45] [--work DIR]

Builds (and caches in ``--work``) ``bench_vs_legacy.py``'s mirror and serves it with the
emulator (the same REST clock). For each checkout, runs ``aws_download`` and ``aws_parse``,
then each target in the legacy order, on one data dir, and keeps a copy of the dir before each
target (a snapshot per checkout: the rules' script paths are params, so one checkout's
records make another's jobs rerun). Then, ``--reps`` times, for each target and each
checkout in turn (the order reversed every other repetition: A, B, B, A, ...), restores the
snapshot at the same path and times the target: wall seconds, user+sys CPU seconds of
Snakemake and its jobs (``RUSAGE_CHILDREN``), and a digest of every file the target left
in the data dir outside ``lakehouse/`` (the same digest for every checkout: the same bytes).
Prints each run and the medians. The machine may be shared: CPU seconds are less noisy than
walls; the load average is printed at the start and the end.

``--daily``: the daily update instead of single targets. For each checkout the five targets
are built on the mirror (the snapshot), then each repetition restores it and times the five
targets again on the mirror grown by one day with the next ``end_date`` (as
``bench_vs_legacy.py``'s daily update; the emulator on the same port, its REST clock a day
later). Each run also prints its jobs by stage from the Snakemake benchmark files (jobs,
summed wall and CPU seconds). ``--timeline``: also each job of each run by start (its
process's start, when its log opened, its end, its CPU seconds and fsyncs), timed from
inside the job by ``benchmarks/job_probe/sitecustomize.py``; Snakemake's benchmark files
miss a short job's CPU (sampled every 0.5 s).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_vs_legacy as legacy  # noqa: E402  (the mirror, the emulator process, the config)

ORDER = ("aws_download", "aws_parse", "api_download", "gen_kline", "resample")
PROBE = Path(__file__).resolve().parent / "job_probe"  # its sitecustomize (--timeline)


def run_target(
    checkout: Path, workdir: Path, target: str, log: Path, probe: Path | None = None
) -> tuple[float, float]:
    """``probe``: a folder for the job probe's records (``--timeline``)."""
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(checkout / "Snakefile"),
           "--directory", str(workdir), *target.split(), "--cores", str(os.cpu_count()),
           "--configfile", str(workdir / "config.json")]  # fmt: skip
    # The checkout first; the caller's PYTHONPATH after it (e.g. a sitecustomize of its own).
    path = [str(checkout), str(checkout / "emulator"), os.environ.get("PYTHONPATH", "")]
    env = dict(os.environ)
    if probe is not None:
        path.insert(2, str(PROBE))
        env["CL_JOB_PROBE_DIR"] = str(probe)
    env["PYTHONPATH"] = os.pathsep.join(p for p in path if p)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, cwd=workdir, env=env, stdout=fh, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise SystemExit(f"{checkout}: {target} failed ({proc.returncode}); log: {log}")
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return wall, cpu


def data_digest(data_dir: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(data_dir.rglob("*")):
        rel = p.relative_to(data_dir)
        if p.is_file() and rel.parts[0] != "lakehouse":
            h.update(str(rel).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:12]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--checkout", type=Path, action="append", required=True)
    ap.add_argument("--targets", nargs="+", default=["api_download", "gen_kline"])
    ap.add_argument("--reps", type=int, default=6)
    ap.add_argument("--symbols", type=int, default=13)
    ap.add_argument("--days", type=int, default=45)
    ap.add_argument("--first-day", default="2024-01-01")
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench_stage_targets"))
    ap.add_argument("--daily", action="store_true", help="time the daily update (see above)")
    ap.add_argument(
        "--timeline",
        action="store_true",
        help="with --daily: each run's jobs by start (benchmarks/job_probe; see above)",
    )
    args = ap.parse_args()
    if args.daily:
        daily(args)
        return
    checkouts = [c.resolve() for c in args.checkout]
    if len({c.name for c in checkouts}) != len(checkouts):
        ap.error("the checkouts' folder names must differ (they label the runs)")
    targets = [t for t in ORDER if t in args.targets]
    symbols = legacy.universe(args.symbols)
    first = date.fromisoformat(args.first_day)
    last = first + timedelta(days=args.days - 1)
    args.work.mkdir(parents=True, exist_ok=True)
    mirror, _ = legacy.build_mirrors(args.work, symbols, first, args.days)
    print(f"load average at start: {os.getloadavg()}; cores: {os.cpu_count()}")
    print(legacy.environment_line())
    clock = last + timedelta(days=2)  # 01:00 UTC of that day, as bench_vs_legacy.py
    now_ms = int(datetime(clock.year, clock.month, clock.day, 1, tzinfo=timezone.utc).timestamp())
    now_ms *= 1000
    results: dict[tuple[str, str], list[tuple[float, float, str]]] = {}
    with legacy.EmulatorProcess(mirror, symbols, first, now_ms) as url:
        for c in checkouts:  # the snapshots
            work = args.work / f"run-{c.name}"
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir()
            config = legacy.our_config(url, work / "data", last + timedelta(days=1))
            (work / "config.json").write_text(json.dumps(config))
            for target in ORDER[: ORDER.index(targets[-1])]:
                if target in targets:
                    shutil.rmtree(args.work / f"snap-{c.name}-{target}", ignore_errors=True)
                    shutil.copytree(work, args.work / f"snap-{c.name}-{target}", symlinks=True)
                run_target(c, work, target, args.work / f"log-{c.name}-{target}-snapshot.txt")
            shutil.rmtree(args.work / f"snap-{c.name}-{targets[-1]}", ignore_errors=True)
            shutil.copytree(work, args.work / f"snap-{c.name}-{targets[-1]}", symlinks=True)
        for rep in range(args.reps):
            for target in targets:
                for c in checkouts if rep % 2 == 0 else checkouts[::-1]:
                    work = args.work / f"run-{c.name}"
                    shutil.rmtree(work)
                    shutil.copytree(args.work / f"snap-{c.name}-{target}", work, symlinks=True)
                    log = args.work / f"log-{c.name}-{target}-{rep}.txt"
                    wall, cpu = run_target(c, work, target, log)
                    digest = data_digest(work / "data")
                    results.setdefault((target, c.name), []).append((wall, cpu, digest))
                    print(f"{target:13} {c.name:20} wall {wall:5.2f} s  CPU {cpu:5.2f} s  {digest}")
    print(f"load average at end: {os.getloadavg()}")
    for (target, name), runs in results.items():
        walls, cpus = [r[0] for r in runs], [r[1] for r in runs]
        print(
            f"{target:13} {name:20} median wall {statistics.median(walls):.2f} s "
            f"({min(walls):.2f}-{max(walls):.2f}), CPU {statistics.median(cpus):.2f} s "
            f"({min(cpus):.2f}-{max(cpus):.2f}), outputs {sorted({r[2] for r in runs})}"
        )


def _log_opened(log: str | None) -> float | None:
    """Epoch seconds of a job log's first line (``2026-12-07 18:25:57,649 ...``, local
    time as the logs write it), None without one."""
    try:
        with open(log) as f:
            first = f.readline()
        return datetime.strptime(first[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    except (OSError, TypeError, ValueError):
        return None


def print_timeline(probe: Path, started: float, ended: float) -> None:
    """The jobs of one run, by start: offsets from the ``snakemake`` command's start, when
    the job's log opened (its imports done), its end, CPU seconds, fsyncs."""
    records = [json.loads(line) for line in (probe / "jobs.jsonl").read_text().splitlines()]
    # A job the job server ran: its job process's CPU (a record of its own) goes to the job.
    handed = {}
    for r in records:
        if r.get("handed_over"):
            handed[r["log"]] = handed.get(r["log"], 0.0) + r["cpu"]
    jobs = [r for r in records if not r.get("handed_over")]
    for j in jobs:
        j["cpu"] += handed.get(j["log"], 0.0)
    jobs.sort(key=lambda j: j["start"])
    print("      job                                         start   log  end   CPU  fsyncs")
    for j in jobs:
        name = j["log"] or j["script"]
        if "/logs/" in name:
            name = name.split("/logs/", 1)[1].removesuffix(".log")
        opened = _log_opened(j["log"])
        log_at = f"{opened - started:5.2f}" if opened else "    -"
        print(
            f"      {name[:43]:43} {j['start'] - started:5.2f} {log_at} {j['end'] - started:5.2f}"
            f" {j['cpu']:5.2f} {j['fsyncs']:4d} ({j['fsync_s']:.3f} s)"
        )
    if jobs:
        print(
            f"      first job at {jobs[0]['start'] - started:.2f} s; "
            f"after the last job's end {ended - max(j['end'] for j in jobs):.2f} s; "
            f"job CPU {sum(j['cpu'] for j in jobs):.2f} s in {len(jobs)} processes"
        )


def now_ms_for(last_archive_day: date) -> int:
    """The REST clock: 01:00 UTC of the second day after the archive's last day."""
    clock = last_archive_day + timedelta(days=2)
    return (
        int(datetime(clock.year, clock.month, clock.day, 1, tzinfo=timezone.utc).timestamp()) * 1000
    )


def daily(args) -> None:
    checkouts = [c.resolve() for c in args.checkout]
    if len({c.name for c in checkouts}) != len(checkouts):
        raise SystemExit("the checkouts' folder names must differ (they label the runs)")
    whole = " ".join(ORDER)
    symbols = legacy.universe(args.symbols)
    first = date.fromisoformat(args.first_day)
    last = first + timedelta(days=args.days - 1)
    args.work.mkdir(parents=True, exist_ok=True)
    mirror, grown = legacy.build_mirrors(args.work, symbols, first, args.days)
    print(f"load average at start: {os.getloadavg()}; cores: {os.cpu_count()}")
    print(legacy.environment_line())
    with legacy.EmulatorProcess(mirror, symbols, first, now_ms_for(last)) as url:
        for c in checkouts:  # the full builds
            work = args.work / f"run-{c.name}"
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir()
            config = legacy.our_config(url, work / "data", last + timedelta(days=1))
            (work / "config.json").write_text(json.dumps(config))
            run_target(c, work, whole, args.work / f"log-{c.name}-full.txt")
            config = legacy.our_config(url, work / "data", last + timedelta(days=2))
            (work / "config.json").write_text(json.dumps(config))
            shutil.rmtree(args.work / f"snap-{c.name}-daily", ignore_errors=True)
            shutil.copytree(work, args.work / f"snap-{c.name}-daily", symlinks=True)
        port = legacy.urlsplit(url).port
    results: dict[str, list[tuple[float, float, str]]] = {}
    next_clock = now_ms_for(last + timedelta(days=1))
    with legacy.EmulatorProcess(grown, symbols, first, next_clock, port=port):
        for rep in range(args.reps):
            for c in checkouts if rep % 2 == 0 else checkouts[::-1]:
                work = args.work / f"run-{c.name}"
                shutil.rmtree(work)
                shutil.copytree(args.work / f"snap-{c.name}-daily", work, symlinks=True)
                probe = None
                if args.timeline:
                    probe = args.work / f"probe-{c.name}-{rep}"
                    shutil.rmtree(probe, ignore_errors=True)
                    probe.mkdir()
                since = time.time()
                log = args.work / f"log-{c.name}-daily-{rep}.txt"
                wall, cpu = run_target(c, work, whole, log, probe)
                digest = data_digest(work / "data")
                results.setdefault(c.name, []).append((wall, cpu, digest))
                stages = legacy.stage_seconds(work / "data", since)
                by_stage = ", ".join(
                    f"{k} {n}/{w:.2f}/{u:.2f}" for k, (n, w, u) in sorted(stages.items())
                )
                print(f"daily {c.name:20} wall {wall:5.2f} s  CPU {cpu:5.2f} s  {digest}")
                print(f"      jobs/wall/CPU by stage: {by_stage}")
                if probe is not None:
                    print_timeline(probe, since, since + wall)
    print(f"load average at end: {os.getloadavg()}")
    for name, runs in results.items():
        walls, cpus = [r[0] for r in runs], [r[1] for r in runs]
        print(
            f"daily {name:20} median wall {statistics.median(walls):.2f} s "
            f"({min(walls):.2f}-{max(walls):.2f}), CPU {statistics.median(cpus):.2f} s "
            f"({min(cpus):.2f}-{max(cpus):.2f}), outputs {sorted({r[2] for r in runs})}"
        )


if __name__ == "__main__":
    main()
