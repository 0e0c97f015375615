"""REST funding history (``run_api_funding``) against the emulator."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from crypto_lakehouse_emulator.rest import RestEmulator

from crypto_lakehouse import layout
from crypto_lakehouse.io import write_json, write_parquet
from crypto_lakehouse.provenance import day_iso
from crypto_lakehouse.rest.funding import run_api_funding
from crypto_lakehouse.schema import API_FUNDING_SCHEMA, KLINE_SCHEMA, PARSED_FUNDING_SCHEMA
from tests.conftest import FIXTURES

DAY = 86_400_000
HOUR = 3_600_000
D = 19_000  # 2022-01-08
REAL_REST = FIXTURES / "real" / "rest"


def run(url, tmp, *, symbol="AUSDT", trade_type="um_futures", end_day=None, ei=None, **kw):
    kw.setdefault("backoff_base_s", 0.01)
    return run_api_funding(
        trade_type=trade_type,
        symbol=symbol,
        data_dir=tmp,
        api_url=url,
        parse_report=None,
        end_date=day_iso(end_day) if end_day is not None else None,
        report_path=tmp / "report.json",
        stats_path=tmp / "stats.json",
        exchange_info_path=ei,
        **kw,
    )


def stored(tmp, symbol="AUSDT", trade_type="um_futures"):
    return pq.read_table(layout.api_funding_path(tmp, trade_type, symbol))


def report(tmp):
    return json.loads((tmp / "report.json").read_text())


def served_times(rest, market, symbol, lo, hi):
    """Funding times the emulator holds in [lo, hi] (asked without a limit)."""
    out, s = [], lo
    while True:
        _, _, body = rest.handle(
            "GET",
            {"um": "/fapi/v1", "cm": "/dapi/v1"}[market] + "/fundingRate",
            {"symbol": symbol, "startTime": str(s), "endTime": str(hi), "limit": "1000"},
            {},
        )
        page = json.loads(body)
        out += [r["fundingTime"] for r in page]
        if len(page) < 1000:
            return out
        s = page[-1]["fundingTime"] + 1


def write_first_kline(tmp, symbol, trade_type, first_ms):
    t = pa.table({"candle_begin_time": pa.array([first_ms], KLINE_SCHEMA.field(0).type)})
    for f in KLINE_SCHEMA:
        if f.name != "candle_begin_time":
            t = t.append_column(f, pa.array([1], f.type))
    write_parquet(layout.parsed_klines_dir(tmp, trade_type, symbol, "1m") / "202201.pqt", t)


def test_pagination_over_more_than_1000_records_from_the_first_kline_day(emulator, tmp_path):
    # 1 h funding for 90 days: 2,160 events; the symbol's klines start on day D+10 at 05:17.
    rest = RestEmulator(now_ms=(D + 80) * DAY + 1234)
    rest.add_synthetic_funding("um", "AUSDT", start_ms=D * DAY, end_ms=(D + 90) * DAY, every_h=1)
    emu = emulator(rest=rest)
    write_first_kline(tmp_path, "AUSDT", "um_futures", (D + 10) * DAY + 5 * HOUR + 17 * 60_000)
    stats = run(emu.base_url, tmp_path)
    requests_sent = rest.counters("um")["requests/fundingRate"]
    expected = served_times(rest, "um", "AUSDT", (D + 10) * DAY, rest.now_ms)
    assert len(expected) == 70 * 24 + 1  # day D+10 00:00 .. day D+80 00:00 inclusive
    t = stored(tmp_path)
    assert t.schema == API_FUNDING_SCHEMA
    assert t["funding_time"].cast("int64").to_pylist() == expected
    assert t["candle_begin_time"].cast("int64").to_pylist() == [x - x % HOUR for x in expected]
    assert stats["pages"] == 2 and stats["start_from"] == "first_kline_day"
    assert requests_sent == 2


def test_incremental_run_fetches_only_after_the_last_stored_event(emulator, tmp_path):
    # "now" 10 ms after midnight: past the 0-9 ms jitter of the midnight event
    rest = RestEmulator(now_ms=(D + 5) * DAY + 10)
    rest.add_synthetic_funding("um", "AUSDT", start_ms=D * DAY, end_ms=(D + 20) * DAY)
    emu = emulator(rest=rest)
    write_first_kline(tmp_path, "AUSDT", "um_futures", D * DAY)
    run(emu.base_url, tmp_path)
    first = stored(tmp_path)
    assert first.num_rows == 5 * 3 + 1
    rest.now_ms = (D + 7) * DAY + 10
    stats = run(emu.base_url, tmp_path)
    assert stats["new_records"] == 6 and stats["pages"] == 1
    t = stored(tmp_path)
    assert t.slice(0, first.num_rows).equals(first)  # kept as stored
    assert t["funding_time"].cast("int64").to_pylist() == served_times(
        rest, "um", "AUSDT", D * DAY, rest.now_ms
    )


def test_an_unreadable_stored_file_is_fetched_again_whole(emulator, tmp_path, caplog):
    rest = RestEmulator(now_ms=(D + 5) * DAY + 10)
    rest.add_synthetic_funding("um", "AUSDT", start_ms=D * DAY, end_ms=(D + 20) * DAY)
    emu = emulator(rest=rest)
    write_first_kline(tmp_path, "AUSDT", "um_futures", D * DAY)
    run(emu.base_url, tmp_path)
    path = layout.api_funding_path(tmp_path, "um_futures", "AUSDT")
    path.write_bytes(path.read_bytes()[:40])  # damaged outside a run
    rest.now_ms = (D + 6) * DAY + 10
    stats = run(emu.base_url, tmp_path)
    assert f"{path} is unreadable (ArrowInvalid" in caplog.text
    assert stats["new_records"] == 6 * 3 + 1
    assert stored(tmp_path)["funding_time"].cast("int64").to_pylist() == served_times(
        rest, "um", "AUSDT", D * DAY, rest.now_ms
    )


def test_an_unreadable_parsed_funding_file_is_the_parse_s_to_rebuild(emulator, tmp_path):
    from crypto_lakehouse.shards import DamagedInput

    emu = emulator(rest=RestEmulator(now_ms=(D + 5) * DAY))
    parsed = layout.parsed_funding_path(tmp_path, "um_futures", "AUSDT")
    parsed.parent.mkdir(parents=True)
    parsed.write_bytes(b"PAR1 cut short")
    with pytest.raises(DamagedInput) as info:
        run(emu.base_url, tmp_path)
    assert info.value.stage == "aws_parse" and info.value.path == str(parsed)
    assert info.value.removable is False  # no parse state: not the parse's file
    from crypto_lakehouse.parse import state_file

    write_json(state_file(tmp_path, "um_futures", "funding", "AUSDT"), {"written": True})
    with pytest.raises(DamagedInput) as info:
        run(emu.base_url, tmp_path)
    assert info.value.removable is True


def test_starts_after_the_last_archived_event(emulator, tmp_path):
    rest = RestEmulator(now_ms=(D + 4) * DAY)
    rest.add_funding("cm", "BTCUSD_PERP", REAL_REST / "dapi_v1_fundingRate_BTCUSD_PERP_limit5.json")
    emu = emulator(rest=rest)
    records = json.loads((REAL_REST / "dapi_v1_fundingRate_BTCUSD_PERP_limit5.json").read_text())
    last_archived = records[1]["fundingTime"]
    parsed = pa.table(
        {
            "funding_time": pa.array([last_archived], PARSED_FUNDING_SCHEMA.field(0).type),
            "funding_interval_hours": pa.array([8], pa.int64()),
            "funding_rate": pa.array([float(records[1]["fundingRate"])]),
            "candle_begin_time": pa.array([last_archived], PARSED_FUNDING_SCHEMA.field(3).type),
        }
    )
    write_parquet(layout.parsed_funding_path(tmp_path, "cm_futures", "BTCUSD_PERP"), parsed)
    run(emu.base_url, tmp_path, symbol="BTCUSD_PERP", trade_type="cm_futures")
    t = stored(tmp_path, "BTCUSD_PERP", "cm_futures")
    assert t["funding_time"].cast("int64").to_pylist() == [r["fundingTime"] for r in records[2:]]
    assert t["funding_rate"].to_pylist() == [float(r["fundingRate"]) for r in records[2:]]
    assert report(tmp_path)["last_archived_funding_time"] is not None


def test_real_um_sample_from_epoch_when_nothing_is_known(emulator, tmp_path):
    path = REAL_REST / "fapi_v1_fundingRate_BTCUSDT_2024-01-01.json"
    records = json.loads(path.read_text())
    rest = RestEmulator(now_ms=records[-1]["fundingTime"] + DAY)
    rest.add_funding("um", "BTCUSDT", path)
    emu = emulator(rest=rest)
    stats = run(emu.base_url, tmp_path, symbol="BTCUSDT")
    assert stats["start_from"] == "epoch"
    t = stored(tmp_path, "BTCUSDT")
    assert t["funding_time"].cast("int64").to_pylist() == [r["fundingTime"] for r in records]
    assert t["funding_rate"].to_pylist() == [float(r["fundingRate"]) for r in records]


def test_jittered_times_floor_to_the_hour(emulator, tmp_path):
    path = REAL_REST / "dapi_v1_fundingRate_BTCUSD_PERP_limit5.json"
    records = json.loads(path.read_text())
    rest = RestEmulator(now_ms=records[-1]["fundingTime"] + DAY)
    rest.add_funding("cm", "BTCUSD_PERP", path)
    emu = emulator(rest=rest)
    run(emu.base_url, tmp_path, symbol="BTCUSD_PERP", trade_type="cm_futures")
    t = stored(tmp_path, "BTCUSD_PERP", "cm_futures")
    assert records[0]["fundingTime"] == 1605513600010  # the fixture's 10 ms jitter
    assert t["candle_begin_time"].cast("int64").to_pylist()[0] == 1605513600000
    assert t["funding_time"].cast("int64").to_pylist()[0] == 1605513600010


def test_end_date_caps_the_range(emulator, tmp_path):
    rest = RestEmulator(now_ms=(D + 10) * DAY)
    rest.add_synthetic_funding("um", "AUSDT", start_ms=D * DAY, end_ms=(D + 20) * DAY)
    emu = emulator(rest=rest)
    write_first_kline(tmp_path, "AUSDT", "um_futures", D * DAY)
    run(emu.base_url, tmp_path, end_day=D + 1)
    times = stored(tmp_path)["funding_time"].cast("int64").to_pylist()
    assert len(times) == 6 and max(times) < (D + 2) * DAY


def test_no_funding_at_all_writes_no_file(emulator, tmp_path):
    rest = RestEmulator(now_ms=(D + 10) * DAY)
    rest.add_funding("cm", "BTCUSD_231229", [])  # a delivery contract: empty answers
    emu = emulator(rest=rest)
    run(emu.base_url, tmp_path, symbol="BTCUSD_231229", trade_type="cm_futures")
    assert not layout.api_funding_path(tmp_path, "cm_futures", "BTCUSD_231229").exists()
    assert report(tmp_path)["records"] == 0


def test_invalid_symbol_is_skipped(emulator, tmp_path):
    rest = RestEmulator(now_ms=(D + 10) * DAY)
    emu = emulator(rest=rest)
    run(emu.base_url, tmp_path, symbol="GONEUSDT")
    assert report(tmp_path)["invalid_symbol"] is True
    assert not layout.api_funding_path(tmp_path, "um_futures", "GONEUSDT").exists()


def test_a_start_date_after_now_fetches_no_history(emulator, tmp_path):
    # The report's case: start_date in the future, no archive funding, no klines. The epoch
    # fallback fetched the symbol's whole history; the date range limits fetching.
    rest = RestEmulator(now_ms=(D + 100) * DAY + 10)
    rest.add_synthetic_funding("um", "AUSDT", start_ms=D * DAY, end_ms=(D + 200) * DAY)
    emu = emulator(rest=rest)
    stats = run(emu.base_url, tmp_path, start_date=day_iso(D + 150), end_day=D + 160)
    assert stats["start_from"] == "start_date" and stats["pages"] == 0
    assert rest.counters("um").get("requests/fundingRate", 0) == 0
    assert not layout.api_funding_path(tmp_path, "um_futures", "AUSDT").exists()
    assert report(tmp_path)["records"] == 0


@pytest.mark.parametrize("known", ["nothing", "klines_before_start", "archive_before_start"])
def test_start_date_bounds_the_start_and_end_date_the_end(emulator, tmp_path, known):
    # Whatever lies before the run's first day (parsed klines or archive funding kept from
    # an earlier, longer range; or nothing, the epoch fallback), REST starts at start_date.
    rest = RestEmulator(now_ms=(D + 100) * DAY + 10)
    rest.add_synthetic_funding("um", "AUSDT", start_ms=D * DAY, end_ms=(D + 200) * DAY)
    emu = emulator(rest=rest)
    if known == "klines_before_start":
        write_first_kline(tmp_path, "AUSDT", "um_futures", D * DAY)
    if known == "archive_before_start":
        write_parsed_funding(tmp_path, "AUSDT", "um_futures", [(D + 2) * DAY])
    stats = run(emu.base_url, tmp_path, start_date=day_iso(D + 50), end_day=D + 59)
    assert stats["start_from"] == "start_date"
    # 10 days of 8-hourly events, D+50 00:00 .. D+59 16:00
    expected = served_times(rest, "um", "AUSDT", (D + 50) * DAY, (D + 60) * DAY - 1)
    assert len(expected) == 30
    assert stored(tmp_path)["funding_time"].cast("int64").to_pylist() == expected


def test_an_earlier_start_date_fetches_the_span_before_the_stored_events(emulator, tmp_path):
    rest = RestEmulator(now_ms=(D + 10) * DAY + 10)
    rest.add_synthetic_funding("um", "AUSDT", start_ms=D * DAY, end_ms=(D + 20) * DAY)
    emu = emulator(rest=rest)
    run(emu.base_url, tmp_path, start_date=day_iso(D + 5))
    expected = served_times(rest, "um", "AUSDT", (D + 5) * DAY, rest.now_ms)
    assert stored(tmp_path)["funding_time"].cast("int64").to_pylist() == expected
    # start_date moved back (a backfill): the days before the stored events are fetched too
    stats = run(emu.base_url, tmp_path, start_date=day_iso(D + 2))
    assert stats["new_records"] == 3 * 3 and stats["pages"] == 2  # the span, then the tail
    expected = served_times(rest, "um", "AUSDT", (D + 2) * DAY, rest.now_ms)
    assert stored(tmp_path)["funding_time"].cast("int64").to_pylist() == expected


def test_funding_pool_429s_are_waited_out(emulator, tmp_path):
    # The server allows 2 um fundingRate requests per 1 s; 5 pages are needed.
    rest = RestEmulator(now_ms=(D + 200) * DAY + 10, window_s=1, funding_limit=2, funding_windows=1)
    rest.add_synthetic_funding("um", "AUSDT", start_ms=D * DAY, end_ms=(D + 200) * DAY, every_h=1)
    emu = emulator(rest=rest)
    write_first_kline(tmp_path, "AUSDT", "um_futures", D * DAY)
    ei = tmp_path / "ei.json"
    write_json(ei, {"request_weight": {"limit": 2400, "window_s": 1.0}})
    stats = run(emu.base_url, tmp_path, ei=ei)
    assert stats["http_429"] > 0 and rest.counters("um").get("418", 0) == 0
    assert stored(tmp_path).num_rows == 200 * 24  # hourly events on [D, D+200)
    # The waits are counted (issue 13: they read 0.0): 5 pages at <= 2 per 1 s window take
    # at least two window turns, all spent waiting; one thread, so never more than the run.
    assert 1.0 <= stats["rate_limit_wait_s"] <= stats["seconds"]


def test_5xx_then_success_and_spot_is_refused(emulator, tmp_path):
    rest = RestEmulator(now_ms=(D + 3) * DAY + 10)
    rest.add_synthetic_funding("um", "AUSDT", start_ms=D * DAY, end_ms=(D + 9) * DAY)
    rest.inject(502, count=2, market="um", path="/fundingRate")
    emu = emulator(rest=rest)
    write_first_kline(tmp_path, "AUSDT", "um_futures", D * DAY)
    stats = run(emu.base_url, tmp_path)
    assert stats["retries"] == 2 and stored(tmp_path).num_rows == 10
    assert 0 < stats["retry_wait_s"] <= stats["seconds"]
    with pytest.raises(ValueError, match="spot"):
        run(emu.base_url, tmp_path, trade_type="spot")


def _shard_args(tmp, url, symbols, ei=None):
    return dict(
        symbols=symbols,
        shard=0,
        shard_report=str(tmp / "reports/shards/0.json"),
        symbol_paths={"report_path": str(tmp / "reports")},
        symbol_values={"parse_report": {s: None for s in symbols}},
        trade_type="um_futures",
        data_dir=str(tmp),
        api_url=url,
        end_date=None,
        exchange_info_path=ei,
        backoff_base_s=0.01,
    )


def test_shard_job_runs_every_symbol_through_one_client(emulator, tmp_path):
    from crypto_lakehouse.rest.host import for_each_symbol_on_host

    rest = RestEmulator(now_ms=(D + 30) * DAY)
    for i, symbol in enumerate(("AUSDT", "BUSDT", "CUSDT")):
        rest.add_synthetic_funding(
            "um", symbol, start_ms=D * DAY, end_ms=(D + 30) * DAY, seed=i, every_h=8
        )
    emu = emulator(rest=rest)
    for symbol in ("AUSDT", "BUSDT", "CUSDT"):
        write_first_kline(tmp_path, symbol, "um_futures", D * DAY)
    shard = for_each_symbol_on_host(run_api_funding)(
        **_shard_args(tmp_path, emu.base_url, ["AUSDT", "BUSDT", "CUSDT"])
    )
    assert shard["failed"] == []
    assert rest.counters("um")["requests/fundingRate"] == 3  # one page per symbol
    assert rest.counters("um")["requests/time"] == 1  # "now" is asked once per job
    requests = []
    for symbol in ("AUSDT", "BUSDT", "CUSDT"):
        # 30 days of 8-hourly events, as the emulator serves them
        expected = served_times(rest, "um", symbol, D * DAY, (D + 30) * DAY)
        got = stored(tmp_path, symbol)["funding_time"].cast(pa.int64()).to_pylist()
        assert got == expected and len(expected) == 90
        stats = json.loads((tmp_path / f"stats/{symbol}.json").read_text())
        assert stats["new_records"] == 90
        requests.append(stats["requests"])
    # each symbol's stats count its own requests (one page; the first also the server
    # time), not the job's
    assert requests == [2, 1, 1]


def test_a_ban_stops_the_remaining_symbols_of_the_shard(emulator, tmp_path):
    from crypto_lakehouse.rest.host import for_each_symbol_on_host
    from crypto_lakehouse.shards import ShardFailed

    rest = RestEmulator(now_ms=(D + 30) * DAY)
    for symbol in ("AUSDT", "BUSDT", "CUSDT"):
        rest.add_synthetic_funding("um", symbol, start_ms=D * DAY, end_ms=(D + 30) * DAY)
        write_first_kline(tmp_path, symbol, "um_futures", D * DAY)
    rest.inject(418, market="um", path="/fundingRate", after=1, retry_after=30)
    emu = emulator(rest=rest)
    with pytest.raises(ShardFailed, match="2 of 3 symbols failed: BUSDT, CUSDT"):
        for_each_symbol_on_host(run_api_funding)(
            **_shard_args(tmp_path, emu.base_url, ["AUSDT", "BUSDT", "CUSDT"])
        )
    shard = json.loads((tmp_path / "reports/shards/0.json").read_text())
    assert [shard["symbols"][s]["status"] for s in ("AUSDT", "BUSDT", "CUSDT")] == [
        "ok",
        "failed",
        "not_run",
    ]
    assert rest.counters("um")["requests/fundingRate"] == 2  # nothing sent after the ban


def test_a_host_answering_429_to_every_symbol_stops_the_shard_after_three(emulator, tmp_path):
    """The host answers 429 to every request: each of the first symbols gives up on its
    own (rest.max_retries), and the third in a row stops the host, so the remaining
    symbols are not asked at all (before, each waited out its own retries: a big shard
    took that long per symbol to fail)."""
    from crypto_lakehouse.rest.host import for_each_symbol_on_host
    from crypto_lakehouse.shards import ShardFailed

    symbols = ["AUSDT", "BUSDT", "CUSDT", "DUSDT", "EUSDT"]
    rest = RestEmulator(now_ms=(D + 30) * DAY)
    for symbol in symbols:
        rest.add_synthetic_funding("um", symbol, start_ms=D * DAY, end_ms=(D + 30) * DAY)
        write_first_kline(tmp_path, symbol, "um_futures", D * DAY)
    rest.inject(429, count=10**6, market="um", path="/fundingRate", retry_after=0)
    emu = emulator(rest=rest)
    with pytest.raises(ShardFailed, match="5 of 5 symbols failed"):
        for_each_symbol_on_host(run_api_funding)(
            **_shard_args(tmp_path, emu.base_url, symbols), max_retries=0
        )
    shard = json.loads((tmp_path / "reports/shards/0.json").read_text())
    statuses = [shard["symbols"][s]["status"] for s in symbols]
    assert statuses == ["failed", "failed", "failed", "not_run", "not_run"], statuses
    assert rest.counters("um")["requests/fundingRate"] == 3  # nothing sent after the stop
    log_text = json.dumps(shard)
    assert "3 requests in a row gave up after HTTP 429" in log_text


def test_a_shards_symbols_at_once_share_one_limiter_without_any_429(emulator, tmp_path):
    from crypto_lakehouse.rest.host import SYMBOLS_AT_ONCE, run_host_shard

    # More symbols than run at once, and more weight than one window allows: every thread
    # spends from the job's one budget (48 of the server's 60 per 2 s window).
    symbols = [f"S{i}USDT" for i in range(SYMBOLS_AT_ONCE + 2)]
    rest = _rest_with_klines_and_funding(symbols, window_s=2, weight_limits={"um": 60})
    emu = emulator(rest=rest)
    write_json(tmp_path / "parse.json", {})
    for symbol in symbols:
        write_first_kline(tmp_path, symbol, "um_futures", D * DAY)
    write_json(tmp_path / "ei.json", {"request_weight": {"limit": 60, "window_s": 2.0}})
    args = _host_shard_args(tmp_path, emu.base_url, symbols)
    shard = run_host_shard(**dict(args, exchange_info_path=str(tmp_path / "ei.json")))
    assert shard["failed"] == []
    c = rest.counters("um")
    assert c.get("429", 0) == 0 and c.get("418", 0) == 0
    assert c["requests/time"] == 1  # "now" asked once for the whole job
    assert c["requests/klines"] == 6 * len(symbols)
    # per symbol two days of three requests of weight 2: 120 + 1 > 48, so the limiter waited
    stats = [json.loads((tmp_path / f"stats/klines-1m/{s}.json").read_text()) for s in symbols]
    assert max(x["rate_limit_wait_s"] for x in stats) > 0
    # each symbol's stats count its own requests, not those of the symbols running beside
    # it (one of them also asked the server time)
    assert sorted(x["requests"] for x in stats) == [6] * (len(symbols) - 1) + [7]
    assert sorted(x["weight"] for x in stats) == [12] * (len(symbols) - 1) + [13]
    for symbol in symbols:
        api_dir = layout.api_klines_dir(tmp_path, "um_futures", symbol, "1m")
        assert sorted(p.name for p in api_dir.glob("*.pqt")) == [
            f"{day_iso(d).replace('-', '')}.pqt" for d in (D, D + 1)
        ]


def _host_shard_args(tmp, url, symbols):
    reports = tmp / "reports"
    return dict(
        shard=0,
        shard_report=str(reports / "shards/0.json"),
        klines={
            "symbols": symbols,
            "symbol_paths": {"report_path": str(reports / "klines-1m")},
            "symbol_values": {"parse_report": {s: str(tmp / "parse.json") for s in symbols}},
        },
        funding={
            "symbols": symbols,
            "symbol_paths": {"report_path": str(reports / "funding")},
            "symbol_values": {"parse_report": {s: None for s in symbols}},
        },
        interval="1m",
        trade_type="um_futures",
        data_dir=str(tmp),
        api_url=url,
        end_date=None,
        exchange_info_path=None,
        backoff_base_s=0.01,
    )


def _rest_with_klines_and_funding(symbols, **emulator_kw):
    rest = RestEmulator(now_ms=(D + 2) * DAY + HOUR, **emulator_kw)
    for i, symbol in enumerate(symbols):
        rest.add_synthetic_klines("um", symbol, start_ms=D * DAY, seed=i)
        rest.add_synthetic_funding(
            "um", symbol, start_ms=D * DAY, end_ms=(D + 2) * DAY, seed=i, every_h=8
        )
    return rest


def test_rest_shard_job_fills_klines_then_funding_in_one_report(emulator, tmp_path):
    from crypto_lakehouse.rest.host import run_host_shard

    symbols = ["AUSDT", "BUSDT"]
    rest = _rest_with_klines_and_funding(symbols)
    emu = emulator(rest=rest)
    write_json(tmp_path / "parse.json", {})
    for symbol in symbols:
        write_first_kline(tmp_path, symbol, "um_futures", D * DAY)
    shard = run_host_shard(**_host_shard_args(tmp_path, emu.base_url, symbols))
    assert shard["failed"] == []
    assert sorted(shard["symbols"]) == [
        "funding/AUSDT",
        "funding/BUSDT",
        "klines-1m/AUSDT",
        "klines-1m/BUSDT",
    ]
    for symbol in symbols:
        # day D holds one archived row: D and D+1 are fetched (D+2 is not over at now)
        api_dir = layout.api_klines_dir(tmp_path, "um_futures", symbol, "1m")
        assert sorted(p.name for p in api_dir.glob("*.pqt")) == [
            f"{day_iso(d).replace('-', '')}.pqt" for d in (D, D + 1)
        ]
        expected = served_times(rest, "um", symbol, D * DAY, (D + 2) * DAY)
        got = stored(tmp_path, symbol)["funding_time"].cast(pa.int64()).to_pylist()
        assert got == expected and len(expected) == 6
        for part in ("klines-1m", "funding"):
            assert (tmp_path / f"reports/{part}/{symbol}.json").exists()
    written = json.loads((tmp_path / "reports/shards/0.json").read_text())
    assert written["symbols"]["funding/BUSDT"]["report"].endswith("reports/funding/BUSDT.json")


def test_rest_shard_job_bounds_funding_by_start_date_not_klines(emulator, tmp_path):
    from crypto_lakehouse.rest.host import run_host_shard

    symbols = ["AUSDT"]
    rest = _rest_with_klines_and_funding(symbols)
    emu = emulator(rest=rest)
    write_json(tmp_path / "parse.json", {})
    write_first_kline(tmp_path, "AUSDT", "um_futures", D * DAY)
    args = dict(_host_shard_args(tmp_path, emu.base_url, symbols), start_date=day_iso(D + 1))
    shard = run_host_shard(**args)
    assert shard["failed"] == []
    # klines fill from the first archived day (docs/config.md, Dates), funding from start_date
    api_dir = layout.api_klines_dir(tmp_path, "um_futures", "AUSDT", "1m")
    assert sorted(p.name for p in api_dir.glob("*.pqt")) == [
        f"{day_iso(d).replace('-', '')}.pqt" for d in (D, D + 1)
    ]
    expected = served_times(rest, "um", "AUSDT", (D + 1) * DAY, (D + 2) * DAY)
    got = stored(tmp_path, "AUSDT")["funding_time"].cast(pa.int64()).to_pylist()
    assert got == expected and len(expected) == 3


def test_a_ban_in_the_klines_part_stops_the_funding_part_too(emulator, tmp_path):
    from crypto_lakehouse.rest.host import run_host_shard
    from crypto_lakehouse.shards import ShardFailed

    symbols = ["AUSDT", "BUSDT"]
    rest = _rest_with_klines_and_funding(symbols)
    rest.inject(418, market="um", path="/klines", retry_after=30)
    emu = emulator(rest=rest)
    write_json(tmp_path / "parse.json", {})
    for symbol in symbols:
        write_first_kline(tmp_path, symbol, "um_futures", D * DAY)
    with pytest.raises(ShardFailed, match="4 of 4 symbols failed"):
        run_host_shard(**_host_shard_args(tmp_path, emu.base_url, symbols))
    shard = json.loads((tmp_path / "reports/shards/0.json").read_text())
    assert shard["symbols"]["klines-1m/AUSDT"]["status"] == "failed"
    assert [shard["symbols"][k]["status"] for k in ("funding/AUSDT", "funding/BUSDT")] == [
        "not_run",
        "not_run",
    ]
    assert rest.counters("um").get("requests/fundingRate", 0) == 0


def test_a_symbol_answered_429_persistently_fails_in_bounded_time_the_others_complete(
    emulator, tmp_path
):
    import time

    from crypto_lakehouse.rest.host import run_host_shard
    from crypto_lakehouse.shards import ShardFailed

    symbols = ["AUSDT", "BUSDT"]
    rest = _rest_with_klines_and_funding(symbols)
    # Every klines request of BUSDT is answered 429 with Retry-After: 1, for good.
    rest.inject(429, count=10**6, market="um", path="/klines", symbol="BUSDT", retry_after=1)
    emu = emulator(rest=rest)
    write_json(tmp_path / "parse.json", {})
    for symbol in symbols:
        write_first_kline(tmp_path, symbol, "um_futures", D * DAY)
    # 1 s windows: the code before waited to a window's end per 429 (up to 100 per request);
    # the test must end with the old code too, and fail there on the time it took.
    write_json(tmp_path / "ei.json", {"request_weight": {"limit": 2400, "window_s": 1.0}})
    args = dict(
        _host_shard_args(tmp_path, emu.base_url, symbols),
        exchange_info_path=str(tmp_path / "ei.json"),
        max_retries=2,
    )
    t0 = time.monotonic()
    with pytest.raises(ShardFailed, match=r"1 of 4 symbols failed: klines-1m/BUSDT"):
        run_host_shard(**args)
    elapsed = time.monotonic() - t0
    # BUSDT's two days are two chunks asked at once; each first request is tried 1 + 2
    # times, 1 s apart; then the symbol is given up. Generous bound: the point is seconds,
    # not minutes.
    assert elapsed < 30
    assert rest.counters("um")["429"] <= 2 * 3
    shard = json.loads((tmp_path / "reports/shards/0.json").read_text())
    failed = shard["symbols"]["klines-1m/BUSDT"]
    assert failed["status"] == "failed"
    assert failed["error"].startswith("RateLimited: um_futures BUSDT 1m: given up after HTTP 429s")
    assert "/fapi/v1/klines?symbol=BUSDT" in failed["error"]
    assert "kept answering HTTP 429" in failed["error"]
    stats = json.loads((tmp_path / "stats/klines-1m/BUSDT.json").read_text())
    assert stats["days_failed"] == 2 and stats["days_fetched"] == 0
    for entry in ("klines-1m/AUSDT", "funding/AUSDT", "funding/BUSDT"):
        assert shard["symbols"][entry]["status"] == "ok"
    api_dir = layout.api_klines_dir(tmp_path, "um_futures", "AUSDT", "1m")
    assert sorted(p.name for p in api_dir.glob("*.pqt")) == [
        f"{day_iso(d).replace('-', '')}.pqt" for d in (D, D + 1)
    ]
    assert not list(layout.api_klines_dir(tmp_path, "um_futures", "BUSDT", "1m").glob("*.pqt"))


def write_parsed_funding(tmp, symbol, trade_type, times_ms):
    """The archive's parsed funding file holding events at ``times_ms``."""
    n = len(times_ms)
    write_parquet(
        layout.parsed_funding_path(tmp, trade_type, symbol),
        pa.table(
            {
                "funding_time": pa.array(times_ms, PARSED_FUNDING_SCHEMA.field(0).type),
                "funding_interval_hours": pa.array([8] * n, pa.int64()),
                "funding_rate": pa.array([1e-4] * n),
                "candle_begin_time": pa.array(
                    [t - t % HOUR for t in times_ms], PARSED_FUNDING_SCHEMA.field(3).type
                ),
            }
        ),
    )


