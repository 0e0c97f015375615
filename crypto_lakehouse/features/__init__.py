"""The ``features`` stage: TA-Lib indicators and microstructure per candle file."""

from crypto_lakehouse.features.job import run_features
from crypto_lakehouse.features.spec import (
    FeatureConfigError,
    parse_indicators,
    validate_feature_config,
)

__all__ = ["FeatureConfigError", "parse_indicators", "run_features", "validate_feature_config"]
