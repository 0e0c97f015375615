"""A legacy BHDS V1 data dir used in place (docs/config.md, "legacy dir in place"), with the
real workflow on the emulator: the pipeline removes only resampled files it wrote, never
legacy's of targets or offsets the config does not list (before 2026-12-06 the first run
removed them)."""

from __future__ import annotations

import json
import shutil
import warnings

import pytest

import crypto_lakehouse
from crypto_lakehouse.loading import LegacyResampledWarning, LegacyUnownedWarning
from tests.e2e.e2e_helpers import snakemake
from tests.e2e.legacy_real_scenario import LEGACY, legacy_config, legacy_mirror, legacy_rest

pytestmark = [pytest.mark.e2e]

T = "um_futures"


def _files(base) -> dict[str, bytes]:
    return {p.relative_to(base).as_posix(): p.read_bytes() for p in sorted(base.rglob("*.pqt"))}


def test_legacy_resampled_files_of_other_targets_survive_in_place_runs(tmp_path):
    from crypto_lakehouse_emulator import Emulator

    data = tmp_path / "data"
    for layer in ("parsed_data", "results_data"):  # legacy's own outputs, used in place
        shutil.copytree(LEGACY / layer / T, data / layer / T)
    resampled = data / "results_data" / T / "resampled_klines"
    legacy = _files(resampled)
    others = sorted(f for f in legacy if f != "1h/0m/BTCUSDT.pqt")
    assert len(others) == 12  # 1h at 11 more offsets, and 5m/0m
    legacy_mirror(tmp_path / "mirror")
    with Emulator(mirror_dir=tmp_path / "mirror", rest=legacy_rest()) as emu:
        config = legacy_config(emu.base_url, data)
        config.update(trade_types=[T], symbols={T: ["BTCUSDT"]})
        config["resample"] = {"targets": [{"trade_type": T, "interval": "1h", "offset_step": "0m"}]}
        proc = snakemake(tmp_path, config, "all")
        # The kept legacy files are counted at the end of the run and on the report page
        # (before 2026-12-07 only the symbol's resample report named them).
        closing = [line for line in proc.stdout.splitlines() if "legacy resampled" in line]
        assert len(closing) == 1, proc.stdout
        assert "12 legacy resampled file(s) at resample targets or offsets not" in closing[0]
        assert f"results_data/{T}/resampled_klines/1h/15m/ (1)" in closing[0]
        assert "(2 more folders)" in closing[0]  # 12 folders: 11 offsets of 1h, 5m/0m
        page = (data / "lakehouse/report/index.html").read_text()
        assert "<h3>Stale legacy resampled files (12)</h3>" in page
        now = _files(resampled)
        assert sorted(now) == sorted(legacy)
        assert {f: now[f] for f in others} == {f: legacy[f] for f in others}
        assert now["1h/0m/BTCUSDT.pqt"] != legacy["1h/0m/BTCUSDT.pqt"]  # rewritten
        report = data / "lakehouse/reports/resample" / T / "klines-1m/BTCUSDT.json"
        rep = json.loads(report.read_text())
        assert rep["removed"] == []
        assert rep["kept"] == [f"results_data/{T}/resampled_klines/{f}" for f in others]
        # The loaders tell the kept files from the pipeline's (before 2026-12-07 they were
        # read as if current, with no sign).
        with pytest.warns(LegacyResampledWarning, match="1h/15m/BTCUSDT.pqt"):
            crypto_lakehouse.load_klines(data, T, "BTCUSDT", resample="1h", offset="15m")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            crypto_lakehouse.load_klines(data, T, "BTCUSDT", resample="1h")
        with pytest.warns(LegacyResampledWarning):
            con = crypto_lakehouse.duckdb_connect(data)
        assert con.sql("SELECT count(*) FROM stale_resampled_klines").fetchall() == [(12,)]
        # No target left: the stage runs for the file the pipeline wrote, and only that goes.
        config["resample"] = {
            "targets": [{"trade_type": "spot", "interval": "1h", "offset_step": "0m"}]
        }
        proc = snakemake(tmp_path, config, "all")
        assert (
            f"resample: no resample.targets entry for {T}; its resample stage removes the 1 "
            f"resampled file(s) of its symbols left by earlier targets "
            f"(e.g. results_data/{T}/resampled_klines/1h/0m/BTCUSDT.pqt), then skips it"
        ) in proc.stderr
        assert _files(resampled) == {f: legacy[f] for f in others}
        # From then on nothing of the pipeline's is left: the stage is skipped.
        proc = snakemake(tmp_path, config, "all")
        assert f"no resample.targets entry for {T}; the resample stage skips it" in proc.stderr
        assert _files(resampled) == {f: legacy[f] for f in others}


