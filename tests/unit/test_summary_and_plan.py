"""Run summaries (crypto_lakehouse.summary) and workflow-time helpers (crypto_lakehouse.plan)."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pytest

from crypto_lakehouse import plan
from crypto_lakehouse.archive import listing
from crypto_lakehouse.plan import ConfigError, check_config, resolve_dates
from crypto_lakehouse.summary import headline, run_summary


def _write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def test_summary_sums_counters_recomputes_rates_and_collects_problems(tmp_path):
    lh = tmp_path / "lakehouse"
    reports = []
    for sym, nbytes, secs, quarantined in (
        ("AAAUSDT", 3_000_000, 2.0, {}),
        ("BBBUSDT", 1_000_000, 2.0, {"k.zip": "no CHECKSUM"}),
    ):
        rep = lh / "reports/aws_download/spot/klines-1m" / f"{sym}.json"
        _write(rep, {"symbol": sym, "quarantined": quarantined})
        _write(
            lh / "stats/aws_download/spot/klines-1m" / f"{sym}.json",
            {
                "bytes": nbytes,
                "seconds": secs,
                "files_downloaded": 10,
                "retries": 1,
                "mb_per_s": nbytes / 1e6 / secs,
                "files_quarantined": len(quarantined),
                "seconds_detail": {"verify": 0.5},
            },
        )
        reports.append(rep)
    out = lh / "summaries/aws_download/spot.json"
    summary = run_summary(
        stage="aws_download", trade_type="spot", summary=str(out), reports=reports
    )
    assert json.loads(out.read_text())["totals"] == summary["totals"]
    assert summary["symbols"] == 2
    assert summary["totals"]["bytes"] == 4_000_000 and summary["totals"]["retries"] == 2
    assert summary["totals"]["seconds_detail.verify"] == 1.0
    assert "mb_per_s" not in summary["totals"]  # a rate summed over symbols means nothing
    assert summary["throughput_mb_s"] == pytest.approx(1.0)  # 4 MB in 4 s
    assert summary["throughput_files_s"] == pytest.approx(5.0)
    assert summary["figures"] == {"klines-1m/BBBUSDT": {"quarantined": {"k.zip": "no CHECKSUM"}}}
    line = headline(summary)
    assert (
        "aws_download/spot: 2 symbols" in line
        and "MB=4.0" in line
        and "files_quarantined=1" in line
    )


def test_headline_prints_large_counts_in_full():
    """A full-history run's counts run into millions: the headline printed them with
    ``:g`` (``candles=3.63744e+06``, six digits of 3637441; docs/summaries.md shows counts)."""
    summary = {
        "stage": "api_download", "trade_type": "spot", "symbols": 1, "problems": {},
        "totals": {"candles": 3_637_441, "requests": 3791, "rows.output": 12_345_678.0},
        "freshness_lag_minutes_max": 1440, "throughput_mb_s": 2.1834,
        "datasets": {"aggTrades": {"rows": 98_765_432, "days": 30}},
    }  # fmt: skip
    line = headline(summary)
    for part in ("candles=3637441", "requests=3791", "rows.output=12345678",
                 "freshness_lag_minutes_max=1440", "throughput_mb_s=2.18",
                 "aggTrades: rows=98765432 days=30 quarantined=0"):  # fmt: skip
        assert part in line, (part, line)
    # Not whole, with more digits than the three shown: to the unit, not in exponent form
    # ("1.23e+03", "1e+03").
    line = headline({**summary, "throughput_mb_s": 1234.56, "quality_score_min": 999.7})
    assert "throughput_mb_s=1235" in line and "quality_score_min=1000" in line, line


def test_the_headline_shows_the_input_files_gen_kline_left_out(tmp_path):
    # A parsed file gen_kline could not use (a legacy file without a column) is left out
    # of the build and counted, but the line printed at the end of the run did not say so.
    lh = tmp_path / "lakehouse"
    rep = lh / "reports/gen_kline/spot/klines-1m/AUSDT.json"
    _write(rep, {"symbol": "AUSDT", "input_problems": ["x.pqt: missing columns ['open']"]})
    _write(lh / "stats/gen_kline/spot/klines-1m/AUSDT.json",
           {"files_written": 1, "input_problems": 1})  # fmt: skip
    summary = run_summary(stage="gen_kline", trade_type="spot",
                          summary=str(lh / "summaries/gen_kline/spot.json"), reports=[rep])  # fmt: skip
    assert "input_problems=1" in headline(summary)


def test_summary_counts_a_symbol_once_across_its_datasets(tmp_path):
    """A future's klines and funding are two reports of one symbol: 2 symbols, not 4."""
    lh = tmp_path / "lakehouse"
    reports = []
    for tag in ("klines-1m", "funding"):
        for sym in ("AAAUSDT", "BBBUSDT"):
            rep = lh / "reports/aws_download/um_futures" / tag / f"{sym}.json"
            _write(rep, {"symbol": sym})
            _write(lh / "stats/aws_download/um_futures" / tag / f"{sym}.json", {"bytes": 1})
            reports.append(rep)
    summary = run_summary(
        stage="aws_download", trade_type="um_futures", summary=str(tmp_path / "s.json"),
        reports=reports,
    )  # fmt: skip
    assert summary["symbols"] == 2
    assert summary["reports_per_dataset"] == {"funding": 2, "klines-1m": 2}
    assert headline(summary).startswith(
        "aws_download/um_futures: 2 symbols (funding 2, klines-1m 2)"
    )


