"""Logging set up once per job (the PyPSA ``configure_logging`` pattern)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(log_file: str | Path | None, level: int = logging.INFO) -> None:
    """Log to the rule's ``log:`` file and to stderr; route uncaught exceptions there too."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file))
    logging.basicConfig(level=level, format=FORMAT, handlers=handlers, force=True)

    def _excepthook(exc_type, exc, tb):
        logging.getLogger("crypto_lakehouse").error(
            "uncaught exception", exc_info=(exc_type, exc, tb)
        )

    sys.excepthook = _excepthook


def configure_from_snakemake(smk) -> None:
    """Call first thing in every ``scripts/*.py`` wrapper."""
    configure_logging(smk.log[0] if len(smk.log) else None)
