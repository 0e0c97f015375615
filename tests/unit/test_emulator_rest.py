"""The REST emulator answers like Binance (binance-facts §5): data, weights, limits, errors."""

from __future__ import annotations

import csv
import gzip
import io
import json
import time
import zipfile
from pathlib import Path

import pytest
import requests
from crypto_lakehouse_emulator.rest import RestEmulator

from tests.conftest import FIXTURES

REAL_REST = FIXTURES / "real" / "rest"
TRUTH = FIXTURES / "legacy-v1-real" / "truth"
DAY = 86_400_000
MIN = 60_000
D0 = 19_000 * DAY  # 2022-01-08


def get(rest, path, **query):
    status, headers, body = rest.handle("GET", path, {k: str(v) for k, v in query.items()}, {})
    return status, headers, json.loads(body)


def test_non_rest_paths_are_not_handled():
    assert RestEmulator().handle("GET", "/data/spot/", {}, {}) is None


def test_time_follows_the_settable_clock():
    rest = RestEmulator(now_ms=1_700_000_000_123)
    status, headers, body = get(rest, "/fapi/v1/time")
    assert status == 200 and body == {"serverTime": 1_700_000_000_123}
    assert headers["X-MBX-USED-WEIGHT-1M"] == "1"
    rest.now_ms = 5
    assert get(rest, "/api/v3/time")[2]["serverTime"] == 5


@pytest.mark.parametrize(
    ("market", "path", "limit", "weight"),
    [
        ("spot", "/api/v3/klines", 1000, 2),
        ("spot", "/api/v3/klines", 10, 2),
        ("um", "/fapi/v1/klines", 99, 1),
        ("um", "/fapi/v1/klines", 480, 2),
        ("um", "/fapi/v1/klines", 500, 5),
        ("cm", "/dapi/v1/klines", 1000, 5),
        ("cm", "/dapi/v1/klines", 1500, 10),
    ],
)
def test_kline_weight_by_market_and_limit(market, path, limit, weight):
    rest = RestEmulator(now_ms=D0 + DAY)
    rest.add_symbol(market, "XUSD_PERP")
    status, headers, _ = get(rest, path, symbol="XUSD_PERP", interval="1m", limit=limit)
    assert status == 200
    assert headers["X-MBX-USED-WEIGHT-1M"] == str(weight)
    get(rest, path, symbol="XUSD_PERP", interval="1m", limit=limit)
    assert rest.counters(market)["weight"] == 2 * weight


def test_1s_klines_are_spot_only_and_unknown_intervals_are_refused():
    # Binance: 1s klines exist on /api/v3 only; fapi/dapi answer -1120 Invalid interval, as
    # both do for a value off Binance's list (the emulator served any "<n><unit>").
    rest = RestEmulator(now_ms=D0 + DAY)
    for market in ("spot", "um", "cm"):
        rest.add_synthetic_klines(market, "XUSD_PERP", start_ms=D0)
    paths = {"spot": "/api/v3/klines", "um": "/fapi/v1/klines", "cm": "/dapi/v1/klines"}
    status, _, body = get(rest, paths["spot"], symbol="XUSD_PERP", interval="1s", limit=5)
    assert status == 200 and len(body) == 5 and body[1][0] - body[0][0] == 1_000
    for market in ("um", "cm"):
        status, _, body = get(rest, paths[market], symbol="XUSD_PERP", interval="1s", limit=5)
        assert (status, body["code"]) == (400, -1120), (market, body)
    for market, path in paths.items():
        status, _, body = get(rest, path, symbol="XUSD_PERP", interval="7m", limit=5)
        assert (status, body["code"]) == (400, -1120), (market, body)
        assert get(rest, path, symbol="XUSD_PERP", interval="4h", limit=5)[0] == 200


