"""The ``api_download`` target alone, replayed on copies of the data dir as it was before it.

Run by hand (not in CI), from the worktree with ``PYTHONPATH=$PWD:$PWD/emulator``::

    python benchmarks/bench_api_download_stage.py [--symbols 30 --days 60] [--runs 3] [--work DIR]

Uses the mirror of ``bench_vs_legacy.py`` (same universe, cached in ``--work``) and the same
emulator set-up (REST clock one hour into the second day after the archive's last day). Once
per ``--work`` and mirror it runs ``aws_download`` and ``aws_parse`` into a snapshot; each
run then copies the snapshot and times ``snakemake api_download`` on the copy (wall, and CPU
of Snakemake and its jobs: children's user + system), with the load average. Runs of two
versions of the code can be alternated by calling it from each worktree with the same
``--work`` (the snapshot only holds the archive stages' outputs).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_vs_legacy as bvl  # noqa: E402


def snakemake(workdir: Path, config: dict, target: str, log: Path):
    """(wall s, CPU s) of one ``snakemake TARGET`` on ``workdir``."""
    cfg = workdir / f"config-{target}.json"
    cfg.write_text(bvl.json.dumps(config))
    cmd, env = bvl.ours_command(workdir, cfg, target)
    t0, c0 = time.perf_counter(), bvl.child_cpu()
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, cwd=workdir, env=env, stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise SystemExit(f"snakemake {target} failed ({proc.returncode}); log: {log}")
    return time.perf_counter() - t0, bvl.child_cpu() - c0


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--symbols", type=int, default=30)
    ap.add_argument("--days", type=int, default=60)
    ap.add_argument("--first-day", default="2024-01-01")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench_api_download"))
    args = ap.parse_args()

    symbols = bvl.universe(args.symbols)
    first = date.fromisoformat(args.first_day)
    last = first + timedelta(days=args.days - 1)
    end = last + timedelta(days=1)  # the day REST completes
    d = last + timedelta(days=2)
    now_ms = int(datetime(d.year, d.month, d.day, 1, tzinfo=timezone.utc).timestamp() * 1000)
    args.work.mkdir(parents=True, exist_ok=True)
    base, _ = bvl.build_mirrors(args.work, symbols, first, args.days)
    snap = args.work / f"before-api_download-{args.symbols}x{args.days}"
    with bvl.EmulatorProcess(base, symbols, first, now_ms) as url:
        if not (snap / "done").exists():
            shutil.rmtree(snap, ignore_errors=True)
            snap.mkdir()
            for target in ("aws_download", "aws_parse"):
                cfg = bvl.our_config(url, snap / "data", end)
                snakemake(snap, cfg, target, snap / f"{target}.log")
            (snap / "done").touch()
        for run in range(1, args.runs + 1):
            copy = args.work / f"api_download-run{run}"
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(snap, copy, ignore=shutil.ignore_patterns("done", "*.log"))
            load = os.getloadavg()[0]
            wall, cpu = snakemake(
                copy,
                bvl.our_config(url, copy / "data", end),
                "api_download",
                copy / "api_download.log",
            )
            print(
                f"api_download {args.symbols}x{args.days} ({REPO.name}) run {run}: "
                f"{wall:.2f} s wall, {cpu:.2f} s CPU, load {load:.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
