"""Rule `summarize`: calls crypto_lakehouse.summary.run_summary (the reports are the stage's
shard reports of the trade type).

Usage (by the rule's shell command): python scripts/summarize.py JOB_JSON LOG_FILE
"""

from crypto_lakehouse.smk import run_job
from crypto_lakehouse.summary import run_summary

run_job(run_summary)
