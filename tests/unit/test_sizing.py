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
