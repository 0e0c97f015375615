"""Rule `resample_symbol`: calls crypto_lakehouse.jobs.run_resample_rule.

Usage (by the rule's shell command): python scripts/resample_symbol.py JOB_JSON LOG_FILE
"""

from crypto_lakehouse.jobs import run_resample_rule
from crypto_lakehouse.smk import run_job

run_job(run_resample_rule)
