"""REST day fill (``run_api_klines``) against the emulator: which days, what is written, faults."""

from __future__ import annotations

import gzip
import json
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from crypto_lakehouse_emulator.rest import RestEmulator

from crypto_lakehouse import layout
from crypto_lakehouse.io import write_json, write_parquet
from crypto_lakehouse.provenance import day_iso
from crypto_lakehouse.rest import archive_days
from crypto_lakehouse.rest.archive_days import day_counts
from crypto_lakehouse.rest.client import HostStopped, RateLimited, TransientFailure
from crypto_lakehouse.rest.klines import klines_to_table, run_api_klines
from crypto_lakehouse.schema import KLINE_SCHEMA, TIME_TYPE
from tests.conftest import FIXTURES

DAY = 86_400_000
MIN = 60_000
D = 19_000  # 2022-01-08 as a day number
SYM = "AUSDT"
T = "um_futures"


def write_archive(rest, data_dir, days, *, symbol=SYM, keep_rows=None, market="um"):
    """Parsed archive partitions holding the emulator's candles of ``days``
    (only the first ``keep_rows[day]`` candles of a short day)."""
    keep_rows = keep_rows or {}
    rows = []
    for d in days:
        day_rows = rest.klines_rows(market, symbol, "1m", d * DAY, (d + 1) * DAY)
        rows += day_rows[: keep_rows.get(d, len(day_rows))]
    table = klines_to_table(rows, lo_ms=0, hi_ms=2**62, now_ms=2**62)
    out = layout.parsed_klines_dir(
        data_dir, {"um": T, "spot": "spot", "cm": "cm_futures"}[market], symbol, "1m"
    )
    write_parquet(out / "202201.pqt", table)


def exchange_info(tmp, limit, window_s=1.0):
    path = tmp / "ei.json"
    write_json(path, {"request_weight": {"limit": limit, "window_s": window_s}})
    return path


def run(url, tmp, end_day, *, symbol=SYM, trade_type=T, parse_report=None, ei=None, **kw):
    kw.setdefault("backoff_base_s", 0.01)
    return run_api_klines(
        trade_type=trade_type,
        symbol=symbol,
        interval="1m",
        data_dir=tmp,
        api_url=url,
        parse_report={"partitions": {}} if parse_report is None else parse_report,
        exchange_info_path=ei,
        end_date=day_iso(end_day),
        report_path=tmp / "report.json",
        stats_path=tmp / "stats.json",
        **kw,
    )


def day_path(tmp, d, symbol=SYM, trade_type=T):
    return (
        layout.api_klines_dir(tmp, trade_type, symbol, "1m") / f"{day_iso(d).replace('-', '')}.pqt"
    )


def day_files(tmp, symbol=SYM, trade_type=T):
    d = layout.api_klines_dir(tmp, trade_type, symbol, "1m")
    return sorted(p.name for p in d.glob("*.pqt")) if d.exists() else []


def provenance(tmp, symbol=SYM, trade_type=T):
    df = pq.read_table(layout.provenance_path(tmp, trade_type, "1m", symbol)).to_pandas()
    return {str(r.day): (r.source, r.archive_rows, r.rest_rows, r.rows) for r in df.itertuples()}


def report(tmp):
    return json.loads((tmp / "report.json").read_text())


def expected_day(rest, d, symbol=SYM, market="um"):
    rows = rest.klines_rows(market, symbol, "1m", d * DAY, (d + 1) * DAY)
    return klines_to_table(rows, lo_ms=0, hi_ms=2**62, now_ms=2**62)


@pytest.fixture
def um(emulator):
    """An emulator with one synthetic um symbol listed on day D; "now" = day D+5, 01:00."""
    rest = RestEmulator(now_ms=(D + 5) * DAY + 3_600_000)
    rest.add_synthetic_klines("um", SYM, start_ms=D * DAY, seed=7)
    return rest, emulator(rest=rest)


# ---------------------------------------------------------------- conversion (real data)
def test_rest_arrays_to_legacy_table_drop_the_open_candle():
    rows = json.loads(
        (FIXTURES / "real" / "rest" / "api_v3_klines_BTCUSDT_1m_2021-10-22.json").read_text()
    )
    # "now" inside the last candle: it is still open and must be dropped.
    now = rows[-1][0] + 1
    t = klines_to_table(rows, lo_ms=0, hi_ms=2**62, now_ms=now)
    assert t.schema == KLINE_SCHEMA
    assert t.num_rows == len(rows) - 1
    assert t["candle_begin_time"].cast("int64").to_pylist() == [r[0] for r in rows[:-1]]
    assert t["open"].to_pylist() == [float(r[1]) for r in rows[:-1]]
    assert t["quote_volume"].to_pylist() == [float(r[7]) for r in rows[:-1]]
    assert t["trade_num"].to_pylist() == [r[8] for r in rows[:-1]]
    assert t["taker_buy_quote_asset_volume"].to_pylist() == [float(r[10]) for r in rows[:-1]]


