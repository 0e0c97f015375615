"""SLURM runtime of the shard jobs that read archives (crypto_lakehouse.sizing), on
synthetic listing records and shard reports: it grows with the archive bytes still to work
through, not with the symbols alone, and a job whose previous attempt did not finish asks
more."""

from __future__ import annotations

import json
import math

from crypto_lakehouse import sizing

MB = 1_000_000


def _index(sizes: dict[str, list[int]]) -> dict:
    """A listing index as list_archive writes it, from each symbol's zip sizes."""
    return {
        "symbols": {
            sym: {"digest": "x", "n_files": 2 * len(s), "bytes": sum(s), "last_day": "2026-12-06"}
            for sym, s in sizes.items()
        }
    }


def _shard_report(path, entries: dict) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"shard": 0, "symbols": entries}))
    return str(path)


def _runtime(symbols, index, upstream_report, own_report, per_symbol=2, factor=1):
    """What the rules' archive_runtime computes, step by step."""
    upstream = sizing.done_bytes(upstream_report)
    done = sizing.done_bytes(own_report)
    listed = sizing.listed_bytes(index, symbols)
    pending = sizing.pending_bytes(symbols, upstream, done, listed)
    return sizing.runtime_minutes(len(symbols), per_symbol, pending, factor=factor)


