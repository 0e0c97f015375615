"""`snakemake all` on the legacy-v1-real fixture: our outputs equal what the legacy tool
produced from the same real archive files and REST answers, within its tolerances, except
where the fixture README lists a legacy defect that we fix (cm VWAP, Q3)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.e2e.e2e_helpers import snakemake
from tests.e2e.legacy_real_scenario import (
    LEGACY,
    PRICE_TOL,
    SYMBOLS,
    compare_frames,
    legacy_config,
    legacy_mirror,
    legacy_rest,
    result_files,
)

MAIN_PROCESS_MODULES = Path(__file__).with_name("main_process_modules.py")
CM_CONTRACT_SIZE = 100.0  # truth/exchange_info/cm.json, BTCUSD_PERP contractSize


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    from crypto_lakehouse_emulator import Emulator

    tmp = tmp_path_factory.mktemp("legacy_real")
    legacy_mirror(tmp / "mirror")
    with Emulator(mirror_dir=tmp / "mirror", rest=legacy_rest()) as emu:
        config = legacy_config(emu.base_url, tmp / "data")
        first = snakemake(tmp, config, "all")
        emu.reset_counts()
        # The second run records the modules its main process imported.
        launcher = [sys.executable, str(MAIN_PROCESS_MODULES), str(tmp / "modules.json")]
        second = snakemake(tmp, config, "all", launcher=launcher)
        counts = dict(emu.counts)
    second.main_process_modules = json.loads((tmp / "modules.json").read_text())
    return tmp / "data", first, second, counts


def is_feature_file(rel: str) -> bool:
    """results_data/{T}/features/... and resampled_features/...: new, legacy had none."""
    return rel.split("/")[1] in ("features", "resampled_features")


def test_same_files_as_legacy(pipeline_run):
    data, *_ = pipeline_run
    ours = {f for f in result_files(data / "results_data") if not is_feature_file(f)}
    assert ours == result_files(LEGACY / "results_data")
    assert result_files(data / "parsed_data") >= result_files(LEGACY / "parsed_data")


def test_parsed_data_matches_legacy(pipeline_run):
    data, *_ = pipeline_run
    for rel in sorted(result_files(LEGACY / "parsed_data")):
        compare_frames(data / "parsed_data" / rel, LEGACY / "parsed_data" / rel)


def test_results_match_legacy_except_fixed_cm_vwap(pipeline_run):
    data, *_ = pipeline_run
    for rel in sorted(result_files(LEGACY / "results_data")):
        skip = ("avg_price_1m",) if rel.startswith("cm_futures/") else ()
        compare_frames(data / "results_data" / rel, LEGACY / "results_data" / rel, skip)


def test_cm_vwap_is_usd_per_coin_from_the_contract_size(pipeline_run):
    data, *_ = pipeline_run
    t = pq.read_table(data / "results_data/cm_futures/klines/1m/BTCUSD_PERP.pqt").to_pandas()
    traded = t["volume"] > 0
    expected = (t["volume"] * CM_CONTRACT_SIZE / t["quote_volume"]).where(traded, t["open"])
    expected = expected.clip(t["low"], t["high"])
    np.testing.assert_allclose(t["avg_price_1m"], expected, rtol=0, atol=1e-6)
    legacy = pq.read_table(LEGACY / "results_data/cm_futures/klines/1m/BTCUSD_PERP.pqt")
    differs = np.abs(t["avg_price_1m"].to_numpy() - legacy.column("avg_price_1m").to_numpy())
    assert (differs > 1e-4).sum() == 1378  # fixture README §5.1: 1378 of 1440 rows differ


def test_every_candle_file_has_its_features_file(pipeline_run):
    data, *_ = pipeline_run
    results = data / "results_data"
    candles = sorted(f for f in result_files(results) if not is_feature_file(f))
    features = sorted(f for f in result_files(results) if is_feature_file(f))
    assert any("/resampled_klines/" in f for f in candles)
    # results_data/{T}/klines/... -> {T}/features/..., resampled_klines -> resampled_features
    expected = [f.replace("klines/", "features/", 1) for f in candles]
    assert features == sorted(expected)
    for candle, feature in zip(candles, expected, strict=True):
        times = pq.read_table(results / candle, columns=["candle_begin_time"])
        feats = pq.read_table(results / feature)
        assert feats.column_names[0] == "candle_begin_time"
        assert feats.num_rows == times.num_rows, feature
        assert feats.column("candle_begin_time").equals(times.column("candle_begin_time"))
        assert {"rsi_14", "macd_hist_12_26_9", "ema_200", "kyle_lambda_60"} <= set(
            feats.column_names
        )
    summary = json.loads((data / "lakehouse/summaries/features/cm_futures.json").read_text())
    assert summary["symbols"] == 1 and not summary["problems"]


def test_second_run_downloads_nothing(pipeline_run):
    _, _, second, counts = pipeline_run
    assert counts.get("get", 0) == 0 and counts.get("rest", 0) == 0
    assert "Nothing to be done" in second.stdout + second.stderr


def test_a_config_change_reruns_the_jobs_whose_arguments_it_changes(pipeline_run):
    """Snakemake leaves params functions that take the job's output (the job JSON) out of its
    rerun trigger; the `args` digest param is what makes a changed argument rerun a job."""
    import yaml

    from tests.workflow.workflow_helpers import REPO, job_counts, run_snakemake

    data = pipeline_run[0]
    workdir = data.parent
    config_file = workdir / "test-config.yaml"
    config = json.loads(config_file.read_text())  # the config of the fixture's runs

    def dry_run(changed: dict) -> str:
        proc = run_snakemake(workdir, "-n", "all", config={**config, **changed})
        return proc.stdout + proc.stderr

    try:
        assert "Nothing to be done" in dry_run({})
        # how jobs reach the hosts is no reason to rerun them
        connection = {"download": {"concurrency": 7, "timeout_s": 11}, "rest": {"max_retries": 2}}
        assert "Nothing to be done" in dry_run(connection)
        # nor are the storage settings (they reach the job JSON, not the args digest)
        storage = {"storage": {"fsync": not config.get("storage", {}).get("fsync", True),
                               "symbols_at_once": 2}}  # fmt: skip
        assert "Nothing to be done" in dry_run(storage)
        schema = yaml.safe_load((REPO / "config/config.schema.yaml").read_text())
        targets = schema["properties"]["resample"]["properties"]["targets"]["default"]
        extra = {"trade_type": "spot", "interval": "4h", "offset_step": "0m"}
        out = dry_run({"resample": {"targets": [*targets, extra]}})
        counts = job_counts(out)
        # spot's resample shard, and the features of its new files; nothing upstream
        assert counts.get("resample_shard") == 1 and counts.get("features_shard") == 1, out
        assert "gen_kline_shard" not in counts, out
        # The trigger: the args digest, as a param (this directory's records) and as the
        # rerun stamp of the shard (any directory, rules/common.smk rerun_stamp).
        assert "Params have changed" in out or "stamps/resample_shard/" in out, out
        spot = config["symbols"]["spot"]
        out = dry_run({"symbols": {**config["symbols"], "spot": [*spot, "ETHUSDT"]}})
        assert job_counts(out).get("list_archive") == 1, out  # the new symbol is listed
    finally:
        config_file.write_text(json.dumps(config))


def test_main_process_of_a_run_with_nothing_to_do_does_not_import_pandas(pipeline_run):
    # Snakemake's params records would import it (~0.35 s per start; smk.record_params_
    # without_pandas); jobs read Parquet, the main process only plans.
    _, _, second, _ = pipeline_run
    modules = second.main_process_modules
    assert "snakemake" in modules["modules"]
    assert "pandas" not in modules["modules"], modules["imported_by"]["pandas"]


def test_run_summaries_are_written_and_announced(pipeline_run):
    data, first, *_ = pipeline_run
    stages = ("aws_download", "aws_parse", "api_download", "gen_kline", "resample", "features")
    for stage in stages:
        for trade_type in ("spot", "um_futures", "cm_futures"):
            summary = json.loads(
                (data / f"lakehouse/summaries/{stage}/{trade_type}.json").read_text()
            )
            assert summary["symbols"] >= 1, (stage, trade_type)
    parse = json.loads((data / "lakehouse/summaries/aws_parse/spot.json").read_text())
    # docs/quality.md: the symbol score is the mean day score over the record, gaps included:
    # 5 complete archive days (score 1) among the 1828 days 2020-01-01 … 2025-01-01.
    assert parse["quality_score_min"] == pytest.approx(5 / 1828, abs=1e-6)
    api = json.loads((data / "lakehouse/summaries/api_download/um_futures.json").read_text())
    # um BTCUSDT: last candle 2022-09-05 23:59, end date 2025-01-01 → 849 days behind
    assert api["freshness_lag_minutes_max"] == 849 * 1440
    out = first.stdout + first.stderr
    assert "crypto_lakehouse run summaries in" in out and "aws_download/spot: 1 symbols" in out


# ------------------------------------------------------------ loading the run's files
def legacy_segments(folder, symbol) -> list:
    """The legacy tool's segment files of one symbol, oldest first (legacy §8.4 names)."""
    older = sorted(folder.glob(f"SP*_{symbol}.pqt"), key=lambda p: int(p.name[2:].split("_")[0]))
    return [*older, folder / f"{symbol}.pqt"]


