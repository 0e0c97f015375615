"""Shards: stable symbol assignment, per-symbol isolation inside a shard job, summaries."""

from __future__ import annotations

import errno
import json
import zlib
from pathlib import Path

import pytest

from crypto_lakehouse.shards import (
    UPSTREAM_ERROR_CHARS,
    ShardFailed,
    auto_shard_count,
    group_by_shard,
    run_shard,
    shard_of,
)
from crypto_lakehouse.summary import summarize


def test_shard_is_crc32_of_the_name_modulo_the_count():
    for name in ("BTCUSDT", "ETHUSD_PERP", "1000SHIBUSDT"):
        assert shard_of(name, 7) == zlib.crc32(name.encode()) % 7
    assert {shard_of(n, 1) for n in ("A", "B", "C")} == {0}
    with pytest.raises(ValueError):
        shard_of("BTCUSDT", 0)


def test_adding_a_symbol_moves_no_other_symbol():
    names = [f"S{i}USDT" for i in range(200)]
    before = group_by_shard(names, 8)
    after = group_by_shard([*names, "NEWUSDT"], 8)
    where_before = {s: k for k, syms in before.items() for s in syms}
    where_after = {s: k for k, syms in after.items() for s in syms}
    assert all(where_after[s] == where_before[s] for s in names)
    # empty shards are left out, every symbol is in exactly one shard
    assert sorted(s for syms in after.values() for s in syms) == sorted([*names, "NEWUSDT"])
    assert all(after.values())


def test_auto_shard_count_is_the_smallest_power_of_two_covering_32_symbols_each():
    # Independent expectation: the smallest 2**k with 2**k * 32 >= symbols (k >= 0).
    for symbols in (0, 1, 13, 32, 33, 64, 65, 300, 2700):
        k = 0
        while 2**k * 32 < symbols:
            k += 1
        assert auto_shard_count(symbols) == 2**k, symbols
    assert auto_shard_count(2700) == 128  # the full spot universe: ~21 symbols per job
    assert auto_shard_count(10, per_shard=3) == 4
    with pytest.raises(ValueError):
        auto_shard_count(10, per_shard=0)


@pytest.mark.parametrize(
    ("symbols", "parallel", "expected"),
    [
        (30, 8, 4),  # one trade type of 30 symbols on 8 cores: 4 jobs of 7-8 symbols
        (30, 2, 2),
        (30, 3, 4),  # a power of two: 3 jobs at once get 4 shards
        (13, 8, 2),  # at least 4 symbols per shard: 13 // 4 = 3 -> 2
        (7, 8, 1),  # too few symbols to split
        (5, 1, 1),
        (2700, 2, 128),  # the listing's count when it is larger
        (2700, 512, 512),
    ],
)
def test_auto_shard_count_gives_a_local_runs_cores_work_with_4_symbols_per_shard_at_least(
    symbols, parallel, expected
):
    assert auto_shard_count(symbols, parallel=parallel) == expected
    count = auto_shard_count(symbols, parallel=parallel)
    assert count == 1 or symbols // count >= 4 or count == auto_shard_count(symbols)


def test_auto_shard_count_refuses_a_parallel_below_one():
    with pytest.raises(ValueError):
        auto_shard_count(10, parallel=0)


def _entry(calls, fail=(), fatal=None):
    def run_symbol(*, symbol, report_path, stats_path, factor, source):
        calls.append(symbol)
        if symbol == fatal:
            raise ConnectionAbortedError("banned")
        if symbol in fail:
            raise ValueError(f"bad data in {symbol}")
        with open(report_path, "w") as fh:
            json.dump({"symbol": symbol, "source": source, "factor": factor}, fh)
        with open(stats_path, "w") as fh:
            json.dump({"files_written": 1}, fh)

    return run_symbol


def _run(tmp_path, entry, symbols, **kw):
    (tmp_path / "reports/x").mkdir(parents=True, exist_ok=True)
    (tmp_path / "stats/x").mkdir(parents=True, exist_ok=True)
    return run_shard(
        entry,
        symbols=symbols,
        shard=3,
        shard_report=tmp_path / "reports/x/shards/3.json",
        symbol_paths={"report_path": str(tmp_path / "reports/x"), "source": "/up/stream"},
        symbol_values={"factor": {"B": 10}},
        factor=1,
        **kw,
    )


def test_each_symbol_gets_its_own_paths_and_values(tmp_path):
    calls = []
    report = _run(tmp_path, _entry(calls), ["A", "B"])
    assert calls == ["A", "B"]
    a = json.loads((tmp_path / "reports/x/A.json").read_text())
    b = json.loads((tmp_path / "reports/x/B.json").read_text())
    assert a == {"symbol": "A", "source": "/up/stream/A.json", "factor": 1}
    assert b == {"symbol": "B", "source": "/up/stream/B.json", "factor": 10}
    assert (tmp_path / "stats/x/A.json").exists()  # stats path derived from the report path
    shard = json.loads((tmp_path / "reports/x/shards/3.json").read_text())
    assert shard == report
    assert shard["failed"] == [] and shard["shard"] == 3
    assert {s: e["status"] for s, e in shard["symbols"].items()} == {"A": "ok", "B": "ok"}


