"""Snakemake wrapper of rule `api_download_klines`: calls crypto_lakehouse.rest.klines.run_api_klines."""

from crypto_lakehouse.rest.klines import run_api_klines

from crypto_lakehouse.smk import run_rule

run_rule(snakemake, run_api_klines)  # noqa: F821 (snakemake is injected by the script: directive)
