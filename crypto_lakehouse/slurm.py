"""A SLURM cluster without an accounting database, run with the SLURM executor's default
job status command (``sacct``).

There ``sacct`` answers only "Slurm accounting storage is disabled" (exit 1), and
snakemake-executor-plugin-slurm (2.8.0) logs each failed status query at debug level and
asks again, for ever: the run submitted its first CPU job, which finished, and then printed
nothing more and never ended (a new user's first run of ``profiles/slurm`` on the test
cluster). The run's start (Snakefile ``onstart``) asks ``scontrol show config`` once and
stops with what to add instead: ``--slurm-status-command squeue``.

With ``squeue`` the cluster's ``MinJobAge`` matters: squeue shows a finished job for that
many seconds only, and the plugin (2.8.0, ``__init__.py``, ``check_active_jobs``):

- asks ``sacct`` instead when ``MinJobAge`` is below 3 × its first wait
  (``slurm-init-seconds-before-status-checks``; lines 1314-1324) and ``sacct`` is on PATH:
  on a cluster without an accounting database that is the wait for ever above;
- waits 10 s longer after each status query in which no job ended, up to 180 s
  (``max_sleep_time``, lines 1287 and 1611-1617), and takes a job that squeue no longer
  lists as still running (lines 1474-1478): with ``MinJobAge`` below 180 s the end of a long
  job can be missed, and the run then waits for ever too.

The start stops in the first case and warns in the second (``squeue_problem``)."""

from __future__ import annotations

import re
import shutil
import subprocess

ACCOUNTING_NONE = "accounting_storage/none"
# The plugin's longest wait between two status queries (``max_sleep_time``): a finished job
# stays visible to squeue for MinJobAge seconds, so below this its end can go unseen.
PLUGIN_LONGEST_STATUS_WAIT_S = 180
# The plugin asks sacct instead of squeue when MinJobAge < this × its first wait.
PLUGIN_SACCT_FALLBACK_FACTOR = 3
# The plugin's default first wait (``init_seconds_before_status_checks``).
PLUGIN_DEFAULT_INIT_SECONDS = 40


def show_config(timeout_s: float = 10.0) -> str | None:
    """The text of ``scontrol show config``; None when it cannot be asked (no ``scontrol``,
    no answer within ``timeout_s``, an error)."""
    try:
        proc = subprocess.run(
            ["scontrol", "show", "config"], capture_output=True, text=True, timeout=timeout_s
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        return None
    return proc.stdout


def accounting_storage(timeout_s: float = 10.0) -> str | None:
    """``AccountingStorageType`` of ``scontrol show config``; None when it cannot be asked
    or the line is not there."""
    text = show_config(timeout_s)
    return None if text is None else parse_accounting_storage(text)


def parse_accounting_storage(text: str) -> str | None:
    """The value of the ``AccountingStorageType = …`` line of ``scontrol show config``."""
    m = re.search(r"^\s*AccountingStorageType\s*=\s*(\S+)", text, re.MULTILINE)
    return m.group(1) if m else None


def parse_min_job_age(text: str) -> int | None:
    """``MinJobAge`` of ``scontrol show config`` in seconds (``MinJobAge = 300 sec``), or
    None when the line is not there."""
    m = re.search(r"^\s*MinJobAge\s*=\s*(\d+)\s*([a-zA-Z]*)", text, re.MULTILINE)
    if not m:
        return None
    hours = m.group(2).lower() in ("h", "hour", "hours")
    return int(m.group(1)) * (3600 if hours else 1)


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


def squeue_problem(
    executor: str | None,
    status_command: str | None,
    accounting: str | None,
    min_job_age: int | None,
    init_seconds: int | None,
    sacct_on_path: bool,
) -> tuple[bool, str] | None:
    """What a run asking job states with ``squeue`` on a cluster with a short ``MinJobAge``
    would do (module docstring): ``(True, why)`` when it would wait for ever after its first
    job (stop the run), ``(False, why)`` when it may (warn), else None. ``MinJobAge = 0``
    keeps finished jobs for ever (slurm.conf), which squeue then always sees."""
    if executor != "slurm" or status_command != "squeue" or min_job_age is None:
        return None
    init = init_seconds or PLUGIN_DEFAULT_INIT_SECONDS
    age = f"MinJobAge = {min_job_age} s (scontrol show config)"
    no_accounting = accounting == ACCOUNTING_NONE
    if min_job_age < PLUGIN_SACCT_FALLBACK_FACTOR * init and sacct_on_path:
        if not no_accounting:
            return None  # the plugin asks sacct, which has a database to answer from
        return True, (
            f"{age} is below 3 x slurm-init-seconds-before-status-checks ({init} s), so "
            "Snakemake's SLURM executor asks job states with sacct instead of squeue, and "
            f"this cluster has no accounting database (AccountingStorageType = "
            f"{ACCOUNTING_NONE}): the run would wait for ever after its first job. Ask the "
            f"cluster's administrators for MinJobAge >= {PLUGIN_LONGEST_STATUS_WAIT_S} "
            "(slurm.conf), or run without the SLURM executor: profiles/slurm-srun "
            "(docs/cluster.md, Job states)"
        )
    if 0 < min_job_age < PLUGIN_LONGEST_STATUS_WAIT_S:
        what = (
            "drop slurm-status-command squeue: this cluster has an accounting database, "
            "which sacct (the default) asks"
            if accounting is not None and not no_accounting
            else f"ask the cluster's administrators for MinJobAge >= "
            f"{PLUGIN_LONGEST_STATUS_WAIT_S} (slurm.conf), or use profiles/slurm-srun"
        )
        return False, (
            f"warning: {age}: squeue shows a finished job for {min_job_age} s only, and "
            "Snakemake's SLURM executor waits up to "
            f"{PLUGIN_LONGEST_STATUS_WAIT_S} s between its status queries while no job "
            "ends; a job whose end it misses stays 'running' and the run never ends "
            f"(stop it with Ctrl-C and run it again). To be safe {what} "
            "(docs/cluster.md, Job states)"
        )
    return None


def start_check(
    executor: str | None, status_command: str | None, init_seconds: int | None
) -> tuple[bool, str] | None:
    """The run's start check (Snakefile ``onstart``): one ``scontrol show config``, then
    ``status_command_problem`` (stop) and ``squeue_problem`` (stop or warn). None when
    nothing is wrong or the controller cannot be asked."""
    if executor != "slurm" or status_command not in ("sacct", "squeue"):
        return None
    text = show_config()
    if text is None:
        return None
    accounting = parse_accounting_storage(text)
    min_job_age = parse_min_job_age(text)
    sacct_on_path = shutil.which("sacct") is not None  # seam: PATH, as the plugin asks it
    problem = status_command_problem(executor, status_command, accounting)
    if problem:
        # The advice is squeue: say at once if this cluster's MinJobAge rules it out too.
        instead = squeue_problem(
            executor, "squeue", accounting, min_job_age, init_seconds, sacct_on_path
        )
        if instead and instead[0]:
            problem += f". But squeue will not do here either: {instead[1]}"
        return True, problem
    return squeue_problem(
        executor, status_command, accounting, min_job_age, init_seconds, sacct_on_path
    )