def test_a_failing_symbol_fails_the_job_after_the_others(tmp_path):
    calls = []
    stale = tmp_path / "reports/x/B.json"
    stale.parent.mkdir(parents=True)
    stale.write_text("{}")  # the previous run's report of the symbol that now fails
    with pytest.raises(ShardFailed, match=r"1 of 3 symbols failed: B .*bad data in B"):
        _run(tmp_path, _entry(calls, fail={"B"}), ["A", "B", "C"])
    assert calls == ["A", "B", "C"]
    assert (tmp_path / "reports/x/C.json").exists()
    assert not stale.exists()
    shard = json.loads((tmp_path / "reports/x/shards/3.json").read_text())
    assert shard["failed"] == ["B"] and shard["symbols"]["B"]["status"] == "failed"


def test_a_shard_whose_symbols_all_failed_says_no_other_completed(tmp_path):
    # "3 of 3 symbols failed: … ; the other symbols completed" (a 418 ban of the REST host)
    with pytest.raises(ShardFailed) as info:
        _run(tmp_path, _entry([], fail={"A", "B"}), ["A", "B"])
    assert "2 of 2 symbols failed: A, B" in str(info.value)
    assert "the other symbols completed" not in str(info.value)


def test_a_fatal_error_stops_the_remaining_symbols(tmp_path):
    calls = []
    with pytest.raises(ShardFailed, match="2 of 3 symbols failed: B, C"):
        _run(
            tmp_path,
            _entry(calls, fatal="B"),
            ["A", "B", "C"],
            fatal=(ConnectionAbortedError,),
        )
    assert calls == ["A", "B"]
    shard = json.loads((tmp_path / "reports/x/shards/3.json").read_text())
    assert shard["symbols"]["C"]["status"] == "not_run"


def test_summary_reads_the_symbols_of_shard_reports(tmp_path):
    _run(tmp_path, _entry([]), ["A", "B"])
    _run(tmp_path, _entry([]), ["C"])  # a second shard (same file name is fine here)
    shard_a = tmp_path / "reports/x/shards/3.json"
    summary = summarize("gen_kline", "spot", [str(shard_a)])
    assert summary["symbols"] == 1 and summary["totals"]["files_written"] == 1
    both = tmp_path / "reports/x/shards/4.json"
    both.write_text(
        json.dumps(
            {"symbols": {s: {"report": str(tmp_path / f"reports/x/{s}.json")} for s in "AB"}}
        )
    )
    summary = summarize("gen_kline", "spot", [str(shard_a), str(both)])
    assert summary["symbols"] == 3 and summary["totals"]["files_written"] == 3


def test_summary_says_so_when_a_done_symbols_report_is_not_where_its_shard_report_says(
    tmp_path, caplog
):
    # The srun launcher returned shard reports naming the node's temporary folder: every
    # CPU stage's summary had empty totals, silently. A failed symbol's missing report
    # stays quiet (its failure is reported).
    _run(tmp_path, _entry([]), ["A"])
    shard = tmp_path / "reports/x/shards/3.json"
    report = json.loads(shard.read_text())
    report["symbols"]["A"]["report"] = "/tmp/crypto_lakehouse-job-x/run/reports/x/A.json"
    report["symbols"]["B"] = {"report": str(tmp_path / "reports/x/B.json"), "status": "failed"}
    shard.write_text(json.dumps(report))
    caplog.set_level("WARNING")
    summarize("gen_kline", "spot", [str(shard)])
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warned and all("crypto_lakehouse-job-x/run/" in m for m in warned), warned
    assert all(f"listed as done by {shard}" in m for m in warned)


def test_summary_rates_of_shard_reports_use_the_jobs_seconds(tmp_path):
    # Two symbols downloaded at once in one 2-second job, each busy for those 2 seconds:
    # 6 MB and 30 files in 2 s of job time (their own seconds would sum to 4).
    for symbol, mb, files in (("A", 4, 20), ("B", 2, 10)):
        (tmp_path / "reports/x").mkdir(parents=True, exist_ok=True)
        (tmp_path / f"reports/x/{symbol}.json").write_text("{}")
        (tmp_path / "stats/x").mkdir(parents=True, exist_ok=True)
        (tmp_path / f"stats/x/{symbol}.json").write_text(
            json.dumps({"bytes": mb * 1_000_000, "files_downloaded": files, "seconds": 2.0})
        )
    shard = tmp_path / "reports/x/shards/0.json"
    shard.parent.mkdir()
    shard.write_text(
        json.dumps(
            {
                "symbols": {s: {"report": str(tmp_path / f"reports/x/{s}.json")} for s in "AB"},
                "seconds": 2.0,
            }
        )
    )
    summary = summarize("aws_download", "spot", [str(shard)])
    assert summary["totals"]["seconds"] == 4.0  # the symbols' own figures, summed
    assert summary["throughput_mb_s"] == pytest.approx(3.0)
    assert summary["throughput_files_s"] == pytest.approx(15.0)


# ---------------------------------------------------------------- symbols at once (threads)
def _run_parts(tmp_path, parts, **kw):
    from crypto_lakehouse.shards import run_shard_parts

    return run_shard_parts(parts, shard=3, shard_report=tmp_path / "reports/shards/3.json", **kw)


def _part(tmp_path, func, symbols, label):
    from crypto_lakehouse.shards import ShardPart

    (tmp_path / f"reports/{label}").mkdir(parents=True, exist_ok=True)
    return ShardPart(
        func, symbols, {"report_path": str(tmp_path / f"reports/{label}")}, label=label
    )


