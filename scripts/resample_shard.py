"""Rule `resample_shard`: crypto_lakehouse.jobs.run_resample_rule for each symbol of one shard
(crypto_lakehouse.shards.for_each_symbol).

Usage (by the rule's shell command): python scripts/resample_shard.py JOB_JSON LOG_FILE
"""

from crypto_lakehouse.jobs import run_resample_rule
from crypto_lakehouse.shards import for_each_symbol
from crypto_lakehouse.smk import run_job

run_job(for_each_symbol(run_resample_rule), uses_pandas=False)
