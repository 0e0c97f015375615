"""The report's building blocks: coverage arithmetic, heatmap categories, record readers."""

from __future__ import annotations

import os
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crypto_lakehouse import layout, storage
from crypto_lakehouse.report import records
from crypto_lakehouse.report.coverage import (
    GAP,
    NO_DAY,
    PENDING,
    category_grid,
    coverage_table,
    read_segments,
)

MIN = 60_000
DAY = 86_400_000
D0 = (date(2024, 1, 1) - date(1970, 1, 1)).days  # day number of 2024-01-01


def ms(day_offset: int, minute: int = 0) -> int:
    return (D0 + day_offset) * DAY + minute * MIN


def textbook_coverage(archive, rest, segments, end_day, now_ms=None):
    """Minute-by-minute loop over sets: the definitions of the issue, nothing vectorised.

    ``archive``/``rest``: sets of candle times (ms); ``segments``: [(first_ms, end_ms)];
    ``now_ms``: the report's time: a day not over by then has its uncovered minutes pending."""
    inside = set()
    for a, b in segments:
        inside |= set(range(a, b, MIN))
    ordered = sorted(segments)
    gap = set()
    for (_, end1), (start2, _) in zip(ordered, ordered[1:], strict=False):
        gap |= set(range(end1, start2, MIN))
    first = min(min(archive | rest), min(a for a, _ in segments))
    rows = []
    for day in range(first // DAY, end_day + 1):
        day_minutes = set(range(day * DAY, (day + 1) * DAY, MIN))
        life = {t for t in day_minutes if t >= first} - gap
        a = archive & day_minutes
        r = (rest - archive) & day_minutes
        filled = (inside & day_minutes) - archive - rest
        uncovered = len(life - a - r - filled)
        over = now_ms is None or (day + 1) * DAY <= now_ms
        rows.append(
            {
                "day": day,
                "minutes_archive": len(a),
                "minutes_rest": len(r),
                "minutes_filled": len(filled),
                "minutes_missing": uncovered if over else 0,
                "minutes_pending": 0 if over else uncovered,
                "in_gap": day_minutes <= gap,
            }
        )
    return pd.DataFrame(rows)


def provenance_of(symbol, archive, rest):
    days = sorted({t // DAY for t in archive | rest})
    return pd.DataFrame(
        {
            "symbol": symbol,
            "day": days,
            "archive_rows": [sum(1 for t in archive if t // DAY == d) for d in days],
            "rows": [sum(1 for t in archive | rest if t // DAY == d) for d in days],
        }
    )


def test_coverage_matches_the_minute_by_minute_definition():
    # Life starts 2024-01-01 10:00; archive to day 2 12:00 with 30 minutes of downtime on
    # day 1 (filled), REST completes day 2 and has day 3; delisted from day 3 18:00 to day
    # 7 06:00 (gap: days 4..6 whole, days 3 and 7 partly); relisted, archive until day 8,
    # then nothing to end_date = day 10 (missing tail).
    archive = set(range(ms(0, 600), ms(2, 720), MIN)) - set(range(ms(1, 100), ms(1, 130), MIN))
    archive |= set(range(ms(7, 360), ms(9), MIN))
    rest = set(range(ms(2, 0), ms(3, 1080), MIN)) - set(range(ms(2, 0), ms(2, 5), MIN))
    segments = [(ms(0, 600), ms(3, 1080)), (ms(7, 360), ms(9))]
    end_day = D0 + 10
    prov = pd.concat([provenance_of("AAAUSDT", archive, rest)], ignore_index=True)
    segs = pd.DataFrame(
        [("AAAUSDT", a, b) for a, b in segments], columns=["symbol", "first_ms", "end_ms"]
    )
    got = coverage_table(prov, segs, trade_type="spot", interval="1m", end_day=end_day)
    expected = textbook_coverage(archive, rest, segments, end_day)
    pd.testing.assert_frame_equal(
        got.drop(columns=["trade_type", "symbol"]).reset_index(drop=True),
        expected,
        check_dtype=False,
    )
    # and the sums: 1440 on days fully inside the life, gap days all zero
    by_day = got.set_index("day")
    four = by_day[["minutes_archive", "minutes_rest", "minutes_filled", "minutes_missing"]]
    assert (four.loc[[D0 + 1, D0 + 2, D0 + 8, D0 + 9, D0 + 10]].sum(axis=1) == 1440).all()
    assert by_day.loc[D0 + 1, "minutes_filled"] == 30
    assert by_day.loc[D0 + 4 : D0 + 6, "in_gap"].all()
    assert not by_day.loc[[D0 + 3, D0 + 7], "in_gap"].any()
    assert (four.loc[D0 + 4 : D0 + 6].to_numpy() == 0).all()
    assert (by_day.loc[D0 + 9 : D0 + 10, "minutes_missing"] == 1440).all()
    assert (by_day["minutes_pending"] == 0).all()  # every day over (no now_ms)


def test_the_day_not_over_when_the_report_runs_is_pending_not_missing():
    # end_date unset: end_day is today, whose candles neither the archive (published the
    # next day) nor REST (complete days only) can hold yet. It was painted "missing" for
    # every symbol. Days over by then stay missing; covered minutes keep their source.
    archive = set(range(ms(0, 600), ms(2), MIN))
    rest = set(range(ms(2), ms(2, 1000), MIN))
    segments = [(ms(0, 600), ms(2, 1000))]
    end_day = D0 + 4
    now = ms(4, 13 * 60 + 7)  # day 4, 13:07 UTC
    prov = provenance_of("AAAUSDT", archive, rest)
    segs = pd.DataFrame(
        [("AAAUSDT", a, b) for a, b in segments], columns=["symbol", "first_ms", "end_ms"]
    )
    got = coverage_table(prov, segs, trade_type="spot", interval="1m", end_day=end_day, now_ms=now)
    expected = textbook_coverage(archive, rest, segments, end_day, now_ms=now)
    pd.testing.assert_frame_equal(
        got.drop(columns=["trade_type", "symbol"]).reset_index(drop=True),
        expected,
        check_dtype=False,
    )
    by_day = got.set_index("day")
    assert by_day.loc[D0 + 4, ["minutes_missing", "minutes_pending"]].tolist() == [0, 1440]
    assert by_day.loc[D0 + 3, ["minutes_missing", "minutes_pending"]].tolist() == [1440, 0]
    assert by_day.loc[D0 + 2, ["minutes_rest", "minutes_missing"]].tolist() == [1000, 440]
    assert by_day["minutes_pending"].sum() == 1440
    # a now at the very end of the day: the day is over, its uncovered minutes missing
    over = coverage_table(
        prov, segs, trade_type="spot", interval="1m", end_day=end_day, now_ms=ms(5)
    ).set_index("day")
    assert over.loc[D0 + 4, ["minutes_missing", "minutes_pending"]].tolist() == [1440, 0]
    grid, _, day0 = category_grid(got)
    assert day0 == D0 and grid.tolist() == [[0, 0, 1, 3, PENDING]]


def test_coverage_of_several_symbols_and_a_coarser_interval():
    hour = 3_600_000
    a_times = set(range(ms(0), ms(2), hour))
    b_times = set(range(ms(1, 120), ms(3), hour)) - {ms(2, 300)}
    prov = pd.concat(
        [
            provenance_of("AAA", {t for t in a_times}, set()),
            provenance_of("BBB", {t for t in b_times}, set()),
        ],
        ignore_index=True,
    )
    segs = pd.DataFrame(
        [("AAA", ms(0), ms(2)), ("BBB", ms(1, 120), ms(3))],
        columns=["symbol", "first_ms", "end_ms"],
    )
    got = coverage_table(prov, segs, trade_type="um_futures", interval="1h", end_day=D0 + 2)
    a = got[got["symbol"] == "AAA"].set_index("day")
    b = got[got["symbol"] == "BBB"].set_index("day")
    assert list(a.index) == [D0, D0 + 1, D0 + 2] and list(b.index) == [D0 + 1, D0 + 2]
    assert a.loc[D0 + 2, "minutes_missing"] == 24  # the columns count candles (24 a day at 1h)
    assert b.loc[D0 + 1, ["minutes_archive", "minutes_missing"]].tolist() == [22, 0]
    assert b.loc[D0 + 2, ["minutes_archive", "minutes_filled"]].tolist() == [23, 1]


def test_heatmap_category_is_the_largest_count_or_the_gap():
    frame = pd.DataFrame(
        {
            "symbol": ["LATE", "EARLY", "EARLY", "EARLY", "EARLY"],
            "day": [12, 10, 11, 12, 13],
            "minutes_archive": [1000, 1440, 0, 0, 0],
            "minutes_rest": [440, 0, 700, 0, 0],
            "minutes_filled": [0, 0, 740, 0, 0],
            "minutes_missing": [0, 0, 0, 0, 1440],
            "minutes_pending": [0, 0, 0, 0, 0],
            "in_gap": [False, False, False, True, False],
        }
    )
    grid, symbols, day0 = category_grid(frame)
    assert symbols == ["EARLY", "LATE"] and day0 == 10
    assert grid.tolist() == [[0, 2, GAP, 3], [NO_DAY, NO_DAY, 0, NO_DAY]]


def _segment_file(path, first_ms: int, rows: int, gates: dict | None = None):
    times = pa.array(np.arange(rows, dtype=np.int64) * MIN + first_ms, pa.int64())
    table = pa.table({"candle_begin_time": times.cast(pa.timestamp("ms", tz="UTC"))})
    meta = {b"quality_gates": str(gates or {}).replace("'", '"').encode()}
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.replace_schema_metadata(meta), path, row_group_size=1000)


def test_segments_come_from_the_generated_files_footers(tmp_path):
    folder = layout.results_klines_dir(tmp_path, "cm_futures", "1m")
    _segment_file(folder / "SP0_BTCUSD_PERP.pqt", ms(0, 5), 2500, {"ohlc": "passed"})
    _segment_file(folder / "BTCUSD_PERP.pqt", ms(5), 100)
    _segment_file(folder / "ETHUSD_PERP.pqt", ms(1, 7), 3)
    got = read_segments(tmp_path, "cm_futures", "1m").sort_values(["symbol", "first_ms"])
    assert got[["symbol", "first_ms", "end_ms"]].values.tolist() == [
        ["BTCUSD_PERP", ms(0, 5), ms(0, 5) + 2500 * MIN],
        ["BTCUSD_PERP", ms(5), ms(5) + 100 * MIN],
        ["ETHUSD_PERP", ms(1, 7), ms(1, 10)],
    ]
    assert '"ohlc"' in got["gates"].iloc[0]


def test_benchmark_jobs_are_named_by_their_path_whatever_the_grouping(tmp_path):
    root = Path(layout.run_benchmarks_dir(str(tmp_path)))
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    files = {
        "gen_kline/spot/klines-1m/shard-003.tsv": "12.5",
        "gen_kline/spot/klines-1m/BTCUSDT.tsv": "2.0",
        "list_archive/spot/klines-1m.tsv": "1.0",
        "summaries/resample/spot.tsv": "0.5",
    }
    for rel, seconds in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(header + f"{seconds}\t0:00:12\t100.5\t1\t1\t1\t0\t0\t0\t3.5\n")
    (root / "broken.tsv").write_text("not a benchmark\n")
    got = records.read_benchmarks(tmp_path).set_index("job")
    assert set(got.index) == {
        "gen_kline/spot/klines-1m/shard-003",
        "gen_kline/spot/klines-1m/BTCUSDT",
        "list_archive/spot/klines-1m",
        "summaries/resample/spot",
    }
    assert got.loc["gen_kline/spot/klines-1m/shard-003", ["stage", "seconds"]].tolist() == [
        "gen_kline",
        12.5,
    ]
    assert got.loc["list_archive/spot/klines-1m", "stage"] == "aws_download"
    assert got.loc["summaries/resample/spot", "stage"] == "resample"


def test_busy_seconds_is_the_union_of_the_intervals():
    # [0, 12) with [2, 5) inside and [8, 12) overlapping, then [20, 21): 12 + 1
    assert records.busy_seconds([8, 0, 20, 2], [12, 10, 21, 5]) == 13.0
    assert records.busy_seconds([5], [7]) == 2.0


def test_stage_wall_time_is_the_time_its_jobs_ran():
    bench = pd.DataFrame(
        {
            "job": ["a", "b", "c", "d"],
            "stage": ["gen_kline", "gen_kline", "gen_kline", "resample"],
            "seconds": [10.0, 15.0, 4.0, 1.0],
            "max_rss_mb": [1.0] * 4,
            "cpu_time": [1.0] * 4,
            # a [100, 110) and b [105, 120) overlap; c [86400, 86404) is a rerun a day later
            "end_unix": [110.0, 120.0, 86404.0, 140.0],
        }
    )
    summaries = {
        ("gen_kline", "spot"): {
            "symbols": 2,
            "totals": {"seconds.total": 13.0, "files_written": 3},
        },
        ("api_download", "spot"): {
            "symbols": 1,
            "totals": {"seconds": 8.0, "days_fetched": 5, "retries": 2, "http_429": 1},
        },
        ("aws_download", "spot"): {"symbols": 1, "totals": {"seconds": 2.0, "bytes": 4e6}},
        # A daily update: 2 archives downloaded, 1 adopted, 40 verified by earlier runs.
        ("aws_download", "um_futures"): {
            "symbols": 1,
            "totals": {"files_downloaded": 2, "files_adopted": 1, "files_up_to_date": 40},
        },
    }
    got = records.stage_table(summaries, bench).set_index("stage")
    assert got.loc["gen_kline", ["wall_s", "job_seconds", "files", "symbols", "jobs"]].tolist() == [
        24.0,  # 100..120 and 86400..86404, not the day between
        29.0,  # the jobs' own seconds (10 + 15 + 4), not the symbols' work seconds (13)
        3.0,
        2,  # the summary's symbols
        3,  # benchmark files a, b and c, not the symbols (a shard job serves many)
    ]
    # Resample has a job but no summary (its summary job failed): nothing is known of its
    # symbols and files, shown "–", not 0.
    assert got.loc["resample", "jobs"] == 1 and got.loc["resample", "summaries"] == "none"
    assert got.loc[["resample"], ["symbols", "files", "mb"]].isna().all(axis=None)
    assert got.loc["gen_kline", "summaries"] == "spot"
    assert got.loc["resample", "wall_s"] == 1.0
    assert got.loc["api_download", "jobs"] == 0
    assert got.loc["api_download", ["files", "retries", "http_429"]].tolist() == [5.0, 2.0, 1.0]
    assert got.loc["aws_download", "mb_per_s"] == pytest.approx(2.0)
    assert got.loc["aws_download", "mb"] == pytest.approx(4.0)
    # Files downloaded or adopted in this run (docs/report.md), not those already verified.
    assert got.loc["aws_download", "files"] == 3.0
    assert pd.isna(got.loc["aws_parse", "wall_s"])
    # gen_kline and the REST fill count no bytes: "–", not 0 MB beside the files written.
    assert got.loc[["gen_kline", "api_download"], "mb"].isna().all()


def test_quality_scores_and_reasons(tmp_path):
    from crypto_lakehouse.quality import QUALITY_SCHEMA

    folder = layout.quality_dir(tmp_path, "spot", "1m")
    folder.mkdir(parents=True)
    day = pa.array([date(2024, 1, 1), date(2024, 1, 2)], pa.date32())
    for name, rows, zero, ohlc, scores in (
        ("GOODUSDT", [1440, 1440], [0, 0], [0, 0], [1.0, 1.0]),
        ("BADUSDT", [1440, 0], [144, 0], [3, 0], [0.9, 0.0]),
    ):
        table = pa.table(
            {
                "date": day,
                "source": pa.array(["k1", None], pa.string()),
                "rows": rows,
                "expected_rows": [1440, 1440],
                "missing_rows": [1440 - r for r in rows],
                "zero_volume_rows": zero,
                "longest_zero_volume_run": [0, 0],
                "ohlc_violations": ohlc,
                "taker_violations": [0, 0],
                "score": scores,
            },
            schema=QUALITY_SCHEMA,
        )
        pq.write_table(table, folder / f"{name}.pqt")
    got = records.quality_scores(tmp_path, ["spot"], "1m").set_index("symbol")
    assert got.loc["BADUSDT", "score"] == pytest.approx(0.45)
    assert got.loc["GOODUSDT", "score"] == 1.0
    reasons = records.quality_reasons(got)
    assert reasons["BADUSDT"] == (
        "50.0% of candles missing (1 day without rows); 3 OHLC violations; "
        "10.0% zero-volume candles"
    )
    assert reasons["GOODUSDT"] == "no defect found"


def test_quality_scores_sum_a_few_hundred_symbols_at_a_time(tmp_path, monkeypatch):
    """The quality records are read and summed in chunks of files (a file is a symbol's),
    not all symbols' rows at once (2,700 symbols × 2,000 days: 0.8 GB peak before); the
    sums, means and day counts are those of each symbol's own rows."""
    from crypto_lakehouse.quality import QUALITY_SCHEMA

    folder = layout.quality_dir(tmp_path, "spot", "1m")
    folder.mkdir(parents=True)
    rng = np.random.default_rng(3)
    expected = {}
    for i in range(7):
        n = 3 + i
        rows = rng.integers(0, 1441, n)
        score = rng.random(n)
        pq.write_table(
            pa.table(
                {
                    "date": pa.array(np.arange(n, dtype=np.int32), pa.int32()).cast(pa.date32()),
                    "source": pa.array(["k1"] * n, pa.string()),
                    "rows": rows,
                    "expected_rows": np.full(n, 1440),
                    "missing_rows": 1440 - rows,
                    "zero_volume_rows": np.zeros(n, np.int64),
                    "longest_zero_volume_run": np.zeros(n, np.int64),
                    "ohlc_violations": np.full(n, i),
                    "taker_violations": np.zeros(n, np.int64),
                    "score": score,
                },
                schema=QUALITY_SCHEMA,
            ),
            folder / f"S{i}USDT.pqt",
        )
        expected[f"S{i}USDT"] = (rows.sum(), n * i, score.mean(), n, (rows == 0).sum())
    seen: list[int] = []
    real = records.read_symbol_tables

    def spy(*args, **kwargs):
        table = real(*args, **kwargs)
        seen.append(table.column("symbol").unique().to_pylist())
        return table

    monkeypatch.setattr(records, "read_symbol_tables", spy)
    monkeypatch.setattr(records, "QUALITY_FILES_AT_ONCE", 3, raising=False)
    got = records.quality_scores(tmp_path, ["spot"], "1m").set_index("symbol")
    assert max(len(symbols) for symbols in seen) <= 3  # before: the 7 symbols in one read
    assert sorted(got.index) == sorted(expected)
    for symbol, (rows, ohlc, score, days, no_rows) in expected.items():
        assert got.loc[symbol, "rows"] == rows
        assert got.loc[symbol, "ohlc_violations"] == ohlc
        assert got.loc[symbol, "score"] == pytest.approx(score, rel=1e-12)
        assert got.loc[symbol, "days"] == days
        assert got.loc[symbol, "days_without_rows"] == no_rows


def test_symbol_tables_do_not_hold_every_rows_file_path(tmp_path):
    """read_symbol_tables keeps each row's symbol, not its file's full path: a whole scan's
    ``__filename`` column held 3.4 M paths for 2,700 symbols × 2,000 days. Measured in a
    fresh process by the Arrow pool's peak (deterministic, unlike the RSS): 300 files of
    2,000 rows under a long folder name peaked at 128 MB for a 22.5 MB result before."""
    script = f"""
import json, sys
from pathlib import Path
import numpy as np, pyarrow as pa, pyarrow.parquet as pq
folder = Path({str(tmp_path)!r}) / ("long_folder_name_" * 8) / "quality"
folder.mkdir(parents=True)
for i in range(300):
    pq.write_table(pa.table({{"day": np.arange(2000), "rows": np.full(2000, 1440)}}),
                   folder / f"S{{i:04d}}USDT.pqt")
from crypto_lakehouse.report.coverage import read_symbol_tables
t = read_symbol_tables(folder, ["day", "rows"], "x")
assert t.column("symbol").to_pylist()[::2000] == [f"S{{i:04d}}USDT" for i in range(300)]
print(json.dumps({{"peak": pa.default_memory_pool().max_memory(), "nbytes": t.nbytes}}))
"""
    import json
    import subprocess
    import sys

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
    )
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    # The paths alone are 300 × 2,000 × ~170 bytes ≈ 100 MB; the result ~17 MB.
    assert figures["peak"] < 2 * figures["nbytes"] + (8 << 20), figures


def test_quarantined_files_with_reasons(tmp_path):
    key = "data/spot/daily/klines/X/1m/X-1m-2024-01-01.zip"
    target = layout.quarantine_path(tmp_path, key)
    target.parent.mkdir(parents=True)
    target.write_bytes(b"zip")
    target.with_name(target.name + ".reason").write_text("line 3: field 'open' is not a number\n")
    got = records.quarantined_files(tmp_path)
    assert got.values.tolist() == [[key, "line 3: field 'open' is not a number"]]


def test_only_the_reasons_shown_are_read(tmp_path, monkeypatch):
    # The page lists 500 quarantined files; each reason read is a request on S3, and every
    # one was read: the report's time grew with the quarantine. All keys are still counted.
    keys = [f"data/spot/daily/klines/X/1m/X-1m-2024-01-{d:02d}.zip" for d in range(1, 8)]
    for key in keys:
        target = layout.quarantine_path(tmp_path, key)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"zip")
        target.with_name(target.name + ".reason").write_text(f"{key[-14:]}: bad\n")
    read = []
    real = storage.read_bytes
    monkeypatch.setattr(storage, "read_bytes", lambda p: read.append(p) or real(p))
    got = records.quarantined_files(tmp_path, reasons_read=3)
    assert got["key"].tolist() == keys and len(read) == 3
    assert got["reason"].tolist()[:3] == [f"{k[-14:]}: bad" for k in keys[:3]]
    assert got["reason"].iloc[3:].isna().all()


def test_a_quarantined_key_verified_again_is_no_longer_listed(tmp_path):
    # The archive re-published a fixed file: downloaded and verified again, it is no longer
    # quarantined, though its old copy stays for inspection. Before, the page listed it.
    keys = [f"data/spot/daily/aggTrades/X/X-aggTrades-2025-01-0{d}.zip" for d in (1, 2, 3)]
    for key in keys:
        target = layout.quarantine_path(tmp_path, key)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"zip")
        target.with_name(target.name + ".reason").write_text(f"{key}: line 5: bad\n")
    fixed, unverified, _ = (layout.aws_path(tmp_path, k) for k in keys)
    fixed.parent.mkdir(parents=True)
    fixed.write_bytes(b"new zip")
    layout.verified_marker(fixed).write_text("")
    unverified.write_bytes(b"new zip, not verified yet")
    got = records.quarantined_files(tmp_path)
    assert sorted(got["key"]) == keys[1:]


def test_freshness_lag_behind_the_end_of_end_date():
    segs = pd.DataFrame(
        {"symbol": ["A", "A", "B"], "first_ms": [0, 0, 0], "end_ms": [ms(3), ms(9, 1380), ms(10)]}
    )
    got = records.freshness(segs, ["A", "B", "C"], D0 + 9, "spot").set_index("symbol")
    assert got.loc["A", "lag_minutes"] == 60
    assert got.loc["B", "lag_minutes"] == 0
    assert pd.isna(got.loc["C", "lag_minutes"])
    assert got.loc["B", "last_candle_close"] == datetime(2024, 1, 11, tzinfo=timezone.utc)


def test_an_unreadable_provenance_file_leaves_out_only_its_symbol(tmp_path, caplog):
    from crypto_lakehouse.report.coverage import read_provenance

    folder = layout.provenance_dir(tmp_path, "spot", "1m")
    folder.mkdir(parents=True)
    table = pa.table(
        {
            "day": pa.array([date(2024, 1, 1)], pa.date32()),
            "archive_rows": [1440],
            "rows": [1440],
        }
    )
    pq.write_table(table, folder / "GOODUSDT.pqt")
    (folder / "BADUSDT.pqt").write_bytes(b"not parquet")
    got = read_provenance(tmp_path, "spot", "1m")
    assert got["symbol"].tolist() == ["GOODUSDT"] and got["day"].tolist() == [D0]
    assert "BADUSDT.pqt" in caplog.text


def test_readable_provenance_files_are_read_in_one_scan(tmp_path, caplog):
    """The one dataset scan names each row's file; until 2026-12-05 its projection asked
    for "__filename" in a form pyarrow refuses, so every report read file by file and
    logged a warning per folder."""
    from crypto_lakehouse.report.coverage import read_provenance

    folder = layout.provenance_dir(tmp_path, "spot", "1m")
    folder.mkdir(parents=True)
    for i, name in enumerate(["BTCUSDT", "ETHUSDT"]):
        day = pa.array([date(2024, 1, 1 + i)], pa.date32())
        pq.write_table(pa.table({"day": day, "archive_rows": [10 + i], "rows": [1440]}),
                       folder / f"{name}.pqt")  # fmt: skip
    caplog.set_level("WARNING")
    got = read_provenance(tmp_path, "spot", "1m").sort_values("symbol")
    assert got["symbol"].tolist() == ["BTCUSDT", "ETHUSDT"]
    assert got["day"].tolist() == [D0, D0 + 1] and got["archive_rows"].tolist() == [10, 11]
    assert "one by one" not in caplog.text


def test_a_launched_jobs_cpu_and_memory_are_the_nodes(tmp_path):
    """cluster.launcher srun: Snakemake's table measured the launcher; the node's figures
    (written by the launcher during the job) replace its CPU and memory, and only those of
    this run of the job (not a file left by an earlier run)."""
    root = Path(layout.run_benchmarks_dir(str(tmp_path)))
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    log = f"{tmp_path}/logs/gen_kline/spot/klines-1m/shards/0.log"
    node_file = Path(layout.node_figures_path(log))
    assert node_file == root / "gen_kline/spot/klines-1m/shards/0.node.json"
    node_file.parent.mkdir(parents=True)
    node_file.write_text('{"s": 59.0, "cpu_time": 55.25, "max_rss": 812.5, "host": "n1"}')
    table = root / "gen_kline/spot/klines-1m/shards/0.tsv"
    table.write_text(header + "60.0\t0:01:00\t21.0\t1\t1\t1\t0\t0\t0\t0.04\n")
    end = table.stat().st_mtime
    os.utime(node_file, (end - 1, end - 1))
    got = records.read_benchmarks(tmp_path).set_index("job")
    row = got.loc["gen_kline/spot/klines-1m/shards/0"]
    assert (row["seconds"], row["cpu_time"], row["max_rss_mb"]) == (60.0, 55.25, 812.5)
    # Left by a run before this job started (the job ran locally this time): not used.
    os.utime(node_file, (end - 600, end - 600))
    row = (
        records.read_benchmarks(tmp_path).set_index("job").loc["gen_kline/spot/klines-1m/shards/0"]
    )
    assert (row["cpu_time"], row["max_rss_mb"]) == (0.04, 21.0)


@pytest.mark.parametrize(
    "names", [["BTCUSDT", "ETHUSDT"], ["BROCCOLI714USDT", "1000000BOBUSDT", "1000SHIBUSD_PERP"]]
)
def test_heatmap_symbol_labels_fit_in_the_image(names):
    """Real names run to 16 characters (BROCCOLI714USDT, 1000SHIBUSD_PERP): none is cut at the
    image's left edge, and a short name keeps the usual margin."""
    import matplotlib.pyplot as plt

    from crypto_lakehouse.report import figures

    fig = figures.heatmap_figure(np.zeros((len(names), 30), dtype=np.uint8), names, 19_000, "t")
    try:
        fig.canvas.draw()
        ax = fig.axes[0]
        shown = [t for t in ax.get_yticklabels() if t.get_text()]
        assert [t.get_text() for t in shown] == names
        assert min(t.get_window_extent().x0 for t in shown) >= 0
        left_px = ax.get_position().x0 * fig.bbox.width
        if max(map(len, names)) <= 7:
            assert left_px == pytest.approx(110)
    finally:
        plt.close(fig)


def test_resample_check_counts_the_files_held_not_only_those_written():
    # A daily update that skips every unchanged symbol wrote 0 resampled files; the page
    # said "0 passed" for files that passed when they were written and are still held.
    segments = pd.DataFrame({"trade_type": [], "gates": []})
    summaries = {
        ("resample", "spot"): {"totals": {"files_written": 0, "files_held": 24}},
        ("resample", "um_futures"): {"totals": {"files_written": 5}},  # an older summary
    }
    got = records.gate_counts(segments, summaries).set_index(["stage", "trade_type"])
    assert got.loc[("resample", "spot"), "passed"] == 24
    assert got.loc[("resample", "um_futures"), "passed"] == 5


def test_an_unreadable_summary_is_named_and_removed_so_the_next_run_writes_it(tmp_path):
    # Before: the report failed at every run with a bare JSONDecodeError (nothing reruns the
    # summary job while its output exists), and the page of the failed run could not be
    # written either.
    import json

    from crypto_lakehouse.shards import DamagedInput

    run_dir = tmp_path / "lakehouse"
    good = Path(layout.run_summary_path(str(run_dir), "aws_parse", "spot"))
    torn = Path(layout.run_summary_path(str(run_dir), "gen_kline", "spot"))
    for path in (good, torn):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"stage": path.parent.name, "totals": {}}))
    torn.write_text(torn.read_text()[:10])
    with pytest.raises(DamagedInput) as info:
        records.read_summaries(run_dir, ["spot"])
    assert str(info.value).startswith(
        f"{torn}, written by the gen_kline summary job, is unreadable (JSONDecodeError"
    )
    assert "removed; the next run reruns the job that writes it" in str(info.value)
    assert not torn.exists() and good.exists()
    # the page of the failed run, written next, reads the others
    assert list(records.read_summaries(run_dir, ["spot"])) == [("aws_parse", "spot")]


