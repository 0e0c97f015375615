"""Snakemake wrapper of rule `gen_kline_symbol`: calls crypto_lakehouse.generate.run_gen_kline
(through crypto_lakehouse.jobs: contract size, skip when inputs are unchanged)."""

from crypto_lakehouse.jobs import run_gen_kline_rule
from crypto_lakehouse.smk import run_rule

run_rule(snakemake, run_gen_kline_rule)  # noqa: F821 (snakemake is injected by the script: directive)
