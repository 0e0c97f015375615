"""The pipeline end to end through `--profile profiles/slurm` on the single-node SLURM cluster
that .ci/run starts: CPU jobs really go through SLURM and the outputs equal a local run."""

from __future__ import annotations

import re
import shutil
import subprocess

import pyarrow.parquet as pq
import pytest

from tests.e2e.e2e_helpers import REPO, snakemake
from tests.e2e.legacy_real_scenario import legacy_config, legacy_mirror, legacy_rest, result_files

pytestmark = pytest.mark.slurm

SLURM_FLAGS = (
    "--profile",
    str(REPO / "profiles" / "slurm"),
    # The test cluster has no accounting database and no accounts (spec: snakemake-notes §7).
    "--slurm-status-command",
    "squeue",
    "--slurm-no-account",
)
CPU_RULES = ("aws_parse_klines", "gen_kline_shard", "resample_shard", "features_shard")


def _slurm_is_up() -> bool:
    if shutil.which("sinfo") is None:
        return False
    proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    return proc.returncode == 0 and bool(re.search(r"idle|mix|alloc", proc.stdout))


def test_pipeline_through_slurm_equals_local_run(tmp_path):
    assert _slurm_is_up(), "no SLURM cluster: .ci/run starts one (bash .ci/start-slurm)"
    from crypto_lakehouse.emulator import Emulator

    legacy_mirror(tmp_path / "mirror")
    outputs = {}
    with Emulator(mirror_dir=tmp_path / "mirror", rest=legacy_rest()) as emu:
        for mode in ("local", "slurm"):
            work = tmp_path / mode
            work.mkdir()
            config = legacy_config(emu.base_url, work / "data")
            config["trade_types"] = ["um_futures", "cm_futures"]
            flags = SLURM_FLAGS if mode == "slurm" else ()
            proc = snakemake(work, config, "all", *flags, timeout=1500)
            outputs[mode] = (work / "data", proc.stdout + proc.stderr)

    slurm_log = outputs["slurm"][1]
    # "Job 61 has been submitted with SLURM jobid 5 (log: …/slurm_logs/rule_<rule>/…)"
    submitted = re.findall(
        r"has been submitted with SLURM jobid (\d+) \(log: \S*/rule_(\w+?)/", slurm_log
    )
    rules = sorted(rule for _, rule in submitted)
    # Each CPU job of um and cm went through SLURM; network rules stayed local.
    assert rules == sorted(CPU_RULES * 2), slurm_log[-4000:]
    assert len({job_id for job_id, _ in submitted}) == len(submitted)

    local, slurm = outputs["local"][0], outputs["slurm"][0]
    files = result_files(local / "results_data")
    assert files and files == result_files(slurm / "results_data")
    for rel in sorted(files) + sorted(result_files(local / "parsed_data")):
        base = "results_data" if rel in files else "parsed_data"
        a = pq.read_table(local / base / rel)
        b = pq.read_table(slurm / base / rel)
        # Table.equals counts NaN as unequal to NaN; feature files have NaN warm-up rows.
        assert a.schema.equals(b.schema) and a.to_pandas().equals(b.to_pandas()), rel
