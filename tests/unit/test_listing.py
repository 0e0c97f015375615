"""S3 ListObjects v1 parsing, pagination and the ``run_listing`` checkpoint."""

import datetime
import hashlib
import json
from pathlib import Path

import pytest
import requests
from crypto_lakehouse_emulator import Emulator, Faults

from crypto_lakehouse.archive import http
from crypto_lakehouse.archive.listing import (
    FileEntry,
    ListingError,
    list_dirs,
    list_files,
    list_prefix,
    parse_listing_page,
    run_listing,
    run_listings,
)

NS = "http://s3.amazonaws.com/doc/2006-03-01/"


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    monkeypatch.setattr(http, "BACKOFF_BASE_S", 0.001)


def _contents(key, size=10, lm="2024-01-02T03:04:05.000Z", etag='"abc"'):
    return (
        f"<Contents><Key>{key}</Key><LastModified>{lm}</LastModified>"
        f"<ETag>{etag.replace(chr(34), '&quot;')}</ETag><Size>{size}</Size>"
        "<StorageClass>STANDARD</StorageClass></Contents>"
    )


def _page(body, truncated=False, next_marker=None, ns=NS):
    xmlns = f' xmlns="{ns}"' if ns else ""
    nm = f"<NextMarker>{next_marker}</NextMarker>" if next_marker else ""
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult{xmlns}>'
        f"<Name>data.binance.vision</Name><Prefix>p/</Prefix><Marker></Marker>{nm}"
        f"<MaxKeys>1000</MaxKeys><Delimiter>/</Delimiter>"
        f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>{body}</ListBucketResult>"
    ).encode()


# ---------------------------------------------------------------- page parsing
@pytest.mark.parametrize("ns", [NS, None, "urn:other"])
def test_single_contents_entry_is_a_list_of_one_whatever_the_namespace(ns):
    page = parse_listing_page(_page(_contents("p/A.zip", 42), ns=ns))
    assert page.files == [FileEntry("p/A.zip", 42, "2024-01-02T03:04:05.000Z", '"abc"')]
    assert page.dirs == []
    assert page.is_truncated is False and page.next_marker is None


def test_single_common_prefix_is_a_list_of_one():
    page = parse_listing_page(_page("<CommonPrefixes><Prefix>p/BTCUSDT/</Prefix></CommonPrefixes>"))
    assert page.dirs == ["p/BTCUSDT/"]
    assert page.files == []


def test_common_prefixes_and_contents_are_kept_apart():
    body = (
        _contents("p/a.zip", 1)
        + _contents("p/a.zip.CHECKSUM", 2)
        + "<CommonPrefixes><Prefix>p/X/</Prefix></CommonPrefixes>"
        + "<CommonPrefixes><Prefix>p/Y/</Prefix></CommonPrefixes>"
    )
    page = parse_listing_page(_page(body, truncated=True, next_marker="p/Y/"))
    assert [f.key for f in page.files] == ["p/a.zip", "p/a.zip.CHECKSUM"]
    assert [f.size for f in page.files] == [1, 2]
    assert page.dirs == ["p/X/", "p/Y/"]
    assert page.is_truncated is True and page.next_marker == "p/Y/"


def test_empty_listing():
    page = parse_listing_page(_page(""))
    assert page.files == [] and page.dirs == [] and not page.is_truncated


@pytest.mark.parametrize(
    "xml, message",
    [
        (b"<html>oops", "not XML"),
        (
            b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>",
            "expected ListBucketResult, got Error Access Denied",
        ),
        (_page("<Contents><Key>p/a.zip</Key></Contents>"), "without Key or integer Size"),
        (_page("<Contents><Key>p/a.zip</Key><Size>x</Size></Contents>"), "integer Size"),
    ],
)
def test_bad_pages_raise_listing_error_naming_the_request(xml, message):
    with pytest.raises(ListingError, match=message) as info:
        parse_listing_page(xml, source="listing of 'p/'")
    assert "listing of 'p/'" in str(info.value)


# ---------------------------------------------------------------- pagination (stub session)
class _Resp:
    def __init__(self, status, body, url):
        self.status_code, self.content, self.url = status, body, url
        self.headers = {"Content-Length": str(len(body))}


class StubSession:
    """Answers listing GETs from a list of scripted (status | exception, body) steps."""

    def __init__(self, steps):
        self.steps = list(steps)
        self.params_seen = []

    def get(self, url, params=None, timeout=None):
        self.params_seen.append(dict(params or {}))
        status, body = self.steps.pop(0)
        if isinstance(status, Exception):
            raise status
        return _Resp(status, body, url)