def test_summary_figures_quality_and_freshness(tmp_path):
    lh = tmp_path / "lakehouse"
    parse = lh / "reports/aws_parse/um_futures/klines-1m/X.json"
    _write(parse, {"quality": {"score": 0.75, "missing_rows": 360}})
    api = lh / "reports/api_download/um_futures/klines-1m/X.json"
    _write(api, {"freshness_lag_minutes": 90, "missing_days": [["2024-01-01", "2024-01-02"]]})
    s1 = run_summary(
        stage="aws_parse",
        trade_type="um_futures",
        summary=str(tmp_path / "a.json"),
        reports=[parse],
    )
    s2 = run_summary(
        stage="api_download",
        trade_type="um_futures",
        summary=str(tmp_path / "b.json"),
        reports=[api],
    )
    assert s1["quality_score_min"] == 0.75 and s1["figures"]["klines-1m/X"]["missing_rows"] == 360
    assert s2["freshness_lag_minutes_max"] == 90
    assert s2["figures"]["klines-1m/X"]["missing_day_ranges"] == 1


def test_summary_skips_a_symbol_without_a_quality_score(tmp_path):
    lh = tmp_path / "lakehouse"
    scored = lh / "reports/aws_parse/spot/klines-1m/A.json"
    _write(scored, {"quality": {"score": 0.5, "missing_rows": 0}})
    empty = lh / "reports/aws_parse/spot/klines-1m/B.json"  # no archive day in the range
    _write(empty, {"quality": {"score": None, "missing_rows": None}})
    s = run_summary(
        stage="aws_parse", trade_type="spot", summary=str(tmp_path / "s.json"), reports=[scored]
    )
    both = run_summary(
        stage="aws_parse",
        trade_type="spot",
        summary=str(tmp_path / "t.json"),
        reports=[scored, empty],
    )
    assert s["quality_score_min"] == both["quality_score_min"] == 0.5
    assert both["quality_score_mean"] == 0.5 and both["symbols"] == 2


def test_resolve_dates():
    today = dt.date(2026, 11, 26)
    assert resolve_dates(None, None, None, today) == (None, "2026-11-26")
    assert resolve_dates(None, None, 30, today) == ("2026-10-28", "2026-11-26")
    assert resolve_dates("2024-01-01", "2024-01-31", 5, today) == ("2024-01-01", "2024-01-31")
    with pytest.raises(ConfigError, match="start_date"):
        resolve_dates("2024-02-01", "2024-01-31", None, today)
    with pytest.raises(ConfigError, match="end_date"):
        resolve_dates(None, "2024-02-30", None, today)


def test_the_today_variable_replays_another_day(monkeypatch):
    monkeypatch.setenv(plan.TODAY_VARIABLE, "2024-06-04")
    assert plan.today_utc() == dt.date(2024, 6, 4)
    assert resolve_dates(None, None, None) == (None, "2024-06-04")
    monkeypatch.setenv(plan.TODAY_VARIABLE, "June 4th")
    with pytest.raises(ConfigError, match="CRYPTO_LAKEHOUSE_TODAY.*'June 4th'"):
        plan.today_utc()


@pytest.mark.parametrize(
    ("end", "monthly_only", "settles"),
    [
        # daily files appear the next day: the listing of the 2nd on the 4th is final
        ("2024-06-02", False, "2024-06-04"),
        # funding has monthly files only, published by mid next month
        ("2024-06-02", True, "2024-07-16"),
        ("2024-12-31", True, "2025-01-16"),
        # the 30th of June: daily files settle on 2 July, monthly ones on 16 July
        ("2024-06-30", True, "2024-07-16"),
        ("2024-07-20", True, "2024-08-16"),
    ],
)
def test_a_listing_up_to_a_fixed_end_date_settles(end, monthly_only, settles):
    assert plan.listing_settles_on(end, monthly_only).isoformat() == settles


def test_a_fixed_end_date_relists_once_a_day_until_it_settles():
    def recheck(end_date, today, monthly_only=False):
        _, end = resolve_dates(None, end_date, None, dt.date.fromisoformat(today))
        return plan.listing_recheck(end_date, end, monthly_only, dt.date.fromisoformat(today))

    # the day after a fixed end date, and the next: a value per day
    assert recheck("2024-06-02", "2024-06-03") == "2024-06-03"
    # settled: no value, the trigger is the end date alone (as before for old end dates)
    assert recheck("2024-06-02", "2024-06-04") is None
    assert recheck("2024-06-02", "2024-06-20") is None
    assert recheck("2024-06-02", "2024-06-20", monthly_only=True) == "2024-06-20"
    assert recheck("2024-06-02", "2024-07-16", monthly_only=True) is None
    # unset, today or later: the end date itself moves with the days
    assert recheck(None, "2024-06-03") is None
    assert recheck("2024-06-03", "2024-06-03") is None
    assert recheck("2024-06-09", "2024-06-03") is None


