"""Glue between a Snakemake ``script:`` and a package entry point.

Each ``scripts/<rule>.py`` is two lines: it hands its ``snakemake`` object and one entry point
to :func:`run_rule`, which sets up logging and calls the entry point with keyword arguments
built from the rule's named params, inputs and outputs. Scripts never read the config.
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any, Callable

from crypto_lakehouse.logs import configure_from_snakemake

# Params that exist only so that a changed value reruns the job; never passed on.
TRIGGER_PARAMS = ("digest", "refresh")


def stats_path_for(report_path: str | Path) -> str:
    """``lakehouse/reports/<stage>/…`` → ``lakehouse/stats/<stage>/…`` (run figures)."""
    p = Path(report_path)
    parts = list(p.parts)
    idx = len(parts) - 1 - parts[::-1].index("reports")
    parts[idx] = "stats"
    return str(Path(*parts))


def _named(namedlist) -> dict[str, Any]:
    return {k: v for k, v in namedlist.items()}


def build_kwargs(smk, func: Callable) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    params = _named(smk.params)
    # A params entry called "args" holds a dict of keyword arguments (built in common.smk).
    kwargs.update(params.pop("args", {}) or {})
    for trigger in TRIGGER_PARAMS:  # only there to make Snakemake rerun the job
        params.pop(trigger, None)
    for source in (params, _named(smk.input), _named(smk.output)):
        for key, value in source.items():
            if key in kwargs:
                raise TypeError(f"argument {key!r} given twice to {func.__name__}")
            kwargs[key] = value
    accepted = inspect.signature(func).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in accepted.values())
    wants_stats = "stats_path" in accepted or takes_any
    if wants_stats and "stats_path" not in kwargs and "report_path" in kwargs:
        kwargs["stats_path"] = stats_path_for(kwargs["report_path"])
    return kwargs


def run_rule(smk, func: Callable) -> Any:
    configure_from_snakemake(smk)
    kwargs = build_kwargs(smk, func)
    logging.getLogger("crypto_lakehouse").info(
        "rule %s: %s(%s)", smk.rule, func.__name__, ", ".join(sorted(kwargs))
    )
    return func(**kwargs)