def test_pagination_without_next_marker_uses_the_last_key():
    session = StubSession(
        [
            (200, _page(_contents("p/a") + _contents("p/b"), truncated=True)),
            (200, _page(_contents("p/c"), truncated=False)),
        ]
    )
    dirs, files = list_prefix(session, "http://x", "p/", timeout_s=1, max_retries=0)
    assert [f.key for f in files] == ["p/a", "p/b", "p/c"]
    assert dirs == []
    assert [p.get("marker") for p in session.params_seen] == [None, "p/b"]
    assert all(p["delimiter"] == "/" and p["prefix"] == "p/" for p in session.params_seen)


def test_pagination_marker_prefers_next_marker_and_falls_back_to_last_prefix():
    cp = "<CommonPrefixes><Prefix>p/{}/</Prefix></CommonPrefixes>"
    session = StubSession(
        [
            (200, _page(cp.format("A") + cp.format("B"), truncated=True, next_marker="p/B/")),
            (200, _page(cp.format("C"), truncated=True)),
            (200, _page(cp.format("D"))),
        ]
    )
    assert list_dirs(session, "http://x", "p", timeout_s=1, max_retries=0) == [
        "p/A/",
        "p/B/",
        "p/C/",
        "p/D/",
    ]
    assert [p.get("marker") for p in session.params_seen] == [None, "p/B/", "p/C/"]


def test_truncated_page_without_progress_is_an_error_not_a_loop():
    session = StubSession([(200, _page("", truncated=True))])
    with pytest.raises(ListingError, match="without a usable next marker"):
        list_files(session, "http://x", "p/", timeout_s=1, max_retries=0)


def test_transient_failures_are_retried_then_succeed():
    retries = []
    session = StubSession(
        [
            (requests.ConnectionError("reset"), b""),
            (503, b"<Error/>"),
            (200, _page(_contents("p/a"))),
        ]
    )
    files = list_files(
        session, "http://x", "p/", timeout_s=1, max_retries=2, on_retry=retries.append
    )
    assert [f.key for f in files] == ["p/a"]
    assert len(retries) == 2


def test_retries_are_bounded():
    session = StubSession([(500, b""), (500, b""), (500, b"")])
    with pytest.raises(http.TransientError, match="HTTP 500"):
        list_files(session, "http://x", "p/", timeout_s=1, max_retries=2)
    assert len(session.params_seen) == 3


def test_404_is_not_retried():
    session = StubSession([(404, b""), (200, _page(""))])
    with pytest.raises(http.NotFound):
        list_files(session, "http://x", "p/", timeout_s=1, max_retries=3)
    assert len(session.params_seen) == 1


# ---------------------------------------------------------------- against the emulator
def _make_mirror(root: Path, keys):
    for key in keys:
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(key.encode())


def test_more_than_1000_keys_are_paged_through(tmp_path):
    prefix = "data/spot/daily/klines/BTCUSDT/1m/"
    days = [f"2020-01-01+{i:04d}" for i in range(1201)]
    keys = [f"{prefix}BTCUSDT-1m-{d}.zip{s}" for d in days for s in ("", ".CHECKSUM")]
    _make_mirror(tmp_path, keys)
    with Emulator(mirror_dir=tmp_path) as emu:
        session = http.new_session()
        files = list_files(session, emu.base_url, prefix, timeout_s=5, max_retries=0)
        assert emu.counts["list"] == 3  # 2402 keys: 1000 + 1000 + 402
    assert [f.key for f in files] == sorted(keys)
    assert all(f.size == len(f.key.encode()) for f in files)
    assert all(f.last_modified.endswith("Z") and f.etag.startswith('"') for f in files)


# ---------------------------------------------------------------- run_listing
SPOT_NAMES = ["BTCUSDT", "ETHUSDT", "ETHBTC", "USDCUSDT", "BTCUPUSDT", "SYRUPUSDT", "btcusdt"]


def _spot_mirror(root: Path):
    keys = []
    for sym in SPOT_NAMES:
        d = f"data/spot/daily/klines/{sym}/1m/"
        keys += [f"{d}{sym}-1m-2024-01-01.zip", f"{d}{sym}-1m-2024-01-01.zip.CHECKSUM"]
    keys += ["data/spot/daily/klines/ETHUSDT/1m/ETHUSDT-1m-2024-01-02.zip"]
    keys += ["data/spot/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2023-12.zip"]
    # A symbol without the requested interval: listed, kept, but no files.
    keys += ["data/spot/daily/klines/SOLUSDT/1s/SOLUSDT-1s-2024-01-01.zip"]
    _make_mirror(root, keys)


