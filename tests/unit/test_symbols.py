"""Legacy symbol inference and download filters (legacy-behaviour §2.2-2.3, Q15-Q17)."""

import logging

import pytest

from crypto_lakehouse.archive.symbols import (
    filter_symbols,
    infer_cm,
    infer_spot,
    infer_um,
    validate_names,
)


def _kept(trade_type, name):
    kept, dropped = filter_symbols(trade_type, [name])
    return kept == [name], {d["name"]: d["reason"] for d in dropped}


@pytest.mark.parametrize(
    "trade_type, name, kept",
    [
        # spot: quote USDT, no stablecoin base, no leveraged token
        ("spot", "BTCUSDT", True),
        ("spot", "1000SHIBUSDT", True),
        ("spot", "USDCUSDT", False),  # stablecoin base
        ("spot", "FDUSDUSDT", False),
        ("spot", "PAXGUSDT", False),
        ("spot", "BTCUPUSDT", False),  # leveraged token
        ("spot", "ETHDOWNUSDT", False),
        ("spot", "BNBBULLUSDT", False),
        ("spot", "XRPBEARUSDT", False),
        ("spot", "JUPUSDT", True),  # JUP is a coin, not "J" + UP
        ("spot", "SYRUPUSDT", True),  # Q15 fixed: legacy dropped it
        ("spot", "ETHBTC", False),  # quote BTC
        ("spot", "BTCUSDC", False),  # quote USDC
        ("spot", "ETHBUSD", False),  # BUSD is no known spot quote -> not inferable
        ("spot", "USDT", False),  # nothing before the quote
        # um: USDT quote, PERPETUAL only, stablecoin bases kept (Q16)
        ("um_futures", "BTCUSDT", True),
        ("um_futures", "USDCUSDT", True),
        ("um_futures", "BTCUSDT_260925", False),  # delivery
        ("um_futures", "ICPUSDTSETTLED", False),  # no quote matches
        ("um_futures", "BTCUSDC", False),
        ("um_futures", "ETHBTC", False),
        ("um_futures", "BTCBUSD", False),
        ("um_futures", "BTCUPUSDT", True),  # no leveraged-token filter on futures
        # cm: _PERP only
        ("cm_futures", "BTCUSD_PERP", True),
        ("cm_futures", "ETHUSD_PERP", True),
        ("cm_futures", "BTCUSD_250627", False),  # delivery
        ("cm_futures", "BTCUSD", False),  # no underscore
        ("cm_futures", "BTCUSD_NEXT", False),  # unknown suffix
        ("cm_futures", "A_B_PERP", False),  # two underscores (Q17)
    ],
)
def test_filter_table(trade_type, name, kept):
    is_kept, reasons = _kept(trade_type, name)
    assert is_kept is kept
    if not kept:
        assert reasons[name]  # every dropped name carries a reason


def test_reasons_name_the_rule():
    _, dropped = filter_symbols("spot", ["ETHBTC", "USDCUSDT", "BTCUPUSDT"])
    reasons = {d["name"]: d["reason"] for d in dropped}
    assert reasons == {
        "BTCUPUSDT": "leveraged token base BTCUP",
        "ETHBTC": "quote BTC is not USDT",
        "USDCUSDT": "stablecoin base USDC",
    }
    _, dropped = filter_symbols("um_futures", ["BTCUSDT_260925", "ICPUSDTSETTLED"])
    reasons = {d["name"]: d["reason"] for d in dropped}
    assert reasons["BTCUSDT_260925"] == "delivery contract"
    assert reasons["ICPUSDTSETTLED"].startswith("cannot infer symbol: no known quote")


def test_cm_two_underscores_is_skipped_with_a_warning_and_others_survive(caplog):
    with caplog.at_level(logging.WARNING, logger="crypto_lakehouse.archive.symbols"):
        kept, dropped = filter_symbols("cm_futures", ["A_B_PERP", "BTCUSD_PERP", "ETHUSD_PERP"])
    assert kept == ["BTCUSD_PERP", "ETHUSD_PERP"]
    assert [d["name"] for d in dropped] == ["A_B_PERP"]
    assert any("A_B_PERP" in r.message and r.levelno == logging.WARNING for r in caplog.records)


def test_filter_output_is_sorted_and_deduplicated():
    kept, dropped = filter_symbols("spot", ["ETHUSDT", "BTCUSDT", "ETHUSDT", "ETHBTC", "BNBBTC"])
    assert kept == ["BTCUSDT", "ETHUSDT"]
    assert [d["name"] for d in dropped] == ["BNBBTC", "ETHBTC"]


def test_unknown_trade_type_is_refused():
    with pytest.raises(ValueError, match="unknown trade type 'options'"):
        filter_symbols("options", ["BTCUSDT"])


def test_inference_details():
    assert infer_spot("ETHBTC").base == "ETH" and infer_spot("ETHBTC").quote == "BTC"
    # Quote order USDT, USDC, BTC, ETH: the first matching suffix wins.
    assert infer_spot("USDCUSDT").quote == "USDT"
    assert infer_um("BTCUSDT_260925").contract_type == "DELIVERY"
    assert infer_um("BTCUSDT_260925").base == "BTC"
    info = infer_cm("BTCUSD_250627")
    assert (info.base, info.quote, info.contract_type) == ("BTC", "USD", "DELIVERY")
    assert infer_cm("ETHUSD_PERP").contract_type == "PERPETUAL"


@pytest.mark.parametrize(
    "name, valid",
    [
        ("BTCUSDT", True),
        ("BTCUSD_PERP", True),
        ("1000SHIBUSDT", True),
        ("btcusdt", False),
        ("BTC-USDT", False),
        ("BTC USDT", False),
        ("../ETC", False),
        ("BTC/USDT", False),
        ("", False),
        ("ÄBCUSDT", False),
    ],
)
def test_name_validation(name, valid):
    ok, refused = validate_names([name])
    assert (ok == [name]) is valid
    assert (len(refused) == 1) is (not valid)
    if refused:
        assert refused[0]["name"] == name and "invalid symbol name" in refused[0]["reason"]