def _config(**over):
    cfg = {
        "interval": "1m",
        "start_date": None,
        "end_date": None,
        "lookback_days": None,
        "resample": {"targets": [{"trade_type": "spot", "interval": "1h", "offset_step": "5m"}]},
    }
    cfg.update(over)
    return cfg


def test_check_config_names_the_key():
    check_config(_config())
    with pytest.raises(ConfigError, match="resample.targets"):
        check_config(
            _config(
                resample={
                    "targets": [{"trade_type": "spot", "interval": "1h", "offset_step": "1h"}]
                }
            )
        )
    # Targets are checked against the configured base interval, not a fixed 1m.
    with pytest.raises(ConfigError, match="resample.targets"):
        check_config(
            _config(
                interval="1h",
                resample={
                    "targets": [{"trade_type": "spot", "interval": "5m", "offset_step": "0m"}]
                },
            )
        )
    with pytest.raises(ConfigError, match="interval"):
        check_config(_config(interval="7x"))


def test_a_1s_base_interval_with_futures_trade_types_is_refused_naming_both_keys():
    # Binance has 1s klines for spot only: no futures archive folder, and fapi/dapi answer
    # -1120 Invalid interval. The check let interval 1s pass with the default trade types,
    # and every futures symbol would have ended with no candles at all.
    spot_1s = {"targets": [{"trade_type": "spot", "interval": "1m", "offset_step": "0m"}]}
    check_config(_config(interval="1s", trade_types=["spot"], resample=spot_1s))
    for trade_types, named in (
        (["spot", "um_futures", "cm_futures"], "um_futures, cm_futures"),
        (["cm_futures"], "cm_futures"),
    ):
        with pytest.raises(ConfigError) as err:
            check_config(_config(interval="1s", trade_types=trade_types, resample=spot_1s))
        lines = str(err.value).splitlines()[1:]
        assert len(lines) == 1, lines
        assert "config key 'interval'" in lines[0] and "spot only" in lines[0]
        assert f"config key 'trade_types' lists {named} " in lines[0]
    # the schema default (all three trade types) when the key is absent
    with pytest.raises(ConfigError, match="spot only"):
        check_config(_config(interval="1s", resample=spot_1s))
    # 1m and coarser exist for every trade type
    check_config(_config(interval="1m", trade_types=["spot", "um_futures", "cm_futures"]))


def test_a_data_dir_or_run_dir_that_is_a_file_is_named_by_its_key(tmp_path):
    # It was a NotADirectoryError traceback about lakehouse/config_checks.
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    check_config(_config(data_dir=str(tmp_path / "data"), run_dir=None))
    with pytest.raises(ConfigError) as err:
        check_config(_config(data_dir=str(a_file), run_dir=str(a_file / "run")))
    assert str(err.value).splitlines()[1:] == [
        f"  config key 'data_dir': {a_file} is a file, not a folder",
        f"  config key 'run_dir': {a_file / 'run'} is below {a_file}, a file, not a folder",
    ]
    check_config(_config(data_dir="s3://bucket/prefix"))


def test_check_config_checks_the_feature_indicators_while_enabled():
    bad = {"indicators": [{"name": "RSI", "timeperiod": 14}, {"name": "RSI", "timeperod": 3}]}
    with pytest.raises(ConfigError, match=r"config key features\.indicators\[1\].*timeperod"):
        check_config(_config(features=bad))
    # enabled: false leaves features out of `all`: checked when `snakemake features` plans
    # them (plan.check_feature_config; tests/unit/test_feature_config_verdicts.py).
    check_config(_config(features={**bad, "enabled": False}))
    from crypto_lakehouse.plan import active_stages

    assert active_stages(_config())[-2:] == ["resample", "features"]
    assert "features" not in active_stages(_config(features={"enabled": False}))


