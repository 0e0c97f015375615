"""aws_parse funding on the real monthly funding CSV (zipped here, as Binance ships it)."""

from __future__ import annotations

import csv
import hashlib
import io as stdio
import zipfile
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq

from crypto_lakehouse import layout
from crypto_lakehouse.io import read_json
from crypto_lakehouse.parse import funding as funding_mod
from crypto_lakehouse.parse.funding import run_parse_funding
from crypto_lakehouse.schema import PARSED_FUNDING_SCHEMA, TIME_TYPE
from tests.conftest import FIXTURES

REAL_CSV = FIXTURES / "real" / "futures_um" / "fundingRate" / "BTCUSDT-fundingRate-2026-08.csv"
HOUR = 3_600_000


def key_of(month: str) -> str:
    return layout.funding_key("um_futures", "BTCUSDT", month)


def put(data_dir, month: str, csv_bytes: bytes, verified: bool = True) -> str:
    key = key_of(month)
    path = layout.aws_path(data_dir, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = stdio.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(path.name[:-4] + ".csv", csv_bytes)
    path.write_bytes(buf.getvalue())
    path.with_name(path.name + ".CHECKSUM").write_text(
        f"{hashlib.sha256(buf.getvalue()).hexdigest()}  {path.name}\n"
    )
    if verified:
        path.with_name(path.name + ".verified").touch()
    return key


def report_of(data_dir, keys) -> dict:
    files = {
        k: {"sha256": hashlib.sha256(layout.aws_path(data_dir, k).read_bytes()).hexdigest()}
        for k in keys
    }
    return {"trade_type": "um_futures", "dataset": "funding", "symbol": "BTCUSDT", "files": files}


def parse(data_dir, report):
    stats = run_parse_funding(
        trade_type="um_futures",
        symbol="BTCUSDT",
        data_dir=data_dir,
        download_report=report,
        report_path=data_dir / "r.json",
        stats_path=data_dir / "s.json",
    )
    return stats, read_json(data_dir / "r.json")


def output(data_dir):
    return pq.read_table(layout.parsed_funding_path(data_dir, "um_futures", "BTCUSDT"))


def real_rows() -> list[list[str]]:
    return list(csv.reader(stdio.StringIO(REAL_CSV.read_text())))[1:]


def assert_equals_csv(table, rows):
    assert table.num_rows == len(rows)
    ms = [int(r[0]) for r in rows]
    assert table.column("funding_time").cast("int64").to_pylist() == ms
    assert table.column("candle_begin_time").cast("int64").to_pylist() == [t - t % HOUR for t in ms]
    assert table.column("funding_interval_hours").to_pylist() == [int(r[1]) for r in rows]
    assert table.column("funding_rate").to_pylist() == [float(r[2]) for r in rows]


def test_real_month_with_header(tmp_path):
    key = put(tmp_path, "2026-08", REAL_CSV.read_bytes())
    stats, report = parse(tmp_path, report_of(tmp_path, [key]))
    rows = real_rows()
    table = output(tmp_path)
    assert table.schema.remove_metadata() == PARSED_FUNDING_SCHEMA
    assert_equals_csv(table, rows)
    assert rows[0] == ["1785542400001", "8", "0.00004123"] and len(rows) == 93
    exact = sum(Decimal(r[2]) for r in rows)
    assert abs(Decimal(repr(sum(table.column("funding_rate").to_pylist()))) - exact) < Decimal(
        "1e-12"
    )
    assert report["rows"] == 93
    assert (
        report["first"] == "2026-08-01 00:00:00.001" and report["last"] == "2026-08-31 16:00:00.001"
    )
    assert report["quality"] == {"duplicates_dropped": 0, "funding_interval_hours": {"8": 93}}
    assert stats["files_parsed"] == 1


def test_headerless_month_gives_the_same_rows(tmp_path):
    body = REAL_CSV.read_bytes().split(b"\n", 1)[1]
    key = put(tmp_path, "2026-08", body)
    parse(tmp_path, report_of(tmp_path, [key]))
    assert_equals_csv(output(tmp_path), real_rows())


def test_unverified_archive_is_not_read(tmp_path):
    key = put(tmp_path, "2026-08", REAL_CSV.read_bytes(), verified=False)
    stats, report = parse(tmp_path, report_of(tmp_path, [key]))
    assert stats["files_parsed"] == 0 and stats["files_unverified"] == [key]
    assert report["rows"] == 0
    assert not layout.parsed_funding_path(tmp_path, "um_futures", "BTCUSDT").exists()


def test_repeated_funding_time_keeps_the_last_row(tmp_path):
    lines = REAL_CSV.read_bytes().rstrip(b"\n").split(b"\n")
    t, hours, _ = lines[5].split(b",")
    lines.insert(6, b",".join([t, hours, b"0.00099999"]))  # same time, later in the file
    key = put(tmp_path, "2026-08", b"\n".join(lines) + b"\n")
    stats, report = parse(tmp_path, report_of(tmp_path, [key]))
    table = output(tmp_path)
    assert table.num_rows == 93 and report["quality"]["duplicates_dropped"] == 1
    times = table.column("funding_time").cast("int64").to_pylist()
    assert table.column("funding_rate")[times.index(int(t))].as_py() == 0.00099999


def test_no_data_left_removes_the_output(tmp_path):
    key = put(tmp_path, "2026-08", REAL_CSV.read_bytes())
    parse(tmp_path, report_of(tmp_path, [key]))
    out = layout.parsed_funding_path(tmp_path, "um_futures", "BTCUSDT")
    assert out.exists()
    stats, report = parse(tmp_path, report_of(tmp_path, []))
    assert not out.exists() and report["rows"] == 0 and report["files"] == {}
    # Also without any download report (symbol has no funding archive at all).
    key = put(tmp_path, "2026-08", REAL_CSV.read_bytes())
    parse(tmp_path, report_of(tmp_path, [key]))
    stats, report = parse(tmp_path, None)
    assert not out.exists() and report["rows"] == 0


def test_incremental_months(tmp_path, monkeypatch):
    aug = put(tmp_path, "2026-08", REAL_CSV.read_bytes())
    parse(tmp_path, report_of(tmp_path, [aug]))
    # A second month whose rows are August's shifted by 31 days (September 2026).
    shift = 31 * 86_400_000
    sep_rows = [[str(int(r[0]) + shift), r[1], r[2]] for r in real_rows()[:90]]
    sep_csv = "\n".join(",".join(r) for r in sep_rows).encode() + b"\n"
    sep = put(tmp_path, "2026-09", sep_csv)
    stats, report = parse(tmp_path, report_of(tmp_path, [aug, sep]))
    assert stats["files_parsed"] == 1 and report["rows"] == 93 + 90
    assert_equals_csv(output(tmp_path), real_rows() + sep_rows)

    def no_read(*a, **k):
        raise AssertionError("a zip was read")

    with monkeypatch.context() as m:
        m.setattr(funding_mod, "read_zip_member", no_read)
        stats, again = parse(tmp_path, report_of(tmp_path, [aug, sep]))
    assert stats["files_parsed"] == 0 and again == report

    # August re-published with 10 rows only: its month is replaced, September kept.
    aug10 = b"\n".join(REAL_CSV.read_bytes().split(b"\n")[:11]) + b"\n"
    put(tmp_path, "2026-08", aug10)
    stats, report = parse(tmp_path, report_of(tmp_path, [aug, sep]))
    assert stats["files_parsed"] == 1
    assert_equals_csv(output(tmp_path), real_rows()[:10] + sep_rows)


def test_defective_month_is_quarantined_others_go_on(tmp_path):
    aug = put(tmp_path, "2026-08", REAL_CSV.read_bytes())
    lines = REAL_CSV.read_bytes().split(b"\n")
    lines[7] = lines[7].replace(b",8,", b",8,zz", 1)
    shift = 31 * 86_400_000
    sep_lines = [lines[0]] + [
        b",".join([str(int(ln.split(b",")[0]) + shift).encode(), *ln.split(b",")[1:]])
        for ln in lines[1:]
        if ln
    ]
    sep = put(tmp_path, "2026-09", b"\n".join(sep_lines) + b"\n")
    stats, report = parse(tmp_path, report_of(tmp_path, [aug, sep]))
    reason = report["quarantined"][sep]
    assert sep in reason and "line 8:" in reason and "last_funding_rate" in reason
    assert stats["files_quarantined"] == 1
    assert layout.quarantine_path(tmp_path, sep).exists()
    assert_equals_csv(output(tmp_path), real_rows())


def test_rows_outside_the_month_are_refused(tmp_path):
    # The August rows under September's name.
    key = put(tmp_path, "2026-09", REAL_CSV.read_bytes())
    stats, report = parse(tmp_path, report_of(tmp_path, [key]))
    assert "line 2:" in report["quarantined"][key]
    assert "outside the file's month 2026-09" in report["quarantined"][key]
    assert report["rows"] == 0


# ---------------------------------------------------------------- data the pipeline did not write
def shifted_rows(days: int) -> list[list[str]]:
    shift = days * 86_400_000
    return [[str(int(r[0]) + shift), r[1], r[2]] for r in real_rows()]


def legacy_file(data_dir, rows: list[list[str]]):
    """A legacy BHDS funding file (schema §10.2) written from CSV rows, used in place."""
    ms = [int(r[0]) for r in rows]
    table = pa.table(
        {
            "funding_time": pa.array(ms, pa.int64()).cast(TIME_TYPE),
            "funding_interval_hours": pa.array([int(r[1]) for r in rows], pa.int64()),
            "funding_rate": pa.array([float(r[2]) for r in rows], pa.float64()),
            "candle_begin_time": pa.array([t - t % HOUR for t in ms], pa.int64()).cast(TIME_TYPE),
        }
    )
    path = layout.parsed_funding_path(data_dir, "um_futures", "BTCUSDT")
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def test_legacy_file_without_tracked_archives_is_kept(tmp_path):
    path = legacy_file(tmp_path, real_rows())
    before = path.read_bytes()
    for report in (None, report_of(tmp_path, []), None):
        stats, rep = parse(tmp_path, report)
        assert path.read_bytes() == before
        assert rep["rows"] == 93 and rep["files"] == {}


def test_new_month_joins_legacy_rows_and_leaves_without_them(tmp_path):
    legacy_file(tmp_path, real_rows())  # August 2026 from the legacy tool
    sep_rows = shifted_rows(31)[:90]
    sep = put(tmp_path, "2026-09", "\n".join(",".join(r) for r in sep_rows).encode() + b"\n")
    stats, report = parse(tmp_path, report_of(tmp_path, [sep]))
    assert stats["files_parsed"] == 1
    assert_equals_csv(output(tmp_path), real_rows() + sep_rows)
    # September leaves the report: its rows go, the legacy August rows stay.
    stats, report = parse(tmp_path, report_of(tmp_path, []))
    assert_equals_csv(output(tmp_path), real_rows())
    assert report["rows"] == 93


def test_defective_new_archive_keeps_legacy_rows_of_its_month(tmp_path):
    legacy_file(tmp_path, real_rows())
    lines = REAL_CSV.read_bytes().split(b"\n")
    lines[7] = lines[7].replace(b",8,", b",8,zz", 1)
    aug = put(tmp_path, "2026-08", b"\n".join(lines))
    stats, report = parse(tmp_path, report_of(tmp_path, [aug]))
    assert stats["files_quarantined"] == 1 and aug in report["quarantined"]
    assert_equals_csv(output(tmp_path), real_rows())


def test_archive_replaces_its_month_of_a_legacy_file(tmp_path):
    legacy_file(tmp_path, real_rows() + shifted_rows(31)[:90])  # August and September
    aug10 = b"\n".join(REAL_CSV.read_bytes().split(b"\n")[:11]) + b"\n"
    aug = put(tmp_path, "2026-08", aug10)
    parse(tmp_path, report_of(tmp_path, [aug]))
    assert_equals_csv(output(tmp_path), real_rows()[:10] + shifted_rows(31)[:90])
    # Quarantined by the download later: August goes, legacy September stays.
    stats, report = parse(tmp_path, report_of(tmp_path, []))
    assert_equals_csv(output(tmp_path), shifted_rows(31)[:90])


def test_unreadable_foreign_file_is_not_overwritten(tmp_path):
    path = layout.parsed_funding_path(tmp_path, "um_futures", "BTCUSDT")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not parquet")
    aug = put(tmp_path, "2026-08", REAL_CSV.read_bytes())
    stats, report = parse(tmp_path, report_of(tmp_path, [aug]))
    assert path.read_bytes() == b"not parquet"
    assert report["untracked_output"].startswith("unreadable") and report["files"] == {}
    assert stats["files_waiting"] == [aug]
    path.unlink()
    stats, report = parse(tmp_path, report_of(tmp_path, [aug]))
    assert stats["files_parsed"] == 1 and report["untracked_output"] is None
    assert_equals_csv(output(tmp_path), real_rows())
