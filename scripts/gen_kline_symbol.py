"""Rule `gen_kline_symbol`: calls crypto_lakehouse.jobs.run_gen_kline_rule.

Usage (by the rule's shell command): python scripts/gen_kline_symbol.py JOB_JSON LOG_FILE
"""

from crypto_lakehouse.jobs import run_gen_kline_rule
from crypto_lakehouse.smk import run_job

run_job(run_gen_kline_rule)
