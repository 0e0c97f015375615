"""gen_kline rules on small hand-built arrays, with hand-computed expectations."""

from __future__ import annotations

import numpy as np
import pytest

from crypto_lakehouse.generate.checks import QualityGateError, check_output
from crypto_lakehouse.generate.fill import fill_segment
from crypto_lakehouse.generate.funding import FundingEvents, count_outside, join_funding
from crypto_lakehouse.generate.gaps import (
    combine_gaps,
    find_gaps,
    segment_names,
    split_ranges,
)
from crypto_lakehouse.generate.merge import SOURCE_ARCHIVE, SOURCE_REST, merge_candles
from crypto_lakehouse.generate.outputs import iso_ms, remove_stale, symbol_file_re
from crypto_lakehouse.generate.vwap import vwap
from crypto_lakehouse.schema import KLINE_COLUMNS

MIN = 60_000
HOUR = 3_600_000
DAY = 86_400_000
T0 = 1_600_000_000_000 - 1_600_000_000_000 % DAY  # a UTC midnight


def candles(times, **overrides) -> dict[str, np.ndarray]:
    """Kline columns for the given minutes: price 100, volume 1 unless overridden."""
    n = len(times)
    cols = {
        "candle_begin_time": np.asarray(times, dtype=np.int64),
        "open": np.full(n, 100.0),
        "high": np.full(n, 101.0),
        "low": np.full(n, 99.0),
        "close": np.full(n, 100.0),
        "volume": np.full(n, 1.0),
        "quote_volume": np.full(n, 100.0),
        "trade_num": np.full(n, 3, dtype=np.int64),
        "taker_buy_base_asset_volume": np.full(n, 0.5),
        "taker_buy_quote_asset_volume": np.full(n, 50.0),
    }
    for k, v in overrides.items():
        cols[k] = np.asarray(v, dtype=cols[k].dtype)
    return cols


# ------------------------------------------------------------------ merge
def test_merge_rest_wins_on_same_minute_and_sources_are_tracked():
    archive = candles([T0, T0 + MIN, T0 + 2 * MIN], close=[1.0, 2.0, 3.0])
    rest = candles([T0 + MIN, T0 + 3 * MIN], close=[20.0, 40.0])
    merged = merge_candles(archive, rest)
    assert merged.time.tolist() == [T0, T0 + MIN, T0 + 2 * MIN, T0 + 3 * MIN]
    assert merged.gather("close").tolist() == [1.0, 20.0, 3.0, 40.0]
    assert merged.source.tolist() == [SOURCE_ARCHIVE, SOURCE_REST, SOURCE_ARCHIVE, SOURCE_REST]


def test_merge_rest_after_archive_and_rest_duplicates_keep_last():
    archive = candles([T0, T0 + MIN, T0 + 2 * MIN], close=[1.0, 2.0, 3.0])
    # REST repeats the last archive minute twice (the later REST row wins) and adds one.
    rest = candles([T0 + 2 * MIN, T0 + 3 * MIN, T0 + 2 * MIN], close=[30.0, 40.0, 31.0])
    merged = merge_candles(archive, rest)
    assert merged.time.tolist() == [T0, T0 + MIN, T0 + 2 * MIN, T0 + 3 * MIN]
    assert merged.gather("close").tolist() == [1.0, 2.0, 31.0, 40.0]
    assert merged.source.tolist() == [SOURCE_ARCHIVE, SOURCE_ARCHIVE, SOURCE_REST, SOURCE_REST]
    assert merged.gather("trade_num").dtype == np.int64


def test_merge_rest_only():
    merged = merge_candles(candles([]), candles([T0 + MIN, T0], close=[2.0, 1.0]))
    assert merged.gather("close").tolist() == [1.0, 2.0]
    assert merged.source.tolist() == [SOURCE_REST, SOURCE_REST]


def test_merge_drops_zero_volume_candles_of_both_sources():
    archive = candles([T0, T0 + MIN, T0 + 2 * MIN], volume=[1.0, 0.0, 2.0])
    rest = candles([T0 + 3 * MIN], volume=[0.0])
    merged = merge_candles(archive, rest)
    assert merged.time.tolist() == [T0, T0 + 2 * MIN]


def test_merge_zero_volume_rest_minute_does_not_replace_a_traded_archive_minute():
    # Legacy filters each source on volume > 0 before the REST-wins de-duplication.
    archive = candles([T0, T0 + MIN], close=[1.0, 2.0])
    rest = candles([T0 + MIN], close=[99.0], volume=[0.0])
    merged = merge_candles(archive, rest)
    assert merged.gather("close").tolist() == [1.0, 2.0]
    assert merged.source.tolist() == [SOURCE_ARCHIVE, SOURCE_ARCHIVE]