def _listing(emu, tmp_path, **kw):
    args = dict(
        trade_type="spot",
        dataset="klines",
        interval="1m",
        symbols="all",
        listing_url=emu.base_url,
        out_index=tmp_path / "out" / "klines-1m.json",
        details_dir=tmp_path / "out" / "klines-1m",
        include_monthly=False,
        concurrency=4,
        timeout_s=5,
        max_retries=1,
    )
    args.update(kw)
    stats = run_listing(**args)
    return stats, json.loads(Path(args["out_index"]).read_text())


def test_run_listing_all_applies_filters_and_writes_details(tmp_path):
    _spot_mirror(tmp_path / "mirror")
    with Emulator(mirror_dir=tmp_path / "mirror") as emu:
        stats, index = _listing(emu, tmp_path)
    assert sorted(index["symbols"]) == ["BTCUSDT", "ETHUSDT", "SYRUPUSDT"]
    assert index["refused"] == [
        {"name": "btcusdt", "reason": "invalid symbol name (expected [A-Z0-9_]+)"}
    ]
    assert [d["name"] for d in index["filtered_out"]] == ["BTCUPUSDT", "ETHBTC", "USDCUSDT"]
    assert index["no_files"] == ["SOLUSDT"]
    assert index["not_listed"] == []
    assert (index["trade_type"], index["dataset"], index["interval"]) == ("spot", "klines", "1m")
    details_dir = tmp_path / "out" / "klines-1m"
    assert sorted(p.name for p in details_dir.iterdir()) == [
        "BTCUSDT.json",
        "ETHUSDT.json",
        "SYRUPUSDT.json",
        "_index.state",  # the index again, for the next listing to resume from
    ]
    assert json.loads((details_dir / "_index.state").read_text()) == index
    eth = json.loads((details_dir / "ETHUSDT.json").read_text())
    assert [e["key"] for e in eth] == [
        "data/spot/daily/klines/ETHUSDT/1m/ETHUSDT-1m-2024-01-01.zip",
        "data/spot/daily/klines/ETHUSDT/1m/ETHUSDT-1m-2024-01-01.zip.CHECKSUM",
        "data/spot/daily/klines/ETHUSDT/1m/ETHUSDT-1m-2024-01-02.zip",
    ]
    assert set(eth[0]) == {"key", "size", "last_modified", "etag"}
    assert eth[0]["size"] == len(eth[0]["key"])
    digest = hashlib.sha256((details_dir / "ETHUSDT.json").read_bytes()).hexdigest()
    # bytes: the listed Size of its zips (not of the CHECKSUMs), read from the mirror's files
    zips = [e["key"] for e in eth if e["key"].endswith(".zip")]
    zip_bytes = sum((tmp_path / "mirror" / key).stat().st_size for key in zips)
    assert zip_bytes > 0
    assert index["symbols"]["ETHUSDT"] == {
        "digest": digest, "n_files": 3, "bytes": zip_bytes, "last_day": "2024-01-02"
    }  # fmt: skip
    # Daily only: the monthly BTCUSDT zip is not listed.
    assert index["symbols"]["BTCUSDT"]["n_files"] == 2
    assert stats["n_kept"] == 3 and stats["n_files"] == 7


def test_run_listing_is_deterministic_and_keeps_unchanged_details(tmp_path):
    _spot_mirror(tmp_path / "mirror")
    details = tmp_path / "out" / "klines-1m" / "BTCUSDT.json"
    with Emulator(mirror_dir=tmp_path / "mirror") as emu:
        _listing(emu, tmp_path)
        first_index = (tmp_path / "out" / "klines-1m.json").read_bytes()
        mtime = details.stat().st_mtime_ns
        _listing(emu, tmp_path)
    assert (tmp_path / "out" / "klines-1m.json").read_bytes() == first_index
    assert details.stat().st_mtime_ns == mtime


