"""The SLURM profile with ``data_dir: s3://…`` (issue 18): the CPU jobs run as SLURM jobs
that read and write the bucket directly (credentials reach them through the environment
SLURM exports); the outputs equal those of a local run of the same scenario. Once through
the SLURM executor profile (run directory shared), once through ``profiles/slurm-srun``
(``cluster.launcher: srun``: nothing shared but the bucket; docs/cluster.md)."""

from __future__ import annotations

import json
import re

import pytest

from crypto_lakehouse import layout
from tests.chaos import chaos_helpers as h
from tests.e2e.e2e_helpers import REPO
from tests.e2e.test_s3_pipeline_e2e import _assemble, _env, _local_snapshot, _run, _s3_config
from tests.slurm.test_slurm_e2e import SLURM_FLAGS, _slurm_is_up

pytestmark = pytest.mark.slurm

CPU_RULES = ("aws_parse_klines", "gen_kline_shard", "resample_shard", "features_shard")


def _local_run(tmp_path, emu) -> dict:
    """The scenario run locally: the snapshot the runs on the bucket must equal."""
    local = tmp_path / "local"
    local.mkdir()
    config = local / "config.json"
    config.write_text(json.dumps(h.config_for(emu.base_url, local / "data")))
    proc = h.run(local, config)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return _local_snapshot(local / "data")


def test_slurm_run_on_a_bucket_equals_local_run(tmp_path, seaweed, s3_root):
    assert _slurm_is_up(), "no SLURM cluster: .ci/run starts one (bash .ci/start-slurm)"
    mirror = h.build_scenario(tmp_path)
    emu = h.start_emulator(mirror)
    try:
        expected = _local_run(tmp_path, emu)

        work = tmp_path / "slurm"
        work.mkdir()
        config = work / "config.json"
        config.write_text(json.dumps(_s3_config(emu.base_url, s3_root, seaweed)))
        proc = _run(work, config, _env(seaweed), *SLURM_FLAGS, timeout=1500)
        log = proc.stdout + proc.stderr
        assert proc.returncode == 0, log[-6000:]
    finally:
        emu.stop()
    submitted = re.findall(
        r"has been submitted with SLURM jobid (\d+) \(log: \S*/rule_(\w+?)/", log
    )
    assert sorted(rule for _, rule in submitted) == sorted(CPU_RULES), log[-4000:]
    run_dir = work / layout.default_run_dir(s3_root)
    got = _local_snapshot(_assemble(seaweed, s3_root, run_dir, tmp_path / "got"))
    assert sorted(set(expected) ^ set(got)) == []
    assert h.differences(expected, got) == []


def test_srun_launcher_on_a_bucket_equals_local_run(tmp_path, seaweed, s3_root):
    """``cluster.launcher: srun`` (a cluster whose nodes share no file system with the submit
    host): Snakemake runs locally and each CPU job goes through a real srun; the outputs
    equal a local run's, and the jobs' logs name the SLURM job each ran in."""
    assert _slurm_is_up(), "no SLURM cluster: .ci/run starts one (bash .ci/start-slurm)"
    mirror = h.build_scenario(tmp_path)
    emu = h.start_emulator(mirror)
    try:
        expected = _local_run(tmp_path, emu)

        work = tmp_path / "srun"
        work.mkdir()
        config = work / "config.json"
        cluster = {"launcher": "srun", "srun_args": ["--quiet"]}
        config.write_text(json.dumps(_s3_config(emu.base_url, s3_root, seaweed, cluster=cluster)))
        profile = ("--profile", str(REPO / "profiles" / "slurm-srun"))
        proc = _run(work, config, _env(seaweed), *profile, timeout=1500)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    finally:
        emu.stop()
    run_dir = work / layout.default_run_dir(s3_root)
    for rule in CPU_RULES:
        stage = {"aws_parse_klines": "aws_parse"}.get(rule, rule.removesuffix("_shard"))
        log = (run_dir / f"logs/{stage}/spot/klines-1m/shards/0.log").read_text()
        ran = re.match(r"crypto_lakehouse\.remote: job on node \S+ \(SLURM job (\d+)\)", log)
        assert ran, log
        # The node's figures of the job, for the report, name the same SLURM job.
        node = run_dir / f"benchmarks/{stage}/spot/klines-1m/shards/0.node.json"
        figures = json.loads(node.read_text())
        assert figures["slurm_job"] == ran.group(1) and figures["cpu_time"] > 0
    got = _local_snapshot(_assemble(seaweed, s3_root, run_dir, tmp_path / "got"))
    assert sorted(set(expected) ^ set(got)) == []
    assert h.differences(expected, got) == []


def test_srun_launcher_under_the_slurm_executor_is_refused_at_start(tmp_path, seaweed, s3_root):
    """The SLURM executor profile already puts the CPU jobs on nodes: with launcher srun each
    would start a second job from inside the first. Refused before any job, naming the key."""
    assert _slurm_is_up(), "no SLURM cluster: .ci/run starts one (bash .ci/start-slurm)"
    config = tmp_path / "config.json"
    cluster = {"launcher": "srun"}
    config.write_text(
        json.dumps(_s3_config("http://127.0.0.1:9", s3_root, seaweed, cluster=cluster))
    )
    proc = _run(tmp_path, config, _env(seaweed), *SLURM_FLAGS, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "config key 'cluster.launcher': srun launches the CPU jobs on nodes itself" in log
    assert "has been submitted with SLURM jobid" not in log
