"""Snakemake wrapper of rule `aws_download_symbol`: calls crypto_lakehouse.archive.sync.run_sync."""

from crypto_lakehouse.archive.sync import run_sync

from crypto_lakehouse.smk import run_rule

run_rule(snakemake, run_sync)  # noqa: F821 (snakemake is injected by the script: directive)
