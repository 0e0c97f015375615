"""End-to-end helpers: run the real workflow (subprocess) against the local emulator."""

from __future__ import annotations

import json
from pathlib import Path

from tests.workflow.workflow_helpers import REPO, run_snakemake

__all__ = ["REPO", "emulator_config", "read_json", "snakemake"]


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


def snakemake(
    workdir: Path,
    config: dict,
    *args: str,
    timeout: int = 900,
    check: bool = True,
    launcher: list[str] | None = None,
):
    """``snakemake --cores 2 ARGS`` with ``config`` in ``workdir`` (see run_snakemake)."""
    return run_snakemake(
        workdir,
        "--cores",
        "2",
        *args,
        config=config,
        timeout=timeout,
        check=check,
        launcher=launcher,
    )


def read_json(path: Path):
    return json.loads(Path(path).read_text())
