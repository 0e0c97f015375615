"""The ``features`` stage: TA-Lib indicators and microstructure per candle file.

``run_features`` is imported on first use: the workflow's main process imports
``features.spec`` to check the config, and the job module would bring pandas with it
(~0.4 s of every Snakemake start)."""

from crypto_lakehouse.features.spec import (
    FeatureConfigError,
    parse_indicators,
    validate_feature_config,
)

__all__ = ["FeatureConfigError", "parse_indicators", "run_features", "validate_feature_config"]


def __getattr__(name: str):
    if name == "run_features":
        from crypto_lakehouse.features.job import run_features

        return run_features
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