def test_merge_archive_duplicates_keep_last_then_sort():
    # Duplicate minute T0+MIN: the later row (volume 0) wins and is then dropped.
    archive = candles(
        [T0 + 2 * MIN, T0 + MIN, T0, T0 + MIN],
        close=[3.0, 2.0, 1.0, 2.5],
        volume=[1.0, 1.0, 1.0, 0.0],
    )
    merged = merge_candles(archive, candles([]))
    assert merged.time.tolist() == [T0, T0 + 2 * MIN]
    assert merged.gather("close").tolist() == [1.0, 3.0]
    assert all(len(merged.gather(name)) == 2 for name in KLINE_COLUMNS)


# ------------------------------------------------------------------ VWAP
def test_vwap_spot_is_quote_over_base_volume():
    got = vwap(np.array([2.0, 4.0]), np.array([200.0, 404.0]), np.array([1.0, 1.0]))
    assert got.tolist() == [100.0, 101.0]


def test_vwap_coin_m_uses_contract_size():
    # 10 contracts of 100 USD = 1000 USD traded for 0.05 BTC → 20000 USD per BTC.
    got = vwap(np.array([10.0]), np.array([0.05]), np.array([1.0]), contract_size=100.0)
    assert got[0] == pytest.approx(20000.0, rel=1e-12)


def test_vwap_undefined_ratio_falls_back_to_open():
    got = vwap(np.array([10.0]), np.array([0.0]), np.array([123.0]), contract_size=100.0)
    assert got.tolist() == [123.0]


# ------------------------------------------------------------------ gaps
def two_candles(diff_ms: int, prev_close: float, next_open: float):
    c = candles([T0, T0 + diff_ms], open=[prev_close, next_open], close=[prev_close, next_open])
    return c["candle_begin_time"], c["open"], c["close"]


@pytest.mark.parametrize(
    "diff_ms, next_open, is_gap",
    [
        (DAY, 120.0, False),  # exactly one day is not > 1 day
        (DAY + MIN, 120.0, True),  # just over one day, 20 % change
        (DAY + MIN, 110.01, True),  # change 0.1001 > 0.1
        (DAY + MIN, 109.99, False),  # change 0.0999 ≤ 0.1
        (DAY + MIN, 89.99, True),  # change −0.1001: the absolute value counts
        (2 * DAY, 105.0, False),  # exactly two days with a 5 % change: neither criterion
        (2 * DAY + MIN, 105.0, True),  # over two days, any non-zero change
        (2 * DAY + MIN, 100.0, False),  # over two days but no change at all
        (DAY + 12 * HOUR, 105.0, False),  # 1.5 days with 5 %: neither criterion
    ],
)
def test_gap_criteria_on_both_sides_of_their_thresholds(diff_ms, next_open, is_gap):
    t, o, c = two_candles(diff_ms, 100.0, next_open)
    gaps = find_gaps(t, o, c, min_days=1, min_price_chg=0.1)
    assert gaps.tolist() == ([T0 + diff_ms] if is_gap else [])


def test_gap_thresholds_are_configurable():
    t, o, c = two_candles(DAY + 12 * HOUR, 100.0, 103.0)
    assert find_gaps(t, o, c, min_days=1, min_price_chg=0.1).tolist() == []
    assert find_gaps(t, o, c, min_days=1, min_price_chg=0.02).tolist() == [T0 + DAY + 12 * HOUR]


def test_two_gaps_from_both_criteria_come_out_sorted():
    # Gap A (3 days, +1 %) is found only by the two-day criterion, gap B (1.5 days, +50 %)
    # only by the first; A comes first in time.
    t = np.array([T0, T0 + 3 * DAY, T0 + 4 * DAY + 12 * HOUR], dtype=np.int64)
    o = np.array([100.0, 101.0, 151.5])
    c = np.array([100.0, 101.0, 151.5])
    assert find_gaps(t, o, c, 1, 0.1).tolist() == [T0 + 3 * DAY, T0 + 4 * DAY + 12 * HOUR]


def test_find_gaps_reads_prices_through_a_row_index():
    # Store order: candle 2, candle 0, candle 1 (as after a merge with REST rows).
    t = np.array([T0, T0 + 3 * DAY, T0 + 4 * DAY + 12 * HOUR], dtype=np.int64)
    store_open = np.array([151.5, 100.0, 101.0])
    store_close = np.array([151.5, 100.0, 101.0])
    rows = np.array([1, 2, 0])
    gaps = find_gaps(t, store_open, store_close, 1, 0.1, rows=rows)
    assert gaps.tolist() == [T0 + 3 * DAY, T0 + 4 * DAY + 12 * HOUR]