@pytest.mark.parametrize("trade_type", ["spot", "um_futures", "cm_futures"])
def test_load_klines_matches_the_legacy_segments(pipeline_run, trade_type):
    import crypto_lakehouse

    data, *_ = pipeline_run
    symbol = SYMBOLS[trade_type]
    files = legacy_segments(LEGACY / "results_data" / trade_type / "klines" / "1m", symbol)
    df = crypto_lakehouse.load_klines(data, trade_type, symbol)
    legacy = [pq.read_table(f).to_pandas() for f in files]
    assert df["segment"].tolist() == [i for i, t in enumerate(legacy) for _ in range(len(t))]
    times = np.concatenate([t["candle_begin_time"].to_numpy() for t in legacy])
    np.testing.assert_array_equal(df["candle_begin_time"].to_numpy(), times)
    closes = np.concatenate([t["close"].to_numpy() for t in legacy])
    np.testing.assert_allclose(df["close"].to_numpy(), closes, rtol=0, atol=PRICE_TOL)

    # A time range: the 60 minutes from the 11th candle of the latest segment on.
    start = legacy[-1]["candle_begin_time"].iloc[10]
    part = crypto_lakehouse.load_klines(
        data, trade_type, symbol, start=start, end=start + np.timedelta64(60, "m")
    )
    expected = legacy[-1]["candle_begin_time"].iloc[10:70].to_numpy()
    np.testing.assert_array_equal(part["candle_begin_time"].to_numpy(), expected)
    assert set(part["segment"]) == {len(legacy) - 1}


