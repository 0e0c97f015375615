"""Stages on the storage seam: the same job on a local data dir and on an s3:// data dir
(SeaweedFS) gives the same tables and records; nothing of an S3 run lands on local disk
except the job's report and stats (Snakemake's outputs, local to the run directory)."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from crypto_lakehouse import layout, storage
from crypto_lakehouse.io import read_json
from crypto_lakehouse.parse.klines import run_parse_klines
from tests.conftest import FIXTURES
from tests.s3_helpers import put_verified_archives

REAL_SPOT = FIXTURES / "real" / "spot"
DAYS = ("2020-01-01", "2020-01-02", "2020-01-03")


def _archives() -> dict[str, bytes]:
    """Three real spot days, and day 4: a copy of day 1 under day 4's name (its times are
    not day 4's: the parser quarantines it)."""
    out = {
        layout.daily_kline_key("spot", "BTCUSDT", "1m", d): (
            REAL_SPOT / f"BTCUSDT-1m-{d}.zip"
        ).read_bytes()
        for d in DAYS
    }
    out[layout.daily_kline_key("spot", "BTCUSDT", "1m", "2020-01-04")] = (
        REAL_SPOT / "BTCUSDT-1m-2020-01-01.zip"
    ).read_bytes()
    return out


def _parse(data_dir, report: dict, out: Path) -> tuple[dict, dict]:
    stats = run_parse_klines(
        trade_type="spot", symbol="BTCUSDT", interval="1m", data_dir=data_dir,
        download_report=report, report_path=out / "report.json", stats_path=out / "stats.json",
    )  # fmt: skip
    return stats, read_json(out / "report.json")


def _relative_files(data_dir) -> dict[str, object]:
    base = str(storage.data_path(data_dir))
    return {str(p)[len(base) + 1 :]: p for p in storage.list_files(data_dir)}


