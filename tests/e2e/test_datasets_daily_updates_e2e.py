"""Daily updates of the `datasets` target end as a fresh full build to the same end date
(docs/datasets.md): um_futures aggTrades, trades, markPriceKlines and metrics with
`agg_klines`, `download.use_monthly_klines` on, two symbols, one of them delisted mid-range.

Three mornings, `end_date` moving with the archive; on the way a day first missing then
published, a zip re-published with other content, a zip re-published with a defect
(quarantined) and, on the last morning, the monthly zips of January published after its
daily zips, with other content than them (so a day taken from the wrong file shows). Every
file under parsed_data/ (agg_klines included) must then hold what a full build of the last
morning's archive writes.
"""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from crypto_lakehouse_emulator.ticks import _price_kline_csv as price_kline_csv
from crypto_lakehouse_emulator.ticks import (
    _write,
    agg_trades_csv,
    price_kline_frame,
    write_daily_agg_trades,
    write_daily_metrics,
    write_daily_price_klines,
    write_daily_trades,
    write_monthly_of_days,
)

from crypto_lakehouse import layout
from tests.e2e.e2e_helpers import emulator_config, snakemake

pytestmark = pytest.mark.e2e

TT = "um_futures"
SEEDS = {"BTCUSDT": 1, "ETHUSDT": 2}
ETH_LAST = "2024-01-30"  # delisted: no file after this day
MORNINGS = {  # end_date -> the days the archive holds that morning
    "2024-01-29": ["2024-01-28", "2024-01-29"],
    "2024-01-30": ["2024-01-28", "2024-01-29", "2024-01-30"],
    "2024-02-01": ["2024-01-28", "2024-01-29", "2024-01-30", "2024-01-31", "2024-02-01"],
}
JANUARY = ["2024-01-28", "2024-01-29", "2024-01-30", "2024-01-31"]


def _bad(body: bytes) -> bytes:
    """The same file with its 3rd data row's price unreadable (a parse defect)."""
    lines = body.split(b"\n")
    cells = lines[3].split(b",")
    cells[1] = b"abc"
    lines[3] = b",".join(cells)
    return b"\n".join(lines)


def _publish(mirror, morning: int, days: list[str]) -> None:
    """What is new or changed in the archive on ``morning`` (0, 1, 2); unchanged files are
    not written again (their listing entry stays)."""
    for symbol, seed in SEEDS.items():
        for day in days:
            if symbol == "ETHUSDT" and day > ETH_LAST:
                continue
            new_day = morning == 0 or day == days[-1]
            late = symbol == "BTCUSDT" and day == "2024-01-29"  # aggTrades missing at first
            if new_day and not late:
                write_daily_agg_trades(mirror, TT, symbol, day, 200, seed=seed)
            if new_day:
                write_daily_trades(mirror, TT, symbol, day, 150, seed=seed)
                write_daily_price_klines(mirror, TT, "markPriceKlines", symbol, "1m", day, seed)
                write_daily_metrics(mirror, TT, symbol, day, seed=seed)
        if morning == 1 and symbol == "BTCUSDT":
            write_daily_agg_trades(mirror, TT, symbol, "2024-01-29", 200, seed=seed)  # late
            write_daily_trades(mirror, TT, symbol, "2024-01-28", 150, seed=77)  # re-published
        if morning == 1 and symbol == "ETHUSDT":  # re-published with a defect
            key = layout.archive_key(TT, "aggTrades", symbol, None, "daily", "2024-01-28")
            _write(mirror, TT, key, "2024-01-28", _bad(agg_trades_csv(TT, "2024-01-28", 200)))
        if morning == 2:  # January's monthly zips, after its daily ones, other content
            month_days = [d for d in JANUARY if symbol == "BTCUSDT" or d <= ETH_LAST]
            if symbol == "BTCUSDT":  # (none for ETHUSDT: its defective day stays so)
                bodies = [agg_trades_csv(TT, d, 100, seed=seed + 50) for d in month_days]
                write_monthly_of_days(mirror, TT, "aggTrades", symbol, "2024-01", bodies)
            bodies = [
                price_kline_csv(price_kline_frame("markPriceKlines", symbol, "1m", d, seed=9),
                                "markPriceKlines")
                for d in month_days
            ]  # fmt: skip
            write_monthly_of_days(mirror, TT, "markPriceKlines", symbol, "2024-01", bodies, "1m")


def _config(base_url, data, end_date):
    return emulator_config(
        base_url, data, interval="1m", start_date="2024-01-01", end_date=end_date,
        trade_types=[TT], symbols={TT: list(SEEDS)},
        datasets={TT: ["klines", "aggTrades", "trades", "markPriceKlines", "metrics"]},
        agg_klines={"intervals": ["1h"]}, download={"use_monthly_klines": True},
    )  # fmt: skip


def _tables(data) -> dict:
    root = data / "parsed_data"
    out = {}
    for path in sorted(root.rglob("*.pqt")):
        table = pq.read_table(path)
        out[path.relative_to(root).as_posix()] = (table.schema.remove_metadata(), table.to_pydict())
    return out


def test_daily_updates_of_the_datasets_equal_a_full_build(tmp_path, emulator):
    mirror = tmp_path / "mirror"
    updated = tmp_path / "updated"
    updated.mkdir()
    for morning, (end_date, days) in enumerate(MORNINGS.items()):
        _publish(mirror, morning, days)
        emu = emulator(mirror_dir=mirror)
        snakemake(updated, _config(emu.base_url, updated / "data", end_date), "datasets")
    full = tmp_path / "full"
    full.mkdir()
    emu = emulator(mirror_dir=mirror)
    snakemake(full, _config(emu.base_url, full / "data", end_date), "datasets")

    got, want = _tables(updated / "data"), _tables(full / "data")
    assert sorted(got) == sorted(want)
    assert [name for name in want if got[name] != want[name]] == []
    # The scenario did what it says: January's days come from the monthly zips (100 rows a
    # day, the daily zips have 200), the delisted symbol stops, the defect is quarantined.
    day = lambda symbol, d: layout.parsed_day_path(  # noqa: E731
        full / "data", TT, "aggTrades", symbol, d
    )
    assert pq.read_metadata(day("BTCUSDT", "20240128")).num_rows == 100
    assert pq.read_metadata(day("BTCUSDT", "20240201")).num_rows == 200
    assert not day("ETHUSDT", "20240131").exists()
    assert "ETHUSDT/1h/20240130.pqt" in {k.split("agg_klines/")[-1] for k in want}
    assert not day("ETHUSDT", "20240128").exists()  # its zip re-published with a defect
    quarantined = layout.quarantine_dir(updated / "data")
    assert list(quarantined.rglob("ETHUSDT-aggTrades-2024-01-28.zip.reason"))
