"""Rule `aws_parse_funding`: crypto_lakehouse.parse.funding.run_parse_funding for each symbol of one shard
(crypto_lakehouse.shards.for_each_symbol), in one commit group (io.deferred_dir_syncs).

Usage (by the rule's shell command): python scripts/aws_parse_funding.py JOB_JSON LOG_FILE
"""

import crypto_lakehouse.job_start  # noqa: F401 (first: Ctrl-C while importing is one line)

# isort: split
from crypto_lakehouse.io import with_deferred_dir_syncs
from crypto_lakehouse.parse.funding import run_parse_funding
from crypto_lakehouse.shards import for_each_symbol
from crypto_lakehouse.smk import run_job

# Folder fsyncs once per folder before each record, not once per file (io.deferred_dir_syncs).
run_job(with_deferred_dir_syncs(for_each_symbol(run_parse_funding)))
