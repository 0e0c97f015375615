"""``run_sync`` against the emulator: download, verify, quarantine, retries, incremental runs.

Most tests use the real legacy fixture mirror (exact Binance zips and sidecars); tests that
need many files or monthly archives build a small mirror of generated zips.
"""

import collections
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import zipfile
from datetime import date
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from crypto_lakehouse_emulator import Faults

from crypto_lakehouse import layout, storage
from crypto_lakehouse.archive import http
from crypto_lakehouse.archive.listing import run_listing
from crypto_lakehouse.archive.selection import key_period, select
from crypto_lakehouse.archive.sync import SyncError, run_sync
from crypto_lakehouse.parse.klines import run_parse_klines
from tests.conftest import FIXTURES, REPO_ROOT

MIRROR = FIXTURES / "legacy-v1-real" / "mirror"
SPOT_DIR = "data/spot/daily/klines/BTCUSDT/1m/"
SPOT_DAYS = ["2020-01-01", "2020-01-02", "2020-01-03", "2024-12-31", "2025-01-01"]
SPOT_KEYS = [f"{SPOT_DIR}BTCUSDT-1m-{d}.zip" for d in SPOT_DAYS]
CASES = {
    "spot": ("BTCUSDT", SPOT_KEYS),
    "um_futures": (
        "BTCUSDT",
        ["data/futures/um/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2022-09-05.zip"],
    ),
    "cm_futures": (
        "BTCUSD_PERP",
        ["data/futures/cm/daily/klines/BTCUSD_PERP/1m/BTCUSD_PERP-1m-2022-10-24.zip"],
    ),
}


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    monkeypatch.setattr(http, "BACKOFF_BASE_S", 0.001)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Job:
    """One symbol's list + sync against an emulator, with all paths under ``tmp``."""

    def __init__(self, emu, tmp: Path, trade_type="spot", symbol="BTCUSDT", dataset="klines"):
        self.emu, self.tmp = emu, tmp
        self.trade_type, self.symbol, self.dataset = trade_type, symbol, dataset
        self.data_dir = tmp / "data"
        self.tag = "funding" if dataset == "funding" else "klines-1m"
        self.details_dir = tmp / "listing" / self.tag
        self.report_path = tmp / "report.json"
        self.stats_path = tmp / "stats.json"

    def list(self, include_monthly=False):
        run_listing(
            trade_type=self.trade_type, dataset=self.dataset,
            interval=None if self.dataset == "funding" else "1m", symbols=[self.symbol],
            listing_url=self.emu.base_url, out_index=self.tmp / "listing" / f"{self.tag}.json",
            details_dir=self.details_dir, include_monthly=include_monthly, concurrency=2,
            timeout_s=5, max_retries=2,
        )  # fmt: skip
        return self

    def sync(self, **kw):
        args = dict(
            trade_type=self.trade_type, dataset=self.dataset,
            interval=None if self.dataset == "funding" else "1m", symbol=self.symbol,
            details_path=self.details_dir / f"{self.symbol}.json", data_dir=self.data_dir,
            archive_url=self.emu.base_url, start_date=None, end_date=None,
            use_monthly_klines=False, concurrency=8, max_retries=3, timeout_s=5,
            report_path=self.report_path, stats_path=self.stats_path,
        )  # fmt: skip
        args.update(kw)
        return run_sync(**args)

    def report(self):
        return json.loads(self.report_path.read_text())

    def stats(self):
        return json.loads(self.stats_path.read_text())

    def local(self, key):
        return layout.aws_path(self.data_dir, key)

    def zip_gets(self):
        return {k: n for k, n in self.emu.get_counts.items() if n}


def _assert_verified(job, key, source_root=MIRROR):
    local = job.local(key)
    assert local.read_bytes() == (source_root / key).read_bytes()
    assert Path(f"{local}.verified").read_bytes() == b""
    assert Path(f"{local}.CHECKSUM").read_bytes() == (source_root / f"{key}.CHECKSUM").read_bytes()


# ---------------------------------------------------------------- the real fixture mirror
@pytest.mark.parametrize("trade_type", sorted(CASES))
def test_all_files_downloaded_and_verified(tmp_path, emulator, trade_type):
    symbol, keys = CASES[trade_type]
    job = Job(emulator(mirror_dir=MIRROR), tmp_path, trade_type, symbol).list()
    stats = job.sync()
    for key in keys:
        _assert_verified(job, key)
    report = job.report()
    assert report["files"] == {
        k: {
            "size": (MIRROR / k).stat().st_size,
            "last_modified": report["files"][k]["last_modified"],
            "sha256": _sha(MIRROR / k),
        }
        for k in keys
    }
    assert report["quarantined"] == {} and "day_sources" not in report
    assert (report["trade_type"], report["symbol"]) == (trade_type, symbol)
    assert stats["files_done"] == stats["files_total"] == stats["files_downloaded"] == len(keys)
    assert stats["bytes"] == sum((MIRROR / k).stat().st_size for k in keys)
    assert stats["retries"] == 0 and stats["errors"] == 0
    assert set(stats) >= {"mb", "seconds", "files_per_s", "mb_per_s", "files_quarantined"}
    state = layout.state_path(job.data_dir, "aws_download", trade_type, "klines-1m", symbol)
    assert sorted(json.loads(state.read_text())["verified"]) == keys


def test_second_run_makes_no_request_and_writes_the_same_report(tmp_path, emulator):
    emu = emulator(mirror_dir=MIRROR)
    job = Job(emu, tmp_path).list()
    job.sync()
    first = job.report_path.read_bytes()
    emu.reset_counts()
    stats = job.sync()
    assert emu.counts["get"] == 0 and emu.counts["head"] == 0
    assert job.report_path.read_bytes() == first
    assert stats["files_up_to_date"] == 5 and stats["requests"] == 0