def test_klines_from_truth_csv_keep_the_csv_strings():
    csv = TRUTH / "klines" / "cm" / "BTCUSD_PERP-1m.csv.gz"
    lines = gzip.decompress(csv.read_bytes()).decode().splitlines()
    first = lines[1].split(",")
    t0 = int(first[0])
    rest = RestEmulator(now_ms=t0 + 2 * DAY)
    rest.add_klines("cm", "BTCUSD_PERP", csv)
    status, _, rows = get(
        rest,
        "/dapi/v1/klines",
        symbol="BTCUSD_PERP",
        interval="1m",
        startTime=t0,
        endTime=t0 + 2 * MIN - 1,
        limit=10,
    )
    assert status == 200 and len(rows) == 2
    # CSV columns: open_time,open,high,low,close,volume,quote_volume,count,taker_buy_volume,
    # taker_buy_quote_volume → REST order puts close_time at 6 and ignore at 11.
    assert rows[0] == [
        t0,
        first[1],
        first[2],
        first[3],
        first[4],
        first[5],
        t0 + MIN - 1,
        first[6],
        int(first[7]),
        first[8],
        first[9],
        "0",
    ]


def test_spot_returns_first_limit_from_start_and_futures_too():
    rest = RestEmulator(now_ms=D0 + 10 * DAY)
    rest.add_synthetic_klines("spot", "AUSDT", start_ms=D0)
    rest.add_synthetic_klines("um", "AUSDT", start_ms=D0)
    for path in ("/api/v3/klines", "/fapi/v1/klines"):
        _, _, rows = get(
            rest, path, symbol="AUSDT", interval="1m", startTime=D0, endTime=D0 + DAY - 1, limit=5
        )
        assert [r[0] for r in rows] == [D0 + i * MIN for i in range(5)]


def test_cm_window_rule_newest_limit_before_end_and_200_days():
    rest = RestEmulator(now_ms=D0 + 300 * DAY)
    rest.add_synthetic_klines("cm", "AUSD_PERP", start_ms=D0)
    _, _, rows = get(
        rest,
        "/dapi/v1/klines",
        symbol="AUSD_PERP",
        interval="1m",
        startTime=D0,
        endTime=D0 + DAY - 1,
        limit=5,
    )
    assert [r[0] for r in rows] == [D0 + DAY - (5 - i) * MIN for i in range(5)]
    status, _, body = get(
        rest,
        "/dapi/v1/klines",
        symbol="AUSD_PERP",
        interval="1d",
        startTime=D0,
        endTime=D0 + 201 * DAY,
        limit=5,
    )
    assert status == 400 and body["code"] == -1127


def test_open_candle_is_served_and_future_candles_do_not_exist():
    now = D0 + 30 * MIN + 15_000  # 15 s into the 00:30 candle
    rest = RestEmulator(now_ms=now)
    rest.add_synthetic_klines("um", "AUSDT", start_ms=D0)
    _, _, rows = get(
        rest,
        "/fapi/v1/klines",
        symbol="AUSDT",
        interval="1m",
        startTime=D0,
        endTime=D0 + DAY - 1,
        limit=1000,
    )
    assert len(rows) == 31
    assert rows[-1][0] == D0 + 30 * MIN and rows[-1][6] >= now


def test_synthetic_values_do_not_depend_on_the_request_window():
    rest = RestEmulator(now_ms=D0 + 5 * DAY)
    rest.add_synthetic_klines("spot", "AUSDT", start_ms=D0, seed=3)
    a = get(rest, "/api/v3/klines", symbol="AUSDT", interval="1m", startTime=D0, limit=100)[2]
    b = get(
        rest, "/api/v3/klines", symbol="AUSDT", interval="1m", startTime=D0 + 50 * MIN, limit=10
    )[2]
    assert a[50:60] == b
    assert all(float(r[3]) <= min(float(r[1]), float(r[4])) for r in a)
    assert all(float(r[2]) >= max(float(r[1]), float(r[4])) for r in a)


