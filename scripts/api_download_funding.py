"""Rule `api_download_funding`: calls crypto_lakehouse.rest.funding.run_api_funding.

Usage (by the rule's shell command): python scripts/api_download_funding.py JOB_JSON LOG_FILE
"""

from crypto_lakehouse.rest.funding import run_api_funding
from crypto_lakehouse.smk import run_job

run_job(run_api_funding)
