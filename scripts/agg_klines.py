"""Rule `agg_klines_shard`: crypto_lakehouse.generate.agg_candles.run_agg_klines for each
symbol of one shard (crypto_lakehouse.shards.for_each_symbol).

Usage (by the rule's shell command): python scripts/agg_klines.py JOB_JSON LOG_FILE
"""

import crypto_lakehouse.job_start  # noqa: F401 (first: Ctrl-C while importing is one line)

# isort: split
from crypto_lakehouse.generate.agg_candles import run_agg_klines
from crypto_lakehouse.shards import for_each_symbol
from crypto_lakehouse.smk import run_job

run_job(for_each_symbol(run_agg_klines))
