"""Morning after morning with ``end_date`` unset, as the shipped config runs from cron: each
run plans as on its morning (``CRYPTO_LAKEHOUSE_TODAY``, docs/config.md "Dates"), the
archive publishes the previous day's zips (two days a day late, which REST fills first), a
month boundary is crossed, and last month's funding archive appears on the 2nd.

Each morning the run must go up to yesterday and say so (headline lag, report page), leave
the files a fresh build of the same archive gives, byte for byte (checked on the last
morning), and a second run the same morning must find nothing to do. test_daily_updates_e2e replays mornings
with an explicit ``end_date``; with it unset "today" used to be the machine's date, so no
test could replay successive mornings of the shipped config.
"""

from __future__ import annotations

import os
import re
from datetime import date, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from crypto_lakehouse_emulator import Emulator
from crypto_lakehouse_emulator.generate import write_funding_month, write_kline_day

from tests.e2e.e2e_helpers import emulator_config, morning_rest, snakemake

pytestmark = pytest.mark.e2e

SYMBOLS = {"spot": ["BTCUSDT"], "um_futures": ["BTCUSDT"]}
FIRST = date(2024, 1, 28)
MORNINGS = [date(2024, 1, 31), date(2024, 2, 1), date(2024, 2, 2)]
# Their zips are listed two mornings after them, not one: on the 31st REST fills the 30th,
# which the archive replaces on the 1st; on the 2nd no kline zip is new (REST fills the 1st).
LATE = {date(2024, 1, 30), date(2024, 2, 1)}
FUNDING_MONTH, FUNDING_LISTED = "2024-01", date(2024, 2, 2)


def _archive(root: Path) -> dict[str, date]:
    """Every zip of the scenario under ``root``: key -> the morning it is first listed."""
    listed_from: dict[str, date] = {}
    for trade_type, symbols in SYMBOLS.items():
        for symbol in symbols:
            day = FIRST
            while day < MORNINGS[-1]:
                key = write_kline_day(root, trade_type, symbol, "1m", day, seed=5)
                listed_from[key] = day + timedelta(days=2 if day in LATE else 1)
                day += timedelta(days=1)
            if trade_type != "spot":
                key = write_funding_month(root, trade_type, symbol, FUNDING_MONTH, seed=5)
                listed_from[key] = FUNDING_LISTED
    return listed_from


def _emulator(full: Path, listed_from: dict[str, date], day: date, root: Path) -> Emulator:
    """The archive as listed on the morning of ``day`` (hard links into ``full``) and REST
    at 01:00 that day, its klines from the emulator's synthetic source (a REST day differs
    from the zip published later, so a REST day left in place would show)."""
    for key, first_listed in listed_from.items():
        if first_listed <= day:
            for name in (key, key + ".CHECKSUM"):
                (root / name).parent.mkdir(parents=True, exist_ok=True)
                os.link(full / name, root / name)
    rest = morning_rest(SYMBOLS, FIRST, day, full)
    emu = Emulator(mirror_dir=root, rest=rest)
    emu.start()
    return emu


def _run(workdir: Path, base_url: str):
    workdir.mkdir(exist_ok=True)
    # The shipped shape: end_date unset, a start date (lookback_days would cut a fresh
    # build's downloads, not the rolling data dir's), default features and resampling.
    config = emulator_config(
        base_url,
        workdir / "data",
        trade_types=list(SYMBOLS),
        symbols=SYMBOLS,
        start_date=FIRST.isoformat(),
        end_date=None,
    )
    return snakemake(workdir, config, "all")


def _files(data: Path) -> dict[str, bytes]:
    return {
        p.relative_to(data).as_posix(): p.read_bytes()
        for p in data.rglob("*.pqt")
        if p.relative_to(data).parts[0] != "lakehouse"
    }


def test_mornings_with_end_date_unset(tmp_path, monkeypatch):
    full = tmp_path / "archive"
    listed_from = _archive(full)
    rolling = tmp_path / "rolling"
    for day in MORNINGS:
        monkeypatch.setenv("CRYPTO_LAKEHOUSE_TODAY", day.isoformat())
        emu = _emulator(full, listed_from, day, tmp_path / f"archive-{day}")
        try:
            out = _run(rolling, emu.base_url)
            again = _run(rolling, emu.base_url)
            fresh = None
            if day == MORNINGS[-1]:  # after the REST day replaced, the month crossed
                fresh = tmp_path / f"fresh-{day}"
                _run(fresh, emu.base_url)
        finally:
            emu.stop()
        text = out.stdout + out.stderr
        # Up to yesterday, whether the archive or REST gave it: one day behind today's end.
        for trade_type in SYMBOLS:
            headline = re.search(rf"api_download/{trade_type}: .*", text)
            assert headline and "freshness_lag_minutes_max=1440" in headline.group(0), text[-3000:]
        page = (rolling / "data" / "lakehouse" / "report" / "index.html").read_text()
        assert f"behind the end of end_date ({day})" in page
        assert re.search(r"Lagging more than 48 h \(0\)", re.sub(r"<[^>]+>", "", page))
        # Today has not ended for the run (REST fetches complete days only, the archive
        # publishes it tomorrow): pending for every symbol, not missing (it was 1440 missing
        # minutes of every symbol, each morning). The days before it are all served.
        coverage = pq.read_table(rolling / "data/lakehouse/report/coverage.parquet").to_pandas()
        today = coverage[coverage["day"] == day]
        assert len(today) == sum(len(s) for s in SYMBOLS.values())
        assert (today["minutes_pending"] == 1440).all() and (today["minutes_missing"] == 0).all()
        assert (
            coverage["minutes_missing"].sum() == 0
            and coverage["minutes_pending"].sum() == len(today) * 1440
        )
        assert "Nothing to be done" in again.stdout + again.stderr, again.stderr[-3000:]
        # No spot zip was new on the 2nd: the closing lines say that its download headline
        # is yesterday's (they printed it unmarked, as this run's).
        spot_download = re.search(r"aws_download/spot: .*", text).group(0)
        assert ("(not rerun: from an earlier run," in spot_download) == (day == MORNINGS[-1])
        assert "earlier run" not in re.search(r"api_download/spot: .*", text).group(0)
        if fresh is None:
            continue
        ours, theirs = _files(rolling / "data"), _files(fresh / "data")
        # REST funding events stay once fetched; the archive's month covers them in a fresh
        # build of the 2nd, which never fetches them (docs/provenance.md).
        rest_funding = {k for k in ours.keys() | theirs.keys() if "/funding_rate/" in k}
        assert all(k.startswith("api_data/") for k in rest_funding)
        assert sorted(ours.keys() - rest_funding) == sorted(theirs.keys() - rest_funding)
        different = [k for k in ours.keys() - rest_funding if ours[k] != theirs[k]]
        assert different == [], f"{day}: {different}"