def test_candles_off_the_grid_are_floored_onto_it(emulator, tmp_path):
    """After Binance's spot outage of 2018-02-08 the 1m candles of every spot symbol opened
    at ``…:14.789`` for hours (binance-public-data #14, #77: the REST answer holds them as
    the archive does). Stored as they came, every later gen_kline of the symbol failed on
    them ("not on the 60000 ms grid"). They are floored onto the grid; a candle that was on
    the grid wins over a floored one of the same minute."""
    import pandas as pd

    rest = RestEmulator(now_ms=(D + 2) * DAY + 3_600_000)
    hour9 = D * DAY + 9 * 3_600_000
    on = [D * DAY + i * MIN for i in range(30)]  # 00:00 … 00:29
    shifted = [hour9 + i * MIN + 14_789 for i in range(20)]  # 09:00:14.789 … 09:19:14.789
    back = [hour9 + (19 + i) * MIN for i in range(10)]  # 09:19 (clashes) … 09:28, on the grid
    times = on + shifted + back
    price = [100.0 + i for i in range(len(times))]
    frame = pd.DataFrame(
        {"open_time": times, "open": price, "high": price, "low": price, "close": price,
         "volume": [1.0] * len(times)}
    )  # fmt: skip
    rest.add_klines("spot", SYM, frame)
    emu = emulator(rest=rest)
    # the archive holds day D-1 (the anchor of the REST range), not day D
    archive = {"candle_begin_time": [(D - 1) * DAY + i * MIN for i in range(1440)]}
    table = pa.table(
        {name: archive["candle_begin_time"] if name == "candle_begin_time" else [1.0] * 1440
         for name in KLINE_SCHEMA.names}
    )  # fmt: skip
    write_parquet(
        layout.parsed_klines_dir(tmp_path, "spot", SYM, "1m") / "202201.pqt",
        table.cast(KLINE_SCHEMA),
    )
    stats = run(emu.base_url, tmp_path, D + 1, trade_type="spot")
    got = pq.read_table(day_path(tmp_path, D, trade_type="spot"))
    got_times = got["candle_begin_time"].cast(pa.int64()).to_pylist()
    want_times = on + [hour9 + i * MIN for i in range(29)]
    assert got_times == want_times
    # each floored candle keeps its own values; 09:19 is the on-grid candle's
    want_open = price[:30] + price[30:49] + price[50:]
    assert got["open"].to_pylist() == want_open
    assert stats["candles_off_grid"] == 20


# ---------------------------------------------------------------- which days
def test_interior_missing_day_is_fetched_alone(um, tmp_path):
    rest, emu = um
    write_archive(rest, tmp_path, [D, D + 1, D + 3])
    stats = run(emu.base_url, tmp_path, D + 3)
    assert day_files(tmp_path) == [day_path(tmp_path, D + 2).name]
    assert pq.read_table(day_path(tmp_path, D + 2)).equals(expected_day(rest, D + 2))
    # a 1440-candle futures day is 3 requests of limit 480 (weight 2 each)
    assert rest.counters("um")["requests/klines"] == 3
    assert stats["weight"] == 3 * 2 + 1  # + /time
    prov = provenance(tmp_path)
    assert prov[day_iso(D + 2)] == ("rest", 0, 1440, 1440)
    assert prov[day_iso(D)][0] == "archive"


def test_short_archive_day_is_completed(um, tmp_path):
    rest, emu = um
    write_archive(rest, tmp_path, [D, D + 1], keep_rows={D + 1: 1000})
    run(emu.base_url, tmp_path, D + 1)
    assert day_files(tmp_path) == [day_path(tmp_path, D + 1).name]
    assert provenance(tmp_path)[day_iso(D + 1)] == ("mixed", 1000, 1440, 1440)
    assert report(tmp_path)["days_incomplete"] == 0


