"""End-to-end helpers: run the real workflow (subprocess) against the local emulator."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def emulator_config(base_url: str, data_dir: Path, **overrides) -> dict:
    """A workflow config with every endpoint pointing at the emulator."""
    config = {
        "data_dir": str(data_dir),
        "endpoints": {
            "archive": base_url,
            "listing": base_url,
            "spot_api": base_url,
            "um_api": base_url,
            "cm_api": base_url,
        },
        "lookback_days": None,
    }
    config.update(overrides)
    return config


def snakemake(workdir: Path, config: dict, *args: str, timeout: int = 900, check: bool = True):
    cfg = workdir / "e2e-config.json"
    cfg.write_text(json.dumps(config))
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(cfg),
        "--cores",
        "2",
        *args,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=workdir)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed ({proc.returncode}):\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-12000:]}"
        )
    return proc


def read_json(path: Path):
    return json.loads(Path(path).read_text())