def test_run_listing_monthly_and_removal_of_stale_details(tmp_path):
    _spot_mirror(tmp_path / "mirror")
    stale = tmp_path / "out" / "klines-1m" / "OLDUSDT.json"
    stale.parent.mkdir(parents=True)
    stale.write_text("[]\n")
    with Emulator(mirror_dir=tmp_path / "mirror") as emu:
        _, index = _listing(emu, tmp_path, include_monthly=True)
    assert not stale.exists()
    btc = json.loads((tmp_path / "out" / "klines-1m" / "BTCUSDT.json").read_text())
    assert [e["key"] for e in btc][
        -1
    ] == "data/spot/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2023-12.zip"
    assert index["symbols"]["BTCUSDT"]["n_files"] == 3


def test_run_listing_explicit_symbols_reports_not_listed_and_refused(tmp_path):
    _spot_mirror(tmp_path / "mirror")
    with Emulator(mirror_dir=tmp_path / "mirror") as emu:
        _, index = _listing(emu, tmp_path, symbols=["ETHBTC", "DOGEUSDT", "bad name"])
    # An explicit list is not filtered: the user asked for ETHBTC.
    assert list(index["symbols"]) == ["ETHBTC"]
    assert index["not_listed"] == ["DOGEUSDT"]
    assert [r["name"] for r in index["refused"]] == ["bad name"]
    assert index["filtered_out"] == []


def test_configured_symbols_are_listed_while_the_symbol_folders_are(tmp_path):
    # One round trip less per listing: with configured symbols, their folders are asked for
    # while the listing of the symbol folders is still on the way (both at the server at
    # once), not after it; at 50-200 ms from the archive each round trip counts.
    _spot_mirror(tmp_path / "mirror")
    with Emulator(mirror_dir=tmp_path / "mirror", faults=Faults(latency=0.3)) as emu:
        _, index = _listing(emu, tmp_path, symbols=["ETHUSDT"])
        assert emu.counts["list"] == 2
        assert emu.peak_in_flight == 2
    assert list(index["symbols"]) == ["ETHUSDT"]
    assert index["symbols"]["ETHUSDT"]["n_files"] == 3


def test_the_listing_keeps_its_requests_in_flight_within_its_concurrency(tmp_path):
    # The overlap above takes one of the listing's request slots, it does not add one.
    _spot_mirror(tmp_path / "mirror")
    symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "SYRUPUSDT"]
    for concurrency in (1, 2, 3):
        with Emulator(mirror_dir=tmp_path / "mirror", faults=Faults(latency=0.1)) as emu:
            _, index = _listing(
                emu, tmp_path / str(concurrency), symbols=symbols, concurrency=concurrency
            )
            assert emu.peak_in_flight <= concurrency
        assert sorted(index["symbols"]) == ["BTCUSDT", "ETHUSDT", "SYRUPUSDT"]


def test_a_configured_symbol_not_listed_is_dropped_even_if_its_folder_listing_fails(tmp_path):
    # Its folder is asked for before the archive says it has no such symbol: that answer
    # (here a failure) must not fail the listing, nor make the symbol a failed one.
    _spot_mirror(tmp_path / "mirror")
    failing = "?data/spot/daily/klines/DOGEUSDT/1m/"
    with Emulator(mirror_dir=tmp_path / "mirror", faults=Faults(fail_always={failing})) as emu:
        stats, index = _listing(emu, tmp_path, symbols=["ETHUSDT", "DOGEUSDT"])
        assert emu.counts["fault_5xx"] > 0  # its folder was asked for
    assert list(index["symbols"]) == ["ETHUSDT"]
    assert index["not_listed"] == ["DOGEUSDT"]
    assert "failed" not in index and stats["n_failed"] == 0


def test_run_listing_funding_with_no_symbols_writes_a_valid_empty_index(tmp_path, caplog):
    _spot_mirror(tmp_path / "mirror")  # no funding prefixes at all (like the legacy fixture)
    with Emulator(mirror_dir=tmp_path / "mirror") as emu:
        stats, index = _listing(
            emu, tmp_path, trade_type="um_futures", dataset="funding", interval=None
        )
    assert index["symbols"] == {} and index["dataset"] == "funding"
    assert stats["n_kept"] == 0
    assert "no symbols" in caplog.text


