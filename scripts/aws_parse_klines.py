"""Snakemake wrapper of rule `aws_parse_klines`: calls crypto_lakehouse.parse.klines.run_parse_klines."""

from crypto_lakehouse.parse.klines import run_parse_klines

from crypto_lakehouse.smk import run_rule

run_rule(snakemake, run_parse_klines)  # noqa: F821 (snakemake is injected by the script: directive)
