"""Day after day, as a cron job runs the pipeline: each morning the archive holds the days up
to the day before yesterday (Binance publishes a day's zip during the next day), REST fills
yesterday, and the shipped ``lookback_days: 30`` moves the window. On the 2nd of the month
last month's funding archive appears and covers events REST gave before.

Every daily update must leave the files a fresh build of the same archive gives, byte for
byte, while taking the tail path (gen_kline keeps its first row group, resample and the 1m
features extend their files): the unit tests check each stage's tail alone
(test_generate_tail, test_resample, test_features_tail); this checks them chained by the
workflow, through the REST day that the archive later replaces (docs/provenance.md).
"""

from __future__ import annotations

import json
import os
from datetime import date, timedelta
from pathlib import Path

import pytest
from crypto_lakehouse_emulator import Emulator
from crypto_lakehouse_emulator.generate import write_funding_month, write_kline_day

from tests.e2e.e2e_helpers import emulator_config, morning_rest, snakemake

pytestmark = pytest.mark.e2e

SYMBOLS = {"spot": ["BTCUSDT"], "um_futures": ["BTCUSDT"]}
# 95 archived days at the first run: 136,800 candles, more than one row group (2^17) of the
# 1m file, so a tail build keeps the first group.
FIRST = date(2023, 10, 28)
RUN_DAYS = [date(2024, 1, 31), date(2024, 2, 1), date(2024, 2, 2)]
FUNDING_MONTHS = ["2023-11", "2023-12", "2024-01"]
ARCHIVE_LAG_DAYS = 2  # a day's zip is listed from the morning of the day after next


def _archive(root: Path) -> dict[str, date]:
    """Every zip of the scenario written under ``root``: key -> first day it is listed."""
    listed_from: dict[str, date] = {}
    for trade_type, symbols in SYMBOLS.items():
        for symbol in symbols:
            day = FIRST
            while day < RUN_DAYS[-1]:
                key = write_kline_day(root, trade_type, symbol, "1m", day, seed=11)
                listed_from[key] = day + timedelta(days=ARCHIVE_LAG_DAYS)
                day += timedelta(days=1)
            if trade_type != "spot":
                for month in FUNDING_MONTHS:
                    key = write_funding_month(root, trade_type, symbol, month, seed=11)
                    y, m = map(int, month.split("-"))
                    listed_from[key] = date(y + m // 12, m % 12 + 1, 2)
    return listed_from


def _archive_on(full: Path, listed_from: dict[str, date], day: date, root: Path) -> Path:
    """The archive as listed on the morning of ``day`` (hard links into ``full``)."""
    for key, first_listed in listed_from.items():
        if first_listed <= day:
            for name in (key, key + ".CHECKSUM"):
                (root / name).parent.mkdir(parents=True, exist_ok=True)
                os.link(full / name, root / name)
    return root


def _emulator(archive: Path, full: Path, day: date) -> Emulator:
    """The archive of ``day`` and REST at 01:00 that day. REST klines come from the
    emulator's synthetic source, so a REST day and the archive's zip of it differ (a stale
    REST day would show); REST funding answers archived months with the archive's events,
    as Binance does."""
    rest = morning_rest(SYMBOLS, FIRST, day, full)
    emu = Emulator(mirror_dir=archive, rest=rest)
    emu.start()
    return emu


def _run(workdir: Path, base_url: str, day: date, lookback_days: int | None) -> None:
    workdir.mkdir(exist_ok=True)
    config = emulator_config(
        base_url,
        workdir / "data",
        trade_types=list(SYMBOLS),
        symbols=SYMBOLS,
        end_date=day.isoformat(),
        lookback_days=lookback_days,
    )
    snakemake(workdir, config, "all")


def _files(data: Path) -> dict[str, bytes]:
    """Every Parquet file of the data layout (not the run's records) by its bytes."""
    return {
        p.relative_to(data).as_posix(): p.read_bytes()
        for p in data.rglob("*.pqt")
        if p.relative_to(data).parts[0] != "lakehouse"
    }


def _stats(data: Path, stage: str, trade_type: str, symbol: str) -> dict:
    path = data / "lakehouse" / "stats" / stage / trade_type / "klines-1m" / f"{symbol}.json"
    return json.loads(path.read_text())


def test_daily_updates_equal_fresh_builds_and_take_the_tail_path(tmp_path):
    full = tmp_path / "archive"
    listed_from = _archive(full)
    rolling = tmp_path / "rolling"
    for n, day in enumerate(RUN_DAYS):
        emu = _emulator(_archive_on(full, listed_from, day, tmp_path / f"archive-{day}"), full, day)
        try:
            # The first run builds the whole history; then the shipped window.
            _run(rolling, emu.base_url, day, None if n == 0 else 30)
            if n == 0:
                continue
            fresh = tmp_path / f"fresh-{day}"
            _run(fresh, emu.base_url, day, None)
        finally:
            emu.stop()
        data = rolling / "data"
        for trade_type, symbols in SYMBOLS.items():
            for symbol in symbols:
                gen = _stats(data, "gen_kline", trade_type, symbol)["incremental"]
                # The day REST gave yesterday is now archived: the tail starts there.
                assert gen["mode"] == "tail" and gen["row_groups_kept"] == 1, gen
                assert gen["from"] == f"{day - timedelta(days=ARCHIVE_LAG_DAYS)}T00:00:00Z", gen
                resample = _stats(data, "resample", trade_type, symbol)["segments_by_mode"]
                assert resample["tail"] == 1, resample
                features = _stats(data, "features", trade_type, symbol)["files_by_mode"]
                assert features["tail"] >= 1, features  # the 1m file; resampled ones are short
        ours, theirs = _files(data), _files(fresh / "data")
        # REST funding events stay once fetched; the archive's month now covers them in a
        # fresh build, which never fetches them (both sources agree: equal results below).
        rest_funding = {k for k in ours.keys() | theirs.keys() if "/funding_rate/" in k}
        assert rest_funding and all(k.startswith("api_data/") for k in rest_funding)
        assert sorted(ours.keys() - rest_funding) == sorted(theirs.keys() - rest_funding)
        assert any(k.startswith("api_data/spot/") for k in ours), "REST filled no day"
        different = [k for k in ours.keys() - rest_funding if ours[k] != theirs[k]]
        assert different == [], f"{day}: {different}"
