"""Tail build of gen_kline (issue 11): after the inputs grow at the end, the incremental
build writes the same bytes as a full build of the same inputs on a copy.

The reference is the unchanged full-build code (tested against legacy elsewhere); the
row-group size is lowered so that the small files here have several row groups and the
kept-row-group path (``parquet_append``) is exercised.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crypto_lakehouse import io, layout
from crypto_lakehouse.generate import parquet_append, run_gen_kline
from crypto_lakehouse.generate import tail as gen_tail
from crypto_lakehouse.resample import run_resample
from crypto_lakehouse.resample import tail as resample_tail
from crypto_lakehouse.schema import (
    API_FUNDING_SCHEMA,
    KLINE_SCHEMA,
    PARSED_FUNDING_SCHEMA,
    TIME_TYPE,
)

MIN = 60_000
HOUR = 3_600_000
DAY = 86_400_000
T0 = 1_598_054_400_000  # 2020-08-22 00:00 UTC: day 10 is 2020-09-01 (a month boundary)
TT, SYM = "um_futures", "BTCUSDT"
N_DAYS = 16


@pytest.fixture(autouse=True)
def small_row_groups(monkeypatch):
    monkeypatch.setattr(parquet_append, "ROW_GROUP_ROWS", 5000)
    # 16 days of 5m are 4,608 rows: the tail resample keeps whole groups of them
    monkeypatch.setattr(resample_tail, "ROW_GROUP_ROWS", 1000)
    # checkpoints' reach in days, scaled with the groups (5,000 minutes, 3.5 days): the two
    # last groups reach further, as 2^17 rows do at 1m (182 days against 45)
    monkeypatch.setattr(gen_tail, "CHECKPOINT_DAYS", 2, raising=False)


def master(seed=3, pause_at=None, holes=()):
    """Minute candles over N_DAYS days: a random walk with missing and zero-volume minutes;
    ``pause_at``: no candle for 3 days from that minute, then prices 30 % higher."""
    rng = np.random.default_rng(seed)
    n = N_DAYS * 1440
    t = T0 + np.arange(n, dtype=np.int64) * MIN
    close = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
    open_ = np.r_[close[0], close[:-1]]
    spread = np.abs(rng.normal(0, 1e-3, n)) * close
    vol = rng.gamma(2.0, 3.0, n)
    vol[rng.choice(n, 40, replace=False)] = 0.0
    keep = rng.random(n) > 0.02
    for lo, hi in holes:
        keep &= ~((t >= lo) & (t < hi))
    if pause_at is not None:
        keep &= ~((t >= pause_at) & (t < pause_at + 3 * DAY))
        up = t >= pause_at + 3 * DAY
        close[up] *= 1.3
        open_[up] *= 1.3
    high = np.maximum(open_, close) + spread
    low = np.minimum(open_, close) - spread
    vwap = low + (high - low) * rng.random(n)
    cols = {
        "candle_begin_time": t,
        "open": open_,
        "high": high,
        "low": low,
        "close": close,
        "volume": vol,
        "quote_volume": vol * vwap,
        "trade_num": rng.integers(1, 50, n),
        "taker_buy_base_asset_volume": vol / 2,
        "taker_buy_quote_asset_volume": vol * vwap / 2,
    }
    return {k: v[keep] for k, v in cols.items()}


def table(cols, lo_ms, hi_ms):
    t = cols["candle_begin_time"]
    sel = (t >= lo_ms) & (t < hi_ms)
    arrays = [
        pa.array(cols[f.name][sel]).view(TIME_TYPE)
        if f.name == "candle_begin_time"
        else pa.array(cols[f.name][sel], type=f.type)
        for f in KLINE_SCHEMA
    ]
    return pa.Table.from_arrays(arrays, schema=KLINE_SCHEMA)


def day_name(day):
    return str(np.datetime64(T0 + day * DAY, "ms").astype("datetime64[D]")).replace("-", "")


def write_state(data_dir: Path, cols, archive_days: int, rest_until_ms: int, funding_rates):
    """Archive day files for days < archive_days; REST day files from the archive's last
    day up to ``rest_until_ms`` (the last one partial); funding every 8 h in both."""
    a_dir = layout.parsed_klines_dir(data_dir, TT, SYM, "1m")
    r_dir = layout.api_klines_dir(data_dir, TT, SYM, "1m")
    for day in range(archive_days):
        path = a_dir / f"{day_name(day)}.pqt"
        if not path.exists():  # an unchanged partition keeps its file (size and mtime)
            io.write_parquet(path, table(cols, T0 + day * DAY, T0 + (day + 1) * DAY))
    day = archive_days - 1
    while T0 + day * DAY < rest_until_ms:
        io.write_parquet(
            r_dir / f"{day_name(day)}.pqt",
            table(cols, T0 + day * DAY, min(T0 + (day + 1) * DAY, rest_until_ms)),
        )
        day += 1
    f_time = T0 + np.arange(0, N_DAYS * 3) * 8 * HOUR
    f_arr = pa.array(f_time).view(TIME_TYPE)
    arch = f_time < T0 + archive_days * DAY
    io.write_parquet(
        layout.parsed_funding_path(data_dir, TT, SYM),
        pa.Table.from_arrays(
            [
                f_arr.filter(pa.array(arch)),
                pa.array(np.full(arch.sum(), 8)),
                pa.array(funding_rates[arch]),
                f_arr.filter(pa.array(arch)),
            ],
            schema=PARSED_FUNDING_SCHEMA,
        ),
    )
    rest = f_time <= rest_until_ms
    rest[: max(0, rest.sum() - 10)] = False  # REST holds the last 10 events
    io.write_parquet(
        layout.api_funding_path(data_dir, TT, SYM),
        pa.Table.from_arrays(
            [
                pa.array(f_time[rest] + 8).view(TIME_TYPE),
                f_arr.filter(pa.array(rest)),
                pa.array(funding_rates[rest]),
            ],
            schema=API_FUNDING_SCHEMA,
        ),
    )


def gen(data_dir: Path, incremental: bool, **overrides):
    args = dict(
        trade_type=TT,
        symbol=SYM,
        interval="1m",
        data_dir=data_dir,
        split_gaps=True,
        with_vwap=True,
        with_funding_rates=True,
        min_days=1,
        min_price_chg=0.1,
        report_path=data_dir / "rep" / "report.json",
        stats_path=data_dir / "rep" / "stats.json",
        incremental=incremental,
    )
    return run_gen_kline(**(args | overrides))


TARGETS = [
    {"interval": "1h", "offset_step": "15m"},
    {"interval": "5m", "offset_step": "0m"},
    {"interval": "1d", "offset_step": "0m"},
]


def resample(data_dir: Path, incremental: bool, aggregations=None):
    return run_resample(
        trade_type=TT,
        symbol=SYM,
        interval="1m",
        data_dir=data_dir,
        gen_report=data_dir / "rep" / "report.json",
        targets=TARGETS,
        aggregations=aggregations,
        report_path=data_dir / "rep" / "resample.json",
        stats_path=data_dir / "rep" / "resample_stats.json",
        incremental=incremental,
    )


def outputs(data_dir: Path) -> dict[str, bytes]:
    root = layout.results_klines_dir(data_dir, TT, "1m").parent.parent
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.pqt"))}


def grow_and_compare(tmp_path, cols, old, new, expect_tail=True, **overrides):
    """Build ``old`` (a write_state argument tuple), grow to ``new``, run the incremental
    build, and compare with a full build of the grown inputs on a copy."""
    inc = tmp_path / "inc"
    write_state(inc, cols, *old)
    first = gen(inc, incremental=True, **overrides)
    assert "incremental" not in first  # no record yet: a full build
    resample(inc, incremental=True)
    write_state(inc, cols, *new)
    ref = tmp_path / "ref"
    shutil.copytree(inc, ref)
    stats = gen(inc, incremental=True, **overrides)
    gen(ref, incremental=False, **overrides)
    assert ("incremental" in stats) == expect_tail, stats
    modes = resample(inc, incremental=True)["segments_by_mode"]
    resample(ref, incremental=False)
    n_segments = len(io.read_json(ref / "rep" / "report.json")["segments"])
    if expect_tail and n_segments == 1:  # the newest segment kept its name: a tail resample
        assert modes == {"kept": 0, "tail": 1, "full": 0}, modes
    assert io.read_json(inc / "rep" / "resample.json") == io.read_json(
        ref / "rep" / "resample.json"
    )
    got, want = outputs(inc), outputs(ref)
    assert got.keys() == want.keys()
    for name in want:
        assert got[name] == want[name], name
    assert io.read_json(inc / "rep" / "report.json") == io.read_json(ref / "rep" / "report.json")
    return stats, io.read_json(ref / "rep" / "report.json")


RATES = np.random.default_rng(5).normal(1e-4, 5e-5, N_DAYS * 3)


def test_one_more_day_keeps_row_groups_and_matches_full_build(tmp_path, monkeypatch):
    kept_by_file = {}
    append_rows = parquet_append.append_rows

    def spy(path, previous, keep_groups, *args, **kwargs):
        kept_by_file[Path(path).parent.parent.name + "/" + Path(path).parent.name] = keep_groups
        return append_rows(path, previous, keep_groups, *args, **kwargs)

    monkeypatch.setattr(parquet_append, "append_rows", spy)
    cols = master()
    stats, report = grow_and_compare(
        tmp_path, cols, (8, T0 + 9 * DAY + 12 * HOUR, RATES), (9, T0 + 10 * DAY + 12 * HOUR, RATES)
    )
    assert stats["incremental"]["row_groups_kept"] >= 2
    assert len(report["segments"]) == 1
    # the 5m file (~2,900 rows in groups of 1,000) kept its first two groups, bytes unread
    assert kept_by_file["5m/0m"] == 2
    # Tail-built files carry the metadata key the loaders tell the pipeline's files by (a
    # file without it is one no run wrote: LegacyUnownedWarning).
    from crypto_lakehouse.loading import PIPELINE_STAMP

    outputs = sorted(tmp_path.rglob("results_data/**/*.pqt"))
    assert len(outputs) >= 4
    assert [p for p in outputs if PIPELINE_STAMP["klines"] not in pq.read_schema(p).metadata] == []


def test_the_day_after_crossing_into_a_new_row_group_is_a_tail_build(tmp_path):
    """The old file (10.5 days: 15,120 rows) has just crossed into its fourth row group of
    5,000 (from row 15,000, day 10 at 10:00). The update replaces REST's day 10 by the
    archive's: the change is at day 10 00:00, before the last group's first day start. A
    checkpoint in the group before takes it as a tail (groups 0-1 kept, 2-3 rewritten);
    with checkpoints in the last group only this was a full build."""
    cols = master(seed=21)
    stats, report = grow_and_compare(
        tmp_path,
        cols,
        (10, T0 + 10 * DAY + 12 * HOUR, RATES),
        (11, T0 + 11 * DAY + 12 * HOUR, RATES),
    )
    assert stats["incremental"]["from"].startswith(day_iso(10)), stats["incremental"]
    assert stats["incremental"]["row_groups_kept"] == 2
    assert len(report["segments"]) == 1


def test_an_archive_catching_up_days_behind_the_last_two_row_groups_is_a_tail_build(
    tmp_path, monkeypatch
):
    """Row groups of 5,000 minutes (3.5 days) stand for a 1s file's 2^17 rows (1.5 days).
    REST filled days 4-12 while the archive lagged; it then publishes days 5-11 at once:
    the change at day 5 00:00 lies before the last two groups (from row 10,000, day 6.9).
    With checkpoints in those two groups only, this was a full build; at 1s the same
    happened whenever the archive lagged REST by two days or more, each day it did (a full
    rebuild of the whole 1s history). Checkpoints now reach back CHECKPOINT_DAYS as well."""
    # 10 days against groups of 3.5 days: as at 1s, the days reach further than two groups
    monkeypatch.setattr(gen_tail, "CHECKPOINT_DAYS", 10, raising=False)
    cols = master(seed=8)
    stats, report = grow_and_compare(
        tmp_path,
        cols,
        (5, T0 + 12 * DAY + 12 * HOUR, RATES),
        (12, T0 + 13 * DAY + 12 * HOUR, RATES),
    )
    assert stats["incremental"]["mode"] == "tail", stats["incremental"]
    assert stats["incremental"]["from"].startswith(day_iso(5)), stats["incremental"]
    assert stats["incremental"]["row_groups_kept"] == 1  # rows 0-4,999: before day 5 (7,200)
    assert len(report["segments"]) == 1


def day_iso(day):
    return str(np.datetime64(T0 + day * DAY, "ms"))[:16]


def test_month_boundary_and_two_days(tmp_path):
    cols = master(seed=4)
    stats, _ = grow_and_compare(
        tmp_path, cols, (8, T0 + 9 * DAY + 23 * HOUR, RATES), (10, T0 + 11 * DAY + 1 * HOUR, RATES)
    )
    assert stats["incremental"]["from"].startswith("2020-08-3")


def test_gap_at_the_old_end_is_filled_across_it(tmp_path):
    end = T0 + 9 * DAY + 12 * HOUR
    cols = master(seed=5, holes=[(end - 3 * HOUR, end + 2 * HOUR)])
    grow_and_compare(tmp_path, cols, (8, end, RATES), (9, T0 + 10 * DAY + 12 * HOUR, RATES))


def test_pause_after_the_old_end_starts_a_new_segment(tmp_path):
    end = T0 + 9 * DAY + 12 * HOUR
    cols = master(seed=6, pause_at=end - HOUR)
    _, report = grow_and_compare(
        tmp_path, cols, (8, end, RATES), (9, T0 + 13 * DAY + 12 * HOUR, RATES)
    )
    assert [s["name"] for s in report["segments"]] == [f"SP0_{SYM}", SYM]


def test_pause_inside_the_new_days_starts_a_new_segment(tmp_path):
    end = T0 + 9 * DAY + 12 * HOUR
    cols = master(seed=7, pause_at=end + 6 * HOUR)
    _, report = grow_and_compare(
        tmp_path, cols, (8, end, RATES), (9, T0 + 13 * DAY + 12 * HOUR, RATES)
    )
    assert len(report["segments"]) == 2


def test_funding_changed_in_the_kept_rows_falls_back(tmp_path):
    cols = master(seed=8)
    changed = RATES.copy()
    changed[3] += 1e-4
    grow_and_compare(
        tmp_path,
        cols,
        (8, T0 + 9 * DAY + 12 * HOUR, RATES),
        (9, T0 + 10 * DAY + 12 * HOUR, changed),
        expect_tail=False,
    )


def test_an_earlier_partition_rewritten_falls_back(tmp_path):
    cols = master(seed=9)
    inc = tmp_path / "inc"
    write_state(inc, cols, 8, T0 + 9 * DAY + 12 * HOUR, RATES)
    gen(inc, incremental=True)
    path = layout.parsed_klines_dir(inc, TT, SYM, "1m") / f"{day_name(2)}.pqt"
    io.write_parquet(path, table(cols, T0 + 2 * DAY, T0 + 2 * DAY + 20 * HOUR))
    ref = tmp_path / "ref"
    shutil.copytree(inc, ref)
    stats = gen(inc, incremental=True)
    gen(ref, incremental=False)
    assert "incremental" not in stats
    assert outputs(inc) == outputs(ref)


def test_other_parameters_fall_back(tmp_path):
    cols = master(seed=10)
    inc = tmp_path / "inc"
    write_state(inc, cols, 8, T0 + 9 * DAY + 12 * HOUR, RATES)
    gen(inc, incremental=True)
    stats = gen(inc, incremental=True, min_price_chg=0.2)
    assert "incremental" not in stats


def test_without_split_and_funding(tmp_path):
    cols = master(seed=11, pause_at=T0 + 9 * DAY + 20 * HOUR)
    grow_and_compare(
        tmp_path,
        cols,
        (8, T0 + 9 * DAY + 12 * HOUR, RATES),
        (9, T0 + 13 * DAY, RATES),
        split_gaps=False,
        with_funding_rates=False,
    )


def test_older_segment_kept_and_newest_extended(tmp_path):
    cols = master(seed=12, pause_at=T0 + 12 * HOUR)
    stats, report = grow_and_compare(
        tmp_path, cols, (8, T0 + 9 * DAY + 12 * HOUR, RATES), (9, T0 + 10 * DAY + 12 * HOUR, RATES)
    )
    assert [s["name"] for s in report["segments"]] == [f"SP0_{SYM}", SYM]
    resample_stats = io.read_json(tmp_path / "inc" / "rep" / "resample_stats.json")
    assert resample_stats["segments_by_mode"] == {"kept": 1, "tail": 1, "full": 0}
    # The kept segment's files were not written again: they are not counted as written
    # (the report's section 4 showed every held file as written).
    resampled = io.read_json(tmp_path / "inc" / "rep" / "resample.json")["outputs"]
    newest = [o for o in resampled if not o["file"].rsplit("/", 1)[1].startswith("SP0_")]
    assert 0 < len(newest) < len(resampled)
    assert resample_stats["files_written"] == len(newest)
    assert resample_stats["rows_written"] == sum(o["rows"] for o in newest)


def write_month_state(data_dir: Path, cols, archive_days: int, rest_until_ms: int, tweak=None):
    """``write_state`` with the archive as one monthly partition (days 0..8 are in August
    2020), as aws_parse writes it: a daily update rewrites the whole file with one more day
    (new size and mtime, the same earlier rows). ``tweak(cols)``: alter the partition's rows."""
    write_state(data_dir, cols, archive_days, rest_until_ms, RATES)
    a_dir = layout.parsed_klines_dir(data_dir, TT, SYM, "1m")
    for day in range(archive_days):
        (a_dir / f"{day_name(day)}.pqt").unlink()
    part = {k: v.copy() for k, v in cols.items()}
    if tweak:
        tweak(part)
    io.write_parquet(a_dir / "202008.pqt", table(part, T0, T0 + archive_days * DAY))