def test_a_shard_job_with_failed_symbols_ends_successfully_unless_fatal(tmp_path):
    """smk.run_job: with retry_generation among the job's arguments (a workflow shard job), a
    ShardFailed after the shard report ends the job successfully, so that the shard's other
    symbols go on to the next stages; a fatal one (a host ban) and any other error fail."""
    from crypto_lakehouse import shards
    from crypto_lakehouse.shards import ShardFailed
    from crypto_lakehouse.smk import run_job

    up = tmp_path / "up/shards/0.json"
    up.parent.mkdir(parents=True)
    up.write_text(json.dumps({"symbols": {"X": {"status": "failed"}}}))
    seen = {}

    def entry(*, error):
        seen["skips"] = dict(shards._JOB.upstream_failed)
        seen["generation"] = shards._JOB.retry_generation
        raise error

    log = str(tmp_path / "job.log")
    args = json.dumps({"retry_generation": 1, "upstream_shard_reports": [str(up)]})

    def run(error, job_args=args):
        return run_job(lambda **kwargs: entry(error=error), ["script.py", job_args, log])

    try:
        assert run(ShardFailed("1 of 2 failed")) is None  # a partial shard: the job succeeds
        assert list(seen["skips"]) == ["X"] and seen["generation"] == 1
        assert "1 of 2 failed; the job ends successfully" in (tmp_path / "job.log").read_text()
        with pytest.raises(ShardFailed):  # a ban
            run(ShardFailed("banned", fatal=True))
        with pytest.raises(ValueError):  # not a shard's recorded failure
            run(ValueError("x"))
        with pytest.raises(ShardFailed):  # no retry generation: not a workflow shard job
            run(ShardFailed("1 of 2 failed"), "{}")
    finally:
        shards.configure_job()


def test_run_job_passes_json_kwargs_and_derives_the_stats_path(tmp_path):
    from crypto_lakehouse.smk import run_job, stats_path_for

    seen = {}

    def entry(*, symbol, report_path, stats_path):
        seen.update(symbol=symbol, report_path=report_path, stats_path=stats_path)
        return 7

    report = str(tmp_path / "lakehouse/reports/gen_kline/spot/klines-1m/BTCUSDT.json")
    job = json.dumps({"symbol": "BTCUSDT", "report_path": report})
    assert run_job(entry, ["script.py", job, str(tmp_path / "job.log")]) == 7
    assert seen["stats_path"] == stats_path_for(report)
    assert seen["stats_path"].endswith("lakehouse/stats/gen_kline/spot/klines-1m/BTCUSDT.json")
    assert "entry(report_path, stats_path, symbol)" in (tmp_path / "job.log").read_text()
    with pytest.raises(SystemExit, match="JOB_JSON LOG_FILE"):
        run_job(entry, ["script.py"])


def test_a_stage_with_unfinished_symbols_gets_no_summary_and_names_them(tmp_path):
    from crypto_lakehouse.summary import SymbolsFailed, run_summaries

    def shard(trade_type, statuses):
        path = tmp_path / f"reports/gen_kline/{trade_type}/klines-1m/shards/0.json"
        symbols = {}
        for sym, (status, error) in statuses.items():
            rep = path.parent.parent / f"{sym}.json"
            _write(rep, {"symbol": sym})
            symbols[sym] = {
                "status": status,
                "report": str(rep),
                **({"error": error} if error else {}),
            }
        _write(path, {"shard": 0, "symbols": symbols})
        return str(path)

    spot = shard("spot", {"A": ("ok", None), "B": ("failed", "ValueError: bad B")})
    um = shard("um_futures", {"C": ("ok", None)})
    cm = shard("cm_futures", {"D": ("upstream_failed", "not done upstream (x)")})
    out = {t: tmp_path / f"summaries/{t}.json" for t in ("spot", "um_futures", "cm_futures")}
    summaries = [
        dict(stage="gen_kline", trade_type=t, summary=str(out[t]), reports=[r])
        for t, r in (("spot", spot), ("um_futures", um), ("cm_futures", cm))
    ]
    with pytest.raises(SymbolsFailed) as info:
        run_summaries(summaries=summaries)
    message = str(info.value)
    assert "gen_kline spot: 1 symbol(s) not done" in message and "B: ValueError: bad B" in message
    assert (
        "gen_kline cm_futures: 1 symbol(s) held back by an earlier stage" in message
        and "D: not done upstream" in message
    )
    assert "C:" not in message
    assert out["um_futures"].exists()  # the complete trade type is summarised
    assert not out["spot"].exists() and not out["cm_futures"].exists()


def test_shard_digest_holds_an_explicit_end_date_only_while_it_cuts_the_listed_files(tmp_path):
    # BTC's listed zips run to 2025-01-06, ETH's to 2024-12-31 (a monthly zip). A run with
    # end_date 2025-01-05 left BTC's 2025-01-06 zip out; moving the end date to 2025-01-06
    # must rerun the shard although no listing changed.
    btc = [{"key": f"x/BTCUSDT-1m-2025-01-0{d}.zip"} for d in (5, 6)]
    eth = [{"key": "x/ETHUSDT-fundingRate-2024-12.zip"}, {"key": "x/ETHUSDT.CHECKSUM"}]
    assert listing.last_covered_day(btc) == "2025-01-06"
    assert listing.last_covered_day(eth) == "2024-12-31"
    assert listing.last_covered_day([{"key": "x/odd-name.zip"}]) is None
    index = tmp_path / "index.json"
    symbols = {
        "BTCUSDT": {"digest": "b", "n_files": 2, "last_day": "2025-01-06"},
        "ETHUSDT": {"digest": "e", "n_files": 1, "last_day": "2024-12-31"},
        "OLDUSDT": {"digest": "o", "n_files": 1},  # an index from before last_day
    }
    index.write_text(json.dumps({"symbols": symbols}))

    def digest(names, end):
        return plan.shard_digest(index, names, end)

    assert digest(["BTCUSDT"], "2025-01-05") != digest(["BTCUSDT"], "2025-01-06")
    # Past the newest listed day, the end date selects nothing more: no rerun.
    assert digest(["BTCUSDT"], "2025-01-06") == digest(["BTCUSDT"], "2025-01-07")
    assert digest(["BTCUSDT"], "2025-01-07") == digest(["BTCUSDT"], None)
    assert digest(["ETHUSDT"], "2025-01-05") == digest(["ETHUSDT"], "2025-01-06")
    assert digest(["OLDUSDT"], "2025-01-05") != digest(["OLDUSDT"], "2025-01-06")
    assert digest(["OLDUSDT"], None) == digest(["OLDUSDT"], "")


