"""aggTrades / trades zips → per-day Parquet: columns, header sniffing, units, validation.

Expected values are read off the hand-written CSV lines below (formats from the
binance-public-data README), never from the parser's own output.
"""

import zipfile
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from crypto_lakehouse_emulator.ticks import FUTURES_AGG_HEADER, agg_trades_csv

from crypto_lakehouse import datasets, layout
from crypto_lakehouse.parse import ticks
from crypto_lakehouse.parse.csv_reader import ArchiveDefect


def _zip(tmp_path, name, text: str):
    path = tmp_path / name
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(name.replace(".zip", ".csv"), text)
    return path


def _ms(iso):
    return int(datetime.fromisoformat(iso).replace(tzinfo=UTC).timestamp() * 1000)


def _parse(tmp_path, text, trade_type="um_futures", dataset="aggTrades", day="2024-03-01"):
    path = _zip(tmp_path, f"X-{dataset}-{day}.zip", text)
    return ticks.parse_tick_zip(
        path, key=f"k/{path.name}", trade_type=trade_type, dataset=dataset, symbol="BTCUSDT",
        data_dir=tmp_path / "data", first_day=day,
    )  # fmt: skip


def _day(tmp_path, trade_type, dataset, day):
    return pq.read_table(
        layout.parsed_day_path(tmp_path / "data", trade_type, dataset, "BTCUSDT", day)
    )


def test_futures_agg_trades_with_header_split_by_utc_day(tmp_path):
    t1, t2, t3 = (
        _ms("2024-03-01T23:59:59.999"),
        _ms("2024-03-02T00:00:00"),
        _ms("2024-03-02T01:00:00"),
    )
    text = (
        f"{FUTURES_AGG_HEADER}\n"
        f"26129,0.01633102,4.70443515,27781,27781,{t1},true\n"
        f"26130,0.01633200,0,27782,27785,{t2},false\n"
        f"26131,0.01633300,1.5,27786,27786,{t3},true\n"
    )
    # A monthly file (X-aggTrades-2024-03.zip) is split into its UTC days.
    assert _parse(tmp_path, text, day="2024-03") == {"20240301": 1, "20240302": 2}
    d1, d2 = (
        _day(tmp_path, "um_futures", "aggTrades", "20240301"),
        _day(tmp_path, "um_futures", "aggTrades", "20240302"),
    )
    assert d1.schema.field("transact_time").type == pa.timestamp("ms", tz="UTC")
    assert d1.schema.field("agg_trade_id").type == pa.int64()
    assert d1.schema.field("is_buyer_maker").type == pa.bool_()
    assert d1.column("agg_trade_id").to_pylist() == [26129]
    assert d1.column("price").to_pylist() == [0.01633102]
    assert d2.column("is_buyer_maker").to_pylist() == [False, True]
    assert d2.column("first_trade_id").to_pylist() == [27782, 27786]
    assert d2.column("transact_time").cast(pa.int64()).to_pylist() == [t2, t3]