def test_recent_tail_after_the_archive_is_fetched_but_not_the_open_day(um, tmp_path):
    rest, emu = um  # now = D+5 01:00
    write_archive(rest, tmp_path, [D, D + 1])
    run(emu.base_url, tmp_path, D + 5)
    assert day_files(tmp_path) == [day_path(tmp_path, d).name for d in (D + 2, D + 3, D + 4)]
    for d in (D + 2, D + 3, D + 4):
        assert pq.read_table(day_path(tmp_path, d)).num_rows == 1440
    rep = report(tmp_path)
    assert rep["pending_days"] == [[day_iso(D + 5), day_iso(D + 5)]]
    assert rep["last_candle"] == day_iso(D + 4) + "T23:59:00Z"
    assert rep["freshness_lag_minutes"] == 1440  # the whole of end_date is still to come
    # the next day, the now-complete day is fetched and nothing else
    rest.now_ms = (D + 6) * DAY + 30_000
    before = rest.counters("um")["requests/klines"]
    run(emu.base_url, tmp_path, D + 5)
    assert rest.counters("um")["requests/klines"] - before == 3
    assert pq.read_table(day_path(tmp_path, D + 5)).num_rows == 1440
    assert report(tmp_path)["freshness_lag_minutes"] == 0


def test_no_unfinished_candle_is_ever_stored(emulator, tmp_path):
    # The server serves candles up to its "now"; the last one is open.
    now = (D + 2) * DAY + 90 * MIN + 5_000
    rest = RestEmulator(now_ms=now)
    rest.add_synthetic_klines("spot", SYM, start_ms=D * DAY)
    emu = emulator(rest=rest)
    write_archive(rest, tmp_path, [D], market="spot")
    run(emu.base_url, tmp_path, D + 2, trade_type="spot")
    files = day_files(tmp_path, trade_type="spot")
    assert files == [day_path(tmp_path, D + 1).name]  # D+2 is still open: no file
    assert report(tmp_path)["pending_days"] == [[day_iso(D + 2), day_iso(D + 2)]]


def test_delisted_symbol_gets_empty_day_files_and_missing_provenance(emulator, tmp_path):
    rest = RestEmulator(now_ms=(D + 10) * DAY)
    rest.add_synthetic_klines("um", SYM, start_ms=D * DAY, end_ms=(D + 2) * DAY, listed=False)
    emu = emulator(rest=rest)
    write_archive(rest, tmp_path, [D, D + 1])
    run(emu.base_url, tmp_path, D + 4)
    assert day_files(tmp_path) == [day_path(tmp_path, d).name for d in (D + 2, D + 3, D + 4)]
    assert all(pq.read_table(day_path(tmp_path, d)).num_rows == 0 for d in (D + 2, D + 3, D + 4))
    assert pq.read_table(day_path(tmp_path, D + 2)).schema == KLINE_SCHEMA
    prov = provenance(tmp_path)
    assert [prov[day_iso(d)][0] for d in range(D, D + 5)] == ["archive"] * 2 + ["missing"] * 3
    rep = report(tmp_path)
    assert rep["missing_days"] == [[day_iso(D + 2), day_iso(D + 4)]]
    assert rep["rest_empty_day_files"] == 3
    # empty answers mark the days done: the next run asks nothing
    before = rest.counters("um")["requests/klines"]
    run(emu.base_url, tmp_path, D + 4)
    assert rest.counters("um")["requests/klines"] == before


def test_symbol_without_archive_is_skipped_without_requests(um, tmp_path):
    rest, emu = um
    stats = run_api_klines(
        trade_type=T,
        symbol="NEWUSDT",
        interval="1m",
        data_dir=tmp_path,
        api_url=emu.base_url,
        parse_report=None,
        exchange_info_path=None,
        end_date=day_iso(D + 3),
        report_path=tmp_path / "report.json",
        stats_path=tmp_path / "stats.json",
    )
    assert report(tmp_path)["status"] == "no_archive"
    assert day_files(tmp_path, symbol="NEWUSDT") == []
    assert stats["days_planned"] == 0


def test_archive_day_supersedes_an_old_rest_day(um, tmp_path):
    rest, emu = um
    write_archive(rest, tmp_path, [D, D + 2])
    run(emu.base_url, tmp_path, D + 2)
    assert day_files(tmp_path) == [day_path(tmp_path, D + 1).name]
    write_archive(rest, tmp_path, [D, D + 1, D + 2])  # the archive now has D+1
    stats = run(emu.base_url, tmp_path, D + 2)
    assert day_files(tmp_path) == []
    assert stats["rest_days_superseded"] == 1
    assert provenance(tmp_path)[day_iso(D + 1)][0] == "archive"


