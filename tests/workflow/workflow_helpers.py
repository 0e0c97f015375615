"""Helpers for tests that run the Snakemake workflow as a user would (subprocess)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Every endpoint on a closed loopback port unless a test gives its own (the emulator): a
# workflow test never contacts Binance, even if it ran jobs by mistake.
OFFLINE_ENDPOINTS = {
    key: "http://127.0.0.1:9" for key in ("archive", "listing", "spot_api", "um_api", "cm_api")
}


def run_snakemake(
    workdir: Path,
    *args: str,
    config: dict | None = None,
    timeout=600,
    check=True,
    launcher: list[str] | None = None,
):
    """Run snakemake from the repository with its data under ``workdir``; ``launcher``
    replaces ``python -m snakemake`` (a script taking Snakemake's arguments)."""
    cmd = [
        *(launcher or [sys.executable, "-m", "snakemake"]),
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        *args,
    ]
    cfg = workdir / "test-config.yaml"
    if config is not None:
        config = {**config, "endpoints": {**OFFLINE_ENDPOINTS, **config.get("endpoints", {})}}
        cfg.write_text(json.dumps(config))
        cmd += ["--configfile", str(cfg)]
    else:
        # Before args, so that a --config among them still wins; the `=` form takes one value,
        # so a target among args is not read as another config file.
        cfg.write_text(json.dumps({"endpoints": OFFLINE_ENDPOINTS}))
        cmd.insert(cmd.index("--directory"), f"--configfile={cfg}")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=workdir)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed ({proc.returncode}):\n"
            f"{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
        )
    return proc


def job_counts(output: str) -> dict[str, int]:
    """Parse the "Job stats" table of a dry run."""
    counts: dict[str, int] = {}
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("Job stats:"):
            for row in lines[i + 3 :]:
                parts = row.split()
                if len(parts) != 2 or not parts[1].isdigit():
                    break
                counts[parts[0]] = int(parts[1])
            break
    return counts


def write_listing_index(data_dir: Path, trade_type: str, dataset: str, symbols: list[str]):
    """A listing index as the list_archive checkpoint writes it (for planning tests)."""
    index = {
        "trade_type": trade_type,
        "dataset": dataset.split("-")[0],
        "interval": dataset.split("-")[1] if "-" in dataset else None,
        "symbols": {
            s: {"digest": hashlib.sha256(s.encode()).hexdigest(), "n_files": 2} for s in symbols
        },
        "refused": [],
        "filtered_out": [],
        "not_listed": [],
    }
    path = data_dir / "lakehouse" / "listing" / trade_type / f"{dataset}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(index))
    return path