def test_up_to_date_run_lists_each_folder_once_instead_of_asking_each_file(
    tmp_path, emulator, monkeypatch
):
    """A daily update checks every local zip and marker of the history: one listing per
    folder (storage.file_sizes), not a size or existence request per file (a stat each,
    an S3 HEAD each). A zip deleted or truncated since is still fetched again."""
    emu = emulator(mirror_dir=MIRROR)
    job = Job(emu, tmp_path).list()
    job.sync()
    calls = collections.Counter()
    for name in ("size", "exists", "file_sizes"):
        real = getattr(storage, name)
        monkeypatch.setattr(
            storage, name, lambda *a, _n=name, _r=real, **k: calls.update([_n]) or _r(*a, **k)
        )
    stats = job.sync()
    assert stats["files_up_to_date"] == 5
    assert calls["size"] == calls["exists"] == 0, calls
    assert 0 < calls["file_sizes"] <= 2, calls  # the daily folder (and the monthly one)
    deleted, truncated = SPOT_KEYS[0], SPOT_KEYS[3]
    job.local(deleted).unlink()
    job.local(truncated).write_bytes(b"short")
    emu.reset_counts()
    stats = job.sync()
    assert {k: n for k, n in job.zip_gets().items() if k.endswith(".zip")} == {
        deleted: 1,
        truncated: 1,
    }
    assert stats["files_up_to_date"] == 3 and stats["files_downloaded"] == 2
    for key in SPOT_KEYS:
        _assert_verified(job, key)


def test_corrupted_once_is_fetched_again_and_verified(tmp_path, emulator):
    bad = SPOT_KEYS[1]
    emu = emulator(mirror_dir=MIRROR, faults=Faults(corrupt_first={bad}))
    job = Job(emu, tmp_path).list()
    stats = job.sync()
    _assert_verified(job, bad)
    assert emu.get_counts[bad] == 2
    assert emu.counts["fault_corrupt"] == 1
    assert stats["retries"] == 1 and stats["files_done"] == 5
    assert job.report()["quarantined"] == {}


def test_missing_checksum_is_quarantined_and_reported_without_failing(tmp_path, emulator):
    bad = SPOT_KEYS[0]
    emu = emulator(mirror_dir=MIRROR, faults=Faults(missing_checksum={bad}))
    job = Job(emu, tmp_path).list()
    stats = job.sync()
    report = job.report()
    assert list(report["quarantined"]) == [bad]
    assert "CHECKSUM" in report["quarantined"][bad]
    assert bad not in report["files"] and len(report["files"]) == 4
    assert not job.local(bad).exists() and not Path(f"{job.local(bad)}.verified").exists()
    reason = Path(f"{layout.quarantine_path(job.data_dir, bad)}.reason").read_text()
    assert "CHECKSUM" in reason
    assert stats["files_quarantined"] == 1 and stats["warnings"] == 1
    # Not retried while its listing entry is unchanged.
    emu.reset_counts()
    job.sync()
    assert emu.counts["get"] == 0
    assert list(job.report()["quarantined"]) == [bad]


def test_checksum_404_although_listed_is_quarantined(tmp_path, emulator):
    bad = SPOT_KEYS[2]
    emu = emulator(mirror_dir=MIRROR)
    job = Job(emu, tmp_path).list()  # the listing still shows the CHECKSUM
    emu.faults.missing_checksum.add(bad)
    job.sync()
    assert "404" in job.report()["quarantined"][bad]
    # The zip's GET goes out together with its CHECKSUM's (one round trip per archive); with
    # the CHECKSUM missing, its answer is dropped unread and nothing of it is kept.
    assert emu.get_counts[bad] <= 1
    assert not job.local(bad).exists() and not Path(f"{job.local(bad)}.verified").exists()
    # Quarantined until re-uploaded: the next run asks for neither file.
    emu.reset_counts()
    job.sync()
    assert emu.get_counts[bad] == 0 and emu.get_counts[f"{bad}.CHECKSUM"] == 0


def test_checksum_never_matching_is_quarantined_with_the_body_kept(tmp_path, emulator):
    bad = SPOT_KEYS[3]
    emu = emulator(mirror_dir=MIRROR, faults=Faults(corrupt_always={bad}))
    job = Job(emu, tmp_path).list()
    stats = job.sync(max_retries=2)
    assert emu.get_counts[bad] == 3  # 1 + 2 retries
    assert "does not match" in job.report()["quarantined"][bad]
    assert not job.local(bad).exists() and not Path(f"{job.local(bad)}.verified").exists()
    kept = layout.quarantine_path(job.data_dir, bad)
    assert kept.stat().st_size == (MIRROR / bad).stat().st_size
    assert _sha(kept) != _sha(MIRROR / bad)
    assert stats["files_done"] == 4 and stats["files_quarantined"] == 1
    # Binance re-uploads the file: the listing entry changes and the key is tried again.
    emu.faults.corrupt_always.clear()
    emu.last_modified[bad] = "2030-01-01T00:00:00Z"
    job.list()
    emu.reset_counts()
    job.sync()
    _assert_verified(job, bad)
    assert job.report()["quarantined"] == {}
    assert emu.get_counts[bad] == 1 and emu.counts["get"] == 2


def test_changed_last_modified_refetches_exactly_that_file(tmp_path, emulator):
    changed = SPOT_KEYS[4]
    emu = emulator(mirror_dir=MIRROR)
    job = Job(emu, tmp_path).list()
    job.sync()
    emu.last_modified[changed] = "2030-06-01T12:00:00Z"
    job.list()
    emu.reset_counts()
    stats = job.sync()
    assert dict(job.zip_gets()) == {changed: 1, f"{changed}.CHECKSUM": 1}
    _assert_verified(job, changed)
    assert job.report()["files"][changed]["last_modified"] == "2030-06-01T12:00:00.000Z"
    assert stats["files_downloaded"] == 1 and stats["files_up_to_date"] == 4


