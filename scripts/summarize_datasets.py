"""Rule `summarize_datasets`: calls crypto_lakehouse.summary.run_dataset_summary (rows, days
and quarantined files per archive dataset of one trade type).

Usage (by the rule's shell command): python scripts/summarize_datasets.py JOB_JSON LOG_FILE
"""

import crypto_lakehouse.job_start  # noqa: F401 (first: Ctrl-C while importing is one line)

# isort: split
from crypto_lakehouse.smk import run_job
from crypto_lakehouse.summary import run_dataset_summary

run_job(run_dataset_summary)
