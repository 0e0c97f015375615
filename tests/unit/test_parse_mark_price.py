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


def _verified(data_dir, key, text) -> dict:
    """One archive as a download job leaves it: the zip, its .verified marker, the report
    entry."""
    buf = BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(key.rsplit("/", 1)[1].replace(".zip", ".csv"), text)
    path = layout.aws_path(data_dir, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    layout.verified_marker(path).write_text("")
    return {key: {"sha256": hashlib.sha256(buf.getvalue()).hexdigest()}}


def _day_rows(day_ms, volume) -> str:
    return "\n".join(
        f"{day_ms + i * 60000},100.5,101.0,99.0,100.25,{volume},{day_ms + i * 60000 + 59999},"
        f"{volume * 100},{3 if volume else 0},{volume / 2},{volume * 50},0"
        for i in range(1440)
    )


def test_kline_layout_datasets_keep_their_own_quality_record(tmp_path):
    # Before, markPriceKlines (and index/premium) wrote their quality record to the klines'
    # path lakehouse/quality/{T}/{I}/{SYM}.pqt: configured together, each parse replaced
    # the symbol's kline quality record (read by the report and the `quality` view) with
    # its own days.
    data_dir, symbol = tmp_path / "data", "BTCUSDT"
    klines = _verified(
        data_dir,
        f"data/futures/um/daily/klines/{symbol}/1m/{symbol}-1m-2024-01-01.zip",
        HEADER + "\n" + _day_rows(DAY_MS, 2.0) + "\n",
    )
    marks = {}
    for n, day in enumerate(("2024-01-01", "2024-01-02")):
        marks |= _verified(
            data_dir,
            f"data/futures/um/daily/markPriceKlines/{symbol}/1m/{symbol}-1m-{day}.zip",
            HEADER + "\n" + _day_rows(DAY_MS + n * 86_400_000, 0) + "\n",
        )

    def parse(dataset, files):
        return run_parse_klines(
            trade_type="um_futures", symbol=symbol, interval="1m", data_dir=data_dir,
            download_report={"files": files}, report_path=tmp_path / f"{dataset}.json",
            stats_path=tmp_path / f"{dataset}-stats.json", dataset=dataset,
        )  # fmt: skip

    parse("klines", klines)
    kline_record = layout.quality_path(data_dir, "um_futures", "1m", symbol)
    before = pq.read_table(kline_record)
    assert before.num_rows == 1  # one day of klines
    parse("markPriceKlines", marks)
    assert pq.read_table(kline_record).equals(before)
    mark_record = layout.quality_path(data_dir, "um_futures", "1m", symbol, "markPriceKlines")
    assert mark_record != kline_record
    assert pq.read_table(mark_record).num_rows == 2  # its two days
    report = json.loads((tmp_path / "markPriceKlines.json").read_text())
    assert report["quality"]["days"] == 2
    # The klines' own report still measures the klines' day.
    parse("klines", klines)
    assert pq.read_table(kline_record).equals(before)
