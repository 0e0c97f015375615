"""`snakemake datasets` against the emulator: aggTrades on spot and um, markPriceKlines on um
and cm (config `datasets:`), listed, downloaded, verified and parsed (docs/datasets.md)."""

from __future__ import annotations

import hashlib
import zipfile
from io import BytesIO

import pyarrow as pa
import pyarrow.parquet as pq
from crypto_lakehouse_emulator.ticks import write_daily_agg_trades

from crypto_lakehouse import layout
from tests.e2e.e2e_helpers import emulator_config, read_json, snakemake

MARK_HEADER = (
    "open_time,open,high,low,close,volume,close_time,quote_volume,count,"
    "taker_buy_volume,taker_buy_quote_volume,ignore"
)
DAY = "2025-01-02"
DAY_MS = 1735776000000  # 2025-01-02 00:00 UTC


def _mark_price_day(mirror, trade_type, symbol):
    key = layout.archive_key(trade_type, "markPriceKlines", symbol, "1m", "daily", DAY)
    rows = [
        f"{DAY_MS + i * 60000},{100 + i}.5,{101 + i},{99 + i},{100 + i}.25,0,"
        f"{DAY_MS + i * 60000 + 59999},0,0,0,0,0"
        for i in range(1440)
    ]
    buf = BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(key.rsplit("/", 1)[1].replace(".zip", ".csv"), "\n".join([MARK_HEADER, *rows]))
    data = buf.getvalue()
    (mirror / key).parent.mkdir(parents=True, exist_ok=True)
    (mirror / key).write_bytes(data)
    name = key.rsplit("/", 1)[1]
    (mirror / f"{key}.CHECKSUM").write_text(f"{hashlib.sha256(data).hexdigest()}  {name}\n")
    return key


def test_datasets_target_on_two_markets_each(tmp_path, emulator):
    mirror = tmp_path / "mirror"
    agg = {
        "spot": write_daily_agg_trades(mirror, "spot", "BTCUSDT", DAY, 400, seed=1),
        "um_futures": write_daily_agg_trades(mirror, "um_futures", "BTCUSDT", DAY, 300, seed=2),
    }
    marks = {
        "um_futures": _mark_price_day(mirror, "um_futures", "BTCUSDT"),
        "cm_futures": _mark_price_day(mirror, "cm_futures", "BTCUSD_PERP"),
    }
    emu = emulator(mirror_dir=mirror)
    data = tmp_path / "data"
    config = emulator_config(
        emu.base_url, data, interval="1m", start_date=DAY, end_date=DAY,
        symbols={"spot": ["BTCUSDT"], "um_futures": ["BTCUSDT"], "cm_futures": ["BTCUSD_PERP"]},
        datasets={
            "spot": ["klines", "aggTrades"],
            "um_futures": ["klines", "funding", "aggTrades", "markPriceKlines"],
            "cm_futures": ["klines", "funding", "markPriceKlines"],
        },
    )  # fmt: skip
    snakemake(tmp_path, config, "datasets")

    day = DAY.replace("-", "")
    for trade_type, rows in (("spot", 400), ("um_futures", 300)):
        assert layout.verified_marker(layout.aws_path(data, agg[trade_type])).exists()
        table = pq.read_table(layout.parsed_day_path(data, trade_type, "aggTrades", "BTCUSDT", day))
        assert table.num_rows == rows
        assert table.schema.field("transact_time").type == pa.timestamp("ms", tz="UTC")
        lo, hi = DAY_MS, DAY_MS + 86_400_000
        times = table.column("transact_time").cast(pa.int64()).to_numpy()
        assert times.min() >= lo and times.max() < hi  # spot µs truncated to ms
    for trade_type, symbol in (("um_futures", "BTCUSDT"), ("cm_futures", "BTCUSD_PERP")):
        assert layout.verified_marker(layout.aws_path(data, marks[trade_type])).exists()
        part = layout.parsed_klines_dir(data, trade_type, symbol, "1m", "markPriceKlines")
        table = pq.read_table(part / "202501.pqt")
        assert table.num_rows == 1440
        assert table.column("open")[0].as_py() == 100.5
        report = read_json(
            data
            / "lakehouse/reports/aws_parse"
            / trade_type
            / "markPriceKlines-1m"
            / f"{symbol}.json"
        )
        assert report["dataset"] == "markPriceKlines-1m"
    # Second run: nothing left to do.
    again = snakemake(tmp_path, config, "datasets")
    assert "Nothing to be done" in again.stdout + again.stderr