@pytest.mark.parametrize("figure", ["score", "lag"])
def test_histograms_show_every_trade_type_when_their_counts_are_equal(figure):
    """Five spot and five um symbols all at score 1 (or lag 0), three cm: each trade type's
    colour is on the page. Outlines drawn over each other showed only the last two."""
    import io

    import matplotlib.image

    from crypto_lakehouse.report import figures

    data = {"spot": np.ones(5), "um_futures": np.ones(5), "cm_futures": np.ones(3)}
    if figure == "score":
        png = figures.score_histogram(data)
    else:
        png = figures.lag_histogram({t: v * 0 for t, v in data.items()}, 48)
    pixels = (matplotlib.image.imread(io.BytesIO(png))[:, :, :3] * 255).round().astype(int)
    for colour in figures.COLOURS[:3]:
        rgb = [int(colour[i : i + 2], 16) for i in (1, 3, 5)]
        assert (pixels == rgb).all(axis=2).sum() > 200, colour


def test_datasets_jobs_have_their_own_rows_not_the_kline_stages(tmp_path):
    # The datasets target's listing, download, parse, agg_klines and summary jobs write
    # their benchmark tables into the folders of list_archive, aws_download and aws_parse
    # (rules/datasets.smk): they are not the kline and funding stages' jobs.
    root = Path(layout.run_benchmarks_dir(str(tmp_path)))
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    files = {
        "list_archive/run.tsv": "1.0",
        "list_archive/spot/aggTrades.tsv": "2.0",
        "aws_download/spot/klines-1m/shards/0.tsv": "3.0",
        "aws_download/um_futures/funding/shards/0.tsv": "4.0",
        "aws_download/spot/aggTrades/shards/0.tsv": "5.0",
        "aws_download/um_futures/markPriceKlines-1m/shards/0.tsv": "6.0",
        "aws_parse/spot/klines-1m/shards/0.tsv": "7.0",
        "aws_parse/spot/aggTrades/shards/0.tsv": "8.0",
        "aws_parse/um_futures/metrics/shards/1.tsv": "9.0",
        "agg_klines/spot/aggTrades-1m/shards/0.tsv": "10.0",
        "summaries/datasets/spot.tsv": "11.0",
        "summaries/aws_parse/run.tsv": "12.0",
    }
    for rel, seconds in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(header + f"{seconds}\t0:00:12\t100.5\t1\t1\t1\t0\t0\t0\t3.5\n")
    bench = records.read_benchmarks(tmp_path)
    stage = bench.set_index("job")["stage"].to_dict()
    assert stage["list_archive/spot/aggTrades"] == "datasets_download"
    assert stage["aws_download/spot/aggTrades/shards/0"] == "datasets_download"
    assert stage["aws_download/um_futures/markPriceKlines-1m/shards/0"] == "datasets_download"
    assert stage["aws_parse/spot/aggTrades/shards/0"] == "datasets_parse"
    assert stage["aws_parse/um_futures/metrics/shards/1"] == "datasets_parse"
    assert stage["summaries/datasets/spot"] == "datasets_parse"
    assert stage["agg_klines/spot/aggTrades-1m/shards/0"] == "agg_klines"
    got = records.stage_table({}, bench).set_index("stage")
    # 1 + 3 + 4 s: the run's listing, the kline and the funding download
    assert got.loc["aws_download", ["jobs", "job_seconds"]].tolist() == [3, 8.0]
    assert got.loc["aws_parse", ["jobs", "job_seconds"]].tolist() == [2, 19.0]  # 7 + 12
    assert got.loc["datasets_download", ["jobs", "job_seconds"]].tolist() == [3, 13.0]
    assert got.loc["datasets_parse", ["jobs", "job_seconds"]].tolist() == [3, 28.0]
    assert got.loc["agg_klines", ["jobs", "job_seconds"]].tolist() == [1, 10.0]
    assert got.loc["datasets_parse", "summaries"] == "section 6"