def test_real_truth_series_fills_a_short_real_day(emulator, tmp_path):
    """um BTCUSDT 2022-09-05 from the legacy-v1-real truth CSV; the archive holds its first
    half only; REST completes it with exactly the CSV values."""
    csv = FIXTURES / "legacy-v1-real" / "truth" / "klines" / "um" / "BTCUSDT-1m.csv.gz"
    lines = gzip.decompress(csv.read_bytes()).decode().splitlines()[1:]
    day = int(lines[0].split(",")[0]) // DAY
    rest = RestEmulator(now_ms=(day + 2) * DAY + 3_600_000)
    rest.add_klines("um", "BTCUSDT", csv)
    emu = emulator(rest=rest)
    write_archive(rest, tmp_path, [day], symbol="BTCUSDT", keep_rows={day: 720})
    run(emu.base_url, tmp_path, day + 1, symbol="BTCUSDT")
    t = pq.read_table(day_path(tmp_path, day, symbol="BTCUSDT"))
    assert t.num_rows == len(lines) == 1440
    fields = [ln.split(",") for ln in lines]
    assert t["candle_begin_time"].cast("int64").to_pylist() == [int(f[0]) for f in fields]
    assert t["close"].to_pylist() == [float(f[4]) for f in fields]
    assert t["quote_volume"].to_pylist() == [float(f[6]) for f in fields]
    assert t["trade_num"].to_pylist() == [int(f[7]) for f in fields]
    prov = provenance(tmp_path, symbol="BTCUSDT")
    assert prov[day_iso(day)] == ("mixed", 720, 1440, 1440)
    assert prov[day_iso(day + 1)] == ("missing", 0, 0, 0)  # the truth has no other minutes


# ---------------------------------------------------------------- limits and faults
def test_tiny_weight_limit_forces_429s_that_are_waited_out(emulator, tmp_path):
    # The server allows 12 weight per 1 s window, but exchange info claims 2400: the client
    # only learns from 429s. Four separate missing days run on four threads.
    rest = RestEmulator(now_ms=(D + 9) * DAY, window_s=1, weight_limits={"um": 12})
    rest.add_synthetic_klines("um", SYM, start_ms=D * DAY)
    emu = emulator(rest=rest)
    write_archive(rest, tmp_path, [D, D + 2, D + 4, D + 6, D + 8])
    stats = run(emu.base_url, tmp_path, D + 8, ei=exchange_info(tmp_path, 2400))
    c = rest.counters("um")
    assert c["429"] > 0 and c.get("418", 0) == 0
    assert stats["http_429"] == c["429"]
    for d in (D + 1, D + 3, D + 5, D + 7):
        assert pq.read_table(day_path(tmp_path, d)).equals(expected_day(rest, d))


def test_known_limit_is_respected_without_any_429(emulator, tmp_path):
    # 2 s windows on both sides: the limiter's guard time is 5 % of a window (50 ms on 1 s
    # windows was shorter than a scheduling delay on a loaded machine, now and then).
    rest = RestEmulator(now_ms=(D + 9) * DAY, window_s=2, weight_limits={"um": 20})
    rest.add_synthetic_klines("um", SYM, start_ms=D * DAY)
    emu = emulator(rest=rest)
    write_archive(rest, tmp_path, [D, D + 2, D + 4, D + 6, D + 8])
    stats = run(emu.base_url, tmp_path, D + 8, ei=exchange_info(tmp_path, 20, window_s=2.0))
    assert rest.counters("um").get("429", 0) == 0
    assert stats["days_fetched"] == 4
    # 12 requests of weight 2 + /time = 25 > 16 per window: the limiter had to wait
    assert stats["rate_limit_wait_s"] > 0


def test_418_stops_the_job_with_a_clear_message(um, tmp_path):
    rest, emu = um
    write_archive(rest, tmp_path, [D])
    rest.inject(418, market="um", path="/klines", after=2, retry_after=30)
    with pytest.raises(HostStopped, match=r"418.*Retry-After=30"):
        run(emu.base_url, tmp_path, D + 4, concurrency=1)
    assert rest.counters("um")["requests/klines"] == 3  # nothing sent after the ban


def test_403_stops_the_job(um, tmp_path):
    rest, emu = um
    write_archive(rest, tmp_path, [D])
    rest.inject(403, market="um", path="/klines")
    with pytest.raises(HostStopped, match="403"):
        run(emu.base_url, tmp_path, D + 2, concurrency=1)
    assert rest.counters("um")["requests/klines"] == 1


def test_5xx_burst_is_retried(um, tmp_path):
    rest, emu = um
    write_archive(rest, tmp_path, [D])
    rest.inject(503, count=3, market="um", path="/klines")
    stats = run(emu.base_url, tmp_path, D + 2)
    assert stats["http_5xx"] == 3 and stats["retries"] == 3
    assert stats["days_fetched"] == 2


