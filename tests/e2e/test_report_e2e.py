"""`snakemake all` (with the report) against the emulator: coverage.parquet says what the
emulator served, and the page renders in a real browser (headless Chromium).

Scenario: spot BTCUSDT at 1m, 2024-03-01 .. end_date 2024-03-21.

- the archive has 03-01 .. 03-08 and 03-14 .. 03-17, except 03-04 (absent: REST has it);
  03-06 is short (440 minutes absent: REST has the whole day); 03-15 lacks 60 minutes that
  REST lacks too (exchange downtime: gen_kline fills them); 03-16 starts with 30
  zero-volume candles (served candles: archive minutes, not filled);
- 03-09 .. 03-13: nothing anywhere (delisted, relisted on 03-14 at another price): gen_kline
  splits the symbol there;
- 03-18 .. 03-20: REST only (the archive has not published them); 03-21: REST answers empty.

The expected coverage below is computed from this description, minute by minute with sets.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import struct
from datetime import date, timedelta

import pandas as pd
import pyarrow.parquet as pq
import pytest
from crypto_lakehouse_emulator.generate import kline_frame, write_kline_day
from crypto_lakehouse_emulator.rest import RestEmulator

from tests.e2e.e2e_helpers import emulator_config, snakemake

pytestmark = pytest.mark.e2e

SYMBOL = "BTCUSDT"
FIRST, END = date(2024, 3, 1), date(2024, 3, 21)
ARCHIVE_DAYS = [FIRST + timedelta(days=k) for k in range(8)] + [
    date(2024, 3, 14) + timedelta(days=k) for k in range(4)
]
ARCHIVE_DAYS.remove(date(2024, 3, 4))
GAP = [date(2024, 3, 9) + timedelta(days=k) for k in range(5)]
REST_DAYS = [FIRST + timedelta(days=k) for k in range(8)] + [
    date(2024, 3, 14) + timedelta(days=k) for k in range(7)
]
SHORT_DAY, SHORT_MINUTES = date(2024, 3, 6), set(range(500, 940))
DOWN_DAY, DOWN_MINUTES = date(2024, 3, 15), set(range(100, 160))
IDLE_DAY, IDLE_MINUTES = date(2024, 3, 16), list(range(30))
SECTIONS = ("1. Coverage", "2. Quality", "3. Freshness", "4. The run", "5. Checks")


def _frame_opts(d: date, for_rest: bool) -> dict:
    opts: dict = {"zero_volume": IDLE_MINUTES if d == IDLE_DAY else []}
    if d == SHORT_DAY and not for_rest:
        opts["missing"] = sorted(SHORT_MINUTES)
    if d == DOWN_DAY:
        opts["missing"] = sorted(DOWN_MINUTES)
    return opts


@pytest.fixture(scope="module")
def report_run(tmp_path_factory):
    from crypto_lakehouse_emulator import Emulator

    tmp = tmp_path_factory.mktemp("report")
    for d in ARCHIVE_DAYS:
        write_kline_day(tmp / "mirror", "spot", SYMBOL, "1m", d, **_frame_opts(d, False))
    rest = RestEmulator(
        now_ms=int(pd.Timestamp(END + timedelta(days=1), tz="UTC").value // 10**6) + 3_600_000,
        window_s=5.0,
    )
    served = pd.concat(
        [kline_frame("spot", SYMBOL, "1m", d, **_frame_opts(d, True)) for d in REST_DAYS]
    )
    rest.add_klines("spot", SYMBOL, served)
    with Emulator(mirror_dir=tmp / "mirror", rest=rest) as emu:
        config = emulator_config(
            emu.base_url,
            tmp / "data",
            interval="1m",
            trade_types=["spot"],
            symbols={"spot": [SYMBOL]},
            start_date=None,
            end_date=END.isoformat(),
            report={"stale_after_hours": 12},
        )
        snakemake(tmp, config, "all")
    # Snakemake's own report embeds the page and the figures (marked with report(...)).
    smk_report = snakemake(tmp, config, "--report", str(tmp / "snakemake-report.html"))
    return tmp / "data", smk_report.stdout + smk_report.stderr


def expected_coverage() -> pd.DataFrame:
    """Minute sets per day from the scenario: archive A, REST R, segments, gap."""
    minutes = set(range(1440))
    rows = []
    d = FIRST
    while d <= END:
        archive = set()
        if d in ARCHIVE_DAYS:
            archive = minutes - (SHORT_MINUTES if d == SHORT_DAY else set())
            archive -= DOWN_MINUTES if d == DOWN_DAY else set()
        rest = set()
        if d in REST_DAYS:
            rest = minutes - (DOWN_MINUTES if d == DOWN_DAY else set())
        served = archive | rest
        in_segment = minutes if (d in ARCHIVE_DAYS or d in REST_DAYS) else set()
        filled = in_segment - served
        life = set() if d in GAP else minutes
        rows.append(
            {
                "day": d,
                "minutes_archive": len(archive),
                "minutes_rest": len(rest - archive),
                "minutes_filled": len(filled),
                "minutes_missing": len(life - served - filled),
                "minutes_pending": 0,  # every day of 2024 is over when the report runs
                "in_gap": d in GAP,
            }
        )
        d += timedelta(days=1)
    return pd.DataFrame(rows)


def test_coverage_is_what_the_emulator_served(report_run):
    data, _ = report_run
    got = pq.read_table(data / "lakehouse/report/coverage.parquet").to_pandas()
    assert set(got["trade_type"]) == {"spot"} and set(got["symbol"]) == {SYMBOL}
    got = got.drop(columns=["trade_type", "symbol"]).reset_index(drop=True)
    expected = expected_coverage()
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)
    # the cases, spelled out
    by_day = got.set_index("day")
    assert by_day.loc[date(2024, 3, 4), "minutes_rest"] == 1440  # absent from the archive
    assert (by_day.loc[SHORT_DAY, ["minutes_archive", "minutes_rest"]] == [1000, 440]).all()
    assert by_day.loc[GAP, "in_gap"].all() and (by_day.loc[GAP, "minutes_missing"] == 0).all()
    assert (by_day.loc[date(2024, 3, 18) : date(2024, 3, 20), "minutes_rest"] == 1440).all()


def test_page_is_self_contained(report_run):
    data, _ = report_run
    html = (data / "lakehouse/report/index.html").read_text()
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in html
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # nothing from the network
    assert "<script" not in html
    assert SYMBOL in html.split("Stale symbols")[1]  # lag 1440 min > 12 h
    figures = sorted(p.name for p in (data / "lakehouse/report/figures").glob("*.png"))
    assert figures == ["coverage_spot.png", "freshness.png", "quality_scores.png", "stages.png"]


def test_snakemake_report_includes_the_page_and_figures(report_run):
    data, log = report_run
    for name in ("index.html", "coverage_spot.png", "freshness.png", "stages.png"):
        assert f"Adding {name}" in log
    assert (data.parent / "snakemake-report.html").stat().st_size > 0


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from the PNG header (IHDR), as the file itself declares them."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


# CI installs Debian's chromium (.ci/install-debian-packages): there the test never skips.
@pytest.mark.skipif(
    shutil.which("chromium") is None and not os.environ.get("CI"),
    reason="Debian's chromium not installed (apt-get install chromium)",
)
def test_page_in_headless_chromium(report_run, tmp_path):
    from tests.e2e.browser import open_page

    data, _ = report_run
    index = data / "lakehouse/report/index.html"
    html = index.read_text()
    declared = [
        png_size(base64.b64decode(m))
        for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    ]
    assert len(declared) == 4
    shot = tmp_path / "report.png"
    result = open_page(index, shot)
    assert result.errors == []
    assert [h for h in result.headings if h in SECTIONS] == list(SECTIONS)
    assert [(i["naturalWidth"], i["naturalHeight"]) for i in result.images] == declared
    assert all(i["complete"] and i["decoded"] for i in result.images)
    assert png_size(shot.read_bytes())[0] > 0
    keep = data.parent / "report-screenshot.png"  # for a human look after the run
    shutil.copy(shot, keep)


def test_slowest_jobs_are_this_runs(report_run):
    # The rule passes the run's start (started_unix): the table is this run's jobs, each
    # with the time it ended. Without it, the heading would not say "of this run".
    data, _ = report_run
    html = (data / "lakehouse" / "report" / "index.html").read_text()
    run = html[html.index('<section id="the-run">') :]
    run = run[: run.index("</section>")]
    slowest = run[run.index("slowest jobs of this run") :]
    jobs = re.findall(r"<tr><td[^>]*>([^<]*)</td>", slowest)
    assert any(job.startswith("gen_kline/") for job in jobs), jobs
    assert "ended (UTC)" in slowest
