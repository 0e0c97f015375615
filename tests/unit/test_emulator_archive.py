"""The emulator's archive side (S3 listing, objects, faults) and the archive file generators."""

from __future__ import annotations

import csv
import hashlib
import io
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
import zipfile
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import pytest
import requests
from crypto_lakehouse_emulator import Faults, SyntheticUniverse
from crypto_lakehouse_emulator import generate as gen
from crypto_lakehouse_emulator.mirrors import real_mirror

from tests.conftest import FIXTURES

NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
LEGACY_MIRROR = FIXTURES / "legacy-v1-real" / "mirror"
SPOT_DIR = "data/spot/daily/klines/BTCUSDT/1m/"
SPOT_0101 = SPOT_DIR + "BTCUSDT-1m-2020-01-01.zip"


def _list(base_url: str, prefix: str, marker: str | None = None, bucket_path: str = "", **extra):
    params = {"delimiter": "/", "prefix": prefix, **extra}
    if marker is not None:
        params["marker"] = marker
    r = requests.get(f"{base_url}/{bucket_path}", params=params, timeout=10)
    assert r.status_code == 200, r.text
    root = ET.fromstring(r.content)
    assert root.tag == NS + "ListBucketResult"
    return root


def _page(root):
    keys = [c.findtext(NS + "Key") for c in root.findall(NS + "Contents")]
    prefixes = [p.findtext(NS + "Prefix") for p in root.findall(NS + "CommonPrefixes")]
    return keys, prefixes, root.findtext(NS + "IsTruncated"), root.findtext(NS + "NextMarker")


def _list_all(base_url: str, prefix: str):
    """Follow NextMarker like a client; returns (entries in order, page sizes)."""
    entries, sizes, marker = [], [], None
    while True:
        keys, prefixes, truncated, next_marker = _page(_list(base_url, prefix, marker))
        entries += sorted(keys + prefixes)
        sizes.append(len(keys) + len(prefixes))
        if truncated == "false":
            assert next_marker is None
            return entries, sizes
        assert truncated == "true" and next_marker
        marker = next_marker


@pytest.fixture
def legacy(emulator):
    return emulator(mirror_dir=LEGACY_MIRROR)


# ---------------------------------------------------------------- listing
def test_listing_paginates_over_1000_keys_in_one_folder(tmp_path, emulator):
    folder = tmp_path / "data/spot/daily/klines/XUSDT/1m"
    folder.mkdir(parents=True)
    names = [f"XUSDT-1m-{i:05d}.zip" for i in range(1234)]
    for name in names:
        (folder / name).write_bytes(name.encode())
    emu = emulator(mirror_dir=tmp_path)
    entries, sizes = _list_all(emu.base_url, "data/spot/daily/klines/XUSDT/1m/")
    expected = sorted(f"data/spot/daily/klines/XUSDT/1m/{n}" for n in names)
    assert entries == expected  # each key once, lexicographic order across pages
    assert sizes == [1000, 234]
    assert emu.counts["list"] == 2


def test_synthetic_folder_paginates_by_day(emulator):
    universe = SyntheticUniverse(n_um=1, days=1100, start="2021-01-01")
    emu = emulator(listing=universe)
    sym = universe.symbols("um_futures")[0]
    entries, sizes = _list_all(emu.base_url, f"data/futures/um/daily/klines/{sym}/1m/")
    assert sizes == [1000, 1000, 200]
    days = [universe.day(j) for j in range(1100)]
    assert days[-1] == "2024-01-05"  # 2021-01-01 + 3 × 365 days = 2024-01-01, + 4 more
    base = f"data/futures/um/daily/klines/{sym}/1m/{sym}-1m-"
    assert entries == [f"{base}{d}.zip{ext}" for d in days for ext in ("", ".CHECKSUM")]


def test_common_prefixes_count_toward_the_page_limit(emulator):
    universe = SyntheticUniverse(n_spot=1500, days=1)
    emu = emulator(listing=universe)
    entries, sizes = _list_all(emu.base_url, "data/spot/daily/klines/")
    assert sizes == [1000, 500]
    assert entries == [f"data/spot/daily/klines/{s}/" for s in universe.symbols("spot")]


