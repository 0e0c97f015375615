"""exchangeInfo summary: rate limits and symbol facts from the real 2021–2025 answers."""

from __future__ import annotations

import json

import pytest
from crypto_lakehouse_emulator.rest import RestEmulator

from crypto_lakehouse import plan
from crypto_lakehouse.contracts import MissingContractSize, contract_size_for
from crypto_lakehouse.io import read_json
from crypto_lakehouse.rest.exchange_info import (
    RateLimits,
    default_rate_limits,
    load_rate_limits,
    run_exchange_info,
    run_exchange_infos,
    summarize_exchange_info,
)
from tests.conftest import FIXTURES

REAL_REST = FIXTURES / "real" / "rest"


def raw(name):
    return json.loads((REAL_REST / name).read_text())


@pytest.mark.parametrize(
    ("name", "trade_type", "limit"),
    [
        ("api_v3_exchangeInfo_2025-08-07_25symbols.json", "spot", 6000),
        ("api_v3_exchangeInfo_2021-10-22_truncated.json", "spot", 1200),
        ("fapi_v1_exchangeInfo_2025-08-07_25symbols.json", "um_futures", 2400),
        ("fapi_v1_exchangeInfo_2022-02-19_truncated.json", "um_futures", 6000),
        ("dapi_v1_exchangeInfo_2025-08-07_25symbols.json", "cm_futures", 2400),
    ],
)
def test_request_weight_limit_per_minute_from_real_answers(name, trade_type, limit):
    summary = summarize_exchange_info(raw(name), trade_type)
    assert summary["request_weight"] == {"limit": limit, "window_s": 60.0}


def test_raw_requests_window_is_five_minutes():
    summary = summarize_exchange_info(raw("api_v3_exchangeInfo_2025-08-07_25symbols.json"), "spot")
    raw_requests = [x for x in summary["rate_limits"] if x["type"] == "RAW_REQUESTS"]
    assert raw_requests == [
        {
            "type": "RAW_REQUESTS",
            "interval": "MINUTE",
            "interval_num": 5,
            "limit": 61000,
            "window_s": 300.0,
        }
    ]


def test_cm_symbols_carry_contract_size_and_contract_status():
    data = raw("dapi_v1_exchangeInfo_2025-08-07_25symbols.json")
    summary = summarize_exchange_info(data, "cm_futures")
    assert len(summary["symbols"]) == len(data["symbols"])
    for s in data["symbols"]:
        entry = summary["symbols"][s["symbol"]]
        assert entry["contract_size"] == s["contractSize"]
        assert entry["status"] == s["contractStatus"]
    assert summary["symbols"]["BTCUSD_PERP"]["contract_size"] == 100


def test_run_against_emulator_learns_the_short_window(emulator, tmp_path):
    rest = RestEmulator(window_s=2, weight_limits={"cm": 300})
    rest.set_exchange_info("cm", REAL_REST / "dapi_v1_exchangeInfo_2025-08-07_25symbols.json")
    emu = emulator(rest=rest)
    out = tmp_path / "exchange_info" / "cm_futures.json"
    stats = run_exchange_info(
        trade_type="cm_futures", api_url=emu.base_url, out_path=out, timeout_s=5
    )
    assert stats["symbols"] == 25 and stats["weight"] == 1
    assert read_json(out)["request_weight"] == {"limit": 300, "window_s": 2.0}
    assert load_rate_limits(out, "cm_futures") == RateLimits(300, 2.0)
    assert contract_size_for(out, "BTCUSD_PERP") == 100.0  # what gen_kline reads (Q3)
    # deterministic: a second fetch gives the same bytes (no serverTime in the summary)
    first = out.read_bytes()
    run_exchange_info(trade_type="cm_futures", api_url=emu.base_url, out_path=out, timeout_s=5)
    assert out.read_bytes() == first


