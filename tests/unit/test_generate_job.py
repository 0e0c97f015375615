"""run_gen_kline end to end on small files in a temporary data_dir."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import crypto_lakehouse
from crypto_lakehouse import io, layout
from crypto_lakehouse.generate import run_gen_kline
from crypto_lakehouse.generate.checks import QualityGateError
from crypto_lakehouse.schema import API_FUNDING_SCHEMA, KLINE_SCHEMA, PARSED_FUNDING_SCHEMA

MIN = 60_000
HOUR = 3_600_000
DAY = 86_400_000
T0 = 1_600_000_000_000 - 1_600_000_000_000 % DAY  # 2020-09-13 00:00 UTC


def kline_table(times, **overrides) -> pa.Table:
    n = len(times)
    cols = {
        "candle_begin_time": pa.array(np.asarray(times, dtype=np.int64)).cast(
            KLINE_SCHEMA.field("candle_begin_time").type
        ),
        "open": np.full(n, 100.0),
        "high": np.full(n, 101.0),
        "low": np.full(n, 99.0),
        "close": np.full(n, 100.0),
        "volume": np.full(n, 2.0),
        "quote_volume": np.full(n, 200.0),
        "trade_num": np.full(n, 3, dtype=np.int64),
        "taker_buy_base_asset_volume": np.full(n, 1.0),
        "taker_buy_quote_asset_volume": np.full(n, 100.0),
    }
    for k, v in overrides.items():
        cols[k] = np.asarray(v, dtype=np.int64 if k == "trade_num" else np.float64)
    return pa.table(cols, schema=KLINE_SCHEMA)


def write_archive(data_dir, trade_type, symbol, name, table):
    d = layout.parsed_klines_dir(data_dir, trade_type, symbol, "1m")
    io.write_parquet(d / f"{name}.pqt", table)


def write_rest(data_dir, trade_type, symbol, name, table):
    d = layout.api_klines_dir(data_dir, trade_type, symbol, "1m")
    io.write_parquet(d / f"{name}.pqt", table)


def funding_times(*ms):
    return pa.array(np.array(ms, dtype=np.int64)).cast(pa.timestamp("ms", tz="UTC"))


def write_archive_funding(data_dir, trade_type, symbol, hours, rates):
    t = funding_times(*[T0 + h * HOUR for h in hours])
    table = pa.table(
        {
            "funding_time": t,
            "funding_interval_hours": np.full(len(hours), 8, dtype=np.int64),
            "funding_rate": np.asarray(rates, dtype=np.float64),
            "candle_begin_time": t,
        },
        schema=PARSED_FUNDING_SCHEMA,
    )
    io.write_parquet(layout.parsed_funding_path(data_dir, trade_type, symbol), table)


def write_rest_funding(data_dir, trade_type, symbol, hours, rates):
    cbt = funding_times(*[T0 + h * HOUR for h in hours])
    ft = funding_times(*[T0 + h * HOUR + 8 for h in hours])  # REST times carry ms jitter
    table = pa.table(
        {"funding_time": ft, "candle_begin_time": cbt, "funding_rate": np.asarray(rates)},
        schema=API_FUNDING_SCHEMA,
    )
    io.write_parquet(layout.api_funding_path(data_dir, trade_type, symbol), table)


def gen(data_dir, trade_type="spot", symbol="BTCUSDT", **kw):
    args = dict(
        trade_type=trade_type,
        symbol=symbol,
        interval="1m",
        data_dir=data_dir,
        split_gaps=True,
        with_vwap=True,
        with_funding_rates=trade_type != "spot",
        min_days=1,
        min_price_chg=0.1,
        contract_size=None,
        report_path=data_dir / "lakehouse" / "reports" / f"{symbol}.json",
        stats_path=data_dir / "lakehouse" / "stats" / f"{symbol}.json",
    )
    args.update(kw)
    stats = run_gen_kline(**args)
    return json.loads(args["report_path"].read_text()), stats


def out_dir(data_dir, trade_type="spot"):
    return layout.results_klines_dir(data_dir, trade_type, "1m")


def minutes(start, count):
    return [start + i * MIN for i in range(count)]


def test_spot_gap_split_fill_and_rest_priority(tmp_path):
    # Day A: 10 minutes, minute 5 untraded (volume 0). Day C (3 days later, +50 %): 5 minutes
    # from the archive and REST minutes that override minute 1 and add minute 5.
    day_a = minutes(T0, 10)
    vol_a = [2.0] * 10
    vol_a[5] = 0.0
    write_archive(tmp_path, "spot", "BTCUSDT", "202009a", kline_table(day_a, volume=vol_a))
    tc = T0 + 3 * DAY
    day_c = minutes(tc, 5)
    write_archive(
        tmp_path,
        "spot",
        "BTCUSDT",
        "202009c",
        kline_table(day_c, open=[150.0] * 5, high=[151.0] * 5, low=[149.0] * 5, close=[150.0] * 5),
    )
    rest = kline_table(
        [tc + MIN, tc + 5 * MIN],
        open=[150.0, 150.0],
        high=[152.0, 150.5],
        low=[149.5, 149.0],
        close=[151.0, 150.0],
        volume=[4.0, 1.0],
        quote_volume=[604.0, 150.0],
    )
    write_rest(tmp_path, "spot", "BTCUSDT", "20200916", rest)
    write_rest(tmp_path, "spot", "BTCUSDT", "20200915", kline_table([]))  # an empty REST day

    report, stats = gen(tmp_path)

    assert sorted(p.name for p in out_dir(tmp_path).iterdir()) == ["BTCUSDT.pqt", "SP0_BTCUSDT.pqt"]
    old = pq.read_table(out_dir(tmp_path) / "SP0_BTCUSDT.pqt")
    new = pq.read_table(out_dir(tmp_path) / "BTCUSDT.pqt")
    expected_cols = [*KLINE_SCHEMA.names, "avg_price_1m"]
    assert old.column_names == expected_cols
    assert old.schema.field("candle_begin_time").type == pa.timestamp("ms", tz="UTC")
    assert old.schema.field("trade_num").type == pa.int64()
    assert old.schema.field("avg_price_1m").type == pa.float64()
    # Segment 1: minute 5 dropped (zero volume) then re-created by the fill.
    assert old.num_rows == 10
    assert old["volume"].to_pylist()[5] == 0.0
    assert old["trade_num"].to_pylist()[5] == 0
    assert old["open"].to_pylist()[5] == 100.0  # the previous close
    assert old["avg_price_1m"].to_pylist() == [100.0] * 10
    # Segment 2: 6 minutes, REST wins on minute 1 and adds minute 5.
    assert new.num_rows == 6
    assert new["close"].to_pylist() == [150.0, 151.0, 150.0, 150.0, 150.0, 150.0]
    assert new["volume"].to_pylist()[1] == 4.0
    assert new["avg_price_1m"].to_pylist()[1] == 151.0  # 604 / 4
    assert new["avg_price_1m"].to_pylist()[5] == 150.0  # 150 / 1

    seg_old, seg_new = report["segments"]
    assert seg_old == {
        "name": "SP0_BTCUSDT",
        "file": "results_data/spot/klines/1m/SP0_BTCUSDT.pqt",
        "rows": 10,
        "first": "2020-09-13T00:00:00Z",
        "last": "2020-09-13T00:09:00Z",
        "archive_minutes": 9,
        "rest_minutes": 0,
        "filled_minutes": 1,
        "funding_events": 0,
    }
    assert (seg_new["name"], seg_new["archive_minutes"], seg_new["rest_minutes"]) == (
        "BTCUSDT",
        4,
        2,
    )
    assert seg_new["first"] == "2020-09-16T00:00:00Z"
    assert report["removed"] == [] and report["no_data"] is False
    assert stats["rows"]["merged"] == 15 and "seconds" in stats

    meta = {k.decode(): v.decode() for k, v in old.schema.metadata.items()}
    assert meta["interval"] == "1m"
    assert meta["vwap"] == "quote_volume/volume"
    assert meta["funding_joined"] == "false"
    assert json.loads(meta["source_coverage"]) == {
        "archive_minutes": 9,
        "rest_minutes": 0,
        "filled_minutes": 1,
    }
    assert meta["quality_score"] == "0.900000"
    assert json.loads(meta["quality_gates"])["contiguous"] == "passed"


def test_output_trimmed_to_first_and_last_traded_minute(tmp_path):
    # Q7 kept: leading and trailing zero-volume minutes are not in the output.
    volume = [0.0, 2.0, 0.0, 2.0, 0.0]
    write_archive(tmp_path, "spot", "BTCUSDT", "a", kline_table(minutes(T0, 5), volume=volume))
    report, _ = gen(tmp_path)
    assert (report["segments"][0]["first"], report["segments"][0]["last"]) == (
        "2020-09-13T00:01:00Z",
        "2020-09-13T00:03:00Z",
    )
    table = pq.read_table(out_dir(tmp_path) / "BTCUSDT.pqt")
    assert table["volume"].to_pylist() == [2.0, 0.0, 2.0]


def test_report_is_deterministic(tmp_path):
    write_archive(tmp_path, "spot", "BTCUSDT", "a", kline_table(minutes(T0, 5)))
    gen(tmp_path)
    first = (tmp_path / "lakehouse" / "reports" / "BTCUSDT.json").read_bytes()
    gen(tmp_path)
    assert (tmp_path / "lakehouse" / "reports" / "BTCUSDT.json").read_bytes() == first


def test_without_split_gaps_one_plain_file(tmp_path):
    write_archive(tmp_path, "spot", "BTCUSDT", "a", kline_table(minutes(T0, 3)))
    write_archive(
        tmp_path,
        "spot",
        "BTCUSDT",
        "b",
        kline_table(
            minutes(T0 + 3 * DAY, 3),
            open=[200.0] * 3,
            high=[201.0] * 3,
            low=[199] * 3,
            close=[200.0] * 3,
        ),
    )
    report, _ = gen(tmp_path, split_gaps=False, with_vwap=False)
    assert [s["name"] for s in report["segments"]] == ["BTCUSDT"]
    table = pq.read_table(out_dir(tmp_path) / "BTCUSDT.pqt")
    assert table.column_names == KLINE_SCHEMA.names
    assert table.num_rows == 3 * DAY // MIN + 3


def test_incremental_resplit_removes_only_this_symbols_stale_files(tmp_path):
    write_archive(tmp_path, "spot", "BTCUSDT", "a", kline_table(minutes(T0, 3)))
    write_archive(
        tmp_path,
        "spot",
        "BTCUSDT",
        "b",
        kline_table(
            minutes(T0 + 3 * DAY, 3),
            open=[200.0] * 3,
            high=[201.0] * 3,
            low=[199] * 3,
            close=[200.0] * 3,
        ),
    )
    gen(tmp_path)
    others = ["SP0_XBTCUSDT.pqt", "XBTCUSDT.pqt", "SP0_BTCUSDTX.pqt", "ETHUSDT.pqt"]
    for name in others:
        (out_dir(tmp_path) / name).write_bytes(b"other symbol")
    # The older archive month disappears: one segment left, SP0_BTCUSDT is stale.
    (layout.parsed_klines_dir(tmp_path, "spot", "BTCUSDT", "1m") / "a.pqt").unlink()
    report, _ = gen(tmp_path)
    assert report["removed"] == ["results_data/spot/klines/1m/SP0_BTCUSDT.pqt"]
    assert sorted(p.name for p in out_dir(tmp_path).iterdir()) == sorted([*others, "BTCUSDT.pqt"])
    for name in others:
        assert (out_dir(tmp_path) / name).read_bytes() == b"other symbol"


def test_no_data_gives_no_files_and_says_so(tmp_path):
    write_archive(tmp_path, "spot", "BTCUSDT", "a", kline_table(minutes(T0, 3)))
    gen(tmp_path)
    # Now every candle has zero volume: nothing to write, the old file goes.
    write_archive(tmp_path, "spot", "BTCUSDT", "a", kline_table(minutes(T0, 3), volume=[0.0] * 3))
    report, stats = gen(tmp_path)
    assert report["no_data"] is True and report["segments"] == []
    assert report["removed"] == ["results_data/spot/klines/1m/BTCUSDT.pqt"]
    assert list(out_dir(tmp_path).iterdir()) == []
    # A symbol with no input folder at all.
    report, _ = gen(tmp_path, symbol="NOPEUSDT")
    assert report["no_data"] is True and report["segments"] == []


def test_an_unreadable_input_file_the_parse_did_not_write_is_named_and_kept(tmp_path):
    from crypto_lakehouse.shards import DamagedInput

    write_archive(tmp_path, "spot", "BTCUSDT", "a", kline_table(minutes(T0, 3)))
    bad = layout.parsed_klines_dir(tmp_path, "spot", "BTCUSDT", "1m") / "b.pqt"
    bad.write_bytes(b"not parquet")
    with pytest.raises(DamagedInput) as info:
        gen(tmp_path)
    assert info.value.path == str(bad) and info.value.stage == "aws_parse"
    assert not info.value.removable and bad.exists()  # not the pipeline's: moved by the user
    assert not out_dir(tmp_path).exists()  # nothing built without its rows


def _flip_a_page(path) -> None:
    """Damage the first column's data page, leaving the footer readable (as a disk fault
    or a bad copy can): only reading the rows finds it."""
    data = bytearray(path.read_bytes())
    for i in range(40, 104):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    assert pq.ParquetFile(path).metadata.num_rows > 0


@pytest.mark.parametrize("damaged", ["archive", "rest"])
def test_a_damaged_input_file_fails_the_symbol_and_keeps_the_generated_file(tmp_path, damaged):
    # A parsed month (or REST day) with a damaged page was left out with a warning: the
    # generated file was written again without its rows (a month of history gone for good,
    # since nothing rebuilt the partition) and the run ended successfully.
    from crypto_lakehouse.parse import state_file
    from crypto_lakehouse.shards import DamagedInput

    rng = np.random.default_rng(0)
    n = 2 * 1440
    write_archive(tmp_path, "spot", "BTCUSDT", "202009",
                  kline_table(minutes(T0, n), open=rng.uniform(99.5, 100.5, n)))  # fmt: skip
    write_rest(tmp_path, "spot", "BTCUSDT", "20200915",
               kline_table(minutes(T0 + n * MIN, 1440), open=rng.uniform(99.5, 100.5, 1440)))  # fmt: skip
    # the parse's state says it wrote the month (parse.wrote_partition)
    state = state_file(tmp_path, "spot", "klines-1m", "BTCUSDT")
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_text(json.dumps({"partitions": {"202009": {}}}))
    report, _ = gen(tmp_path)
    generated = {p: p.read_bytes() for p in out_dir(tmp_path).glob("*.pqt")}
    assert sum(seg["rows"] for seg in report["segments"]) == 3 * 1440
    if damaged == "archive":
        path = layout.parsed_klines_dir(tmp_path, "spot", "BTCUSDT", "1m") / "202009.pqt"
    else:
        path = layout.api_klines_dir(tmp_path, "spot", "BTCUSDT", "1m") / "20200915.pqt"
    _flip_a_page(path)
    with pytest.raises(DamagedInput) as info:
        gen(tmp_path)
    assert info.value.path == str(path) and info.value.removable and not info.value.missing
    assert info.value.stage == {"archive": "aws_parse", "rest": "api_download"}[damaged]
    assert "is unreadable (" in str(info.value) and "ZSTD decompression failed" in str(info.value)
    # the generated file stays as the last complete build wrote it
    assert {p: p.read_bytes() for p in out_dir(tmp_path).glob("*.pqt")} == generated


def test_funding_sources_missing_or_unreadable(tmp_path):
    """Either funding file may be missing (no problem) or unreadable (a problem naming it,
    the other source still counts). They are read without asking first whether they exist
    (on S3 a round trip each)."""
    from crypto_lakehouse.generate.funding import read_funding

    assert len(read_funding(tmp_path, "um_futures", "BTCUSDT")) == 0
    assert read_funding(tmp_path, "um_futures", "BTCUSDT").problems == []
    write_rest_funding(tmp_path, "um_futures", "BTCUSDT", [8, 16], [0.0003, -0.0004])
    archive = layout.parsed_funding_path(tmp_path, "um_futures", "BTCUSDT")
    archive.parent.mkdir(parents=True, exist_ok=True)
    archive.write_bytes(b"not parquet")
    events = read_funding(tmp_path, "um_futures", "BTCUSDT")
    assert events.rate.tolist() == [0.0003, -0.0004]
    assert len(events.problems) == 1 and str(archive) in events.problems[0]


@pytest.mark.parametrize("source", ["archive", "rest"])
def test_a_damaged_funding_file_fails_the_symbol_not_its_funding(tmp_path, source):
    # An unreadable funding file was left out with a warning: the symbol was generated with
    # funding_rate 0.0 on every minute it held, and the run ended successfully.
    from crypto_lakehouse.shards import DamagedInput

    write_archive(tmp_path, "um_futures", "BTCUSDT", "a", kline_table(minutes(T0, 17 * 60)))
    write_archive_funding(tmp_path, "um_futures", "BTCUSDT", [0], [0.0001])
    write_rest_funding(tmp_path, "um_futures", "BTCUSDT", [8, 16], [0.0003, -0.0004])
    if source == "archive":
        path = layout.parsed_funding_path(tmp_path, "um_futures", "BTCUSDT")
    else:
        path = layout.api_funding_path(tmp_path, "um_futures", "BTCUSDT")
    path.write_bytes(path.read_bytes()[:40])  # cut short
    with pytest.raises(DamagedInput) as info:
        gen(tmp_path, trade_type="um_futures")
    assert info.value.path == str(path) and not info.value.missing
    assert info.value.stage == {"archive": "aws_parse", "rest": "api_download"}[source]
    assert not out_dir(tmp_path, "um_futures").exists()


def test_um_funding_join_rest_wins_and_untraded_hour_kept(tmp_path):
    # 00:00 … 16:00 traded except the 08:00 minute (volume 0: legacy lost its funding, Q4).
    times = minutes(T0, 16 * 60 + 1)
    volume = np.full(len(times), 2.0)
    volume[8 * 60] = 0.0
    write_archive(tmp_path, "um_futures", "BTCUSDT", "a", kline_table(times, volume=volume))
    write_archive_funding(tmp_path, "um_futures", "BTCUSDT", [-8, 0, 8], [0.5, 0.0001, 0.0002])
    # REST repeats 08:00 with another value (REST wins) and adds 16:00 and 24:00.
    write_rest_funding(tmp_path, "um_futures", "BTCUSDT", [8, 16, 24], [0.0003, -0.0004, 0.7])
    report, _ = gen(tmp_path, trade_type="um_futures")
    table = pq.read_table(out_dir(tmp_path, "um_futures") / "BTCUSDT.pqt")
    assert table.column_names[-2:] == ["avg_price_1m", "funding_rate"]
    rate = table["funding_rate"].to_numpy()
    assert rate[0] == 0.0001 and rate[8 * 60] == 0.0003 and rate[16 * 60] == -0.0004
    assert np.count_nonzero(rate) == 3
    assert table["volume"].to_numpy()[8 * 60] == 0.0  # the re-created minute
    assert report["segments"][0]["funding_events"] == 3
    assert report["funding_events_outside_segments"] == 2  # −08:00 and 24:00
    meta = table.schema.metadata
    assert meta[b"funding_joined"] == b"true"


def test_rest_funding_used_without_archive_funding(tmp_path):
    write_archive(tmp_path, "um_futures", "ETHUSDT", "a", kline_table(minutes(T0, 61)))
    write_rest_funding(tmp_path, "um_futures", "ETHUSDT", [1], [0.0002])
    gen(tmp_path, trade_type="um_futures", symbol="ETHUSDT")
    table = pq.read_table(out_dir(tmp_path, "um_futures") / "ETHUSDT.pqt")
    assert table["funding_rate"].to_numpy()[60] == 0.0002


def test_no_funding_column_for_a_symbol_without_funding(tmp_path):
    write_archive(tmp_path, "um_futures", "ETHUSDT", "a", kline_table(minutes(T0, 5)))
    report, _ = gen(tmp_path, trade_type="um_futures", symbol="ETHUSDT")
    table = pq.read_table(out_dir(tmp_path, "um_futures") / "ETHUSDT.pqt")
    assert "funding_rate" not in table.column_names
    assert report["funding_column"] is False


def test_funding_not_joined_when_disabled(tmp_path):
    write_archive(tmp_path, "um_futures", "ETHUSDT", "a", kline_table(minutes(T0, 5)))
    write_rest_funding(tmp_path, "um_futures", "ETHUSDT", [0], [0.0002])
    gen(tmp_path, trade_type="um_futures", symbol="ETHUSDT", with_funding_rates=False)
    table = pq.read_table(out_dir(tmp_path, "um_futures") / "ETHUSDT.pqt")
    assert "funding_rate" not in table.column_names


def test_cm_vwap_with_contract_size(tmp_path):
    # 10 contracts of 100 USD for 0.05 BTC → 20000; low/high 19000/21000 keep it unclipped.
    table = kline_table(
        minutes(T0, 2),
        open=[20000.0] * 2,
        high=[21000.0] * 2,
        low=[19000.0] * 2,
        close=[20000.0] * 2,
        volume=[10.0, 10.0],
        quote_volume=[0.05, 0.04],
    )
    write_archive(tmp_path, "cm_futures", "BTCUSD_PERP", "a", table)
    gen(tmp_path, trade_type="cm_futures", symbol="BTCUSD_PERP", contract_size=100)
    out = pq.read_table(out_dir(tmp_path, "cm_futures") / "BTCUSD_PERP.pqt")
    # Minute 2: 1000 / 0.04 = 25000, clipped to the high 21000.
    assert out["avg_price_1m"].to_pylist() == pytest.approx([20000.0, 21000.0], rel=1e-12)
    assert b"contract_size=100" in out.schema.metadata[b"vwap"]


def test_cm_without_contract_size_is_a_clear_error(tmp_path):
    write_archive(tmp_path, "cm_futures", "ETHUSD_PERP", "a", kline_table(minutes(T0, 2)))
    with pytest.raises(ValueError, match="ETHUSD_PERP.*contract_sizes"):
        gen(tmp_path, trade_type="cm_futures", symbol="ETHUSD_PERP", contract_size=None)


def test_quality_gate_failure_names_file_and_minute(tmp_path):
    # Segment 1 is fine; segment 2 has close above high at its second minute.
    write_archive(tmp_path, "spot", "BTCUSDT", "a", kline_table(minutes(T0, 3)))
    bad = kline_table(
        minutes(T0 + 3 * DAY, 3),
        open=[200.0] * 3,
        high=[201.0] * 3,
        low=[199.0] * 3,
        close=[200.0, 205.0, 200.0],
    )
    write_archive(tmp_path, "spot", "BTCUSDT", "b", bad)
    with pytest.raises(
        QualityGateError,
        match=r"results_data/spot/klines/1m/BTCUSDT.pqt: OHLC .* 2020-09-16T00:01:00Z",
    ):
        gen(tmp_path)
    assert sorted(p.name for p in out_dir(tmp_path).iterdir()) == ["SP0_BTCUSDT.pqt"]


@pytest.mark.parametrize("interval, step", [("1d", DAY), ("12h", 12 * HOUR)])
def test_funding_settled_inside_the_last_candle_is_joined(tmp_path, interval, step):
    # 8-hourly funding on candles coarser than the spacing: a candle holds the sum of the
    # events settled during it (docs/loading.md). The last candle's events after its open
    # were dropped (and counted as outside every segment): at 1d the last day kept only its
    # 00:00 event, at 12h the last 12:00 candle lost its 16:00 event.
    times = list(range(T0, T0 + 3 * DAY, step))
    io.write_parquet(
        layout.parsed_klines_dir(tmp_path, "um_futures", "BTCUSDT", interval) / "a.pqt",
        kline_table(times),
    )
    hours = [-8, *range(0, 72, 8), 72]  # one event before the first candle, one after the last
    rates = [0.5, *(1e-4 * (k + 1) for k in range(9)), 0.7]
    write_archive_funding(tmp_path, "um_futures", "BTCUSDT", hours, rates)
    report, _ = gen(tmp_path, trade_type="um_futures", interval=interval)
    out = layout.results_klines_dir(tmp_path, "um_futures", interval) / "BTCUSDT.pqt"
    rate = pq.read_table(out)["funding_rate"].to_numpy()
    # Each candle [t, t + step): the events of hours h with t <= T0 + h·HOUR < t + step.
    expected = [
        sum(r for h, r in zip(hours, rates, strict=True) if t <= T0 + h * HOUR < t + step)
        for t in times
    ]
    np.testing.assert_allclose(rate, expected, rtol=1e-12, atol=0)
    assert rate[-1] != 0.0
    assert report["segments"][0]["funding_events"] == 9
    assert report["funding_events_outside_segments"] == 2  # -08:00 and 72:00


def test_funding_that_nets_to_zero_in_a_coarse_candle_is_not_a_lost_event(tmp_path):
    # On 1d candles a day holds three 8-hourly events; +0.0001 then -0.0001 settled on the
    # second day sum to 0.0 on its candle, which is what was paid during it. The gate took
    # that candle for one that lost its events and failed the symbol (QualityGateError:
    # "funding event of minute … missing"), at every run.
    times = list(range(T0, T0 + 3 * DAY, DAY))
    io.write_parquet(
        layout.parsed_klines_dir(tmp_path, "um_futures", "BTCUSDT", "1d") / "a.pqt",
        kline_table(times),
    )
    hours = [0, 8, 16, 24, 32, 40, 48, 56, 64]
    rates = [1e-4, 2e-4, 3e-4, 1e-4, -1e-4, 0.0, 5e-5, 5e-5, 5e-5]
    write_archive_funding(tmp_path, "um_futures", "BTCUSDT", hours, rates)
    report, _ = gen(tmp_path, trade_type="um_futures", interval="1d")
    out = layout.results_klines_dir(tmp_path, "um_futures", "1d") / "BTCUSDT.pqt"
    table = pq.read_table(out)
    np.testing.assert_allclose(table["funding_rate"].to_numpy(), [6e-4, 0.0, 1.5e-4], atol=1e-15)
    # the gate counts the candles that hold funding: two of the three
    gates = json.loads(table.schema.metadata[b"quality_gates"])
    assert gates["funding_events"] == "2"
    assert report["segments"][0]["funding_events"] == 9


def test_funding_nan_mode_reads_a_candle_netting_to_zero_as_no_funding(tmp_path):
    # The documented limit of load_klines(funding="nan") (docs/loading.md): a 1d candle
    # whose events net to 0.0 is stored as 0.0, as a candle without any event is, and
    # nothing in the file (values, metadata) says which of the two it is: both read null.
    times = list(range(T0, T0 + 4 * DAY, DAY))
    io.write_parquet(
        layout.parsed_klines_dir(tmp_path, "um_futures", "BTCUSDT", "1d") / "a.pqt",
        kline_table(times),
    )
    # day 0: +1e-4, +2e-4; day 1: +1e-4, -1e-4 (nets to 0.0); day 2: none; day 3: 5e-5
    hours = [0, 8, 24, 32, 72]
    rates = [1e-4, 2e-4, 1e-4, -1e-4, 5e-5]
    write_archive_funding(tmp_path, "um_futures", "BTCUSDT", hours, rates)
    gen(tmp_path, trade_type="um_futures", interval="1d")
    out = layout.results_klines_dir(tmp_path, "um_futures", "1d") / "BTCUSDT.pqt"
    stored = pq.read_table(out)
    np.testing.assert_allclose(stored["funding_rate"].to_numpy(), [3e-4, 0.0, 0.0, 5e-5])
    meta = stored.schema.metadata
    assert meta[b"funding_events"] == b"5"
    assert json.loads(meta[b"quality_gates"])["funding_events"] == "2"
    nan = crypto_lakehouse.load_klines(
        tmp_path, "um_futures", "BTCUSDT", interval="1d", funding="nan"
    )["funding_rate"]
    assert nan.isna().tolist() == [False, True, True, False]


@pytest.mark.parametrize("locked", ["partition", "funding"])
def test_an_input_file_the_machine_cannot_read_fails_the_symbol_not_its_data(
    tmp_path, monkeypatch, locked
):
    # No permission (another account's file), no file handle or memory left: an error of
    # the machine, not of the file (storage.is_damaged_file_error says so since 2026-12-06).
    # gen_kline then left the file out as an input problem and built the symbol without
    # it: its month of candles, or funding_rate 0.0 throughout, and the run ended fine.
    import errno

    from crypto_lakehouse import storage

    write_archive(tmp_path, "um_futures", "BTCUSDT", "a", kline_table(minutes(T0, 17 * 60)))
    write_archive(tmp_path, "um_futures", "BTCUSDT", "b",
                  kline_table(minutes(T0 + 17 * 60 * MIN, 60)))  # fmt: skip
    write_archive_funding(tmp_path, "um_futures", "BTCUSDT", [0, 8, 16], [1e-4, 2e-4, 3e-4])
    if locked == "partition":
        path = layout.parsed_klines_dir(tmp_path, "um_futures", "BTCUSDT", "1m") / "b.pqt"
    else:
        path = layout.parsed_funding_path(tmp_path, "um_futures", "BTCUSDT")

    def refusing(real):
        def read(p, *args, **kwargs):
            if str(p) == str(path):
                raise PermissionError(errno.EACCES, "Permission denied", str(p))
            return real(p, *args, **kwargs)

        return read

    monkeypatch.setattr(storage, "parquet_metadata", refusing(storage.parquet_metadata))
    monkeypatch.setattr(storage, "read_parquet", refusing(storage.read_parquet))
    with pytest.raises(PermissionError, match="Permission denied"):
        gen(tmp_path, trade_type="um_futures")
    assert path.exists()  # not taken for damaged: kept
    assert not out_dir(tmp_path, "um_futures").exists()  # nothing built without it


def test_legacy_partition_with_candles_off_the_grid_is_floored_and_left_as_it_is(tmp_path, caplog):
    # A legacy BHDS parsed_data used in place keeps Binance's off-grid candles as the archive
    # holds them (spot after the 2018-02-08 outage: …:14.789); the parse floors them since
    # 2026-12-06 but never rewrites a file it did not write, so every gen_kline of the symbol
    # failed ("candle at … is not on the 60000 ms grid") for good.
    day = minutes(T0, 1440)
    times = [day[0] + 14_789] + day[1:600] + [t + 14_789 for t in day[600:605]] + day[605:]
    # minute 700 twice: on the grid, then a floored candle of the same minute after it
    times = times[:701] + [day[700] + 14_789] + times[701:]
    opens = [100.0] * len(times)
    opens[0] = 50.0
    opens[600:605] = [60.0, 61.0, 62.0, 63.0, 64.0]
    opens[700], opens[701] = 70.0, 71.0
    write_archive(
        tmp_path,
        "spot",
        "BTCUSDT",
        "202009",
        kline_table(times, open=opens, low=[40.0] * len(times)),
    )
    legacy = layout.parsed_klines_dir(tmp_path, "spot", "BTCUSDT", "1m") / "202009.pqt"
    before = legacy.read_bytes()
    with caplog.at_level("WARNING"):
        report, _ = gen(tmp_path)
    assert report["quality_failures"] == [] and len(report["segments"]) == 1
    out = pq.read_table(tmp_path / report["segments"][0]["file"])
    got = out.column("candle_begin_time").cast(pa.int64()).to_numpy()
    assert got.tolist() == day  # every minute once, the first one included, on the grid
    open_ = out.column("open").to_numpy()
    assert open_[0] == 50.0 and open_[600:605].tolist() == [60.0, 61.0, 62.0, 63.0, 64.0]
    assert open_[700] == 70.0  # the candle that was on the grid keeps its minute
    assert legacy.read_bytes() == before  # not rewritten
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert (
        str(legacy) in logged and "7 parsed candle(s) open off the 60000 ms interval grid" in logged
    )
    assert "1 of them lose their minute" in logged
    # the next run (a new REST day: the tail build) builds as well
    write_rest(tmp_path, "spot", "BTCUSDT", "20200914", kline_table(minutes(T0 + DAY, 1440)))
    report, _ = gen(tmp_path)
    assert (
        report["quality_failures"] == [] and sum(s["rows"] for s in report["segments"]) == 2 * 1440
    )


def test_rest_day_files_with_candles_off_the_grid_are_damaged_inputs_of_the_rest_fill(tmp_path):
    # A REST fill before 2026-12-06 stored Binance's off-grid candles as answered (spot after
    # the 2018-02-08 outage: …:14.789); every later gen_kline of the symbol then failed
    # ("candle at … is not on the 60000 ms grid") until the user deleted the day files.
    from crypto_lakehouse import shards
    from crypto_lakehouse.shards import DamagedInput

    write_archive(tmp_path, "spot", "BTCUSDT", "202009", kline_table(minutes(T0, 1440)))
    day2, day3 = minutes(T0 + DAY, 1440), minutes(T0 + 2 * DAY, 1440)
    off2 = day2[:600] + [t + 14_789 for t in day2[600:605]] + day2[605:]
    off3 = day3[:10] + [day3[10] + 14_789] + day3[11:]
    write_rest(tmp_path, "spot", "BTCUSDT", "20200914", kline_table(off2))
    write_rest(tmp_path, "spot", "BTCUSDT", "20200915", kline_table(off3))
    rest_dir = layout.api_klines_dir(tmp_path, "spot", "BTCUSDT", "1m")
    with pytest.raises(DamagedInput) as info:
        gen(tmp_path)
    exc = info.value
    assert exc.path == str(rest_dir / "20200914.pqt") and exc.stage == "api_download"
    assert exc.removable and not exc.missing
    assert exc.others == (str(rest_dir / "20200915.pqt"),)
    assert "holds a candle at 2020-09-14T10:00:14.789Z off the 60000 ms interval grid" in str(exc)
    assert not out_dir(tmp_path).exists()  # nothing built from them
    # The shard's repair removes both (the next run's REST shard fetches the two days again)
    shards._repair_damaged("BTCUSDT", exc)
    assert sorted(p.name for p in rest_dir.iterdir()) == []
    assert "1 of the 1 other file(s) removed too" in str(exc)
    # refetched, floored onto the grid as rest.klines now stores them: the symbol builds
    write_rest(tmp_path, "spot", "BTCUSDT", "20200914", kline_table(day2))
    write_rest(tmp_path, "spot", "BTCUSDT", "20200915", kline_table(day3))
    report, _ = gen(tmp_path)
    assert sum(seg["rows"] for seg in report["segments"]) == 3 * 1440
