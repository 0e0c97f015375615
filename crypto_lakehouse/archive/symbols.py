"""Symbol properties inferred from archive directory names, and the legacy filters.

Legacy BHDS never calls exchangeInfo: symbols come from the archive listing, their quote,
base and contract type are inferred from the name (legacy-behaviour §2.2) and the download
scripts keep (§2.3):

- spot: quote USDT, no stablecoin base, no leveraged token (JUP and SYRUP are *not*
  leveraged tokens: quirk Q15 fixed);
- um_futures: quote USDT and PERPETUAL; stablecoin bases are kept (Q16 kept);
- cm_futures: PERPETUAL, i.e. ``…_PERP``; a name with two ``_`` is skipped with a warning
  instead of crashing (Q17 fixed).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from crypto_lakehouse import layout

log = logging.getLogger(__name__)

SPOT_QUOTES = ("USDT", "USDC", "BTC", "ETH")
UM_QUOTES = ("USDT", "USDC", "BTC")
STABLECOINS = frozenset(
    {"BKRW", "USDC", "USDP", "TUSD", "BUSD", "FDUSD", "DAI", "EUR", "GBP", "USBP", "SUSD",
     "PAXG", "AEUR", "USDS", "USDSB"}
)  # fmt: skip
LEVERAGE_SUFFIXES = ("UP", "DOWN", "BULL", "BEAR")
# Real coins whose names merely end like a leveraged token (Gen 3's LEVERAGE_EXCLUDES).
LEVERAGE_EXCLUDES = frozenset({"JUP", "SYRUP"})

PERPETUAL = "PERPETUAL"
DELIVERY = "DELIVERY"


@dataclass(frozen=True)
class SymbolInfo:
    name: str
    base: str
    quote: str
    contract_type: str | None = None  # futures only
    is_leverage: bool = False  # spot only


class UninferableSymbol(ValueError):
    """The name does not have a shape the market uses; the message says why."""


def _split_quote(name: str, quotes: tuple[str, ...]) -> tuple[str, str]:
    for quote in quotes:
        if name.endswith(quote) and len(name) > len(quote):
            return name[: -len(quote)], quote
    raise UninferableSymbol(f"no known quote ({', '.join(quotes)})")


def is_leveraged_base(base: str) -> bool:
    return base.endswith(LEVERAGE_SUFFIXES) and base not in LEVERAGE_EXCLUDES


def infer_spot(name: str) -> SymbolInfo:
    base, quote = _split_quote(name, SPOT_QUOTES)
    return SymbolInfo(name, base, quote, is_leverage=is_leveraged_base(base))


def infer_um(name: str) -> SymbolInfo:
    if "_" in name:
        underlying, contract_type = name.split("_", 1)[0], DELIVERY
    else:
        underlying, contract_type = name, PERPETUAL
    base, quote = _split_quote(underlying, UM_QUOTES)
    return SymbolInfo(name, base, quote, contract_type=contract_type)


def infer_cm(name: str) -> SymbolInfo:
    parts = name.split("_")
    if len(parts) == 1:
        raise UninferableSymbol("COIN-M names have the form <UNDERLYING>_<PERP|YYMMDD>")
    if len(parts) > 2:
        raise UninferableSymbol(f"{len(parts) - 1} underscores (expected one)")
    underlying, suffix = parts
    if suffix == "PERP":
        contract_type = PERPETUAL
    elif suffix.isdigit():
        contract_type = DELIVERY
    else:
        raise UninferableSymbol(f"unknown contract suffix {suffix!r}")
    if len(underlying) <= 3:
        raise UninferableSymbol(f"underlying {underlying!r} too short for a USD quote")
    return SymbolInfo(name, underlying[:-3], "USD", contract_type=contract_type)


def _spot_reason(name: str) -> str | None:
    info = infer_spot(name)
    if info.quote != "USDT":
        return f"quote {info.quote} is not USDT"
    if info.base in STABLECOINS:
        return f"stablecoin base {info.base}"
    if info.is_leverage:
        return f"leveraged token base {info.base}"
    return None


def _um_reason(name: str) -> str | None:
    info = infer_um(name)
    if info.contract_type != PERPETUAL:
        return "delivery contract"
    if info.quote != "USDT":
        return f"quote {info.quote} is not USDT"
    return None


def _cm_reason(name: str) -> str | None:
    info = infer_cm(name)
    if info.contract_type != PERPETUAL:
        return "delivery contract"
    return None


_REASONS = {"spot": _spot_reason, "um_futures": _um_reason, "cm_futures": _cm_reason}


def filter_symbols(trade_type: str, names) -> tuple[list[str], list[dict[str, str]]]:
    """Apply the legacy download filter of ``trade_type`` to valid symbol names.

    Returns ``(kept, filtered_out)``: kept names sorted, and ``{"name", "reason"}`` records
    sorted by name for every dropped one. Names the market cannot interpret are dropped
    with their reason; the cm two-underscore case is also logged as a warning (Q17).
    """
    try:
        reason_of = _REASONS[trade_type]
    except KeyError:
        raise ValueError(
            f"unknown trade type {trade_type!r}; expected {layout.TRADE_TYPES}"
        ) from None
    kept: list[str] = []
    dropped: list[dict[str, str]] = []
    for name in sorted(set(names)):
        try:
            reason = reason_of(name)
        except UninferableSymbol as exc:
            reason = f"cannot infer symbol: {exc}"
            if trade_type == "cm_futures" and name.count("_") > 1:
                log.warning("%s %s skipped: %s (legacy crashed here, Q17)", trade_type, name, exc)
        if reason is None:
            kept.append(name)
        else:
            dropped.append({"name": name, "reason": reason})
    return kept, dropped


def validate_names(names) -> tuple[list[str], list[dict[str, str]]]:
    """Split names into valid symbol names and refused ones (they become path components)."""
    valid: list[str] = []
    refused: list[dict[str, str]] = []
    for name in sorted(set(names)):
        if layout.is_valid_symbol(name):
            valid.append(name)
        else:
            refused.append({"name": name, "reason": "invalid symbol name (expected [A-Z0-9_]+)"})
    return valid, refused
