"""The whole workflow (`snakemake all`) with a local data dir vs ``data_dir: s3://…`` on
SeaweedFS, same scenario, same run: wall time of a first run and of a second run with
nothing to do (planning, the lease, the unchanged-inputs checks).

The chaos suite's scenario (spot, nine days of 1m archives from the emulator's generator,
REST fill from its synthetic source) with ``--symbols`` symbols. SeaweedFS runs on loopback
and shares the machine's cores with the pipeline, so the S3 figures include the store's own
CPU time. Usage:

    python benchmarks/bench_workflow_s3.py --symbols 6 --repeat 2
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "emulator"))

from tests.chaos import chaos_helpers as h  # noqa: E402
from tests.s3_helpers import SeaweedS3  # noqa: E402

NAMES = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT", "ADAUSDT", "DOGEUSDT",
         "LINKUSDT", "DOTUSDT", "LTCUSDT", "TRXUSDT", "AVAXUSDT"]  # fmt: skip


def timed_run(workdir: Path, config: dict, env: dict) -> float:
    path = workdir / "config.json"
    path.write_text(json.dumps(config))
    started = time.perf_counter()
    proc = subprocess.run(
        h.snakemake_cmd(workdir, path), capture_output=True, text=True, cwd=workdir, env=env
    )
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"snakemake failed in {workdir}:\n{proc.stderr[-4000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=6, choices=range(1, len(NAMES) + 1))
    parser.add_argument("--repeat", type=int, default=2, help="runs per mode (alternating)")
    parser.add_argument("--work", type=Path, default=None, help="folder (default: a temp dir)")
    args = parser.parse_args()
    root = args.work or Path(tempfile.mkdtemp(prefix="bench_workflow_s3-"))
    symbols = NAMES[: args.symbols]
    mirror = h.build_scenario(root, symbols)
    server = SeaweedS3(root / "seaweedfs").start()
    emu = h.start_emulator(mirror, symbols=symbols)
    try:
        server.create_bucket("bench")
        env = {**h.env(), **server.env}
        figures: dict[str, list[tuple[float, float]]] = {"local": [], "s3": []}
        # Alternating order (local, s3, s3, local, ...): neither mode always pays the cold
        # start (imports, page cache) or rides a quieter moment of the shared machine.
        order = [m for i in range(args.repeat) for m in (("local", "s3"), ("s3", "local"))[i % 2]]
        for n, mode in enumerate(order):
            work = root / f"{mode}-{n}"
            work.mkdir()
            if mode == "local":
                data_dir = str(work / "data")
                extra = {}
            else:
                data_dir = f"s3://bench/run-{secrets.token_hex(3)}"
                extra = {"storage": server.storage_settings}
            config = {**h.config_for(emu.base_url, data_dir, symbols), **extra}
            first = timed_run(work, config, env)
            again = timed_run(work, config, env)
            figures[mode].append((first, again))
            print(f"{mode:5s}: first run {first:6.1f} s, second run (nothing to do) {again:5.1f} s")
    finally:
        emu.stop()
        server.stop()
    lf, la = (min(f[i] for f in figures["local"]) for i in (0, 1))
    sf, sa = (min(f[i] for f in figures["s3"]) for i in (0, 1))
    print(
        f"best of {args.repeat}: local {lf:.1f} s / {la:.1f} s, S3 {sf:.1f} s / {sa:.1f} s; "
        f"S3 / local wall time: first run {sf / lf:.2f}x, second run {sa / la:.2f}x"
    )
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (2 shared cores)")


if __name__ == "__main__":
    main()
