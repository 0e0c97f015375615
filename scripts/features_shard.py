"""Rule `features_shard`: crypto_lakehouse.jobs.run_features_rule for each symbol of one shard
(crypto_lakehouse.shards.for_each_symbol).

Usage (by the rule's shell command): python scripts/features_shard.py JOB_JSON LOG_FILE
"""

import crypto_lakehouse.job_start  # noqa: F401 (first: Ctrl-C while importing is one line)

# isort: split
from crypto_lakehouse.features.allocator import keep_freed_memory
from crypto_lakehouse.jobs import run_features_rule
from crypto_lakehouse.shards import for_each_symbol
from crypto_lakehouse.smk import run_job

# This process only runs feature jobs: let it reuse the memory it frees (allocator.py).
keep_freed_memory()
run_job(for_each_symbol(run_features_rule))