def test_load_resampled_klines_matches_legacy(pipeline_run):
    import crypto_lakehouse

    data, *_ = pipeline_run
    folder = LEGACY / "results_data" / "spot" / "resampled_klines" / "1h" / "5m"
    legacy = [pq.read_table(f).to_pandas() for f in legacy_segments(folder, "BTCUSDT")]
    df = crypto_lakehouse.load_klines(data, "spot", "BTCUSDT", resample="1h", offset="5m")
    times = np.concatenate([t["candle_begin_time"].to_numpy() for t in legacy])
    np.testing.assert_array_equal(df["candle_begin_time"].to_numpy(), times)
    assert df["segment"].max() == len(legacy) - 1
    pl = pytest.importorskip("polars")
    frame = crypto_lakehouse.load_klines(
        data, "spot", "BTCUSDT", resample="1h", offset="5m", engine="polars"
    )
    assert isinstance(frame, pl.DataFrame) and frame.height == len(times)


def test_duckdb_views_over_the_run(pipeline_run):
    import crypto_lakehouse

    data, *_ = pipeline_run
    con = crypto_lakehouse.duckdb_connect(data)
    got = dict(
        ((tt, sym, seg), n)
        for tt, sym, seg, n in con.execute(
            "SELECT trade_type, symbol, segment, count(*) FROM klines GROUP BY ALL"
        ).fetchall()
    )
    expected = {}
    for trade_type, symbol in SYMBOLS.items():
        folder = LEGACY / "results_data" / trade_type / "klines" / "1m"
        for i, f in enumerate(legacy_segments(folder, symbol)):
            expected[(trade_type, symbol, i)] = pq.read_metadata(f).num_rows
    assert got == expected
    offsets = con.execute(
        "SELECT DISTINCT \"offset\" FROM resampled_klines WHERE trade_type = 'spot' "
        "AND interval = '1h'"
    ).fetchall()
    assert sorted(int(o[:-1]) for (o,) in offsets) == list(range(0, 60, 5))
    for view, name in (("quality", "quality"), ("provenance", "provenance")):
        rows = dict(con.execute(f"SELECT trade_type, count(*) FROM {view} GROUP BY ALL").fetchall())
        for trade_type, symbol in SYMBOLS.items():
            path = data / "lakehouse" / name / trade_type / "1m" / f"{symbol}.pqt"
            assert rows[trade_type] == pq.read_metadata(path).num_rows