# Eight years of BTCUSDT daily trades zips of 60-200 MB (what the listing's Size gives),
# and a small symbol of 2 MB a day.
BTC = [60 * MB + (140 * MB * d) // 2900 for d in range(2900)]
SMALL = [2 * MB] * 900


def test_a_first_backfill_asks_for_the_bytes_it_parses(tmp_path):
    index = _index({"BTCUSDT": BTC, "XUSDT": SMALL})
    symbols = ["BTCUSDT", "XUSDT"]
    missing = tmp_path / "none.json"
    # Before the download ran (the DAG of a dry run): the listing's bytes.
    before = _runtime(symbols, index, missing, missing)
    total_mb = (sum(BTC) + sum(SMALL)) / MB
    assert before == 10 + 2 * 2 + math.ceil(total_mb / sizing.ARCHIVE_MB_PER_MINUTE)
    assert before > 60 * 10  # hours of a full history, where 10 + 2 per symbol gave 14 min
    # Once the download ran: the bytes it holds (here a start date kept the last 1000 days).
    up = _shard_report(tmp_path / "dl/0.json", {
        "BTCUSDT": {"status": "ok", "archive_bytes": sum(BTC[-1000:])},
        "XUSDT": {"status": "ok", "archive_bytes": sum(SMALL)},
    })  # fmt: skip
    held_mb = (sum(BTC[-1000:]) + sum(SMALL)) / MB
    assert _runtime(symbols, index, up, missing) == 14 + math.ceil(
        held_mb / sizing.ARCHIVE_MB_PER_MINUTE
    )


def test_a_daily_update_asks_for_its_new_day_only(tmp_path):
    index = _index({"BTCUSDT": BTC, "XUSDT": SMALL})
    symbols = ["BTCUSDT", "XUSDT"]
    # The parse completed every symbol yesterday; today's download holds one more day each.
    own = _shard_report(tmp_path / "parse/0.json", {
        "BTCUSDT": {"status": "ok", "archive_bytes": sum(BTC[:-1])},
        "XUSDT": {"status": "ok", "archive_bytes": sum(SMALL[:-1])},
    })  # fmt: skip
    up = _shard_report(tmp_path / "dl/0.json", {
        "BTCUSDT": {"status": "ok", "archive_bytes": sum(BTC)},
        "XUSDT": {"status": "ok", "archive_bytes": sum(SMALL)},
    })  # fmt: skip
    assert _runtime(symbols, index, up, own) == 10 + 2 * 2 + 1  # 202 MB: one minute


def test_a_symbol_not_completed_last_time_counts_all_its_archives(tmp_path):
    index = _index({"BTCUSDT": BTC, "XUSDT": SMALL})
    own = _shard_report(tmp_path / "parse/0.json", {
        "BTCUSDT": {"status": "failed", "error": "x"},
        "XUSDT": {"status": "ok", "archive_bytes": sum(SMALL)},
    })  # fmt: skip
    up = _shard_report(tmp_path / "dl/0.json", {
        "BTCUSDT": {"status": "ok", "archive_bytes": sum(BTC)},
        "XUSDT": {"status": "ok", "archive_bytes": sum(SMALL)},
    })  # fmt: skip
    pending = sizing.pending_bytes(
        ["BTCUSDT", "XUSDT"], sizing.done_bytes(up), sizing.done_bytes(own), {}
    )
    assert pending == sum(BTC)
    assert _runtime(["BTCUSDT", "XUSDT"], index, up, own) == 14 + math.ceil(
        sum(BTC) / MB / sizing.ARCHIVE_MB_PER_MINUTE
    )


def test_records_without_the_figure_ask_what_they_asked_before(tmp_path):
    # Shard reports of a version without archive_bytes: a completed symbol counts nothing
    # (10 + 2 per symbol, as before); the listing gives the upstream bytes of the others.
    index = {"symbols": {"A": {"digest": "x", "n_files": 4}, "B": {"digest": "y", "n_files": 2}}}
    own = _shard_report(tmp_path / "parse/0.json", {"A": {"status": "ok"}, "B": {"status": "ok"}})
    up = _shard_report(tmp_path / "dl/0.json", {"A": {"status": "ok"}, "B": {"status": "ok"}})
    assert _runtime(["A", "B"], index, up, own) == 14
    assert sizing.listed_bytes(index, ["A", "B"]) == {}


def test_rest_entries_and_unreadable_reports(tmp_path):
    path = _shard_report(tmp_path / "r.json", {
        "klines-1m/A": {"status": "ok", "archive_bytes": 5},
        "B": {"status": "upstream_failed"},
        "C": {"status": "ok", "archive_bytes": "5"},
    })  # fmt: skip
    assert sizing.done_bytes(path) == {"A": 5, "C": None}
    torn = tmp_path / "torn.json"
    torn.write_text('{"shard": 0, "symb')
    assert sizing.done_bytes(torn) == {}
    assert sizing.done_bytes(tmp_path / "missing.json") == {}
    # Fewer bytes upstream than done (files the archive removed): nothing, never negative.
    assert sizing.pending_bytes(["A"], {"A": 10}, {"A": 30}, {}) == 0


def test_a_job_whose_previous_attempt_did_not_finish_asks_twice(tmp_path):
    log = tmp_path / "logs/aws_parse/spot/trades/shards/0.log"
    report = tmp_path / "reports/aws_parse/spot/trades/shards/0.json"
    assert not sizing.unfinished_attempt(log, report)  # never ran
    log.parent.mkdir(parents=True)
    log.write_text("started\n")
    # Snakemake removed the report when the job started; SLURM ended the job before it
    # wrote a new one.
    assert sizing.unfinished_attempt(log, report)
    report.parent.mkdir(parents=True)
    report.write_text("{}")
    assert not sizing.unfinished_attempt(log, report)  # it finished
    once = sizing.runtime_minutes(3, 2, 900 * MB)
    assert once == 10 + 6 + 900 // sizing.ARCHIVE_MB_PER_MINUTE
    assert sizing.runtime_minutes(3, 2, 900 * MB, factor=sizing.UNFINISHED_FACTOR) == 2 * once
    assert sizing.runtime_minutes(3, 2) == 16  # no archive work: 10 + 2 per symbol


def test_a_request_is_clamped_to_the_configured_maximum_and_the_job_still_runs():
    # Ten years of BTCUSDT trades to parse, 600 GB: 10 + 2 + 2000 minutes, above a 1-day
    # partition MaxTime; after an unfinished attempt twice that.
    estimate = 10 + 2 + 600_000 // sizing.ARCHIVE_MB_PER_MINUTE
    assert sizing.runtime_minutes(1, 2, 600_000 * MB) == estimate
    assert sizing.runtime_minutes(1, 2, 600_000 * MB, cap=1440) == 1440
    assert sizing.runtime_minutes(1, 2, 600_000 * MB, factor=2, cap=1440) == 1440
    assert sizing.runtime_minutes(1, 2, 600_000 * MB, factor=2, cap=None) == 2 * estimate
    # Below the cap nothing changes, the 2x included.
    assert sizing.runtime_minutes(3, 2, 900 * MB, factor=2, cap=1440) == 2 * (10 + 6 + 3)
    # A cap below the fixed part still gives a request (never 0, never an error).
    assert sizing.runtime_minutes(3, 2, cap=5) == 5


def test_clamped_jobs_are_named_in_one_warning_line_with_the_cap():
    # Before, a clamp was silent: a job SLURM then ended at the cap did not say it had
    # asked for more. Now one line per run names them (the largest request first) and the cap.
    clamps = sizing.RuntimeClamps()
    assert clamps.warning() is None
    assert clamps.limit("aws_parse spot/trades shard 0", 2012, 1440) == 1440
    assert clamps.limit("aws_parse spot/trades shard 0", 4024, 1440) == 1440  # a retry
    assert clamps.limit("gen_kline um_futures/klines-1m shard 3", 1500, 1440) == 1440
    assert clamps.limit("resample spot/klines-1m shard 1", 30, 1440) == 30  # not clamped
    assert clamps.limit("features spot/klines-1m shard 1", 5000, None) == 5000  # no cap
    line = clamps.warning()
    assert "\n" not in line
    assert line.startswith(
        "warning: 2 jobs asked for more runtime than config cluster.max_runtime_minutes "
        "(1440 min) and got 1440: aws_parse spot/trades shard 0 (asked 4024 min), "
        "gen_kline um_futures/klines-1m shard 3 (asked 1500 min); "
    )
    assert "resample" not in line and "features" not in line
    for shard in range(20):
        clamps.limit(f"aws_parse spot/aggTrades shard {shard}", 3000 + shard, 1440)
    line = clamps.warning()
    assert "warning: 22 jobs asked" in line and "and 12 more" in line
    assert "shard 19 (asked 3019 min)" in line  # the largest requests are the ones named


def test_the_cap_is_a_config_key_with_a_default():
    from pathlib import Path

    from crypto_lakehouse.configuration import fill_defaults, load_schema

    schema = load_schema(Path(sizing.__file__).parents[1] / "config/config.schema.yaml")
    config = {}
    fill_defaults(config, schema)  # in place; a full config's other keys have defaults too
    cap = config["cluster"]["max_runtime_minutes"]
    assert isinstance(cap, int) and cap >= 60
    assert sizing.runtime_minutes(1, 2, 600_000 * MB, cap=cap) == cap
    described = schema["properties"]["cluster"]["properties"]["max_runtime_minutes"]
    assert "MaxTime" in described["description"]


def test_retries_ask_the_larger_factor_not_the_product():
    # An unfinished previous attempt: twice the estimate; Snakemake's --retries: attempt times.
    assert sizing.retry_factor(1, unfinished=False) == 1
    assert sizing.retry_factor(1, unfinished=True) == sizing.UNFINISHED_FACTOR == 2
    assert sizing.retry_factor(2, unfinished=True) == 2  # not 4
    assert sizing.retry_factor(3, unfinished=True) == 3  # not 6
    assert sizing.retry_factor(3, unfinished=False) == 3
    assert sizing.retry_factor(0, unfinished=False) == 1


# ---------------------------------------------------------------- candle stages
# What the rules' candle_runtime and candle_mem_mb compute for gen_kline (upstream: the
# parse's shard report of the klines), resample and features (upstream: gen_kline's).
DAY_1M = 59_129  # an emulator 1m daily kline zip: 1,440 rows
DAY_1S = 3_340_103  # an emulator 1s daily kline zip: 86,400 rows


def _candle(symbols, index, upstream_report, own_report, at_once=1, factor=1, stage="gen_kline"):
    upstream = sizing.done_bytes(upstream_report)
    done = sizing.done_bytes(own_report)
    listed = sizing.listed_bytes(index, symbols)
    pending = sizing.pending_bytes(symbols, upstream, done, listed)
    runtime = sizing.runtime_minutes(
        len(symbols),
        sizing.CANDLE_MINUTES_PER_SYMBOL,
        pending,
        mb_per_minute=sizing.CANDLE_MB_PER_MINUTE,
        factor=factor,
    )
    full, tail = sizing.history_bytes(symbols, upstream, done, listed)
    return runtime, sizing.candle_mem_mb(stage, full, tail, at_once, factor)


def test_a_daily_update_of_a_32_symbol_shard_asks_minutes_not_an_hour(tmp_path):
    # Six years of 1m candles each, completed yesterday; the parse holds one more day today.
    symbols = [f"S{i:02d}USDT" for i in range(32)]
    years = 6 * 365
    own = _shard_report(tmp_path / "gen/0.json", {
        s: {"status": "ok", "archive_bytes": years * DAY_1M} for s in symbols
    })  # fmt: skip
    up = _shard_report(tmp_path / "parse/0.json", {
        s: {"status": "ok", "archive_bytes": (years + 1) * DAY_1M} for s in symbols
    })  # fmt: skip
    runtime, mem = _candle(symbols, {}, up, own)
    # 10 + 2 per symbol asked 74 minutes for it; 32 new days are 1.9 MB: one minute of work.
    assert runtime == 10 + math.ceil(32 * sizing.CANDLE_MINUTES_PER_SYMBOL) + 1
    assert runtime < 30
    assert mem == 2000  # tail builds: what it asked before


def test_a_first_build_of_a_year_of_1s_candles_asks_its_memory(tmp_path):
    # One symbol, a year of 1s candles (31.5 M rows): the stage holds its history. Measured
    # on 1m series: ~180-206 bytes of peak RSS a row (docs/cluster.md): at least 5.7 GB.
    index = _index({"BTCUSDT": [DAY_1S] * 365})
    missing = tmp_path / "none.json"
    runtime, mem = _candle(["BTCUSDT"], index, missing, missing)  # before the parse ran
    rows = 365 * 86_400
    assert mem >= 180 * rows / 1e6 > 2000
    zip_mb = 365 * DAY_1S / MB  # 1.2 GB of zips
    assert runtime == 10 + 1 + math.ceil(zip_mb / sizing.CANDLE_MB_PER_MINUTE)
    # Once the parse ran, its figure: the same history.
    up = _shard_report(tmp_path / "parse/0.json", {
        "BTCUSDT": {"status": "ok", "archive_bytes": 365 * DAY_1S},
    })  # fmt: skip
    assert _candle(["BTCUSDT"], {}, up, missing) == (runtime, mem)
    # Its next daily update is a tail build: one day, the floor's memory.
    own = _shard_report(tmp_path / "gen/0.json", {
        "BTCUSDT": {"status": "ok", "archive_bytes": 364 * DAY_1S},
    })  # fmt: skip
    assert _candle(["BTCUSDT"], {}, up, own) == (10 + 1 + 1, 2000)


def test_candle_memory_covers_the_measured_peaks_of_a_1s_first_build(tmp_path):
    # Peak RSS measured in a workflow run of 120 days of 1s candles (504 MB of emulator
    # zips, 10.4 M rows, two resample targets; docs/cluster.md): each request covers it
    # with a fifth to spare, where 2000 MB did not cover features.
    measured = {"gen_kline": 1831, "resample": 1028, "features": 3034}
    up = _shard_report(tmp_path / "up/0.json", {
        "BTCUSDT": {"status": "ok", "archive_bytes": 503_598_042},
    })  # fmt: skip
    missing = tmp_path / "none.json"
    for stage, peak in measured.items():
        mem = _candle(["BTCUSDT"], {}, up, missing, stage=stage)[1]
        assert mem >= 1.2 * peak, stage
    # Its next daily update, a tail build, one more day (508 MB): gen_kline peaked at 148
    # MB, features at 1,019 MB (its indicators run over the whole series).
    up = _shard_report(tmp_path / "up/0.json", {
        "BTCUSDT": {"status": "ok", "archive_bytes": 507_794_848},
    })  # fmt: skip
    own = _shard_report(tmp_path / "own/0.json", {
        "BTCUSDT": {"status": "ok", "archive_bytes": 503_598_042},
    })  # fmt: skip
    for stage, peak in {"gen_kline": 148, "features": 1019}.items():
        assert _candle(["BTCUSDT"], {}, up, own, stage=stage)[1] >= 1.2 * peak, stage


def test_candle_memory_counts_the_largest_symbols_built_at_once(tmp_path):
    big, small = 1000 * MB, 10 * MB
    own = _shard_report(tmp_path / "gen/0.json", {
        "DONE": {"status": "ok", "archive_bytes": 5000 * MB},  # a tail build
        "FAILED": {"status": "failed", "error": "x"},  # not completed: built whole
    })  # fmt: skip
    up = _shard_report(tmp_path / "parse/0.json", {
        "DONE": {"status": "ok", "archive_bytes": 5000 * MB},
        "FAILED": {"status": "ok", "archive_bytes": big},
        "NEW": {"status": "ok", "archive_bytes": small},
    })  # fmt: skip
    symbols = ["DONE", "FAILED", "NEW"]
    assert sizing.history_bytes(symbols, sizing.done_bytes(up), sizing.done_bytes(own), {}) == (
        [big, small],
        [5000 * MB],
    )
    one = 500 + 6 * 1000
    assert _candle(symbols, {}, up, own)[1] == one
    assert _candle(symbols, {}, up, own, at_once=2)[1] == one + 6 * 10
    # At once on object storage with small symbols: what it asked before, 1000 per symbol more.
    assert sizing.candle_mem_mb("resample", [small, small], at_once=4) == 2000 + 3 * 1000
    # The features' tail build holds the whole series for its indicators: 3 MB per MB.
    assert _candle(symbols, {}, up, own, stage="features")[1] == 500 + 3 * 5000
    # A retry (the previous attempt was ended, maybe for its memory) asks twice.
    assert _candle(symbols, {}, up, own, factor=2)[1] == 2 * one


def test_candle_requests_without_any_record(tmp_path):
    # A first run before any listing or report (a dry run's DAG): no crash, the floor.
    missing = tmp_path / "none.json"
    runtime, mem = _candle(["A", "B"], {}, missing, missing)
    assert (runtime, mem) == (11, 2000)
    torn = tmp_path / "torn.json"
    torn.write_text("{")
    assert _candle(["A"], {"symbols": {"A": {}}}, torn, torn) == (11, 2000)


# ---------------------------------------------------------------- klines parse memory
# Peak RSS of the klines parse (benchmarks/bench_parse_memory.py: the job's function in its
# own process), one spot symbol of 1s emulator klines, first build, 2026-12-07, after a large
# member was parsed block by block: (case, zip MB) -> peak MB. The code before peaked at 693,
# 949, 652, 725 and 1,193 MB for the same files.
PARSE_PEAKS = {
    ("one monthly zip", 130): 451,
    ("two monthly zips", 260): 451,
    ("31 daily zips", 130): 480,
    ("one monthly zip, s3://", 130): 510,
    ("two monthly zips, s3://", 260): 631,
}


def test_the_klines_parse_asks_a_constant_per_symbol_at_once():
    """Its peak does not grow with the zips to parse (a month at a time, a large member block
    by block): it asks the same for a daily update and for four years of 1s (before: 1000 +
    0.5 per MB of zips still to parse, at least 2000; 3,440 MB for four years of 1s)."""
    assert sizing.parse_klines_mem_mb() == 1000
    assert sizing.parse_klines_mem_mb(at_once=4) == 4000  # on object storage
    # After an unfinished attempt (maybe ended for its memory): twice.
    assert sizing.parse_klines_mem_mb(factor=2) == 2000
    assert sizing.parse_klines_mem_mb(at_once=0) == 1000


def test_the_klines_parse_memory_covers_its_measured_peaks():
    for case, peak in PARSE_PEAKS.items():
        assert sizing.parse_klines_mem_mb() >= 1.5 * peak, case
        assert sizing.parse_klines_mem_mb() <= 2.5 * peak, case  # not far above either
