"""The cluster profiles leave each CPU job's memory and runtime to the rules.

A rule's ``resources:`` are functions of the job's shard: runtime 10 + 2 min per symbol (the
candle stages: 10 + 0.25; with no archive bytes recorded, nothing for the work), and on an
``s3://`` data dir 1000 MB more per symbol worked on at the same time
(``storage.symbols_at_once``, docs/storage.md). A profile's ``set-resources`` replaces them
by constants: before 2026-12-06 both cluster profiles gave resample and features 60 minutes
whatever the shard's size, and every CPU job a fixed memory, on a bucket too."""

from __future__ import annotations

import math
import re
import shutil

import pytest

from tests.workflow.workflow_helpers import REPO, run_snakemake, write_listing_index

SYMBOLS = ["AAAUSDT", "BBBUSDT", "CCCUSDT", "DDDUSDT", "EEEUSDT", "FFFUSDT"]  # one shard
CPU_RULES = ("aws_parse_klines", "gen_kline_shard", "resample_shard", "features_shard")
DATES = {"start_date": "2024-02-24", "end_date": "2024-03-03", "trade_types": ["spot"]}


def _resources(output: str) -> dict[str, dict[str, str]]:
    """Each rule's resources as a dry run prints them (the CPU rules have one job each)."""
    found, rule = {}, None
    for line in output.splitlines():
        m = re.match(r"^(?:local)?(?:rule|checkpoint) (\w+):", line)
        if m:
            rule = m.group(1)
        elif rule and line.strip().startswith("resources:"):
            found[rule] = dict(kv.split("=", 1) for kv in line.split(":", 1)[1].split(", "))
    return found


@pytest.mark.parametrize(
    "profile, data_dir, extra, mem_mb, parse_mem_mb",
    [
        # a local data dir: one symbol at a time (the klines parse: 1000 per symbol)
        ("slurm", "data", {}, 2000, 1000),
        # a bucket, 4 symbols at once (the default): 2000 + 3 × 1000; the parse 4 × 1000
        ("slurm-srun", "s3://bucket/x", {"cluster": {"launcher": "srun"}}, 5000, 4000),
    ],
)
def test_a_cluster_profile_keeps_the_rules_memory_and_runtime(
    tmp_path, profile, data_dir, extra, mem_mb, parse_mem_mb
):
    if data_dir.startswith("s3://"):
        write_listing_index(tmp_path / "scratch", "spot", "klines-1m", SYMBOLS)
        run_dir = tmp_path / "lakehouse_runs/bucket/x"
        run_dir.mkdir(parents=True)
        shutil.move(tmp_path / "scratch/lakehouse/listing", run_dir / "listing")
    else:
        data_dir = str(tmp_path / data_dir)
        write_listing_index(tmp_path / "data", "spot", "klines-1m", SYMBOLS)
    config = {"data_dir": data_dir, **DATES, **extra}
    proc = run_snakemake(
        tmp_path, "-n", "report", "--profile", str(REPO / "profiles" / profile), config=config
    )
    resources = _resources(proc.stdout + proc.stderr)
    for rule in CPU_RULES:
        per_symbol = 2 if rule == "aws_parse_klines" else 0.25
        runtime = math.ceil(10 + per_symbol * len(SYMBOLS))
        assert resources[rule]["runtime"] == str(runtime), (rule, resources[rule])
        expected = parse_mem_mb if rule == "aws_parse_klines" else mem_mb
        assert resources[rule]["mem_mb"] == str(expected), (rule, resources[rule])