def bump_trade_num(day_offset_ms):
    """A tweak: one more trade in the candle at ``T0 + day_offset_ms`` (no gate notices)."""

    def tweak(cols):
        cols["trade_num"][np.searchsorted(cols["candle_begin_time"], T0 + day_offset_ms)] += 1

    return tweak


@pytest.mark.parametrize(
    ("tweak", "expect_from"),
    [
        (None, "2020-08-30T00:00"),  # one more day: only the new day is recomputed
        (bump_trade_num(7 * DAY + 5 * HOUR), "2020-08-29T00:00"),  # back to the changed row
        (bump_trade_num(2 * DAY + 5 * HOUR), None),  # before the last row group: full build
    ],
)
def test_month_partition_rewritten(tmp_path, tweak, expect_from):
    """The old partition holds days 0..7 (REST: day 7 to day 9 12:00); the rewritten one
    days 0..8, one row possibly changed (REST: day 8 to day 10 12:00, every REST file
    rewritten, day 7's with the same rows). The first differing candle is on day 8 (the
    REST day file that grew, the partition's new day) or on the changed row's day."""
    cols = master(seed=13)
    inc = tmp_path / "inc"
    write_month_state(inc, cols, 8, T0 + 9 * DAY + 12 * HOUR)
    assert "incremental" not in gen(inc, incremental=True)
    resample(inc, incremental=True)
    write_month_state(inc, cols, 9, T0 + 10 * DAY + 12 * HOUR, tweak)
    ref = tmp_path / "ref"
    shutil.copytree(inc, ref)
    stats = gen(inc, incremental=True)
    gen(ref, incremental=False)
    if expect_from is None:
        assert "incremental" not in stats
    else:
        assert stats["incremental"]["from"].startswith(expect_from), stats["incremental"]
    resample(inc, incremental=True)
    resample(ref, incremental=False)
    got, want = outputs(inc), outputs(ref)
    assert got.keys() == want.keys()
    for name in want:
        assert got[name] == want[name], name
    for rep in ("report.json", "resample.json"):
        assert io.read_json(inc / "rep" / rep) == io.read_json(ref / "rep" / rep)