def test_a_summary_failure_line_stays_short_with_many_long_errors(tmp_path):
    # Each skipped symbol now carries its upstream error (up to 400 characters): ten of
    # them made one line of ~4,500 characters per stage at the end of a run.
    from crypto_lakehouse.summary import SHOWN_FAILED_CHARS, SymbolsFailed, _raise_for_failed

    failed = [f"S{i}: not done upstream (x: failed): " + "E" * 380 for i in range(30)]
    with pytest.raises(SymbolsFailed) as info:
        _raise_for_failed("gen_kline", "spot", failed)
    message = str(info.value)
    assert len(message) < SHOWN_FAILED_CHARS + 200
    assert "30 symbol(s) held back by an earlier stage" in message and message.endswith("more")
    shown = message.count("not done upstream")
    assert 1 <= shown < 10 and f"and {30 - shown} more" in message
    with pytest.raises(SymbolsFailed) as info:
        _raise_for_failed("gen_kline", "spot", ["A: short", "B: short"])
    assert str(info.value).endswith("A: short; B: short")


def test_a_summary_says_when_all_its_symbols_were_held_back_upstream():
    # The end of a failed run lists such summaries on one line (crypto_lakehouse.failures).
    from crypto_lakehouse.summary import SymbolsFailed, _raise_for_failed

    upstream = "B: not done upstream (aws_download/spot/klines-1m/shards/0: failed): HTTP 500"
    with pytest.raises(SymbolsFailed) as info:
        _raise_for_failed("gen_kline", "spot", [upstream, "klines-1m/C: " + upstream[3:]])
    assert str(info.value).startswith(
        "gen_kline spot: 2 symbol(s) held back by an earlier stage, retried by the next run: B: "
    )
    for own in (["A: ValueError: bad file", upstream], [upstream]):
        listings = ["spot klines 1m: cannot list"] if own == [upstream] else []
        with pytest.raises(SymbolsFailed) as info:
            _raise_for_failed("gen_kline", "spot", own, listings)
        assert "held back" not in str(info.value)  # a failure of its own: shown in full


def test_a_failed_listing_fails_the_download_summary_and_reruns_the_listing(tmp_path):
    from crypto_lakehouse.summary import SymbolsFailed

    complete = tmp_path / "klines-1m.json"
    failed_root = tmp_path / "funding.json"
    _write(complete, {"symbols": {"BTCUSDT": {"digest": "d", "n_files": 1}}})
    assert plan.failure_time([complete, tmp_path / "absent.json"]) is None
    root_error = "um_futures funding: cannot list symbols below data/futures/um/monthly/x/: 500"
    _write(
        failed_root,
        {"symbols": {}, "failed": {}, "error": root_error, "failed_at_unix": 1000.5},
    )
    assert plan.failure_time([complete, failed_root]) == 1000.5
    # The complete listing after it names it: the rerun trigger keeps its value. (Other
    # file names: plan caches an index by path and modification time.)
    relisted = tmp_path / "relisted.json"
    after = plan.after_failure(1000.5, "2025-01-06")
    _write(relisted, {"symbols": {}, "after_failure": after})
    assert plan.failure_time([complete, relisted], "2025-01-06") == 1000.5
    assert plan.failure_time([complete, relisted], "2025-01-07") is None  # the next day's
    assert plan.failure_time([complete, relisted], "2025-01-06", replaced=True) is None

    # A failed listing with no symbol to fail (a first listing of "all") fails the summary.
    summary = tmp_path / "summaries" / "um_futures.json"
    with pytest.raises(SymbolsFailed) as info:
        run_summary(
            stage="aws_download", trade_type="um_futures", summary=str(summary), reports=[],
            listings=[str(complete), str(failed_root)],
        )  # fmt: skip
    assert str(info.value) == (
        f"aws_download um_futures: listing failed: {root_error}; the next run lists again"
    )
    assert not summary.exists()
    run_summary(stage="aws_download", trade_type="um_futures", summary=str(summary),
                reports=[], listings=[str(complete)])  # fmt: skip
    assert summary.exists()


