"""aws_parse klines on real Binance archives (tests/fixtures/real).

Expected values are read from the archive CSVs themselves with the stdlib (csv, decimal),
and compared with the legacy BHDS V1 partitions built from the same files.
"""

from __future__ import annotations

import csv
import hashlib
import io as stdio
import json
import os
import weakref
import zipfile
from decimal import Decimal
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from crypto_lakehouse import layout, storage
from crypto_lakehouse.io import read_json
from crypto_lakehouse.parse import klines as klines_mod
from crypto_lakehouse.parse.csv_reader import ZipMember
from crypto_lakehouse.parse.klines import read_kline_archive, read_kline_archives, run_parse_klines
from crypto_lakehouse.parse.validate import archive_period
from crypto_lakehouse.schema import KLINE_SCHEMA
from tests.conftest import FIXTURES

REAL = FIXTURES / "real"
LEGACY = FIXTURES / "legacy-v1-real"
MIRROR = LEGACY / "mirror"
FLOAT_FIELDS = {1: "open", 2: "high", 3: "low", 4: "close", 5: "volume", 7: "quote_volume"}
FLOAT_FIELDS.update({9: "taker_buy_base_asset_volume", 10: "taker_buy_quote_asset_volume"})


# ---------------------------------------------------------------- helpers
def spot_key(day: str, interval: str = "1m") -> str:
    return layout.daily_kline_key("spot", "BTCUSDT", interval, day)


def zip_of(member: str, data: bytes) -> bytes:
    buf = stdio.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(member, data)
    return buf.getvalue()


def member_bytes(zip_path: Path) -> bytes:
    with zipfile.ZipFile(zip_path) as zf:
        return zf.read(zf.namelist()[0])


def csv_rows(data: bytes) -> list[list[str]]:
    rows = list(csv.reader(stdio.StringIO(data.decode())))
    return rows[1:] if rows and rows[0][0] == "open_time" else rows


