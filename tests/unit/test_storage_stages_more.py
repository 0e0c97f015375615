"""More stages on the storage seam (docs/storage.md): the REST downloads, the tick parser,
the listing, the loaders, summaries and the report. Each runs once on a local data dir and
once on an s3:// data dir (SeaweedFS) and must give the same tables and records; the
Snakemake outputs (job reports, stats) stay local in both runs."""

from __future__ import annotations

import json
import os
import zipfile
from datetime import UTC, datetime
from io import BytesIO

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from crypto_lakehouse_emulator.rest import RestEmulator
from crypto_lakehouse_emulator.ticks import FUTURES_AGG_HEADER

from crypto_lakehouse import layout, storage
from crypto_lakehouse.io import read_json, write_json
from crypto_lakehouse.provenance import day_iso
from crypto_lakehouse.rest import archive_days
from crypto_lakehouse.rest.klines import klines_to_table

DAY = 86_400_000
HOUR = 3_600_000
D = 19_000  # 2022-01-08


def relative_files(data_dir) -> dict[str, object]:
    """{path below data_dir: path} of every file of a data dir (any store)."""
    base = str(storage.data_path(data_dir))
    return {str(p)[len(base) + 1 :]: p for p in storage.list_files(data_dir)}


# Records that hold their files' identities (size, mtime): equal but for those.
IDENTITY_RECORDS = f"lakehouse/state/{archive_days.RECORD_STAGE}/"


def without_identities(record: dict) -> dict:
    parts = {name: {**e, "identity": None} for name, e in record["partitions"].items()}
    return {**record, "partitions": parts}


def assert_same_stores(local, remote) -> dict[str, object]:
    """The same files below both data dirs, Parquet with equal tables (schema metadata
    included), everything else with equal bytes."""
    files_l, files_s = relative_files(local), relative_files(remote)
    assert sorted(files_s) == sorted(files_l)
    for rel, path in files_l.items():
        if rel.endswith(".pqt"):
            got, want = storage.read_parquet(files_s[rel]), pq.read_table(path)
            assert got.equals(want) and got.schema.metadata == want.schema.metadata, rel
        elif rel.startswith(IDENTITY_RECORDS):
            got, want = storage.read_json(files_s[rel]), read_json(path)
            assert without_identities(got) == without_identities(want), rel
        else:
            assert storage.read_bytes(files_s[rel]) == path.read_bytes(), rel
    return files_s


def no_local_s3_folder(where) -> None:
    """A path that escaped the seam would appear in the working directory as ``s3:``."""
    assert not any(p.name.startswith("s3:") for p in where.iterdir())


# ---------------------------------------------------------------- REST (klines, funding)
def _rest(symbols) -> RestEmulator:
    rest = RestEmulator(now_ms=(D + 2) * DAY + HOUR)
    for i, symbol in enumerate(symbols):
        rest.add_synthetic_klines("um", symbol, start_ms=D * DAY, seed=i)
        rest.add_synthetic_funding(
            "um", symbol, start_ms=D * DAY, end_ms=(D + 9) * DAY, seed=i, every_h=8
        )
    return rest


def _archive_day(rest, data_dir, symbol, days, keep_first=None) -> None:
    """Parsed archive candles of ``days`` (a partition per month), as the parser writes
    them; only the first ``keep_first`` candles when given."""
    rows = [r for d in days for r in rest.klines_rows("um", symbol, "1m", d * DAY, (d + 1) * DAY)]
    table = klines_to_table(rows[:keep_first], lo_ms=0, hi_ms=2**62, now_ms=2**62)
    out = layout.parsed_klines_dir(data_dir, "um_futures", symbol, "1m") / "202201.pqt"
    storage.write_parquet(out, table)


