"""Rule `aws_download_symbol`: calls crypto_lakehouse.archive.sync.run_sync.

Usage (by the rule's shell command): python scripts/aws_download_symbol.py JOB_JSON LOG_FILE
"""

from crypto_lakehouse.archive.sync import run_sync
from crypto_lakehouse.smk import run_job

run_job(run_sync)