def test_long_failure_run_opens_the_circuit_breaker_then_recovers(um, tmp_path):
    rest, emu = um
    write_archive(rest, tmp_path, [D])
    rest.inject(500, count=6, market="um", path="/klines")
    stats = run(emu.base_url, tmp_path, D + 1, concurrency=1, max_retries=8)
    assert stats["breaker_opens"] == 1 and stats["days_fetched"] == 1


def test_timeouts_are_retried(um, tmp_path):
    rest, emu = um
    write_archive(rest, tmp_path, [D])
    rest.inject(None, count=1, market="um", path="/klines", delay_s=1.0)
    stats = run(emu.base_url, tmp_path, D + 1, timeout_s=0.3)
    assert stats["network_errors"] == 1 and stats["days_fetched"] == 1


def test_failures_outlasting_retries_fail_the_job_after_other_days(um, tmp_path):
    rest, emu = um
    write_archive(rest, tmp_path, [D, D + 2])
    # the first day (D+1, 3 requests) succeeds, the next two (D+3, D+4) never do
    rest.inject(500, count=1000, market="um", path="/klines", after=3)
    with pytest.raises(TransientFailure, match="not fetched after retries"):
        run(emu.base_url, tmp_path, D + 4, concurrency=1, max_retries=2)
    assert day_files(tmp_path) == [day_path(tmp_path, D + 1).name]
    assert json.loads((tmp_path / "stats.json").read_text())["days_failed"] == 2


def test_persistent_429_gives_up_the_symbol_without_asking_its_other_days(um, tmp_path):
    rest, emu = um
    write_archive(rest, tmp_path, [D])
    # Days D+1..D+3 are missing; the host answers 429 (Retry-After: 1) to every klines request.
    rest.inject(429, count=10**6, market="um", path="/klines", retry_after=1)
    with pytest.raises(RateLimited, match=r"um_futures AUSDT 1m: given up after HTTP 429s, 3 day"):
        run(emu.base_url, tmp_path, D + 3, concurrency=1, max_retries=1)
    # One request tried twice; the other days would only draw more 429s: never asked.
    assert rest.counters("um")["requests/klines"] == 2
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["days_failed"] == 3 and stats["http_429"] == 2
    assert day_files(tmp_path) == []


@pytest.mark.parametrize("how", ["unknown", "status"])
def test_invalid_symbol_is_skipped(um, tmp_path, how):
    rest, emu = um
    symbol = "GONEUSDT"
    if how == "status":
        rest.add_symbol("um", symbol)
        rest.set_invalid_status("um", symbol)
    write_archive(rest, tmp_path, [D], symbol=SYM)
    # an archive for the invalid symbol: copy SYM's partition under its name
    src = layout.parsed_klines_dir(tmp_path, T, SYM, "1m") / "202201.pqt"
    dst = layout.parsed_klines_dir(tmp_path, T, symbol, "1m") / "202201.pqt"
    write_parquet(dst, pq.read_table(src))
    run(emu.base_url, tmp_path, D + 3, symbol=symbol)
    rep = report(tmp_path)
    assert rep["invalid_symbol"] is True and rep["status"] == "invalid_symbol"
    assert day_files(tmp_path, symbol=symbol) == []


def test_resume_after_interruption_refetches_nothing(um, tmp_path):
    rest, emu = um
    write_archive(rest, tmp_path, [D])
    # interrupted by a ban after 2 days (6 requests) of 4
    rest.inject(418, market="um", path="/klines", after=6, retry_after=1)
    with pytest.raises(HostStopped):
        run(emu.base_url, tmp_path, D + 4, concurrency=1)
    done = set(day_files(tmp_path))
    assert len(done) == 2
    rest.unban("um")
    before = rest.counters("um")["requests/klines"]
    run(emu.base_url, tmp_path, D + 4)
    assert rest.counters("um")["requests/klines"] - before == 3 * 2
    assert set(day_files(tmp_path)) == {day_path(tmp_path, d).name for d in range(D + 1, D + 5)}
    for d in range(D + 1, D + 5):
        assert pq.read_table(day_path(tmp_path, d)).equals(expected_day(rest, d))


