"""Snakemake wrapper of rule `exchange_info`: calls crypto_lakehouse.rest.exchange_info.run_exchange_info."""

from crypto_lakehouse.rest.exchange_info import run_exchange_info

from crypto_lakehouse.smk import run_rule

run_rule(snakemake, run_exchange_info)  # noqa: F821 (snakemake is injected by the script: directive)
