"""Rule `features_symbol`: calls crypto_lakehouse.features.run_features.

Usage (by the rule's shell command): python scripts/features_symbols.py JOB_JSON LOG_FILE
"""

from crypto_lakehouse.features import run_features
from crypto_lakehouse.smk import run_job

run_job(run_features)
