"""Snakemake wrapper of rule `aws_parse_funding`: calls crypto_lakehouse.parse.funding.run_parse_funding."""

from crypto_lakehouse.parse.funding import run_parse_funding

from crypto_lakehouse.smk import run_rule

run_rule(snakemake, run_parse_funding)  # noqa: F821 (snakemake is injected by the script: directive)