def test_symbols_at_once_overlap_and_keep_the_report_order(tmp_path):
    import threading

    # Four symbols that each wait for all four to have started: only concurrent calls
    # get past the barrier (one after another, the first would time out).
    barrier = threading.Barrier(4, timeout=10)

    def run_symbol(*, symbol, report_path, stats_path):
        barrier.wait()
        with open(report_path, "w") as fh:
            json.dump({"symbol": symbol}, fh)

    symbols = ["D", "A", "C", "B"]
    report = _run_parts(tmp_path, [_part(tmp_path, run_symbol, symbols, "k")], at_once=4)
    assert list(report["symbols"]) == [f"k/{s}" for s in symbols]  # call order, not finish
    assert all(e["status"] == "ok" for e in report["symbols"].values())
    for s in symbols:
        assert json.loads((tmp_path / f"reports/k/{s}.json").read_text()) == {"symbol": s}


def test_symbols_at_once_never_exceed_the_bound(tmp_path):
    import threading
    import time

    lock = threading.Lock()
    running, peak = [0], [0]

    def run_symbol(*, symbol, report_path, stats_path):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.02)
        with lock:
            running[0] -= 1

    symbols = [f"S{i}" for i in range(9)]
    _run_parts(tmp_path, [_part(tmp_path, run_symbol, symbols, "k")], at_once=3)
    assert peak[0] == 3


def test_symbols_at_once_a_failure_is_isolated_and_a_fatal_one_stops_the_rest(tmp_path):
    import threading
    import time

    first_two = threading.Barrier(2, timeout=10)
    calls = []

    def klines(*, symbol, report_path, stats_path):
        calls.append(symbol)
        if symbol in ("A", "B"):
            first_two.wait()  # A and B run together, before anything else starts
        if symbol == "A":
            # A ends well after B's ban is recorded (microseconds after B raises): its
            # thread then finds the job stopped instead of starting C.
            time.sleep(0.5)
            raise ValueError("bad data in A")
        if symbol == "B":
            raise ConnectionAbortedError("banned")
        with open(report_path, "w") as fh:
            json.dump({}, fh)

    def funding(*, symbol, report_path, stats_path):
        calls.append(f"funding {symbol}")

    parts = [
        _part(tmp_path, klines, ["A", "B", "C", "D"], "klines"),
        _part(tmp_path, funding, ["A", "B"], "funding"),
    ]
    with pytest.raises(ShardFailed, match="6 of 6 symbols failed"):
        _run_parts(tmp_path, parts, at_once=2, fatal=(ConnectionAbortedError,))
    shard = json.loads((tmp_path / "reports/shards/3.json").read_text())
    status = {s: e["status"] for s, e in shard["symbols"].items()}
    assert status == {
        "klines/A": "failed",
        "klines/B": "failed",
        "klines/C": "not_run",
        "klines/D": "not_run",
        "funding/A": "not_run",
        "funding/B": "not_run",
    }
    assert "bad data in A" in shard["symbols"]["klines/A"]["error"]
    assert sorted(calls) == ["A", "B"]  # nothing started after the ban


def test_a_later_part_starts_once_a_symbol_of_the_part_before_has_ended(tmp_path):
    """The REST job's funding symbols run beside its last klines symbols (session 30, api):
    a later part is queued once one symbol of the part before has ended, not its last."""
    import threading

    funding_started = threading.Event()
    seen = []

    def klines(*, symbol, report_path, stats_path):
        if symbol == "B":  # the slow last symbol: ends when funding has started (or 5 s)
            seen.append(("B saw funding running", funding_started.wait(timeout=5)))

    def funding(*, symbol, report_path, stats_path):
        funding_started.set()

    parts = [
        _part(tmp_path, klines, ["A", "B"], "klines"),
        _part(tmp_path, funding, ["F"], "funding"),
    ]
    report = _run_parts(tmp_path, parts, at_once=3)
    assert seen == [("B saw funding running", True)]
    assert list(report["symbols"]) == ["klines/A", "klines/B", "funding/F"]
    assert all(e["status"] == "ok" for e in report["symbols"].values())


# ------------------------------------------------ partial shards (a workflow shard job)
@pytest.fixture
def job_context():
    """configure_job as smk.run_job sets it; reset afterwards (it is per process)."""
    from crypto_lakehouse import shards

    yield shards.configure_job
    shards.configure_job()


def _upstream(tmp_path, statuses: dict) -> str:
    path = tmp_path / "up/shards/3.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    symbols = {name: {"status": st, "report": f"/up/{name}.json"} for name, st in statuses.items()}
    path.write_text(json.dumps({"shard": 3, "symbols": symbols}))
    return str(path)


def test_symbols_an_upstream_shard_did_not_finish_are_skipped(tmp_path, job_context):
    # REST shard reports name entries "klines-1m/SYM" and "funding/SYM"
    up = _upstream(tmp_path, {"A": "ok", "B": "failed", "funding/C": "not_run"})
    job_context(upstream_shard_reports=[up], retry_generation=2)
    kept = tmp_path / "reports/x/B.json"
    kept.parent.mkdir(parents=True)
    kept.write_text('{"previous": true}')  # B's last good report stays (its data too)
    calls = []
    report = _run(tmp_path, _entry(calls), ["A", "B", "C", "D"])
    assert calls == ["A", "D"]
    assert {s: e["status"] for s, e in report["symbols"].items()} == {
        "A": "ok", "B": "upstream_failed", "C": "upstream_failed", "D": "ok",
    }  # fmt: skip
    assert up in report["symbols"]["B"]["error"]
    assert report["failed"] == [] and report["upstream_failed"] == ["B", "C"]
    assert report["retry_generation"] == 2  # none of its own failed: no retry needed
    assert json.loads(kept.read_text()) == {"previous": True}


