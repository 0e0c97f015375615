"""The dataset registry: klines and funding as data, and a new dataset added by the registry
alone (in the test) is listed and downloaded without touching any other module."""

import hashlib
import json
import zipfile
from io import BytesIO

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crypto_lakehouse import datasets, layout
from crypto_lakehouse.archive import http
from crypto_lakehouse.archive.listing import run_listing
from crypto_lakehouse.archive.sync import dataset_tag, run_sync
from crypto_lakehouse.parse.ticks import run_parse_ticks


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    monkeypatch.setattr(http, "BACKOFF_BASE_S", 0.001)


# Keys spelt out by hand from binance-facts §1.1 (not built by the code under test).
@pytest.mark.parametrize(
    ("built", "expected"),
    [
        (
            lambda: layout.daily_kline_key("spot", "BTCUSDT", "1m", "2024-01-02"),
            "data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01-02.zip",
        ),
        (
            lambda: layout.monthly_kline_key("cm_futures", "BTCUSD_PERP", "1h", "2024-01"),
            "data/futures/cm/monthly/klines/BTCUSD_PERP/1h/BTCUSD_PERP-1h-2024-01.zip",
        ),
        (
            lambda: layout.funding_key("um_futures", "BTCUSDT", "2026-08"),
            "data/futures/um/monthly/fundingRate/BTCUSDT/BTCUSDT-fundingRate-2026-08.zip",
        ),
        (lambda: layout.kline_symbols_prefix("um_futures"), "data/futures/um/daily/klines/"),
        (
            lambda: layout.funding_symbols_prefix("cm_futures"),
            "data/futures/cm/monthly/fundingRate/",
        ),
    ],
)
def test_klines_and_funding_keys_are_the_archive_s(built, expected):
    assert built() == expected


def test_tags_and_their_split():
    assert dataset_tag("klines", "1m") == "klines-1m"
    assert dataset_tag("klines-1m", "1m") == "klines-1m"
    assert dataset_tag("funding", "1m") == "funding"
    assert datasets.split_tag("klines-15m") == (datasets.KLINES, "15m")
    assert datasets.split_tag("funding") == (datasets.FUNDING, None)
    with pytest.raises(ValueError, match="does not match interval"):
        dataset_tag("klines-5m", "1m")
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        dataset_tag("nope", None)
    with pytest.raises(ValueError, match="only for futures"):
        layout.funding_symbols_prefix("spot")


def test_name_patterns_accept_only_the_folder_s_own_names():
    daily = layout.archive_name_re("data/spot/daily/klines/BTCUSDT/1m/", "BTCUSDT")
    assert daily.match("BTCUSDT-1m-2024-01-02.zip")
    assert daily.match("BTCUSDT-1m-2024-01-02.zip.CHECKSUM")
    assert not daily.match("BTCUSDT-1m-2024-01.zip")
    assert not daily.match("BTCUSDT-5m-2024-01-02.zip")
    funding = layout.archive_name_re("data/futures/um/monthly/fundingRate/BTCUSDT/", "BTCUSDT")
    assert funding.match("BTCUSDT-fundingRate-2024-01.zip")
    assert not funding.match("BTCUSDT-fundingRate-2024-01-02.zip")
    assert layout.archive_name_re("data/spot/daily/unknownThing/BTCUSDT/", "BTCUSDT") is None
    assert layout.archive_name_re("data/futures/um/daily/fundingRate/BTCUSDT/", "BTCUSDT") is None


# ---------------------------------------------------------------- a dataset added in the test
@pytest.fixture
def fake_dataset():
    entry = datasets.register(
        datasets.Dataset(
            name="fakeTicks",
            archive_name="fakeTicksArchive",
            markets=("um_futures",),
            periods=(datasets.DAILY,),
            columns=("id", "price", "time"),
            id_column="id",
            time_column="time",
            price_columns=("price",),
            partition="day",
        )
    )
    yield entry
    datasets.unregister(entry.name)


def _publish(mirror, key, csv: bytes):
    """One zip and its CHECKSUM as the archive publishes them (digest + two spaces + name)."""
    buf = BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(key.rsplit("/", 1)[1].replace(".zip", ".csv"), csv)
    data = buf.getvalue()
    path = mirror / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    name = path.name
    (mirror / f"{key}.CHECKSUM").write_text(f"{hashlib.sha256(data).hexdigest()}  {name}\n")
    return data


def test_fake_dataset_from_the_registry_alone_is_listed_downloaded_and_parsed(
    tmp_path, emulator, fake_dataset
):
    mirror = tmp_path / "mirror"
    folder = "data/futures/um/daily/fakeTicksArchive/ETHUSDT/"
    keys = [f"{folder}ETHUSDT-fakeTicksArchive-2024-03-0{d}.zip" for d in (1, 2)]
    day_ms = {1: 1709251200000, 2: 1709337600000}  # 2024-03-01 and 2024-03-02, 00:00 UTC
    published = {
        k: _publish(mirror, k, f"{d},2.5,{day_ms[d] + 5}\n{d + 10},2.75,{day_ms[d] + 9}\n".encode())
        for d, k in zip((1, 2), keys, strict=True)
    }
    # A stray name in the folder is not this dataset's and is refused by the name pattern.
    (mirror / folder / "notes.txt").write_text("x")
    emu = emulator(mirror_dir=mirror)

    index = tmp_path / "listing" / "fakeTicks.json"
    details = tmp_path / "listing" / "fakeTicks"
    run_listing(
        trade_type="um_futures", dataset="fakeTicks", interval=None, symbols="all",
        listing_url=emu.base_url, out_index=index, details_dir=details, concurrency=2,
        timeout_s=5, max_retries=1,
    )  # fmt: skip
    assert list(json.loads(index.read_text())["symbols"]) == ["ETHUSDT"]
    listed = {e["key"] for e in json.loads((details / "ETHUSDT.json").read_text())}
    assert listed == set(keys) | {f"{k}.CHECKSUM" for k in keys}

    data_dir = tmp_path / "data"
    run_sync(
        trade_type="um_futures", dataset="fakeTicks", interval=None, symbol="ETHUSDT",
        details_path=details / "ETHUSDT.json", data_dir=data_dir, archive_url=emu.base_url,
        start_date=None, end_date=None, use_monthly_klines=False, concurrency=2,
        max_retries=1, timeout_s=5, report_path=tmp_path / "report.json",
        stats_path=tmp_path / "stats.json",
    )  # fmt: skip
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["dataset"] == "fakeTicks" and report["interval"] is None
    assert sorted(report["files"]) == keys
    for key, data in published.items():
        local = data_dir / "aws_data" / key
        assert local.read_bytes() == data
        assert (data_dir / "aws_data" / f"{key}.verified").exists()

    run_parse_ticks(
        trade_type="um_futures", dataset="fakeTicks", symbol="ETHUSDT", data_dir=data_dir,
        download_report=tmp_path / "report.json", report_path=tmp_path / "parse.json",
    )  # fmt: skip
    day1 = pq.read_table(data_dir / "parsed_data/um_futures/fakeTicks/ETHUSDT/20240301.pqt")
    day2 = pq.read_table(data_dir / "parsed_data/um_futures/fakeTicks/ETHUSDT/20240302.pqt")
    assert day1.column("id").to_pylist() == [1, 11]
    assert day2.column("price").to_pylist() == [2.5, 2.75]
    assert day2.column("time").cast(pa.int64()).to_pylist() == [1709337600005, 1709337600009]