def test_defaults_without_a_file(tmp_path):
    assert load_rate_limits(None, "spot") == RateLimits(6000, 60.0)
    assert load_rate_limits(tmp_path / "absent.json", "um_futures") == RateLimits(2400, 60.0)


def test_one_job_fetches_every_trade_type_and_records_the_failed_one(emulator, tmp_path):
    rest = RestEmulator()
    rest.set_exchange_info("spot", REAL_REST / "api_v3_exchangeInfo_2025-08-07_25symbols.json")
    rest.set_exchange_info("cm", REAL_REST / "dapi_v1_exchangeInfo_2025-08-07_25symbols.json")
    emu = emulator(rest=rest)
    out = {t: tmp_path / f"{t}.json" for t in ("spot", "um_futures", "cm_futures")}
    fetch = dict(api_url=emu.base_url, timeout_s=5)
    run_exchange_infos(
        fetches=[dict(fetch, trade_type=t, out_path=out[t]) for t in ("spot", "cm_futures")]
    )
    assert read_json(out["spot"])["request_weight"]["limit"] == 6000  # the fixture's
    assert contract_size_for(out["cm_futures"], "BTCUSD_PERP") == 100.0
    # A host that refuses connections: the others are still fetched, the failed one's
    # file holds the error, and the job ends (the other trade types' REST jobs go on).
    closed = dict(api_url="http://127.0.0.1:9", timeout_s=1, max_retries=0)
    out["spot"].unlink()
    stats = run_exchange_infos(
        fetches=[
            dict(fetch, trade_type="spot", out_path=out["spot"]),
            dict(closed, trade_type="cm_futures", out_path=out["cm_futures"]),
        ]
    )
    assert read_json(out["spot"])["request_weight"]["limit"] == 6000
    failed = read_json(out["cm_futures"])
    assert set(failed) == {"trade_type", "error", "failed_at_unix"}
    assert failed["error"].startswith("HostStopped: http://127.0.0.1:9: cannot reach") and stats[
        "cm_futures"
    ] == {"error": failed["error"]}
    # What reads it: the REST jobs fall back to the default limits, a contract size names
    # the failure, and the rerun trigger holds its time.
    assert load_rate_limits(out["cm_futures"], "cm_futures") == default_rate_limits("cm_futures")
    with pytest.raises(MissingContractSize, match="this run's exchangeInfo request failed"):
        contract_size_for(out["cm_futures"], "BTCUSD_PERP")
    assert contract_size_for(out["cm_futures"], "BTCUSD_PERP", override=100) == 100.0
    assert plan.failure_time([out["spot"], out["cm_futures"]]) == failed["failed_at_unix"]
    previous = plan.failure_time([out["spot"], out["cm_futures"]], replaced=True)
    # Asked again with the host back: complete files that name the failure they follow and
    # the end date, so the rerun value stays the same for that end date (the run after the
    # recovery asks nothing) and drops it from the next end date on.
    run_exchange_infos(
        fetches=[dict(fetch, trade_type=t, out_path=out[t]) for t in ("spot", "cm_futures")],
        after_failure=plan.after_failure(previous, "2025-01-06"),
    )
    assert contract_size_for(out["cm_futures"], "BTCUSD_PERP") == 100.0
    paths = [out["spot"], out["cm_futures"]]
    assert read_json(out["spot"])["after_failure"] == {
        "failed_at_unix": previous,
        "end_date": "2025-01-06",
    }
    assert plan.failure_time(paths, "2025-01-06") == previous
    assert plan.failure_time(paths, "2025-01-07") is None
    assert plan.failure_time(paths, "2025-01-06", replaced=True) is None


