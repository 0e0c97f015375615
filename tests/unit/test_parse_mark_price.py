"""markPriceKlines (kline layout, futures only) through listing, download and the kline
parser into ``parsed_data/{T}/markPriceKlines/{SYM}/{I}/{YYYYMM}.pqt``."""

import hashlib
import json
import zipfile
from io import BytesIO

import pyarrow.parquet as pq
import pytest

from crypto_lakehouse import layout
from crypto_lakehouse.archive import http
from crypto_lakehouse.archive.listing import run_listing
from crypto_lakehouse.archive.sync import run_sync
from crypto_lakehouse.parse.klines import run_parse_klines

HEADER = (
    "open_time,open,high,low,close,volume,close_time,quote_volume,count,"
    "taker_buy_volume,taker_buy_quote_volume,ignore"
)
DAY_MS = 1704067200000  # 2024-01-01 00:00 UTC


def _publish(mirror, key, text):
    buf = BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(key.rsplit("/", 1)[1].replace(".zip", ".csv"), text)
    data = buf.getvalue()
    (mirror / key).parent.mkdir(parents=True, exist_ok=True)
    (mirror / key).write_bytes(data)
    name = key.rsplit("/", 1)[1]
    (mirror / f"{key}.CHECKSUM").write_text(f"{hashlib.sha256(data).hexdigest()}  {name}\n")


@pytest.mark.parametrize("trade_type", ["um_futures", "cm_futures"])
def test_mark_price_klines_parse_into_monthly_partitions(
    tmp_path, emulator, monkeypatch, trade_type
):
    monkeypatch.setattr(http, "BACKOFF_BASE_S", 0.001)
    symbol = "BTCUSDT" if trade_type == "um_futures" else "BTCUSD_PERP"
    market = "um" if trade_type == "um_futures" else "cm"
    key = f"data/futures/{market}/daily/markPriceKlines/{symbol}/1m/{symbol}-1m-2024-01-01.zip"
    # A full day of 1m mark-price rows (volumes and counts are 0 in these files).
    rows = [
        f"{DAY_MS + i * 60000},{42000 + i}.5,{42001 + i}.0,{41999 + i}.0,{42000 + i}.25,0,"
        f"{DAY_MS + i * 60000 + 59999},0,0,0,0,0"
        for i in range(1440)
    ]
    _publish(tmp_path / "mirror", key, HEADER + "\n" + "\n".join(rows) + "\n")
    emu = emulator(mirror_dir=tmp_path / "mirror")
    details = tmp_path / "listing"
    run_listing(
        trade_type=trade_type, dataset="markPriceKlines", interval="1m", symbols="all",
        listing_url=emu.base_url, out_index=tmp_path / "index.json", details_dir=details,
        concurrency=2, timeout_s=5, max_retries=1,
    )  # fmt: skip
    data_dir = tmp_path / "data"
    run_sync(
        trade_type=trade_type, dataset="markPriceKlines", interval="1m", symbol=symbol,
        details_path=details / f"{symbol}.json", data_dir=data_dir, archive_url=emu.base_url,
        start_date=None, end_date=None, use_monthly_klines=False, concurrency=2,
        max_retries=1, timeout_s=5, report_path=tmp_path / "dl.json",
        stats_path=tmp_path / "dl-stats.json",
    )  # fmt: skip
    assert list(json.loads((tmp_path / "dl.json").read_text())["files"]) == [key]
    run_parse_klines(
        trade_type=trade_type, symbol=symbol, interval="1m", data_dir=data_dir,
        download_report=tmp_path / "dl.json", report_path=tmp_path / "parse.json",
        stats_path=tmp_path / "parse-stats.json", dataset="markPriceKlines",
    )  # fmt: skip
    part = data_dir / "parsed_data" / trade_type / "markPriceKlines" / symbol / "1m" / "202401.pqt"
    table = pq.read_table(part)
    assert table.num_rows == 1440
    assert table.column("open")[0].as_py() == 42000.5
    assert table.column("close")[1439].as_py() == 42000 + 1439 + 0.25
    assert json.loads((tmp_path / "parse.json").read_text())["dataset"] == "markPriceKlines-1m"
    # The klines folder of the same symbol is untouched.
    assert not layout.parsed_klines_dir(data_dir, trade_type, symbol, "1m").exists()
