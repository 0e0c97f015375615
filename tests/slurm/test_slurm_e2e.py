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
    # "completing": a job just ended (a test's time kill) is still being cleaned up.
    return proc.returncode == 0 and bool(re.search(r"idle|mix|alloc|comp", proc.stdout))


def test_pipeline_through_slurm_equals_local_run(tmp_path):
    assert _slurm_is_up(), "no SLURM cluster: .ci/run starts one (bash .ci/start-slurm)"
    from crypto_lakehouse_emulator import Emulator

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


def test_sacct_without_an_accounting_database_stops_the_run_at_start(tmp_path):
    """The profile as shipped, without `--slurm-status-command squeue`, on a cluster without
    an accounting database (the test cluster's): the executor's default status command,
    sacct, answers "Slurm accounting storage is disabled", and the run waited for ever after
    its first SLURM job, printing nothing. Now its start says what to add, exit 1, before
    any job (crypto_lakehouse.slurm)."""
    assert _slurm_is_up(), "no SLURM cluster: .ci/run starts one (bash .ci/start-slurm)"
    config_lines = subprocess.run(
        ["scontrol", "show", "config"], capture_output=True, text=True
    ).stdout
    assert re.search(r"AccountingStorageType\s*=\s*accounting_storage/none", config_lines)
    flags = ("--profile", str(REPO / "profiles" / "slurm"), "--slurm-no-account")
    out = _stopped_at_start(tmp_path, flags)
    assert "add --slurm-status-command squeue" in out, out[-3000:]


def _stopped_at_start(tmp_path, flags) -> str:
    """The um_futures run through SLURM with ``flags``, checked to exit 1 before its first
    SLURM job; its output. Before the start checks such runs waited for ever after their
    first job: the timeout ends the test then (subprocess.TimeoutExpired)."""
    from crypto_lakehouse_emulator import Emulator

    legacy_mirror(tmp_path / "mirror")
    with Emulator(mirror_dir=tmp_path / "mirror", rest=legacy_rest()) as emu:
        work = tmp_path / "work"
        work.mkdir()
        config = legacy_config(emu.base_url, work / "data")
        config["trade_types"] = ["um_futures"]
        proc = snakemake(work, config, "all", *flags, timeout=240, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-3000:]
    assert "has been submitted with SLURM" not in out
    assert not (work / "data" / "parsed_data").exists()
    return out


def test_squeue_with_a_short_min_job_age_stops_the_run_at_start(tmp_path, monkeypatch):
    """`--slurm-status-command squeue` on a cluster whose MinJobAge (10 s here: the test
    cluster's `scontrol show config`, that line changed, by an `scontrol` first on PATH) is
    below 3 x the profile's first status wait (5 s): the executor asks sacct instead, which
    this cluster without an accounting database cannot answer, and the run waited for ever
    after its first SLURM job, as with sacct itself. Now its start says so, naming
    MinJobAge, exit 1, before any job (crypto_lakehouse.slurm.squeue_problem)."""
    import os
    import shutil as sh

    assert _slurm_is_up(), "no SLURM cluster: .ci/run starts one (bash .ci/start-slurm)"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    real = sh.which("scontrol")
    (bin_dir / "scontrol").write_text(
        "#!/bin/sh\n"
        f'if [ "$*" = "show config" ]; then {real} show config | '
        "sed 's/^MinJobAge .*/MinJobAge               = 10 sec/'; else exec "
        f'{real} "$@"; fi\n'
    )
    (bin_dir / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    out = _stopped_at_start(tmp_path, SLURM_FLAGS)
    assert "MinJobAge = 10 s (scontrol show config)" in out, out[-3000:]
    assert "asks job states with sacct instead of squeue" in out, out[-3000:]


def test_cores_sized_auto_shards_are_the_same_on_the_nodes(tmp_path):
    """``shards: auto`` with ``--cores`` given to a SLURM run (at most this host's CPUs): the
    main process sizes one trade type's shards from its cores and pins the value; each SLURM
    job re-plans on its node with that node's cores (``--cores all``) and must plan the same shards
    (plan.auto_parallel), or a job would parse another shard's symbols. On this one-node
    test cluster the nodes' cores (``--cores all``) equal the main process's, so this shows
    the pinned plan end to end; tests/unit/test_auto_parallel.py checks that a node takes
    the pin over its own cores."""
    import os

    assert _slurm_is_up(), "no SLURM cluster: .ci/run starts one (bash .ci/start-slurm)"
    from crypto_lakehouse_emulator import Emulator
    from crypto_lakehouse_emulator.synthetic import SyntheticUniverse

    from crypto_lakehouse import layout
    from tests.e2e.e2e_helpers import emulator_config, read_json

    if (os.cpu_count() or 1) < 2:
        pytest.fail("this test needs a host with 2 CPUs at least")
    # 12: the synthetic names S000000USDT.. fall 8 + 4 into two shards (CRC-32 parity).
    universe = SyntheticUniverse(n_spot=12, days=2, start="2024-03-01")
    with Emulator(listing=universe) as emu:
        data = tmp_path / "data"
        config = emulator_config(
            emu.base_url, data, trade_types=["spot"], start_date="2024-03-01",
            end_date="2024-03-02", shards="auto", symbols={"spot": "all"},
        )  # fmt: skip
        # snakemake() passes --cores 2
        proc = snakemake(tmp_path, config, "aws_parse", *SLURM_FLAGS)
    log = proc.stdout + proc.stderr
    submitted = re.findall(r"has been submitted with SLURM jobid \d+ \(log: \S*/rule_(\w+?)/", log)
    assert submitted == ["aws_parse_klines"] * 2, log[-4000:]  # 12 symbols, 2 cores: 2 shards
    assert read_json(layout.auto_parallel_path(str(data / "lakehouse")))["parallel"] == 2
    symbols = sorted(universe.symbols("spot"))
    parsed = sorted(p.name for p in (data / "parsed_data/spot/klines").iterdir())
    assert parsed == symbols
    for shard in (0, 1):
        report = read_json(data / f"lakehouse/reports/aws_parse/spot/klines-1m/shards/{shard}.json")
        assert report["symbols"] and all(e["status"] == "ok" for e in report["symbols"].values())