def test_run_listing_funding_lists_monthly_funding_dirs(tmp_path):
    d = "data/futures/cm/monthly/fundingRate/"
    _make_mirror(
        tmp_path / "mirror",
        [
            f"{d}BTCUSD_PERP/BTCUSD_PERP-fundingRate-2024-01.zip",
            f"{d}BTCUSD_PERP/BTCUSD_PERP-fundingRate-2024-01.zip.CHECKSUM",
            f"{d}BTCUSD_250627/BTCUSD_250627-fundingRate-2024-01.zip",
        ],
    )
    with Emulator(mirror_dir=tmp_path / "mirror") as emu:
        _, index = _listing(
            emu, tmp_path, trade_type="cm_futures", dataset="funding", interval=None
        )
    assert index["symbols"]["BTCUSD_PERP"]["n_files"] == 2
    assert [d["name"] for d in index["filtered_out"]] == ["BTCUSD_250627"]


def test_funding_is_refused_for_spot(tmp_path):
    with pytest.raises(ValueError, match="only for futures"):
        run_listing(
            trade_type="spot", dataset="funding", interval=None, symbols="all",
            listing_url="http://127.0.0.1:9", out_index=tmp_path / "i.json",
            details_dir=tmp_path / "d",
        )  # fmt: skip


def test_listing_failure_of_one_symbol_writes_nothing_and_names_it(tmp_path):
    _spot_mirror(tmp_path / "mirror")
    failing = "?data/spot/daily/klines/ETHUSDT/1m/"
    with Emulator(mirror_dir=tmp_path / "mirror", faults=Faults(fail_always={failing})) as emu:
        with pytest.raises(ListingError, match="ETHUSDT") as info:
            _listing(emu, tmp_path)
    assert "1 of 4 symbols" in str(info.value)  # SOLUSDT counts until its files are known
    assert not (tmp_path / "out" / "klines-1m.json").exists()
    assert not (tmp_path / "out" / "klines-1m").exists()


def test_listing_survives_injected_5xx(tmp_path):
    _spot_mirror(tmp_path / "mirror")
    with Emulator(mirror_dir=tmp_path / "mirror", faults=Faults(fail_rate=0.5, seed=4)) as emu:
        stats, index = _listing(emu, tmp_path, max_retries=8)
        assert emu.counts["fault_5xx"] > 0
    assert sorted(index["symbols"]) == ["BTCUSDT", "ETHUSDT", "SYRUPUSDT"]
    assert stats["retries"] == emu.counts["fault_5xx"]


# ---------------------------------------------------------------- run_listings (the checkpoint)
def _listing_args(emu, tmp_path, name, **kw):
    return dict(
        trade_type="spot", dataset="klines", interval="1m", symbols="all",
        listing_url=emu.base_url, out_index=tmp_path / name / "index.json",
        details_dir=tmp_path / name / "details", concurrency=4, timeout_s=5, max_retries=1,
    ) | kw  # fmt: skip


def test_run_listings_writes_each_index_as_its_own_listing_would(tmp_path):
    _spot_mirror(tmp_path / "mirror")
    with Emulator(mirror_dir=tmp_path / "mirror") as emu:
        alone = _listing_args(emu, tmp_path, "alone")
        run_listing(**alone)
        daily = _listing_args(emu, tmp_path, "daily")
        monthly = _listing_args(emu, tmp_path, "monthly", include_monthly=True)
        stats = run_listings(listings=[daily, monthly])
    assert set(stats) == {str(daily["out_index"]), str(monthly["out_index"])}
    assert daily["out_index"].read_bytes() == alone["out_index"].read_bytes()
    btc = json.loads((monthly["details_dir"] / "BTCUSDT.json").read_text())
    assert btc[-1]["key"] == "data/spot/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2023-12.zip"


