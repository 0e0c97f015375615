"""Planning at scale: dry run of `all` over the full universe (issue: complete pipeline).

Builds the listing of a synthetic universe of about 2,700 symbols over the three trade types
(years of daily files each) in the emulator, runs the real `list_archive` checkpoints
against it, then times `snakemake -n all` and measures its peak memory. Prints job counts per
rule and the figures. Baseline in the same run: a dry run of the tiny default job.

    python benchmarks/bench_plan.py [--spot 1500 --um 900 --cm 300 --days 1500] [--shards N]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from crypto_lakehouse.emulator import Emulator, SyntheticUniverse  # noqa: E402
from tests.workflow.workflow_helpers import job_counts  # noqa: E402


def snakemake(workdir: Path, config: dict, *args: str) -> tuple[float, float, str]:
    """Run snakemake; returns (wall seconds, peak RSS in MB via /usr/bin/time, stdout)."""
    cfg = workdir / "config.json"
    cfg.write_text(json.dumps(config))
    timing = workdir / "time.txt"
    cmd = [
        "/usr/bin/time",
        "-f",
        "%M",
        "-o",
        str(timing),
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(cfg),
        *args,
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(proc.stdout[-3000:] + proc.stderr[-5000:])
    peak_mb = int(timing.read_text().split()[-1]) / 1024
    return wall, peak_mb, proc.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--spot", type=int, default=1500)
    ap.add_argument("--um", type=int, default=900)
    ap.add_argument("--cm", type=int, default=300)
    ap.add_argument("--days", type=int, default=1500)
    ap.add_argument("--shards", type=int, help="config shards (default: the config default)")
    ap.add_argument("--keep", type=Path, help="work in this folder and keep it (else a temp dir)")
    args = ap.parse_args()
    universe = SyntheticUniverse(
        n_spot=args.spot, n_um=args.um, n_cm=args.cm, days=args.days, start="2021-01-01"
    )
    with tempfile.TemporaryDirectory() as tmp, Emulator(listing=universe) as emu:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        base = {k: emu.base_url for k in ("archive", "listing", "spot_api", "um_api", "cm_api")}
        config = {
            "data_dir": str(work / "data"),
            "endpoints": base,
            "symbols": {"spot": "all", "um_futures": "all", "cm_futures": "all"},
            "lookback_days": None,
        }
        t0 = time.perf_counter()
        if (work / "config.json").exists():  # --keep of an earlier run: reuse its listing
            config = json.loads((work / "config.json").read_text())
        else:
            snakemake(work, config, "--cores", "2", "--until", "list_archive", "-q")
        if args.shards is not None:
            config["shards"] = args.shards
        listing_s = time.perf_counter() - t0
        n_symbols = sum(
            len(json.loads(p.read_text())["symbols"])
            for p in (work / "data/lakehouse/listing").glob("*/klines-*.json")
        )
        # The first dry run right after writing the listings competes with the kernel
        # writing them back to disk; both figures are printed.
        # "-q" last: with a value after it ("-q all") Snakemake takes that as the quiet
        # level, which here made planning twice as slow.
        wall_first, _, _ = snakemake(work, config, "-n", "all", "-q")
        wall, peak, _ = snakemake(work, config, "-n", "all", "-q")
        wall_verbose, peak_verbose, out = snakemake(work, config, "-n", "all")
        counts = job_counts(out)  # the quiet run prints no job table

        small = Path(tmp) / "small"
        small.mkdir()
        small_cfg = {"data_dir": str(small / "data"), "endpoints": base}
        base_wall, _, _ = snakemake(small, small_cfg, "-n", "all")

    print(
        f"universe: {n_symbols} kline symbols, {args.days} days each; listing took "
        f"{listing_s:.1f} s (real run of list_archive against the emulator; 0 = reused)"
    )
    print("jobs per rule:", json.dumps(counts))
    print(
        f"dry run of all (snakemake -n all -q): {wall:.1f} s wall, peak RSS {peak:.0f} MB "
        f"(goal < 30 s and < 1 GB); {counts.get('total', 0)} jobs; "
        f"first dry run right after the listing: {wall_first:.1f} s"
    )
    print(
        f"dry run printing every job (snakemake -n all): {wall_verbose:.1f} s wall, "
        f"peak RSS {peak_verbose:.0f} MB"
    )
    print(
        f"baseline (default job, before listing): {base_wall:.1f} s; ratio {wall / base_wall:.1f}x"
    )


if __name__ == "__main__":
    main()
