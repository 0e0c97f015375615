"""Rule `aws_parse_funding`: calls crypto_lakehouse.parse.funding.run_parse_funding.

Usage (by the rule's shell command): python scripts/aws_parse_funding.py JOB_JSON LOG_FILE
"""

from crypto_lakehouse.parse.funding import run_parse_funding
from crypto_lakehouse.smk import run_job

run_job(run_parse_funding)
