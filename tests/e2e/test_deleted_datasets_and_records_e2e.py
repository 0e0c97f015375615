"""Folders of the `datasets` target and the Parquet records below `lakehouse/` deleted by
hand under intact reports (crypto_lakehouse/data_presence.py). Before, the next run said
"Nothing to be done" for each of them and the lakehouse stayed without those files."""

from __future__ import annotations

import shutil

import pytest
from crypto_lakehouse_emulator.ticks import write_daily_market, write_daily_price_klines

from tests.chaos import chaos_helpers as h
from tests.e2e.e2e_helpers import emulator_config, snakemake

pytestmark = pytest.mark.e2e

DAY = "2025-01-02"


def _snapshot(data) -> dict:
    """The chaos suite's snapshot, but the agg_klines state by its days: it records each
    parsed aggTrades day's size and mtime (a day parsed again has a new mtime)."""
    found = h.snapshot(data)
    for name in [n for n in found if n.startswith("lakehouse/state/agg_klines/")]:
        found[name] = sorted(found[name])
    return found


def _notices(out: str) -> list[str]:
    return [line for line in out.splitlines() if "deleted by hand?" in line]


def test_deleted_dataset_folders_are_rebuilt_and_nothing_else(tmp_path, emulator):
    mirror = tmp_path / "mirror"
    write_daily_market(mirror, "um_futures", "BTCUSDT", DAY, 500, seed=3)
    write_daily_price_klines(mirror, "um_futures", "markPriceKlines", "BTCUSDT", "1m", DAY)
    emu = emulator(mirror_dir=mirror)
    data = tmp_path / "data"
    config = emulator_config(
        emu.base_url, data, interval="1m", start_date=DAY, end_date=DAY,
        trade_types=["um_futures"], symbols={"um_futures": ["BTCUSDT"]},
        datasets={"um_futures": ["klines", "aggTrades", "markPriceKlines"]},
        agg_klines={"intervals": ["5m"]},
    )  # fmt: skip
    snakemake(tmp_path, config, "datasets")
    before = _snapshot(data)
    for folder in ("parsed_data/um_futures/aggTrades", "parsed_data/um_futures/agg_klines",
                   "parsed_data/um_futures/markPriceKlines"):  # fmt: skip
        assert any(n.startswith(folder + "/") for n in before), folder

    # The candles built from aggTrades: only agg_klines runs again.
    shutil.rmtree(data / "parsed_data/um_futures/agg_klines")
    rebuilt = snakemake(tmp_path, config, "datasets")
    out = rebuilt.stdout + rebuilt.stderr
    notices = _notices(out)
    assert len(notices) == 1 and "parsed_data/um_futures/agg_klines" in notices[0], out[-3000:]
    assert "agg_klines um_futures/aggTrades-5m" in notices[0]
    assert "rule agg_klines_shard" in out and "rule aws_parse_ticks" not in out
    changed = h.differences(before, _snapshot(data))
    assert changed == [], (changed, out[-3000:])

    # A parsed dataset and the archives of another: their jobs and the later stages rerun.
    shutil.rmtree(data / "parsed_data/um_futures/aggTrades")
    shutil.rmtree(data / "aws_data/data/futures/um/daily/markPriceKlines")
    dry = snakemake(tmp_path, config, "datasets", "-n")
    assert "a real run reruns" in dry.stderr, dry.stderr[-3000:]
    rebuilt = snakemake(tmp_path, config, "datasets")
    out = rebuilt.stdout + rebuilt.stderr
    notices = _notices(out)
    assert len(notices) == 1, out[-3000:]
    assert "aws_parse um_futures/aggTrades" in notices[0]
    assert "aws_download um_futures/markPriceKlines-1m" in notices[0]
    assert "rule aws_parse_ticks" in out and "rule aws_parse_kline_layout" in out, out[-6000:]
    changed = h.differences(before, _snapshot(data))
    assert changed == [], (changed, out[-3000:])
    again = snakemake(tmp_path, config, "datasets")
    assert "Nothing to be done" in again.stdout + again.stderr


def _data_file_times(data) -> dict[str, int]:
    """The data layers' files by modification time: a record rebuilt must not rewrite them."""
    return {
        str(p.relative_to(data)): p.stat().st_mtime_ns
        for layer in ("aws_data", "parsed_data", "api_data", "results_data")
        for p in (data / layer).rglob("*")
        if p.is_file()
    }


def test_deleted_record_folders_are_rebuilt_without_rewriting_the_data(tmp_path):
    """The klines' day provenance (written by api_download) and quality record (written by
    aws_parse) below `lakehouse/`: their folders are checked at start like the data's."""
    emu = h.start_emulator(h.build_scenario(tmp_path))
    try:
        data = tmp_path / "data"
        config = h.config_for(emu.base_url, data)
        snakemake(tmp_path, config, "all")
        before, times = h.snapshot(data), _data_file_times(data)
        assert any(n.startswith("lakehouse/provenance/spot/1m/") for n in before)
        assert any(n.startswith("lakehouse/quality/spot/1m/") for n in before)

        shutil.rmtree(data / "lakehouse/provenance")
        shutil.rmtree(data / "lakehouse/quality/spot")
        rebuilt = snakemake(tmp_path, config, "all")
        out = rebuilt.stdout + rebuilt.stderr
        notices = _notices(out)
        assert len(notices) == 1, out[-3000:]
        assert "lakehouse/provenance/spot/1m" in notices[0]
        assert "lakehouse/quality/spot/1m" in notices[0]
        assert "aws_parse spot/klines-1m, api_download spot" in notices[0]
        assert "rule aws_download_shard" not in out and "rule aws_parse_klines" in out
        changed = h.differences(before, h.snapshot(data))
        assert changed == [], (changed, out[-3000:])
        assert _data_file_times(data) == times
        again = snakemake(tmp_path, config, "all")
        assert "Nothing to be done" in again.stdout + again.stderr
    finally:
        emu.stop()
