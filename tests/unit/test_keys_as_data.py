"""Archive keys are data: exact names only in the listing, percent-encoded in URLs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from crypto_lakehouse_emulator import Emulator

from crypto_lakehouse.archive.listing import key_refusal, run_listing
from crypto_lakehouse.archive.sync import _Syncer

DAILY = "data/spot/daily/klines/BTCUSDT/1m/"
MONTHLY = "data/spot/monthly/klines/BTCUSDT/1m/"
FUNDING = "data/futures/um/monthly/fundingRate/BTCUSDT/"


@pytest.mark.parametrize(
    "prefix, name",
    [
        (DAILY, "BTCUSDT-1m-2024-01-31.zip"),
        (DAILY, "BTCUSDT-1m-2024-02-29.zip.CHECKSUM"),
        (MONTHLY, "BTCUSDT-1m-2024-02.zip"),
        (FUNDING, "BTCUSDT-fundingRate-2024-02.zip.CHECKSUM"),
    ],
)
def test_the_datasets_own_names_are_accepted(prefix, name):
    assert key_refusal(prefix + name, prefix, "BTCUSDT") is None


@pytest.mark.parametrize(
    "prefix, name, why",
    [
        (DAILY, "..BTCUSDT-1m-2024-01-01.zip", "is not this dataset's pattern"),
        (DAILY, "BTCUSDT-1m-2024-01-01%2F..%2F.zip", "is not this dataset's pattern"),
        (DAILY, "ETHUSDT-1m-2024-01-01.zip", "is not this dataset's pattern"),
        (DAILY, "BTCUSDT-1h-2024-01-01.zip", "is not this dataset's pattern"),
        (DAILY, "BTCUSDT-1m-2024-01.zip", "is not this dataset's pattern"),  # monthly name
        (MONTHLY, "BTCUSDT-1m-2024-01-01.zip", "is not this dataset's pattern"),
        (DAILY, "BTCUSDT-1m-2024-01-01.zip.bak", "is not this dataset's pattern"),
        (DAILY, "BTCUSDT-1m-2023-02-29.zip", "is not a calendar date"),
        (FUNDING, "BTCUSDT-fundingRate-2024-13.zip", "is not a calendar date"),
        (DAILY, "x/BTCUSDT-1m-2024-01-01.zip", "not directly in the listed folder"),
    ],
)
def test_anything_else_is_refused_with_a_reason(prefix, name, why):
    assert why in key_refusal(prefix + name, prefix, "BTCUSDT")


def test_keys_are_percent_encoded_in_urls():
    syncer = _Syncer(
        data_dir="/nonexistent",
        archive_url="http://h:1/",
        max_retries=0,
        timeout_s=1,
        listing={},
        local_files=None,
    )
    assert syncer.url(DAILY + "BTCUSDT-1m-2024-01-01.zip") == (
        "http://h:1/" + DAILY + "BTCUSDT-1m-2024-01-01.zip"
    )
    assert syncer.url("a/b%2Fc?d#e f.zip") == "http://h:1/a/b%252Fc%3Fd%23e%20f.zip"


def test_listing_refuses_hostile_names_once_and_does_not_count_them(tmp_path):
    mirror = tmp_path / "mirror"
    good = [DAILY + "BTCUSDT-1m-2024-01-01.zip", DAILY + "BTCUSDT-1m-2024-01-01.zip.CHECKSUM"]
    hostile = [DAILY + "..BTCUSDT-1m-2024-01-02.zip", DAILY + "BTCUSDT-1m-2024-01-03%2F.zip"]
    for key in good + hostile:
        (mirror / key).parent.mkdir(parents=True, exist_ok=True)
        (mirror / key).write_bytes(b"x")
    out = tmp_path / "out"
    with Emulator(mirror_dir=mirror) as emu:
        stats = run_listing(
            trade_type="spot", dataset="klines", interval="1m", symbols=["BTCUSDT"],
            listing_url=emu.base_url, out_index=out / "klines-1m.json",
            details_dir=out / "klines-1m", concurrency=2, timeout_s=5, max_retries=0,
        )  # fmt: skip
    index = json.loads((out / "klines-1m.json").read_text())
    assert [r["key"] for r in index["refused_files"]] == sorted(hostile)
    assert all("is not this dataset's pattern" in r["reason"] for r in index["refused_files"])
    details = json.loads(Path(out / "klines-1m" / "BTCUSDT.json").read_text())
    assert [d["key"] for d in details] == good
    assert index["symbols"]["BTCUSDT"]["n_files"] == 2 and stats["n_files"] == 2
    assert stats["n_refused_files"] == 2