def test_no_datasets_rows_without_datasets_jobs():
    bench = pd.DataFrame(
        {
            "job": ["gen_kline/spot/klines-1m/shards/0"],
            "stage": ["gen_kline"],
            "seconds": [1.0],
            "max_rss_mb": [1.0],
            "cpu_time": [1.0],
            "end_unix": [10.0],
        }
    )
    got = records.stage_table({}, bench)
    assert list(got["stage"]) == list(records.STAGES)


@pytest.mark.parametrize("n_days", [1, 2, 3, 4, 30, 2000])
def test_heatmap_date_labels_do_not_overlap(n_days):
    """A run of 2 or 3 days (the README's offline demo is 3) had its first and last date
    labels 24 and 48 pixels apart, drawn over each other; every range gets its first and
    last day labelled (one day: one label), none over another, all inside the image."""
    import matplotlib.pyplot as plt

    from crypto_lakehouse.report import figures

    fig = figures.heatmap_figure(
        np.zeros((3, n_days), dtype=np.uint8), ["A", "B", "C"], 19_000, "t"
    )
    try:
        fig.canvas.draw()
        labels = [t for t in fig.axes[0].get_xticklabels() if t.get_text()]
        boxes = sorted((t.get_window_extent() for t in labels), key=lambda b: b.x0)
        texts = sorted(t.get_text() for t in labels)
        assert texts[0] == "2022-01-08"  # day 19,000
        last = (date(1970, 1, 1) + timedelta(days=19_000 + n_days - 1)).isoformat()
        assert texts[-1] == last and len(texts) >= min(n_days, 2)
        assert all(a.x1 <= b.x0 for a, b in zip(boxes, boxes[1:], strict=False))
        assert boxes[0].x0 >= 0 and boxes[-1].x1 <= fig.bbox.width
    finally:
        plt.close(fig)


