"""Benchmark: the whole pipeline on a bucket with the CPU jobs run locally against the same
run with every CPU job launched on a SLURM node through srun (``cluster.launcher: srun``,
crypto_lakehouse.remote), in the same run.

Run by hand (not in CI) on a machine with a SLURM cluster (``bash .ci/start-slurm`` starts
the one-node test cluster) and the dev extra's SeaweedFS::

    python benchmarks/bench_srun_launcher.py [--symbols 6] [--runs 2] [--work DIR]

What it does: builds the chaos suite's mirror (spot 1m, nine days, REST fill) for
``--symbols`` symbols, serves it with the emulator, starts SeaweedFS on loopback, then per
run and per launcher (alternating, ``local`` first) runs ``snakemake all --cores 2`` from a
fresh working directory on a fresh bucket prefix (``profiles/slurm-srun`` for srun, with
``--cores 2`` so that both runs have the same concurrency). Prints each run's wall time, the
CPU jobs' wall time from their benchmark tables, and the ratio srun / local per run.

Reading the figures: on the one-node test cluster the node is this machine, so the
difference is the launcher's own cost (start, packing, srun's scheduling round trip,
unpacking), not a real cluster's queue wait or network.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "emulator"))

from crypto_lakehouse import layout  # noqa: E402
from tests.chaos import chaos_helpers as h  # noqa: E402
from tests.s3_helpers import SeaweedS3  # noqa: E402

CPU_STAGES = ("aws_parse", "gen_kline", "resample", "features")


def universe(n: int) -> list[str]:
    base = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT", "ADAUSDT", "DOGEUSDT"]
    return (base + [f"SYM{i}USDT" for i in range(n)])[:n]


def cpu_job_seconds(run_dir: Path) -> float:
    """Sum of the wall seconds of the CPU stages' shard jobs (their benchmark tables)."""
    total = 0.0
    for stage in CPU_STAGES:
        for table in (run_dir / "benchmarks" / stage).rglob("*.tsv"):
            total += float(table.read_text().splitlines()[1].split("\t")[0])
    return total


def one_run(work: Path, base_url: str, server, prefix: str, symbols, launcher: str) -> dict:
    work.mkdir(parents=True)
    data_dir = f"s3://bench/{prefix}"
    config = {
        **h.config_for(base_url, data_dir, symbols=symbols),
        "storage": server.storage_settings,
        "cluster": {"launcher": launcher},
    }
    config_path = work / "config.json"
    config_path.write_text(json.dumps(config))
    extra = ["--profile", str(REPO / "profiles" / "slurm-srun")] if launcher == "srun" else []
    # --cores last: the same concurrency as the local run, whatever the profile says.
    cmd = [*h.snakemake_cmd(work, config_path, *extra), "--cores", "2"]
    env = {**h.env(), **server.env}
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=work, env=env, timeout=1800)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{launcher} run failed:\n{(proc.stdout + proc.stderr)[-4000:]}")
    run_dir = work / layout.default_run_dir(data_dir)
    return {"wall_s": round(wall, 2), "cpu_jobs_wall_s": round(cpu_job_seconds(run_dir), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--symbols", type=int, default=6)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: /tmp)")
    args = ap.parse_args()
    symbols = universe(args.symbols)
    with tempfile.TemporaryDirectory(prefix="bench_srun_", dir=args.work) as tmp:
        tmp = Path(tmp)
        mirror = h.build_scenario(tmp / "mirror", symbols=symbols)
        emu = h.start_emulator(mirror, symbols=symbols)
        server = SeaweedS3(tmp / "seaweed").start()
        try:
            server.create_bucket("bench")
            load_before = os.getloadavg()
            runs = []
            for i in range(args.runs):
                pair = {}
                for launcher in ("local", "srun"):
                    pair[launcher] = one_run(
                        tmp / f"{launcher}{i}", emu.base_url, server, f"{launcher}{i}",
                        symbols, launcher,
                    )  # fmt: skip
                pair["srun_vs_local_wall"] = round(
                    pair["srun"]["wall_s"] / pair["local"]["wall_s"], 3
                )
                runs.append(pair)
            load_after = os.getloadavg()
        finally:
            server.stop()
            emu.stop()
    print(json.dumps({
        "symbols": len(symbols), "days": len(h.DAYS), "runs": runs,
        "loadavg_1m_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        "cpus": os.cpu_count(),
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
