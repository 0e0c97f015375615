"""The workflow side of config block ``storage``: non-default settings reach every job's
JSON (key ``storage``) and a default block adds nothing (no job reruns). An s3:// data
dir's run directory: tests/workflow/test_run_dir.py."""

from __future__ import annotations

import json
import shlex

from tests.workflow.test_structure import _write_small_listing
from tests.workflow.workflow_helpers import run_snakemake


def _parse_jobs(tmp_path, **config) -> list[dict]:
    data = tmp_path / "d"
    _write_small_listing(data)
    proc = run_snakemake(
        tmp_path, "-n", "-p", "aws_parse",
        config={"data_dir": str(data), "trade_types": ["spot"], **config},
    )  # fmt: skip
    return [
        json.loads(shlex.split(line)[4])
        for line in proc.stdout.splitlines()
        if line.startswith("Shell command:") and "aws_parse_klines.py" in line
    ]


def test_storage_settings_reach_the_jobs_only_when_not_default(tmp_path):
    default = _parse_jobs(tmp_path / "a")
    assert default and all("storage" not in job for job in default)
    off = _parse_jobs(tmp_path / "b", storage={"fsync": False})
    assert off and all(job["storage"] == {"fsync": False} for job in off)
