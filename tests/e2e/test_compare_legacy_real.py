"""`compare` end to end: the legacy-v1-real fixture (legacy BHDS outputs on real archive
files) against our pipeline's output on the same archive, served by the emulator.

The known cm `avg_price_1m` difference (fixture README §5.1, docs Q3) must be reported as
explained, everything else equal or within tolerance, exit 0; the expected counts come from
the fixture README and the legacy files, not from compare's output."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.e2e.e2e_helpers import REPO, snakemake
from tests.e2e.legacy_real_scenario import LEGACY, legacy_config, legacy_mirror, legacy_rest

CM_1M = "results_data/cm_futures/klines/1m/BTCUSD_PERP.pqt"
CM_CONTRACT_SIZE = 100.0  # truth/exchange_info/cm.json, BTCUSD_PERP contractSize


def fixed_cm_vwap_differs() -> dict[int, bool]:
    """Per minute of the legacy cm 1m file: does the USD VWAP (docs Q3, from its definition
    with the contract size) differ from legacy's value by more than 1e-4?"""
    t = pq.read_table(LEGACY / CM_1M).to_pandas()
    traded = t["volume"] > 0
    usd = (t["volume"] * CM_CONTRACT_SIZE / t["quote_volume"]).where(traded, t["open"])
    usd = usd.clip(t["low"], t["high"])
    differs = (usd - t["avg_price_1m"]).abs() > 1e-4
    stamps = pq.read_table(LEGACY / CM_1M).column("candle_begin_time").cast("int64").to_pylist()
    return dict(zip(stamps, differs, strict=True))


@pytest.fixture(scope="module")
def our_data(tmp_path_factory):
    from crypto_lakehouse_emulator import Emulator

    tmp = tmp_path_factory.mktemp("compare_legacy_real")
    legacy_mirror(tmp / "mirror")
    with Emulator(mirror_dir=tmp / "mirror", rest=legacy_rest()) as emu:
        snakemake(tmp, legacy_config(emu.base_url, tmp / "data"), "all")
    return tmp / "data"


def run_compare(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "crypto_lakehouse", "compare", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )


def test_only_the_cm_vwap_differs_and_it_is_explained(our_data):
    proc = run_compare(str(LEGACY), str(our_data), "--format", "json", "--jobs", "2")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    report = json.loads(proc.stdout)
    assert report["unexplained"] == [] and report["problems"] == []
    legacy_files = {
        p.relative_to(LEGACY).as_posix()
        for folder in ("results_data", "parsed_data")
        for p in (LEGACY / folder).rglob("*.pqt")
    }
    assert {f["file"] for f in report["files"]} == legacy_files
    # fixture README §5.1: avg_price_1m differs on 1378 of 1440 rows of the cm 1m file; a
    # resampled row takes its first minute's value, so it differs where that minute does
    cm_resampled = sorted(
        p.relative_to(LEGACY).as_posix()
        for p in (LEGACY / "results_data/cm_futures/resampled_klines").rglob("*.pqt")
    )
    assert len(cm_resampled) == 12
    differs = fixed_cm_vwap_differs()
    assert sum(differs.values()) == 1378
    expected = {CM_1M: 1378}
    for f in cm_resampled:
        starts = pq.read_table(LEGACY / f).column("candle_begin_time").cast("int64").to_pylist()
        expected[f] = sum(differs[s] for s in starts)
    explained = {d["file"]: d for d in report["explained"]}
    assert set(explained) == set(expected)
    for file, rows in expected.items():
        d = explained[file]
        assert (d["fix"], d["column"], d["count"]) == ("Q3", "avg_price_1m", rows), d
    # everything else: equal or within the legacy tolerances
    for f in report["files"]:
        if f["file"] not in expected:
            assert f["status"] in ("equal", "within_tolerance"), f
    for d in report["within_tolerance"]:
        assert d["max_abs"] <= 1e-4


def test_strict_fails_on_the_explained_difference_and_text_names_it(our_data, tmp_path):
    proc = run_compare(str(LEGACY), str(our_data), "--strict", "--trade-types", "cm_futures")
    assert proc.returncode == 1
    assert "Q3 COIN-M VWAP" in proc.stdout and CM_1M in proc.stdout


def test_a_mutated_copy_of_our_output_is_caught(our_data, tmp_path):
    mutated = tmp_path / "ours"
    shutil.copytree(our_data / "results_data", mutated / "results_data")
    shutil.copytree(our_data / "parsed_data", mutated / "parsed_data")
    rel = "results_data/um_futures/klines/1m/BTCUSDT.pqt"
    table = pq.read_table(mutated / rel)
    high = table.column("high").to_numpy().copy()
    high[100] += 1.0
    pq.write_table(
        table.set_column(table.schema.get_field_index("high"), "high", pa.array(high)),
        mutated / rel,
    )
    proc = run_compare(str(LEGACY), str(mutated), "--format", "json")
    assert proc.returncode == 1
    (d,) = json.loads(proc.stdout)["unexplained"]
    t = pq.read_table(LEGACY / rel).column("candle_begin_time")[100].as_py()
    assert (d["file"], d["column"], d["first_time"]) == (
        rel,
        "high",
        t.strftime("%Y-%m-%d %H:%M:%S"),
    )
    assert d["our_value"] - d["legacy_value"] == pytest.approx(1.0)
    assert np.isclose(d["max_abs"], 1.0)
