"""Rule `list_archive`: calls crypto_lakehouse.archive.listing.run_listings (every kline and
funding listing of the run in one job).

Usage (by the rule's shell command): python scripts/list_archive.py JOB_JSON LOG_FILE
"""

import crypto_lakehouse.job_start  # noqa: F401 (first: Ctrl-C while importing is one line)

# isort: split
from crypto_lakehouse.archive.listing import run_listings
from crypto_lakehouse.smk import run_job

run_job(run_listings)
