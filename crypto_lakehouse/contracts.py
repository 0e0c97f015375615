"""COIN-M contract sizes for the VWAP fix (quirk Q3)."""

from __future__ import annotations

from crypto_lakehouse.io import read_json


class MissingContractSize(LookupError):
    pass


def contract_size_for(exchange_info_path, symbol: str, override: float | None = None) -> float:
    """USD per contract of a COIN-M symbol: the config override, else exchangeInfo.

    Delisted symbols are absent from exchangeInfo; they need ``contract_sizes`` in the config.
    """
    if override is not None:
        return float(override)
    info = read_json(exchange_info_path, default={}) if exchange_info_path else {}
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