def test_combine_gaps_sorts_out_of_order_detections():
    # Legacy's unique() could hand the splitter [g2, g1] (Q2); we always sort.
    g1, g2, g3 = T0 + DAY, T0 + 5 * DAY, T0 + 9 * DAY
    combined = combine_gaps(np.array([g3, g1]), np.array([g2, g1]))
    assert combined.tolist() == [g1, g2, g3]


def test_split_ranges_with_unsorted_gaps():
    time = np.array([0, 1, 2, 10, 11, 20, 30], dtype=np.int64)
    assert split_ranges(time, np.array([20, 10])) == [(0, 3), (3, 5), (5, 7)]
    assert split_ranges(time, np.array([30, 10, 20])) == [(0, 3), (3, 5), (5, 6), (6, 7)]
    assert split_ranges(time, np.array([], dtype=np.int64)) == [(0, 7)]


def test_segment_names_newest_is_plain():
    assert segment_names("BTCUSDT", 1) == ["BTCUSDT"]
    assert segment_names("BTCUSDT", 3) == ["SP0_BTCUSDT", "SP1_BTCUSDT", "BTCUSDT"]
    assert segment_names("BTCUSDT", 0) == []


# ------------------------------------------------------------------ fill
def test_fill_rules_for_missing_minutes():
    # Minutes 0, 1 and 4 traded; 2 and 3 are missing.
    seg = candles(
        [T0, T0 + MIN, T0 + 4 * MIN],
        open=[10.0, 11.0, 14.0],
        high=[12.0, 13.0, 15.0],
        low=[9.0, 10.0, 13.0],
        close=[11.0, 12.5, 14.5],
        volume=[1.0, 2.0, 3.0],
        trade_num=[5, 6, 7],
    )
    seg["avg_price_1m"] = np.array([10.5, 20.0, 13.5])  # minute 1 lies above its high
    out = fill_segment(seg, MIN, "avg_price_1m")
    assert out["candle_begin_time"].tolist() == [T0 + i * MIN for i in range(5)]
    assert out["close"].tolist() == [11.0, 12.5, 12.5, 12.5, 14.5]
    assert out["open"].tolist() == [10.0, 11.0, 12.5, 12.5, 14.0]
    assert out["high"].tolist() == [12.0, 13.0, 12.5, 12.5, 15.0]
    assert out["low"].tolist() == [9.0, 10.0, 12.5, 12.5, 13.0]
    assert out["volume"].tolist() == [1.0, 2.0, 0.0, 0.0, 3.0]
    assert out["trade_num"].tolist() == [5, 6, 0, 0, 7]
    assert out["trade_num"].dtype == np.int64
    for name in ("quote_volume", "taker_buy_base_asset_volume", "taker_buy_quote_asset_volume"):
        assert out[name][2:4].tolist() == [0.0, 0.0]
    # Filled VWAP = open; every row clipped to [low, high] (minute 1: 20 → 13).
    assert out["avg_price_1m"].tolist() == [10.5, 13.0, 12.5, 12.5, 13.5]


def test_fill_clips_vwap_below_low_on_a_complete_segment():
    seg = candles([T0, T0 + MIN], low=[99.0, 99.5], high=[101.0, 100.5])
    seg["avg_price_1m"] = np.array([98.0, 100.0])
    out = fill_segment(seg, MIN, "avg_price_1m")
    assert out["avg_price_1m"].tolist() == [99.0, 100.0]
    assert np.shares_memory(out["close"], seg["close"])  # complete segments are not copied


def test_fill_from_a_store_with_row_index():
    # Store rows: minute 3 (row 0), minute 0 (row 1), minute 1 (row 2), a dropped row 3.
    store = candles(
        [T0 + 3 * MIN, T0, T0 + MIN, T0 + 2 * MIN], close=[4.0, 1.0, 2.0, 9.0], volume=[1, 1, 1, 0]
    )
    rows = np.array([1, 2, 0])
    out = fill_segment(store, MIN, rows=rows, time=store["candle_begin_time"][rows])
    assert out["candle_begin_time"].tolist() == [T0 + i * MIN for i in range(4)]
    assert out["close"].tolist() == [1.0, 2.0, 2.0, 4.0]
    assert out["volume"].tolist() == [1.0, 1.0, 0.0, 1.0]
    # An ascending run of rows is used as a view of the store.
    done = fill_segment(store, MIN, rows=np.array([1, 2]))
    assert done["close"].tolist() == [1.0, 2.0]
    assert np.shares_memory(done["close"], store["close"])


def test_fill_rejects_a_candle_off_the_grid():
    seg = candles([T0, T0 + MIN + 30_000])
    with pytest.raises(ValueError, match="not on the 60000 ms grid"):
        fill_segment(seg, MIN)