def test_run_listings_records_a_failed_symbol_and_lists_the_others(tmp_path):
    _spot_mirror(tmp_path / "mirror")
    with Emulator(mirror_dir=tmp_path / "mirror") as emu:
        klines = _listing_args(emu, tmp_path, "klines")
        run_listings(listings=[klines])  # a complete listing first: ETHUSDT's details exist
    eth_details = (klines["details_dir"] / "ETHUSDT.json").read_bytes()
    failing = "?data/spot/daily/klines/ETHUSDT/1m/"
    with Emulator(mirror_dir=tmp_path / "mirror", faults=Faults(fail_always={failing})) as emu:
        klines = _listing_args(emu, tmp_path, "klines", listing_url=emu.base_url)
        funding = _listing_args(
            emu, tmp_path, "funding", trade_type="um_futures", dataset="funding", interval=None
        )
        stats = run_listings(listings=[klines, funding])  # no exception: the others go on
    assert stats[str(klines["out_index"])]["n_failed"] == 1
    index = json.loads(klines["out_index"].read_text())
    assert set(index["failed"]) == {"ETHUSDT"}
    assert index["failed"]["ETHUSDT"].startswith("listing failed after 1 retries: ")
    assert "HTTP 500" in index["failed"]["ETHUSDT"]
    assert index["symbols"]["ETHUSDT"]["digest"] == "listing-failed"
    assert index["symbols"]["BTCUSDT"]["n_files"] == 2  # listed as usual
    assert index["error"] is None and index["failed_at_unix"] > 0
    # The failed symbol's details stay as the last complete listing wrote them.
    assert (klines["details_dir"] / "ETHUSDT.json").read_bytes() == eth_details
    assert json.loads(funding["out_index"].read_text())["symbols"] == {}

    # Listed again without the fault: complete, and it names the failure it follows.
    with Emulator(mirror_dir=tmp_path / "mirror") as emu:
        again = _listing_args(emu, tmp_path, "klines", listing_url=emu.base_url)
        run_listings(listings=[again])
    fixed = json.loads(again["out_index"].read_text())
    assert "failed" not in fixed and "failed_at_unix" not in fixed
    assert fixed["after_failure"] == {"failed_at_unix": index["failed_at_unix"], "end_date": None}
    assert fixed["symbols"]["ETHUSDT"]["n_files"] == 3
    # And the next complete listing no longer does.
    with Emulator(mirror_dir=tmp_path / "mirror") as emu:
        third = _listing_args(emu, tmp_path, "klines", listing_url=emu.base_url)
        run_listings(listings=[third])
    assert "after_failure" not in json.loads(third["out_index"].read_text())


def test_a_failed_symbol_folder_listing_fails_the_symbols_it_would_have_listed(tmp_path):
    _spot_mirror(tmp_path / "mirror")
    root = "?data/spot/daily/klines/"
    # A first listing of "all" that fails: no symbol known, only the error.
    with Emulator(mirror_dir=tmp_path / "mirror", faults=Faults(fail_always={root})) as emu:
        first = _listing_args(emu, tmp_path, "klines")
        explicit = _listing_args(emu, tmp_path, "explicit", symbols=["ETHUSDT", "BTCUSDT"])
        run_listings(listings=[first, explicit])
    index = json.loads(first["out_index"].read_text())
    assert index["symbols"] == {} and index["failed"] == {}
    assert index["error"].startswith("spot klines 1m: cannot list symbols below data/spot/daily/")
    # Configured symbols fail each with the error.
    configured = json.loads(explicit["out_index"].read_text())
    assert sorted(configured["failed"]) == ["BTCUSDT", "ETHUSDT"]
    assert configured["failed"]["BTCUSDT"].startswith("cannot list symbols below ")

    with Emulator(mirror_dir=tmp_path / "mirror") as emu:
        good = _listing_args(emu, tmp_path, "klines", listing_url=emu.base_url)
        run_listings(listings=[good])
    complete = json.loads(good["out_index"].read_text())
    assert sorted(complete["symbols"]) == ["BTCUSDT", "ETHUSDT", "SYRUPUSDT"]
    assert complete["after_failure"]["failed_at_unix"] == index["failed_at_unix"]
    resume_before = (good["details_dir"] / "_index.state").read_bytes()

    # With a previous index, "all" carries its symbols, and that index stays the one the
    # next listing resumes from.
    with Emulator(mirror_dir=tmp_path / "mirror", faults=Faults(fail_always={root})) as emu:
        failing = _listing_args(emu, tmp_path, "klines", listing_url=emu.base_url)
        run_listings(listings=[failing])
    carried = json.loads(failing["out_index"].read_text())
    assert sorted(carried["failed"]) == ["BTCUSDT", "ETHUSDT", "SYRUPUSDT"]
    assert all(e["digest"] == "listing-failed" for e in carried["symbols"].values())
    resume = json.loads((good["details_dir"] / "_index.state").read_text())
    assert resume.pop("failed_at_unix") == carried["failed_at_unix"]
    assert resume == json.loads(resume_before)


def test_a_failed_listing_still_raises_without_keep_going(tmp_path):
    """`crypto_lakehouse plan` lists with run_listing alone: a failure is its error."""
    _spot_mirror(tmp_path / "mirror")
    faults = Faults(fail_always={"?data/spot/daily/klines/"})
    with Emulator(mirror_dir=tmp_path / "mirror", faults=faults) as emu:
        with pytest.raises(ListingError, match="cannot list symbols below"):
            _listing(emu, tmp_path)
    assert not (tmp_path / "out" / "klines-1m.json").exists()