def test_parse_on_s3_equals_parse_on_local_disk(tmp_path, s3_root, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a path that escaped the seam would appear here as s3:/…
    local = tmp_path / "local"
    archives = _archives()
    report_local = put_verified_archives(local, archives)
    report_s3 = put_verified_archives(s3_root, archives)
    assert report_s3 == report_local

    stats_l, rep_l = _parse(local, report_local, tmp_path / "out-local")
    stats_s, rep_s = _parse(s3_root, report_s3, tmp_path / "out-s3")

    bad = layout.daily_kline_key("spot", "BTCUSDT", "1m", "2020-01-04")
    assert stats_l["files_parsed"] == 3 and list(rep_l["quarantined"]) == [bad]
    assert rep_s == rep_l
    for key in ("files_parsed", "files_quarantined", "quarantined", "partitions_written"):
        assert stats_s[key] == stats_l[key], key

    # The same files exist in both stores, with the same tables and records.
    files_l, files_s = _relative_files(local), _relative_files(s3_root)
    assert sorted(files_s) == sorted(files_l)
    assert "parsed_data/spot/klines/BTCUSDT/1m/202001.pqt" in files_s
    assert f"lakehouse/quarantine/{bad}.reason" in files_s and f"aws_data/{bad}" not in files_s
    for rel in files_l:
        if rel.endswith(".pqt"):
            assert storage.read_parquet(files_s[rel]).equals(pq.read_table(files_l[rel])), rel
        else:
            assert storage.read_bytes(files_s[rel]) == files_l[rel].read_bytes(), rel
    assert not any(p.name.startswith("s3:") for p in tmp_path.iterdir())
    assert sorted(os.listdir(tmp_path / "out-s3")) == ["report.json", "stats.json"]

    # Rerun on S3: the state record on S3 says everything is done.
    again, _ = _parse(s3_root, report_s3, tmp_path / "out-s3")
    assert again["files_parsed"] == 0 and again["partitions_written"] == 0


def _gen(data_dir, out: Path) -> dict:
    from crypto_lakehouse.jobs import run_gen_kline_rule

    return run_gen_kline_rule(
        report_path=str(out / "gen.json"), stats_path=str(out / "gen-stats.json"),
        trade_type="spot", symbol="BTCUSDT", interval="1m", data_dir=data_dir,
        split_gaps=True, with_vwap=True, with_funding_rates=False, min_days=1,
        min_price_chg=0.1,
    )  # fmt: skip


def test_gen_kline_on_s3_equals_gen_kline_on_local_disk(tmp_path, s3_root, monkeypatch):
    """Parse then gen_kline (through its rule entry: the unchanged-inputs skip reads its
    state on S3) on both stores; the generated segment files hold the same table."""
    monkeypatch.chdir(tmp_path)
    archives = _archives()
    local = tmp_path / "local"
    for root, out in ((local, tmp_path / "out-local"), (s3_root, tmp_path / "out-s3")):
        _parse(root, put_verified_archives(root, archives), out)
        stats = _gen(root, out)
        assert stats.get("skipped_unchanged") is None
    rep_l = read_json(tmp_path / "out-local" / "gen.json")
    rep_s = read_json(tmp_path / "out-s3" / "gen.json")
    assert rep_s == rep_l and [s["file"] for s in rep_s["segments"]]
    for segment in rep_l["segments"]:
        expected = pq.read_table(local / segment["file"])
        got = storage.read_parquet(storage.join(s3_root, segment["file"]))
        assert got.equals(expected) and got.num_rows == 3 * 1440
        assert got.schema.metadata == expected.schema.metadata
    # Results read straight from the bucket: a pyarrow dataset on S3, queried by DuckDB
    # (its httpfs extension cannot be installed offline; DuckDB scans the Arrow dataset).
    import duckdb
    import pyarrow.dataset as ds

    fs, inner = storage.filesystem(storage.join(s3_root, "results_data/spot/klines/1m"))
    con = duckdb.connect()
    con.register("klines", ds.dataset(inner, filesystem=fs, format="parquet"))
    got = con.execute("SELECT count(*), min(low), max(high), sum(volume) FROM klines").fetchall()[0]
    local_table = pq.read_table(local / "results_data" / "spot" / "klines" / "1m")
    want = (
        local_table.num_rows,
        min(local_table.column("low").to_pylist()),
        max(local_table.column("high").to_pylist()),
        sum(local_table.column("volume").to_pylist()),
    )
    assert got[:3] == want[:3] and got[3] == pytest.approx(want[3], rel=1e-12)
    # Nothing changed upstream: the rule skips the rebuild, from the state record on S3.
    again = _gen(s3_root, tmp_path / "out-s3")
    assert again["skipped_unchanged"] == 1
    assert not any(p.name.startswith("s3:") for p in tmp_path.iterdir())


def test_resample_and_features_on_s3_equal_local_disk(tmp_path, s3_root, monkeypatch):
    """Parse, gen_kline, resample to 1h at offsets 0m and 30m, then features (one EMA, one
    microstructure window) on both stores."""
    from crypto_lakehouse.jobs import run_features_rule, run_resample_rule

    monkeypatch.chdir(tmp_path)
    archives = _archives()
    reports = {}
    for root, out in ((tmp_path / "local", tmp_path / "out-l"), (s3_root, tmp_path / "out-s")):
        _parse(root, put_verified_archives(root, archives), out)
        _gen(root, out)
        run_resample_rule(
            gen_report=str(out / "gen.json"), report_path=str(out / "res.json"),
            stats_path=str(out / "res-stats.json"), trade_type="spot", symbol="BTCUSDT",
            interval="1m", data_dir=root,
            targets=[{"interval": "1h", "offset_step": "30m"}], aggregations={},
        )  # fmt: skip
        reports[out.name] = read_json(out / "res.json")
        run_features_rule(
            symbol="BTCUSDT", gen_report=str(out / "gen.json"),
            resample_report=str(out / "res.json"), report_path=str(out / "feat.json"),
            stats_path=str(out / "feat-stats.json"), trade_type="spot", interval="1m",
            data_dir=root, indicators=[{"name": "EMA", "timeperiod": 5}], windows=[10],
        )  # fmt: skip
        reports["features-" + out.name] = read_json(out / "feat.json")
    assert reports["features-out-s"] == reports["features-out-l"]
    feature_files = [
        o["file"]
        for section in reports["features-out-l"]["symbols"].values()
        for o in section["outputs"]
    ]
    assert len(feature_files) == 3  # the 1m segment and the two resampled files
    for rel in feature_files:
        expected = pq.read_table(tmp_path / "local" / rel)
        got = storage.read_parquet(storage.join(s3_root, rel))
        # pandas' equals: NaN (an indicator's warm-up) equals NaN in the same place.
        assert got.schema == expected.schema and got.to_pandas().equals(expected.to_pandas())
    assert reports["out-s"] == reports["out-l"]
    files = [o["file"] for o in reports["out-l"]["outputs"]]
    assert len(files) == 2 and all("/1h/" in f for f in files)
    counts = []
    for rel in files:
        expected = pq.read_table(tmp_path / "local" / rel)
        counts.append(expected.num_rows)
        assert storage.read_parquet(storage.join(s3_root, rel)).equals(expected), rel
    # 72 whole hours from 00:00; from 00:30, 71 whole windows (the edge halves are not kept).
    assert sorted(counts) == [71, 72]


def test_download_on_s3_verifies_marks_quarantines_and_reruns_without_requests(
    tmp_path, s3_root, emulator, monkeypatch
):
    """run_sync with an s3:// data dir against the emulator: zips, CHECKSUMs and markers
    land as objects; a body that never matches its CHECKSUM is kept in the quarantine; a
    second run makes no request; the parse then reads the archives from S3."""
    from crypto_lakehouse_emulator import Faults

    from crypto_lakehouse.archive import http
    from crypto_lakehouse.archive.listing import run_listing
    from crypto_lakehouse.archive.sync import run_sync

    monkeypatch.setattr(http, "BACKOFF_BASE_S", 0.001)
    monkeypatch.chdir(tmp_path)
    mirror = FIXTURES / "legacy-v1-real" / "mirror"
    folder = "data/spot/daily/klines/BTCUSDT/1m/"
    keys = [f"{folder}BTCUSDT-1m-{d}.zip" for d in DAYS]
    bad = keys[1]
    emu = emulator(mirror_dir=mirror, faults=Faults(corrupt_always={bad}))
    run_listing(
        trade_type="spot", dataset="klines", interval="1m", symbols=["BTCUSDT"],
        listing_url=emu.base_url, out_index=tmp_path / "listing" / "klines-1m.json",
        details_dir=tmp_path / "listing" / "klines-1m", include_monthly=False,
        concurrency=2, timeout_s=5, max_retries=2,
    )  # fmt: skip

    def sync():
        return run_sync(
            trade_type="spot", dataset="klines", interval="1m", symbol="BTCUSDT",
            details_path=tmp_path / "listing" / "klines-1m" / "BTCUSDT.json",
            data_dir=s3_root, archive_url=emu.base_url, start_date="2020-01-01",
            end_date="2020-01-03", use_monthly_klines=False, concurrency=4, max_retries=1,
            timeout_s=5, report_path=tmp_path / "dl.json", stats_path=tmp_path / "dl-s.json",
        )  # fmt: skip

    stats = sync()
    assert stats["files_done"] == 2 and stats["files_quarantined"] == 1
    for key in keys:
        path = layout.aws_path(s3_root, key)
        if key == bad:
            assert not storage.exists(path) and not storage.exists(layout.verified_marker(path))
            kept = layout.quarantine_path(s3_root, key)
            assert storage.size(kept) == (mirror / key).stat().st_size
            assert storage.read_bytes(kept) != (mirror / key).read_bytes()
            continue
        assert storage.read_bytes(path) == (mirror / key).read_bytes()
        assert storage.read_bytes(f"{path}.CHECKSUM") == (mirror / f"{key}.CHECKSUM").read_bytes()
        assert storage.read_bytes(layout.verified_marker(path)) == b""
    emu.reset_counts()
    again = sync()
    assert emu.counts["get"] == 0 and again["files_quarantined"] == 1
    # The download report is the parse's input, the archives are read from the bucket.
    parsed, report = _parse(s3_root, read_json(tmp_path / "dl.json"), tmp_path / "out")
    assert parsed["files_parsed"] == 2 and sorted(report["files"]) == [keys[0], keys[2]]
    assert not any(p.name.startswith("s3:") for p in tmp_path.iterdir())


def _kill_rerun_case(tmp_path, s3_root, archives, report, delay):
    """A parse on S3 in a child process, kill -9 after ``delay`` s, then a rerun here."""
    import json
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import REPO_ROOT

    code = (
        "import json, sys\n"
        "from crypto_lakehouse import storage\n"
        "from crypto_lakehouse.parse.klines import run_parse_klines\n"
        "storage.configure(json.loads(sys.argv[1]))\n"
        "print('start', flush=True)\n"
        "run_parse_klines(trade_type='spot', symbol='BTCUSDT', interval='1m',\n"
        "    data_dir=sys.argv[2], download_report=json.loads(sys.argv[3]),\n"
        "    report_path=sys.argv[4] + '/report.json', stats_path=sys.argv[4] + '/stats.json')\n"
        "print('done', flush=True)\n"
    )
    out = tmp_path / f"killed-{delay}"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, json.dumps(storage.settings()), s3_root,
         json.dumps(report), str(out)],
        stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )  # fmt: skip
    assert proc.stdout.readline().strip() == "start"
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    interrupted = "done" not in proc.stdout.read()
    return interrupted, _parse(s3_root, report, tmp_path / f"rerun-{delay}")[1]


