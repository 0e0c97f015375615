"""Rule `aws_download_shard`: crypto_lakehouse.archive.sync.run_sync for each symbol of one shard
(crypto_lakehouse.shards.for_each_symbol).

Usage (by the rule's shell command): python scripts/aws_download_shard.py JOB_JSON LOG_FILE
"""

from crypto_lakehouse.archive.sync import run_sync
from crypto_lakehouse.shards import for_each_symbol
from crypto_lakehouse.smk import run_job

run_job(for_each_symbol(run_sync))