def test_a_backfill_fetches_the_span_before_the_stored_events(emulator, tmp_path):
    # First run: klines from D+3, no archive funding: REST from D+3. Then start_date moved
    # back: the archive's funding (last event D+1 16:00) and klines from D are parsed. REST must
    # now also cover (D+1 16:00, D+3 00:00): the three events of D+2.
    rest = RestEmulator(now_ms=(D + 6) * DAY + 10)
    rest.add_synthetic_funding("um", "AUSDT", start_ms=D * DAY, end_ms=(D + 20) * DAY)
    emu = emulator(rest=rest)
    write_first_kline(tmp_path, "AUSDT", "um_futures", (D + 3) * DAY)
    run(emu.base_url, tmp_path)
    assert stored(tmp_path)["funding_time"].cast("int64").to_pylist() == served_times(
        rest, "um", "AUSDT", (D + 3) * DAY, rest.now_ms
    )
    last_archived = served_times(rest, "um", "AUSDT", D * DAY, (D + 2) * DAY - 1)[-1]
    write_parsed_funding(tmp_path, "AUSDT", "um_futures", [last_archived])
    expected = served_times(rest, "um", "AUSDT", last_archived + 1, rest.now_ms)
    before = rest.counters("um")["requests/fundingRate"]
    stats = run(emu.base_url, tmp_path)
    assert len(expected) == 4 * 3 + 1  # D+2 00:00 .. D+6 00:00
    assert stored(tmp_path)["funding_time"].cast("int64").to_pylist() == expected
    assert stats["new_records"] == 3 and stats["pages"] == 2
    assert rest.counters("um")["requests/fundingRate"] - before == 2  # the span, then the tail
    # Covered now: the next run asks the tail only.
    stats = run(emu.base_url, tmp_path)
    assert stats["pages"] == 1 and stats["new_records"] == 0