def test_common_prefixes_and_contents(legacy):
    keys, prefixes, truncated, _ = _page(_list(legacy.base_url, "data/"))
    assert (keys, prefixes, truncated) == ([], ["data/futures/", "data/spot/"], "false")
    keys, prefixes, _, _ = _page(_list(legacy.base_url, SPOT_DIR))
    assert prefixes == []
    assert keys == sorted(
        p.relative_to(LEGACY_MIRROR).as_posix() for p in (LEGACY_MIRROR / SPOT_DIR).iterdir()
    )
    assert len(keys) == 10  # 5 days × (zip + CHECKSUM)
    # Without trailing slash the folder itself is the common prefix.
    _, prefixes, _, _ = _page(_list(legacy.base_url, "data/spot/daily/klines/BTC"))
    assert prefixes == ["data/spot/daily/klines/BTCUSDT/"]


def test_single_entry_listing_and_bucket_path(legacy):
    root = _list(
        legacy.base_url, "data/futures/cm/daily/klines/", bucket_path="data.binance.vision"
    )
    assert _page(root)[:3] == ([], ["data/futures/cm/daily/klines/BTCUSD_PERP/"], "false")
    assert root.findtext(NS + "Name") == "data.binance.vision"
    assert root.findtext(NS + "Delimiter") == "/"
    assert root.findtext(NS + "MaxKeys") == "1000"
    one = "data/futures/um/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2022-09-05.zip"
    keys, prefixes, _, _ = _page(_list(legacy.base_url, one))
    assert (keys, prefixes) == ([one, one + ".CHECKSUM"], [])
    keys, _, _, _ = _page(_list(legacy.base_url, one + ".C"))
    assert keys == [one + ".CHECKSUM"]
    assert _page(_list(legacy.base_url, "data/futures/um/monthly/fundingRate/"))[:2] == ([], [])


def test_marker_and_max_keys(legacy):
    keys, _, truncated, next_marker = _page(_list(legacy.base_url, SPOT_DIR, **{"max-keys": "3"}))
    assert len(keys) == 3 and truncated == "true" and next_marker == keys[-1]
    rest, _, truncated, _ = _page(_list(legacy.base_url, SPOT_DIR, marker=next_marker))
    assert truncated == "false" and len(rest) == 7 and rest[0] > next_marker
    # Entries strictly greater than the marker: a marker equal to the last key gives nothing.
    assert _page(_list(legacy.base_url, SPOT_DIR, marker=rest[-1]))[0] == []


def test_contents_metadata_from_file(tmp_path, emulator):
    key = "data/spot/daily/klines/XUSDT/1m/XUSDT-1m-2020-01-01.zip"
    body = (FIXTURES / "real/spot/BTCUSDT-1m-2020-01-01.zip").read_bytes()
    (tmp_path / key).parent.mkdir(parents=True)
    (tmp_path / key).write_bytes(body)
    stamp = datetime(2026, 4, 1, 8, 6, 34, tzinfo=timezone.utc).timestamp()
    os.utime(tmp_path / key, (stamp, stamp))
    emu = emulator(mirror_dir=tmp_path)
    (c,) = _list(emu.base_url, key).findall(NS + "Contents")
    assert c.findtext(NS + "LastModified") == "2026-04-01T08:06:34.000Z"
    assert c.findtext(NS + "ETag") == f'"{hashlib.md5(body).hexdigest()}"'
    assert c.findtext(NS + "Size") == str(len(body))
    assert c.findtext(NS + "StorageClass") == "STANDARD"
    # A re-upload: new mtime is visible in the next listing; the override table wins.
    os.utime(tmp_path / key, (stamp + 86400, stamp + 86400))
    (c,) = _list(emu.base_url, key).findall(NS + "Contents")
    assert c.findtext(NS + "LastModified") == "2026-04-02T08:06:34.000Z"
    emu.last_modified[key] = "2027-01-02T03:04:05Z"
    (c,) = _list(emu.base_url, key).findall(NS + "Contents")
    assert c.findtext(NS + "LastModified") == "2027-01-02T03:04:05.000Z"