def _host_shard(data_dir, out, url, symbols) -> dict:
    from crypto_lakehouse.rest.host import run_host_shard

    write_json(out / "parse.json", {})
    reports = out / "reports"
    return run_host_shard(
        shard=0, shard_report=str(reports / "shards/0.json"),
        klines={"symbols": symbols, "symbol_paths": {"report_path": str(reports / "klines-1m")},
                "symbol_values": {"parse_report": {s: str(out / "parse.json") for s in symbols}}},
        funding={"symbols": symbols, "symbol_paths": {"report_path": str(reports / "funding")},
                 "symbol_values": {"parse_report": {s: None for s in symbols}}},
        interval="1m", trade_type="um_futures", data_dir=str(data_dir), api_url=url,
        end_date=None, exchange_info_path=None, backoff_base_s=0.01,
    )  # fmt: skip


def _served_funding(rest, symbol, lo, hi) -> list[int]:
    _, _, body = rest.handle(
        "GET", "/fapi/v1/fundingRate",
        {"symbol": symbol, "startTime": str(lo), "endTime": str(hi), "limit": "1000"}, {},
    )  # fmt: skip
    return [r["fundingTime"] for r in json.loads(body)]


def test_rest_downloads_on_s3_equal_local_disk(tmp_path, s3_root, emulator, monkeypatch):
    """The REST shard job (klines day fill, provenance, funding) on both stores, then a
    second run later: new days and events appended, a REST day the archive now holds
    completely removed (on S3: a DeleteObject)."""
    monkeypatch.chdir(tmp_path)
    symbols = ["AUSDT", "BUSDT"]
    local = tmp_path / "local"
    runs = {}
    for name, root in (("local", local), ("s3", s3_root)):
        rest = _rest(symbols)
        emu = emulator(rest=rest)
        out = tmp_path / f"out-{name}"
        for symbol in symbols:  # day D: one archived candle, so D and D+1 are fetched
            _archive_day(rest, root, symbol, [D], keep_first=1)
        first = _host_shard(root, out, emu.base_url, symbols)
        rest.now_ms = (D + 4) * DAY + HOUR
        _archive_day(rest, root, "AUSDT", [D])  # day D complete in the archive now
        second = _host_shard(root, out / "second", emu.base_url, symbols)
        runs[name] = (first, second, rest, out)
        assert first["failed"] == [] and second["failed"] == []

    files = assert_same_stores(local, s3_root)
    no_local_s3_folder(tmp_path)
    assert sorted(os.listdir(tmp_path / "out-s3" / "reports")) == ["funding", "klines-1m", "shards"]
    rest, out_l, out_s = runs["s3"][2], runs["local"][3], runs["s3"][3]
    for symbol in symbols:
        for part in ("klines-1m", "funding"):
            for run in ("", "second/"):
                rel = f"{run}reports/{part}/{symbol}.json"
                assert read_json(out_s / rel) == read_json(out_l / rel), rel
    # What the stores hold, from the emulator's own answers: AUSDT's day D came from the
    # archive in the end (its REST day file removed), BUSDT's stayed; D+1..D+3 from REST.
    api = "api_data/um_futures/klines/{}/1m/{}.pqt"
    day_name = lambda d: day_iso(d).replace("-", "")  # noqa: E731
    assert api.format("AUSDT", day_name(D)) not in files
    assert api.format("BUSDT", day_name(D)) in files
    for symbol in symbols:
        for d in (D + 1, D + 2, D + 3):
            want = klines_to_table(
                rest.klines_rows("um", symbol, "1m", d * DAY, (d + 1) * DAY),
                lo_ms=0, hi_ms=2**62, now_ms=2**62,
            )  # fmt: skip
            assert storage.read_parquet(files[api.format(symbol, day_name(d))]).equals(want)
        funding = storage.read_parquet(files[f"api_data/um_futures/funding_rate/{symbol}.pqt"])
        assert funding["funding_time"].cast(pa.int64()).to_pylist() == _served_funding(
            rest, symbol, D * DAY, rest.now_ms
        )
    prov = storage.read_parquet(files["lakehouse/provenance/um_futures/1m/AUSDT.pqt"])
    assert prov["source"].to_pylist()[0] == "archive"