def test_spot_has_no_header_an_extra_flag_and_microseconds_from_2025(tmp_path):
    t_us = _ms("2025-01-01T00:00:01") * 1000 + 123
    text = f"0,0.20000000,50.00000000,0,0,{t_us},False,True\n"
    assert _parse(tmp_path, text, trade_type="spot", day="2025-01-01") == {"20250101": 1}
    table = _day(tmp_path, "spot", "aggTrades", "20250101")
    assert table.column_names[-1] == "is_best_match"
    assert table.column("transact_time").cast(pa.int64()).to_pylist() == [t_us // 1000]
    assert table.column("is_best_match").to_pylist() == [True]


def test_spot_before_2025_is_milliseconds(tmp_path):
    t = _ms("2020-12-25T05:00:00")
    _parse(tmp_path, f"0,0.2,50,0,0,{t},False,True\n", trade_type="spot", day="2020-12-25")
    table = _day(tmp_path, "spot", "aggTrades", "20201225")
    assert table.column("transact_time").cast(pa.int64()).to_pylist() == [t]


def test_cm_trades_carry_base_qty(tmp_path):
    t = _ms("2020-06-04T06:03:12.508")
    text = f"28457,9635.0,1,0.01037883,{t},true\n"
    _parse(tmp_path, text, trade_type="cm_futures", dataset="trades", day="2020-06-04")
    table = _day(tmp_path, "cm_futures", "trades", "20200604")
    assert table.column_names == ["id", "price", "qty", "base_qty", "time", "is_buyer_maker"]
    assert table.column("base_qty").to_pylist() == [0.01037883]


@pytest.mark.parametrize(
    ("rows", "line", "what"),
    [
        (["5,1.0,1,5,5,{t},true", "5,1.0,1,6,6,{t},true"], 2, "does not increase"),
        (["5,1.0,1,5,5,{t},true", "6,1.0,1,6,6,{t0},true"], 2, "back in time"),
        (["5,1.0,1,5,5,{t},true", "6,nan,1,6,6,{t},true"], 2, "price is not a finite"),
        (["5,1.0,-1,5,5,{t},true"], 1, "quantity is negative"),
    ],
)
def test_defects_name_the_key_and_line_and_leave_no_day(tmp_path, rows, line, what):
    t, t0 = _ms("2024-03-01T10:00:00"), _ms("2024-03-01T09:00:00")
    text = f"{FUTURES_AGG_HEADER}\n" + "\n".join(r.format(t=t, t0=t0) for r in rows) + "\n"
    with pytest.raises(ArchiveDefect, match=what) as err:
        _parse(tmp_path, text)
    assert f"line {line + 1}:" in str(err.value) and "k/X-aggTrades-2024-03-01.zip" in str(
        err.value
    )
    folder = layout.parsed_day_path(
        tmp_path / "data", "um_futures", "aggTrades", "BTCUSDT", "x"
    ).parent
    assert not folder.exists() or not any(folder.iterdir())


def test_generator_files_parse_in_bounded_batches(tmp_path, monkeypatch):
    monkeypatch.setattr(ticks, "BLOCK_SIZE", 4096)  # many batches: checks across boundaries
    for trade_type, day in (("um_futures", "2024-03-01"), ("spot", "2025-02-01")):
        text = agg_trades_csv(trade_type, day, 5000, seed=3).decode()
        lines = text.splitlines()
        assert (lines[0] == FUTURES_AGG_HEADER) == (trade_type != "spot")
        data_lines = [x for x in lines if x[0].isdigit()]
        assert _parse(tmp_path, text, trade_type=trade_type, day=day) == {
            day.replace("-", ""): 5000
        }
        table = _day(tmp_path, trade_type, "aggTrades", day.replace("-", ""))
        first = data_lines[0].split(",")
        assert table.column("agg_trade_id")[0].as_py() == int(first[0])
        assert table.column("quantity")[0].as_py() == float(first[2])
        div = 1000 if trade_type == "spot" else 1
        expected_ms = int(first[5]) // div
        assert table.column("transact_time").cast(pa.int64())[0].as_py() == expected_ms


# ---------------------------------------------------------------- list → download → parse
@pytest.mark.parametrize(
    ("trade_type", "day"), [("spot", "2025-01-02"), ("um_futures", "2024-03-01")]
)
def test_agg_trades_listed_downloaded_parsed_and_incremental(
    tmp_path, emulator, monkeypatch, trade_type, day
):
    import json

    from crypto_lakehouse_emulator.ticks import write_daily_agg_trades

    from crypto_lakehouse.archive import http
    from crypto_lakehouse.archive.listing import run_listing
    from crypto_lakehouse.archive.sync import run_sync

    monkeypatch.setattr(http, "BACKOFF_BASE_S", 0.001)
    mirror = tmp_path / "mirror"
    good = write_daily_agg_trades(mirror, trade_type, "BTCUSDT", day, 300, seed=1)
    # A structurally bad day: a row whose id goes back (line 3 of the file, after any header).
    bad_day = day[:-2] + "20"
    bad_key = good.replace(day, bad_day)
    csv = agg_trades_csv(trade_type, bad_day, 3, seed=2).decode().splitlines()
    rows = [x for x in csv if x[0].isdigit()]
    head = csv[: len(csv) - len(rows)]
    fields = rows[1].split(",")
    fields[0] = str(int(rows[0].split(",")[0]) - 1)
    rows[1] = ",".join(fields)
    from crypto_lakehouse_emulator.generate import _write_archive, zip_bytes

    data = zip_bytes("m.csv", ("\n".join(head + rows) + "\n").encode(), datetime(2024, 1, 1))
    _write_archive(mirror, bad_key, data, trade_type, True, None, None)
    emu = emulator(mirror_dir=mirror)

    details = tmp_path / "listing"
    run_listing(
        trade_type=trade_type, dataset="aggTrades", interval=None, symbols=["BTCUSDT"],
        listing_url=emu.base_url, out_index=tmp_path / "index.json", details_dir=details,
        concurrency=2, timeout_s=5, max_retries=1,
    )  # fmt: skip
    data_dir = tmp_path / "data"
    run_sync(
        trade_type=trade_type, dataset="aggTrades", interval=None, symbol="BTCUSDT",
        details_path=details / "BTCUSDT.json", data_dir=data_dir, archive_url=emu.base_url,
        start_date=None, end_date=None, use_monthly_klines=False, concurrency=2,
        max_retries=1, timeout_s=5, report_path=tmp_path / "dl.json",
        stats_path=tmp_path / "dl-stats.json",
    )  # fmt: skip
    args = dict(
        trade_type=trade_type, dataset="aggTrades", symbol="BTCUSDT", data_dir=data_dir,
        download_report=tmp_path / "dl.json", report_path=tmp_path / "parse.json",
    )  # fmt: skip
    report = ticks.run_parse_ticks(**args)
    assert list(report["files"]) == [good]
    assert report["rows"] == 300
    reason = report["quarantined"][bad_key]
    assert bad_key in reason and f"line {len(head) + 2}:" in reason
    assert not layout.aws_path(data_dir, bad_key).exists()
    assert layout.quarantine_path(data_dir, bad_key).exists()
    out = layout.parsed_day_path(data_dir, trade_type, "aggTrades", "BTCUSDT", day.replace("-", ""))
    assert pq.read_metadata(out).num_rows == 300
    mtime = out.stat().st_mtime_ns
    again = ticks.run_parse_ticks(**args)
    assert out.stat().st_mtime_ns == mtime  # unchanged zip: not parsed again
    assert again["files"] == report["files"]
    assert json.loads((tmp_path / "parse.json").read_text())["quarantined"] == report["quarantined"]
    # A day file cut short outside a run is parsed again (its size is not the recorded one);
    # one deleted too.
    whole = out.read_bytes()
    out.write_bytes(whole[:200])
    ticks.run_parse_ticks(**args)
    assert out.read_bytes() == whole
    out.unlink()
    ticks.run_parse_ticks(**args)
    assert out.read_bytes() == whole
    # A state written before sizes were recorded: presence only, nothing parsed again.
    state_file = ticks.state_file(data_dir, trade_type, "aggTrades", "BTCUSDT")
    state = json.loads(state_file.read_text())
    assert state["sizes"] == {out.name: len(whole)}
    del state["sizes"]
    state_file.write_text(json.dumps(state))
    mtime = out.stat().st_mtime_ns
    ticks.run_parse_ticks(**args)
    assert out.stat().st_mtime_ns == mtime


# ---------------------------------------------------------------- metrics (um, cm)
METRICS_HEADER = (
    "create_time,symbol,sum_open_interest,sum_open_interest_value,"
    "count_toptrader_long_short_ratio,sum_toptrader_long_short_ratio,"
    "count_long_short_ratio,sum_taker_long_short_vol_ratio"
)


def test_metrics_text_times_become_utc_milliseconds(tmp_path):
    text = (
        f"{METRICS_HEADER}\n"
        "2025-01-21 00:00:00,BTCUSDT,2310973.79,3669133.086383,4.24734982,2.26803,2.72141015,0.69236\n"
        "2025-01-21 00:05:00,BTCUSDT,2310980.00,3669140.0,4.2,2.2,2.7,0.7\n"
    )
    assert _parse(tmp_path, text, dataset="metrics", day="2025-01-21") == {"20250121": 2}
    table = _day(tmp_path, "um_futures", "metrics", "20250121")
    assert table.column("create_time").cast(pa.int64()).to_pylist() == [
        _ms("2025-01-21T00:00:00"),
        _ms("2025-01-21T00:05:00"),
    ]
    assert table.column("symbol").to_pylist() == ["BTCUSDT", "BTCUSDT"]
    assert table.column("sum_taker_long_short_vol_ratio").to_pylist() == [0.69236, 0.7]


def test_metrics_negative_open_interest_is_a_defect(tmp_path):
    text = f"{METRICS_HEADER}\n2025-01-21 00:00:00,BTCUSDT,-1,3,4,2,2,0.6\n"
    with pytest.raises(ArchiveDefect, match="line 2: sum_open_interest is negative"):
        _parse(tmp_path, text, dataset="metrics", day="2025-01-21")


def test_day_sizes_by_stat_or_by_one_listing_agree(tmp_path, monkeypatch):
    # A daily update stats the one day it wrote; a first parse of years lists the folder once.
    folder = tmp_path / "days"
    folder.mkdir()
    days = [f"2024{m:02d}{d:02d}" for m in (1, 2, 3) for d in range(1, 29)]  # 84 days
    for i, day in enumerate(days):
        (folder / f"{day}.pqt").write_bytes(b"x" * (i + 1))
    parsed = {"old.zip": {"days": {days[0]: 1}}, "new.zip": {"days": {d: 1 for d in days[1:]}}}
    before = {"old.zip": parsed["old.zip"]}
    present = {f"{days[0]}.pqt": 1}
    expected = {f"{d}.pqt": i + 1 for i, d in enumerate(days)}

    def day_path(day):
        return folder / f"{day}.pqt"

    assert ticks._day_sizes(day_path, parsed, before, present) == expected  # one listing
    monkeypatch.setattr(ticks, "SIZES_BY_LISTING_FROM", 1000)
    assert ticks._day_sizes(day_path, parsed, before, present) == expected  # a stat each
    # nothing written: the sizes listed before the run, nothing read
    monkeypatch.setattr(ticks.storage, "stat", None)
    assert ticks._day_sizes(day_path, {"old.zip": before["old.zip"]}, before, present) == present


# ---------------------------------------------------------------- rows pyarrow refuses
# Before, a cell pyarrow could not convert in a file's first block (every daily file of a
# quiet symbol: blocks are 8 MB) escaped as a bare ArrowInvalid, and an unreadable zip as
# BadZipFile: the symbol failed at every run instead of the zip being quarantined.
@pytest.mark.parametrize(
    ("row", "what"),
    [
        ("6,abc,1,6,6,{t},true", "field 'price' is not a number: 'abc'"),
        ("6,1.0,1,6,6,{t}", "6 fields, expected 7"),
        ("6,1.0,1,6,6,{t},true,true", "8 fields, expected 7"),
        ("6,1.0,1,6,6,{t},maybe", "field 'is_buyer_maker' is not true or false: 'maybe'"),
        ("6.5,1.0,1,6,6,{t},true", "field 'agg_trade_id' is not an integer: '6.5'"),
        ("6,1.0,1,6,6,12:00,true", "field 'transact_time' is not an integer: '12:00'"),
    ],
)
@pytest.mark.parametrize("header", [True, False])
def test_a_refused_cell_names_its_line_in_any_block(tmp_path, monkeypatch, row, what, header):
    t = _ms("2024-03-01T10:00:00")
    good = [f"{i},1.0,1,{i},{i},{t},true" for i in range(1, 6)]
    later = [f"{i},1.0,1,{i},{i},{t},true" for i in range(7, 400)]
    head = [FUTURES_AGG_HEADER] if header else []
    lines = head + good + [row.format(t=t)] + later
    bad_line = len(head) + len(good) + 1  # 1-based, as an editor counts
    for block_size in (ticks.BLOCK_SIZE, 1024):  # first block, and a later one
        monkeypatch.setattr(ticks, "BLOCK_SIZE", block_size)
        with pytest.raises(ArchiveDefect) as err:
            _parse(tmp_path, "\n".join(lines) + "\n")
        assert str(err.value) == f"k/X-aggTrades-2024-03-01.zip: line {bad_line}: {what}"
        assert err.value.line == bad_line


@pytest.mark.parametrize(
    ("row", "column"),
    [
        (",1.0,1,6,6,{t},true", "agg_trade_id"),
        ("6,,1,6,6,{t},true", "price"),
        ("6,1.0,1,,6,{t},true", "first_trade_id"),
        ("6,1.0,1,6,6,,true", "transact_time"),
        ("6,1.0,1,6,6,{t},", "is_buyer_maker"),
    ],
)
def test_an_empty_cell_is_a_defect_naming_line_and_column(tmp_path, row, column):
    # Before: an empty id passed the "ids increase" check as a NaN (or crashed with
    # ValueError on the last row), an empty time crashed the cast, and empty flags or
    # trade ids were written as nulls.
    t = _ms("2024-03-01T10:00:00")
    text = f"{FUTURES_AGG_HEADER}\n5,1.0,1,5,5,{t},true\n{row.format(t=t)}\n7,1.0,1,7,7,{t},true\n"
    with pytest.raises(ArchiveDefect) as err:
        _parse(tmp_path, text)
    assert str(err.value) == f"k/X-aggTrades-2024-03-01.zip: line 3: field {column!r} is empty"


@pytest.mark.parametrize("trade_type", ["um_futures", "spot"])
def test_an_agg_trade_whose_last_trade_id_is_below_its_first_is_a_defect(
    tmp_path, monkeypatch, trade_type
):
    # An aggregate trade groups the trades first_trade_id..last_trade_id. Before, a row with
    # last < first was written as it stood, and agg_klines counted last - first + 1 <= 0
    # trades for it; now the zip is a defect named by key and line (quarantined, like a row
    # whose id does not increase), in the first block and in a later one. first == last (one
    # trade) is a range.
    t = _ms("2024-03-01T10:00:00")
    flag = ",true" if trade_type == "spot" else ""
    head = [] if trade_type == "spot" else [FUTURES_AGG_HEADER]
    rows = [f"{i},1.0,1,{10 * i},{10 * i + (i % 3)},{t},true{flag}" for i in range(1, 400)]
    assert _parse(tmp_path, "\n".join(head + rows) + "\n", trade_type=trade_type) == {
        "20240301": 399
    }
    rows[199] = f"200,1.0,1,2000,1999,{t},true{flag}"  # past the first 1024 bytes
    bad_line = len(head) + 200
    for block_size in (ticks.BLOCK_SIZE, 1024):
        monkeypatch.setattr(ticks, "BLOCK_SIZE", block_size)
        target = layout.parsed_day_path(tmp_path / "d2", trade_type, "aggTrades", "BTCUSDT", "0")
        with pytest.raises(ArchiveDefect) as err:
            path = _zip(tmp_path, "X-aggTrades-2024-03-01.zip", "\n".join(head + rows) + "\n")
            ticks.parse_tick_zip(
                path, key=f"k/{path.name}", trade_type=trade_type, dataset="aggTrades",
                symbol="BTCUSDT", data_dir=tmp_path / "d2", first_day="2024-03-01",
            )  # fmt: skip
        assert str(err.value) == (
            f"k/X-aggTrades-2024-03-01.zip: line {bad_line}: "
            "last_trade_id 1999 is below first_trade_id 2000"
        )
        assert not (target.parent.exists() and any(target.parent.glob("*.pqt")))


def test_metrics_empty_values_stay_nulls_but_an_empty_time_is_a_defect(tmp_path):
    row = "2025-01-21 00:05:00,BTCUSDT,2310980.00,3669140.0,,2.2,2.7,0.7"
    text = f"{METRICS_HEADER}\n{row}\n"
    assert _parse(tmp_path, text, dataset="metrics", day="2025-01-21") == {"20250121": 1}
    table = _day(tmp_path, "um_futures", "metrics", "20250121")
    assert table.column("count_toptrader_long_short_ratio").to_pylist() == [None]
    text = f"{METRICS_HEADER}\n{row}\n,BTCUSDT,1,1,1,1,1,1\n"
    with pytest.raises(ArchiveDefect, match="line 3: field 'create_time' is empty"):
        _parse(tmp_path, text, dataset="metrics", day="2025-01-21")


def _zip_bytes(text: str) -> bytes:
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("m.csv", text)
    return buf.getvalue()


def test_an_unreadable_zip_is_a_defect_and_the_symbols_other_zips_go_on(tmp_path):
    import hashlib

    t1, t2, t3 = _ms("2024-03-01T10:00:00"), _ms("2024-03-02T10:00:00"), _ms("2024-03-03T10:00:00")
    whole = _zip_bytes(f"{FUTURES_AGG_HEADER}\n" + "".join(
        f"{i},1.0,1,{i},{i},{t2},true\n" for i in range(1, 3000)
    ))  # fmt: skip
    flipped = bytearray(whole)
    flipped[len(whole) // 2] ^= 0xFF
    bodies = {
        "2024-03-01": _zip_bytes(f"{FUTURES_AGG_HEADER}\n1,1.0,1,1,1,{t1},true\n"),
        "2024-03-02": bytes(flipped),  # a bad CRC (or a broken deflate stream)
        "2024-03-03": _zip_bytes(f"{FUTURES_AGG_HEADER}\n1,abc,1,1,1,{t3},true\n"),
        "2024-03-04": b"PK\x03\x04 not a zip",
    }
    data_dir = tmp_path / "data"
    files = {}
    for day, body in bodies.items():
        key = _btc_agg_key("daily", day)
        path = layout.aws_path(data_dir, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
        layout.verified_marker(path).write_text("")
        files[key] = {"sha256": hashlib.sha256(body).hexdigest()}
    report = ticks.run_parse_ticks(
        trade_type="um_futures", dataset="aggTrades", symbol="BTCUSDT", data_dir=data_dir,
        download_report={"files": files}, report_path=tmp_path / "parse.json",
    )  # fmt: skip
    good, crc, bad_row, not_zip = files
    assert list(report["files"]) == [good]
    assert report["rows"] == 1
    reasons = report["quarantined"]
    assert set(reasons) == {crc, bad_row, not_zip}
    assert reasons[not_zip].startswith(f"{not_zip}: not a readable zip")
    assert "inflate" in reasons[crc] or "readable zip" in reasons[crc]
    assert reasons[bad_row] == f"{bad_row}: line 2: field 'price' is not a number: 'abc'"
    for key in (crc, bad_row, not_zip):
        assert layout.quarantine_path(data_dir, key).exists()


# ---------------------------------------------------------------- rows outside the file's period
# Before, a row outside the zip's day was written to a day file of its own date (another
# file's day, overwritten or overwriting), and a time in another unit than the registry's
# gave day files such as "-94020106.pqt" (µs read as ms cannot be shown as a date).
@pytest.mark.parametrize(
    ("trade_type", "day", "time", "want"),
    [
        ("um_futures", "2024-03-01", "2024-03-02T00:00:00",
         "time 2024-03-02 00:00:00.000 (raw {raw}) is outside the file's day 2024-03-01"),
        ("um_futures", "2024-03-01", "2024-02-29T23:59:59.999",
         "time 2024-02-29 23:59:59.999 (raw {raw}) is outside the file's day 2024-03-01"),
        ("um_futures", "2024-03", "2024-04-01T00:00:00",
         "time 2024-04-01 00:00:00.000 (raw {raw}) is outside the file's month 2024-03"),
    ],
)  # fmt: skip
def test_a_row_outside_the_files_period_is_a_defect(tmp_path, trade_type, day, time, want):
    t_in, t_out = _ms("2024-03-01T12:00:00"), _ms(time)
    text = f"{FUTURES_AGG_HEADER}\n1,1.0,1,1,1,{min(t_in, t_out)},true\n2,1.0,1,2,2,{max(t_in, t_out)},true\n"
    line = 2 if t_out < t_in else 3
    with pytest.raises(ArchiveDefect) as err:
        _parse(tmp_path, text, trade_type=trade_type, day=day)
    assert str(err.value) == f"k/X-aggTrades-{day}.zip: line {line}: " + want.format(raw=t_out)
    folder = layout.parsed_day_path(tmp_path / "data", trade_type, "aggTrades", "BTCUSDT", "x")
    assert not folder.parent.exists() or not any(folder.parent.iterdir())


def test_times_in_another_unit_than_the_registrys_are_named_as_such(tmp_path):
    t = _ms("2025-01-01T00:00:01")
    # A spot file of 2025 in ms (the registry expects µs from 2025-01-01): 1970 as µs.
    text = f"0,0.2,50,0,0,{t},False,True\n"
    with pytest.raises(ArchiveDefect) as err:
        _parse(tmp_path, text, trade_type="spot", day="2025-01-01")
    assert str(err.value) == (
        f"k/X-aggTrades-2025-01-01.zip: line 1: time 1970-01-21 02:08:09.601 (raw {t}) is "
        "outside the file's day 2025-01-01; as ms it would be inside: the file's unit is not "
        "the µs expected"
    )
    # A futures file in µs (the registry expects ms): beyond the year 9999 as ms.
    t = _ms("2024-03-01T12:00:00") * 1000
    text = f"{FUTURES_AGG_HEADER}\n1,1.0,1,1,1,{t},true\n"
    with pytest.raises(ArchiveDefect) as err:
        _parse(tmp_path, text)
    assert str(err.value) == (
        f"k/X-aggTrades-2024-03-01.zip: line 2: time (raw {t}) is outside the file's day "
        "2024-03-01; as µs it would be inside: the file's unit is not the ms expected"
    )


# ---------------------------------------------------------------- monthly and daily zips
def _btc_agg_key(period: str, day: str) -> str:
    """The archive key of a um_futures BTCUSDT aggTrades zip (``period``: daily or monthly)."""
    return layout.archive_key("um_futures", "aggTrades", "BTCUSDT", None, period, day)


def _put(data_dir, key, text) -> dict:
    import hashlib

    body = _zip_bytes(text)
    path = layout.aws_path(data_dir, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)
    layout.verified_marker(path).write_text("")
    return {key: {"sha256": hashlib.sha256(body).hexdigest()}}


def test_a_day_in_a_daily_zip_stays_from_it_when_the_monthly_zip_comes_later(tmp_path):
    # docs/datasets.md: "a day present in both comes from the daily file". Before, that held
    # only when both zips were parsed in the same run: a monthly zip parsed in a later run
    # (published after the daily ones, or re-published) rewrote every day of its month,
    # the daily zips' days included, and the unchanged daily zips were not parsed again.
    data_dir = tmp_path / "data"
    t1, t2 = _ms("2024-03-01T10:00:00"), _ms("2024-03-02T10:00:00")
    daily = _put(data_dir, _btc_agg_key("daily", "2024-03-02"),
                 f"{FUTURES_AGG_HEADER}\n2,2.0,1,2,2,{t2},true\n")  # fmt: skip

    def run(files):
        return ticks.run_parse_ticks(
            trade_type="um_futures", dataset="aggTrades", symbol="BTCUSDT", data_dir=data_dir,
            download_report={"files": files}, report_path=tmp_path / "parse.json",
        )  # fmt: skip

    run(daily)
    for price in ("1.0", "1.5"):  # the monthly zip published, then published again
        monthly = _put(data_dir, _btc_agg_key("monthly", "2024-03"), (
            f"{FUTURES_AGG_HEADER}\n1,{price},1,1,1,{t1},true\n2,{price},1,2,2,{t2},true\n"
        ))  # fmt: skip
        run(daily | monthly)
        assert _day(tmp_path, "um_futures", "aggTrades", "20240301").column(
            "price"
        ).to_pylist() == [float(price)]
        assert _day(tmp_path, "um_futures", "aggTrades", "20240302").column(
            "price"
        ).to_pylist() == [2.0]


def test_a_member_without_newlines_is_a_defect_read_in_bounded_chunks(tmp_path, monkeypatch):
    # One "line" of 24 MB (no newline): pyarrow refuses it (larger than a block); locating
    # the defect reads the member in 8 MB chunks and stops once 1 MB passed without a
    # newline, instead of holding the line whole.
    monkeypatch.setattr(ticks, "_MAX_LINE_BYTES", 4096)
    t = _ms("2024-03-01T10:00:00")
    text = f"{FUTURES_AGG_HEADER}\n1,1.0,1,1,1,{t},true\n" + "1" * (24 << 20)
    reads = []
    real_locate = ticks.locate_tick_defect

    def locate(member, *a):
        real_read = member.read
        member.read = lambda n=-1: reads.append(n) or real_read(n)
        return real_locate(member, *a)

    monkeypatch.setattr(ticks, "locate_tick_defect", locate)
    with pytest.raises(ArchiveDefect) as err:
        _parse(tmp_path, text)
    assert str(err.value) == "k/X-aggTrades-2024-03-01.zip: line 3: a line longer than 4096 bytes"
    assert reads == [ticks._LOCATE_CHUNK]  # stopped after the first chunk


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
@pytest.mark.parametrize(
    ("bad", "what"),
    [
        ("9,1.0,1,9,9,{t},true", "agg_trade_id 9 does not increase"),  # a check on the rows
        ("12,1.0,,12,12,{t},true", "field 'quantity' is empty"),
        ("12,1.0,abc,12,12,{t},true", "field 'quantity' is not a number: 'abc'"),  # refused
    ],
)
def test_blank_lines_do_not_shift_the_line_a_defect_names(tmp_path, newline, bad, what):
    t = _ms("2024-03-01T10:00:00")
    rows = [
        FUTURES_AGG_HEADER,  # line 1
        "10,1.0,1,10,10,{t},true",  # line 2
        "",  # line 3: blank
        "",  # line 4: blank
        "11,1.0,1,11,11,{t},true",  # line 5
        "",  # line 6: blank
        bad,  # line 7: the defect
        "13,1.0,1,13,13,{t},true",  # line 8
    ]
    text = newline.join(r.format(t=t) for r in rows) + newline
    with pytest.raises(ArchiveDefect) as err:
        _parse(tmp_path, text)
    assert f"line 7: {what}" in str(err.value)
    assert err.value.line == 7


def test_a_metrics_defect_names_its_file_line_though_rows_are_sorted(tmp_path):
    # Rows out of time order are sorted before the checks (registry sort_rows); the
    # negative value is on file line 4 (the 00:00 row, sorted first), after a blank line.
    text = (
        f"{METRICS_HEADER}\n"  # line 1
        "2024-03-01 00:10:00,BTCUSDT,1,1,1,1,1,1\n"  # line 2
        "\n"  # line 3
        "2024-03-01 00:00:00,BTCUSDT,-5,1,1,1,1,1\n"  # line 4
        "2024-03-01 00:05:00,BTCUSDT,1,1,1,1,1,1\n"  # line 5
    )
    with pytest.raises(ArchiveDefect, match="sum_open_interest is negative") as err:
        _parse(tmp_path, text, dataset="metrics")
    assert "line 4:" in str(err.value) and err.value.line == 4


# ---------------------------------------------------------------- files without a row
@pytest.mark.parametrize(
    ("trade_type", "dataset", "text"),
    [
        ("um_futures", "aggTrades", f"{FUTURES_AGG_HEADER}\n"),  # a header only
        ("um_futures", "aggTrades", FUTURES_AGG_HEADER),  # ... without its newline
        ("spot", "aggTrades", ""),  # spot has no header: an empty member
        ("cm_futures", "trades", "id,price,qty,base_qty,time,is_buyer_maker\n\n"),
        ("um_futures", "metrics", METRICS_HEADER + "\n"),
    ],
)
def test_a_daily_zip_without_rows_is_a_day_file_with_no_row(tmp_path, trade_type, dataset, text):
    # Before: a header-only zip wrote nothing and recorded no day (a day with zero rows
    # looked like a missing day), and an empty member was quarantined as "Empty CSV file".
    assert _parse(tmp_path, text, trade_type, dataset, day="2024-03-01") == {"20240301": 0}
    table = _day(tmp_path, trade_type, dataset, "20240301")
    assert table.num_rows == 0
    assert table.schema == ticks.arrow_schema(datasets.get(dataset), trade_type)


def test_a_monthly_zip_without_rows_records_each_day_of_its_month(tmp_path):
    days = _parse(tmp_path, f"{FUTURES_AGG_HEADER}\n", day="2024-02")
    assert days == {f"202402{d:02d}": 0 for d in range(1, 30)}  # 2024 is a leap year


def test_the_parse_report_names_the_days_without_rows(tmp_path):
    data_dir = tmp_path / "data"
    t = _ms("2024-03-01T10:00:00")
    files = _put(
        data_dir,
        _btc_agg_key("daily", "2024-03-01"),
        f"{FUTURES_AGG_HEADER}\n1,2.0,1,1,1,{t},true\n",
    )
    files |= _put(data_dir, _btc_agg_key("daily", "2024-03-02"), f"{FUTURES_AGG_HEADER}\n")

    def run():
        return ticks.run_parse_ticks(
            trade_type="um_futures", dataset="aggTrades", symbol="BTCUSDT", data_dir=data_dir,
            download_report={"files": files}, report_path=tmp_path / "parse.json",
        )  # fmt: skip

    report = run()
    assert report["days_without_rows"] == ["20240302"] and report["quarantined"] == {}
    assert report["files"][_btc_agg_key("daily", "2024-03-02")]["days"] == {"20240302": 0}
    day_file = layout.parsed_day_path(data_dir, "um_futures", "aggTrades", "BTCUSDT", "20240302")
    written = day_file.stat().st_mtime_ns
    assert run()["days_without_rows"] == ["20240302"]  # incremental: not parsed again
    assert day_file.stat().st_mtime_ns == written


def test_a_day_whose_zip_is_republished_with_a_defect_loses_its_day_file(tmp_path):
    # Daily updates must end as a full build of the same archive does. A zip parsed once,
    # then re-published with a defect, is quarantined; a full build has no file of its day.
    # Before 2026-12-07 the day file of the old content stayed, read by load_dataset and
    # agg_klines as if the archive still gave it.
    data_dir = tmp_path / "data"
    t1, t2 = _ms("2024-03-01T10:00:00"), _ms("2024-03-02T10:00:00")
    other = _put(
        data_dir,
        _btc_agg_key("daily", "2024-03-02"),
        f"{FUTURES_AGG_HEADER}\n2,2.0,1,2,2,{t2},true\n",
    )

    def run(files):
        return ticks.run_parse_ticks(
            trade_type="um_futures", dataset="aggTrades", symbol="BTCUSDT", data_dir=data_dir,
            download_report={"files": files}, report_path=tmp_path / "parse.json",
        )  # fmt: skip

    good = _put(
        data_dir,
        _btc_agg_key("daily", "2024-03-01"),
        f"{FUTURES_AGG_HEADER}\n1,1.0,1,1,1,{t1},true\n",
    )
    run(good | other)
    day1 = layout.parsed_day_path(data_dir, "um_futures", "aggTrades", "BTCUSDT", "20240301")
    assert day1.exists()
    bad = _put(
        data_dir,
        _btc_agg_key("daily", "2024-03-01"),
        f"{FUTURES_AGG_HEADER}\n1,abc,1,1,1,{t1},true\n",
    )
    report = run(bad | other)
    assert list(report["quarantined"]) == list(bad)
    assert not day1.exists()
    assert _day(tmp_path, "um_futures", "aggTrades", "20240302").column("price").to_pylist() == [
        2.0
    ]
    # Fixed again by the archive: the day is back.
    fixed = _put(
        data_dir,
        _btc_agg_key("daily", "2024-03-01"),
        f"{FUTURES_AGG_HEADER}\n1,1.5,1,1,1,{t1},true\n",
    )
    run(fixed | other)
    assert _day(tmp_path, "um_futures", "aggTrades", "20240301").column("price").to_pylist() == [
        1.5
    ]


def test_a_month_the_download_took_from_its_monthly_zip_takes_its_days_from_it(tmp_path):
    # download.use_monthly_klines: a month wholly inside the range is taken from its
    # monthly zip (the download report's day_sources names it for each day). A full build
    # downloads that zip only; a data dir updated daily also holds the daily zips of the
    # month from before the monthly zip was published. Both must end alike: every day from
    # the monthly zip, as the kline parser does. Before 2026-12-07 the held daily zips
    # kept their days in the daily-updated dir. A day the monthly zip holds no row of
    # (cut short, binance-public-data #403) still comes from its daily zip.
    t1, t2, t3 = _ms("2024-03-01T10:00:00"), _ms("2024-03-02T10:00:00"), _ms("2024-03-03T10:00:00")
    monthly_text = f"{FUTURES_AGG_HEADER}\n1,1.0,1,1,1,{t1},true\n2,1.0,1,2,2,{t2},true\n"
    sources = {f"2024-03-{d:02d}": _btc_agg_key("monthly", "2024-03") for d in range(1, 32)}

    def run(data_dir, files, day_sources=None):
        download = {"files": files, **({"day_sources": day_sources} if day_sources else {})}
        return ticks.run_parse_ticks(
            trade_type="um_futures", dataset="aggTrades", symbol="BTCUSDT", data_dir=data_dir,
            download_report=download, report_path=tmp_path / "parse.json",
        )  # fmt: skip

    def prices(data_dir, day):
        path = layout.parsed_day_path(data_dir, "um_futures", "aggTrades", "BTCUSDT", day)
        return pq.read_table(path).column("price").to_pylist()

    daily_dir = tmp_path / "daily"
    dailies = _put(daily_dir, _btc_agg_key("daily", "2024-03-02"),
                   f"{FUTURES_AGG_HEADER}\n2,2.0,1,2,2,{t2},true\n")  # fmt: skip
    dailies |= _put(daily_dir, _btc_agg_key("daily", "2024-03-03"),
                    f"{FUTURES_AGG_HEADER}\n3,3.0,1,3,3,{t3},true\n")  # fmt: skip
    run(daily_dir, dailies)
    assert prices(daily_dir, "20240302") == [2.0]
    monthly = _put(daily_dir, _btc_agg_key("monthly", "2024-03"), monthly_text)
    run(daily_dir, dailies | monthly, sources)
    full_dir = tmp_path / "full"
    run(full_dir, _put(full_dir, _btc_agg_key("monthly", "2024-03"), monthly_text), sources)
    for data_dir in (daily_dir, full_dir):
        assert prices(data_dir, "20240301") == [1.0]
        assert prices(data_dir, "20240302") == [1.0]
    assert prices(daily_dir, "20240303") == [3.0]  # the monthly zip has no row of it
    # An unchanged run keeps it so.
    run(daily_dir, dailies | monthly, sources)
    assert prices(daily_dir, "20240302") == [1.0] and prices(daily_dir, "20240303") == [3.0]


def test_a_data_dir_whose_daily_zips_kept_a_months_days_gets_them_from_the_monthly_zip(
    tmp_path,
):
    # A data dir parsed before 2026-12-07 (or a month whose day_sources came later): the
    # monthly zip is parsed and unchanged, the daily zips' days won. Once day_sources names
    # the monthly zip, the unchanged monthly zip is read again and its days replace theirs.
    data_dir = tmp_path / "data"
    t1, t2 = _ms("2024-03-01T10:00:00"), _ms("2024-03-02T10:00:00")
    files = _put(data_dir, _btc_agg_key("daily", "2024-03-02"),
                 f"{FUTURES_AGG_HEADER}\n2,2.0,1,2,2,{t2},true\n")  # fmt: skip
    files |= _put(data_dir, _btc_agg_key("monthly", "2024-03"),
                  f"{FUTURES_AGG_HEADER}\n1,1.0,1,1,1,{t1},true\n2,1.0,1,2,2,{t2},true\n")  # fmt: skip

    def run(day_sources=None):
        download = {"files": files, **({"day_sources": day_sources} if day_sources else {})}
        return ticks.run_parse_ticks(
            trade_type="um_futures", dataset="aggTrades", symbol="BTCUSDT", data_dir=data_dir,
            download_report=download, report_path=tmp_path / "parse.json",
        )  # fmt: skip

    run()
    assert _day(tmp_path, "um_futures", "aggTrades", "20240302").column("price").to_pylist() == [
        2.0
    ]
    run({"2024-03-02": _btc_agg_key("monthly", "2024-03")})
    assert _day(tmp_path, "um_futures", "aggTrades", "20240302").column("price").to_pylist() == [
        1.0
    ]
