"""Binance REST side of the pipeline: rate-limited client, kline day fill, funding history.

- ``limiter``: one thread-safe budget per API host (weight per window, funding requests).
- ``client``: GET with weight reservation, 429/418/403/5xx handling and a circuit breaker.
- ``exchange_info``: the once-per-run exchangeInfo summary (rate limits, symbol facts).
- ``klines``: entry point ``run_api_klines`` (missing and recent days to ``api_data``).
- ``funding``: entry point ``run_api_funding`` (funding history after the archive).
"""

from __future__ import annotations

# REST path prefix of each trade type (binance-facts §5).
API_PREFIX = {"spot": "/api/v3", "um_futures": "/fapi/v1", "cm_futures": "/dapi/v1"}

# Cheapest request of every market (weight 1, no parameters): the pre-run reachability check.
PING_ENDPOINT = "/ping"

# Largest ``limit`` the klines endpoint accepts (binance-facts §5.1).
KLINES_MAX_LIMIT = {"spot": 1000, "um_futures": 1500, "cm_futures": 1500}

# Weight limit per minute when exchangeInfo is unavailable (binance-facts §5.3).
DEFAULT_WEIGHT_LIMIT = {"spot": 6000, "um_futures": 2400, "cm_futures": 2400}

# um ``fundingRate`` has its own pool: 500 requests per 5 minutes per IP (binance-facts §5.2).
FUNDING_REQUEST_LIMIT = 500
FUNDING_WINDOW_MINUTES = 5

# Server time (``/time``): weight 1 in every market (binance-facts §5). A REST shard job asks
# it once (``RestClient.start_time_ms``); ``crypto-lakehouse plan`` counts it per job.
SERVER_TIME_WEIGHT = 1

# exchangeInfo weight per market (binance-facts §5).
EXCHANGE_INFO_WEIGHT = {"spot": 20, "um_futures": 1, "cm_futures": 1}

# Binance error codes that mean "this symbol does not exist / is not trading" (§6.5).
INVALID_SYMBOL_CODES = (-1121, -1122)


def kline_weight(trade_type: str, limit: int) -> int:
    """Request weight of one klines call with this ``limit`` (binance-facts §5.1)."""
    if trade_type == "spot":
        return 2
    if limit < 100:
        return 1
    if limit < 500:
        return 2
    if limit <= 1000:
        return 5
    return 10
