"""Leftovers of a configuration change (crypto_lakehouse.leftovers): the planning check and
the removal job, on real files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crypto_lakehouse import layout, leftovers


def _touch(path: Path, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_check_scans_until_a_scan_finds_none_then_trusts_its_record(tmp_path):
    run_dir = str(tmp_path / "run")
    calls = []

    def scan(result):
        def do():
            calls.append(1)
            return result

        return do

    key = leftovers.key("/d", "1m", ["BTCUSDT"])
    assert leftovers.checked(run_dir, "resample", "spot", key, scan(["a"])) == ["a"]
    assert leftovers.checked(run_dir, "resample", "spot", key, scan([])) == []
    assert leftovers.checked(run_dir, "resample", "spot", key, scan(["never"])) == []
    assert len(calls) == 2
    # Another key (interval, symbols) scans, and drops the record of the old key: a run
    # with the new key may write what the old key's check must see.
    other = leftovers.key("/d", "5m", ["BTCUSDT"])
    assert leftovers.checked(run_dir, "resample", "spot", other, scan(["b"])) == ["b"]
    assert leftovers.checked(run_dir, "resample", "spot", key, scan(["c"])) == ["c"]
    # forget: the next check scans.
    assert leftovers.checked(run_dir, "resample", "spot", key, scan([])) == []
    leftovers.forget(run_dir, "resample", "spot")
    assert leftovers.checked(run_dir, "resample", "spot", key, scan(["d"])) == ["d"]
    # Without remember (a job's own Snakemake process) nothing is written.
    leftovers.forget(run_dir, "resample", "spot")
    leftovers.checked(run_dir, "resample", "spot", key, scan([]), remember=False)
    assert not Path(layout.leftovers_record_path(run_dir, "resample", "spot")).exists()


def test_key_of_all_follows_the_listing_index(tmp_path):
    index = _touch(tmp_path / "index.json", '{"symbols": {}}')
    first = leftovers.key("/d", "1m", "all", str(index))
    index.write_text('{"symbols": {"BTCUSDT": {}}}')
    assert leftovers.key("/d", "1m", "all", str(index)) != first
    assert leftovers.key("/d", "1m", ["A", "B"]) == leftovers.key("/d", "1m", ["B", "A"])


def test_feature_files_of_the_configured_symbols(tmp_path):
    root = tmp_path / "results_data" / "um_futures"
    _touch(root / "features/1m/SP0_BTCUSDT.pqt")
    _touch(root / "features/5m/BTCUSDT.pqt")
    _touch(root / "resampled_features/1h/5m/BTCUSDT.pqt")
    _touch(root / "features/1m/XBTCUSDT.pqt")
    assert leftovers.feature_files(tmp_path, "um_futures", ["BTCUSDT"]) == [
        "features/1m/SP0_BTCUSDT.pqt",
        "features/5m/BTCUSDT.pqt",
        "resampled_features/1h/5m/BTCUSDT.pqt",
    ]
    assert len(leftovers.feature_files(tmp_path, "um_futures", "all")) == 4
    assert leftovers.feature_files(tmp_path, "spot", "all") == []


def test_removal_of_features_leaves_everything_else(tmp_path):
    run_dir = tmp_path / "run"
    results = tmp_path / "results_data" / "spot"
    gone = [
        _touch(results / "features/1m/SP0_BTCUSDT.pqt"),
        _touch(results / "features/1m/BTCUSDT.pqt"),
        _touch(results / "resampled_features/1h/5m/BTCUSDT.pqt"),
        _touch(layout.state_path(tmp_path, "features", "spot", "klines-1m", "BTCUSDT")),
    ]
    # Snakemake's outputs of the features stage: with them it took the shards for done.
    run_files = [
        _touch(Path(layout.shard_report_path(str(run_dir), "features", "spot", "klines-1m", "0"))),
        _touch(Path(layout.run_summary_path(str(run_dir), "features", "spot"))),
    ]
    other = _touch(Path(layout.run_summary_path(str(run_dir), "features", "um_futures")))
    kept = [
        _touch(results / "features/1m/ETHUSDT.pqt"),  # not among the symbols
        _touch(results / "features/1m/XBTCUSDT.pqt"),
        _touch(results / "klines/1m/BTCUSDT.pqt"),
        _touch(results / "resampled_klines/1h/5m/BTCUSDT.pqt"),
        _touch(layout.state_path(tmp_path, "gen_kline", "spot", "klines-1m", "BTCUSDT")),
    ]
    report = tmp_path / "run" / "removed.json"
    leftovers.remove_leftovers(
        kind="features", trade_type="spot", data_dir=str(tmp_path), found=["BTCUSDT"],
        run_dir=str(run_dir), report=str(report),
    )  # fmt: skip
    assert not any(p.exists() for p in gone)
    assert all(p.exists() for p in kept)
    assert not any(p.exists() for p in run_files) and other.exists()
    assert json.loads(report.read_text())["removed"]["BTCUSDT"] == [
        "results_data/spot/features/1m/BTCUSDT.pqt",
        "results_data/spot/features/1m/SP0_BTCUSDT.pqt",
        "results_data/spot/resampled_features/1h/5m/BTCUSDT.pqt",
    ]


def test_removal_of_another_intervals_derived_files_keeps_the_sources(tmp_path):
    run_dir = tmp_path / "run"
    results = tmp_path / "results_data" / "spot"
    state = [
        layout.state_path(tmp_path, stage, "spot", "klines-1m", "BTCUSDT")
        for stage in leftovers.DERIVED_STATE_STAGES
    ]
    gone = [
        _touch(results / "klines/1m/SP0_BTCUSDT.pqt"),
        _touch(results / "klines/1m/BTCUSDT.pqt"),
        _touch(results / "features/1m/BTCUSDT.pqt"),
        *(_touch(p) for p in state),
    ]
    shard_reports = [
        _touch(Path(layout.shard_report_path(str(run_dir), stage, "spot", f"klines-{i}", "0")))
        for stage, i in (("gen_kline", "1m"), ("features", "1m"), ("gen_kline", "5m"))
    ]
    kept = [
        # the sources of every interval, and their records
        _touch(tmp_path / "parsed_data/spot/klines/BTCUSDT/1m/2024-01.pqt"),
        _touch(tmp_path / "api_data/spot/klines/BTCUSDT/1m/20240105.pqt"),
        _touch(layout.quality_path(tmp_path, "spot", "1m", "BTCUSDT")),
        _touch(layout.provenance_path(tmp_path, "spot", "1m", "BTCUSDT")),
        _touch(layout.state_path(tmp_path, "aws_parse", "spot", "klines-1m", "BTCUSDT")),
        # the current interval's files, and another symbol's
        _touch(results / "klines/5m/BTCUSDT.pqt"),
        _touch(layout.state_path(tmp_path, "gen_kline", "spot", "klines-5m", "BTCUSDT")),
        _touch(results / "klines/1m/ETHUSDT.pqt"),
        _touch(results / "resampled_klines/1h/5m/BTCUSDT.pqt"),
    ]
    report = run_dir / "removed.json"
    leftovers.remove_leftovers(
        kind="interval", trade_type="spot", data_dir=str(tmp_path), found=["1m/BTCUSDT"],
        run_dir=str(run_dir), report=str(report),
    )  # fmt: skip
    assert [p for p in gone if p.exists()] == []
    assert all(p.exists() for p in kept)
    assert [p.exists() for p in shard_reports] == [False, False, True]
    assert json.loads(report.read_text())["removed"]["1m/BTCUSDT"] == [
        "results_data/spot/features/1m/BTCUSDT.pqt",
        "results_data/spot/klines/1m/BTCUSDT.pqt",
        "results_data/spot/klines/1m/SP0_BTCUSDT.pqt",
    ]


def test_other_interval_symbols_are_those_the_pipeline_built(tmp_path):
    for tag, symbol in (
        ("klines-1m", "BTCUSDT"),
        ("klines-1m", "ETHUSDT"),
        ("klines-5m", "BTCUSDT"),
    ):
        _touch(layout.state_path(tmp_path, "gen_kline", "spot", tag, symbol))
    _touch(tmp_path / "results_data/spot/klines/15m/XRPUSDT.pqt")  # legacy: no record
    assert leftovers.other_interval_symbols(tmp_path, "spot", "5m", "all") == [
        "1m/BTCUSDT",
        "1m/ETHUSDT",
    ]
    assert leftovers.other_interval_symbols(tmp_path, "spot", "5m", ["ETHUSDT"]) == ["1m/ETHUSDT"]
    assert leftovers.other_interval_symbols(tmp_path, "spot", "15m", ["BTCUSDT"]) == [
        "1m/BTCUSDT",
        "5m/BTCUSDT",
    ]


def test_one_failing_symbol_does_not_stop_the_others(tmp_path, monkeypatch):
    results = tmp_path / "results_data" / "spot"
    eth = _touch(results / "klines/1m/ETHUSDT.pqt")
    real = leftovers._remove_segments

    def failing(directories, symbol):
        if symbol == "BTCUSDT":
            raise OSError("disk says no")
        return real(directories, symbol)

    monkeypatch.setattr(leftovers, "_remove_segments", failing)
    with pytest.raises(RuntimeError, match="1m/BTCUSDT: disk says no"):
        leftovers.remove_leftovers(
            kind="interval", trade_type="spot", data_dir=str(tmp_path),
            found=["1m/BTCUSDT", "1m/ETHUSDT"], report=str(tmp_path / "r.json"),
        )  # fmt: skip
    assert not eth.exists()


def test_the_interval_look_starts_in_the_run_directory(tmp_path):
    run_dir = str(tmp_path / "run")
    assert not leftovers.built_other_intervals(run_dir, "spot", "5m")
    _touch(Path(layout.stage_report_path(run_dir, "gen_kline", "spot", "klines-5m", "BTCUSDT")))
    assert not leftovers.built_other_intervals(run_dir, "spot", "5m")
    _touch(Path(layout.stage_report_path(run_dir, "gen_kline", "um_futures", "klines-1m", "X")))
    assert not leftovers.built_other_intervals(run_dir, "spot", "5m")
    _touch(Path(layout.stage_report_path(run_dir, "gen_kline", "spot", "klines-1m", "BTCUSDT")))
    assert leftovers.built_other_intervals(run_dir, "spot", "5m")


def test_a_store_that_cannot_be_listed_plans_nothing_and_records_nothing(tmp_path, capsys):
    from crypto_lakehouse.storage import StorageError

    run_dir = str(tmp_path / "run")

    def unreachable():
        raise StorageError("s3://bucket/x: list failed: could not resolve host")

    key = leftovers.key("s3://bucket/x", "1m", ["BTCUSDT"])
    assert leftovers.checked(run_dir, "interval", "spot", key, unreachable) == []
    assert "interval leftovers of spot not looked for" in capsys.readouterr().err
    assert not Path(layout.leftovers_record_path(run_dir, "interval", "spot")).exists()


def test_removal_and_the_planning_looks_on_s3(s3_root, tmp_path):
    from crypto_lakehouse import storage

    data = storage.data_path(s3_root)

    def put(path):
        storage.write_bytes(path, b"x")
        return path

    results = data / "results_data" / "spot"
    features = [
        put(results / "features/1m/BTCUSDT.pqt"),
        put(results / "resampled_features/1h/5m/SP0_BTCUSDT.pqt"),
    ]
    other_symbol = put(results / "features/1m/ETHUSDT.pqt")
    klines_1m = put(results / "klines/1m/BTCUSDT.pqt")
    state_1m = put(layout.state_path(data, "gen_kline", "spot", "klines-1m", "BTCUSDT"))
    parsed = put(data / "parsed_data/spot/klines/BTCUSDT/1m/202401.pqt")
    assert leftovers.feature_files(s3_root, "spot", ["BTCUSDT"]) == [
        "features/1m/BTCUSDT.pqt",
        "resampled_features/1h/5m/SP0_BTCUSDT.pqt",
    ]
    assert leftovers.other_interval_symbols(s3_root, "spot", "5m", ["BTCUSDT"]) == ["1m/BTCUSDT"]
    run_dir = str(tmp_path / "run")
    leftovers.remove_leftovers(
        kind="features", trade_type="spot", data_dir=s3_root, found=["BTCUSDT"],
        run_dir=run_dir, report=str(tmp_path / "f.json"),
    )  # fmt: skip
    leftovers.remove_leftovers(
        kind="interval", trade_type="spot", data_dir=s3_root, found=["1m/BTCUSDT"],
        run_dir=run_dir, report=str(tmp_path / "i.json"),
    )  # fmt: skip
    assert not any(storage.exists(p) for p in [*features, klines_1m, state_1m])
    assert storage.exists(other_symbol) and storage.exists(parsed)
    assert leftovers.other_interval_symbols(s3_root, "spot", "5m", ["BTCUSDT"]) == []
