"""A config change that reaches only the later stages (features indicators, resample
targets) is seen from another working directory too. Snakemake compares a job's params with
its records in ``.snakemake/`` of the directory it runs from; from another directory (or
clone) there are none, and ``features`` with new indicators said "Nothing to be done": the
feature files kept their old columns. The rerun stamps in the run directory carry the
trigger (``rerun_stamp`` in rules/common.smk), as for the download jobs."""

from __future__ import annotations

import pyarrow.parquet as pq

from crypto_lakehouse import layout
from tests.chaos import chaos_helpers as h
from tests.e2e.e2e_helpers import snakemake

SYMBOLS = ["BTCUSDT"]


def test_new_indicators_and_targets_are_built_from_another_directory(tmp_path):
    emu = h.start_emulator(h.build_scenario(tmp_path, SYMBOLS), symbols=SYMBOLS)
    try:
        _check(tmp_path, emu.base_url)
    finally:
        emu.stop()


def _check(tmp_path, url):
    data = tmp_path / "data"
    config = {
        **h.config_for(url, data, SYMBOLS),
        "resample": {"targets": [{"trade_type": "spot", "interval": "4h", "offset_step": "0m"}]},
        "features": {"indicators": [{"name": "EMA", "timeperiod": 5}],
                     "microstructure": {"windows": [6]}},
    }  # fmt: skip
    first, other = tmp_path / "dir-a", tmp_path / "dir-b"
    first.mkdir()
    other.mkdir()
    snakemake(first, config, "features")
    features_1m = layout.features_dir(data, "spot", "1m") / "BTCUSDT.pqt"
    assert "ema_5" in pq.read_schema(features_1m).names

    changed = {
        **config,
        "resample": {"targets": [{"trade_type": "spot", "interval": "2h", "offset_step": "0m"}]},
        "features": {**config["features"], "indicators": [{"name": "RSI", "timeperiod": 5}]},
    }
    snakemake(other, changed, "features")
    names = pq.read_schema(features_1m).names
    assert "rsi_5" in names and "ema_5" not in names
    resampled = layout.resampled_features_dir(data, "spot", "2h", "0m") / "BTCUSDT.pqt"
    assert "rsi_5" in pq.read_schema(resampled).names

    again = snakemake(other, changed, "features")
    assert "Nothing to be done" in again.stdout + again.stderr