def test_a_torn_summary_means_default_limits_and_is_removed_for_the_next_run(tmp_path, caplog):
    # Torn (a crash with storage.fsync: false): the REST jobs and COIN-M contract sizes
    # failed with a bare JSONDecodeError at every run until the next end date reran the
    # exchange_info job. Now it is removed: the next job that needs it has it fetched.
    summary = summarize_exchange_info(
        raw("dapi_v1_exchangeInfo_2025-08-07_25symbols.json"), "cm_futures"
    )
    out = tmp_path / "exchange_info" / "cm_futures.json"
    out.parent.mkdir()
    text = json.dumps(summary)
    out.write_text(text[: len(text) // 2])
    assert load_rate_limits(out, "cm_futures") == default_rate_limits("cm_futures")
    assert f"{out}, written by exchange_info, is unreadable (JSONDecodeError" in caplog.text
    assert not out.exists()
    out.write_bytes(bytes(len(text)))
    with pytest.raises(MissingContractSize, match="is missing or was unreadable"):
        contract_size_for(out, "BTCUSD_PERP")
    assert not out.exists()
    assert contract_size_for(out, "BTCUSD_PERP", override=100) == 100.0


def test_the_rerun_after_a_failure_asks_only_the_failed_trade_type(emulator, tmp_path):
    """COIN-M's request fails, spot's is answered. The rerun for that failure (same end
    date and arguments) asks COIN-M only and keeps spot's summary, the same bytes written
    again (newer than the rerun stamp); a new end date asks both again."""
    import os

    rest = RestEmulator()
    rest.set_exchange_info("spot", REAL_REST / "api_v3_exchangeInfo_2025-08-07_25symbols.json")
    rest.set_exchange_info("cm", REAL_REST / "dapi_v1_exchangeInfo_2025-08-07_25symbols.json")
    emu = emulator(rest=rest)
    out = {t: str(tmp_path / f"{t}.json") for t in ("spot", "cm_futures")}
    up = dict(api_url=emu.base_url, timeout_s=5)
    closed = dict(api_url="http://127.0.0.1:9", timeout_s=1, max_retries=0)
    run = {"end_date": "2025-01-06", "args": "digest-of-the-job-args"}

    def asked(trade_type: str) -> int:
        return rest.counters(trade_type).get("requests/exchangeInfo", 0)

    run_exchange_infos(
        fetches=[
            dict(up, trade_type="spot", out_path=out["spot"]),
            dict(closed, trade_type="cm_futures", out_path=out["cm_futures"]),
        ],
        asked_for=run,
    )
    assert read_json(out["cm_futures"])["asked_for"] == run
    spot_bytes = open(out["spot"], "rb").read()
    assert asked("spot") == 1 and asked("cm_futures") == 0
    # What the next run's planning decides: keep spot; not for another end date or args.
    assert plan.exchange_info_kept(out, run) == ["spot"]
    assert plan.exchange_info_kept(out, dict(run, end_date="2025-01-07")) == []
    assert plan.exchange_info_kept(out, dict(run, args="other")) == []
    os.utime(out["spot"], (1, 1))
    previous = plan.failure_time(list(out.values()), replaced=True)
    stats = run_exchange_infos(
        fetches=[dict(up, trade_type=t, out_path=out[t]) for t in ("spot", "cm_futures")],
        after_failure=plan.after_failure(previous, "2025-01-06"),
        asked_for=run,
        keep=plan.exchange_info_kept(out, run),
    )
    assert asked("spot") == 1 and asked("cm_futures") == 1  # COIN-M only
    assert stats["spot"] == {"kept": True} and stats["cm_futures"]["symbols"] == 25
    assert open(out["spot"], "rb").read() == spot_bytes
    assert os.stat(out["spot"]).st_mtime > 1  # rewritten: newer than the run's stamp
    assert contract_size_for(out["cm_futures"], "BTCUSD_PERP") == 100.0
    # The value of the rerun trigger stays the same for this end date (COIN-M's complete
    # file names the failure it follows): the run after asks nothing.
    assert plan.failure_time(list(out.values()), "2025-01-06") == previous
    assert plan.exchange_info_kept(out, run) == []  # no failure left: nothing to keep
