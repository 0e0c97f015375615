"""crypto_lakehouse: Binance historical market data to Parquet, as a Snakemake pipeline.

All logic lives in this package; the Snakemake rules only wire files together and the
scripts in ``scripts/`` are thin wrappers that call one function each.
"""

__version__ = "0.1.0"
