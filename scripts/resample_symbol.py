"""Snakemake wrapper of rule `resample_symbol`: calls crypto_lakehouse.resample.run_resample
(through crypto_lakehouse.jobs: skip when the generated klines are unchanged)."""

from crypto_lakehouse.jobs import run_resample_rule
from crypto_lakehouse.smk import run_rule

run_rule(snakemake, run_resample_rule)  # noqa: F821 (snakemake is injected by the script: directive)
