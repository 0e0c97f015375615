"""Rule `api_download_shard`: crypto_lakehouse.rest.host.run_host_shard (the REST klines and
funding of one shard of symbols through one client of the host),
in one commit group (io.deferred_dir_syncs).

Usage (by the rule's shell command): python scripts/api_download_shard.py JOB_JSON LOG_FILE
"""

import crypto_lakehouse.job_start  # noqa: F401 (first: Ctrl-C while importing is one line)

# isort: split
from crypto_lakehouse.io import with_deferred_dir_syncs
from crypto_lakehouse.rest.host import run_host_shard
from crypto_lakehouse.smk import run_job

# Folder fsyncs once per folder before each record, not once per file (io.deferred_dir_syncs).
run_job(with_deferred_dir_syncs(run_host_shard), uses_pandas=False)
