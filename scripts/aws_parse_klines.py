"""Rule `aws_parse_klines`: calls crypto_lakehouse.parse.klines.run_parse_klines.

Usage (by the rule's shell command): python scripts/aws_parse_klines.py JOB_JSON LOG_FILE
"""

from crypto_lakehouse.parse.klines import run_parse_klines
from crypto_lakehouse.smk import run_job

run_job(run_parse_klines)
