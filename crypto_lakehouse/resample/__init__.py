"""The ``resample`` stage: gap-filled 1m segments to coarser, offset windows (legacy §9)."""

from crypto_lakehouse.resample.job import run_resample
from crypto_lakehouse.resample.targets import validate_aggregations, validate_targets

__all__ = ["run_resample", "validate_aggregations", "validate_targets"]
