"""A SLURM cluster without an accounting database, run with the SLURM executor's default
job status command (``sacct``).

There ``sacct`` answers only "Slurm accounting storage is disabled" (exit 1), and
snakemake-executor-plugin-slurm (2.8.0) logs each failed status query at debug level and
asks again, for ever: the run submitted its first CPU job, which finished, and then printed
nothing more and never ended (a new user's first run of ``profiles/slurm`` on the test
cluster). The run's start (Snakefile ``onstart``) asks ``scontrol show config`` once and
stops with what to add instead: ``--slurm-status-command squeue``."""

from __future__ import annotations

import re
import subprocess

ACCOUNTING_NONE = "accounting_storage/none"


def accounting_storage(timeout_s: float = 10.0) -> str | None:
    """``AccountingStorageType`` of ``scontrol show config``; None when it cannot be asked
    (no ``scontrol``, no answer within ``timeout_s``, an error) or the line is not there."""
    try:
        proc = subprocess.run(
            ["scontrol", "show", "config"], capture_output=True, text=True, timeout=timeout_s
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        return None
    return parse_accounting_storage(proc.stdout)


def parse_accounting_storage(text: str) -> str | None:
    """The value of the ``AccountingStorageType = …`` line of ``scontrol show config``."""
    m = re.search(r"^\s*AccountingStorageType\s*=\s*(\S+)", text, re.MULTILINE)
    return m.group(1) if m else None


def status_command_problem(
    executor: str | None, status_command: str | None, accounting: str | None
) -> str | None:
    """Why the run would never end, or None: the ``slurm`` executor asking job states with
    ``sacct`` on a cluster whose ``AccountingStorageType`` is ``accounting_storage/none``."""
    if executor != "slurm" or status_command != "sacct" or accounting != ACCOUNTING_NONE:
        return None
    return (
        "this SLURM cluster has no accounting database (scontrol show config: "
        f"AccountingStorageType = {ACCOUNTING_NONE}), so sacct cannot report job states and "
        "Snakemake's SLURM executor would wait for ever after its first job: add "
        "--slurm-status-command squeue (or `slurm-status-command: squeue` in the profile; "
        "README, Running on SLURM)"
    )