# ---------------------------------------------------------------- objects
def test_get_head_and_404(legacy):
    expected = (LEGACY_MIRROR / SPOT_0101).read_bytes()
    r = requests.get(f"{legacy.base_url}/{SPOT_0101}", timeout=10)
    assert r.status_code == 200 and r.content == expected
    r = requests.get(f"{legacy.base_url}/data.binance.vision/{SPOT_0101}", timeout=10)
    assert r.content == expected
    r = requests.head(f"{legacy.base_url}/{SPOT_0101}", timeout=10)
    assert r.status_code == 200 and int(r.headers["Content-Length"]) == len(expected)
    r = requests.get(f"{legacy.base_url}/{SPOT_DIR}BTCUSDT-1m-2019-12-31.zip", timeout=10)
    assert r.status_code == 404
    assert ET.fromstring(r.content).findtext("Code") == "NoSuchKey"
    assert requests.get(f"{legacy.base_url}/{SPOT_DIR}", timeout=10).status_code == 404
    assert legacy.counts["get"] == 4 and legacy.counts["head"] == 1
    assert legacy.counts["get_bytes"] == 2 * len(expected)
    assert legacy.get_counts[SPOT_0101] == 2
    legacy.reset_counts()
    assert legacy.counts["get"] == 0 and legacy.get_counts[SPOT_0101] == 0


def test_range_requests(legacy):
    expected = (LEGACY_MIRROR / SPOT_0101).read_bytes()
    url = f"{legacy.base_url}/{SPOT_0101}"
    r = requests.get(url, headers={"Range": "bytes=100-"}, timeout=10)
    assert r.status_code == 206 and r.content == expected[100:]
    assert r.headers["Content-Range"] == f"bytes 100-{len(expected) - 1}/{len(expected)}"
    r = requests.get(url, headers={"Range": "bytes=0-9"}, timeout=10)
    assert r.status_code == 206 and r.content == expected[:10]
    r = requests.get(url, headers={"Range": "bytes=-5"}, timeout=10)
    assert r.content == expected[-5:]
    r = requests.get(url, headers={"Range": f"bytes={len(expected)}-"}, timeout=10)
    assert r.status_code == 416


def test_many_concurrent_connections(legacy):
    expected = hashlib.sha256((LEGACY_MIRROR / SPOT_0101).read_bytes()).hexdigest()

    def fetch(_):
        with requests.Session() as s:
            return [
                hashlib.sha256(s.get(f"{legacy.base_url}/{SPOT_0101}").content).hexdigest()
                for _ in range(3)
            ]

    with ThreadPoolExecutor(64) as pool:
        results = [h for hs in pool.map(fetch, range(64)) for h in hs]
    assert results == [expected] * 192
    assert legacy.counts["get"] == 192 and legacy.get_counts[SPOT_0101] == 192


# ---------------------------------------------------------------- faults
def _sha_ok(base_url: str, key: str) -> bool:
    body = requests.get(f"{base_url}/{key}", timeout=10).content
    line = requests.get(f"{base_url}/{key}.CHECKSUM", timeout=10).text
    return hashlib.sha256(body).hexdigest() == line.split()[0]


def test_corrupt_first_then_correct(legacy):
    legacy.faults.corrupt_first = {SPOT_0101}
    assert not _sha_ok(legacy.base_url, SPOT_0101)
    assert _sha_ok(legacy.base_url, SPOT_0101)
    assert _sha_ok(legacy.base_url, SPOT_0101)
    assert legacy.counts["fault_corrupt"] == 1


def test_corrupt_first_means_first_body_served_not_first_request(legacy):
    key = SPOT_DIR + "BTCUSDT-1m-2020-01-02.zip"
    legacy.faults.corrupt_first = {key}
    legacy.faults.fail_always = {key}
    assert requests.get(f"{legacy.base_url}/{key}", timeout=10).status_code == 500
    legacy.faults.fail_always = set()
    assert not _sha_ok(legacy.base_url, key)
    assert _sha_ok(legacy.base_url, key)
    legacy.reset_counts()  # counters only: the key stays served
    assert _sha_ok(legacy.base_url, key)


