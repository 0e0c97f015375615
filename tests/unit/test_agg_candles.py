"""aggTrades → candles, against a textbook per-row loop over the same trades."""

from pathlib import Path

import pyarrow as pa
import pytest
from crypto_lakehouse_emulator.ticks import agg_trades_csv

from crypto_lakehouse.generate.agg_candles import (
    candles_from_agg_trade_parts,
    candles_from_agg_trades,
)
from crypto_lakehouse.schema import KLINE_COLUMNS


def _trades_from_csv(text: str) -> tuple[pa.Table, list[list[str]]]:
    rows = [line.split(",") for line in text.splitlines() if line[:1].isdigit()]
    table = pa.table(
        {
            "price": pa.array([float(r[1]) for r in rows]),
            "quantity": pa.array([float(r[2]) for r in rows]),
            "first_trade_id": pa.array([int(r[3]) for r in rows], pa.int64()),
            "last_trade_id": pa.array([int(r[4]) for r in rows], pa.int64()),
            "transact_time": pa.array([int(r[5]) for r in rows], pa.int64()).cast(
                pa.timestamp("ms", tz="UTC")
            ),
            "is_buyer_maker": pa.array([r[6] == "true" for r in rows]),
        }
    )
    return table, rows


def _textbook(rows, step_ms):
    out = {}
    for r in rows:
        price, qty, t = float(r[1]), float(r[2]), int(r[5])
        b = t // step_ms * step_ms
        c = out.setdefault(b, {"open": price, "high": price, "low": price, "volume": 0.0,
                               "quote_volume": 0.0, "trade_num": 0,
                               "taker_buy_base_asset_volume": 0.0,
                               "taker_buy_quote_asset_volume": 0.0})  # fmt: skip
        c["high"], c["low"], c["close"] = max(c["high"], price), min(c["low"], price), price
        c["volume"] += qty
        c["quote_volume"] += price * qty
        c["trade_num"] += int(r[4]) - int(r[3]) + 1
        if r[6] == "false":  # the buyer is the taker
            c["taker_buy_base_asset_volume"] += qty
            c["taker_buy_quote_asset_volume"] += price * qty
    return out


@pytest.mark.parametrize(("interval", "step"), [("1s", 1000), ("1m", 60_000), ("1h", 3_600_000)])
def test_candles_equal_the_textbook_loop(interval, step):
    table, rows = _trades_from_csv(
        agg_trades_csv("um_futures", "2024-03-01", 3000, seed=5).decode()
    )
    got = candles_from_agg_trades(table, interval)
    assert got.column_names == list(KLINE_COLUMNS)
    want = _textbook(rows, step)
    opens = got.column("candle_begin_time").cast(pa.int64()).to_pylist()
    assert opens == sorted(want)
    for i, b in enumerate(opens):
        for name, value in want[b].items():
            assert got.column(name)[i].as_py() == pytest.approx(value, rel=1e-12), (b, name)


@pytest.mark.parametrize("cuts", [[1], [7, 8, 9], [500, 501, 1700], list(range(0, 3000, 97))])
def test_candles_of_a_day_in_parts_equal_the_textbook_loop(cuts):
    # The day cut into consecutive parts (row groups) anywhere: inside a candle, parts of
    # one row, an empty part; the candles are those of the whole day.
    table, rows = _trades_from_csv(
        agg_trades_csv("um_futures", "2024-03-01", 3000, seed=5).decode()
    )
    bounds = [0, *cuts, cuts[-1], table.num_rows]  # cuts[-1] twice: an empty part
    parts = [table.slice(a, b - a) for a, b in zip(bounds, bounds[1:], strict=False)]
    for interval, step in (("1s", 1000), ("1m", 60_000), ("12h", 43_200_000)):
        got = candles_from_agg_trade_parts(iter(parts), interval)
        want = _textbook(rows, step)
        opens = got.column("candle_begin_time").cast(pa.int64()).to_pylist()
        assert opens == sorted(want), interval
        for i, b in enumerate(opens):
            for name, value in want[b].items():
                assert got.column(name)[i].as_py() == pytest.approx(value, rel=1e-12), (b, name)
    with pytest.raises(ValueError, match="sorted"):
        candles_from_agg_trade_parts([table.slice(2000), table.slice(0, 10)], "1s")
    assert candles_from_agg_trade_parts([], "1m").num_rows == 0


