"""The srun launcher (``cluster.launcher: srun``) with the real srun of the one-node test
cluster, when SLURM ends the job from outside: the job's log says so in SLURM's words."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from crypto_lakehouse import remote
from tests.slurm.test_slurm_e2e import _slurm_is_up
from tests.unit.test_remote import FAKE_JOB, _job, submit_host  # noqa: F401 (fixture)

pytestmark = pytest.mark.slurm


def test_a_job_cancelled_by_scancel_says_so_in_its_log(submit_host, tmp_path):  # noqa: F811
    assert _slurm_is_up(), "no SLURM cluster: .ci/run starts one (bash .ci/start-slurm)"
    run_dir, _ = submit_host
    name = f"crypto_lakehouse-fake_job-{tmp_path.name}"  # this test's job only

    def cancel_when_running() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ids = subprocess.run(
                ["squeue", "-h", "-t", "R", "-n", name, "-o", "%i"],
                capture_output=True, text=True,
            ).stdout.split()  # fmt: skip
            if ids:
                time.sleep(1)  # the node's job is started and sleeping
                subprocess.run(["scancel", *ids], check=True)
                return
            time.sleep(0.2)

    canceller = threading.Thread(target=cancel_when_running)
    canceller.start()
    job = _job(run_dir, sleep_s=120)
    argv = [sys.executable, FAKE_JOB, json.dumps(job), f"{run_dir}/logs/x.log"]
    started = time.monotonic()
    status = remote.launch(argv, srun=["srun"], runtime_min=5, extra=[f"--job-name={name}"])
    canceller.join()
    assert status != 0 and time.monotonic() - started < 100
    last = (run_dir / "logs/x.log").read_text().splitlines()[-1]
    # "…; SLURM: slurmstepd-localhost: error: *** STEP 912.0 ON localhost CANCELLED AT …"
    assert "; SLURM: slurmstepd" in last and " CANCELLED AT " in last, last


def test_a_job_past_its_time_limit_says_so_in_its_log(submit_host, tmp_path):  # noqa: F811
    """SLURM's own time kill (not scancel): the launcher passes the rule's runtime as
    ``--time`` in minutes, SLURM's shortest limit is one minute, and slurmctld looks for jobs
    past their limit every 30 s (slurm 22.05), so the job ends 60 to 90 s after it started:
    it gets SIGTERM, and a job that dies on it (as Python does) needs no KillWait (30 s on
    the test cluster) before SIGKILL. The test cluster's OverTimeLimit is 0."""
    assert _slurm_is_up(), "no SLURM cluster: .ci/run starts one (bash .ci/start-slurm)"
    run_dir, _ = submit_host
    name = f"crypto_lakehouse-fake_job-{tmp_path.name}"
    job = _job(run_dir, sleep_s=300)
    argv = [sys.executable, FAKE_JOB, json.dumps(job), f"{run_dir}/logs/x.log"]
    started = time.monotonic()
    status = remote.launch(argv, srun=["srun"], runtime_min=1, extra=[f"--job-name={name}"])
    took = time.monotonic() - started
    assert status != 0 and 55 < took < 150, (status, took)
    lines = (run_dir / "logs/x.log").read_text().splitlines()
    # srun's relayed line, in SLURM's words: "slurmstepd-localhost: error: *** STEP 913.0 ON
    # localhost CANCELLED AT … DUE TO TIME LIMIT ***"
    assert any(ln.startswith("slurmstepd") and "DUE TO TIME LIMIT" in ln for ln in lines), lines
    # and the launcher's last line names the limit and where it came from.
    assert "SLURM: past its time limit (asked: --time=1 min, the rule's runtime" in lines[-1]
    # Nothing of the job came back: it was ended before it wrote its reports.
    assert not (run_dir / "reports/down").exists()