def test_a_failed_symbol_raises_the_retry_generation(tmp_path, job_context):
    job_context(retry_generation=5)
    with pytest.raises(ShardFailed) as info:
        _run(tmp_path, _entry([], fail={"B"}), ["A", "B"])
    assert info.value.fatal is False
    shard = json.loads((tmp_path / "reports/x/shards/3.json").read_text())
    assert shard["failed"] == ["B"] and shard["retry_generation"] == 6
    from crypto_lakehouse.plan import retry_generation

    assert retry_generation(tmp_path / "reports/x/shards/3.json") == 6
    assert retry_generation(tmp_path / "nothing.json") == 0


def test_a_fatal_failure_is_marked_fatal(tmp_path, job_context):
    job_context(retry_generation=0)
    with pytest.raises(ShardFailed) as info:
        _run(tmp_path, _entry([], fatal="A"), ["A", "B"], fatal=(ConnectionAbortedError,))
    assert info.value.fatal is True


def test_outside_a_workflow_job_the_report_has_no_retry_generation(tmp_path):
    report = _run(tmp_path, _entry([]), ["A"])
    assert "retry_generation" not in report and report["upstream_failed"] == []


def test_a_skipped_symbol_carries_the_upstream_error(tmp_path, job_context):
    # The datasets summary of a failed download said only "ETHUSDT: not done upstream
    # (aws_download/spot/trades/shards/0: failed)": not which file, nor the HTTP status.
    path = tmp_path / "up/shards/3.json"
    path.parent.mkdir(parents=True)
    chained = "not done upstream (aws_download/x/shards/0: failed): SyncError: HTTP 500"
    symbols = {
        "B": {"status": "failed", "error": "SyncError: B: 1 file(s) missing:\n  b.zip: HTTP 500"},
        "C": {"status": "upstream_failed", "error": chained},
        "D": {"status": "failed", "error": "E" * 1000},
    }
    path.write_text(json.dumps({"shard": 3, "symbols": symbols}))
    job_context(upstream_shard_reports=[str(path)], retry_generation=0)
    report = _run(tmp_path, _entry([]), ["B", "C", "D"])
    errors = {s: e["error"] for s, e in report["symbols"].items()}
    assert errors["B"].endswith("failed): SyncError: B: 1 file(s) missing: b.zip: HTTP 500")
    assert errors["C"] == chained  # already names where and why: not nested again
    cause = errors["D"].split("failed): ", 1)[1]
    assert len(cause) == UPSTREAM_ERROR_CHARS and cause.endswith("EEE...")


# ------------------------------------------------ a damaged file an earlier stage wrote
def _parquet(path, rows=3):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"x": list(range(rows))}), path)
    return path


def _read(path):
    import pyarrow.parquet as pq

    return pq.read_table(path)


def test_reading_output_of_tells_a_damaged_file_from_a_failing_storage(tmp_path):
    from crypto_lakehouse.shards import DamagedInput, reading_output_of
    from crypto_lakehouse.storage import StorageError

    good = _parquet(tmp_path / "good.pqt")
    with reading_output_of("aws_parse", good):
        assert _read(good).num_rows == 3
    cut = _parquet(tmp_path / "cut.pqt")
    cut.write_bytes(cut.read_bytes()[:20])
    with pytest.raises(DamagedInput) as info, reading_output_of("aws_parse", cut):
        _read(cut)
    assert not info.value.missing and info.value.stage == "aws_parse"
    assert str(info.value).startswith(f"{cut}, written by aws_parse, is unreadable (")
    with pytest.raises(DamagedInput) as info, reading_output_of("gen_kline", tmp_path / "no.pqt"):
        _read(tmp_path / "no.pqt")
    assert info.value.missing and str(info.value).endswith("written by gen_kline, is missing")
    # a failing request says nothing about the file; nor does a bug of the reader, nor the
    # machine: a full disk (the job writing its own output), no permission to read
    machine = [OSError(errno.ENOSPC, "No space left on device", "out.pqt"),
               PermissionError(errno.EACCES, "Permission denied", str(good))]  # fmt: skip
    for exc in (StorageError("s3://b/k: 503 Slow Down"), ValueError("bad column"), *machine):
        with pytest.raises(type(exc)), reading_output_of("aws_parse", good):
            raise exc


def _upstream_report(tmp_path, stage, names, generation=None):
    path = tmp_path / "reports" / stage / "spot" / "aggTrades" / "shards" / "0.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    report = {"shard": 0, "symbols": {n: {"status": "ok", "report": "x"} for n in names}}
    if generation is not None:
        report["retry_generation"] = generation
    path.write_text(json.dumps(report))
    return path


def _damaged_entry(path, stage, missing=False):
    from crypto_lakehouse.shards import reading_output_of

    def run_symbol(*, symbol, report_path, stats_path, factor, source):
        if symbol == "B":
            with reading_output_of(stage, path):
                _read(path)
        with open(report_path, "w") as fh:
            json.dump({"symbol": symbol}, fh)

    return run_symbol


