"""Rule `aws_download_shard`: crypto_lakehouse.archive.sync.run_sync_shard (every symbol of one
shard on one event loop, sharing the job's requests in flight).

Usage (by the rule's shell command): python scripts/aws_download_shard.py JOB_JSON LOG_FILE
"""

import crypto_lakehouse.job_start  # noqa: F401 (first: Ctrl-C while importing is one line)

# isort: split
from crypto_lakehouse.archive.sync import run_sync_shard
from crypto_lakehouse.smk import run_job

run_job(run_sync_shard)