# ---------------------------------------------------------------- the tick parser
def _ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).replace(tzinfo=UTC).timestamp() * 1000)


def _zip(name: str, text: str) -> bytes:
    buf = BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(name.replace(".zip", ".csv"), text)
    return buf.getvalue()


def _tick_archives() -> tuple[dict[str, bytes], dict[str, int], str]:
    """A monthly aggTrades zip whose rows span two UTC days, a good daily zip of a third day,
    and a daily zip whose ids go back on CSV line 3 (quarantined); the rows per day read off
    the lines. (A daily zip's rows must lie inside its day.)"""
    key = lambda day: layout.archive_key(  # noqa: E731
        "um_futures", "aggTrades", "BTCUSDT", None, "monthly" if len(day) == 7 else "daily", day
    )
    t = [_ms("2024-03-01T23:59:59.999"), _ms("2024-03-02T00:00:00"), _ms("2024-03-02T01:00:00")]
    day1 = (
        f"{FUTURES_AGG_HEADER}\n"
        f"26129,0.01633102,4.70443515,27781,27781,{t[0]},true\n"
        f"26130,0.01633200,0,27782,27785,{t[1]},false\n"
        f"26131,0.01633300,1.5,27786,27786,{t[2]},true\n"
    )
    t3 = _ms("2024-03-03T12:00:00")
    day3 = (
        f"{FUTURES_AGG_HEADER}\n"
        f"30000,0.02,1,40000,40001,{t3},false\n"
        f"30001,0.021,2,40002,40002,{t3 + 5},true\n"
    )
    bad = f"{FUTURES_AGG_HEADER}\n50001,0.03,1,60000,60000,{t3 + 86_400_000},false\n" + (
        f"50000,0.03,1,60001,60001,{t3 + 86_400_001},false\n"
    )
    archives = {
        key("2024-03"): _zip("a.zip", day1),
        key("2024-03-03"): _zip("b.zip", day3),
        key("2024-03-04"): _zip("c.zip", bad),
    }
    return archives, {"20240301": 1, "20240302": 2, "20240303": 2}, key("2024-03-04")