def test_listing_errors_of_a_shard(tmp_path):
    index, complete = tmp_path / "index.json", tmp_path / "complete.json"
    _write(index, {"symbols": {"A": {}, "B": {}, "C": {}}, "failed": {"B": "boom", "C": "x"}})
    assert plan.listing_errors(index, ["A", "B"]) == {"B": "boom"}
    _write(complete, {"symbols": {"A": {}}})
    assert plan.listing_errors(complete, ["A"]) == {}


def test_shard_files_counts_the_listed_files_of_the_shards_symbols(tmp_path):
    # The priority of a download job; a symbol whose listing failed has no n_files.
    index = tmp_path / "index.json"
    _write(index, {"symbols": {"A": {"n_files": 90}, "B": {"n_files": 4}, "C": {}}})
    assert plan.shard_files(index, ["A", "B"]) == 94
    assert plan.shard_files(index, ["B", "C"]) == 4
    assert plan.shard_files(index, []) == 0


def test_a_failed_exchange_info_request_is_named_in_the_rest_summary(tmp_path):
    failed = tmp_path / "exchange_info" / "spot.json"
    _write(failed, {"trade_type": "spot", "error": "RestError: HTTP 503", "failed_at_unix": 5})
    complete = tmp_path / "exchange_info" / "um_futures.json"
    _write(complete, {"trade_type": "um_futures", "request_weight": {"limit": 2400}})
    out = tmp_path / "summaries"
    got = run_summary(stage="api_download", trade_type="spot", summary=str(out / "spot.json"),
                      reports=[], exchange_info=str(failed))  # fmt: skip
    assert got["exchange_info_error"] == "RestError: HTTP 503"
    assert (
        json.loads((out / "spot.json").read_text())["exchange_info_error"]
        == got["exchange_info_error"]
    )
    assert headline(got).endswith(
        ", exchangeInfo failed (default weight limits used): RestError: HTTP 503"
    )
    ok = run_summary(stage="api_download", trade_type="um_futures", summary=str(out / "um.json"),
                     reports=[], exchange_info=str(complete))  # fmt: skip
    assert "exchange_info_error" not in ok and "exchangeInfo" not in headline(ok)


def test_a_torn_listing_index_is_written_again_from_the_listings_copy_or_removed(tmp_path):
    import os

    from crypto_lakehouse.archive.listing import resume_record_path

    def write(path, data, when_ns):  # planning caches an index by its mtime: one each
        path.write_bytes(data)
        os.utime(path, ns=(when_ns, when_ns))

    index = tmp_path / "listing" / "spot" / "klines-1m.json"
    copy = resume_record_path(index.with_name("klines-1m"))
    copy.parent.mkdir(parents=True)
    complete = json.dumps({"symbols": {"BTCUSDT": {"digest": "d", "n_files": 3}}}).encode()
    write(index, complete, 1_000_000_000)
    write(copy, complete, 1_000_000_000)
    assert plan.repair_index(index) is None  # readable: left alone
    write(index, complete[:20], 2_000_000_000)
    done = plan.repair_index(index)
    assert done.startswith(f"listing index {index} was unreadable (JSONDecodeError")
    assert index.read_bytes() == complete and index.stat().st_mtime_ns == 1_000_000_000
    assert plan.listed_symbols(index) == ["BTCUSDT"]
    # a failed listing's copy is the previous index: not what this index said; removed
    failed = json.dumps({"symbols": {}, "failed_at_unix": 5.0}).encode()
    for k, saved in enumerate((failed, b"{", None)):
        write(index, bytes(len(complete)), 3_000_000_000 + k)
        if saved is None:
            copy.unlink()
        else:
            copy.write_bytes(saved)
        done = plan.repair_index(index)
        assert "has no usable copy: removed" in done and "--forcerun list_archive" in done
        assert not index.exists()
    assert plan.repair_index(index) is None  # missing: the checkpoint's business


def test_the_closing_lines_of_a_run_name_a_torn_summary_and_go_on(tmp_path, capsys):
    # Printed by onsuccess: a torn summary of a stage this run did not rerun raised a
    # JSONDecodeError traceback at the end of a successful run.
    from crypto_lakehouse.layout import run_summary_path
    from crypto_lakehouse.summary import summarize

    good = tmp_path / run_summary_path("run", "aws_parse", "spot")
    torn = tmp_path / run_summary_path("run", "gen_kline", "spot")
    for path in (good, torn):
        path.parent.mkdir(parents=True)
    good.write_text(json.dumps(summarize("aws_parse", "spot", [])))
    torn.write_text('{"stage": "gen_')
    plan.print_summaries(tmp_path / "run")
    out = capsys.readouterr().out
    assert f"{torn}: unreadable (JSONDecodeError" in out
    assert "aws_parse/spot" in out


