"""`snakemake datasets` against the emulator: aggTrades on spot and um, trades on cm,
markPriceKlines on um and cm, metrics on um (config `datasets:`), all written by the
emulator's generators in the published formats, then listed, downloaded, verified, parsed
and summarised (docs/datasets.md)."""

from __future__ import annotations

import csv
import io
import shutil
import zipfile

import pyarrow as pa
import pyarrow.parquet as pq
from crypto_lakehouse_emulator.ticks import (
    write_daily_agg_trades,
    write_daily_metrics,
    write_daily_price_klines,
    write_daily_trades,
)

from crypto_lakehouse import layout
from tests.e2e.e2e_helpers import emulator_config, read_json, snakemake

DAY = "2025-01-02"
DAY_MS = 1735776000000  # 2025-01-02 00:00 UTC


def _csv_rows(mirror, key) -> list[list[str]]:
    """The data rows of an archive zip (header dropped), read with the csv module."""
    with zipfile.ZipFile(mirror / key) as zf:
        text = zf.read(zf.namelist()[0]).decode()
    return [r for r in csv.reader(io.StringIO(text)) if r and r[0][:1].isdigit()]


def test_datasets_target_on_two_markets_each(tmp_path, emulator):
    mirror = tmp_path / "mirror"
    agg = {
        "spot": write_daily_agg_trades(mirror, "spot", "BTCUSDT", DAY, 400, seed=1),
        "um_futures": write_daily_agg_trades(mirror, "um_futures", "BTCUSDT", DAY, 300, seed=2),
    }
    marks = {
        "um_futures": write_daily_price_klines(
            mirror, "um_futures", "markPriceKlines", "BTCUSDT", "1m", DAY
        ),
        "cm_futures": write_daily_price_klines(
            mirror, "cm_futures", "markPriceKlines", "BTCUSD_PERP", "1m", DAY
        ),
    }
    cm_trades = write_daily_trades(mirror, "cm_futures", "BTCUSD_PERP", DAY, 200, seed=3)
    metrics = write_daily_metrics(mirror, "um_futures", "BTCUSDT", DAY)
    emu = emulator(mirror_dir=mirror)
    data = tmp_path / "data"
    config = emulator_config(
        emu.base_url, data, interval="1m", start_date=DAY, end_date=DAY,
        symbols={"spot": ["BTCUSDT"], "um_futures": ["BTCUSDT"], "cm_futures": ["BTCUSD_PERP"]},
        datasets={
            "spot": ["klines", "aggTrades"],
            "um_futures": ["klines", "funding", "aggTrades", "markPriceKlines", "metrics"],
            "cm_futures": ["klines", "funding", "markPriceKlines", "trades"],
        },
    )  # fmt: skip
    snakemake(tmp_path, config, "datasets")

    day = DAY.replace("-", "")
    for trade_type in ("spot", "um_futures"):
        rows = _csv_rows(mirror, agg[trade_type])
        assert layout.verified_marker(layout.aws_path(data, agg[trade_type])).exists()
        table = pq.read_table(layout.parsed_day_path(data, trade_type, "aggTrades", "BTCUSDT", day))
        assert table.num_rows == len(rows) == (400 if trade_type == "spot" else 300)
        assert table.schema.field("transact_time").type == pa.timestamp("ms", tz="UTC")
        assert table.column("agg_trade_id").to_pylist() == [int(r[0]) for r in rows]
        # Spot files of 2025 hold µs: parsed times are the file's value // 1000.
        div = 1000 if trade_type == "spot" else 1
        want = [int(r[5]) // div for r in rows]
        assert table.column("transact_time").cast(pa.int64()).to_pylist() == want
        assert DAY_MS <= min(want) and max(want) < DAY_MS + 86_400_000
    table = pq.read_table(layout.parsed_day_path(data, "cm_futures", "trades", "BTCUSD_PERP", day))
    rows = _csv_rows(mirror, cm_trades)
    assert table.column_names == ["id", "price", "qty", "base_qty", "time", "is_buyer_maker"]
    assert table.column("base_qty").to_pylist() == [float(r[3]) for r in rows]
    assert table.column("is_buyer_maker").to_pylist() == [r[5] == "true" for r in rows]
    table = pq.read_table(layout.parsed_day_path(data, "um_futures", "metrics", "BTCUSDT", day))
    rows = _csv_rows(mirror, metrics)
    assert table.num_rows == len(rows) == 288
    assert table.column("create_time").cast(pa.int64()).to_pylist() == [
        DAY_MS + i * 300_000 for i in range(288)
    ]
    assert table.column("sum_open_interest").to_pylist() == [float(r[2]) for r in rows]
    for trade_type, symbol in (("um_futures", "BTCUSDT"), ("cm_futures", "BTCUSD_PERP")):
        assert layout.verified_marker(layout.aws_path(data, marks[trade_type])).exists()
        rows = _csv_rows(mirror, marks[trade_type])
        part = layout.parsed_klines_dir(data, trade_type, symbol, "1m", "markPriceKlines")
        table = pq.read_table(part / "202501.pqt")
        assert table.num_rows == len(rows) == 1440
        assert table.column("open").to_pylist() == [float(r[1]) for r in rows]
        report = read_json(
            data
            / "lakehouse/reports/aws_parse"
            / trade_type
            / "markPriceKlines-1m"
            / f"{symbol}.json"
        )
        assert report["dataset"] == "markPriceKlines-1m"
    # Run summaries: rows and days per dataset, counted from the files written above.
    um = read_json(data / "lakehouse/summaries/datasets/um_futures.json")
    assert um["datasets"]["aggTrades"]["rows"] == 300
    assert um["datasets"]["metrics"]["rows"] == 288
    assert um["datasets"]["markPriceKlines-1m"]["rows"] == 1440
    for entry in um["datasets"].values():
        assert entry["days"] == 1 and entry["files_verified"] == 1
        assert entry["files_quarantined_download"] == entry["files_quarantined_parse"] == 0
    cm = read_json(data / "lakehouse/summaries/datasets/cm_futures.json")
    assert cm["datasets"]["trades"]["rows"] == len(_csv_rows(mirror, cm_trades))
    assert set(cm["datasets"]) == {"trades", "markPriceKlines-1m"}
    # Second run: nothing left to do.
    again = snakemake(tmp_path, config, "datasets")
    assert "Nothing to be done" in again.stdout + again.stderr


def test_a_rerun_after_the_listings_builds_what_a_stopped_run_left(tmp_path, emulator):
    # A run that stopped after the listings (killed, or a job failed): the trades reports
    # and the datasets summary are gone, every listing is there. With one listing
    # checkpoint per dataset, and agg_klines asking the aggTrades listings from other jobs,
    # Snakemake 9.27 left the summary's input a placeholder: it ran with a listing's path
    # as its parse reports ("IsADirectoryError: '/'") and the trades jobs never ran.
    mirror = tmp_path / "mirror"
    agg = write_daily_agg_trades(mirror, "spot", "BTCUSDT", DAY, 200, seed=1)
    trades = write_daily_trades(mirror, "spot", "BTCUSDT", DAY, 100, seed=2)
    emu = emulator(mirror_dir=mirror)
    data = tmp_path / "data"
    config = emulator_config(
        emu.base_url, data, interval="1m", start_date=DAY, end_date=DAY,
        trade_types=["spot"], symbols={"spot": ["BTCUSDT"]},
        datasets={"spot": ["klines", "aggTrades", "trades"]},
        agg_klines={"intervals": ["1h"]},
    )  # fmt: skip
    snakemake(tmp_path, config, "datasets")
    for stage in ("aws_download", "aws_parse"):
        shutil.rmtree(data / "lakehouse/reports" / stage / "spot/trades")
    (data / "lakehouse/summaries/datasets/spot.json").unlink()
    snakemake(tmp_path, config, "datasets")
    summary = read_json(data / "lakehouse/summaries/datasets/spot.json")
    assert summary["datasets"]["trades"]["rows"] == len(_csv_rows(mirror, trades))
    assert summary["datasets"]["aggTrades"]["rows"] == len(_csv_rows(mirror, agg)) == 200