def put_archive(data_dir: Path, key: str, zip_bytes: bytes, verified: bool = True) -> str:
    path = layout.aws_path(data_dir, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(zip_bytes)
    digest = hashlib.sha256(zip_bytes).hexdigest()
    path.with_name(path.name + ".CHECKSUM").write_text(f"{digest}  {path.name}")
    if verified:
        path.with_name(path.name + ".verified").touch()
    return key


def download_report(data_dir: Path, keys, **extra) -> dict:
    files = {}
    for key in keys:
        data = layout.aws_path(data_dir, key).read_bytes()
        files[key] = {
            "size": len(data),
            "last_modified": "2024-01-01T00:00:00Z",
            "sha256": hashlib.sha256(data).hexdigest(),
        }
    return {"trade_type": "spot", "dataset": "klines-1m", "symbol": "BTCUSDT", "files": files,
            "quarantined": {}, **extra}  # fmt: skip


def parse(data_dir: Path, report: dict, trade_type="spot", symbol="BTCUSDT", interval="1m"):
    out = data_dir / "out"
    stats = run_parse_klines(
        trade_type=trade_type,
        symbol=symbol,
        interval=interval,
        data_dir=data_dir,
        download_report=report,
        report_path=out / "report.json",
        stats_path=out / "stats.json",
    )
    return stats, read_json(out / "report.json")


def partition(data_dir: Path, month: str, trade_type="spot", symbol="BTCUSDT", interval="1m"):
    path = layout.parsed_klines_dir(data_dir, trade_type, symbol, interval) / f"{month}.pqt"
    return pq.read_table(path)


def times_ms_array(table):
    return pc.cast(table.column("candle_begin_time"), "int64")


def times_ms(table) -> np.ndarray:
    return table.column("candle_begin_time").cast("int64").to_numpy()


def real_spot_2020(data_dir: Path) -> list[str]:
    keys = []
    for day in ("2020-01-01", "2020-01-02", "2020-01-03"):
        src = REAL / "spot" / f"BTCUSDT-1m-{day}.zip"
        keys.append(put_archive(data_dir, spot_key(day), src.read_bytes()))
    return keys


def assert_rows_equal_csv(table, rows: list[list[str]]) -> None:
    """Every parsed row equals the CSV row (times to ms, numbers as parsed decimals)."""
    assert table.num_rows == len(rows)
    unit = 1000 if int(rows[-1][0]) >= 10**15 else 1
    assert times_ms(table).tolist() == [int(r[0]) // unit for r in rows]
    assert table.column("trade_num").to_pylist() == [int(r[8]) for r in rows]
    for pos, name in FLOAT_FIELDS.items():
        got = table.column(name).to_numpy()
        exact = sum(Decimal(r[pos]) for r in rows)
        assert abs(Decimal(repr(float(got.sum()))) - exact) <= abs(exact) * Decimal("1e-12")
        assert got[0] == float(rows[0][pos]) and got[-1] == float(rows[-1][pos])


# ---------------------------------------------------------------- real files
def test_spot_ms_headerless_days_match_the_csv(tmp_path):
    keys = real_spot_2020(tmp_path)
    stats, report = parse(tmp_path, download_report(tmp_path, keys))
    table = partition(tmp_path, "202001")
    assert table.schema.remove_metadata() == KLINE_SCHEMA
    rows = [r for k in keys for r in csv_rows(member_bytes(layout.aws_path(tmp_path, k)))]
    assert len(rows) == 3 * 1440
    assert_rows_equal_csv(table, rows)
    assert table.column("open")[0].as_py() == 7195.24  # first candle of 2020 in the archive
    assert stats["files_parsed"] == 3 and stats["files_quarantined"] == 0
    assert report["partitions"] == {
        "202001": {
            "rows": 4320,
            "first": "2020-01-01 00:00:00.000",
            "last": "2020-01-03 23:59:00.000",
        }
    }
    assert report["files"] == {
        k: v["sha256"] for k, v in download_report(tmp_path, keys)["files"].items()
    }
    assert report["quality"]["complete_days"] == 3 and report["quality"]["missing_rows"] == 0


def test_spot_microsecond_file_is_converted_to_ms(tmp_path):
    src = MIRROR / spot_key("2025-01-01")
    key = put_archive(tmp_path, spot_key("2025-01-01"), src.read_bytes())
    parse(tmp_path, download_report(tmp_path, [key]))
    rows = csv_rows(member_bytes(src))
    assert rows[0][0] == "1735689600000000"  # the file really is in µs
    table = partition(tmp_path, "202501")
    assert_rows_equal_csv(table, rows)
    assert times_ms(table)[0] == 1735689600000


@pytest.mark.parametrize(
    ("trade_type", "symbol", "src", "month"),
    [
        ("um_futures", "BTCUSDT", REAL / "futures_um" / "BTCUSDT-1m-2022-09-05.zip", "202209"),
        (
            "cm_futures",
            "BTCUSD_PERP",
            REAL / "futures_cm" / "BTCUSD_PERP-1m-2022-10-24.zip",
            "202210",
        ),
    ],
)
def test_futures_files_with_header_line(tmp_path, trade_type, symbol, src, month):
    day = src.stem.rsplit("-", 3)
    key = layout.daily_kline_key(trade_type, symbol, "1m", "-".join(day[1:]))
    put_archive(tmp_path, key, src.read_bytes())
    stats, report = parse(tmp_path, download_report(tmp_path, [key]), trade_type, symbol)
    data = member_bytes(src)
    assert data.startswith(b"open_time,")
    assert_rows_equal_csv(partition(tmp_path, month, trade_type, symbol), csv_rows(data))
    assert report["partitions"][month]["rows"] == 1440 and stats["files_parsed"] == 1


LEGACY_PARTITIONS = sorted((LEGACY / "parsed_data").rglob("*.pqt"))


@pytest.mark.parametrize("legacy_file", LEGACY_PARTITIONS, ids=lambda p: str(p.relative_to(LEGACY)))
def test_partitions_equal_legacy_outputs(tmp_path, legacy_file):
    rel = legacy_file.relative_to(LEGACY / "parsed_data")
    trade_type, _, symbol, interval, name = rel.parts
    prefix = f"{layout.kline_dir_key(trade_type, symbol, interval)}"
    keys = []
    for src in sorted((MIRROR / prefix).glob("*.zip")):
        keys.append(put_archive(tmp_path, prefix + src.name, src.read_bytes()))
    parse(tmp_path, download_report(tmp_path, keys), trade_type, symbol, interval)
    ours = partition(tmp_path, name[:-4], trade_type, symbol, interval)
    legacy = pq.read_table(legacy_file)
    assert ours.schema.remove_metadata() == legacy.schema.remove_metadata()
    assert times_ms(ours).tolist() == times_ms(legacy).tolist()
    for name in legacy.column_names[1:]:
        diff = np.abs(ours.column(name).to_numpy() - legacy.column(name).to_numpy())
        assert diff.max() <= 1e-4, name


def test_monthly_archive_and_daily_precedence(tmp_path):
    days = [member_bytes(REAL / "spot" / f"BTCUSDT-1m-2020-01-0{d}.zip") for d in (1, 2, 3)]
    monthly = layout.monthly_kline_key("spot", "BTCUSDT", "1m", "2020-01")
    put_archive(tmp_path, monthly, zip_of("BTCUSDT-1m-2020-01.csv", b"".join(days)))
    stats, report = parse(tmp_path, download_report(tmp_path, [monthly]))
    assert_rows_equal_csv(partition(tmp_path, "202001"), csv_rows(b"".join(days)))

    # A daily archive of the same day holds only its first 600 minutes: it wins for its day.
    short = b"".join(stdio.BytesIO(days[1]).readlines()[:600])
    daily = put_archive(tmp_path, spot_key("2020-01-02"), zip_of("d.csv", short))
    stats, report = parse(tmp_path, download_report(tmp_path, [monthly, daily]))
    assert stats["files_parsed"] == 1  # only the new daily file is read
    assert_rows_equal_csv(partition(tmp_path, "202001"), csv_rows(days[0] + short + days[2]))
    # The monthly file claims all 31 days but holds 3: days 4..31 count as missing too.
    assert report["quality"]["missing_rows"] == 840 + 28 * 1440

    # The download's day_sources say the monthly file is the source of that day.
    rep = download_report(tmp_path, [monthly, daily], day_sources={"2020-01-02": monthly})
    stats, report = parse(tmp_path, rep)
    assert_rows_equal_csv(partition(tmp_path, "202001"), csv_rows(b"".join(days)))


# ---------------------------------------------------------------- verification gate
def test_only_listed_and_verified_archives_are_parsed(tmp_path):
    keys = real_spot_2020(tmp_path)
    layout.aws_path(tmp_path, keys[1]).with_name(Path(keys[1]).name + ".verified").unlink()
    report = download_report(tmp_path, keys[:2])  # 2020-01-03 verified but not listed
    stats, rep = parse(tmp_path, report)
    assert stats["files_parsed"] == 1 and stats["files_unverified"] == [keys[1]]
    days = np.unique(times_ms(partition(tmp_path, "202001")) // 86_400_000)
    assert days.tolist() == [18262]  # 2020-01-01 only
    assert list(rep["files"]) == [keys[0]]


# ---------------------------------------------------------------- defects
def corrupt(data: bytes, line_no: int, change) -> bytes:
    lines = data.split(b"\n")
    lines[line_no - 1] = change(lines[line_no - 1])
    return b"\n".join(lines)


def defect_case(tmp_path, bad_zip: bytes, day="2020-01-02"):
    """Day 2 replaced by ``bad_zip``; days 1 and 3 are the real archives."""
    keys = real_spot_2020(tmp_path)
    bad_key = put_archive(tmp_path, spot_key(day), bad_zip)
    if bad_key not in keys:
        keys.append(bad_key)
    stats, report = parse(tmp_path, download_report(tmp_path, keys))
    reason = report["quarantined"].get(bad_key, "")
    return bad_key, stats, report, reason


def assert_quarantined(tmp_path, bad_key, stats, report, n_days_left=2):
    assert stats["files_quarantined"] == 1 and stats["quarantined"] == {
        bad_key: report["quarantined"][bad_key]
    }
    src = layout.aws_path(tmp_path, bad_key)
    dst = layout.quarantine_path(tmp_path, bad_key)
    assert not src.exists() and not src.with_name(src.name + ".verified").exists()
    assert dst.exists() and dst.with_name(dst.name + ".CHECKSUM").exists()
    assert dst.with_name(dst.name + ".reason").read_text().strip() == report["quarantined"][bad_key]
    assert bad_key not in report["files"]
    # Nothing else is lost: the other days are complete.
    table = partition(tmp_path, "202001")
    assert table.num_rows == n_days_left * 1440


DAY2 = REAL / "spot" / "BTCUSDT-1m-2020-01-02.zip"


def test_corrupt_csv_row_names_file_and_line(tmp_path):
    bad = corrupt(
        member_bytes(DAY2),
        17,
        lambda ln: b",".join([ln.split(b",")[0], b"7x1.5", *ln.split(b",")[2:]]),
    )
    key, stats, report, reason = defect_case(tmp_path, zip_of("a.csv", bad))
    assert key in reason and "line 17" in reason and "'open'" in reason and "7x1.5" in reason
    assert_quarantined(tmp_path, key, stats, report)


def test_wrong_column_count_names_file_and_line(tmp_path):
    bad = corrupt(member_bytes(DAY2), 5, lambda ln: ln.rsplit(b",", 1)[0])
    key, stats, report, reason = defect_case(tmp_path, zip_of("a.csv", bad))
    assert key in reason and "line 5: 11 fields, expected 12" in reason
    assert_quarantined(tmp_path, key, stats, report)


def test_empty_zip(tmp_path):
    buf = stdio.BytesIO()
    zipfile.ZipFile(buf, "w").close()
    key, stats, report, reason = defect_case(tmp_path, buf.getvalue())
    assert reason == f"{key}: zip has no member (empty archive)"
    assert_quarantined(tmp_path, key, stats, report)


def test_zip_with_two_members(tmp_path):
    buf = stdio.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a.csv", member_bytes(DAY2))
        zf.writestr("b.csv", member_bytes(DAY2))
    key, stats, report, reason = defect_case(tmp_path, buf.getvalue())
    assert reason == f"{key}: zip has 2 members (a.csv, b.csv), expected 1"
    assert_quarantined(tmp_path, key, stats, report)


def test_dates_not_matching_the_file_name(tmp_path):
    # The 2020-01-02 rows packed under the name of 2020-01-05.
    key, stats, report, reason = defect_case(tmp_path, DAY2.read_bytes(), day="2020-01-05")
    assert key in reason and "line 1:" in reason
    assert "2020-01-02 00:00:00.000" in reason and "outside the file's day 2020-01-05" in reason
    assert_quarantined(tmp_path, key, stats, report, n_days_left=3)


def test_rows_identical_in_every_field_are_dropped_and_counted(tmp_path):
    """A day file holding some rows twice, byte for byte: no conflict, so the copies are
    dropped and counted (as funding counts its repeated rows), not the day quarantined
    (before 2026-12-07 it was, and the day came from REST or was lost)."""
    rows = member_bytes(DAY2).split(b"\n")
    body = [r for r in rows if r]
    # line 100 twice in a row, line 1 again at the very end, line 700 three times
    dup = b"\n".join(
        body[:100] + [body[99]] + body[100:700] + [body[699], body[699]] + body[700:] + [body[0]]
    )
    key, stats, report, reason = defect_case(tmp_path, zip_of("a.csv", dup))
    assert reason == "" and report["quarantined"] == {} and key in report["files"]
    assert stats["files_quarantined"] == 0 and stats["duplicates_dropped"] == 4
    assert report["quality"]["duplicates_dropped"] == 4
    # the day holds each CSV row once, as if the file had none twice
    table = partition(tmp_path, "202001")
    day2 = table.filter(
        pc.equal(pc.cast(pc.divide(times_ms_array(table), 86_400_000), "int64"), 18263)
    )
    assert_rows_equal_csv(day2, csv_rows(b"\n".join(body)))
    # the count survives a run that reads nothing (kept in the state per archive) ...
    stats, report = parse(tmp_path, download_report(tmp_path, report["files"]))
    assert stats["files_parsed"] == 0 and stats["duplicates_dropped"] == 0
    assert report["quality"]["duplicates_dropped"] == 4
    # ... and leaves with the archive when it is re-published without the copies
    put_archive(tmp_path, key, zip_of("a.csv", b"\n".join(body)))
    stats, report = parse(tmp_path, download_report(tmp_path, report["files"]))
    assert stats["files_parsed"] == 1 and report["quality"]["duplicates_dropped"] == 0


def test_batched_read_drops_identical_copies_like_the_per_file_read(tmp_path):
    rows = [r for r in member_bytes(DAY2).split(b"\n") if r]
    dup = b"\n".join(rows[:10] + [rows[9]] + rows[10:])
    key = put_archive(tmp_path, spot_key("2020-01-02"), zip_of("a.csv", dup))
    other = put_archive(
        tmp_path, spot_key("2020-01-01"), (REAL / "spot" / "BTCUSDT-1m-2020-01-01.zip").read_bytes()
    )
    items = [
        (k, layout.aws_path(tmp_path, k), archive_period(k, "BTCUSDT-1m-")) for k in (other, key)
    ]
    copies = {}
    tables, defects, _ = read_kline_archives(items, "1m", copies=copies)
    assert defects == {} and copies == {key: 1}
    assert tables[key].num_rows == 1440
    single, _ = read_kline_archive(items[1][1], key, items[1][2], "1m")
    assert tables[key].equals(single)


def test_duplicate_rows_and_a_floored_row_that_repeats(tmp_path):
    rows = member_bytes(DAY2).split(b"\n")
    # line 100 again with another close: a repeated time that conflicts stays a defect
    fields = rows[99].split(b",")
    fields[4] = str(float(fields[4]) + 1).encode()
    dup = b"\n".join(rows[:100] + [b",".join(fields)] + rows[100:])
    key, stats, report, reason = defect_case(tmp_path, zip_of("a.csv", dup))
    assert "line 101: time 2020-01-02 01:39:00.000 repeats" in reason
    assert_quarantined(tmp_path, key, stats, report)
    # an identical copy of line 100 does not hide a conflicting third row at that time
    dup = b"\n".join(rows[:100] + [rows[99], b",".join(fields)] + rows[100:])
    key, stats, report, reason = defect_case(tmp_path / "c", zip_of("a.csv", dup))
    assert "line 102: time 2020-01-02 01:39:00.000 repeats" in reason
    # 00:02:00 moved 30 s later: floored onto 00:02, it is still the only candle there;
    # moved to 00:03:30, it lands on 00:03's minute
    late = corrupt(
        member_bytes(DAY2), 3, lambda ln: ln.replace(ln[:13], str(int(ln[:13]) + 90_000).encode())
    )
    key, stats, report, reason = defect_case(tmp_path / "b", zip_of("a.csv", late))
    assert reason.startswith(f"{key}: line 4: time 2020-01-02 00:03:00.000 repeats"), reason
    assert_quarantined(tmp_path / "b", key, stats, report)


def test_candles_off_the_grid_are_floored_onto_it(tmp_path):
    """Binance's spot files of 2018-02-08 … 02-10 (BTCUSDT and the others then listed) hold
    hours of candles opening at ``…:14.789`` after an outage (binance-public-data #14: "from
    line 10110 of the BTCUSDT 1m candles of Feb 2018 timestamps are wrong until line
    11311"; #77 for 1h: open time 1518168494789). The exchange traded them and did not
    correct the files; REST answers the same. Before, such a file was quarantined whole."""
    rows = member_bytes(DAY2).split(b"\n")
    body = [r for r in rows if r]
    shift = 14_789
    # no candle from 08:00 to 09:59; from 10:00 to 11:59 every candle 14.789 s late
    kept = body[:480] + body[600:]
    moved = [
        r.replace(r[:13], str(int(r[:13]) + shift).encode(), 1) if 600 <= i + 120 < 720 else r
        for i, r in enumerate(kept)
    ]
    key = put_archive(tmp_path, spot_key("2020-01-02"), zip_of("a.csv", b"\n".join(moved)))
    stats, report = parse(tmp_path, download_report(tmp_path, [key]))
    assert report["quarantined"] == {} and list(report["files"]) == [key]
    table = partition(tmp_path, "202001")
    day = 1577923200000  # 2020-01-02
    want = [day + i * 60_000 for i in range(1440) if not 480 <= i < 600]
    assert times_ms(table).tolist() == want
    # each floored candle keeps its own values
    assert table.column("open").to_pylist() == [float(r.split(b",")[1]) for r in kept]


def test_line_numbers_count_the_header_line(tmp_path):
    src = REAL / "futures_um" / "BTCUSDT-1m-2022-09-05.zip"
    bad = corrupt(member_bytes(src), 10, lambda ln: ln.replace(b",", b",,", 1))
    key = put_archive(tmp_path, layout.daily_kline_key("um_futures", "BTCUSDT", "1m", "2022-09-05"),
                      zip_of("x.csv", bad))  # fmt: skip
    stats, report = parse(tmp_path, download_report(tmp_path, [key]), "um_futures")
    assert "line 10: 13 fields, expected 12" in report["quarantined"][key]
    assert report["partitions"] == {} and stats["files_quarantined"] == 1


def test_quarantined_archive_is_not_retried_until_republished(tmp_path):
    bad = corrupt(member_bytes(DAY2), 5, lambda ln: ln.rsplit(b",", 1)[0])
    key, _, _, reason = defect_case(tmp_path, zip_of("a.csv", bad))
    # The download job fetches the same bad file again: it is skipped, still reported.
    put_archive(tmp_path, key, zip_of("a.csv", bad))
    keys = [spot_key(d) for d in ("2020-01-01", "2020-01-02", "2020-01-03")]
    stats, report = parse(tmp_path, download_report(tmp_path, keys))
    assert stats["files_parsed"] == 0 and report["quarantined"][key] == reason
    # Binance re-publishes a good file: parsed, and no longer quarantined.
    put_archive(tmp_path, key, DAY2.read_bytes())
    stats, report = parse(tmp_path, download_report(tmp_path, keys))
    assert stats["files_parsed"] == 1 and report["quarantined"] == {}
    assert partition(tmp_path, "202001").num_rows == 4320


# ---------------------------------------------------------------- incremental
def test_second_run_reads_no_zip(tmp_path, monkeypatch):
    keys = real_spot_2020(tmp_path)
    report = download_report(tmp_path, keys)
    _, first = parse(tmp_path, report)
    part = layout.parsed_klines_dir(tmp_path, "spot", "BTCUSDT", "1m") / "202001.pqt"
    mtime = part.stat().st_mtime_ns

    def no_read(*a, **k):
        raise AssertionError("a zip was read")

    monkeypatch.setattr(klines_mod, "read_zip_member", no_read)
    monkeypatch.setattr(klines_mod, "open_zip_member", no_read)
    stats, second = parse(tmp_path, report)
    assert stats["files_parsed"] == 0 and stats["files_unchanged"] == 3
    assert second == first
    assert part.stat().st_mtime_ns == mtime


def test_daily_update_reads_only_the_new_file_and_month(tmp_path):
    keys = real_spot_2020(tmp_path)
    parse(tmp_path, download_report(tmp_path, keys))
    p202001 = layout.parsed_klines_dir(tmp_path, "spot", "BTCUSDT", "1m") / "202001.pqt"
    mtime = p202001.stat().st_mtime_ns
    new = put_archive(
        tmp_path, spot_key("2024-12-31"), (MIRROR / spot_key("2024-12-31")).read_bytes()
    )
    stats, report = parse(tmp_path, download_report(tmp_path, keys + [new]))
    assert stats["files_parsed"] == 1 and stats["partitions_written"] == 1
    assert p202001.stat().st_mtime_ns == mtime  # untouched month not rewritten
    assert sorted(report["partitions"]) == ["202001", "202412"]
    # The quality record now spans the gap, with empty days in between.
    q = pq.read_table(layout.quality_path(tmp_path, "spot", "1m", "BTCUSDT"))
    assert q.num_rows == (np.datetime64("2024-12-31") - np.datetime64("2020-01-01")).astype(int) + 1
    assert report["quality"]["days_without_rows"] == q.num_rows - 4


def test_republished_archive_replaces_its_day(tmp_path):
    keys = real_spot_2020(tmp_path)
    parse(tmp_path, download_report(tmp_path, keys))
    # Re-published day 2: its first 1000 minutes only, with every close changed.
    lines = member_bytes(DAY2).split(b"\n")[:1000]
    new_rows = [ln.split(b",") for ln in lines]
    for f in new_rows:
        f[4] = b"1234.5"
    new_csv = b"\n".join(b",".join(f) for f in new_rows) + b"\n"
    put_archive(tmp_path, keys[1], zip_of("BTCUSDT-1m-2020-01-02.csv", new_csv))
    stats, report = parse(tmp_path, download_report(tmp_path, keys))
    assert stats["files_parsed"] == 1
    table = partition(tmp_path, "202001")
    day1 = csv_rows(member_bytes(layout.aws_path(tmp_path, keys[0])))
    day3 = csv_rows(member_bytes(layout.aws_path(tmp_path, keys[2])))
    assert_rows_equal_csv(table, day1 + csv_rows(new_csv) + day3)  # no stale day-2 minute left
    assert report["partitions"]["202001"]["rows"] == 2880 + 1000


def test_key_leaving_the_report_takes_its_rows(tmp_path):
    keys = real_spot_2020(tmp_path)
    parse(tmp_path, download_report(tmp_path, keys))
    stats, report = parse(tmp_path, download_report(tmp_path, [keys[0], keys[2]]))
    assert np.unique(times_ms(partition(tmp_path, "202001")) // 86_400_000).tolist() == [
        18262,
        18264,
    ]
    assert stats["files_parsed"] == 0  # the other days are kept from the partition
    stats, report = parse(tmp_path, download_report(tmp_path, []))
    assert report["partitions"] == {} and stats["partitions_removed"] == 1
    assert not (layout.parsed_klines_dir(tmp_path, "spot", "BTCUSDT", "1m") / "202001.pqt").exists()
    assert not layout.quality_path(tmp_path, "spot", "1m", "BTCUSDT").exists()


def test_deleted_partition_is_rebuilt(tmp_path):
    keys = real_spot_2020(tmp_path)
    report = download_report(tmp_path, keys)
    parse(tmp_path, report)
    part = layout.parsed_klines_dir(tmp_path, "spot", "BTCUSDT", "1m") / "202001.pqt"
    os.unlink(part)
    stats, rep = parse(tmp_path, report)
    assert stats["files_parsed"] == 3 and partition(tmp_path, "202001").num_rows == 4320


def test_damaged_partition_is_rebuilt_and_a_touched_one_is_not(tmp_path):
    # A partition whose size is not the one written (truncated by a disk fault, replaced by
    # hand) is rebuilt from its archives on the next parse, with nothing else changed; a
    # partition only touched (mtime) is left alone.
    keys = real_spot_2020(tmp_path)
    report = download_report(tmp_path, keys)
    parse(tmp_path, report)
    part = layout.parsed_klines_dir(tmp_path, "spot", "BTCUSDT", "1m") / "202001.pqt"
    good = part.read_bytes()
    os.utime(part, (1, 1))
    stats, _ = parse(tmp_path, report)
    assert stats["files_parsed"] == 0 and stats["partitions_written"] == 0
    part.write_bytes(good[: len(good) // 2])
    stats, rep = parse(tmp_path, report)
    assert stats["files_parsed"] == 3 and stats["partitions_written"] == 1
    assert part.read_bytes() == good
    stats, _ = parse(tmp_path, report)
    assert stats["files_parsed"] == 0 and stats["partitions_written"] == 0


# ---------------------------------------------------------------- batched reading
def test_batched_read_equals_file_by_file():
    """One CSV call over several archives (ms, µs, with and without header) gives exactly
    the per-file tables."""
    items = []
    for key in (spot_key("2020-01-01"), spot_key("2024-12-31"), spot_key("2025-01-01")):
        items.append((key, MIRROR / key, archive_period(key, "BTCUSDT-1m-")))
    um = layout.daily_kline_key("um_futures", "BTCUSDT", "1m", "2022-09-05")
    items.append((um, MIRROR / um, archive_period(um, "BTCUSDT-1m-")))
    tables, defects, sizes = read_kline_archives(items, "1m")
    assert defects == {}
    for key, path, period in items:
        single, n = read_kline_archive(path, key, period, "1m")
        assert tables[key].equals(single) and sizes[key] == n == len(member_bytes(path))


def test_rows_out_of_order_are_sorted_not_refused(tmp_path):
    lines = member_bytes(DAY2).rstrip(b"\n").split(b"\n")
    shuffled = b"\n".join(lines[700:] + lines[:700]) + b"\n"
    keys = real_spot_2020(tmp_path)
    put_archive(tmp_path, keys[1], zip_of("a.csv", shuffled))
    stats, report = parse(tmp_path, download_report(tmp_path, keys))
    assert report["quarantined"] == {}
    rows = [r for k in keys for r in csv_rows(member_bytes(REAL / "spot" / Path(k).name))]
    assert_rows_equal_csv(partition(tmp_path, "202001"), rows)


def test_the_first_bad_line_is_named_whatever_the_kind_of_defect(tmp_path):
    # Line 40 has a NaN price, line 12 a time outside the day: line 12 is reported.
    data = corrupt(member_bytes(DAY2), 40, lambda ln: ln.replace(ln.split(b",")[2], b"nan", 1))
    data = corrupt(data, 12, lambda ln: b"1577836800000" + ln[13:])
    key, stats, report, reason = defect_case(tmp_path, zip_of("a.csv", data))
    assert "line 12:" in reason and "outside the file's day 2020-01-02" in reason
    data = corrupt(member_bytes(DAY2), 40, lambda ln: ln.replace(ln.split(b",")[2], b"nan", 1))
    key, stats, report, reason = defect_case(tmp_path / "b", zip_of("a.csv", data))
    assert "line 40: field 'high' is not a finite number" in reason


# ---------------------------------------------------------------- data the pipeline did not write
LEGACY_202001 = LEGACY / "parsed_data" / "spot" / "klines" / "BTCUSDT" / "1m" / "202001.pqt"


def legacy_in_place(data_dir: Path) -> Path:
    """A legacy BHDS partition used in place (days 2020-01-01..03, no archive of ours)."""
    dest = layout.parsed_klines_dir(data_dir, "spot", "BTCUSDT", "1m") / "202001.pqt"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(LEGACY_202001.read_bytes())
    return dest


def legacy_days(days: set[int]):
    table = pq.read_table(LEGACY_202001)
    return table.filter(np.isin(times_ms(table) // 86_400_000, sorted(days)))


def test_untracked_legacy_partition_survives_unchanged(tmp_path):
    part = legacy_in_place(tmp_path)
    key = put_archive(
        tmp_path, spot_key("2024-12-31"), (MIRROR / spot_key("2024-12-31")).read_bytes()
    )
    for report in (download_report(tmp_path, [key]), download_report(tmp_path, []), None):
        stats, rep = parse(tmp_path, report)
        assert part.read_bytes() == LEGACY_202001.read_bytes()
        assert rep["untracked_partitions"] == {"202001": "no tracked archive"}
        assert "202001" not in rep["partitions"] and stats["partitions_untracked"] == 1


def test_new_day_archive_keeps_the_other_legacy_days(tmp_path):
    legacy_in_place(tmp_path)
    # A day-2 archive holding its first 600 minutes only: its rows replace day 2's.
    short = b"".join(stdio.BytesIO(member_bytes(DAY2)).readlines()[:600])
    key = put_archive(tmp_path, spot_key("2020-01-02"), zip_of("d.csv", short))
    stats, report = parse(tmp_path, download_report(tmp_path, [key]))
    table = partition(tmp_path, "202001")
    day = times_ms(table) // 86_400_000
    assert table.filter(day != 18263).equals(legacy_days({18262, 18264}))  # legacy rows kept
    assert_rows_equal_csv(table.filter(day == 18263), csv_rows(short))
    assert report["partitions"]["202001"]["rows"] == 2 * 1440 + 600
    assert report["untracked_partitions"] == {}
    # The quality record measures the archived day only.
    q = pq.read_table(layout.quality_path(tmp_path, "spot", "1m", "BTCUSDT"))
    assert q.column("rows").to_pylist() == [600] and q.column("source").to_pylist() == [key]
    # Unchanged second run: nothing read, the same report.
    stats, again = parse(tmp_path, download_report(tmp_path, [key]))
    assert stats["files_parsed"] == 0 and again == report
    # A lost quality record is measured again from the partition, legacy days left out.
    layout.quality_path(tmp_path, "spot", "1m", "BTCUSDT").unlink()
    stats, again = parse(tmp_path, download_report(tmp_path, [key]))
    assert again == report
    assert pq.read_table(layout.quality_path(tmp_path, "spot", "1m", "BTCUSDT")).equals(q)


def test_key_quarantined_after_being_parsed_loses_its_rows_only(tmp_path):
    legacy_in_place(tmp_path)
    keys = [put_archive(tmp_path, spot_key("2020-01-02"), DAY2.read_bytes())]
    parse(tmp_path, download_report(tmp_path, keys))
    assert partition(tmp_path, "202001").num_rows == 3 * 1440
    # Re-published with a defect: parse quarantines it, and day 2 leaves the partition.
    bad = corrupt(member_bytes(DAY2), 5, lambda ln: ln.rsplit(b",", 1)[0])
    put_archive(tmp_path, keys[0], zip_of("a.csv", bad))
    stats, report = parse(tmp_path, download_report(tmp_path, keys))
    assert stats["files_quarantined"] == 1 and keys[0] in report["quarantined"]
    assert partition(tmp_path, "202001").equals(legacy_days({18262, 18264}))


def test_key_quarantined_by_the_download_loses_its_rows_only(tmp_path):
    legacy_in_place(tmp_path)
    key = put_archive(tmp_path, spot_key("2020-01-02"), DAY2.read_bytes())
    parse(tmp_path, download_report(tmp_path, [key]))
    rep = download_report(tmp_path, [])
    rep["quarantined"] = {key: "zip not found (404) although listed"}
    stats, report = parse(tmp_path, rep)
    assert partition(tmp_path, "202001").equals(legacy_days({18262, 18264}))
    assert report["partitions"]["202001"]["rows"] == 2 * 1440
    # The month keeps only legacy rows now: later runs leave it alone.
    stats, again = parse(tmp_path, rep)
    assert stats["partitions_written"] == 0 and again == report


def test_unreadable_foreign_partition_is_not_overwritten(tmp_path):
    part = layout.parsed_klines_dir(tmp_path, "spot", "BTCUSDT", "1m") / "202001.pqt"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"not parquet")
    keys = real_spot_2020(tmp_path)
    stats, report = parse(tmp_path, download_report(tmp_path, keys))
    assert part.read_bytes() == b"not parquet"
    assert report["untracked_partitions"]["202001"].startswith("unreadable")
    assert report["files"] == {} and stats["files_waiting"] == keys
    part.unlink()  # moved away by a person: the archives are parsed
    stats, report = parse(tmp_path, download_report(tmp_path, keys))
    assert stats["files_parsed"] == 3 and partition(tmp_path, "202001").num_rows == 4320


def test_a_partition_written_before_sizes_were_recorded_is_checked_once(tmp_path):
    # A state from before `partition_bytes`: an unreadable partition is found by its footer
    # and rebuilt; a readable one is kept and its size recorded, so the footer is not read
    # again.
    keys = real_spot_2020(tmp_path)
    report = download_report(tmp_path, keys)
    parse(tmp_path, report)
    state_path = layout.state_path(tmp_path, "aws_parse", "spot", "klines-1m", "BTCUSDT")
    state = read_json(state_path)
    recorded = state.pop("partition_bytes")
    state_path.write_text(json.dumps(state))
    part = layout.parsed_klines_dir(tmp_path, "spot", "BTCUSDT", "1m") / "202001.pqt"
    good = part.read_bytes()
    part.write_bytes(b"\0" * len(good))  # same size, no footer
    stats, _ = parse(tmp_path, report)
    assert stats["files_parsed"] == 3 and part.read_bytes() == good
    assert read_json(state_path)["partition_bytes"] == recorded == {"202001": len(good)}
    state = read_json(state_path)
    del state["partition_bytes"]
    state_path.write_text(json.dumps(state))
    stats, _ = parse(tmp_path, report)
    assert stats["files_parsed"] == 0
    assert read_json(state_path)["partition_bytes"] == recorded


# ---------------------------------------------------------------- bounded memory
def test_a_month_is_read_in_groups_of_bounded_csv_with_the_same_partition(tmp_path, monkeypatch):
    """A month's CSV goes to pyarrow in groups of at most CSV_BATCH_BYTES (a month of 1s is
    ~400 MB of CSV: one call held it twice); the partition is byte for byte the same."""
    keys = real_spot_2020(tmp_path / "whole")
    parse(tmp_path / "whole", download_report(tmp_path / "whole", keys))
    whole = layout.parsed_klines_dir(tmp_path / "whole", "spot", "BTCUSDT", "1m") / "202001.pqt"

    sizes = [len(member_bytes(REAL / "spot" / Path(k).name)) for k in keys]
    limit = sizes[0] + sizes[1]  # the first two days together, the third alone
    calls = []
    real_read = klines_mod.read_csv_bytes

    def spy(data, spec, label):
        calls.append(len(data))
        return real_read(data, spec, label)

    monkeypatch.setattr(klines_mod, "CSV_BATCH_BYTES", limit, raising=False)
    monkeypatch.setattr(klines_mod, "read_csv_bytes", spy)
    keys = real_spot_2020(tmp_path / "grouped")
    stats, report = parse(tmp_path / "grouped", download_report(tmp_path / "grouped", keys))
    assert report["quarantined"] == {} and stats["files_parsed"] == 3
    assert len(calls) == 2 and max(calls) <= limit, calls
    grouped = layout.parsed_klines_dir(tmp_path / "grouped", "spot", "BTCUSDT", "1m")
    assert (grouped / "202001.pqt").read_bytes() == whole.read_bytes()


def test_a_defect_in_a_later_group_is_named_and_the_others_kept(tmp_path, monkeypatch):
    """Grouped reading still names a bad file's line and keeps the good days."""
    monkeypatch.setattr(klines_mod, "CSV_BATCH_BYTES", 1, raising=False)  # a group per file
    data = corrupt(member_bytes(DAY2), 12, lambda ln: b"1577836800000" + ln[13:])
    key, stats, report, reason = defect_case(tmp_path, zip_of("a.csv", data))
    assert "line 12:" in reason and "outside the file's day 2020-01-02" in reason
    assert_quarantined(tmp_path, key, stats, report)


def test_a_month_s_rows_are_released_before_the_next_month_is_built(tmp_path, monkeypatch):
    """One month in memory at a time: the table written for January is gone when February
    is built (it was held until the next month's table replaced it: two months at once)."""
    from crypto_lakehouse_emulator.generate import write_kline_day  # pandas: not at the top

    keys = [
        write_kline_day(tmp_path / "aws_data", "spot", "BTCUSDT", "1m", day, seed=3)
        for day in ("2021-01-31", "2021-02-01", "2021-03-01")
    ]
    for key in keys:
        path = layout.aws_path(tmp_path, key)
        path.with_name(path.name + ".verified").touch()
    written, alive_at_build = [], []
    real_write = storage.write_parquet
    real_execute = klines_mod._MonthJob.execute

    def write(path, table, *args, **kwargs):
        if str(path).endswith(".pqt") and "parsed_data" in str(path):
            written.append(weakref.ref(table))
        return real_write(path, table, *args, **kwargs)

    def execute(self):
        alive_at_build.append(sum(ref() is not None for ref in written))
        return real_execute(self)

    monkeypatch.setattr(storage, "write_parquet", write)
    monkeypatch.setattr(klines_mod._MonthJob, "execute", execute)
    stats, report = parse(tmp_path, download_report(tmp_path, keys))
    assert stats["partitions_written"] == 3 and len(written) == 3
    assert alive_at_build == [0, 0, 0]


def test_a_single_large_file_goes_to_the_csv_reader_without_a_copy(tmp_path, monkeypatch):
    """A monthly zip (400 MB of CSV for 1s) is one group of one file: its bytes are read as
    they are, not copied into a joined buffer first (twice the file in memory)."""
    from crypto_lakehouse_emulator.generate import write_kline_month  # pandas: not at the top

    key = write_kline_month(tmp_path / "aws_data", "spot", "BTCUSDT", "1m", "2021-02", seed=3)
    layout.aws_path(tmp_path, key).with_name(Path(key).name + ".verified").touch()
    inflated, given = [], []
    real_inflate, real_read = ZipMember.read_all, klines_mod.read_csv_bytes

    def inflate(self):
        inflated.append(real_inflate(self))
        return inflated[-1]

    def read(data, spec, label):
        given.append(data)
        return real_read(data, spec, label)

    monkeypatch.setattr(ZipMember, "read_all", inflate)
    monkeypatch.setattr(klines_mod, "read_csv_bytes", read)
    stats, report = parse(tmp_path, download_report(tmp_path, [key]))
    assert stats["files_parsed"] == 1 and report["partitions"]["202102"]["rows"] == 28 * 1440
    assert len(inflated) == len(given) == 1 and given[0] is inflated[0]


def test_the_csv_bytes_are_released_before_the_checks(tmp_path, monkeypatch):
    """Once a group's CSV is parsed its bytes go: the checks' arrays (a month of 1s: ~170
    MB) are not made while the CSV (~400 MB) is still held."""
    held_at_check = []
    members = []

    class Member(klines_mod._Member):
        def __init__(self, *args):
            super().__init__(*args)
            members.append(self)

    real_offset = klines_mod.grid_offset

    def grid_offset(*args):
        held_at_check.append(sum(len(m.data) for m in members))
        return real_offset(*args)

    monkeypatch.setattr(klines_mod, "_Member", Member)
    monkeypatch.setattr(klines_mod, "grid_offset", grid_offset)
    stats, report = parse(tmp_path, download_report(tmp_path, real_spot_2020(tmp_path)))
    assert stats["files_parsed"] == 3 and len(members) == 3
    assert held_at_check == [0]


def test_a_monthly_zip_of_the_listing_month_asks_for_no_daily_zips(tmp_path, monkeypatch):
    """A symbol listed on 2020-01-29, its January taken from the monthly zip (day_sources:
    every day of the month, the config's start_date being earlier): the 28 days before the
    listing have no row in any archive, daily or monthly, so they are no monthly file cut
    short (binance-public-data #403) and the parse asks no download rerun for them; a month
    whose rows stop early (#403's shape) still asks."""
    from datetime import date, timedelta

    import pandas as pd
    from crypto_lakehouse_emulator.generate import format_kline_csv, kline_frame

    from crypto_lakehouse import shards

    asked: list[str] = []
    monkeypatch.setattr(
        shards, "ask_upstream_rerun", lambda stage, symbol, why: asked.append(why) or []
    )

    def month_zip(data_dir, days):
        frame = pd.concat([kline_frame("spot", "BTCUSDT", "1m", d, seed=3) for d in days])
        key = layout.monthly_kline_key("spot", "BTCUSDT", "1m", "2020-01")
        put_archive(data_dir, key, zip_of("m.csv", format_kline_csv(frame, "spot", "ms")))
        jan = [date(2020, 1, 1) + timedelta(days=k) for k in range(31)]
        sources = {d.isoformat(): key for d in jan}
        return download_report(data_dir, [key], day_sources=sources)

    jan = [date(2020, 1, 1) + timedelta(days=k) for k in range(31)]
    parse(tmp_path / "listed", month_zip(tmp_path / "listed", jan[28:]))
    assert asked == []
    parse(tmp_path / "cut", month_zip(tmp_path / "cut", jan[:7]))
    assert len(asked) == 1 and "holds no row of 24 day(s)" in asked[0]