def test_an_unreadable_day_file_is_fetched_again(um, tmp_path, caplog):
    # A day file cut short outside a run (a disk fault, a copy stopped half-way) failed the
    # symbol at every later run: its footer was read for the provenance.
    rest, emu = um
    write_archive(rest, tmp_path, [D])
    run(emu.base_url, tmp_path, D + 2)
    cut = day_path(tmp_path, D + 1)
    cut.write_bytes(cut.read_bytes()[:50])
    before = rest.counters("um")["requests/klines"]
    run(emu.base_url, tmp_path, D + 2)
    assert rest.counters("um")["requests/klines"] > before
    assert pq.read_table(cut).equals(expected_day(rest, D + 1))
    assert pq.read_table(day_path(tmp_path, D + 2)).equals(expected_day(rest, D + 2))
    assert f"{cut} is unreadable (ArrowInvalid" in caplog.text
    assert provenance(tmp_path)[day_iso(D + 1)][0] == "rest"


def test_an_unreadable_archive_partition_is_the_parse_s_to_rebuild(um, tmp_path):
    from crypto_lakehouse.shards import DamagedInput

    rest, emu = um
    write_archive(rest, tmp_path, [D])
    part = layout.parsed_klines_dir(tmp_path, T, SYM, "1m") / "202201.pqt"
    part.write_bytes(part.read_bytes()[:50])
    with pytest.raises(DamagedInput) as info:
        run(emu.base_url, tmp_path, D + 2)
    assert info.value.stage == "aws_parse" and info.value.path == str(part)
    # Not in the parse state: a file used in place (legacy BHDS), never removed.
    assert info.value.removable is False
    from crypto_lakehouse import datasets
    from crypto_lakehouse.parse import state_file

    state = state_file(tmp_path, T, datasets.tag("klines", "1m"), SYM)
    write_json(state, {"partitions": {"202201": {"rows": 1}}})
    with pytest.raises(DamagedInput) as info:
        run(emu.base_url, tmp_path, D + 2)
    assert info.value.removable is True  # the parse wrote it: removed, the parse rebuilds it


def test_report_is_deterministic(um, tmp_path):
    rest, emu = um
    write_archive(rest, tmp_path, [D])
    run(emu.base_url, tmp_path, D + 3)
    first = (tmp_path / "report.json").read_bytes()
    run(emu.base_url, tmp_path, D + 3)
    assert (tmp_path / "report.json").read_bytes() == first


def test_spot_two_day_chunks_save_requests(emulator, tmp_path):
    rest = RestEmulator(now_ms=(D + 30) * DAY)
    rest.add_synthetic_klines("spot", SYM, start_ms=D * DAY)
    emu = emulator(rest=rest)
    write_archive(rest, tmp_path, [D], market="spot")
    stats = run(emu.base_url, tmp_path, D + 25, trade_type="spot")
    # two-day chunks: 2,880 candles in 3 requests of 960 (limit ≤ 1000, weight 2 each);
    # 12 chunks + 1 single day (2 requests of 720) = 38 requests instead of 50
    assert rest.counters("spot")["requests/klines"] == 38
    assert stats["weight"] == 38 * 2 + 1
    assert stats["candles"] == 25 * 1440
    assert pq.read_table(day_path(tmp_path, D + 17, trade_type="spot")).equals(
        expected_day(rest, D + 17, market="spot")
    )


def test_cm_window_rule_still_gives_whole_days(emulator, tmp_path):
    # COIN-M answers the newest `limit` candles before endTime: windows of exactly `limit`
    # candles make that the whole window.
    rest = RestEmulator(now_ms=(D + 4) * DAY)
    rest.add_synthetic_klines("cm", "AUSD_PERP", start_ms=D * DAY)
    emu = emulator(rest=rest)
    write_archive(rest, tmp_path, [D, D + 2], symbol="AUSD_PERP", market="cm")
    run(emu.base_url, tmp_path, D + 3, symbol="AUSD_PERP", trade_type="cm_futures")
    for d in (D + 1, D + 3):
        got = pq.read_table(day_path(tmp_path, d, "AUSD_PERP", "cm_futures"))
        assert got.equals(expected_day(rest, d, "AUSD_PERP", market="cm"))


def test_hourly_interval_groups_days(emulator, tmp_path):
    rest = RestEmulator(now_ms=(D + 30) * DAY)
    rest.add_synthetic_klines("um", SYM, start_ms=D * DAY)
    emu = emulator(rest=rest)
    rows = rest.klines_rows("um", SYM, "1h", D * DAY, (D + 1) * DAY)
    write_parquet(
        layout.parsed_klines_dir(tmp_path, T, SYM, "1h") / "202201.pqt",
        klines_to_table(rows, lo_ms=0, hi_ms=2**62, now_ms=2**62),
    )
    run_api_klines(
        trade_type=T,
        symbol=SYM,
        interval="1h",
        data_dir=tmp_path,
        api_url=emu.base_url,
        parse_report={"partitions": {}},
        exchange_info_path=None,
        end_date=day_iso(D + 20),
        report_path=tmp_path / "report.json",
        stats_path=tmp_path / "stats.json",
    )
    # 20 days × 24 candles = one request of limit 480 (weight 2)
    assert rest.counters("um")["requests/klines"] == 1
    files = sorted(layout.api_klines_dir(tmp_path, T, SYM, "1h").glob("*.pqt"))
    assert len(files) == 20 and all(pq.read_metadata(f).num_rows == 24 for f in files)
    assert report(tmp_path)["days_by_source"]["rest"] == 20