# ------------------------------------------------------------------ funding
def test_funding_joined_on_filled_grid_keeps_event_at_untraded_minute():
    # Traded minutes: 07:59 and 08:01; the 08:00 minute had no trade (legacy lost its funding).
    t_trade = T0 + 8 * HOUR
    seg = candles([t_trade - MIN, t_trade + MIN])
    out = fill_segment(seg, MIN)
    events = FundingEvents(
        np.array([T0, t_trade, T0 + 16 * HOUR], dtype=np.int64), np.array([0.1, 0.0003, 0.2])
    )
    column = join_funding(out["candle_begin_time"], MIN, events)
    assert column.tolist() == [0.0, 0.0003, 0.0]
    assert count_outside(events, [(t_trade - MIN, t_trade + MIN)], MIN) == 2


def test_count_outside_multiple_segments():
    events = FundingEvents(np.array([0, 10, 20, 30], dtype=np.int64), np.ones(4))
    assert count_outside(events, [(0, 5), (15, 25)], 1) == 2
    assert count_outside(events, [], 1) == 4


# ------------------------------------------------------------------ quality gates
def grid(n=4, **overrides):
    return candles([T0 + i * MIN for i in range(n)], **overrides)


def test_checks_pass_and_report_gates():
    cols = grid()
    cols["avg_price_1m"] = np.full(4, 100.0)
    cols["funding_rate"] = np.array([0.0, 0.0001, 0.0, 0.0])
    gates = check_output(
        "f.pqt",
        cols,
        MIN,
        vwap_col="avg_price_1m",
        funding_col="funding_rate",
        funding_time=np.array([T0 + MIN]),
        funding_rate=np.array([0.0001]),
    )
    assert gates["funding_events"] == "1"
    assert gates["ohlc"] == "passed"


@pytest.mark.parametrize(
    "times, overrides, message",
    [
        ([0, 1, 1, 2], {}, "duplicate minute at minute 2020-09-13T00:01:00Z"),
        ([0, 1, 3, 4], {}, "grid not contiguous .* at minute 2020-09-13T00:03:00Z"),
        ([0, 1, 2, 3], {"high": [101, 101, 98, 101]}, "OHLC .* at minute 2020-09-13T00:02:00Z"),
        ([0, 1, 2, 3], {"close": [100, 100, 100, 102]}, "OHLC .* at minute 2020-09-13T00:03:00Z"),
        ([0, 1, 2, 3], {"open": [100, np.nan, 100, 100]}, "non-finite .* 2020-09-13T00:01:00Z"),
    ],
)
def test_checks_name_file_and_minute(times, overrides, message):
    cols = candles([T0 + i * MIN for i in times], **overrides)
    with pytest.raises(QualityGateError, match=f"^out/X.pqt: {message}"):
        check_output("out/X.pqt", cols, MIN)


def test_check_vwap_outside_range():
    cols = grid()
    cols["avg_price_1m"] = np.array([100.0, 100.0, 101.5, 100.0])
    with pytest.raises(QualityGateError, match="avg_price_1m outside .* 2020-09-13T00:02:00Z"):
        check_output("X.pqt", cols, MIN, vwap_col="avg_price_1m")


def test_check_funding_event_lost_or_invented():
    cols = grid()
    cols["funding_rate"] = np.zeros(4)
    kwargs = dict(funding_col="funding_rate", funding_time=np.array([T0 + 2 * MIN]))
    with pytest.raises(QualityGateError, match="funding event of minute 2020-09-13T00:02:00Z"):
        check_output("X.pqt", cols, MIN, funding_rate=np.array([0.0001]), **kwargs)
    cols["funding_rate"] = np.array([0.0, 0.0, 0.0001, 0.0002])
    with pytest.raises(QualityGateError, match="without a source event at minute .*00:03:00Z"):
        check_output("X.pqt", cols, MIN, funding_rate=np.array([0.0001]), **kwargs)


# ------------------------------------------------------------------ output names
def test_symbol_file_pattern_is_exact(tmp_path):
    names = ["BTCUSDT", "SP0_BTCUSDT", "SP12_BTCUSDT", "XBTCUSDT", "SP0_XBTCUSDT", "BTCUSDTX"]
    for n in names:
        (tmp_path / f"{n}.pqt").write_bytes(b"")
    assert [n for n in names if symbol_file_re("BTCUSDT").match(f"{n}.pqt")] == names[:3]
    removed = remove_stale(tmp_path, "BTCUSDT", {"BTCUSDT"})
    assert sorted(p.name for p in removed) == ["SP0_BTCUSDT.pqt", "SP12_BTCUSDT.pqt"]
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["BTCUSDT.pqt", "BTCUSDTX.pqt", "SP0_XBTCUSDT.pqt", "XBTCUSDT.pqt"]


def test_iso_ms():
    assert iso_ms(T0) == "2020-09-13T00:00:00Z"
