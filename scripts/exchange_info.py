"""Rule `exchange_info`: calls crypto_lakehouse.rest.exchange_info.run_exchange_infos (every
trade type of the run in one job).

Usage (by the rule's shell command): python scripts/exchange_info.py JOB_JSON LOG_FILE
"""

import crypto_lakehouse.job_start  # noqa: F401 (first: Ctrl-C while importing is one line)

# isort: split
from crypto_lakehouse.rest.exchange_info import run_exchange_infos
from crypto_lakehouse.smk import run_job

run_job(run_exchange_infos)
