"""Snakemake wrapper of rule `resample_symbol`: calls crypto_lakehouse.resample.run_resample."""

from crypto_lakehouse.resample import run_resample

from crypto_lakehouse.smk import run_rule

run_rule(snakemake, run_resample)  # noqa: F821 (snakemake is injected by the script: directive)
