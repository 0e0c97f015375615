"""A SLURM cluster without an accounting database: the SLURM executor's default status
command (sacct) cannot report job states there, and the run waited for ever after its first
job. crypto_lakehouse.slurm finds it from `scontrol show config` (the Snakefile's onstart
stops the run; tests/slurm/test_slurm_e2e.py runs it on the test cluster)."""

from __future__ import annotations

import os
import stat

import pytest

from crypto_lakehouse import slurm

# Lines of `scontrol show config` on the project's one-node test cluster (slurm-wlm 22).
CONFIG_NONE = """Configuration data as of 2026-12-07T06:00:00
AccountingStorageBackupHost = (null)
AccountingStorageEnforce = none
AccountingStorageHost   = localhost
AccountingStorageType   = accounting_storage/none
AccountingStorageUser   = root
"""
CONFIG_DBD = CONFIG_NONE.replace("accounting_storage/none", "accounting_storage/slurmdbd")


def test_the_accounting_storage_type_is_read_from_scontrol_show_config():
    assert slurm.parse_accounting_storage(CONFIG_NONE) == "accounting_storage/none"
    assert slurm.parse_accounting_storage(CONFIG_DBD) == "accounting_storage/slurmdbd"
    assert slurm.parse_accounting_storage("AccountingStorageHost = x\n") is None


@pytest.mark.parametrize(
    ("executor", "status_command", "accounting", "problem"),
    [
        ("slurm", "sacct", "accounting_storage/none", True),
        ("slurm", "squeue", "accounting_storage/none", False),
        ("slurm", "sacct", "accounting_storage/slurmdbd", False),
        ("slurm", "sacct", None, False),  # scontrol did not answer: nothing known
        ("local", None, "accounting_storage/none", False),
    ],
)
def test_sacct_on_a_cluster_without_accounting_is_a_problem(
    executor, status_command, accounting, problem
):
    message = slurm.status_command_problem(executor, status_command, accounting)
    assert bool(message) is problem
    if problem:
        assert "--slurm-status-command squeue" in message
        assert "accounting_storage/none" in message


def _fake_scontrol(folder, body: str) -> None:
    path = folder / "scontrol"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_accounting_storage_asks_scontrol(tmp_path, monkeypatch):
    (tmp_path / "out.txt").write_text(CONFIG_NONE)
    _fake_scontrol(tmp_path, f'[ "$*" = "show config" ] && cat {tmp_path / "out.txt"}')
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert slurm.accounting_storage() == "accounting_storage/none"


@pytest.mark.parametrize("body", ["echo 'slurm_load_ctl_conf error' >&2; exit 1", "sleep 5"])
def test_a_controller_that_fails_or_does_not_answer_tells_nothing(tmp_path, monkeypatch, body):
    _fake_scontrol(tmp_path, body)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert slurm.accounting_storage(timeout_s=0.5) is None


def test_no_scontrol_tells_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert slurm.accounting_storage() is None
