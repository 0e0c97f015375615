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

from crypto_lakehouse import datasets, layout
from crypto_lakehouse.parse import ticks
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