def test_track_keys_off_keeps_totals_only(emulator):
    emu = emulator(mirror_dir=LEGACY_MIRROR)
    emu.track_keys = False
    assert requests.get(f"{emu.base_url}/{SPOT_0101}", timeout=10).status_code == 200
    assert emu.counts["get"] == 1 and not emu.get_counts


def test_corrupt_always(legacy):
    legacy.faults.corrupt_always = {SPOT_0101}
    assert [_sha_ok(legacy.base_url, SPOT_0101) for _ in range(3)] == [False] * 3
    body = requests.get(f"{legacy.base_url}/{SPOT_0101}", timeout=10).content
    assert len(body) == (LEGACY_MIRROR / SPOT_0101).stat().st_size


def test_missing_checksum(legacy):
    legacy.faults.missing_checksum = {SPOT_0101}
    assert requests.get(f"{legacy.base_url}/{SPOT_0101}.CHECKSUM", timeout=10).status_code == 404
    assert requests.get(f"{legacy.base_url}/{SPOT_0101}", timeout=10).status_code == 200
    keys = _page(_list(legacy.base_url, SPOT_DIR))[0]
    assert SPOT_0101 in keys and SPOT_0101 + ".CHECKSUM" not in keys and len(keys) == 9


def test_fail_always(legacy):
    legacy.faults.fail_always = {SPOT_0101}
    statuses = [
        requests.get(f"{legacy.base_url}/{SPOT_0101}", timeout=10).status_code for _ in range(5)
    ]
    assert statuses == [500] * 5
    assert requests.get(f"{legacy.base_url}/{SPOT_0101}.CHECKSUM", timeout=10).status_code == 200


def test_fail_rate_is_seeded_and_deterministic(legacy, emulator):
    keys = _page(_list(legacy.base_url, SPOT_DIR))[0]

    def run(emu):
        return [
            requests.get(f"{emu.base_url}/{k}", timeout=10).status_code
            for k in keys
            for _ in range(10)
        ]

    legacy.faults = Faults(fail_rate=0.3, seed=7)
    first = run(legacy)
    other = emulator(mirror_dir=LEGACY_MIRROR, faults=Faults(fail_rate=0.3, seed=7))
    assert run(other) == first
    assert set(first) <= {200, 500, 503}
    failures = sum(s != 200 for s in first)
    assert 10 <= failures <= 50  # 100 draws at p=0.3
    assert legacy.counts["fault_5xx"] == failures
    legacy.faults.fail_rate = 1.0
    assert requests.get(f"{legacy.base_url}/?prefix=data/", timeout=10).status_code in (500, 503)


def test_drop_mid_body(legacy):
    legacy.faults.drop_rate = 1.0
    with pytest.raises(requests.exceptions.RequestException):
        requests.get(f"{legacy.base_url}/{SPOT_0101}", timeout=10)
    assert legacy.counts["fault_drop"] == 1
    legacy.faults.drop_rate = 0.0
    assert _sha_ok(legacy.base_url, SPOT_0101)


def test_latency(legacy):
    legacy.faults.latency = 0.2
    t0 = time.monotonic()
    requests.get(f"{legacy.base_url}/{SPOT_0101}.CHECKSUM", timeout=10)
    assert time.monotonic() - t0 >= 0.2


class _Rest:
    def __init__(self):
        self.calls = []

    def handle(self, method, path, query, headers):
        self.calls.append((method, path, query))
        if path == "/api/v3/time":
            return 200, {"X-MBX-USED-WEIGHT-1M": "1"}, b'{"serverTime":1}'
        return None


def test_rest_dispatch_and_rest_faults(emulator):
    rest = _Rest()
    emu = emulator(rest=rest, faults=Faults(fail_rate=1.0))
    r = requests.get(f"{emu.base_url}/api/v3/time?a=1&b=x", timeout=10)
    assert (r.status_code, r.json(), r.headers["X-MBX-USED-WEIGHT-1M"]) == (
        200,
        {"serverTime": 1},
        "1",
    )
    assert rest.calls == [("GET", "/api/v3/time", {"a": "1", "b": "x"})]
    assert requests.get(f"{emu.base_url}/fapi/v1/nothing", timeout=10).status_code == 404
    emu.faults.apply_to_rest = True
    assert requests.get(f"{emu.base_url}/api/v3/time", timeout=10).status_code in (500, 503)
    assert emu.counts["rest"] == 3


