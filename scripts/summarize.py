"""Rule `summarize`: calls crypto_lakehouse.summary.run_summaries (a stage's summary of every
trade type; the reports are the stage's shard reports of each trade type).

Usage (by the rule's shell command): python scripts/summarize.py JOB_JSON LOG_FILE
"""

import crypto_lakehouse.job_start  # noqa: F401 (first: Ctrl-C while importing is one line)

# isort: split
from crypto_lakehouse.smk import run_job
from crypto_lakehouse.summary import run_summaries

run_job(run_summaries)