@pytest.mark.parametrize(
    ("lags", "stale_hours"), [({}, 48), ({"spot": np.array([60.0, 3000.0])}, 48), ({}, 240)]
)
def test_the_lag_histogram_starts_at_zero_and_shows_the_stale_line(lags, stale_hours):
    """No symbol with a lag (an empty run): the x axis spanned 1.9 to 2.1 days around the
    stale line; and a limit beyond the largest lag (240 h) drew its line off the axes."""
    import matplotlib.pyplot as plt

    from crypto_lakehouse.report import figures

    fig = figures.lag_histogram_figure(lags, stale_hours)
    try:
        low, high = fig.axes[0].get_xlim()
        assert low == 0 and high > stale_hours / 24
    finally:
        plt.close(fig)


def test_the_stage_table_names_the_trade_types_without_a_summary():
    """Section 4 after a run whose gen_kline failed for COIN-M: the trade types that finished
    are summarized, the one that did not is named (it read as complete: "um_futures")."""
    bench = pd.DataFrame(columns=["job", "stage", "seconds", "max_rss_mb", "cpu_time", "end_unix"])
    summaries = {("gen_kline", "um_futures"): {"symbols": 2, "totals": {"files_written": 2}}}
    expected = {"gen_kline": ["um_futures", "cm_futures"], "resample": ["um_futures"]}
    got = records.stage_table(summaries, bench, (), expected).set_index("stage")
    assert got.loc["gen_kline", "summaries"] == "um_futures; none: cm_futures"
    assert got.loc["gen_kline", "symbols"] == 2
    assert got.loc["resample", "summaries"] == "none"
    # without the run's stages (a page of an earlier version's call): the summaries found
    assert (
        records.stage_table(summaries, bench).set_index("stage").loc["gen_kline", "summaries"]
        == "um_futures"
    )