def test_persistent_500_fails_the_job_after_finishing_the_others(tmp_path, emulator):
    bad = SPOT_KEYS[2]
    emu = emulator(mirror_dir=MIRROR, faults=Faults(fail_always={bad}))
    job = Job(emu, tmp_path).list()
    with pytest.raises(SyncError, match="1 file") as info:
        job.sync(max_retries=2)
    assert bad in str(info.value)
    assert emu.get_counts[bad] == 3
    for key in SPOT_KEYS:
        if key != bad:
            _assert_verified(job, key)
    assert not job.local(bad).exists()
    assert not job.report_path.exists()  # the Snakemake output exists only for a good job
    stats = job.stats()
    assert stats["files_failed"] == 1 and stats["errors"] == 1 and stats["files_done"] == 4
    # The state was saved: the rerun fetches only the missing file.
    emu.faults.fail_always.clear()
    emu.reset_counts()
    job.sync()
    assert dict(job.zip_gets()) == {bad: 1, f"{bad}.CHECKSUM": 1}
    _assert_verified(job, bad)


def test_legacy_data_dir_is_adopted_without_requests(tmp_path, emulator):
    emu = emulator(mirror_dir=MIRROR)
    job = Job(emu, tmp_path).list()
    for key in SPOT_KEYS:  # a BHDS V1 aws_data: zip + CHECKSUM + empty .verified
        dest = job.local(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(MIRROR / key, dest)
        shutil.copyfile(MIRROR / f"{key}.CHECKSUM", f"{dest}.CHECKSUM")
        Path(f"{dest}.verified").touch()
    stats = job.sync()
    assert emu.counts["get"] == 0
    assert stats["files_adopted"] == 5
    assert {k: v["sha256"] for k, v in job.report()["files"].items()} == {
        k: _sha(MIRROR / k) for k in SPOT_KEYS
    }
    emu.reset_counts()
    assert job.sync()["files_up_to_date"] == 5 and emu.counts["get"] == 0


def test_unverified_or_short_local_files_are_not_trusted(tmp_path, emulator):
    emu = emulator(mirror_dir=MIRROR)
    job = Job(emu, tmp_path).list()
    complete_unmarked, half, wrong_size_marked = SPOT_KEYS[0], SPOT_KEYS[1], SPOT_KEYS[2]
    for key in (complete_unmarked, half, wrong_size_marked):
        job.local(key).parent.mkdir(parents=True, exist_ok=True)
    # A complete zip without marker and without CHECKSUM: cannot be verified locally.
    shutil.copyfile(MIRROR / complete_unmarked, job.local(complete_unmarked))
    # Half a file (a killed aria2), no marker.
    data = (MIRROR / half).read_bytes()
    job.local(half).write_bytes(data[: len(data) // 2])
    # A marker next to a file of the wrong size.
    job.local(wrong_size_marked).write_bytes(b"junk")
    Path(f"{job.local(wrong_size_marked)}.verified").touch()
    job.sync()
    for key in (complete_unmarked, half, wrong_size_marked):
        assert emu.get_counts[key] == 1
        _assert_verified(job, key)


def _zip_temps(job):
    folder = job.local(SPOT_KEYS[0]).parent
    return [p for p in folder.glob(".tmp-*.zip.*.part") if "CHECKSUM" not in p.name]


def test_killed_download_leaves_no_marker_and_no_partial_file(tmp_path, emulator):
    # CHECKSUMs answer at once, zip bodies after 2 s: the kill lands while zip downloads
    # are in progress (their temporary files exist).
    emu = emulator(mirror_dir=MIRROR, faults=Faults(slow_keys=dict.fromkeys(SPOT_KEYS, 2.0)))
    job = Job(emu, tmp_path).list()
    code = textwrap.dedent(
        f"""
        from crypto_lakehouse.archive.sync import run_sync
        run_sync(trade_type="spot", dataset="klines", interval="1m", symbol="BTCUSDT",
                 details_path={str(job.details_dir / "BTCUSDT.json")!r},
                 data_dir={str(job.data_dir)!r}, archive_url={emu.base_url!r},
                 concurrency=8, max_retries=0, timeout_s=30,
                 report_path={str(job.report_path)!r}, stats_path={str(job.stats_path)!r})
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    child = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        deadline = time.monotonic() + 20
        while not _zip_temps(job):  # a zip download has started (its body is 2 s away)
            assert time.monotonic() < deadline, "the child never started a zip download"
            assert child.poll() is None, "the child ended before it was killed"
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL
    for key in SPOT_KEYS:
        assert not job.local(key).exists()
        assert not Path(f"{job.local(key)}.verified").exists()
    assert not job.report_path.exists()
    assert _zip_temps(job)  # the kill really interrupted downloads in progress
    emu.faults.slow_keys.clear()
    job.sync()
    for key in SPOT_KEYS:
        _assert_verified(job, key)
    assert not list(job.local(SPOT_KEYS[0]).parent.glob(".tmp-*.part"))


def test_date_range_selects_daily_files(tmp_path, emulator):
    job = Job(emulator(mirror_dir=MIRROR), tmp_path).list()
    stats = job.sync(start_date="2020-01-02", end_date="2024-12-31")
    assert sorted(job.report()["files"]) == SPOT_KEYS[1:4]
    assert stats["files_total"] == 3
    assert not job.local(SPOT_KEYS[0]).exists() and not job.local(SPOT_KEYS[4]).exists()


# ---------------------------------------------------------------- generated mirrors
def _write_archive(root: Path, key: str, payload: bytes, newline=False) -> None:
    """A zip holding one CSV member, and its ``sha256sum``-style sidecar."""
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(path.name[:-4] + ".csv", payload)
    line = f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.name}"
    (root / f"{key}.CHECKSUM").write_text(line + ("\n" if newline else ""))


def _generated_mirror(root: Path, n_days: int) -> list[str]:
    keys = []
    for i in range(n_days):
        day = date.fromordinal(date(2023, 1, 1).toordinal() + i).isoformat()
        key = f"{SPOT_DIR}BTCUSDT-1m-{day}.zip"
        _write_archive(root, key, os.urandom(2000) + day.encode(), newline=i % 2 == 0)
        keys.append(key)
    return keys


def test_injected_5xx_and_dropped_connections_still_complete(tmp_path, emulator):
    keys = _generated_mirror(tmp_path / "mirror", 80)
    faults = Faults(fail_rate=0.05, drop_rate=0.05, seed=7)
    emu = emulator(mirror_dir=tmp_path / "mirror", faults=faults)
    job = Job(emu, tmp_path)
    emu.faults.fail_rate = 0.0
    job.list()
    emu.faults.fail_rate = 0.05
    stats = job.sync(concurrency=16, max_retries=6)
    assert emu.counts["fault_5xx"] > 0 and emu.counts["fault_drop"] > 0
    # Each injected failure costs at most one retry of its archive; fewer when a zip's GET,
    # sent together with its CHECKSUM's, failed too but was abandoned unread because the
    # CHECKSUM's had failed already.
    faults_served = emu.counts["fault_5xx"] + emu.counts["fault_drop"]
    assert 0 < stats["retries"] <= faults_served
    # The back-off sleeps are counted: each is at most BACKOFF_BASE_S (0.001 here) x 2^retry.
    assert 0 < stats["retry_wait_s"] <= stats["retries"] * 0.001 * 2**6
    assert sorted(job.report()["files"]) == keys
    for key in keys:
        _assert_verified(job, key, tmp_path / "mirror")


def test_monthly_klines_replace_complete_months_only(tmp_path, emulator):
    root = tmp_path / "mirror"
    daily = []
    for day in range(1, 32):  # January 2024 complete, February 1-3
        daily.append(f"{SPOT_DIR}BTCUSDT-1m-2024-01-{day:02d}.zip")
    daily += [f"{SPOT_DIR}BTCUSDT-1m-2024-02-0{d}.zip" for d in (1, 2, 3)]
    monthly_dir = "data/spot/monthly/klines/BTCUSDT/1m/"
    monthly = [f"{monthly_dir}BTCUSDT-1m-2024-01.zip", f"{monthly_dir}BTCUSDT-1m-2024-02.zip"]
    for key in daily + monthly:
        _write_archive(root, key, key.encode())
    emu = emulator(mirror_dir=root)
    job = Job(emu, tmp_path).list(include_monthly=True)
    job.sync(use_monthly_klines=True, start_date="2024-01-01", end_date="2024-02-02")
    report = job.report()
    # January is complete inside the range: its monthly zip; February is not: daily zips.
    assert sorted(report["files"]) == sorted([monthly[0]] + daily[31:33])
    sources = report["day_sources"]
    assert len(sources) == 33
    assert sources["2024-01-01"] == sources["2024-01-31"] == monthly[0]
    assert sources["2024-02-02"] == daily[32]
    assert all(emu.get_counts[k] == 0 for k in daily[:31] + [monthly[1], daily[33]])


def test_quarantined_monthly_zip_falls_back_to_daily_files(tmp_path, emulator):
    root = tmp_path / "mirror"
    daily = [f"{SPOT_DIR}BTCUSDT-1m-2024-01-{d:02d}.zip" for d in range(1, 32)]
    month = "data/spot/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01.zip"
    for key in daily + [month]:
        _write_archive(root, key, key.encode())
    emu = emulator(mirror_dir=root, faults=Faults(corrupt_always={month}))
    job = Job(emu, tmp_path).list(include_monthly=True)
    job.sync(use_monthly_klines=True, max_retries=1)
    report = job.report()
    assert list(report["quarantined"]) == [month]
    assert sorted(report["files"]) == daily
    assert report["day_sources"]["2024-01-15"] == daily[14]


def test_funding_files_are_monthly(tmp_path, emulator):
    root = tmp_path / "mirror"
    d = "data/futures/um/monthly/fundingRate/BTCUSDT/"
    keys = [f"{d}BTCUSDT-fundingRate-2024-0{m}.zip" for m in (1, 2, 3)]
    for key in keys:
        _write_archive(root, key, key.encode(), newline=True)
    job = Job(emulator(mirror_dir=root), tmp_path, "um_futures", "BTCUSDT", "funding").list()
    job.sync(start_date="2024-02-15", end_date="2024-03-01")
    report = job.report()
    assert sorted(report["files"]) == keys[1:]
    assert report["dataset"] == "funding" and report["interval"] is None


# ---------------------------------------------------------------- selection (pure)
def test_key_dates_are_parsed_leniently():
    f = key_period("data/spot/monthly/klines/ADABKRW/1d/ADABKRW-1d-2020-8.zip")
    assert (f.monthly, f.first_day, f.last_day) == (True, date(2020, 8, 1), date(2020, 8, 31))
    f = key_period("x/BTCUSDT-1m-2024-2-9.zip")
    assert (f.monthly, f.first_day) == (False, date(2024, 2, 9))
    assert key_period("x/BTCUSDT-1m-2024-02.zip").last_day == date(2024, 2, 29)  # leap year
    with pytest.raises(ValueError, match="x/BTCUSDT-1m-2024-02-30.zip: invalid date"):
        key_period("x/BTCUSDT-1m-2024-02-30.zip")
    with pytest.raises(ValueError, match="no -YYYY-MM"):
        key_period("x/BTCUSDT-1m-latest.zip")


def test_selection_bounds_are_inclusive_and_open_ended():
    keys = [f"k-2024-01-{d:02d}.zip" for d in range(1, 11)] + ["k-bad.zip"]
    sel = select(keys, date(2024, 1, 3), date(2024, 1, 5))
    assert [f.key for f in sel.files] == keys[2:5]
    assert list(sel.ignored) == ["k-bad.zip"]
    assert [f.key for f in select(keys, None, date(2024, 1, 2)).files] == keys[:2]
    assert [f.key for f in select(keys, date(2024, 1, 9), None).files] == keys[8:10]
    # Monthly files overlap a range that cuts into their month.
    assert [f.key for f in select(["m-2024-01.zip"], date(2024, 1, 31), None).files] == [
        "m-2024-01.zip"
    ]


def test_zip_404_although_listed_is_quarantined_with_its_checksum(tmp_path, emulator):
    keys = _generated_mirror(tmp_path / "mirror", 3)
    emu = emulator(mirror_dir=tmp_path / "mirror")
    job = Job(emu, tmp_path).list()
    gone = keys[1]
    (tmp_path / "mirror" / gone).unlink()  # vanished after the listing
    stats = job.sync()
    report = job.report()
    assert report["quarantined"] == {gone: "zip not found (404) although listed"}
    assert sorted(report["files"]) == [keys[0], keys[2]]
    assert emu.get_counts[gone] == 1  # a 404 is not retried
    assert not Path(f"{job.local(gone)}.CHECKSUM").exists()
    moved = layout.quarantine_path(job.data_dir, f"{gone}.CHECKSUM")
    assert moved.read_bytes() == (tmp_path / "mirror" / f"{gone}.CHECKSUM").read_bytes()
    assert stats["files_quarantined"] == 1 and stats["errors"] == 0


# ---------------------------------------------------------------- moving date window
def _csv_open_times(zip_path: Path) -> list[int]:
    with zipfile.ZipFile(zip_path) as zf:
        lines = zf.read(zf.namelist()[0]).decode().splitlines()
    return [int(line.split(",")[0]) for line in lines if line and not line.startswith("open_")]


def _parse_klines(job):
    run_parse_klines(
        trade_type="spot", symbol="BTCUSDT", interval="1m", data_dir=job.data_dir,
        download_report=job.report_path, report_path=job.tmp / "parse.json",
        stats_path=job.tmp / "parse-stats.json",
    )  # fmt: skip
    part = layout.parsed_klines_dir(job.data_dir, "spot", "BTCUSDT", "1m") / "202001.pqt"
    return pq.read_table(part).column("candle_begin_time").cast("int64").to_pylist()


def test_moving_start_date_keeps_older_verified_files_and_their_rows(tmp_path, emulator):
    emu = emulator(mirror_dir=MIRROR)
    job = Job(emu, tmp_path).list()
    job.sync(start_date="2020-01-01", end_date="2020-01-03")
    assert sorted(job.report()["files"]) == SPOT_KEYS[:3]
    day_times = [_csv_open_times(MIRROR / k) for k in SPOT_KEYS[:3]]
    assert _parse_klines(job) == day_times[0] + day_times[1] + day_times[2]

    # The next day the window starts one day later (lookback_days) and reaches 2024-12-31.
    emu.reset_counts()
    stats = job.sync(start_date="2020-01-02", end_date="2024-12-31")
    assert dict(job.zip_gets()) == {SPOT_KEYS[3]: 1, f"{SPOT_KEYS[3]}.CHECKSUM": 1}
    report = job.report()
    assert sorted(report["files"]) == SPOT_KEYS[:4]  # 2020-01-01 is still held and verified
    assert report["files"][SPOT_KEYS[0]]["sha256"] == _sha(MIRROR / SPOT_KEYS[0])
    assert stats["files_total"] == 3 and stats["files_held"] == 4
    assert _parse_klines(job) == day_times[0] + day_times[1] + day_times[2]


def test_legacy_files_outside_the_range_are_adopted_and_reported(tmp_path, emulator):
    emu = emulator(mirror_dir=MIRROR)
    job = Job(emu, tmp_path).list()
    for key in SPOT_KEYS:  # a BHDS V1 aws_data holding the whole history
        dest = job.local(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(MIRROR / key, dest)
        Path(f"{dest}.verified").touch()
    stats = job.sync(start_date="2024-12-31", end_date="2025-01-01")
    assert emu.counts["get"] == 0
    assert {k: v["sha256"] for k, v in job.report()["files"].items()} == {
        k: _sha(MIRROR / k) for k in SPOT_KEYS
    }
    assert stats["files_adopted"] == 5
    # A file with a marker but other bytes than the listing says is not reported.
    job.local(SPOT_KEYS[0]).write_bytes(b"not the zip")
    state = layout.state_path(job.data_dir, "aws_download", "spot", "klines-1m", "BTCUSDT")
    state.unlink()
    job.sync(start_date="2024-12-31", end_date="2025-01-01")
    assert sorted(job.report()["files"]) == SPOT_KEYS[1:]


def test_key_gone_from_the_listing_stays_while_verified_locally(tmp_path, emulator):
    emu = emulator(mirror_dir=MIRROR)
    job = Job(emu, tmp_path).list()
    job.sync()
    first = job.report()["files"]
    details_path = job.details_dir / "BTCUSDT.json"
    details = json.loads(details_path.read_text())
    gone = SPOT_KEYS[2]
    details = [e for e in details if e["key"] not in (gone, f"{gone}.CHECKSUM")]
    details_path.write_text(json.dumps(details))
    emu.reset_counts()
    job.sync()
    assert emu.counts["get"] == 0
    assert job.report()["files"] == first


# ---------------------------------------------------------------- after a parse quarantine
def test_archive_quarantined_by_parse_is_not_fetched_again_until_reuploaded(tmp_path, emulator):
    root = tmp_path / "mirror"
    good, bad = SPOT_KEYS[0], f"{SPOT_DIR}BTCUSDT-1m-2020-01-02.zip"
    (root / SPOT_DIR).mkdir(parents=True)
    for name in (good, f"{good}.CHECKSUM"):
        shutil.copyfile(MIRROR / name, root / name)
    _write_archive(root, bad, b"1577923200000,not,a,kline\n")  # right checksum, bad CSV
    emu = emulator(mirror_dir=root)
    job = Job(emu, tmp_path).list()
    job.sync()
    assert sorted(job.report()["files"]) == [good, bad]
    _parse_klines(job)
    reason = Path(f"{layout.quarantine_path(job.data_dir, bad)}.reason").read_text().strip()
    assert bad in reason and not job.local(bad).exists()  # parse moved it to quarantine

    emu.reset_counts()
    stats = job.sync()
    assert emu.get_counts[bad] == 0 and emu.get_counts[f"{bad}.CHECKSUM"] == 0
    report = job.report()
    assert report["quarantined"] == {bad: reason}
    assert sorted(report["files"]) == [good]
    assert stats["files_quarantined"] == 1 and stats["files_downloaded"] == 0
    emu.reset_counts()
    job.sync()  # and so on, run after run
    assert emu.counts["get"] == 0 and job.report()["quarantined"] == {bad: reason}

    # Binance re-uploads it (new LastModified): fetched and verified again.
    emu.last_modified[bad] = "2030-01-01T00:00:00Z"
    job.list()
    emu.reset_counts()
    job.sync()
    assert emu.get_counts[bad] == 1
    report = job.report()
    assert sorted(report["files"]) == [good, bad] and report["quarantined"] == {}
    _assert_verified(job, bad, root)


def test_zip_and_checksum_requests_travel_together(tmp_path, emulator):
    # One round trip per archive: the zip's GET is sent before the CHECKSUM's answer is in.
    key = SPOT_KEYS[0]
    emu = emulator(mirror_dir=MIRROR)
    job = Job(emu, tmp_path).list()
    emu.faults.slow_keys[f"{key}.CHECKSUM"] = 3.0
    seen_zip_request_early = []

    def watch():
        deadline = time.monotonic() + 2.5  # well before the CHECKSUM's answer leaves
        while time.monotonic() < deadline:
            if emu.get_counts[key]:
                seen_zip_request_early.append(not job.local(f"{key}.CHECKSUM").exists())
                return
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    job.sync(start_date=SPOT_DAYS[0], end_date=SPOT_DAYS[0], concurrency=1)
    watcher.join()
    assert seen_zip_request_early == [True]
    _assert_verified(job, key)


@pytest.mark.parametrize(
    "body, why",
    [
        (b"<html>503 Service Unavailable</html>\n", "got 3 token(s)"),
        (b"zzzz  BTCUSDT-1m-2020-01-01.zip\n", "is not a 64-digit hex SHA-256"),
    ],
)
def test_a_checksum_that_is_not_a_checksum_is_quarantined_at_once(tmp_path, emulator, body, why):
    mirror = tmp_path / "mirror"
    shutil.copytree(MIRROR, mirror)
    bad = SPOT_KEYS[0]
    (mirror / f"{bad}.CHECKSUM").write_bytes(body)
    emu = emulator(mirror_dir=mirror)
    job = Job(emu, tmp_path).list()
    stats = job.sync(max_retries=3)
    reason = job.report()["quarantined"][bad]
    assert reason.startswith(f"{bad}.CHECKSUM: ") and why in reason
    assert emu.get_counts[f"{bad}.CHECKSUM"] == 1  # not retried as if transient
    assert stats["retries"] == 0 and stats["files_quarantined"] == 1
    assert not job.local(bad).exists() and not Path(f"{job.local(bad)}.verified").exists()


def test_file_operations_queued_together_run_in_one_worker_call(tmp_path):
    """The file work of archives arriving in the same loop turn goes to a worker thread in
    one call (no hand-off per file); each caller gets its own result or its own error."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from crypto_lakehouse.archive.sync import _FileBatches

    submitted: list[int] = []

    class CountingPool(ThreadPoolExecutor):
        def submit(self, fn, batch):
            submitted.append(len(batch))
            return super().submit(fn, batch)

    def fail():
        raise FileNotFoundError("gone")

    async def main():
        with CountingPool(2) as pool:
            files = _FileBatches(asyncio.get_running_loop(), pool)
            first = [files.run(pow, 2, n) for n in range(5)] + [files.run(fail)]
            results = await asyncio.gather(*first, return_exceptions=True)
            later = await files.run(threading.get_ident)
        return results, later

    results, worker_thread = asyncio.run(main())
    assert results[:5] == [1, 2, 4, 8, 16]
    assert isinstance(results[5], FileNotFoundError)
    assert submitted == [6, 1]
    assert worker_thread != threading.get_ident()


def test_a_temporary_zip_opened_for_a_cancelled_fetch_is_removed(tmp_path):
    """A fetch cancelled (e.g. another worker hit an unreachable host) while its file work
    waits in a batch leaves no temporary file behind."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from crypto_lakehouse.archive.sync import _FileBatches, _TempZip

    key = "data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01-01.zip"

    async def main():
        with ThreadPoolExecutor(1) as pool:
            files = _FileBatches(asyncio.get_running_loop(), pool)
            opening = files.run(_TempZip, layout.aws_path(tmp_path, key))
            opening.cancel()  # before the batch has even left the loop
            await files.run(int)  # queued after it, so settled after it
            await asyncio.sleep(0)

    asyncio.run(main())
    folder = layout.aws_path(tmp_path, key).parent
    assert folder.is_dir()  # the temporary file was created there ...
    assert list(folder.iterdir()) == []  # ... and removed


def test_a_disk_error_while_committing_a_zip_stops_the_job_without_its_marker(
    tmp_path, emulator, monkeypatch
):
    """The commit of a verified zip (CHECKSUM, rename, ``.verified``) runs on a file thread
    while the worker fetches its next archive; a disk error there still fails the job, and
    the archive it hit never gets its marker (a rerun fetches it again)."""
    import errno

    from crypto_lakehouse import storage

    keys = _generated_mirror(tmp_path / "mirror", 12)
    job = Job(emulator(mirror_dir=tmp_path / "mirror"), tmp_path).list()
    broken = keys[5]
    real_touch = storage.touch

    def touch(path):
        if str(path).endswith(broken + ".verified"):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_touch(path)

    monkeypatch.setattr(storage, "touch", touch)
    with pytest.raises(OSError, match="No space left"):
        job.sync(concurrency=4)
    assert not Path(f"{job.local(broken)}.verified").exists()
    monkeypatch.setattr(storage, "touch", real_touch)
    job.sync(concurrency=4)  # the rerun completes every archive
    assert sorted(job.report()["files"]) == keys
    for key in keys:
        _assert_verified(job, key, tmp_path / "mirror")


OFF_GRID_KEY = f"{SPOT_DIR}BTCUSDT-1m-2018-02-08.zip"
FEB8 = 1518048000000  # 2018-02-08 00:00 UTC
OFF_GRID_TIMES = [FEB8, FEB8 + 60_000, FEB8 + 120_000, FEB8 + 34_094_789, FEB8 + 34_154_789]
# What aws_parse wrote for this very archive before 2026-12-06 (run on the old code).
OLD_OFF_GRID_REASON = (
    f"{OFF_GRID_KEY}: line 4: time 2018-02-08 09:28:14.789 (raw 1518082094789) is not on "
    "the 60s interval grid"
)


@pytest.mark.parametrize("recorded_by", ["parse", "sync", "other_reason"])
def test_an_archive_quarantined_for_candles_off_the_grid_is_released(
    tmp_path, emulator, recorded_by
):
    # Before 2026-12-06 the parse quarantined a kline archive with a candle off the interval
    # grid (Binance's spot files of 2018-02-08 … 02-10, …:14.789); such a zip stayed
    # quarantined until Binance re-published it. The parse floors such candles since: the
    # next sync puts the zip back (verified from the quarantined copy, no download) and the
    # parse reads it. ``recorded_by``: the old state as the parse left it (not synced since),
    # or as a sync recorded it after; "other_reason": a control, a real defect stays.
    from crypto_lakehouse import quarantine
    from crypto_lakehouse.archive.sync import _fingerprint, keys_not_fetched_again, symbol_dirs
    from crypto_lakehouse.parse import state_file

    root = tmp_path / "mirror"
    good = SPOT_KEYS[0]
    (root / SPOT_DIR).mkdir(parents=True)
    for name in (good, f"{good}.CHECKSUM"):
        shutil.copyfile(MIRROR / name, root / name)
    rows = "".join(
        f"{t},8000.0,8010.0,7990.0,8005.0,1.5,{t + 59_999},12000.0,10,0.7,5600.0,0\n"
        for t in OFF_GRID_TIMES
    )
    _write_archive(root, OFF_GRID_KEY, rows.encode())
    emu = emulator(mirror_dir=root)
    job = Job(emu, tmp_path).list()
    job.sync()
    sha = job.report()["files"][OFF_GRID_KEY]["sha256"]
    # The old version's aws_parse: the zip moved to quarantine, the parse state's record.
    reason = OLD_OFF_GRID_REASON
    if recorded_by == "other_reason":
        reason = f"{OFF_GRID_KEY}: line 4: field 'open' is not a number: '80x0.0'"
    quarantine.quarantine_archive(job.data_dir, OFF_GRID_KEY, reason)
    _parse_klines(job)
    parse_state = state_file(job.data_dir, "spot", "klines-1m", "BTCUSDT")
    state = json.loads(parse_state.read_text())
    state["quarantined"] = {OFF_GRID_KEY: {"sha256": sha, "reason": reason}}
    parse_state.write_text(json.dumps(state))
    listing = {e["key"]: e for e in json.loads((job.details_dir / "BTCUSDT.json").read_text())}
    if recorded_by == "sync":  # a sync of the old version ran since: its own record
        sync_state = layout.state_path(job.data_dir, "aws_download", "spot", "klines-1m", "BTCUSDT")
        state = json.loads(sync_state.read_text())
        del state["verified"][OFF_GRID_KEY]
        state["quarantined"] = {
            OFF_GRID_KEY: {
                "zip": _fingerprint(listing[OFF_GRID_KEY]),
                "checksum": _fingerprint(listing[f"{OFF_GRID_KEY}.CHECKSUM"]),
                "reason": reason,
            }
        }
        sync_state.write_text(json.dumps(state))

    # what `crypto-lakehouse plan` counts as quarantined (not fetched by the next sync)
    dirs = symbol_dirs("spot", "klines", "BTCUSDT", "1m", True)
    planned = keys_not_fetched_again(job.data_dir, "spot", "klines-1m", "BTCUSDT", listing, dirs)
    assert planned == ({OFF_GRID_KEY: reason} if recorded_by == "other_reason" else {})
    emu.reset_counts()
    stats = job.sync()
    assert emu.counts["get"] == 0  # nothing downloaded: the quarantined copy is verified
    kept = layout.quarantine_path(job.data_dir, OFF_GRID_KEY)
    if recorded_by == "other_reason":
        assert job.report()["quarantined"] == {OFF_GRID_KEY: reason}
        assert kept.exists() and not job.local(OFF_GRID_KEY).exists()
        return
    report = job.report()
    assert report["quarantined"] == {} and stats["files_quarantined"] == 0
    assert sorted(report["files"]) == [OFF_GRID_KEY, good]
    assert report["files"][OFF_GRID_KEY]["sha256"] == sha
    _assert_verified(job, OFF_GRID_KEY, root)
    assert not kept.exists() and not Path(f"{kept}.CHECKSUM").exists()
    assert not Path(f"{kept}.reason").exists()

    _parse_klines(job)
    parsed = json.loads((job.tmp / "parse.json").read_text())
    assert parsed["quarantined"] == {}
    part = layout.parsed_klines_dir(job.data_dir, "spot", "BTCUSDT", "1m") / "201802.pqt"
    floored = [t - t % 60_000 for t in OFF_GRID_TIMES]
    assert pq.read_table(part).column("candle_begin_time").cast("int64").to_pylist() == floored
    emu.reset_counts()
    job.sync()  # and the next runs leave it alone
    assert emu.counts["get"] == 0 and sorted(job.report()["files"]) == [OFF_GRID_KEY, good]


def _minute_rows(days: list[date]) -> bytes:
    lines = []
    for d in days:
        t0 = (d.toordinal() - date(1970, 1, 1).toordinal()) * 86_400_000
        lines += [
            f"{t},1,2,0.5,1,3,{t + 59_999},3,4,1,1,0" for t in range(t0, t0 + 86_400_000, 60_000)
        ]
    return ("\n".join(lines) + "\n").encode()


def test_a_monthly_zip_cut_short_gives_way_to_the_daily_zips_of_its_missing_days(
    tmp_path, emulator
):
    """binance-public-data #403: ALICEUSDT's monthly 1m file of 2024-07 holds 7 days while
    the daily files of the month are complete. With use_monthly_klines the missing days came
    from REST (or from nowhere) although their daily zips are listed."""
    root = tmp_path / "mirror"
    feb = [date(2024, 2, d) for d in range(1, 30)]
    daily = {d: f"{SPOT_DIR}BTCUSDT-1m-{d.isoformat()}.zip" for d in feb}
    month = "data/spot/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2024-02.zip"
    for d, key in daily.items():
        _write_archive(root, key, _minute_rows([d]))
    _write_archive(root, month, _minute_rows(feb[:7]))  # cut short: February 1-7 only
    emu = emulator(mirror_dir=root)
    job = Job(emu, tmp_path).list(include_monthly=True)
    part = layout.parsed_klines_dir(job.data_dir, "spot", "BTCUSDT", "1m") / "202402.pqt"

    def parse():
        stats = run_parse_klines(
            trade_type="spot", symbol="BTCUSDT", interval="1m", data_dir=job.data_dir,
            download_report=job.report_path, report_path=job.tmp / "parse.json",
            stats_path=job.tmp / "parse-stats.json",
        )  # fmt: skip
        return stats, pq.read_table(part).column("candle_begin_time").cast("int64").to_numpy()

    job.sync(use_monthly_klines=True)
    assert sorted(job.report()["files"]) == [month]
    _, times = parse()
    assert len(times) == 7 * 1440  # the parse learns that 22 days hold no row

    emu.reset_counts()
    job.sync(use_monthly_klines=True)
    report = job.report()
    missing = [daily[d] for d in feb[7:]]
    assert sorted(report["files"]) == sorted([month, *missing])
    assert report["day_sources"]["2024-02-07"] == month
    assert report["day_sources"]["2024-02-08"] == daily[feb[7]]
    assert report["day_sources"]["2024-02-29"] == daily[feb[-1]]
    fetched = {k for k in job.zip_gets() if k.endswith(".zip")}
    assert fetched == set(missing)  # only the missing days' zips
    _, times = parse()
    first = (feb[0].toordinal() - date(1970, 1, 1).toordinal()) * 86_400_000
    assert times.tolist() == list(range(first, first + 29 * 86_400_000, 60_000))

    # Settled: the next run fetches nothing and the parse keeps the month as it is.
    emu.reset_counts()
    job.sync(use_monthly_klines=True)
    assert job.zip_gets() == {} and job.report() == report
    stats, again = parse()
    assert stats["files_parsed"] == 0 and stats["partitions_written"] == 0
    assert again.tolist() == times.tolist()


def test_the_listing_month_of_a_monthly_zip_is_no_cut_short_month(tmp_path, emulator, caplog):
    """A symbol listed on 2024-02-20, February taken from its monthly zip: the days before
    the listing hold no row in any zip, so the download neither warns that the monthly zip
    holds no row of them nor records them as its gaps (it did, for nearly every symbol)."""
    root = tmp_path / "mirror"
    feb = [date(2024, 2, d) for d in range(20, 30)]
    month = "data/spot/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2024-02.zip"
    for d in feb:
        _write_archive(root, f"{SPOT_DIR}BTCUSDT-1m-{d.isoformat()}.zip", _minute_rows([d]))
    _write_archive(root, month, _minute_rows(feb))
    emu = emulator(mirror_dir=root)
    job = Job(emu, tmp_path).list(include_monthly=True)
    job.sync(use_monthly_klines=True)
    run_parse_klines(
        trade_type="spot", symbol="BTCUSDT", interval="1m", data_dir=job.data_dir,
        download_report=job.report_path, report_path=job.tmp / "parse.json",
        stats_path=job.tmp / "parse-stats.json",
    )  # fmt: skip
    with caplog.at_level("WARNING"):
        job.sync(use_monthly_klines=True)
    assert "holds no row" not in caplog.text
    assert sorted(job.report()["files"]) == [month]