def test_legacy_files_of_a_symbol_not_configured_and_a_deleted_record_e2e(tmp_path):
    """A legacy data dir in place also holds files of a symbol the config does not list
    (here ETHUSDT: legacy's real BTCUSDT files under that name): no job of a run touches
    them, and the loaders tell them by their metadata (LegacyUnownedWarning; before
    2026-12-07 they were read as current). The record of the configured symbol's kept legacy
    files, deleted by hand, is written again by a plain rerun (before, the loaders stopped
    warning until the kept files changed)."""
    from crypto_lakehouse_emulator import Emulator

    data = tmp_path / "data"
    for layer in ("parsed_data", "results_data"):
        shutil.copytree(LEGACY / layer / T, data / layer / T)
    results = data / "results_data" / T
    eth = {
        "klines/1m/BTCUSDT.pqt": "klines/1m/ETHUSDT.pqt",
        "resampled_klines/1h/15m/BTCUSDT.pqt": "resampled_klines/1h/15m/ETHUSDT.pqt",
        "resampled_klines/1h/0m/BTCUSDT.pqt": "resampled_klines/1h/0m/ETHUSDT.pqt",
    }
    for src, dst in eth.items():
        shutil.copyfile(results / src, results / dst)
    legacy_eth = {dst: (results / dst).read_bytes() for dst in eth.values()}
    legacy_mirror(tmp_path / "mirror")
    with Emulator(mirror_dir=tmp_path / "mirror", rest=legacy_rest()) as emu:
        config = legacy_config(emu.base_url, data)
        config.update(trade_types=[T], symbols={T: ["BTCUSDT"]})
        config["resample"] = {"targets": [{"trade_type": T, "interval": "1h", "offset_step": "0m"}]}
        snakemake(tmp_path, config, "all")
        assert {f: (results / f).read_bytes() for f in legacy_eth} == legacy_eth  # untouched
        for kwargs, shown in (
            ({}, "klines/1m/ETHUSDT.pqt"),
            ({"resample": "1h"}, "resampled_klines/1h/0m/ETHUSDT.pqt"),
            ({"resample": "1h", "offset": "15m"}, "resampled_klines/1h/15m/ETHUSDT.pqt"),
        ):
            with pytest.warns(LegacyUnownedWarning, match=shown):
                crypto_lakehouse.load_klines(data, T, "ETHUSDT", **kwargs)
        with warnings.catch_warnings():  # the configured symbol's files are the pipeline's
            warnings.simplefilter("error")
            crypto_lakehouse.load_klines(data, T, "BTCUSDT")
            crypto_lakehouse.load_klines(data, T, "BTCUSDT", resample="1h")
            crypto_lakehouse.load_features(data, T, "BTCUSDT")
        # The records the loaders warn by, deleted by hand; a plain rerun writes them again.
        record = data / "lakehouse/stale_features" / T / "BTCUSDT/resampled_klines.json"
        before = record.read_bytes()
        shutil.rmtree(data / "lakehouse/stale_features")
        proc = snakemake(tmp_path, config, "all")
        out = proc.stdout + proc.stderr
        notices = [line for line in out.splitlines() if "deleted by hand?" in line]
        assert len(notices) == 1 and f"lakehouse/stale_features/{T}" in notices[0], out[-3000:]
        assert json.loads(record.read_bytes())["files"] == json.loads(before)["files"]
        with pytest.warns(LegacyResampledWarning, match="1h/15m/BTCUSDT.pqt"):
            crypto_lakehouse.load_klines(data, T, "BTCUSDT", resample="1h", offset="15m")
        proc = snakemake(tmp_path, config, "all")  # and nothing more after that
        assert "deleted by hand?" not in proc.stdout + proc.stderr