def test_the_closing_lines_name_configured_symbols_the_archive_does_not_list(tmp_path, capsys):
    # A misspelt symbol (BTCUSDTX) gave a successful run whose closing lines were those of
    # a good one: only a WARNING in the listing job's log said the symbol was not listed.
    from crypto_lakehouse.layout import run_listing_index_path, run_summary_path
    from crypto_lakehouse.summary import summarize

    run = tmp_path / "run"
    summary = Path(run_summary_path(str(run), "aws_download", "spot"))
    summary.parent.mkdir(parents=True)
    summary.write_text(json.dumps(summarize("aws_download", "spot", [])))
    for trade_type, dataset, missing in (
        ("spot", "klines-1m", ["BTCUSDTX", "ETHUSDTX"]),
        ("um_futures", "klines-1m", []),
        # A symbol without funding files in the archive is normal (REST has its history).
        ("um_futures", "funding", ["BTCUSDT"]),
    ):
        index = Path(run_listing_index_path(str(run), trade_type, dataset))
        index.parent.mkdir(parents=True, exist_ok=True)
        kind = dataset.split("-")[0]
        index.write_text(json.dumps({"dataset": kind, "symbols": {}, "not_listed": missing}))
    plan.print_summaries(run)
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == (
        "  spot klines-1m: configured symbols not in the archive listing (config key "
        "symbols.spot): BTCUSDTX, ETHUSDTX"
    )
    assert not any("um_futures" in line for line in out)


def test_the_closing_lines_mark_the_summaries_of_stages_this_run_did_not_rerun(tmp_path, capsys):
    # A morning whose archive had not published yesterday's zips reruns REST and the later
    # stages, not the spot download: its closing lines printed the download figures of the
    # day before (files_downloaded=2) as this run's. The download's summary job reran all
    # the same (a um funding zip was new), so the summary's own time is of this run: what
    # tells is the time of the reports it sums.
    from crypto_lakehouse.layout import run_summary_path
    from crypto_lakehouse.summary import summarize

    run = tmp_path / "run"
    started = 1_706_749_200.5  # 2024-02-01 01:00:00.5 UTC
    yesterday = 1_706_662_920  # 2024-01-31 01:02 UTC
    report = tmp_path / "reports" / "aws_download" / "spot" / "klines-1m" / "BTCUSDT.json"
    report.parent.mkdir(parents=True)
    report.write_text("{}")
    os.utime(report, (yesterday, yesterday))
    download = summarize("aws_download", "spot", [str(report)])
    assert download["reports_written_unix"] == yesterday
    later = {**download, "reports_written_unix": started + 30}
    summaries = {
        ("aws_download", "spot"): {**download, "written_at_unix": int(started) + 40},
        ("api_download", "spot"): {**later, "stage": "api_download"},
        # A summary from before reports_written_unix existed: its own time tells.
        ("gen_kline", "spot"): {**summarize("gen_kline", "spot", []), "written_at_unix": yesterday},
    }
    for (stage, trade_type), summary in summaries.items():
        path = Path(run_summary_path(str(run), stage, trade_type))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(summary))
    plan.print_summaries(run, started_unix=started)
    lines = capsys.readouterr().out.splitlines()
    marked = " (not rerun: from an earlier run, 2024-01-31 01:02 UTC)"
    assert [line.endswith(marked) for line in lines[1:]] == [False, True, True], lines
    assert lines[2].startswith("  aws_download/spot:")
    # Without a start time (a caller outside a run) nothing is marked.
    plan.print_summaries(run)
    assert "earlier run" not in capsys.readouterr().out


def test_check_config_reports_every_problem_at_once():
    """Problems in different sections (resample, features, dates, cluster) come in one
    error, one line each, as check_user_config reports its own (docs/config.md)."""
    config = _config(
        resample={"targets": [{"trade_type": "spot", "interval": "1h", "offset_step": "1h"}]},
        features={"indicators": [{"name": "RSI", "timeperiod": 14}, {"name": "NOPE"}]},
        start_date="2024-02-01",
        end_date="2024-01-31",
        data_dir="/mnt/local",
        cluster={"launcher": "srun"},
    )
    with pytest.raises(ConfigError) as info:
        check_config(config)
    lines = str(info.value).splitlines()
    assert lines[0] == "invalid configuration:"
    assert [line[:2] for line in lines[1:]] == ["  "] * 4
    keys = ["'resample.targets[0]' (spot 1h at offset_step 1h)", "features.indicators[1]", "'start_date'",
            "'cluster.launcher'"]  # fmt: skip
    for line, key in zip(lines[1:], keys, strict=True):
        assert line.startswith(f"  config key {key}"), line
    # Every target that does not suit the base interval is named, by its index in the list.
    two = _config(
        resample={
            "targets": [
                {"trade_type": t, "interval": "1h", "offset_step": "1h"}
                for t in ("spot", "um_futures")
            ]
        }
    )
    with pytest.raises(
        ConfigError, match=r"(?s)targets\[0\]' \(spot .*\n  .*targets\[1\]' \(um_fut"
    ):
        check_config(two)