def test_a_listing_job_does_not_import_pyarrow(tmp_path):
    # The listing job needs no Arrow: importing pyarrow (and numpy) cost its process ~0.1 s
    # (docs/benchmarks.md, issue 11, seventh part). A fresh interpreter, as a pipeline job
    # is, runs a whole listing (stale details removed included).
    import os
    import subprocess
    import sys

    _spot_mirror(tmp_path / "mirror")
    stale = tmp_path / "out" / "klines-1m" / "OLDUSDT.json"
    stale.parent.mkdir(parents=True)
    stale.write_text("[]\n")
    with Emulator(mirror_dir=tmp_path / "mirror") as emu:
        args = {k: str(v) for k, v in _listing_args(emu, tmp_path, "out").items()}
        args["details_dir"] = str(stale.parent)
        code = (
            "import json, sys\n"
            "from crypto_lakehouse.archive.listing import run_listings\n"
            "args = json.loads(sys.argv[1])\n"
            "args.update(concurrency=4, timeout_s=5, max_retries=1)\n"
            "run_listings(listings=[args])\n"
            "print(sorted(m for m in ('pyarrow', 'numpy', 'pandas') if m in sys.modules))\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code, json.dumps(args)], check=True, capture_output=True,
            text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )  # fmt: skip
    assert out.stdout.strip().splitlines()[-1] == "[]"
    assert not stale.exists()
    assert (stale.parent / "BTCUSDT.json").exists()


# ---------------------------------------------------------------- resuming after known keys
def _daily_keys(sym: str, first: str, days: int) -> list[str]:
    start = datetime.date.fromisoformat(first)
    folder = f"data/spot/daily/klines/{sym}/1m/"
    names = [f"{sym}-1m-{start + datetime.timedelta(days=i)}.zip" for i in range(days)]
    return [f"{folder}{n}{s}" for n in names for s in ("", ".CHECKSUM")]


def _monthly_key(sym: str, month: str) -> str:
    return f"data/spot/monthly/klines/{sym}/1m/{sym}-1m-{month}.zip"


def _grown_mirror(root: Path) -> None:
    """600 days per symbol (2022-01-01 to 2023-08-23; 1,200 keys: two pages a folder), a
    month, and a refused key."""
    keys = []
    for sym in ("BTCUSDT", "ETHUSDT"):
        keys += _daily_keys(sym, "2022-01-01", 600) + [_monthly_key(sym, "2022-01")]
    keys.append("data/spot/daily/klines/ETHUSDT/1m/ETHUSDT-1m-2022-02-30.zip")  # no such day
    _make_mirror(root, keys)


def _resumable(emu, out: Path, end_date: str, every: int = 7):
    (out / "out" / "klines-1m.json").unlink(missing_ok=True)  # as Snakemake does
    return _listing(
        emu,
        out,
        include_monthly=True,
        end_date=end_date,
        full_listing_every_days=every,
    )


def _details(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "out" / "klines-1m").glob("*.json"))}


def test_a_resumed_listing_of_a_grown_archive_equals_a_full_listing(tmp_path):
    mirror = tmp_path / "mirror"
    _grown_mirror(mirror)
    with Emulator(mirror_dir=mirror) as emu:
        _, first = _resumable(emu, tmp_path / "a", "2023-08-24")
        assert first["full_listing"] == "2023-08-24"
        # The archive grows: a day and its CHECKSUM per symbol, a month, a refused name,
        # and a new symbol (listed whole: it has no known keys).
        _make_mirror(
            mirror,
            _daily_keys("BTCUSDT", "2023-08-24", 1)
            + _daily_keys("ETHUSDT", "2023-08-24", 1)
            + _daily_keys("SOLUSDT", "2023-08-20", 5)
            + [_monthly_key("BTCUSDT", "2022-02")]
            + ["data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2023-08-24.zip.tmp"],
        )
        emu.reset_counts()
        stats, resumed = _resumable(emu, tmp_path / "a", "2023-08-25")
        # One page for the symbols, then one per folder (daily, monthly) of each symbol,
        # against 1 + 2 x (2 + 1) pages for a whole listing; SOLUSDT's two folders in both.
        assert emu.counts["list"] == 1 + 2 * 2 + 2
        assert (stats["n_incremental"], stats["n_kept"]) == (2, 3)
        emu.reset_counts()
        _, whole = _resumable(emu, tmp_path / "b", "2023-08-25", every=0)
        assert emu.counts["list"] == 1 + 2 * 3 + 2
    # The last full listing, not this one: two symbols were resumed from older keys.
    assert resumed["full_listing"] == "2023-08-24"
    assert whole["full_listing"] == "2023-08-25"
    resumed.pop("full_listing"), whole.pop("full_listing")
    assert resumed == whole
    assert _details(tmp_path / "a") == _details(tmp_path / "b")
    btc = json.loads(_details(tmp_path / "a")["BTCUSDT.json"])
    assert len(btc) == 2 * 601 + 2  # 601 days and their CHECKSUMs, two months
    assert [r["key"].rsplit("/", 1)[1] for r in whole["refused_files"]] == [
        "BTCUSDT-1m-2023-08-24.zip.tmp",
        "ETHUSDT-1m-2022-02-30.zip",
    ]


