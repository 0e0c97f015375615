"""Snakemake wrapper of rule `list_archive`: calls crypto_lakehouse.archive.listing.run_listing."""

from crypto_lakehouse.archive.listing import run_listing
from crypto_lakehouse.smk import run_rule

run_rule(snakemake, run_listing)  # noqa: F821 (snakemake is injected by the script: directive)
