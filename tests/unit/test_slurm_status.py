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


# ------------------------------------------------------------------ squeue and MinJobAge
# snakemake-executor-plugin-slurm 2.8.0 with `slurm-status-command: squeue`
# (crypto_lakehouse.slurm): below 3 x its first wait it asks sacct instead (a cluster
# without accounting: the run waits for ever), and below its longest wait between queries
# (180 s) it can miss a job's end (the run waits for ever, sometimes).
def test_min_job_age_is_read_from_scontrol_show_config():
    assert slurm.parse_min_job_age(CONFIG_NONE + "MinJobAge               = 300 sec\n") == 300
    assert slurm.parse_min_job_age("MinJobAge = 2h\n") == 7200
    assert slurm.parse_min_job_age(CONFIG_NONE) is None


NONE, DBD = "accounting_storage/none", "accounting_storage/slurmdbd"


@pytest.mark.parametrize(
    ("accounting", "min_job_age", "init", "sacct_on_path", "expected"),
    [
        (NONE, 10, 5, True, "stop"),  # 10 < 3 x 5: sacct, which has no database here
        (NONE, 100, None, True, "stop"),  # the plugin's default first wait: 40 s
        (NONE, 0, 5, True, "stop"),  # 0 (jobs kept for ever) is below it too
        (DBD, 10, 5, True, None),  # sacct instead: it has a database to answer from
        (NONE, 10, 5, False, "warn"),  # no sacct: squeue after all, with 10 s
        (NONE, 60, 5, True, "warn"),  # squeue, but a job's end can go unseen
        (DBD, 60, 5, True, "warn"),
        (NONE, 179, 5, True, "warn"),
        (NONE, 180, 5, True, None),
        (NONE, 300, 5, True, None),  # the test cluster's
        (NONE, None, 5, True, None),  # scontrol did not say: nothing known
    ],
)
def test_squeue_with_a_short_min_job_age_stops_or_warns(
    accounting, min_job_age, init, sacct_on_path, expected
):
    found = slurm.squeue_problem("slurm", "squeue", accounting, min_job_age, init, sacct_on_path)
    assert {None: None, "stop": True, "warn": False}[expected] == (found and found[0])
    if found:
        assert f"MinJobAge = {min_job_age} s (scontrol show config)" in found[1]
        assert "MinJobAge >= 180" in found[1] or "drop slurm-status-command squeue" in found[1]
    if expected == "warn" and accounting == DBD:
        assert "drop slurm-status-command squeue" in found[1]


@pytest.mark.parametrize(("executor", "command"), [("slurm", "sacct"), ("local", "squeue")])
def test_min_job_age_matters_only_to_squeue_under_the_slurm_executor(executor, command):
    assert slurm.squeue_problem(executor, command, NONE, 10, 5, True) is None


def test_the_start_check_asks_scontrol_once_for_both(tmp_path, monkeypatch):
    calls = tmp_path / "calls"
    (tmp_path / "out.txt").write_text(CONFIG_NONE + "MinJobAge               = 10 sec\n")
    _fake_scontrol(tmp_path, f'echo "$*" >> {calls}; cat {tmp_path / "out.txt"}')
    (tmp_path / "sacct").write_text("#!/bin/sh\nexit 1\n")
    (tmp_path / "sacct").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    stop, message = slurm.start_check("slurm", "squeue", 5)
    assert stop and "MinJobAge = 10 s" in message and "sacct instead of squeue" in message
    stop, message = slurm.start_check("slurm", "sacct", 5)
    # The advice for sacct, and at once why it will not do with this MinJobAge.
    assert stop and "--slurm-status-command squeue" in message
    assert "But squeue will not do here either: MinJobAge = 10 s" in message
    assert slurm.start_check("local", None, None) is None
    assert calls.read_text().splitlines() == ["show config", "show config"]


def test_the_advice_for_sacct_stands_alone_with_a_long_min_job_age(tmp_path, monkeypatch):
    (tmp_path / "out.txt").write_text(CONFIG_NONE + "MinJobAge               = 300 sec\n")
    _fake_scontrol(tmp_path, f"cat {tmp_path / 'out.txt'}")
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    stop, message = slurm.start_check("slurm", "sacct", 5)
    assert stop and "--slurm-status-command squeue" in message and "MinJobAge" not in message
    assert slurm.start_check("slurm", "squeue", 5) is None
