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
from crypto_lakehouse.loading import LegacyResampledWarning
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
