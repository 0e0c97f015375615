"""Rule `list_archive_dataset`: calls crypto_lakehouse.archive.listing.run_listing (one
dataset beyond klines and funding, `datasets` target).

Usage (by the rule's shell command): python scripts/list_archive_dataset.py JOB_JSON LOG_FILE
"""

import crypto_lakehouse.job_start  # noqa: F401 (first: Ctrl-C while importing is one line)

# isort: split
from crypto_lakehouse.archive.listing import run_listing
from crypto_lakehouse.smk import run_job

run_job(run_listing)