def test_a_damaged_input_is_removed_and_its_upstream_shard_rerun_next(tmp_path, job_context):
    damaged = _parquet(tmp_path / "parsed" / "B" / "20250106.pqt")
    damaged.write_bytes(damaged.read_bytes()[:20])
    parse = _upstream_report(tmp_path, "aws_parse", ["A", "B"], generation=4)
    other_stage = _upstream_report(tmp_path, "aws_download", ["A", "B"])
    other_shard = tmp_path / "reports/aws_parse/spot/aggTrades/shards/1.json"
    other_shard.write_text(json.dumps({"shard": 1, "symbols": {"C": {"status": "ok"}}}))
    before = {p: p.read_text() for p in (other_stage, other_shard)}
    job_context(
        upstream_shard_reports=[str(parse), str(other_stage), str(other_shard)],
        retry_generation=0,
    )
    with pytest.raises(ShardFailed):
        _run(tmp_path, _damaged_entry(damaged, "aws_parse"), ["A", "B"])
    assert not damaged.exists()  # an unreadable file left in place may pass for done
    up = json.loads(parse.read_text())
    assert up["retry_generation"] == 5 and up["damaged"] == {"B": str(damaged)}
    assert {p: p.read_text() for p in before} == before  # another stage, another shard
    from crypto_lakehouse.plan import retry_generation

    assert retry_generation(parse) == 5  # the param that reruns the parse shard
    shard = json.loads((tmp_path / "reports/x/shards/3.json").read_text())
    assert shard["symbols"]["A"]["status"] == "ok" and shard["retry_generation"] == 1
    error = shard["symbols"]["B"]["error"]
    assert error.startswith(f"DamagedInput: {damaged}, written by aws_parse, is unreadable (")
    assert error.endswith(
        "removed; the next run rebuilds it (aws_parse/spot/aggTrades/shards/0), then this symbol"
    )


def test_a_missing_input_without_an_upstream_shard_says_how_to_rebuild_it(tmp_path):
    gone = tmp_path / "results" / "B.pqt"
    with pytest.raises(ShardFailed) as info:
        _run(tmp_path, _damaged_entry(gone, "gen_kline"), ["A", "B"])
    assert f"{gone}, written by gen_kline, is missing: rebuilt by a run of gen_kline" in str(
        info.value
    )
    assert "--forcerun gen_kline" in str(info.value)


def test_a_damaged_file_the_writer_did_not_write_is_kept_and_named(tmp_path, job_context):
    # A legacy partition used in place: the parse never overwrites it, so removing it could
    # lose rows nobody can rebuild, and rerunning the parse would mend nothing.
    from crypto_lakehouse.shards import reading_output_of

    legacy = _parquet(tmp_path / "parsed" / "B" / "202001.pqt")
    legacy.write_bytes(legacy.read_bytes()[:20])
    damaged = legacy.read_bytes()
    parse = _upstream_report(tmp_path, "aws_parse", ["A", "B"], generation=4)
    job_context(upstream_shard_reports=[str(parse)], retry_generation=0)

    def run_symbol(*, symbol, report_path, stats_path, factor, source):
        if symbol == "B":
            with reading_output_of("aws_parse", legacy, lambda: False):
                _read(legacy)

    with pytest.raises(ShardFailed):
        _run(tmp_path, run_symbol, ["A", "B"])
    assert legacy.read_bytes() == damaged
    assert json.loads(parse.read_text()).get("retry_generation") == 4
    error = json.loads((tmp_path / "reports/x/shards/3.json").read_text())["symbols"]["B"]["error"]
    # Plainly: not this pipeline's file, kept, and what to do (before 2026-12-06 it said
    # "written by aws_parse, … aws_parse did not write it").
    assert error.startswith(
        f"DamagedInput: {legacy}, a file this pipeline did not write (aws_parse has no record "
        "of it: a legacy file used in place?), is unreadable ("
    )
    assert "written by" not in error
    assert error.endswith(
        ": not removed, since its rows may exist nowhere else. Move it out of the data dir "
        "(keep a copy) or put a readable copy in its place, then run again: aws_parse then "
        "rebuilds it from the sources the data dir holds for it, if any, and this symbol runs "
        "again"
    )