def test_gaps_and_listing_end_have_no_candles():
    rest = RestEmulator(now_ms=D0 + 5 * DAY)
    rest.add_synthetic_klines(
        "um", "AUSDT", start_ms=D0, end_ms=D0 + DAY, gaps=[(D0 + 10 * MIN, D0 + 20 * MIN)]
    )
    rows = rest.klines_rows("um", "AUSDT", "1m", D0, D0 + 3 * DAY)
    assert len(rows) == 1440 - 10
    assert (
        get(
            rest,
            "/fapi/v1/klines",
            symbol="AUSDT",
            interval="1m",
            startTime=D0 + DAY,
            endTime=D0 + 2 * DAY - 1,
            limit=1000,
        )[2]
        == []
    )


def test_unknown_symbol_and_invalid_status():
    rest = RestEmulator()
    rest.add_symbol("um", "OFFUSDT")
    rest.set_invalid_status("um", "OFFUSDT")
    status, _, body = get(rest, "/fapi/v1/klines", symbol="NOPE", interval="1m")
    assert (status, body) == (400, {"code": -1121, "msg": "Invalid symbol."})
    status, _, body = get(rest, "/fapi/v1/klines", symbol="OFFUSDT", interval="1m")
    assert status == 400 and body["code"] == -1122
    status, _, body = get(rest, "/dapi/v1/fundingRate", symbol="NOPE")
    assert status == 400 and body["code"] == -1121


def test_exchange_info_from_real_fixture_announces_the_configured_limit():
    rest = RestEmulator(now_ms=42, window_s=2, weight_limits={"cm": 77})
    rest.set_exchange_info("cm", REAL_REST / "dapi_v1_exchangeInfo_2025-08-07_25symbols.json")
    rest.add_symbol("cm", "NEWUSD_PERP")
    rest.add_symbol("cm", "OLDUSD_PERP", listed=False)
    status, headers, info = get(rest, "/dapi/v1/exchangeInfo")
    assert status == 200 and info["serverTime"] == 42
    weight = [x for x in info["rateLimits"] if x["rateLimitType"] == "REQUEST_WEIGHT"]
    assert weight == [
        {"rateLimitType": "REQUEST_WEIGHT", "interval": "SECOND", "intervalNum": 2, "limit": 77}
    ]
    names = [s["symbol"] for s in info["symbols"]]
    assert len(names) == 26 and "NEWUSD_PERP" in names and "OLDUSD_PERP" not in names
    btc = next(s for s in info["symbols"] if s["symbol"] == "BTCUSD_PERP")
    assert btc["contractSize"] == 100


def test_429_with_retry_after_then_418_for_a_client_that_keeps_going():
    rest = RestEmulator(window_s=60, weight_limits={"spot": 4}, ban_after=2)
    rest.add_symbol("spot", "AUSDT")
    q = {"symbol": "AUSDT", "interval": "1m", "limit": 5}
    assert get(rest, "/api/v3/klines", **q)[0] == 200
    assert get(rest, "/api/v3/klines", **q)[0] == 200  # used 4 of 4
    status, headers, body = get(rest, "/api/v3/klines", **q)
    assert status == 429 and 1 <= int(headers["Retry-After"]) <= 60
    assert headers["X-MBX-USED-WEIGHT-1M"] == "4"
    assert get(rest, "/api/v3/klines", **q)[0] == 429  # violation 1
    assert get(rest, "/api/v3/klines", **q)[0] == 429  # violation 2
    status, headers, _ = get(rest, "/api/v3/klines", **q)
    assert status == 418 and int(headers["Retry-After"]) == 120
    assert get(rest, "/api/v3/time")[0] == 418  # the ban covers every endpoint of the family
    assert get(rest, "/fapi/v1/time")[0] == 200  # other families have their own pool
    c = rest.counters("spot")
    assert (c["429"], c["418"]) == (3, 2)


