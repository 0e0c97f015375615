"""Rule `aws_parse_ticks`: calls crypto_lakehouse.parse.ticks.run_parse_ticks.

Usage (by the rule's shell command): python scripts/aws_parse_ticks.py JOB_JSON LOG_FILE
"""

from crypto_lakehouse.parse.ticks import run_parse_ticks
from crypto_lakehouse.smk import run_job

run_job(run_parse_ticks)
