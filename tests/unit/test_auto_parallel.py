"""``shards: auto`` and the cores of a local run (plan.auto_parallel): computed by the main
process, pinned in the run directory, read by every other Snakemake process of the run."""

from __future__ import annotations

import json

import pytest

from crypto_lakehouse import layout, plan


@pytest.fixture
def eight_cpus(monkeypatch):
    monkeypatch.setattr(plan.os, "cpu_count", lambda: 8)


def _main(pin, cores, trade_types=3, write=True):
    return plan.auto_parallel(
        pin, cores=cores, trade_types=trade_types, main_process=True, write=write
    )


def test_a_local_run_shares_its_cores_among_the_trade_types(tmp_path, eight_cpus):
    pin = layout.auto_parallel_path(str(tmp_path))
    assert _main(pin, 8) == 2
    assert json.loads(open(pin).read())["parallel"] == 2
    assert _main(pin, 8, trade_types=1) == 8
    assert _main(pin, 2) == 1  # fewer cores than trade types: one job each
    assert json.loads(open(pin).read())["parallel"] == 1  # the pin follows the run


@pytest.mark.parametrize("cores", [None, 9, 100])
def test_a_cluster_run_leaves_the_shards_to_the_listing(tmp_path, eight_cpus, cores):
    """No --cores (SLURM executor with --jobs) or more cores than this host has (jobs in
    flight on a cluster, the slurm-srun profile): the listing alone sizes the shards."""
    assert _main(layout.auto_parallel_path(str(tmp_path)), cores, trade_types=1) == 1


def test_a_job_replanning_on_its_node_reads_the_main_processs_value(tmp_path, eight_cpus):
    pin = layout.auto_parallel_path(str(tmp_path))
    node = dict(cores=1, trade_types=3, main_process=False, write=False)
    assert plan.auto_parallel(pin, **node) == 1  # no pin yet: what an older run planned
    _main(pin, 8, trade_types=1)
    assert plan.auto_parallel(pin, **node) == 8  # not its own cores // trade types
    with open(pin, "w") as fh:
        fh.write("{torn")
    assert plan.auto_parallel(pin, **node) == 1


def test_a_dry_run_pins_nothing(tmp_path, eight_cpus):
    pin = layout.auto_parallel_path(str(tmp_path))
    assert _main(pin, 8, write=False) == 2
    assert not (tmp_path / "plan").exists()
