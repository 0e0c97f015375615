"""The ``resample`` stage: gap-filled 1m segments to coarser, offset windows (legacy §9)."""

from crypto_lakehouse.resample.targets import validate_aggregations, validate_targets

__all__ = ["run_resample", "validate_aggregations", "validate_targets"]


def __getattr__(name: str):
    # run_resample on first use: the Snakefile checks the targets at load (plan.check_config)
    # and must not pay the job's pyarrow/numpy imports (~0.16 s per Snakemake start).
    if name == "run_resample":
        from crypto_lakehouse.resample.job import run_resample

        return run_resample
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
