"""Rule `aws_download_shard`: crypto_lakehouse.archive.sync.run_sync_shard (every symbol of one
shard on one event loop, sharing the job's requests in flight),
in one commit group (io.deferred_dir_syncs).

Usage (by the rule's shell command): python scripts/aws_download_shard.py JOB_JSON LOG_FILE
"""

import crypto_lakehouse.job_start  # noqa: F401 (first: Ctrl-C while importing is one line)

# isort: split
from crypto_lakehouse.archive.sync import run_sync_shard
from crypto_lakehouse.io import with_deferred_dir_syncs
from crypto_lakehouse.smk import run_job

# Folder fsyncs once per folder before each record, not once per file (io.deferred_dir_syncs).
run_job(with_deferred_dir_syncs(run_sync_shard))