def test_a_stored_file_without_a_record_is_completed_once(emulator, tmp_path):
    # A data dir from before the record: stored events begin after the archive's last event
    # plus a gap; the span is asked once, then the record says it is covered.
    rest = RestEmulator(now_ms=(D + 6) * DAY + 10)
    rest.add_synthetic_funding("um", "AUSDT", start_ms=D * DAY, end_ms=(D + 20) * DAY)
    emu = emulator(rest=rest)
    served = served_times(rest, "um", "AUSDT", D * DAY, rest.now_ms)
    write_parsed_funding(tmp_path, "AUSDT", "um_futures", served[:2])
    run(emu.base_url, tmp_path)
    layout.state_path(tmp_path, "api_download_funding", "um_futures", "funding", "AUSDT").unlink()
    t = stored(tmp_path)
    write_parquet(layout.api_funding_path(tmp_path, "um_futures", "AUSDT"), t.slice(3))
    stats = run(emu.base_url, tmp_path)
    assert stats["pages"] == 2 and stats["new_records"] == 3
    assert stored(tmp_path)["funding_time"].cast("int64").to_pylist() == served[2:]
    assert run(emu.base_url, tmp_path)["pages"] == 1


def test_a_delisted_symbols_funding_tail_is_not_asked_once_events_are_known(emulator, tmp_path):
    import requests

    from crypto_lakehouse.rest.exchange_info import summarize_exchange_info

    # OLDUSDT (delisted: not in exchangeInfo) paid funding until D+3; AUSDT trades.
    rest = RestEmulator(now_ms=(D + 10) * DAY + 10)
    rest.add_synthetic_funding("um", "OLDUSDT", start_ms=D * DAY, end_ms=(D + 3) * DAY)
    rest.add_symbol("um", "OLDUSDT", listed=False)
    rest.add_synthetic_funding("um", "AUSDT", start_ms=D * DAY, end_ms=(D + 20) * DAY)
    emu = emulator(rest=rest)
    raw = requests.get(f"{emu.base_url}/fapi/v1/exchangeInfo", timeout=10).json()
    assert "OLDUSDT" not in {s["symbol"] for s in raw["symbols"]}
    ei = tmp_path / "exchange_info.json"
    write_json(ei, summarize_exchange_info(raw, "um_futures"))
    for symbol in ("OLDUSDT", "AUSDT"):
        write_first_kline(tmp_path, symbol, "um_futures", D * DAY)

    def funding_requests(symbol):
        before = rest.counters("um").get("requests/fundingRate", 0)
        run(emu.base_url, tmp_path, symbol=symbol, ei=ei)
        return rest.counters("um").get("requests/fundingRate", 0) - before

    # Nothing known yet: its history is asked once, as for any symbol.
    assert funding_requests("OLDUSDT") == 1
    history = served_times(rest, "um", "OLDUSDT", D * DAY, rest.now_ms)
    assert len(history) == 9  # every 8 h from D to D+3
    assert stored(tmp_path, "OLDUSDT")["funding_time"].cast("int64").to_pylist() == history
    assert report(tmp_path)["status"] == "delisted"
    assert funding_requests("AUSDT") == 1
    for day in (11, 12):  # the next daily runs
        rest.now_ms = (D + day) * DAY + 10
        assert funding_requests("OLDUSDT") == 0  # before: one request a day, for nothing
        assert funding_requests("AUSDT") == 1
    assert stored(tmp_path, "OLDUSDT").num_rows == len(history)