def _changed_old_file(mirror: Path) -> str:
    key = "data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2022-01-05.zip"
    (mirror / key).write_bytes(b"re-published with another size")
    return key


def _size_of(out: Path, key: str) -> int:
    btc = json.loads((out / "out" / "klines-1m" / "BTCUSDT.json").read_text())
    return next(e["size"] for e in btc if e["key"] == key)


def test_a_file_changed_before_the_last_key_is_found_by_the_next_full_listing(tmp_path):
    mirror = tmp_path / "mirror"
    _grown_mirror(mirror)
    with Emulator(mirror_dir=mirror) as emu:
        _resumable(emu, tmp_path, "2023-08-23", every=3)
        key = _changed_old_file(mirror)
        old_size = len(key.encode())
        # Resumed (1 and 2 days after the full listing): the change is not seen.
        for end in ("2023-08-24", "2023-08-25"):
            stats, index = _resumable(emu, tmp_path, end, every=3)
            assert stats["n_incremental"] == 2 and index["full_listing"] == "2023-08-23"
            assert _size_of(tmp_path, key) == old_size
        # Three days after it: listed in full, the new size is in the details.
        stats, index = _resumable(emu, tmp_path, "2023-08-26", every=3)
    assert stats["n_incremental"] == 0 and index["full_listing"] == "2023-08-26"
    assert _size_of(tmp_path, key) == len(b"re-published with another size")


@pytest.mark.parametrize(
    "change",
    [
        "other request",
        "same end date",
        "end date before the full listing",
        "details edited",
        "no full_listing",
        "no previous index",
    ],
)
def test_a_listing_is_made_in_full_when_the_previous_one_cannot_be_resumed(tmp_path, change):
    mirror = tmp_path / "mirror"
    _grown_mirror(mirror)
    # Snakemake removes the index before the checkpoint runs: the copy in the details folder.
    record = tmp_path / "out" / "klines-1m" / "_index.state"
    with Emulator(mirror_dir=mirror) as emu:
        _resumable(emu, tmp_path, "2023-08-23")
        key = _changed_old_file(mirror)
        kw = dict(end_date="2023-08-24")
        if change == "other request":
            kw["symbols"] = ["BTCUSDT", "ETHUSDT"]
        elif change == "same end date":  # e.g. --forcerun list_archive
            kw["end_date"] = "2023-08-23"
        elif change == "end date before the full listing":
            kw["end_date"] = "2023-08-22"
        elif change == "details edited":
            details = tmp_path / "out" / "klines-1m" / "BTCUSDT.json"
            details.write_text(details.read_text().replace('"size": ', '"size": 1'))
        elif change == "no full_listing":
            index = json.loads(record.read_text())
            del index["full_listing"]
            record.write_text(json.dumps(index))
        else:
            record.unlink()
        stats, _ = _listing(emu, tmp_path, include_monthly=True, full_listing_every_days=7, **kw)
    # The edited symbol (or every symbol) was listed whole: the changed size is seen.
    assert stats["n_incremental"] == (1 if change == "details edited" else 0)
    assert _size_of(tmp_path, key) == len(b"re-published with another size")


def test_file_entry_to_dict_has_every_field():
    """to_dict is written out (asdict deep-copies, too slow for long histories): it must
    stay in step with the dataclass's fields."""
    import dataclasses

    entry = FileEntry("data/spot/daily/klines/X/1m/X-1m-2024-01-01.zip", 123, "2024-01-02", '"e"')
    assert entry.to_dict() == dataclasses.asdict(entry)
    assert list(entry.to_dict()) == [f.name for f in dataclasses.fields(FileEntry)]
