"""crypto_lakehouse: Binance historical market data to Parquet, as a Snakemake pipeline.

All logic lives in this package; the Snakemake rules only wire files together and the
scripts in ``scripts/`` are thin wrappers that call one function each.
"""

__version__ = "0.1.0"


# The loading API, imported on first use so that pipeline jobs (which import submodules of
# this package) never pay for pandas, polars or DuckDB.
_LAZY = {
    "load_klines",
    "load_features",
    "load_dataset",
    "iter_dataset",
    "duckdb_connect",
    "StaleFeaturesWarning",
    "StaleFeaturesError",
    "StaleDataWarning",
    "StaleDataError",
    "LegacyResampledWarning",
    "LegacyResampledError",
    "LegacyUnownedWarning",
    "LegacyUnownedError",
}


def __getattr__(name):
    if name in _LAZY:
        from crypto_lakehouse import loading

        return getattr(loading, name)
    raise AttributeError(f"module 'crypto_lakehouse' has no attribute {name!r}")