def test_weight_used_up_elsewhere_answers_429_then_418_for_a_client_that_keeps_going():
    rest = RestEmulator(window_s=60, ban_after=2)
    assert get(rest, "/fapi/v1/time")[0] == 200
    rest.exhaust("um", 1.5)
    status, headers, _ = get(rest, "/fapi/v1/time")  # violation 1
    assert status == 429 and int(headers["Retry-After"]) == 2  # 1.5 s, rounded up
    assert get(rest, "/fapi/v1/time")[0] == 429  # violation 2
    assert get(rest, "/fapi/v1/time")[0] == 418
    assert get(rest, "/api/v3/time")[0] == 200  # only the family's pool

    # A client that waits out Retry-After is answered again, without a ban.
    rest.unban("um")
    rest.exhaust("um", 0.3)
    status, headers, _ = get(rest, "/fapi/v1/time")
    assert status == 429 and headers["Retry-After"] == "1"
    time.sleep(0.35)
    assert get(rest, "/fapi/v1/time")[0] == 200
    c = rest.counters("um")
    assert (c["429"], c["418"]) == (3, 1)


def test_weight_window_resets():
    rest = RestEmulator(window_s=0.5, weight_limits={"um": 1})
    assert get(rest, "/fapi/v1/time")[0] == 200
    status, headers, _ = get(rest, "/fapi/v1/time")
    assert status == 429
    time.sleep(0.55)
    rest.unban("um")
    assert get(rest, "/fapi/v1/time")[0] == 200


def test_injected_5xx_burst_then_normal():
    rest = RestEmulator()
    rest.inject(503, count=2, market="um", path="/time", after=1)
    codes = [get(rest, "/fapi/v1/time")[0] for _ in range(4)]
    assert codes == [200, 503, 503, 200]
    assert rest.counters("um")["5xx"] == 2


def test_injected_429_of_one_symbol_leaves_the_others_answered():
    rest = RestEmulator(now_ms=D0 + DAY)
    rest.add_symbol("um", "AUSDT")
    rest.add_symbol("um", "BUSDT")
    rest.inject(429, count=100, market="um", path="/klines", symbol="BUSDT", retry_after=1)
    q = {"interval": "1m", "limit": 5}
    status, headers, _ = get(rest, "/fapi/v1/klines", symbol="BUSDT", **q)
    assert status == 429 and headers["Retry-After"] == "1"
    assert get(rest, "/fapi/v1/klines", symbol="AUSDT", **q)[0] == 200
    assert get(rest, "/fapi/v1/time")[0] == 200  # no symbol parameter: not matched
    assert get(rest, "/fapi/v1/klines", symbol="BUSDT", **q)[0] == 429
    # an injected 429 is not a breach of the weight limit: no violation, no ban follows
    assert rest.counters("um")["429"] == 2 and rest.counters("um").get("418", 0) == 0


def test_funding_pages_forward_from_start_time_inclusive():
    rest = RestEmulator(now_ms=D0 + 100 * DAY)
    rest.add_funding("um", "BTCUSDT", REAL_REST / "fapi_v1_fundingRate_BTCUSDT_2020-01.json")
    records = json.loads((REAL_REST / "fapi_v1_fundingRate_BTCUSDT_2020-01.json").read_text())
    t = [r["fundingTime"] for r in records]
    status, headers, body = get(
        rest, "/fapi/v1/fundingRate", symbol="BTCUSDT", startTime=t[1], limit=2
    )
    assert status == 200 and [r["fundingTime"] for r in body] == t[1:3]
    assert body[0]["fundingRate"] == records[1]["fundingRate"]
    assert headers["X-MBX-USED-WEIGHT-1M"] == "0"  # um fundingRate has its own pool
    _, _, newest = get(rest, "/fapi/v1/fundingRate", symbol="BTCUSDT", limit=2)
    assert [r["fundingTime"] for r in newest] == t[-2:]


