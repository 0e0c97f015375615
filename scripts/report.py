"""Rule `report`: calls crypto_lakehouse.report.job.run_report.

Usage (by the rule's shell command): python scripts/report.py JOB_JSON LOG_FILE
"""

import crypto_lakehouse.job_start  # noqa: F401 (first: Ctrl-C while importing is one line)

# isort: split
from crypto_lakehouse.report.job import run_report
from crypto_lakehouse.smk import run_job

run_job(run_report)
