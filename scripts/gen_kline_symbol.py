"""Snakemake wrapper of rule `gen_kline_symbol`: calls crypto_lakehouse.generate.run_gen_kline
(through the contract-size glue in crypto_lakehouse.contracts)."""

from crypto_lakehouse.contracts import run_gen_kline_rule
from crypto_lakehouse.smk import run_rule

run_rule(snakemake, run_gen_kline_rule)  # noqa: F821 (snakemake is injected by the script: directive)