def test_parse_killed_on_s3_then_rerun_equals_local(tmp_path, s3_root, monkeypatch):
    """kill -9 at several moments of a parse on S3; the rerun's partitions, quality and
    state equal those of an uninterrupted local parse."""
    from crypto_lakehouse_emulator.generate import write_kline_day

    monkeypatch.chdir(tmp_path)
    src = tmp_path / "src"
    archives = {}
    for i in range(31):  # 2024-10-15 .. 2024-11-14: two monthly partitions
        day = f"2024-{10 + (14 + i) // 31}-{(14 + i) % 31 + 1:02d}"
        key = write_kline_day(src, "spot", "BTCUSDT", "1m", day, seed=i)
        archives[key] = (src / key).read_bytes()
    local = tmp_path / "local"
    _, want = _parse(local, put_verified_archives(local, archives), tmp_path / "out-local")
    assert sorted(want["partitions"]) == ["202410", "202411"]
    expected = {
        rel: p for rel, p in _relative_files(local).items() if not rel.startswith("aws_data/")
    }
    interrupted = []
    for n, delay in enumerate((0.05, 0.3, 0.8)):
        root = f"{s3_root}/run{n}"
        report = put_verified_archives(root, archives)
        killed_midway, got = _kill_rerun_case(tmp_path, root, archives, report, delay)
        interrupted.append(killed_midway)
        assert got == want, delay
        files = _relative_files(root)
        for rel, path in expected.items():
            if rel.endswith(".pqt"):
                assert storage.read_parquet(files[rel]).equals(pq.read_table(path)), (delay, rel)
            else:
                assert storage.read_bytes(files[rel]) == path.read_bytes(), (delay, rel)
    assert any(interrupted)  # at least one kill landed before the job finished
