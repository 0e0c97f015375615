"""`snakemake aws_parse agg_klines` on the emulator: candles built from aggTrades against the
1m klines of the same day, both written by the emulator from one trade tape (no real
archive minute of aggTrades is available: docs/datasets.md says what this does not prove).

The expectation is the archive's own 1m klines (as parsed by the kline parser), not our
output: every minute with trades must agree on open/high/low/close/volume/trade count and
taker volumes; minutes without trades are in the archive (zero volume) and not in ours."""

from __future__ import annotations

import csv
import io
import zipfile

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from crypto_lakehouse_emulator.ticks import write_daily_market

from crypto_lakehouse import layout
from tests.e2e.e2e_helpers import emulator_config, read_json, snakemake

DAY = "2025-01-02"  # spot files of 2025 hold µs


def _by_open(table: pa.Table) -> dict[int, dict]:
    opens = table.column("candle_begin_time").cast(pa.int64()).to_pylist()
    rows = table.to_pylist()
    return dict(zip(opens, rows, strict=True))


def test_agg_klines_equal_the_archive_1m_klines(tmp_path, emulator):
    mirror = tmp_path / "mirror"
    keys = {
        "spot": write_daily_market(mirror, "spot", "BTCUSDT", DAY, 3000, seed=4),
        "um_futures": write_daily_market(mirror, "um_futures", "BTCUSDT", DAY, 3000, seed=5),
    }
    emu = emulator(mirror_dir=mirror)
    data = tmp_path / "data"
    config = emulator_config(
        emu.base_url, data, interval="1m", start_date=DAY, end_date=DAY,
        trade_types=["spot", "um_futures"],
        symbols={"spot": ["BTCUSDT"], "um_futures": ["BTCUSDT"]},
        datasets={"spot": ["klines", "aggTrades"], "um_futures": ["klines", "aggTrades"]},
        agg_klines={"intervals": ["1m", "1s"]},
    )  # fmt: skip
    snakemake(tmp_path, config, "aws_parse", "agg_klines")

    day = DAY.replace("-", "")
    for trade_type in ("spot", "um_futures"):
        archive = pq.read_table(
            layout.parsed_klines_dir(data, trade_type, "BTCUSDT", "1m") / "202501.pqt"
        )
        archive = archive.filter(pc.greater(archive.column("trade_num"), 0))
        ours = pq.read_table(layout.agg_klines_day_path(data, trade_type, "BTCUSDT", "1m", day))
        want, got = _by_open(archive), _by_open(ours)
        assert 0 < len(got) < 1440 and sorted(got) == sorted(want)
        for t, row in want.items():
            for name in ("open", "high", "low", "close", "trade_num"):
                assert got[t][name] == row[name], (trade_type, t, name)
            for name in ("volume", "quote_volume", "taker_buy_base_asset_volume",
                         "taker_buy_quote_asset_volume"):  # fmt: skip
                assert got[t][name] == pytest.approx(row[name], rel=1e-9, abs=1e-8), name

        # 1s: one candle per second holding at least one aggregate trade (from the CSV).
        with zipfile.ZipFile(mirror / keys[trade_type]["aggTrades"]) as zf:
            text = zf.read(zf.namelist()[0]).decode()
        rows = [r for r in csv.reader(io.StringIO(text)) if r[0][:1].isdigit()]
        div = 1000 if trade_type == "spot" else 1
        seconds = {int(r[5]) // div // 1000 * 1000 for r in rows}
        ones = pq.read_table(layout.agg_klines_day_path(data, trade_type, "BTCUSDT", "1s", day))
        assert ones.column("candle_begin_time").cast(pa.int64()).to_pylist() == sorted(seconds)
        assert pc.sum(ones.column("trade_num")).as_py() == pc.sum(archive["trade_num"]).as_py()
        report = read_json(
            data / "lakehouse/reports/agg_klines" / trade_type / "aggTrades-1s" / "BTCUSDT.json"
        )
        assert report["days_rebuilt"] == 1 and list(report["days"]) == [day]
    again = snakemake(tmp_path, config, "agg_klines")
    assert "Nothing to be done" in again.stdout + again.stderr
