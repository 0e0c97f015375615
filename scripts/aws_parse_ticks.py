"""Rule `aws_parse_ticks`: crypto_lakehouse.parse.ticks.run_parse_ticks for each symbol of one
shard (crypto_lakehouse.shards.for_each_symbol).

Usage (by the rule's shell command): python scripts/aws_parse_ticks.py JOB_JSON LOG_FILE
"""

import crypto_lakehouse.job_start  # noqa: F401 (first: Ctrl-C while importing is one line)

# isort: split
from crypto_lakehouse.parse.ticks import run_parse_ticks
from crypto_lakehouse.shards import for_each_symbol
from crypto_lakehouse.smk import run_job

run_job(for_each_symbol(run_parse_ticks))
