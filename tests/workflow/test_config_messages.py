"""Config errors and notices as a user sees them from `snakemake -n` (dry runs, no network)."""

from __future__ import annotations

import sys

from tests.workflow.workflow_helpers import REPO, run_snakemake


def _snakemake_with_yaml(tmp_path, yaml_text: str, *args: str):
    cfg = tmp_path / "user.yaml"
    cfg.write_text(f"data_dir: {tmp_path / 'd'}\n{yaml_text}")
    # The target first: --configfile takes several values.
    return run_snakemake(tmp_path, *args, "-n", "--configfile", str(cfg), check=False)


def test_unquoted_end_date_runs_and_the_lookback_window_is_announced_first(tmp_path):
    # The shipped config has lookback_days: 30 and no start_date.
    assert "lookback_days: 30" in (REPO / "config" / "config.yaml").read_text()
    proc = _snakemake_with_yaml(tmp_path, "end_date: 2025-01-20\n")
    assert proc.returncode == 0, proc.stderr[-3000:]
    first_lines = proc.stderr.splitlines()[:5]
    assert (
        "klines from 2024-12-22 to 2025-01-20 (lookback_days: 30; set start_date or "
        "lookback_days: null for the whole history)"
    ) in first_lines


def test_date_on_the_command_line(tmp_path):
    proc = run_snakemake(tmp_path, "-n", "--config", "end_date=2025-01-20", check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "klines from 2024-12-22 to 2025-01-20" in proc.stderr


def test_explicit_start_date_prints_no_lookback_notice(tmp_path):
    proc = _snakemake_with_yaml(tmp_path, "start_date: 2025-01-01\nend_date: 2025-01-20\n")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "lookback_days" not in proc.stderr


def test_unknown_key_gives_a_short_message_without_the_schema(tmp_path):
    proc = _snakemake_with_yaml(tmp_path, "symbolz: {spot: all}\n")
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "unknown config key 'symbolz': did you mean 'symbols'?" in out
    assert "$schema" not in out and "Failed validating" not in out
    assert len(out.splitlines()) < 12, out


def test_a_key_given_twice_in_a_config_file_stops_the_run_naming_it(tmp_path):
    # Snakemake's YAML reading keeps the last value: the spot list [BTCUSDT] was dropped.
    proc = _snakemake_with_yaml(
        tmp_path, "symbols:\n  spot: [BTCUSDT]\n  um_futures: all\n  spot: [ETHUSDT]\n"
    )
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert (
        f"config file {tmp_path / 'user.yaml'}, line 5: config key 'symbols.spot' is given "
        "twice (first on line 3)"
    ) in out


def test_a_data_dir_or_run_dir_that_cannot_be_made_stops_the_run_naming_its_key(tmp_path):
    # A real run (no -n): it failed with a FileNotFoundError traceback from the features
    # verdict or the run lock, naming no config key (also for no permission, a read-only
    # file system).
    missing = "/proc/crypto_lakehouse_test"
    for key in ("data_dir", "run_dir"):
        proc = run_snakemake(
            tmp_path, "--cores", "1", "--config", f"{key}={missing}/x", check=False
        )
        assert proc.returncode != 0
        out = proc.stdout + proc.stderr
        assert (
            f"config key '{key}': {missing}/x cannot be used (No such file or directory: {missing}"
        ) in out, out[-3000:]
        assert "FileNotFoundError" not in out


def test_an_s3_data_dir_whose_store_does_not_answer_stops_the_run_naming_it(tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    storage = {"endpoint_url": f"http://127.0.0.1:{port}", "addressing_style": "path"}
    config = {"data_dir": "s3://bucket/data", "storage": storage}
    proc = run_snakemake(tmp_path, "--cores", "1", config=config, check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "config key 'data_dir': s3://bucket/data cannot be used: " in out, out[-3000:]
    assert "storage.endpoint_url" in out
    assert "StorageError" not in out


def test_agg_klines_intervals_that_build_nothing_are_announced(tmp_path):
    # agg_klines builds candles of the aggTrades of spot and um_futures when their datasets
    # list aggTrades (docs/config.md): without it the intervals were accepted without a
    # word and nothing was ever built.
    notice = (
        "agg_klines: intervals 1m build nothing: no trade type of trade_types that agg_klines "
        "builds (spot, um_futures) lists aggTrades in datasets"
    )
    proc = _snakemake_with_yaml(
        tmp_path, "agg_klines: {intervals: [1m]}\ndatasets: {cm_futures: [klines, aggTrades]}\n"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert notice in proc.stderr
    proc = _snakemake_with_yaml(
        tmp_path, "agg_klines: {intervals: [1m]}\ndatasets: {spot: [klines, aggTrades]}\n"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "agg_klines:" not in proc.stderr


def test_a_data_dir_with_a_trailing_slash_builds_no_doubled_slash(tmp_path):
    # Snakemake warned "File path …//lakehouse/… contains double '/'" for every path, and the
    # jobs' arguments differed from those of the same data dir without the slash.
    proc = run_snakemake(tmp_path, "-n", "--config", f"data_dir={tmp_path / 'd'}/", check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert f"{tmp_path / 'd'}/lakehouse/" in out
    assert "double '/'" not in out and "//lakehouse" not in out


def test_bad_interval_is_blamed_on_interval_not_on_resample(tmp_path):
    proc = _snakemake_with_yaml(tmp_path, "interval: 7m\n")
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "config key 'interval': '7m' is not a Binance kline interval" in out
    assert "resample.targets" not in out


def test_resample_target_without_resample_targets_fails_by_name(tmp_path):
    proc = _snakemake_with_yaml(tmp_path, "resample: {targets: []}\n", "resample")
    assert proc.returncode != 0
    assert "nothing to resample: config key 'resample.targets'" in proc.stdout + proc.stderr


def test_all_without_resample_targets_says_the_stage_is_skipped(tmp_path):
    proc = _snakemake_with_yaml(
        tmp_path,
        "resample:\n  targets: [{trade_type: spot, interval: 1h, offset_step: 5m}]\n",
        "all",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (
        "resample: no resample.targets entry for um_futures, cm_futures; "
        "the resample stage skips it"
    ) in proc.stderr
    # Only spot gets a resample summary job.
    assert "summaries/resample/spot.json" in proc.stdout
    assert "summaries/resample/um_futures.json" not in proc.stdout


_UM_WITHOUT_TARGETS = (
    "trade_types: [spot, um_futures]\n"
    "symbols: {spot: [BTCUSDT], um_futures: [BTCUSDT]}\n"
    "resample:\n  targets: [{trade_type: spot, interval: 1h, offset_step: 5m}]\n"
)


def _resampled_files(tmp_path, pipeline_wrote: bool):
    from crypto_lakehouse.resample import owned

    left = tmp_path / "d" / "results_data" / "um_futures" / "resampled_klines" / "1h" / "5m"
    left.mkdir(parents=True)
    (left / "BTCUSDT.pqt").write_bytes(b"x")
    (left / "XRPUSDT.pqt").write_bytes(b"x")  # a symbol no longer configured: not counted
    legacy = left.parent / "10m"  # a legacy data dir's own file: not the pipeline's to remove
    legacy.mkdir()
    (legacy / "BTCUSDT.pqt").write_bytes(b"x")
    if pipeline_wrote:  # the symbol's record of the resampled files the pipeline wrote
        files = ["results_data/um_futures/resampled_klines/1h/5m/BTCUSDT.pqt"]
        owned.write(tmp_path / "d", "um_futures", "BTCUSDT", files)


def test_all_runs_the_resample_stage_of_a_trade_type_whose_targets_were_removed(tmp_path):
    # um_futures had targets; its resampled files stay until its resample stage removes them.
    _resampled_files(tmp_path, pipeline_wrote=True)
    proc = _snakemake_with_yaml(tmp_path, _UM_WITHOUT_TARGETS, "all")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (
        "resample: no resample.targets entry for um_futures; its resample stage removes the "
        "1 resampled file(s) of its symbols left by earlier targets "
        "(e.g. results_data/um_futures/resampled_klines/1h/5m/BTCUSDT.pqt), then skips it"
    ) in proc.stderr
    assert "summaries/resample/um_futures.json" in proc.stdout


def test_resampled_files_the_pipeline_did_not_write_are_no_leftovers(tmp_path):
    # A legacy data dir used in place: its resampled files stay, and the stage is skipped.
    _resampled_files(tmp_path, pipeline_wrote=False)
    proc = _snakemake_with_yaml(tmp_path, _UM_WITHOUT_TARGETS, "all")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (
        "resample: no resample.targets entry for um_futures; the resample stage skips it"
    ) in proc.stderr
    assert "removes the" not in proc.stderr
    assert "summaries/resample/um_futures.json" not in proc.stdout


def test_every_config_problem_is_reported_in_one_go(tmp_path):
    proc = _snakemake_with_yaml(tmp_path, "strat_date: x\nshards: -1\ninterval: 2m\n")
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "unknown config key 'strat_date': did you mean 'start_date'?" in out
    assert "config key 'interval': '2m' is not a Binance kline interval" in out
    assert "config key 'shards': -1 fits none of the allowed forms" in out
    assert "Additional properties" not in out


def test_an_empty_symbol_list_stops_the_run_naming_the_key(tmp_path):
    proc = _snakemake_with_yaml(tmp_path, "symbols: {spot: [], um_futures: []}\n")
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "config key 'symbols.spot': empty list" in out
    assert "config key 'symbols.um_futures': empty list" in out


def test_an_endpoint_without_scheme_stops_the_dry_run_naming_the_key(tmp_path):
    proc = _snakemake_with_yaml(tmp_path, "endpoints: {archive: '127.0.0.1:9'}\n")
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "config key 'endpoints.archive': '127.0.0.1:9' is not an http:// or https:// URL" in out


def test_the_jobs_get_an_endpoint_without_its_trailing_slash(tmp_path):
    import json
    import shlex

    proc = _snakemake_with_yaml(
        tmp_path, "endpoints: {listing: 'http://127.0.0.1:9/listing/'}\n", "-p", "list_archive"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    [command] = [line for line in proc.stdout.splitlines() if "list_archive.py" in line]
    listings = json.loads(shlex.split(command)[4])["listings"]
    assert listings and {x["listing_url"] for x in listings} == {"http://127.0.0.1:9/listing"}


def _utc_today():
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc).date()


def test_a_start_date_after_today_stops_the_run_naming_it(tmp_path):
    import datetime as dt

    start, end = _utc_today() + dt.timedelta(days=200), _utc_today() + dt.timedelta(days=202)
    proc = _snakemake_with_yaml(tmp_path, f"start_date: '{start}'\nend_date: '{end}'\n")
    assert proc.returncode != 0
    assert f"config key 'start_date': {start} is after today" in proc.stdout + proc.stderr


def test_an_end_date_after_today_is_capped_and_the_run_says_so(tmp_path):
    import datetime as dt

    today = _utc_today()
    start, end = today - dt.timedelta(days=3), today + dt.timedelta(days=30)
    proc = _snakemake_with_yaml(tmp_path, f"start_date: '{start}'\nend_date: '{end}'\n")
    assert proc.returncode == 0, proc.stderr[-3000:]
    first_lines = proc.stderr.splitlines()[:5]
    assert any(f"end_date {end} is after today ({today}, UTC)" in line for line in first_lines)


def test_disabled_features_are_checked_only_when_their_target_is_asked_for(tmp_path):
    """features.enabled: false: `all` plans without the features check (TA-Lib), even with a
    block it would refuse; `snakemake features` still refuses that block by name."""
    block = (
        "features:\n  enabled: false\n"
        "  indicators: [{name: RSI, timeperiod: 14}, {name: RSI, timeperod: 3}]\n"
    )
    proc = _snakemake_with_yaml(tmp_path, block, "all")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "features_shard" not in proc.stdout + proc.stderr
    proc = _snakemake_with_yaml(tmp_path, block, "features")
    assert proc.returncode == 1
    assert (
        "invalid configuration:\n  config key features.indicators[1]: RSI has no parameter "
        "'timeperod'"
    ) in proc.stderr
    # Before 2026-12-07: an InputFunctionException, the message as a WorkflowError, then
    # "Wildcards:", "Traceback:" and `File ".../common.smk"` lines.
    out = proc.stdout + proc.stderr
    assert "InputFunctionException" not in out and "Traceback" not in out
    assert 'File "' not in out and "WorkflowError" not in out


def test_a_dry_run_names_a_torn_listing_index_in_one_line(tmp_path):
    # A dry run mends nothing: it names the index and stops. Before 2026-12-07 that came as
    # an InputFunctionException with Wildcards, Traceback and seven `File ...` lines.
    index = tmp_path / "d" / "lakehouse" / "listing" / "spot" / "klines-1m.json"
    index.parent.mkdir(parents=True)
    index.write_text('{"symbols": {"BTC')
    proc = _snakemake_with_yaml(tmp_path, "trade_types: [spot]\nsymbols: {spot: [BTCUSDT]}\n")
    assert proc.returncode == 1
    assert f"listing index {index} is unreadable (JSONDecodeError: " in proc.stderr
    assert proc.stderr.rstrip().endswith("a real run mends it"), proc.stderr[-2000:]
    out = proc.stdout + proc.stderr
    assert "InputFunctionException" not in out and "Traceback" not in out
    assert 'File "' not in out and "WorkflowError" not in out


def test_features_disabled_plans_the_removal_of_the_feature_files_left(tmp_path):
    # Feature files built while features were enabled: with enabled: false no job updates
    # them, and load_features / the views would serve them as current.
    results = tmp_path / "d" / "results_data" / "um_futures"
    for folder in ("features/1m", "resampled_features/1h/5m"):
        (results / folder).mkdir(parents=True)
        (results / folder / "BTCUSDT.pqt").write_bytes(b"x")
    (results / "features/1m/XRPUSDT.pqt").write_bytes(b"x")  # not configured: not counted
    proc = _snakemake_with_yaml(
        tmp_path,
        "trade_types: [um_futures]\nsymbols: {um_futures: [BTCUSDT]}\nfeatures: {enabled: false}\n",
        "all",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (
        "features: features.enabled is false; target all removes the 2 feature file(s) of "
        "um_futures's symbols that earlier runs built (e.g. "
        "results_data/um_futures/features/1m/BTCUSDT.pqt), so that no loader serves them; "
        "another target leaves them"
    ) in proc.stderr
    assert "leftovers/features/um_futures.removed.json" in proc.stdout
    assert "rule features_shard" not in proc.stdout


def test_features_disabled_target_features_is_not_told_that_it_removes_them(tmp_path):
    # `snakemake features` (`crypto-lakehouse workflow features`) plans no remove_leftovers
    # job; the notice said "this run removes the N feature file(s)" under it too.
    folder = tmp_path / "d" / "results_data" / "um_futures" / "features" / "1m"
    folder.mkdir(parents=True)
    (folder / "BTCUSDT.pqt").write_bytes(b"x")
    proc = _snakemake_with_yaml(
        tmp_path,
        "trade_types: [um_futures]\nsymbols: {um_futures: [BTCUSDT]}\nfeatures: {enabled: false}\n",
        "features",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rule remove_leftovers" not in proc.stdout
    assert "this run removes" not in proc.stderr
    assert "features.enabled is false; target all removes the 1 feature file(s)" in proc.stderr


def test_another_interval_plans_the_removal_of_what_the_old_one_derived(tmp_path):
    # BTCUSDT was built at 1m by the pipeline (its gen_kline state record); the config
    # now says 5m. ETHUSDT's 1m files have no record (a legacy data dir's): not ours.
    state = tmp_path / "d" / "lakehouse" / "state" / "gen_kline" / "spot" / "klines-1m"
    state.mkdir(parents=True)
    (state / "BTCUSDT.json").write_text("{}")
    # The run directory (here the default, {data_dir}/lakehouse) built 1m: its gen_kline
    # reports say so, a local look before the data dir's.
    reports = tmp_path / "d" / "lakehouse" / "reports" / "gen_kline" / "spot" / "klines-1m"
    reports.mkdir(parents=True)
    (reports / "BTCUSDT.json").write_text("{}")
    proc = _snakemake_with_yaml(
        tmp_path,
        "interval: 5m\ntrade_types: [spot]\nsymbols: {spot: [BTCUSDT, ETHUSDT]}\n",
        "all",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (
        "interval: the base interval is 5m; target all removes what earlier runs derived from "
        "the 1m candles of 1 spot symbol interval(s) (e.g. 1m/BTCUSDT: "
        "results_data/spot/klines/ and features/); their archive, parsed and REST data stay"
    ) in proc.stderr
    assert "leftovers/interval/spot.removed.json" in proc.stdout


def test_the_resample_leftovers_scan_runs_once_until_targets_come_back(tmp_path):
    # No um_futures targets and no resampled file: the first parse scans and records that
    # it found none; the next parses trust the record (no scan, on S3 no LIST), as long as
    # no target of um_futures could have written one.
    yaml_text = (
        "trade_types: [spot, um_futures]\n"
        "symbols: {spot: [BTCUSDT], um_futures: [BTCUSDT]}\n"
        "resample:\n  targets: [{trade_type: spot, interval: 1h, offset_step: 5m}]\n"
    )
    proc = _snakemake_with_yaml(tmp_path, yaml_text, "all")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "its resample stage removes" not in proc.stderr
    record = tmp_path / "d" / "lakehouse" / "leftovers" / "resample" / "um_futures.json"
    assert record.exists()
    # A file no run of this config could write appears (as a run with a um_futures target
    # writes it, with the record of the symbol's files): the record is trusted, no scan.
    _resampled_files(tmp_path, pipeline_wrote=True)
    proc = _snakemake_with_yaml(tmp_path, yaml_text, "all")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "its resample stage removes" not in proc.stderr
    # um_futures gets a target (its runs write resampled files): the record goes ...
    proc = _snakemake_with_yaml(
        tmp_path,
        yaml_text.replace("offset_step: 5m}]", "offset_step: 5m}, "
                          "{trade_type: um_futures, interval: 1h, offset_step: 5m}]"),
        "all",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not record.exists()
    # ... and once the target is removed again, its files are found and removed.
    proc = _snakemake_with_yaml(tmp_path, yaml_text, "all")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "um_futures; its resample stage removes the 1 resampled file(s)" in proc.stderr
    assert "summaries/resample/um_futures.json" in proc.stdout


def test_sdm_conda_is_refused_naming_what_to_do_instead(tmp_path):
    """Jobs run their scripts with the Python that runs Snakemake (an absolute path in each
    shell command), so a conda environment per job would be built and never used; built from
    Snakemake's copy in .snakemake/conda/, its `-e ../` names no project either. Before
    2026-12-06 `--sdm conda` went on to `conda info` (without conda: "Is conda installed and
    accessible?") or to building that environment."""
    proc = _snakemake_with_yaml(tmp_path, "", "--sdm", "conda")
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "--sdm conda (--use-conda) is not supported" in out, out[-3000:]
    assert "conda env create -n crypto_lakehouse -f envs/pipeline.yaml" in out
    assert "conda info" not in out
    # A plain dry run: every job's command starts with that interpreter's absolute path.
    proc = _snakemake_with_yaml(tmp_path, "", "--printshellcmds", "--forceall")
    assert proc.returncode == 0, proc.stderr[-3000:]
    python = f"{sys.prefix}/bin/python3 "
    commands = [
        line.strip().removeprefix("Shell command: ")
        for line in proc.stdout.splitlines()
        if "/scripts/" in line
    ]
    assert commands and all(c.startswith(python) for c in commands), commands[:3]
