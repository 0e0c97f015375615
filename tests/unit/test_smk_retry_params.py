"""smk.retry_with_fresh_params: a job Snakemake retries (``--retries``) evaluates its params
again, so a params function of the resources (the srun launcher's ``--time`` and ``--mem``,
``job_python`` in rules/common.smk) sees the retry's resources, not the first attempt's."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.workflow.workflow_helpers import REPO

# A rule whose runtime doubles with the attempt (as sizing.retry_factor does), passed to the
# job through a params function of the resources; the first attempt fails.
SNAKEFILE = textwrap.dedent(
    """
    from crypto_lakehouse.smk import retry_with_fresh_params

    if config.get("patch"):
        retry_with_fresh_params()


    rule job:
        output:
            "out.txt",
        resources:
            runtime=lambda wildcards, attempt: 11 * attempt,
        params:
            time=lambda wildcards, resources: f"--time={resources.runtime}",
        shell:
            "echo {params.time} >> asked.txt; test -e asked_once || "
            "{{ touch asked_once; exit 1; }}; touch {output}"
    """
)


def _run(tmp_path, patch: bool) -> list[str]:
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "1", "--retries", "1",
         "--config", f"patch={int(patch)}"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "HOME": str(tmp_path)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return (tmp_path / "asked.txt").read_text().split()


def test_a_retried_job_passes_its_new_resources_through_params(tmp_path):
    assert _run(tmp_path, patch=True) == ["--time=11", "--time=22"]


def test_without_it_snakemake_keeps_the_first_attempts_params(tmp_path):
    """What the patch is for (Snakemake 9.27): if this fails, Snakemake evaluates a
    retried job's params again itself and the patch can go."""
    assert _run(tmp_path, patch=False) == ["--time=11", "--time=11"]


def test_unknown_snakemake_internals_change_nothing(monkeypatch):
    import snakemake.jobs as jobs

    from crypto_lakehouse.smk import retry_with_fresh_params

    monkeypatch.delattr(jobs, "Job")
    assert retry_with_fresh_params() is False
