"""Snakemake wrapper of rule `api_download_funding`: calls crypto_lakehouse.rest.funding.run_api_funding."""

from crypto_lakehouse.rest.funding import run_api_funding

from crypto_lakehouse.smk import run_rule

run_rule(snakemake, run_api_funding)  # noqa: F821 (snakemake is injected by the script: directive)
