"""Snakemake wrapper of rule `summarize`: calls crypto_lakehouse.summary.run_summary."""

from crypto_lakehouse.smk import run_rule
from crypto_lakehouse.summary import run_summary

run_rule(snakemake, run_summary)  # noqa: F821 (snakemake is injected by the script: directive)
