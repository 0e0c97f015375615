"""COIN-M contract sizes for the VWAP fix (quirk Q3), from the exchangeInfo summaries."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


class MissingContractSize(LookupError):
    pass


def contract_size_for(exchange_info_path, symbol: str, override: float | None = None) -> float:
    """USD per contract of a COIN-M symbol: the config override, else exchangeInfo.

    Delisted symbols are absent from exchangeInfo; they need ``contract_sizes`` in the config.
    """
    if override is not None:
        return float(override)
    info = read_exchange_info(exchange_info_path) if exchange_info_path else {}
    if info is None:
        raise MissingContractSize(
            f"{symbol}: no contract size: {exchange_info_path} is missing or was unreadable "
            f"(then removed); the next run asks again, or set it in the config key "
            f"contract_sizes.{symbol}"
        )
    if info.get("error"):
        raise MissingContractSize(
            f"{symbol}: no contract size: this run's exchangeInfo request failed "
            f"({info['error']}; {exchange_info_path}); the next run asks again, or set it in "
            f"the config key contract_sizes.{symbol}"
        )
    entry = (info.get("symbols") or {}).get(symbol) or {}
    size = entry.get("contractSize", entry.get("contract_size"))
    if size is None:
        raise MissingContractSize(
            f"{symbol}: no contractSize in {exchange_info_path} (delisted?); "
            f"set it in the config key contract_sizes.{symbol}"
        )
    return float(size)


def read_exchange_info(exchange_info_path) -> dict | None:
    """An exchangeInfo summary (``exchange_info`` job) a job was given; None when missing,
    or when it cannot be read (torn by a crash with ``storage.fsync: false``, zeroed by a
    disk fault): then it is removed, with a warning naming it, and the next job that needs
    it has it fetched again (Snakemake runs the job of a missing input). Before, every run
    failed on it until the next end date."""
    from crypto_lakehouse import storage
    from crypto_lakehouse.shards import DamagedInput, read_report

    try:
        return read_report(exchange_info_path, "exchange_info")
    except DamagedInput as exc:
        if not exc.missing:
            storage.delete(exc.path)
            log.warning("%s: removed; asked for again by the next run that needs it", exc)
        return None
