"""aggTrades → candles, against a textbook per-row loop over the same trades."""

import pyarrow as pa
import pytest
from crypto_lakehouse_emulator.ticks import agg_trades_csv

from crypto_lakehouse.generate.agg_candles import candles_from_agg_trades
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


def test_unsorted_trades_are_refused():
    table, _ = _trades_from_csv(agg_trades_csv("um_futures", "2024-03-01", 10, seed=5).decode())
    with pytest.raises(ValueError, match="sorted"):
        candles_from_agg_trades(table.take([9, 0, 1, 2, 3, 4, 5, 6, 7, 8]), "1s")


def test_run_agg_klines_rebuilds_only_changed_days(tmp_path):
    import json

    import pyarrow.parquet as pq

    from crypto_lakehouse import layout
    from crypto_lakehouse.generate.agg_candles import run_agg_klines

    table, rows = _trades_from_csv(agg_trades_csv("um_futures", "2024-03-01", 200, seed=5).decode())
    days = ("20240301", "20240302")
    for day in days:
        path = layout.parsed_day_path(tmp_path, "um_futures", "aggTrades", "BTCUSDT", day)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
    report = tmp_path / "parse.json"
    report.write_text(json.dumps({"files": {"k": {"days": {d: 200 for d in days}}}}))
    args = dict(trade_type="um_futures", symbol="BTCUSDT", interval="1h", data_dir=tmp_path,
                parse_report=report, report_path=tmp_path / "out.json")  # fmt: skip
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


def test_run_agg_klines_refuses_cm(tmp_path):
    from crypto_lakehouse.generate.agg_candles import run_agg_klines

    with pytest.raises(ValueError, match="cm_futures"):
        run_agg_klines(trade_type="cm_futures", symbol="X", interval="1m", data_dir=tmp_path,
                       parse_report=tmp_path / "r.json", report_path=tmp_path / "o.json")  # fmt: skip