def _put_verified(data_dir, archives: dict[str, bytes]) -> dict:
    """Zips and .verified markers below data_dir (any store); their download report."""
    import hashlib

    files = {}
    for key, body in archives.items():
        path = layout.aws_path(data_dir, key)
        storage.write_bytes(path, body)
        storage.touch(layout.verified_marker(path))
        files[key] = {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    return {"files": files, "quarantined": {}}


def _parse_ticks(data_dir, download: dict, out) -> dict:
    from crypto_lakehouse.parse.ticks import run_parse_ticks

    return run_parse_ticks(
        trade_type="um_futures", dataset="aggTrades", symbol="BTCUSDT", data_dir=data_dir,
        download_report=download, report_path=out / "parse.json",
    )  # fmt: skip


def test_tick_parse_on_s3_equals_local_disk(tmp_path, s3_root, monkeypatch):
    """Day files, quarantine and state on S3 equal those of a local parse; a rerun parses
    nothing; a day object deleted on S3 makes its zip parsed again."""
    from crypto_lakehouse.parse import ticks

    monkeypatch.chdir(tmp_path)
    archives, rows_per_day, bad = _tick_archives()
    local = tmp_path / "local"
    reports = {}
    for name, root in (("local", local), ("s3", s3_root)):
        out = tmp_path / f"out-{name}"
        out.mkdir()
        reports[name] = _parse_ticks(root, _put_verified(root, archives), out)
    assert reports["s3"] == reports["local"]
    assert list(reports["s3"]["quarantined"]) == [bad] and "line 3" in json.dumps(reports["s3"])
    files = assert_same_stores(local, s3_root)
    no_local_s3_folder(tmp_path)
    assert sorted(os.listdir(tmp_path / "out-s3")) == ["parse.json"]
    days = {
        rel.rsplit("/", 1)[1][:8]: storage.parquet_metadata(p).num_rows
        for rel, p in files.items()
        if rel.startswith("parsed_data/")
    }
    assert days == rows_per_day
    assert f"lakehouse/quarantine/{bad}" in files and f"aws_data/{bad}" not in files

    # Rerun on S3: the state and the listing of the day objects say everything is done.
    download = _put_verified(s3_root, {k: v for k, v in archives.items() if k != bad})

    def must_not_parse(*a, **k):
        raise AssertionError("parsed again")

    with monkeypatch.context() as m:
        m.setattr(ticks, "parse_tick_zip", must_not_parse)
        _parse_ticks(s3_root, download, tmp_path / "out-s3")
    # A day object removed: its zip (and only it) is parsed again, the object comes back.
    gone = files["parsed_data/um_futures/aggTrades/BTCUSDT/20240302.pqt"]
    want = storage.read_parquet(gone)
    storage.delete(gone)
    parsed = []
    real = ticks.parse_tick_zip
    monkeypatch.setattr(
        ticks, "parse_tick_zip", lambda *a, **k: parsed.append(k["key"]) or real(*a, **k)
    )
    _parse_ticks(s3_root, download, tmp_path / "out-s3")
    assert parsed == [next(k for k in archives if "/monthly/" in k)]
    assert storage.read_parquet(gone).equals(want)


def test_tick_parse_defect_on_s3_publishes_no_day(tmp_path, s3_root, monkeypatch):
    """A zip whose defect comes after its first days were written (small CSV blocks):
    no object of it appears."""
    from crypto_lakehouse.parse import ticks
    from crypto_lakehouse.parse.csv_reader import ArchiveDefect

    monkeypatch.setattr(ticks, "BLOCK_SIZE", 96)  # the header, then about two lines
    written = []
    real_writer = ticks._write_slices
    monkeypatch.setattr(ticks, "_write_slices", lambda *a: written.append(a[1]) or real_writer(*a))

    t = _ms("2024-03-01T10:00:00")
    good = [f"{i},0.1,1,{i},{i},{t + (i // 4) * DAY + i},true\n" for i in range(1, 9)]
    text = f"{FUTURES_AGG_HEADER}\n" + "".join(good) + f"9,0.1,-1,9,9,{t + 2 * DAY},true\n"
    key = layout.archive_key("um_futures", "aggTrades", "BTCUSDT", None, "monthly", "2024-03")
    storage.write_bytes(layout.aws_path(s3_root, key), _zip("x.zip", text))
    with pytest.raises(ArchiveDefect, match="line 10"):
        ticks.parse_tick_zip(
            layout.aws_path(s3_root, key), key=key, trade_type="um_futures",
            dataset="aggTrades", symbol="BTCUSDT", data_dir=s3_root, first_day="2024-03-01",
        )  # fmt: skip
    assert written and written[0]  # day files were staged before line 10 failed
    assert [str(p) for p in storage.list_files(s3_root)] == [str(layout.aws_path(s3_root, key))]


# ---------------------------------------------------------------- the archive listing
def test_listing_on_s3_equals_local_disk(tmp_path, s3_root, monkeypatch):
    """The listing index and per-symbol details written below an S3 prefix (as ``plan``
    writes them below the data dir) equal the local ones; a stale details object goes."""
    import hashlib

    from crypto_lakehouse_emulator import Emulator

    from crypto_lakehouse.archive import http
    from crypto_lakehouse.archive.listing import run_listing
    from tests.unit.test_listing import _spot_mirror

    monkeypatch.setattr(http, "BACKOFF_BASE_S", 0.001)
    monkeypatch.chdir(tmp_path)
    _spot_mirror(tmp_path / "mirror")
    local = tmp_path / "local"
    stale = "out/klines-1m/OLDUSDT.json"
    with Emulator(mirror_dir=tmp_path / "mirror") as emu:
        for root in (local, s3_root):
            storage.write_text(storage.join(root, stale), "[]\n")
            run_listing(
                trade_type="spot", dataset="klines", interval="1m", symbols="all",
                listing_url=emu.base_url, out_index=storage.join(root, "out/klines-1m.json"),
                details_dir=storage.join(root, "out/klines-1m"), include_monthly=False,
                concurrency=4, timeout_s=5, max_retries=1,
            )  # fmt: skip
    files = assert_same_stores(local, s3_root)
    no_local_s3_folder(tmp_path)
    assert sorted(files) == [
        "out/klines-1m.json", "out/klines-1m/BTCUSDT.json", "out/klines-1m/ETHUSDT.json",
        "out/klines-1m/SYRUPUSDT.json", "out/klines-1m/_index.state",
    ]  # fmt: skip
    index = json.loads(storage.read_bytes(files["out/klines-1m.json"]))
    for symbol in ("BTCUSDT", "ETHUSDT", "SYRUPUSDT"):
        body = storage.read_bytes(files[f"out/klines-1m/{symbol}.json"])
        assert index["symbols"][symbol]["digest"] == hashlib.sha256(body).hexdigest()
    assert index["symbols"]["ETHUSDT"]["n_files"] == 3


# ---------------------------------------------------------------- load_klines
def _segment(day0: int, n: int) -> pa.Table:
    """``n`` one-minute candles from day ``day0``; prices count the minutes."""
    t = [day0 * DAY + i * 60_000 for i in range(n)]
    cols = {"candle_begin_time": pa.array(t, pa.timestamp("ms", tz="UTC"))}
    for name in ("open", "high", "low", "close", "volume"):
        cols[name] = pa.array([float(i) for i in range(n)])
    return pa.table(cols)


def test_load_klines_from_s3_equals_local(tmp_path, s3_root):
    """load_klines reads a symbol's segments from the bucket like from a local folder
    (segment numbers, time filter), and names what is there when a symbol is not."""
    from crypto_lakehouse.loading import DataNotFoundError, load_klines

    local = tmp_path / "local"
    segments = {"SP0_AUSDT.pqt": _segment(D, 30), "AUSDT.pqt": _segment(D + 2, 40)}
    stamp = {"interval": "1m"}  # as gen_kline writes them (the loaders warn without it)
    for root in (local, s3_root):
        folder = layout.results_klines_dir(root, "um_futures", "1m")
        for name, table in segments.items():
            storage.write_parquet(folder / name, table, stamp)
        storage.write_parquet(folder / "BUSDT.pqt", _segment(D, 5), stamp)
    start, end = day_iso(D) + " 00:10", day_iso(D + 2) + " 00:20"
    got = load_klines(s3_root, "um_futures", "AUSDT", start=start, end=end)
    want = load_klines(local, "um_futures", "AUSDT", start=start, end=end)
    assert got.equals(want)
    # Independently: minutes 10..29 of SP0 (segment 0), minutes 0..19 of the latest (1).
    assert got["segment"].tolist() == [0] * 20 + [1] * 20
    assert got["open"].tolist() == [float(i) for i in range(10, 30)] + [float(i) for i in range(20)]
    with pytest.raises(DataNotFoundError, match=r"did you mean AUSDT.*AUSDT, BUSDT"):
        load_klines(s3_root, "um_futures", "AUSD")
    with pytest.raises(DataNotFoundError, match="intervals present: 1m"):
        load_klines(s3_root, "um_futures", "AUSDT", interval="5m")


# ---------------------------------------------------------------- the report's data reads
def test_report_coverage_reads_s3_like_local_disk(tmp_path, s3_root, caplog):
    """The coverage table (provenance records + generated files' footers) and the quality
    scores built from an S3 data dir equal those of a local one; an unreadable provenance
    object leaves out only its symbol."""
    import numpy as np

    from crypto_lakehouse.quality import QUALITY_SCHEMA
    from crypto_lakehouse.report import records
    from crypto_lakehouse.report.coverage import build_coverage, read_segments

    minute = 60_000
    local = tmp_path / "local"
    day = pa.array([datetime(2022, 1, 8).date(), datetime(2022, 1, 9).date()], pa.date32())
    for root in (local, s3_root):
        gen = layout.results_klines_dir(root, "spot", "1m")
        for name, first, rows in (("SP0_AUSDT.pqt", D * DAY + 5 * minute, 700),
                                  ("AUSDT.pqt", (D + 1) * DAY, 1440)):  # fmt: skip
            times = pa.array(np.arange(rows, dtype=np.int64) * minute + first)
            table = pa.table({"candle_begin_time": times.cast(pa.timestamp("ms", tz="UTC"))})
            storage.write_parquet(gen / name, table, row_group_size=500)
        prov = layout.provenance_dir(root, "spot", "1m")
        storage.write_parquet(
            prov / "AUSDT.pqt",
            pa.table({"day": day, "archive_rows": [600, 1440], "rows": [700, 1440]}),
        )
        storage.write_bytes(prov / "BUSDT.pqt", b"not parquet")
        quality = pa.table(
            {"date": day, "source": pa.array(["k", "k"]), "rows": [700, 1440],
             "expected_rows": [1440, 1440], "missing_rows": [740, 0],
             "zero_volume_rows": [0, 0], "longest_zero_volume_run": [0, 0],
             "ohlc_violations": [0, 0], "taker_violations": [0, 0], "score": [0.5, 1.0]},
            schema=QUALITY_SCHEMA,
        )  # fmt: skip
        storage.write_parquet(layout.quality_dir(root, "spot", "1m") / "AUSDT.pqt", quality)

    got = build_coverage(s3_root, ["spot"], "1m", D + 2)
    pd_equal = got.reset_index(drop=True).equals
    assert pd_equal(build_coverage(local, ["spot"], "1m", D + 2).reset_index(drop=True))
    assert f"{layout.provenance_dir(s3_root, 'spot', '1m')}/BUSDT.pqt" in caplog.text
    assert got["symbol"].unique().tolist() == ["AUSDT"]
    # From the definitions: day D: 600 archive, 100 REST, 5 minutes before the first
    # candle, none filled; day D+1: 1440 archive; day D+2 (end_date): nothing, all missing.
    by_day = got.set_index("day")
    assert by_day.loc[D, ["minutes_archive", "minutes_rest", "minutes_filled"]].tolist() == [
        600, 100, 0,
    ]  # fmt: skip
    assert by_day.loc[D + 1, "minutes_archive"] == 1440
    assert by_day.loc[D + 2, "minutes_missing"] == 1440
    segments = read_segments(s3_root, "spot", "1m")
    assert segments[["first_ms", "end_ms"]].values.tolist() == [
        [(D + 1) * DAY, (D + 2) * DAY], [D * DAY + 5 * minute, D * DAY + 705 * minute],
    ]  # fmt: skip
    scores = records.quality_scores(s3_root, ["spot"], "1m")
    assert scores.equals(records.quality_scores(local, ["spot"], "1m"))
    assert scores.set_index("symbol").loc["AUSDT", "score"] == 0.75


# ---------------------------------------------------------------- compare
SPOT_BTC = "results_data/spot/klines/1m/BTCUSDT.pqt"


def _stage_compare_dirs(tmp_path, s3_root):
    """The legacy fixture and our copy of it with one close price changed (row 777), both
    locally and below ``s3_root`` (``legacy/``, ``ours/``): (legacy, ours) local dirs."""
    import shutil

    from tests.conftest import FIXTURES

    legacy = FIXTURES / "legacy-v1-real"
    ours = tmp_path / "ours"
    shutil.copytree(legacy, ours, ignore=shutil.ignore_patterns("truth", "*.md"))
    table = pq.read_table(ours / SPOT_BTC)
    close = table.column("close").to_numpy().copy()
    close[777] += 0.01
    pq.write_table(table.set_column(table.schema.get_field_index("close"), "close",
                                    pa.array(close)), ours / SPOT_BTC)  # fmt: skip
    for local_dir, name in ((ours, "ours"), (legacy, "legacy")):
        for path in local_dir.rglob("*.pqt"):
            if "truth" not in path.parts:
                rel = path.relative_to(local_dir).as_posix()
                storage.write_bytes(storage.join(s3_root, name, rel), path.read_bytes())
    return legacy, ours


def test_compare_reads_s3_dirs_like_local_ones(tmp_path, s3_root):
    """``compare`` with our dir, then the legacy dir, on S3 finds what it finds locally: a
    close price changed in one row of our copy of the legacy fixture."""
    from crypto_lakehouse.compare import compare_dirs

    legacy, ours = _stage_compare_dirs(tmp_path, s3_root)

    def found(report):
        return [
            {k: v for k, v in d.to_dict().items() if k not in ("legacy_dir", "new_dir")}
            for d in report.differences()
        ]

    want = compare_dirs(legacy, ours)
    assert [(d.file, d.column, d.count) for d in want.unexplained] == [(SPOT_BTC, "close", 1)]
    for got in (
        compare_dirs(legacy, f"{s3_root}/ours"),
        compare_dirs(f"{s3_root}/legacy", ours),
    ):
        assert got.problems == [] and len(got.pairs) == len(want.pairs)
        assert found(got) == found(want)


def test_compare_in_several_processes_on_s3_reads_every_file(tmp_path, s3_root):
    """``--jobs 4`` with both dirs on S3: the worker processes used to be forked from a
    process whose S3 client had open connections, and read intact files as "unreadable"
    (Couldn't deserialize thrift) in most runs. The result is that of one process."""
    from crypto_lakehouse.compare import compare_dirs

    _stage_compare_dirs(tmp_path, s3_root)
    legacy, ours = f"{s3_root}/legacy", f"{s3_root}/ours"
    want = compare_dirs(legacy, ours)
    assert [(d.file, d.column, d.count) for d in want.unexplained] == [(SPOT_BTC, "close", 1)]
    for _ in range(3):
        got = compare_dirs(legacy, ours, jobs=4)
        assert [(d.file, d.column, d.count) for d in got.unexplained] == [(SPOT_BTC, "close", 1)]
        assert [(p.file, p.our_rows) for p in got.pairs] == [
            (p.file, p.our_rows) for p in want.pairs
        ]


def test_compare_command_line_reaches_a_self_hosted_store(tmp_path, s3_root, seaweed):
    """``crypto-lakehouse compare`` with ``--endpoint-url`` / ``--addressing-style``: the
    seam starts from the AWS defaults (as in a fresh process) and the options point it at
    SeaweedFS, where the changed close price is found (exit 1, one unexplained)."""
    import json

    from crypto_lakehouse.cli import main

    legacy, _ = _stage_compare_dirs(tmp_path, s3_root)
    storage.configure(None)
    out = tmp_path / "report.json"
    code = main(["compare", str(legacy), f"{s3_root}/ours", "--format", "json", "-o", str(out),
                 "--endpoint-url", seaweed.endpoint_url, "--addressing-style", "path",
                 "--region", "us-east-1"])  # fmt: skip
    assert code == 1
    assert storage.settings()["endpoint_url"] == seaweed.endpoint_url
    report = json.loads(out.read_text())
    assert report["problems"] == []
    unexplained = [(d["file"], d["column"], d["count"]) for d in report["unexplained"]]
    assert unexplained == [(SPOT_BTC, "close", 1)]


def test_compare_with_an_s3_dir_it_cannot_read_names_the_dir_instead_of_a_traceback(
    tmp_path, s3_root, seaweed, monkeypatch, capsys
):
    """A wrong secret key, a bucket that does not exist: compare ended in a pyarrow
    traceback (OSError, SIGNATURE_DOES_NOT_MATCH / a StorageError NoSuchBucket). Now each is
    a problem naming the dir, with what to check when refused (exit 1, the secret nowhere),
    as a missing local dir is."""
    from crypto_lakehouse.cli import main

    legacy, _ = _stage_compare_dirs(tmp_path, s3_root)
    options = ["--endpoint-url", seaweed.endpoint_url, "--addressing-style", "path"]
    wrong = "wrong" + seaweed.secret_key[5:]
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", wrong)
    storage.configure(None)
    assert main(["compare", str(legacy), f"{s3_root}/ours", *options]) == 1
    out, err = capsys.readouterr()
    problem = f"crypto-lakehouse compare: NEW_DIR {s3_root}/ours: cannot be read: "
    assert err.startswith(problem), err
    # The store's code in pyarrow's spelling or botocore's (storage.is_dir asks botocore).
    assert "SIGNATURE_DOES_NOT_MATCH" in err or "SignatureDoesNotMatch" in err, err
    assert "the request was refused" in err
    assert "Traceback" not in err and wrong not in out + err
    assert "FAILED: 0 unexplained, 0 explained, 0 within tolerance, 1 problems" in out

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweed.secret_key)
    storage.configure(None)
    assert main(["compare", str(legacy), "s3://no-such-bucket-here/x", *options]) == 1
    err = capsys.readouterr().err
    assert "NoSuchBucket" in err and "Traceback" not in err, err


