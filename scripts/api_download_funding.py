"""Rule `api_download_funding`: crypto_lakehouse.rest.funding.run_api_funding for each symbol of one shard
(crypto_lakehouse.rest.host.for_each_symbol_on_host).

Usage (by the rule's shell command): python scripts/api_download_funding.py JOB_JSON LOG_FILE
"""

from crypto_lakehouse.rest.funding import run_api_funding
from crypto_lakehouse.rest.host import for_each_symbol_on_host
from crypto_lakehouse.smk import run_job

run_job(for_each_symbol_on_host(run_api_funding))
