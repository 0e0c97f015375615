"""A data file lost or damaged outside a run (deleted by hand, a disk fault) is invisible to
Snakemake, whose outputs are the reports: a plain rerun has nothing to do. Forcing the
download jobs repairs it: each zip is checked against the listing, each parsed partition
against the size it was written with, and every later stage reruns and rebuilds the
outputs its symbols' last reports list but that are missing (README, "Lost or damaged
files")."""

from __future__ import annotations

import pytest

from crypto_lakehouse import layout
from tests.chaos import chaos_helpers as h
from tests.e2e.e2e_helpers import snakemake

pytestmark = pytest.mark.e2e


def _truncate(path, keep: int = 300) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def test_forcing_the_download_repairs_lost_and_damaged_files(tmp_path):
    mirror = h.build_scenario(tmp_path)
    emu = h.start_emulator(mirror)
    data = tmp_path / "data"
    config = h.config_for(emu.base_url, data)
    try:
        snakemake(tmp_path, config, "all")
        before = h.snapshot(data)
        zip_path = layout.aws_path(data, layout.daily_kline_key("spot", "ETHUSDT", "1m", h.DAYS[2]))
        partition = layout.parsed_klines_dir(data, "spot", "BTCUSDT", "1m") / "202402.pqt"
        result = layout.results_klines_dir(data, "spot", "1m") / "SOLUSDT.pqt"
        resampled = next(data.glob("results_data/spot/resampled_klines/1h/*/ETHUSDT.pqt"))
        _truncate(zip_path)
        _truncate(partition)
        result.unlink()
        resampled.unlink()

        plain = snakemake(tmp_path, config, "all")
        assert "Nothing to be done" in plain.stdout + plain.stderr  # the limit, documented

        repair = snakemake(tmp_path, config, "all", "--forcerun", "aws_download_shard")
        assert partition.stat().st_size > 300, (repair.stdout + repair.stderr)[-3000:]
        assert h.differences(before, h.snapshot(data)) == []
    finally:
        emu.stop()
