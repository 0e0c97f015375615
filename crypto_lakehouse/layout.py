"""The on-disk data layout: legacy BHDS paths plus the pipeline's own bookkeeping.

Everything that builds a path below ``data_dir`` lives here so that the rules, the scripts
and the tests agree on one layout. Legacy paths (``aws_data``, ``parsed_data``, ``api_data``,
``results_data``) are byte-for-byte the BHDS V1 layout; the pipeline's own records live under
``lakehouse/`` so that legacy readers globbing the legacy folders never see them.
"""

from __future__ import annotations

import re
from pathlib import Path

TRADE_TYPES = ("spot", "um_futures", "cm_futures")
FUTURES_TRADE_TYPES = ("um_futures", "cm_futures")

# Archive key prefix of each trade type (binance-facts §1.1).
MARKET_PREFIX = {
    "spot": "data/spot",
    "um_futures": "data/futures/um",
    "cm_futures": "data/futures/cm",
}

# Symbol names become path components: anything else is refused (issue 2, §4).
SYMBOL_RE = re.compile(r"^[A-Z0-9_]+$")


def is_valid_symbol(name: str) -> bool:
    return bool(SYMBOL_RE.match(name))


# ---------------------------------------------------------------- archive keys
def kline_dir_key(trade_type: str, symbol: str, interval: str, period: str = "daily") -> str:
    """Bucket prefix (with trailing slash) of one symbol's kline archives."""
    return f"{MARKET_PREFIX[trade_type]}/{period}/klines/{symbol}/{interval}/"


def kline_symbols_prefix(trade_type: str, period: str = "daily") -> str:
    return f"{MARKET_PREFIX[trade_type]}/{period}/klines/"


def funding_dir_key(trade_type: str, symbol: str) -> str:
    return f"{MARKET_PREFIX[trade_type]}/monthly/fundingRate/{symbol}/"


def funding_symbols_prefix(trade_type: str) -> str:
    return f"{MARKET_PREFIX[trade_type]}/monthly/fundingRate/"


def daily_kline_key(trade_type: str, symbol: str, interval: str, day: str) -> str:
    """``day`` is ``YYYY-MM-DD``."""
    return f"{kline_dir_key(trade_type, symbol, interval)}{symbol}-{interval}-{day}.zip"


def monthly_kline_key(trade_type: str, symbol: str, interval: str, month: str) -> str:
    """``month`` is ``YYYY-MM``."""
    return (
        f"{kline_dir_key(trade_type, symbol, interval, 'monthly')}{symbol}-{interval}-{month}.zip"
    )


def funding_key(trade_type: str, symbol: str, month: str) -> str:
    return f"{funding_dir_key(trade_type, symbol)}{symbol}-fundingRate-{month}.zip"


# ---------------------------------------------------------------- legacy data paths
def aws_path(data_dir: str | Path, key: str) -> Path:
    return Path(data_dir) / "aws_data" / key


def parsed_klines_dir(data_dir, trade_type, symbol, interval) -> Path:
    return Path(data_dir) / "parsed_data" / trade_type / "klines" / symbol / interval


def parsed_funding_path(data_dir, trade_type, symbol) -> Path:
    return Path(data_dir) / "parsed_data" / trade_type / "funding" / f"{symbol}.pqt"


def api_klines_dir(data_dir, trade_type, symbol, interval) -> Path:
    return Path(data_dir) / "api_data" / trade_type / "klines" / symbol / interval


def api_funding_path(data_dir, trade_type, symbol) -> Path:
    return Path(data_dir) / "api_data" / trade_type / "funding_rate" / f"{symbol}.pqt"


def results_klines_dir(data_dir, trade_type, interval) -> Path:
    return Path(data_dir) / "results_data" / trade_type / "klines" / interval


def resampled_dir(data_dir, trade_type, resample_interval, offset) -> Path:
    return (
        Path(data_dir)
        / "results_data"
        / trade_type
        / "resampled_klines"
        / resample_interval
        / offset
    )


def features_dir(data_dir, trade_type, interval) -> Path:
    """Features of the generated klines: one file per ``results_klines_dir`` file, same name."""
    return Path(data_dir) / "results_data" / trade_type / "features" / interval


def resampled_features_dir(data_dir, trade_type, resample_interval, offset) -> Path:
    """Features of the resampled klines: one file per ``resampled_dir`` file, same name."""
    return (
        Path(data_dir)
        / "results_data"
        / trade_type
        / "resampled_features"
        / resample_interval
        / offset
    )


# ---------------------------------------------------------------- pipeline records
def lakehouse_dir(data_dir) -> Path:
    return Path(data_dir) / "lakehouse"


def quarantine_path(data_dir, key: str) -> Path:
    """Where a permanently defective archive file (and its CHECKSUM) is moved."""
    return lakehouse_dir(data_dir) / "quarantine" / key


def state_path(data_dir, stage: str, trade_type: str, dataset: str, symbol: str) -> Path:
    """Private per-symbol state a stage keeps between runs (never a Snakemake output,
    because Snakemake deletes outputs before it reruns a job)."""
    return lakehouse_dir(data_dir) / "state" / stage / trade_type / dataset / f"{symbol}.json"


def quality_path(data_dir, trade_type, interval, symbol) -> Path:
    return lakehouse_dir(data_dir) / "quality" / trade_type / interval / f"{symbol}.pqt"


def provenance_path(data_dir, trade_type, interval, symbol) -> Path:
    return lakehouse_dir(data_dir) / "provenance" / trade_type / interval / f"{symbol}.pqt"