def test_um_funding_pool_is_separate_from_weight():
    rest = RestEmulator(funding_limit=2, funding_windows=5, window_s=60)
    rest.add_funding("um", "BTCUSDT", [])
    assert get(rest, "/fapi/v1/fundingRate", symbol="BTCUSDT")[0] == 200
    assert get(rest, "/fapi/v1/fundingRate", symbol="BTCUSDT")[0] == 200
    assert get(rest, "/fapi/v1/fundingRate", symbol="BTCUSDT")[0] == 429
    assert get(rest, "/fapi/v1/time")[0] == 200  # the weight pool is untouched


def test_synthetic_funding_every_8h_with_jitter():
    rest = RestEmulator(now_ms=D0 + 10 * DAY)
    rest.add_synthetic_funding("cm", "AUSD_PERP", start_ms=D0, end_ms=D0 + 2 * DAY)
    _, headers, body = get(
        rest, "/dapi/v1/fundingRate", symbol="AUSD_PERP", startTime=0, limit=1000
    )
    assert len(body) == 6 and headers["X-MBX-USED-WEIGHT-1M"] == "1"
    assert all(0 <= r["fundingTime"] - (D0 + i * 8 * 3_600_000) < 10 for i, r in enumerate(body))


def test_synthetic_funding_serves_the_mirrors_archived_months_as_archived(tmp_path):
    """Binance's REST and archive funding are the same events: a tool that lets REST win over
    the archive for an hour (legacy BHDS) must get the archive's value from the emulator too."""
    import zipfile

    from crypto_lakehouse_emulator.generate import write_funding_month

    write_funding_month(tmp_path, "um_futures", "BTCUSDT", "2024-01", seed=3)
    zip_path = next(tmp_path.rglob("BTCUSDT-fundingRate-2024-01.zip"))
    with zipfile.ZipFile(zip_path) as zf:
        lines = zf.read(zf.namelist()[0]).decode().splitlines()
    archived = [line.split(",") for line in lines if not line.startswith("calc_time")]
    jan, feb, mar = 1_704_067_200_000, 1_706_745_600_000, 1_709_251_200_000
    assert len(archived) == 93 and int(archived[0][0]) - jan < 27

    rest = RestEmulator(now_ms=mar)
    rest.add_synthetic_funding(
        "um", "BTCUSDT", start_ms=jan - 5 * DAY, end_ms=mar, seed=3, mirror_dir=tmp_path
    )
    _, _, body = get(rest, "/fapi/v1/fundingRate", symbol="BTCUSDT", startTime=0, limit=1000)
    in_jan = [r for r in body if jan <= r["fundingTime"] < feb]
    assert [[str(r["fundingTime"]), r["fundingRate"]] for r in in_jan] == [
        [t, rate] for t, _, rate in archived
    ]
    # Synthetic around the archived month: 5 days before it, February after it.
    assert len([r for r in body if r["fundingTime"] < jan]) == 15
    assert len([r for r in body if r["fundingTime"] >= feb]) == 29 * 3
    times = [r["fundingTime"] for r in body]
    assert times == sorted(times)

    # Without the mirror the same month is synthetic (and differs from the archive).
    plain = RestEmulator(now_ms=mar)
    plain.add_synthetic_funding("um", "BTCUSDT", start_ms=jan - 5 * DAY, end_ms=mar, seed=3)
    _, _, body = get(plain, "/fapi/v1/fundingRate", symbol="BTCUSDT", startTime=jan, limit=93)
    assert [r["fundingRate"] for r in body] != [rate for _, _, rate in archived]


def test_served_over_http_by_the_emulator(emulator):
    rest = RestEmulator(now_ms=D0 + DAY)
    rest.add_synthetic_klines("spot", "AUSDT", start_ms=D0)
    emu = emulator(rest=rest)
    r = requests.get(
        f"{emu.base_url}/api/v3/klines",
        params={"symbol": "AUSDT", "interval": "1h", "startTime": D0, "limit": 3},
        timeout=5,
    )
    assert r.status_code == 200 and r.headers["X-MBX-USED-WEIGHT-1M"] == "2"
    assert [row[0] for row in r.json()] == [D0, D0 + 3_600_000, D0 + 7_200_000]