def test_tick_parse_killed_on_s3_then_rerun_equals_local(tmp_path, s3_root, monkeypatch):
    """kill -9 at several moments of a tick parse on S3; the rerun's day objects and state
    equal those of an uninterrupted local parse (no half-published day is taken as done)."""
    import signal
    import subprocess
    import sys
    import time

    from crypto_lakehouse_emulator.ticks import write_daily_agg_trades

    from tests.conftest import REPO_ROOT

    monkeypatch.chdir(tmp_path)
    src = tmp_path / "src"
    archives = {}
    for i in range(12):
        key = write_daily_agg_trades(src, "um_futures", "BTCUSDT", f"2024-03-{i + 1:02d}",
                                     30_000, seed=i)  # fmt: skip
        archives[key] = (src / key).read_bytes()
    local = tmp_path / "local"
    (tmp_path / "out-local").mkdir()
    want = _parse_ticks(local, _put_verified(local, archives), tmp_path / "out-local")
    expected = {
        rel: p for rel, p in relative_files(local).items() if not rel.startswith("aws_data/")
    }
    assert len([r for r in expected if r.startswith("parsed_data/")]) == 12
    code = (
        "import json, sys\n"
        "from crypto_lakehouse import storage\n"
        "from crypto_lakehouse.parse.ticks import run_parse_ticks\n"
        "storage.configure(json.loads(sys.argv[1]))\n"
        "print('start', flush=True)\n"
        "run_parse_ticks(trade_type='um_futures', dataset='aggTrades', symbol='BTCUSDT',\n"
        "    data_dir=sys.argv[2], download_report=json.loads(sys.argv[3]),\n"
        "    report_path=sys.argv[4])\n"
        "print('done', flush=True)\n"
    )
    interrupted = []
    for n, delay in enumerate((0.05, 0.25, 0.45, 0.8)):
        root = f"{s3_root}/run{n}"
        download = _put_verified(root, archives)
        proc = subprocess.Popen(
            [sys.executable, "-c", code, json.dumps(storage.settings()), root,
             json.dumps(download), str(tmp_path / f"killed-{n}.json")],
            stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )  # fmt: skip
        assert proc.stdout.readline().strip() == "start"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        interrupted.append("done" not in proc.stdout.read())
        out = tmp_path / f"rerun-{n}"
        out.mkdir()
        assert _parse_ticks(root, download, out) == want, delay
        files = relative_files(root)
        assert sorted(r for r in files if not r.startswith("aws_data/")) == sorted(expected)
        for rel, path in expected.items():
            if rel.endswith(".pqt"):
                assert storage.read_parquet(files[rel]).equals(pq.read_table(path)), (delay, rel)
            else:
                assert storage.read_bytes(files[rel]) == path.read_bytes(), (delay, rel)
    assert any(interrupted)  # at least one kill landed before the job finished
