"""The metrics parser on real archive rows (tests/fixtures/real/futures_um/metrics/, see
SOURCES.md) and on the quirks third-party code reports for real files (empty cells, rows
out of order). Expected values are read off the fixture text with the csv module."""

from __future__ import annotations

import csv
import io
import zipfile
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crypto_lakehouse import datasets, layout
from crypto_lakehouse.parse import ticks
from crypto_lakehouse.parse.csv_reader import ArchiveDefect
from tests.conftest import FIXTURES

SAMPLE = FIXTURES / "real/futures_um/metrics/BTCUSDT-metrics-2020-09-01-head.csv"


def _parse(tmp_path, text: str, day: str):
    name = f"BTCUSDT-metrics-{day}.zip"
    path = tmp_path / name
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(name.replace(".zip", ".csv"), text)
    days = ticks.parse_tick_zip(
        path, key=f"k/{name}", trade_type="um_futures", dataset="metrics", symbol="BTCUSDT",
        data_dir=tmp_path / "data", first_day=day,
    )  # fmt: skip
    out = layout.parsed_day_path(
        tmp_path / "data", "um_futures", "metrics", "BTCUSDT", day.replace("-", "")
    )
    return days, pq.read_table(out)


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def test_real_header_is_the_registry_columns():
    header = SAMPLE.read_text().splitlines()[0].split(",")
    assert tuple(header) == datasets.METRICS.columns


def test_real_rows_parse_to_their_values(tmp_path):
    text = SAMPLE.read_text()
    rows = list(csv.reader(io.StringIO(text)))[1:]
    days, table = _parse(tmp_path, text, "2020-09-01")
    # The published file repeats rows (the first one here): kept as published.
    assert days == {"20200901": len(rows)} and len(rows) == 3
    assert table.column("create_time").cast(pa.int64()).to_pylist() == [_ms(r[0]) for r in rows]
    for i, name in enumerate(datasets.METRICS.columns[2:], start=2):
        assert table.column(name).to_pylist() == [float(r[i]) for r in rows], name
    assert table.column("symbol").to_pylist() == ["BTCUSDT"] * 3


def test_empty_cells_stay_null_and_rows_out_of_order_are_sorted(tmp_path):
    header, first, _, third = SAMPLE.read_text().splitlines()
    cells = third.split(",")
    cells[5] = ""  # an empty sum_toptrader_long_short_ratio
    text = "\n".join([header, ",".join(cells), first]) + "\n"
    _, table = _parse(tmp_path, text, "2020-09-01")
    times = table.column("create_time").cast(pa.int64()).to_pylist()
    assert times == [_ms("2020-09-01 00:00:00"), _ms("2020-09-01 00:05:00")]
    assert table.column("sum_toptrader_long_short_ratio").to_pylist() == [
        float(first.split(",")[5]),
        None,
    ]


def _metrics_zip(tmp_path, day: str, lines: list[str]):
    name = f"BTCUSDT-metrics-{day}.zip"
    path = tmp_path / name
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(name.replace(".zip", ".csv"), "\n".join(lines) + "\n")
    return path


def _parse_zip(tmp_path, path, day):
    return ticks.parse_tick_zip(
        path, key=f"k/{path.name}", trade_type="um_futures", dataset="metrics",
        symbol="BTCUSDT", data_dir=tmp_path / "data", first_day=day,
    )  # fmt: skip


def _row_at(row: str, when: str) -> str:
    return ",".join([when, *row.split(",")[1:]])


@pytest.mark.parametrize(
    ("when", "line"),
    [("2020-09-02 00:05:00", 3), ("2020-08-31 23:55:00", 3), ("2020-09-03 00:00:00", 3)],
)
def test_a_metrics_row_outside_its_files_day_is_a_defect_naming_the_line(tmp_path, when, line):
    header, first, _, third = SAMPLE.read_text().splitlines()
    path = _metrics_zip(tmp_path, "2020-09-01", [header, first, _row_at(third, when)])
    with pytest.raises(ArchiveDefect) as err:
        _parse_zip(tmp_path, path, "2020-09-01")
    assert f"k/{path.name}: line {line}: time {when}.000 (raw" in str(err.value)
    assert "outside the file's day 2020-09-01" in str(err.value)
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").rglob("*.pqt"))


def test_a_row_labelled_with_the_next_days_midnight_stays_in_its_files_day(tmp_path):
    # UM metrics before 2026-06-25 label a 5-minute period by its end (binance-public-data
    # #491): a day's file ends with the next day's 00:00:00, which the next day's file may
    # hold too. The row belongs to its file's day: the next day's file (parsed first here)
    # is not touched by it.
    header, first, _, third = SAMPLE.read_text().splitlines()
    midnight = _row_at(third, "2020-09-02 00:00:00")
    next_day = _metrics_zip(tmp_path, "2020-09-02", [header, _row_at(first, "2020-09-02 00:05:00")])
    assert _parse_zip(tmp_path, next_day, "2020-09-02") == {"20200902": 1}
    day = _metrics_zip(tmp_path, "2020-09-01", [header, first, midnight])
    assert _parse_zip(tmp_path, day, "2020-09-01") == {"20200901": 2}
    folder = layout.parsed_day_path(tmp_path / "data", "um_futures", "metrics", "BTCUSDT", "x")
    table1 = pq.read_table(folder.parent / "20200901.pqt")
    table2 = pq.read_table(folder.parent / "20200902.pqt")
    assert table1.column("create_time").cast(pa.int64()).to_pylist() == [
        _ms("2020-09-01 00:00:00"),
        _ms("2020-09-02 00:00:00"),
    ]
    assert table2.column("create_time").cast(pa.int64()).to_pylist() == [_ms("2020-09-02 00:05:00")]
