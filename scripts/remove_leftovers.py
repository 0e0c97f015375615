"""Rule `remove_leftovers`: calls crypto_lakehouse.leftovers.remove_leftovers (the derived
files a configuration change left: features disabled, another base interval).

Usage (by the rule's shell command): python scripts/remove_leftovers.py JOB_JSON LOG_FILE
"""

import crypto_lakehouse.job_start  # noqa: F401 (first: Ctrl-C while importing is one line)

# isort: split
from crypto_lakehouse.leftovers import remove_leftovers
from crypto_lakehouse.smk import run_job

run_job(remove_leftovers, uses_pandas=False)
