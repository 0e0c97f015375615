"""``cluster.launcher: srun`` when SLURM ends a job past its time limit, through Snakemake on
the one-node test cluster: the killed job's log says so in SLURM's words, a plain rerun of
the same command recovers (outputs equal a clean run's), and with ``--retries 1`` the second
attempt asks twice the time (``sizing.retry_factor``) and succeeds. Before 2026-12-07 the
second attempt asked the first's ``--time`` again and was ended again: Snakemake kept the
first attempt's params, which carry the launcher's resources (smk.retry_with_fresh_params).

SLURM's shortest limit is one minute and slurmctld looks for jobs past their limit every
30 s, so a job asking one minute ends 60-90 s after it started. The rules ask at least ten
(``sizing.BASE_MINUTES``): ``minutes_srun.py`` gives SLURM a tenth of what the launcher
asks, and ``slow_job/sitecustomize.py`` makes the features job need between one and two
SLURM minutes (it sleeps after its first symbol when its limit is one minute). The two runs
that are ended go side by side, so that the test waits for one time kill, not two."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from crypto_lakehouse import layout
from tests.chaos import chaos_helpers as h
from tests.e2e.e2e_helpers import REPO
from tests.e2e.test_s3_pipeline_e2e import _assemble, _env, _local_snapshot, _s3_config
from tests.slurm.test_slurm_e2e import _slurm_is_up
from tests.slurm.test_slurm_s3_e2e import _local_run

pytestmark = pytest.mark.slurm

HERE = Path(__file__).resolve().parent
FEATURES_LOG = "logs/features/spot/klines-1m/shards/0.log"


def _setup(work: Path, emu, root: str, seaweed) -> tuple[list[str], dict]:
    """The command and environment of a srun-launcher run in ``work`` on ``root``."""
    work.mkdir()
    cluster = {
        "launcher": "srun",
        "srun": [sys.executable, str(HERE / "minutes_srun.py")],
        "srun_args": ["--quiet"],
    }
    config = work / "config.json"
    config.write_text(json.dumps(_s3_config(emu.base_url, root, seaweed, cluster=cluster)))
    env = _env(seaweed)
    env["PYTHONPATH"] = f"{env['PYTHONPATH']}{os.pathsep}{HERE / 'slow_job'}"
    env["MINUTES_SRUN_CALLS"] = str(work / "srun_calls.jsonl")
    profile = ("--profile", str(REPO / "profiles" / "slurm-srun"))
    return h.snakemake_cmd(work, config, *profile), env


def _start(command: list[str], env: dict, work: Path) -> subprocess.Popen:
    return subprocess.Popen(
        command, cwd=work, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip


def _features_times(work: Path) -> list[int]:
    """The ``--time`` (minutes, as the launcher asked) of each features job's srun."""
    calls = [json.loads(ln) for ln in (work / "srun_calls.jsonl").read_text().splitlines()]
    return [
        int(w.split("=", 1)[1])
        for words in calls
        if "--job-name=crypto_lakehouse-features_shard" in words
        for w in words
        if w.startswith("--time=")
    ]


def test_a_job_past_its_time_limit_is_retried_with_more_time_or_redone_by_a_rerun(
    tmp_path, seaweed, s3_root
):
    assert _slurm_is_up(), "no SLURM cluster: .ci/run starts one (bash .ci/start-slurm)"
    mirror = h.build_scenario(tmp_path)
    emu = h.start_emulator(mirror)
    try:
        expected = _local_run(tmp_path, emu)
        retried, rerun = tmp_path / "retried", tmp_path / "rerun"
        cmd_retried, env_retried = _setup(retried, emu, f"{s3_root}/retried", seaweed)
        cmd_rerun, env_rerun = _setup(rerun, emu, f"{s3_root}/rerun", seaweed)
        runs = {
            "retried": _start([*cmd_retried, "--retries", "1"], env_retried, retried),
            "rerun": _start(cmd_rerun, env_rerun, rerun),
        }
        out = {name: proc.communicate(timeout=600)[0] for name, proc in runs.items()}
        codes = {name: proc.returncode for name, proc in runs.items()}

        # Without retries the run ends failed; the features job's log says why, in SLURM's
        # words, and names the limit the launcher asked.
        assert codes["rerun"] != 0, out["rerun"][-6000:]
        run_dir = rerun / layout.default_run_dir(f"{s3_root}/rerun")
        log = (run_dir / FEATURES_LOG).read_text()
        assert "DUE TO TIME LIMIT" in log and "SLURM: past its time limit" in log, log
        # A plain rerun of the same command: the job is redone and asks twice its
        # estimate (its previous attempt did not finish: sizing.UNFINISHED_FACTOR).
        again = subprocess.run(
            cmd_rerun, cwd=rerun, env=env_rerun, text=True, timeout=600,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        assert again.returncode == 0, again.stdout[-6000:]
        first, second = _features_times(rerun)
        assert second == 2 * first and first // 10 == 1, (first, second)

        # With --retries 1 Snakemake's second attempt asks twice the time and succeeds.
        assert codes["retried"] == 0, out["retried"][-6000:]
        first, second = _features_times(retried)
        assert second == 2 * first and first // 10 == 1, (first, second)
        retried_dir = retried / layout.default_run_dir(f"{s3_root}/retried")
        assert "crypto_lakehouse.remote: job on node" in (retried_dir / FEATURES_LOG).read_text()
    finally:
        emu.stop()
    for name, root, folder in (
        ("rerun", f"{s3_root}/rerun", run_dir),
        ("retried", f"{s3_root}/retried", retried_dir),
    ):
        got = _local_snapshot(_assemble(seaweed, root, folder, tmp_path / f"got_{name}"))
        assert sorted(set(expected) ^ set(got)) == [], name
        assert h.differences(expected, got) == [], name