def test_klines_from_a_legacy_frame():
    import pyarrow.parquet as pq

    parsed = FIXTURES / "legacy-v1-real" / "parsed_data" / "um_futures" / "klines" / "BTCUSDT"
    df = pq.read_table(parsed / "1m" / "202209.pqt").to_pandas()
    t0 = int(df["candle_begin_time"].iloc[0].timestamp() * 1000)
    rest = RestEmulator(now_ms=t0 + 2 * DAY)
    rest.add_klines("um", "BTCUSDT", df)
    _, _, rows = get(
        rest, "/fapi/v1/klines", symbol="BTCUSDT", interval="1m", startTime=t0, limit=3
    )
    assert [r[0] for r in rows] == [t0, t0 + MIN, t0 + 2 * MIN]
    assert [float(r[4]) for r in rows] == df["close"].iloc[:3].tolist()
    assert [r[8] for r in rows] == df["trade_num"].iloc[:3].tolist()
    assert all(r[6] == r[0] + MIN - 1 for r in rows)


def test_synthesized_exchange_info_for_known_symbols():
    rest = RestEmulator()
    rest.add_symbol("cm", "BTCUSD_PERP")
    rest.add_symbol("cm", "ETHUSD_PERP")
    rest.set_contract_size("cm", "ETHUSD_PERP", 10)
    _, _, info = get(rest, "/dapi/v1/exchangeInfo")
    sizes = {s["symbol"]: s["contractSize"] for s in info["symbols"]}
    assert sizes == {"BTCUSD_PERP": 100, "ETHUSD_PERP": 10}
    assert info["rateLimits"][0] == {
        "rateLimitType": "REQUEST_WEIGHT",
        "interval": "MINUTE",
        "intervalNum": 1,
        "limit": 2400,
    }


def test_the_offline_demos_rest_candles_continue_at_the_archives_price_level():
    """``python -m crypto_lakehouse_emulator --rest``: the synthetic REST candles of a
    symbol wave around its archive's level (a mirror symbol: its newest archive's last
    close; a synthetic universe's: the level its archive wanders around), not around 100,
    which made the REST days of a demo jump by a factor of ~150 from the archive's prices
    (its returns and charts showed a crash)."""
    from crypto_lakehouse_emulator.__main__ import build, parse_args
    from crypto_lakehouse_emulator.synthetic import SyntheticUniverse

    mirror = Path(__file__).parents[1] / "fixtures/legacy-v1-real/mirror"
    emu = build(
        parse_args(["--mirror", str(mirror), "--synthetic", "1,0,0,3,2024-01-01", "--rest"])
    )
    day = 86_400_000
    t0 = 1_704_067_200_000  # 2024-01-01
    (synthetic,) = SyntheticUniverse(1, 0, 0, 3, "2024-01-01").symbols("spot")
    closes = [float(r[4]) for r in emu.rest.klines_rows("spot", synthetic, "1m", t0, t0 + day)]
    assert len(closes) == 1440 and 10_000 * 0.75 < min(closes) and max(closes) < 20_000 * 1.25
    # The mirror's spot BTCUSDT: its newest zip's last row (read here with the csv module).
    newest = max(
        (mirror / "data/spot").rglob("BTCUSDT-1m-*.zip"), key=lambda z: z.stem.split("-", 2)[-1]
    )
    with zipfile.ZipFile(newest) as archive:
        rows = list(csv.reader(io.StringIO(archive.read(archive.namelist()[0]).decode())))
    level = float(rows[-1][4])
    closes = [float(r[4]) for r in emu.rest.klines_rows("spot", "BTCUSDT", "1m", t0, t0 + day)]
    assert level * 0.75 < min(closes) and max(closes) < level * 1.25, (level, closes[:3])