# ---------------------------------------------------------------- generators
def _read_zip(path: Path) -> tuple[str, list[list[str]]]:
    with zipfile.ZipFile(path) as zf:
        (name,) = zf.namelist()
        return name, list(csv.reader(io.StringIO(zf.read(name).decode())))


def _checksum_ok(path: Path) -> bool:
    digest, name = Path(f"{path}.CHECKSUM").read_text().split()
    return name == path.name and digest == hashlib.sha256(path.read_bytes()).hexdigest()


def test_spot_kline_ms_before_2025_us_from_2025(tmp_path):
    k1 = gen.write_kline_day(tmp_path, "spot", "BTCUSDT", "1m", "2024-12-31")
    k2 = gen.write_kline_day(tmp_path, "spot", "BTCUSDT", "1m", "2025-01-01")
    assert k2 == "data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2025-01-01.zip"
    name, rows = _read_zip(tmp_path / k1)
    assert name == "BTCUSDT-1m-2024-12-31.csv" and len(rows) == 1440 and len(rows[0]) == 12
    assert rows[0][0] == "1735603200000" and rows[-1][6] == "1735689599999"
    name, rows = _read_zip(tmp_path / k2)
    assert name == "BTCUSDT-1m-2025-01-01.csv" and len(rows) == 1440
    assert rows[0][0] == "1735689600000000" and rows[0][6] == "1735689659999999"
    assert all(len(r[0]) == 16 and r[6].endswith("999999") for r in rows)
    assert all(int(b[0]) - int(a[0]) == 60_000_000 for a, b in zip(rows, rows[1:], strict=False))
    assert all(r[1].split(".")[1].__len__() == 8 for r in rows)  # spot prints 8 decimals
    for key in (k1, k2):
        assert _checksum_ok(tmp_path / key)
        assert not (tmp_path / f"{key}.CHECKSUM").read_bytes().endswith(b"\n")


@pytest.mark.parametrize(
    "trade_type,symbol", [("um_futures", "BTCUSDT"), ("cm_futures", "BTCUSD_PERP")]
)
def test_futures_kline_header_and_values(tmp_path, trade_type, symbol):
    key = gen.write_kline_day(
        tmp_path,
        trade_type,
        symbol,
        "1m",
        "2025-03-02",
        seed=3,
        missing=[10, 11],
        zero_volume=[100],
    )
    name, rows = _read_zip(tmp_path / key)
    assert name == f"{symbol}-1m-2025-03-02.csv"
    assert ",".join(rows[0]) == (
        "open_time,open,high,low,close,volume,close_time,quote_volume,count,"
        "taker_buy_volume,taker_buy_quote_volume,ignore"
    )
    data = rows[1:]
    assert len(data) == 1438
    opens = [int(r[0]) for r in data]
    start = int(datetime(2025, 3, 2, tzinfo=timezone.utc).timestamp() * 1000)
    expected_opens = [start + 60_000 * i for i in range(1440) if i not in (10, 11)]
    assert opens == expected_opens  # ms even in 2025 for futures
    assert all(int(r[6]) == int(r[0]) + 59_999 for r in data)
    for r in data:
        o, h, lo, c, v, q, n, tb, tq = (
            float(x) for x in (r[1], r[2], r[3], r[4], r[5], r[7], r[8], r[9], r[10])
        )
        assert lo <= min(o, c) and max(o, c) <= h and lo > 0
        assert 0 <= tb <= v and 0 <= tq <= q
    idle = next(r for r in data if int(r[0]) == start + 100 * 60_000)
    assert len({idle[1], idle[2], idle[3], idle[4]}) == 1 and float(idle[5]) == 0 and idle[8] == "0"
    if trade_type == "cm_futures":
        assert all(r[5].isdigit() and r[9].isdigit() for r in data)  # contracts
    # The file holds exactly the generator's intended values.
    frame = gen.kline_frame(
        trade_type, symbol, "1m", "2025-03-02", seed=3, missing=[10, 11], zero_volume=[100]
    )
    for col, idx in (
        ("open", 1),
        ("high", 2),
        ("low", 3),
        ("close", 4),
        ("volume", 5),
        ("quote_volume", 7),
    ):
        assert [float(r[idx]) for r in data] == frame[col].tolist()
    assert _checksum_ok(tmp_path / key)
    assert (tmp_path / f"{key}.CHECKSUM").read_bytes().endswith(b".zip\n")