@pytest.mark.parametrize("order", ["sorted", "shuffled"])
def test_day_counts_counts_every_row_per_utc_day(order):
    day = 86_400_000
    # Day 3: 2 rows (one duplicate time), day 4 none, day 5: 3 rows, day 9: 1 row.
    times = [3 * day, 3 * day, 5 * day, 5 * day + 60_000, 6 * day - 1, 9 * day + 5]
    if order == "shuffled":
        random.Random(7).shuffle(times)
    want: dict[int, int] = {}
    for t in times:  # textbook loop
        want[t // day] = want.get(t // day, 0) + 1
    assert day_counts(np.array(times, dtype=np.int64)) == want == {3: 2, 5: 3, 9: 1}
    assert day_counts(np.array([], dtype=np.int64)) == {}


def write_times(data_dir, name, minutes):
    d = layout.parsed_klines_dir(data_dir, "spot", "BTCUSDT", "1m")
    t = pa.array(np.array(minutes, dtype=np.int64) * MIN).view(TIME_TYPE)
    write_parquet(d / name, pa.table({"candle_begin_time": t}))


def test_archive_days_merge_partitions_whatever_their_order(tmp_path):
    """Partitions named out of time order and rows unsorted inside one: every time counted
    and returned sorted, as one concatenated sorted array would give them."""
    parts = {"a.pqt": [500, 400, 700], "b.pqt": [100, 200], "c.pqt": [300, 300, 1500]}
    for name, minutes in parts.items():
        write_times(tmp_path, name, minutes)
    every = np.array(sorted(m * MIN for ms in parts.values() for m in ms), dtype=np.int64)
    got = archive_days.load(tmp_path, "spot", "BTCUSDT", "1m")
    assert not got.empty and got.first_ms == every[0]
    assert got.counts == day_counts(every) == {0: 7, 1: 1}
    assert got.times_between(0, 2**62).tolist() == every.tolist()
    assert got.times_between(300 * MIN, 500 * MIN).tolist() == [300 * MIN, 300 * MIN, 400 * MIN]
    assert got.last_before(2**62) == 1500 * MIN
    assert got.last_before(600 * MIN) == 500 * MIN  # inside partition a: read for it
    assert got.last_before(100 * MIN) is None
    assert archive_days.load(tmp_path, "spot", "BTCUSDT", "1h").empty  # no partitions


def test_archive_days_read_only_the_partitions_that_changed(tmp_path, monkeypatch):
    """The second load reads no partition (the record has their counts); a rewritten
    partition is read again and its new counts replace the old; a removed one is gone."""
    write_times(tmp_path, "202201.pqt", [0, 1, 2])
    write_times(tmp_path, "202202.pqt", [1440 * 40, 1440 * 40 + 1])
    reads = []
    real = archive_days.read_times
    monkeypatch.setattr(archive_days, "read_times", lambda p: reads.append(p.name) or real(p))
    assert archive_days.load(tmp_path, "spot", "BTCUSDT", "1m").counts == {0: 3, 40: 2}
    assert sorted(reads) == ["202201.pqt", "202202.pqt"]
    reads.clear()
    cached = archive_days.load(tmp_path, "spot", "BTCUSDT", "1m")
    assert reads == [] and cached.counts == {0: 3, 40: 2}
    write_times(tmp_path, "202202.pqt", [1440 * 40, 1440 * 41, 1440 * 41 + 5, 1440 * 42])
    grown = archive_days.load(tmp_path, "spot", "BTCUSDT", "1m")
    assert reads == ["202202.pqt"]
    assert grown.counts == {0: 3, 40: 1, 41: 2, 42: 1}
    assert grown.last_before(2**62) == 1440 * 42 * MIN
    (layout.parsed_klines_dir(tmp_path, "spot", "BTCUSDT", "1m") / "202201.pqt").unlink()
    assert archive_days.load(tmp_path, "spot", "BTCUSDT", "1m").counts == {40: 1, 41: 2, 42: 1}


def test_archive_days_rebuild_an_unreadable_record(tmp_path):
    write_times(tmp_path, "202201.pqt", [0, 1, 1441])
    record = archive_days.record_path(tmp_path, "spot", "BTCUSDT", "1m")
    archive_days.load(tmp_path, "spot", "BTCUSDT", "1m")
    assert record.exists()
    record.write_text('{"version": 1, "partitions": {"202201.pqt": ')  # torn
    assert archive_days.load(tmp_path, "spot", "BTCUSDT", "1m").counts == {0: 2, 1: 1}
    assert json.loads(record.read_text())["version"] == archive_days.RECORD_VERSION


def _exchange_info_summary(emu, tmp, market="um", trade_type=T):
    """This run's exchangeInfo summary as the exchange_info job writes it."""
    import requests

    from crypto_lakehouse.rest.exchange_info import summarize_exchange_info

    prefix = {"um": "/fapi/v1", "spot": "/api/v3", "cm": "/dapi/v1"}[market]
    raw = requests.get(f"{emu.base_url}{prefix}/exchangeInfo", timeout=10).json()
    path = tmp / "exchange_info.json"
    write_json(path, summarize_exchange_info(raw, trade_type))
    return path


def test_a_delisted_symbol_is_not_asked_past_its_archive_but_a_lagging_one_is(emulator, tmp_path):
    # OLDUSDT was delisted after D+3 (not in exchangeInfo); its archive holds D and D+2, so
    # its day D+1 is a gap inside its history. AUSDT trades; its archive lags (D, D+1).
    rest = RestEmulator(now_ms=(D + 10) * DAY + 3_600_000)
    rest.add_synthetic_klines("um", "OLDUSDT", start_ms=D * DAY, end_ms=(D + 4) * DAY, listed=False)
    rest.add_synthetic_klines("um", SYM, start_ms=D * DAY, seed=7)
    emu = emulator(rest=rest)
    write_archive(rest, tmp_path, [D, D + 2], symbol="OLDUSDT")
    write_archive(rest, tmp_path, [D, D + 1])
    ei = _exchange_info_summary(emu, tmp_path)

    def klines_requests(symbol, end_day):
        before = rest.counters("um").get("requests/klines", 0)
        run(emu.base_url, tmp_path, end_day, symbol=symbol, ei=ei)
        return rest.counters("um").get("requests/klines", 0) - before

    # The gap inside the delisted symbol's history is asked (3 requests of a 1m day), once;
    # nothing after its last archived day (before: D+3..D+9, 7 empty days, then one more
    # day at every daily run).
    assert klines_requests("OLDUSDT", D + 9) == 3
    assert day_files(tmp_path, symbol="OLDUSDT") == [day_path(tmp_path, D + 1, "OLDUSDT").name]
    assert report(tmp_path)["status"] == "delisted"
    assert report(tmp_path)["delisted"] == "not in exchangeInfo"
    assert klines_requests(SYM, D + 9) == 8 * 3  # D+2..D+9: a lagging symbol is filled
    rest.now_ms = (D + 11) * DAY + 3_600_000  # the next day's run
    assert klines_requests("OLDUSDT", D + 10) == 0
    assert klines_requests(SYM, D + 10) == 3
    # Without exchangeInfo (its request failed) nothing is known: asked as before.
    write_json(ei, {"trade_type": T, "error": "HTTP 500"})
    assert klines_requests("OLDUSDT", D + 10) == 8 * 3  # D+3..D+10, answered empty


@pytest.mark.parametrize(
    "facts, expected",
    [
        ({"AUSDT": {"status": "TRADING"}}, None),
        ({"AUSDT": {"status": "PENDING_TRADING"}}, None),
        ({"AUSDT": {"status": "BREAK"}}, "exchangeInfo status BREAK"),
        ({"AUSDT": {"status": "SETTLING"}}, "exchangeInfo status SETTLING"),
        ({"BUSDT": {"status": "TRADING"}}, "not in exchangeInfo"),
        ({}, None),  # no symbols: not known
    ],
)
def test_not_trading_reads_the_runs_exchange_info(tmp_path, facts, expected):
    from crypto_lakehouse.rest.exchange_info import not_trading

    path = tmp_path / "ei.json"
    write_json(
        path, {"trade_type": T, "request_weight": {"limit": 1, "window_s": 1}, "symbols": facts}
    )
    assert not_trading(path, SYM) == expected
    assert not_trading(None, SYM) is None
    write_json(path, {"trade_type": T, "error": "timeout"})  # the request failed
    assert not_trading(path, SYM) is None
