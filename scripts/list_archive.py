"""Rule `list_archive`: calls crypto_lakehouse.archive.listing.run_listings (every kline and
funding listing of the run in one job), in one commit group (io.deferred_dir_syncs).

Usage (by the rule's shell command): python scripts/list_archive.py JOB_JSON LOG_FILE
"""

import crypto_lakehouse.job_start  # noqa: F401 (first: Ctrl-C while importing is one line)

# isort: split
from crypto_lakehouse.archive.listing import run_listings
from crypto_lakehouse.io import with_deferred_dir_syncs
from crypto_lakehouse.smk import run_job

# Folder fsyncs once per folder before each record, not once per file (io.deferred_dir_syncs).
run_job(with_deferred_dir_syncs(run_listings))