def test_run_agg_klines_reads_a_day_one_row_group_at_a_time(tmp_path):
    # A day of 1 M aggregate trades (~41 MB as Arrow columns) in row groups of 20,000 rows
    # (the parser writes one per 8 MB of CSV). Building its 1s candles keeps the process's
    # Arrow memory to a small part of the day (before 2026-12-06 it read the whole day:
    # 20 M trades took 1.8 GB of RSS, 40 M 3.4 GB, over the rule's 2 GB).
    import json
    import subprocess
    import sys

    import numpy as np
    import pyarrow.parquet as pq

    from crypto_lakehouse import layout

    n, day_ms = 1_000_000, 1709251200000  # 2024-03-01
    ids = np.arange(n, dtype=np.int64)
    table = pa.table({
        "agg_trade_id": ids,
        "price": 60000 + (ids % 997) * 0.1,
        "quantity": np.full(n, 0.5),
        "first_trade_id": ids * 2,
        "last_trade_id": ids * 2 + 1,
        "transact_time": pa.array(day_ms + ids * 80, pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
        "is_buyer_maker": ids % 2 == 0,
    })  # fmt: skip
    path = layout.parsed_day_path(tmp_path, "um_futures", "aggTrades", "BTCUSDT", "20240301")
    path.parent.mkdir(parents=True)
    pq.write_table(table, path, row_group_size=20_000)
    report = tmp_path / "parse.json"
    report.write_text(json.dumps({"files": {"k": {"days": {"20240301": n}}}}))
    code = (
        "import sys, pyarrow as pa\n"
        "from crypto_lakehouse.generate.agg_candles import run_agg_klines\n"
        "out = run_agg_klines(trade_type='um_futures', symbol='BTCUSDT', interval='1s',\n"
        "    data_dir=sys.argv[1], parse_report=sys.argv[2], report_path=sys.argv[3])\n"
        "print(out['candles_written'], pa.default_memory_pool().max_memory())\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path), str(report), str(tmp_path / "out.json")],
        capture_output=True, text=True, check=True, cwd=Path(__file__).parents[2],
    )  # fmt: skip
    candles, peak = map(int, run.stdout.split())
    assert candles == n * 80 // 1000  # one trade every 80 ms: 80,000 seconds with trades
    assert peak < table.nbytes / 5, (peak, table.nbytes)
    got = pq.read_table(layout.agg_klines_day_path(tmp_path, "um_futures", "BTCUSDT", "1s",
                                                   "20240301"))  # fmt: skip
    # Second 0 holds trades 0..12 (times 0, 80, ..., 960 ms): 13 trades of 2 fills each.
    first = got.slice(0, 1).to_pylist()[0]
    assert (first["trade_num"], first["volume"]) == (26, 6.5)
    assert first["open"] == 60000.0 and first["close"] == pytest.approx(60001.2)


def test_unsorted_trades_are_refused():
    table, _ = _trades_from_csv(agg_trades_csv("um_futures", "2024-03-01", 10, seed=5).decode())
    with pytest.raises(ValueError, match="sorted"):
        candles_from_agg_trades(table.take([9, 0, 1, 2, 3, 4, 5, 6, 7, 8]), "1s")


def _parsed_days(tmp_path, n_trades: int, days) -> tuple:
    """The same ``n_trades`` aggTrades written as the parsed day file of each of ``days``,
    a parse report listing them, and run_agg_klines' arguments (1h candles).
    Returns (trades table, their CSV rows, parse report path, arguments)."""
    import json

    import pyarrow.parquet as pq

    from crypto_lakehouse import layout

    csv = agg_trades_csv("um_futures", "2024-03-01", n_trades, seed=5).decode()
    table, rows = _trades_from_csv(csv)
    for day in days:
        path = layout.parsed_day_path(tmp_path, "um_futures", "aggTrades", "BTCUSDT", day)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
    report = tmp_path / "parse.json"
    report.write_text(json.dumps({"files": {"k": {"days": {d: n_trades for d in days}}}}))
    args = dict(trade_type="um_futures", symbol="BTCUSDT", interval="1h", data_dir=tmp_path,
                parse_report=report, report_path=tmp_path / "out.json")  # fmt: skip
    return table, rows, report, args


def test_run_agg_klines_rebuilds_only_changed_days(tmp_path):
    import pyarrow.parquet as pq

    from crypto_lakehouse import layout
    from crypto_lakehouse.generate.agg_candles import run_agg_klines

    days = ("20240301", "20240302")
    table, rows, _, args = _parsed_days(tmp_path, 200, days)
    first = run_agg_klines(**args)
    assert first["days_rebuilt"] == 2
    assert first["candles_written"] == 2 * len(_textbook(rows, 3_600_000))
    assert run_agg_klines(**args)["days_rebuilt"] == 0
    # A re-parsed day (new file) is rebuilt; a deleted output too.
    pq.write_table(table.slice(0, 10), layout.parsed_day_path(
        tmp_path, "um_futures", "aggTrades", "BTCUSDT", days[0]))  # fmt: skip
    layout.agg_klines_day_path(tmp_path, "um_futures", "BTCUSDT", "1h", days[1]).unlink()
    assert run_agg_klines(**args)["days_rebuilt"] == 2
    # A parsed day damaged or lost outside a run: the parse's to rebuild (shards.DamagedInput)
    from crypto_lakehouse.shards import DamagedInput

    parsed = layout.parsed_day_path(tmp_path, "um_futures", "aggTrades", "BTCUSDT", days[1])
    parsed.write_bytes(parsed.read_bytes()[:100])
    with pytest.raises(DamagedInput) as info:
        run_agg_klines(**args)
    assert info.value.stage == "aws_parse" and info.value.path == str(parsed)
    assert not info.value.missing
    parsed.unlink()
    with pytest.raises(DamagedInput) as info:
        run_agg_klines(**args)
    assert info.value.missing and str(info.value) == f"{parsed}, written by aws_parse, is missing"


def test_candles_of_a_day_the_parse_no_longer_has_are_removed(tmp_path):
    # A day whose aggTrades zip was re-published with a defect (quarantined, its day file
    # removed by the parse) leaves the parse report: a full build has no candles of it.
    # Before 2026-12-07 the candle file of the old trades stayed.
    import json

    from crypto_lakehouse import layout
    from crypto_lakehouse.generate.agg_candles import run_agg_klines

    days = ("20240301", "20240302")
    _, _, report, args = _parsed_days(tmp_path, 50, days)
    run_agg_klines(**args)
    candles = [layout.agg_klines_day_path(tmp_path, "um_futures", "BTCUSDT", "1h", d) for d in days]
    assert all(c.exists() for c in candles)
    layout.parsed_day_path(tmp_path, "um_futures", "aggTrades", "BTCUSDT", days[0]).unlink()
    report.write_text(json.dumps({"files": {"k2": {"days": {days[1]: 50}}}}))
    out = run_agg_klines(**args)
    assert list(out["days"]) == [days[1]]
    assert not candles[0].exists() and candles[1].exists()


def test_run_agg_klines_refuses_cm(tmp_path):
    from crypto_lakehouse.generate.agg_candles import run_agg_klines

    with pytest.raises(ValueError, match="cm_futures"):
        run_agg_klines(trade_type="cm_futures", symbol="X", interval="1m", data_dir=tmp_path,
                       parse_report=tmp_path / "r.json", report_path=tmp_path / "o.json")  # fmt: skip