def test_days_join_up_and_seed_is_reproducible(tmp_path):
    d1 = gen.kline_frame("spot", "ETHUSDT", "1h", "2024-02-28", seed=1)
    d2 = gen.kline_frame("spot", "ETHUSDT", "1h", "2024-02-29", seed=1)
    assert len(d1) == 24
    assert abs(d2["open"].iloc[0] / d1["close"].iloc[-1] - 1) < 1e-3
    assert d1.equals(gen.kline_frame("spot", "ETHUSDT", "1h", "2024-02-28", seed=1))
    assert not d1.equals(gen.kline_frame("spot", "ETHUSDT", "1h", "2024-02-28", seed=2))


def test_funding_month(tmp_path):
    key = gen.write_funding_month(tmp_path, "um_futures", "BTCUSDT", "2026-08")
    assert key == "data/futures/um/monthly/fundingRate/BTCUSDT/BTCUSDT-fundingRate-2026-08.zip"
    name, rows = _read_zip(tmp_path / key)
    assert name == "BTCUSDT-fundingRate-2026-08.csv"
    assert rows[0] == ["calc_time", "funding_interval_hours", "last_funding_rate"]
    assert len(rows) == 1 + 31 * 3
    hours = [int(r[0]) // 3_600_000 for r in rows[1:]]
    assert (
        hours[0] * 3_600_000 == 1785542400000
    )  # 2026-08-01 00:00 UTC (first row of the real file)
    assert all(b - a == 8 for a, b in zip(hours, hours[1:], strict=False))
    assert all(r[1] == "8" and len(r[2].split(".")[1]) == 8 for r in rows[1:])
    assert _checksum_ok(tmp_path / key)
    with pytest.raises(ValueError, match="futures only"):
        gen.write_funding_month(tmp_path, "spot", "BTCUSDT", "2026-08")


def test_build_mirror_served_by_emulator(tmp_path, emulator):
    spec = {
        "spot": {
            "symbols": ["AUSDT", "BUSDT"],
            "interval": "1h",
            "start": "2024-01-30",
            "end": "2024-02-02",
        },
        "um_futures": {
            "symbols": ["AUSDT"],
            "intervals": ["1h"],
            "start": "2024-01-01",
            "end": "2024-01-01",
            "funding_months": ["2024-01"],
        },
    }
    keys = gen.build_mirror(tmp_path, spec)
    assert len(keys) == 2 * 4 + 1 + 1
    emu = emulator(mirror_dir=tmp_path)
    _, prefixes, _, _ = _page(_list(emu.base_url, "data/spot/daily/klines/"))
    assert prefixes == ["data/spot/daily/klines/AUSDT/", "data/spot/daily/klines/BUSDT/"]
    listed = _page(_list(emu.base_url, "data/spot/daily/klines/AUSDT/1h/"))[0]
    assert [k for k in listed if k.endswith(".zip")] == [
        f"data/spot/daily/klines/AUSDT/1h/AUSDT-1h-{d}.zip"
        for d in ("2024-01-30", "2024-01-31", "2024-02-01", "2024-02-02")
    ]
    assert all(_sha_ok(emu.base_url, k) for k in keys)


# ---------------------------------------------------------------- synthetic universe and real mirror
def test_synthetic_sizes_and_checksums(emulator):
    universe = SyntheticUniverse(n_spot=3, n_um=2, n_cm=2, days=3, start="2024-12-31")
    emu = emulator(listing=universe)
    checked = 0
    for trade_type, market in (
        ("spot", "spot"),
        ("um_futures", "futures/um"),
        ("cm_futures", "futures/cm"),
    ):
        sym = universe.symbols(trade_type)[-1]
        prefixes = [f"data/{market}/daily/klines/{sym}/1m/"]
        if trade_type != "spot":
            prefixes.append(f"data/{market}/monthly/fundingRate/{sym}/")
        for prefix in prefixes:
            contents = _list(emu.base_url, prefix).findall(NS + "Contents")
            assert contents
            for c in contents:
                key = c.findtext(NS + "Key")
                body = requests.get(f"{emu.base_url}/{key}", timeout=10).content
                assert len(body) == int(c.findtext(NS + "Size")), key
                if key.endswith(".zip"):
                    assert _sha_ok(emu.base_url, key)
                    with zipfile.ZipFile(io.BytesIO(body)) as zf:
                        assert zf.namelist() == [key.rsplit("/", 1)[1][:-4] + ".csv"]
                    checked += 1
    # kline zips: 3 days × 3 markets; funding zips: 2 months (2024-12, 2025-01) × 2 futures
    assert checked == 3 * 3 + 2 * 2
    spot_2025 = requests.get(
        f"{emu.base_url}/data/spot/daily/klines/S000002USDT/1m/S000002USDT-1m-2025-01-01.zip",
        timeout=10,
    ).content
    with zipfile.ZipFile(io.BytesIO(spot_2025)) as zf:
        first = zf.read(zf.namelist()[0]).decode().split(",", 1)[0]
    assert first == "1735689600000000"
    assert (
        requests.get(
            f"{emu.base_url}/data/spot/daily/klines/S000003USDT/1m/S000003USDT-1m-2025-01-01.zip",
            timeout=10,
        ).status_code
        == 404
    )


def test_real_mirror_manifest_and_bytes(tmp_path, emulator):
    manifest = real_mirror(tmp_path, FIXTURES, extras=True)
    emu = emulator(mirror_dir=tmp_path)
    for key in manifest:
        body = requests.get(f"{emu.base_url}/{key}", timeout=10).content
        assert body == (tmp_path / key).read_bytes()
        if key.endswith(".zip"):
            assert _sha_ok(emu.base_url, key), key
    assert manifest[SPOT_0101] == "exact"
    assert (tmp_path / SPOT_0101).read_bytes() == (
        FIXTURES / "real/spot/BTCUSDT-1m-2020-01-01.zip"
    ).read_bytes()
    assert manifest[SPOT_DIR + "BTCUSDT-1m-2025-01-01.zip"].startswith("constructed")
    funding = "data/futures/um/monthly/fundingRate/BTCUSDT/BTCUSDT-fundingRate-2026-08.zip"
    with zipfile.ZipFile(tmp_path / funding) as zf:
        member = zf.read("BTCUSDT-fundingRate-2026-08.csv")
    assert (
        member
        == (FIXTURES / "real/futures_um/fundingRate/BTCUSDT-fundingRate-2026-08.csv").read_bytes()
    )


def test_cli_prints_base_url_and_serves(tmp_path):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "crypto_lakehouse_emulator",
            "--mirror",
            str(LEGACY_MIRROR),
            "--missing-checksum",
            SPOT_0101,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        base_url = proc.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:")
        assert requests.get(f"{base_url}/{SPOT_0101}", timeout=10).status_code == 200
        assert requests.get(f"{base_url}/{SPOT_0101}.CHECKSUM", timeout=10).status_code == 404
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_synthetic_fast_renderer_matches_general_formatter():
    from datetime import date

    from crypto_lakehouse_emulator.synthetic import render_funding_csv, render_kline_csv

    universe = SyntheticUniverse(n_spot=1, n_um=1, n_cm=1, days=1)
    for trade_type in ("spot", "um_futures", "cm_futures"):
        sym = universe.symbols(trade_type)[0]
        for day, unit in (("2024-12-31", "ms"), ("2025-01-01", "us")):
            frame = universe._kline_frame(trade_type, sym, "1m", date.fromisoformat(day))
            fast = render_kline_csv(frame, trade_type, unit)
            assert fast == gen.format_kline_csv(frame, trade_type, unit)
    frame = universe._funding_frame("cm_futures", universe.symbols("cm_futures")[0], "2024-02")
    assert render_funding_csv(frame) == gen.format_funding_csv(frame)
    assert len(frame) == 29 * 3