def test_every_resample_target_that_does_not_suit_the_base_interval_is_named_by_its_index():
    # Checked per trade type, only the first bad target of each was named, as "resample
    # target #0" of that trade type's targets: the third entry of the list read as #0, and
    # the next bad one of a trade type appeared only once the first was fixed.
    targets = [
        ("spot", "1h", "15m"),  # suits 3m: 1h and its 15m offsets are multiples of 3m
        ("spot", "1m", "0m"),  # shorter than the base
        ("spot", "5m", "0m"),  # not a multiple
        ("um_futures", "15m", "5m"),  # offset not a multiple of the base
        ("um_futures", "12h", "8h"),  # offset does not divide the target
        ("um_futures", "12h", "3h"),  # the same interval again
    ]
    config = _config(
        interval="3m",
        resample={
            "targets": [{"trade_type": t, "interval": i, "offset_step": o} for t, i, o in targets]
        },
    )
    with pytest.raises(ConfigError) as err:
        check_config(config)
    lines = str(err.value).splitlines()[1:]
    expected = [
        "targets[1]' (spot 1m at offset_step 0m): interval '1m' is shorter than the base "
        "interval '3m'",
        "targets[2]' (spot 5m at offset_step 0m): interval '5m' is not a multiple of the base "
        "interval '3m'",
        "targets[3]' (um_futures 15m at offset_step 5m): offset_step '5m' is not a multiple",
        "targets[4]' (um_futures 12h at offset_step 8h): offset_step '8h' does not divide",
        "targets[5]' (um_futures 12h at offset_step 3h): um_futures has a 12h target already "
        "(resample.targets[4])",
    ]
    assert len(lines) == len(expected), lines
    for line, text in zip(lines, expected, strict=True):
        assert line.startswith("  config key 'resample." + text), line


def test_after_a_failed_run_the_trade_types_that_finished_get_their_summaries(tmp_path):
    """onerror's summaries_after_failure: a missing summary of a trade type whose shard
    reports are all done is written; one with a failed symbol, or whose shard report is
    missing (its job failed as a whole, a ban), gets none; one up to date with its reports
    is left as it is. Before, the trade types that finished had no summary after the
    stage's one summary job failed (or never ran) for another."""
    from crypto_lakehouse.summary import summaries_after_failure

    def shard(trade_type, statuses, write=True):
        path = tmp_path / f"reports/gen_kline/{trade_type}/klines-1m/shards/0.json"
        symbols = {}
        for sym, status in statuses.items():
            rep = path.parent.parent / f"{sym}.json"
            _write(rep, {"symbol": sym})
            symbols[sym] = {"status": status, "report": str(rep), "error": "ValueError: x"}
        if write:
            _write(path, {"shard": 0, "symbols": symbols})
        return str(path)

    types = ("spot", "um_futures", "cm_futures", "kept")
    out = {t: tmp_path / f"summaries/gen_kline/{t}.json" for t in types}
    reports = {
        "spot": shard("spot", {"A": "ok", "B": "ok"}),
        "um_futures": shard("um_futures", {"C": "ok", "D": "failed"}),
        "cm_futures": shard("cm_futures", {"E": "ok"}, write=False),
        "kept": shard("kept", {"F": "ok"}),
    }
    _write(out["kept"], {"written": "by this run's job"})
    later = os.stat(reports["kept"]).st_mtime + 5
    os.utime(out["kept"], (later, later))
    summaries = [
        dict(stage="gen_kline", trade_type=t, summary=str(out[t]), reports=[reports[t]])
        for t in types
    ]
    line = summaries_after_failure(summaries)
    assert json.loads(out["spot"].read_text())["symbols"] == 2
    assert not out["um_futures"].exists() and not out["cm_futures"].exists()
    assert json.loads(out["kept"].read_text()) == {"written": "by this run's job"}
    assert line == (
        "crypto_lakehouse: summaries of the trade types that finished, written after the "
        "failure: gen_kline/spot (none for gen_kline/um_futures, gen_kline/cm_futures: see "
        "the failures above)"
    )
    assert summaries_after_failure(summaries) == ""  # spot's is up to date now


@pytest.mark.parametrize("days, text", [(1, "REST: 1 day to fetch"), (3, "REST: 3 days to fetch")])
def test_the_plan_counts_rest_days_in_words_a_reader_expects(days, text):
    from crypto_lakehouse import datasets
    from crypto_lakehouse.preview import format_plan

    dataset = dict(
        trade_type="spot", dataset=datasets.KLINES.name, listing="fresh", kept=1, filtered={},
        refused={}, not_listed=[], no_files=[], files_to_download=0, bytes_to_download=0,
        files_present=2, bytes_present=2_000, files_quarantined=0, rest_days=days,
        rest_weight=2 * days, exchange_info={"spot": "summary"}, rest_symbols=0,
        rates=dict(rest_weight_s=40.0, rest_source="the weight limit"), rest_seconds=0.1,
    )  # fmt: skip
    text_out = format_plan(
        dict(
            data_dir="/d",
            interval="1m",
            start_date=None,
            end_date="2024-01-02",
            lookback_days=None,
            datasets=[dataset],
            download_seconds=0,
            rest_seconds=0.1,
        )  # fmt: skip
    )
    assert f"  {text} (weight {2 * days})" in text_out.splitlines()
