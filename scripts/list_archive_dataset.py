"""Rule `list_archive_dataset`: calls crypto_lakehouse.archive.listing.run_listing (one
dataset beyond klines and funding, `datasets` target), in one commit group (io.deferred_dir_syncs).

Usage (by the rule's shell command): python scripts/list_archive_dataset.py JOB_JSON LOG_FILE
"""

import crypto_lakehouse.job_start  # noqa: F401 (first: Ctrl-C while importing is one line)

# isort: split
from crypto_lakehouse.archive.listing import run_listing
from crypto_lakehouse.io import with_deferred_dir_syncs
from crypto_lakehouse.smk import run_job

# Folder fsyncs once per folder before each record, not once per file (io.deferred_dir_syncs).
run_job(with_deferred_dir_syncs(run_listing))