# ------------------------------------------------ damaged reports (JSON records)
def _torn(path) -> None:
    text = path.read_bytes()
    path.write_bytes(text[: len(text) // 2])


def test_read_report_tells_a_missing_a_torn_and_a_good_report(tmp_path):
    from crypto_lakehouse.shards import DamagedInput, read_report

    path = _upstream_report(tmp_path, "gen_kline", ["A"])
    assert read_report(path)["symbols"]["A"]["status"] == "ok"
    for content, problem in ((None, "is missing"), (b"[1]", "is not a JSON object"),
                             (b"", "is unreadable (JSONDecodeError"),
                             (bytes(40), "is unreadable (")):  # fmt: skip
        if content is None:
            path.unlink()
        else:
            path.write_bytes(content)
        with pytest.raises(DamagedInput) as info:
            read_report(path)
        assert str(info.value).startswith(f"{path}, written by gen_kline, {problem}")
        assert info.value.missing == (content is None)


def test_a_torn_upstream_shard_report_is_removed_and_named(tmp_path, job_context):
    # Before: every run of the downstream job failed with a bare JSONDecodeError, and no run
    # ever rewrote the report (Snakemake takes an output that exists for done).
    from crypto_lakehouse import layout
    from crypto_lakehouse.shards import DamagedInput

    parse = _upstream_report(tmp_path, "aws_parse", ["A", "B"])
    _torn(parse)
    # The run summaries that read the report (its stage's and the datasets', of its trade
    # type), up to date: Snakemake would not rebuild the removed report for them.
    summaries = [
        Path(layout.run_summary_path(str(tmp_path), s, "spot")) for s in ("aws_parse", "datasets")
    ]
    other = Path(layout.run_summary_path(str(tmp_path), "aws_parse", "um_futures"))
    for path in (*summaries, other):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
    with pytest.raises(DamagedInput) as info:
        job_context(upstream_shard_reports=[str(parse)], retry_generation=0)
    assert str(info.value).startswith(f"{parse}, written by aws_parse, is unreadable (")
    assert str(info.value).endswith("removed; the next run reruns the job that writes it "
                                    "(aws_parse), then this one")  # fmt: skip
    assert not parse.exists()  # missing: Snakemake reruns the parse shard next time
    assert not any(p.exists() for p in summaries)  # ... because its summaries are missing
    assert other.exists()
    assert layout.summaries_reading(tmp_path / "elsewhere" / "shards" / "0.json") == []


def test_a_torn_symbol_report_upstream_fails_the_symbol_and_reruns_its_shard(tmp_path, job_context):
    from crypto_lakehouse.shards import read_report

    gen = _upstream_report(tmp_path, "gen_kline", ["A", "B"], generation=2)
    symbol_report = tmp_path / "reports/gen_kline/spot/aggTrades/B.json"
    symbol_report.write_text(json.dumps({"symbol": "B", "segments": []}))
    _torn(symbol_report)
    job_context(upstream_shard_reports=[str(gen)], retry_generation=0)

    def run_symbol(*, symbol, report_path, stats_path, factor, source):
        if symbol == "B":
            read_report(symbol_report, "gen_kline")
        with open(report_path, "w") as fh:
            json.dump({"symbol": symbol}, fh)

    with pytest.raises(ShardFailed):
        _run(tmp_path, run_symbol, ["A", "B"])
    assert not symbol_report.exists()
    up = json.loads(gen.read_text())
    assert up["retry_generation"] == 3 and up["damaged"] == {"B": str(symbol_report)}
    shard = json.loads((tmp_path / "reports/x/shards/3.json").read_text())
    assert shard["symbols"]["A"]["status"] == "ok"
    assert shard["symbols"]["B"]["error"].endswith(
        "removed; the next run rebuilds it (gen_kline/spot/aggTrades/shards/0), then this symbol"
    )


def test_a_summary_fails_naming_torn_records_and_has_them_rebuilt(tmp_path):
    from crypto_lakehouse.summary import SymbolsFailed, run_summaries

    reports = tmp_path / "reports/gen_kline/spot/klines-1m"
    stats = tmp_path / "stats/gen_kline/spot/klines-1m"
    for folder in (reports / "shards", stats):
        folder.mkdir(parents=True)
    shards = []
    for k, names in enumerate((["A", "B"], ["C"])):
        entries = {n: {"status": "ok", "report": str(reports / f"{n}.json")} for n in names}
        shards.append(reports / "shards" / f"{k}.json")
        shards[-1].write_text(json.dumps({"shard": k, "symbols": entries, "retry_generation": 0}))
        for n in names:
            (reports / f"{n}.json").write_text(json.dumps({"symbol": n}))
            (stats / f"{n}.json").write_text(json.dumps({"files_written": 1}))
    _torn(reports / "A.json")
    (stats / "C.json").write_bytes(bytes(30))
    summary = tmp_path / "summaries/gen_kline/spot.json"
    job = {"stage": "gen_kline", "trade_type": "spot", "summary": str(summary),
           "reports": [str(p) for p in shards]}  # fmt: skip
    with pytest.raises(SymbolsFailed) as info:
        run_summaries(summaries=[job])
    message = str(info.value)
    assert "gen_kline spot: 2 record(s) unreadable, rebuilt by the next run: " in message
    assert "symbol(s)" not in message
    assert f": {reports / 'A.json'}, written by gen_kline, is unreadable" in message
    assert f"{stats / 'C.json'}, written by gen_kline, is unreadable" in message
    assert "the next run rebuilds it (gen_kline/spot/klines-1m/shards/0)" in message
    assert not summary.exists()  # no summary of an incomplete stage
    assert not (reports / "A.json").exists() and not (stats / "C.json").exists()
    assert [json.loads(p.read_text())["retry_generation"] for p in shards] == [1, 1]
    # the next run rebuilds them: then the summary is written
    (reports / "A.json").write_text(json.dumps({"symbol": "A"}))
    (stats / "C.json").write_text(json.dumps({"files_written": 1}))
    run_summaries(summaries=[job])
    assert json.loads(summary.read_text())["totals"]["files_written"] == 3
    _torn(shards[1])
    with pytest.raises(SymbolsFailed, match="reruns the job that writes it"):
        run_summaries(summaries=[job])
    assert not shards[1].exists()
    # Removed by another job of the run that found it torn (a resample job reading it
    # while this summary ran): missing is no success either. Written, the summary would
    # be up to date, and Snakemake would never rebuild the missing shard report.
    with pytest.raises(SymbolsFailed) as info:
        run_summaries(summaries=[job])
    assert f"{shards[1]}, written by gen_kline, is missing: removed during this run" in str(
        info.value
    )


@pytest.mark.parametrize(
    "data_dir, setting, expected_peak",
    [("s3://bucket/lake", 3, 3), ("s3://bucket/lake", 1, 1), ("LOCAL", 3, 1)],
)
def test_a_shard_job_on_object_storage_runs_symbols_at_once(
    tmp_path, data_dir, setting, expected_peak
):
    """for_each_symbol (every CPU shard rule's entry point) takes storage.symbols_at_once
    symbols at a time on an s3:// data dir, one at a time on a local one."""
    import threading
    import time

    from crypto_lakehouse import storage
    from crypto_lakehouse.shards import for_each_symbol

    lock = threading.Lock()
    running, peak, seen_dirs = [0], [0], set()

    def run_symbol(*, symbol, data_dir, report_path, stats_path):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            seen_dirs.add(data_dir)
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        with open(report_path, "w") as fh:
            json.dump({"symbol": symbol}, fh)

    data_dir = str(tmp_path / "data") if data_dir == "LOCAL" else data_dir
    before = storage.settings()
    storage.configure({"symbols_at_once": setting})
    try:
        (tmp_path / "reports/x").mkdir(parents=True)
        report = for_each_symbol(run_symbol)(
            symbols=[f"S{i}" for i in range(7)],
            shard_report=str(tmp_path / "reports/x/shards/0.json"),
            symbol_paths={"report_path": str(tmp_path / "reports/x")},
            data_dir=data_dir,
        )
    finally:
        storage.configure(before)
    assert peak[0] == expected_peak and seen_dirs == {data_dir}
    assert list(report["symbols"]) == [f"S{i}" for i in range(7)]
    assert all(e["status"] == "ok" for e in report["symbols"].values())


@pytest.mark.parametrize("bad", [0, -1, "4", True, 2.5])
def test_symbols_at_once_must_be_a_positive_integer(bad):
    from crypto_lakehouse import storage

    with pytest.raises(ValueError, match="storage.symbols_at_once"):
        storage.configure({"symbols_at_once": bad})
    assert storage.settings()["symbols_at_once"] == storage.DEFAULTS["symbols_at_once"]


# ---------------------------------------------------------------- stale files, one scan per job
def test_a_shard_job_scans_each_output_folder_once_for_the_stale_files(tmp_path, monkeypatch):
    """The symbols of a shard job share one scan of each output folder (a scan per symbol
    made a daily update of N symbols cost N², the folders holding every symbol's files),
    and remove what a scan of their own would: their stale segment files and the temporary
    files of their names, any characters in the symbol, never another symbol's file nor a
    file a symbol wrote itself in the job."""
    from crypto_lakehouse import storage
    from crypto_lakehouse.generate.outputs import remove_stale

    folder = tmp_path / "results" / "1m"
    folder.mkdir(parents=True)
    names = [
        "BTCUSDT.pqt", "SP0_BTCUSDT.pqt", "SP1_BTCUSDT.pqt",  # SP1_: stale
        "ETHUSDT.pqt", "SP0_ETHUSDT.pqt",  # SP0_: stale
        ".tmp-SP3_ETHUSDT.pqt.11-22-3.part",  # a killed writer's: removed with ETH
        ".tmp-SP3_XETHUSDT.pqt.11-22-4.part",  # another symbol's: kept
        "币安人生USDT.pqt", "SP0_币安人生USDT.pqt",  # SP0_: stale
        "XBTCUSDT.pqt", "SP1_XBTCUSDT.pqt", "BTCUSDT.pqt.json",  # not the symbols'
    ]  # fmt: skip
    for name in names:
        (folder / name).write_bytes(b"x")
    scans = []
    real_file_names = storage.file_names
    monkeypatch.setattr(storage, "file_names", lambda d: scans.append(d) or real_file_names(d))
    keep = {"BTCUSDT": {"BTCUSDT", "SP0_BTCUSDT"}, "ETHUSDT": {"ETHUSDT", "SP2_ETHUSDT"},
            "币安人生USDT": {"币安人生USDT"}}  # fmt: skip
    removed: dict[str, list[str]] = {}

    def run_symbol(*, symbol, report_path, stats_path):
        if symbol == "ETHUSDT":  # written in this job, after the scan: kept
            (folder / "SP2_ETHUSDT.pqt").write_bytes(b"new")
        removed[symbol] = sorted(p.name for p in remove_stale(folder, symbol, keep[symbol]))
        with open(report_path, "w") as fh:
            json.dump({"symbol": symbol}, fh)

    report = _run_parts(tmp_path, [_part(tmp_path, run_symbol, list(keep), "k")])
    assert all(e["status"] == "ok" for e in report["symbols"].values()), report
    assert scans == [folder]
    assert removed == {"BTCUSDT": ["SP1_BTCUSDT.pqt"], "ETHUSDT": ["SP0_ETHUSDT.pqt"],
                       "币安人生USDT": ["SP0_币安人生USDT.pqt"]}  # fmt: skip
    assert sorted(p.name for p in folder.iterdir()) == sorted([
        "BTCUSDT.pqt", "SP0_BTCUSDT.pqt", "ETHUSDT.pqt", "SP2_ETHUSDT.pqt",
        ".tmp-SP3_XETHUSDT.pqt.11-22-4.part", "币安人生USDT.pqt",
        "XBTCUSDT.pqt", "SP1_XBTCUSDT.pqt", "BTCUSDT.pqt.json"])  # fmt: skip
    # Outside a shard job each clean-up looks for itself, with the same result.
    (folder / "SP5_ETHUSDT.pqt").write_bytes(b"x")
    assert [p.name for p in remove_stale(folder, "ETHUSDT", keep["ETHUSDT"])] == [
        "SP5_ETHUSDT.pqt"]  # fmt: skip


def test_on_s3_a_shard_job_lists_every_symbols_sp_files_once(s3_root, tmp_path, monkeypatch):
    """On S3 a listing of a whole output folder pages through every symbol's files: a shard
    job lists the ``SP`` files of every symbol once per folder and each symbol's own names
    by their prefix (before, each symbol listed both prefixes, the ``SP`` one growing with
    the universe), with what a scan of its own would remove, at once on threads too."""
    from crypto_lakehouse import storage
    from crypto_lakehouse.generate.outputs import remove_stale
    from tests.unit.test_storage import count_asked

    folder = storage.join(s3_root, "results/1m")
    names = ["BTCUSDT.pqt", "SP0_BTCUSDT.pqt", "SP1_BTCUSDT.pqt", "ETHUSDT.pqt",
             "SP0_ETHUSDT.pqt", "SPELLUSDT.pqt", "SP0_SPELLUSDT.pqt", "SP0_XBTCUSDT.pqt",
             *(f"SP0_A{i}USDT.pqt" for i in range(30))]  # fmt: skip
    for name in names:
        storage.write_bytes(folder / name, b"x")
    asked: list = []
    count_asked(monkeypatch, asked)
    keep = {"BTCUSDT": {"BTCUSDT", "SP0_BTCUSDT"}, "ETHUSDT": {"ETHUSDT"},
            "SPELLUSDT": {"SPELLUSDT"}}  # fmt: skip
    removed: dict[str, list[str]] = {}

    def run_symbol(*, symbol, report_path, stats_path):
        removed[symbol] = sorted(p.name for p in remove_stale(folder, symbol, keep[symbol]))
        with open(report_path, "w") as fh:
            json.dump({"symbol": symbol}, fh)

    report = _run_parts(tmp_path, [_part(tmp_path, run_symbol, list(keep), "k")], at_once=3)
    assert all(e["status"] == "ok" for e in report["symbols"].values()), report
    assert removed == {"BTCUSDT": ["SP1_BTCUSDT.pqt"], "ETHUSDT": ["SP0_ETHUSDT.pqt"],
                       "SPELLUSDT": ["SP0_SPELLUSDT.pqt"]}  # fmt: skip
    key = storage.data_path(folder).key
    lists = sorted(prefix for kind, prefix in asked if kind == "list")
    assert lists == [f"{key}/BTCUSDT", f"{key}/ETHUSDT", f"{key}/SP", f"{key}/SPELLUSDT"], lists
    left = {p.name for p in storage.list_files(folder)}
    assert left == set(names) - {"SP1_BTCUSDT.pqt", "SP0_ETHUSDT.pqt", "SP0_SPELLUSDT.pqt"}


def _ask_rerun_slowly(report: str, symbol: str, damaged: str) -> None:
    """Child process: ``_ask_rerun`` whose write of the edited report takes 0.5 s, the
    window in which another job's edit of the same report reads it."""
    import time

    from crypto_lakehouse import shards

    write = shards.write_json

    def slow_write(path, obj):
        time.sleep(0.5)
        write(path, obj)

    shards.write_json = slow_write
    assert shards._ask_rerun(report, symbol, damaged)


def test_two_jobs_asking_one_upstream_shard_to_rerun_lose_neither_edit(tmp_path):
    """Two jobs of one run read the same upstream shard report (agg_klines at two intervals
    read aws_parse's aggTrades shard) and may both find a damaged file of it at once: each
    edits the report (one more retry generation, its damaged file). Before, the edits were
    unlocked read-modify-writes, and the second write dropped the first's damaged file."""
    import multiprocessing

    report = tmp_path / "lakehouse/reports/aws_parse/spot/aggTrades/shards/0.json"
    report.parent.mkdir(parents=True)
    entries = {s: {"status": "ok", "report": f"{s}.json"} for s in ("BTCUSDT", "ETHUSDT")}
    report.write_text(json.dumps({"shard": 0, "symbols": entries, "retry_generation": 0}))
    ctx = multiprocessing.get_context("fork")
    jobs = [
        ctx.Process(target=_ask_rerun_slowly, args=(str(report), s, f"/d/{s}/20240101.pqt"))
        for s in ("BTCUSDT", "ETHUSDT")
    ]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join(30)
        assert job.exitcode == 0
    edited = json.loads(report.read_text())
    assert edited["damaged"] == {
        "BTCUSDT": "/d/BTCUSDT/20240101.pqt",
        "ETHUSDT": "/d/ETHUSDT/20240101.pqt",
    }
    assert edited["retry_generation"] == 2


# ------------------------------------------------ archive bytes (the SLURM runtime's work)
def test_completed_symbols_record_the_archive_bytes_their_upstream_held(tmp_path, job_context):
    up = tmp_path / "up/shards/3.json"
    up.parent.mkdir(parents=True)
    up.write_text(json.dumps({"shard": 3, "symbols": {
        "A": {"status": "ok", "archive_bytes": 700},
        "B": {"status": "ok", "archive_bytes": 900},
        "C": {"status": "ok"},  # written before the figure existed
    }}))  # fmt: skip
    job_context(upstream_shard_reports=[str(up)], retry_generation=0)
    with pytest.raises(ShardFailed):
        _run(tmp_path, _entry([], fail={"B"}), ["A", "B", "C"])
    shard = json.loads((tmp_path / "reports/x/shards/3.json").read_text())
    assert shard["symbols"]["A"]["archive_bytes"] == 700
    # A failed symbol covers nothing: its next job counts all its archives as to do.
    assert "archive_bytes" not in shard["symbols"]["B"]
    assert "archive_bytes" not in shard["symbols"]["C"]


def test_a_symbol_whose_entry_point_returns_archive_bytes_records_them(tmp_path):
    def entry(*, report_path, stats_path, **_):
        Path(report_path).write_text("{}")
        return {"archive_bytes": 1234, "files_downloaded": 3}

    (tmp_path / "reports/x").mkdir(parents=True)
    report = run_shard(
        entry, symbols=["A"], shard=3, shard_report=tmp_path / "reports/x/shards/3.json",
        symbol_paths={"report_path": str(tmp_path / "reports/x")},
    )  # fmt: skip
    assert report["symbols"]["A"]["archive_bytes"] == 1234
