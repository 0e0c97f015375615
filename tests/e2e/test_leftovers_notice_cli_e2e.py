"""`crypto-lakehouse workflow features` with `features.enabled: false`: only target `all`
removes the feature files earlier runs built, so the first-lines notice must not say that
this run removes them (rules/common.smk: FEATURES_LEFTOVERS)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from crypto_lakehouse_emulator.__main__ import synthetic_rest

from tests.e2e.e2e_helpers import REPO, emulator_config, snakemake

pytestmark = [pytest.mark.e2e]

MIRROR = REPO / "tests/fixtures/legacy-v1-real/mirror"


def test_workflow_features_with_features_off_does_not_claim_a_removal(emulator, tmp_path):
    emu = emulator(mirror_dir=MIRROR, rest=synthetic_rest({"spot": {"BTCUSDT"}}, MIRROR))
    data = tmp_path / "data"
    config = emulator_config(
        emu.base_url, data, trade_types=["spot"], symbols={"spot": ["BTCUSDT"]},
        start_date="2020-01-01", end_date="2020-01-02",
    )  # fmt: skip
    snakemake(tmp_path, config, "features")
    feature = data / "results_data/spot/features/1m/BTCUSDT.pqt"
    assert feature.exists()

    cfg = tmp_path / "off.yaml"
    cfg.write_text(json.dumps({**config, "features": {"enabled": False}}))
    cmd = [sys.executable, "-m", "crypto_lakehouse", "workflow", "features",
           "--configfile", str(cfg), "--directory", str(tmp_path), "--cores", "1"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert feature.exists()
    assert "this run removes" not in proc.stderr
    assert "features.enabled is false; target all removes the " in proc.stderr
