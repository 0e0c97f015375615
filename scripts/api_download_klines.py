"""Rule `api_download_klines`: calls crypto_lakehouse.rest.klines.run_api_klines.

Usage (by the rule's shell command): python scripts/api_download_klines.py JOB_JSON LOG_FILE
"""

from crypto_lakehouse.rest.klines import run_api_klines
from crypto_lakehouse.smk import run_job

run_job(run_api_klines)
