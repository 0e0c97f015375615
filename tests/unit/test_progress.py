"""crypto_lakehouse.progress: the lines, their pace and the ETA (driven by a fake clock)."""

from __future__ import annotations

import logging
import math

import pytest

from crypto_lakehouse.progress import Progress, format_duration


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return Clock()


def test_line_with_bytes_uses_the_byte_rate_for_the_eta(clock):
    p = Progress("aws_download spot", 666, total_bytes=146_000_000, clock=clock)
    clock.now += 10
    p.add(120, 40_000_000)
    # 40 MB in 10 s: 4 MB/s; 106 MB left: 26.5 s.
    assert p.eta_seconds() == pytest.approx(26.5)
    assert p.line() == "aws_download spot: 120/666 files, 40.0/146.0 MB, 4.0 MB/s, ETA 26 s"


def test_line_without_bytes_uses_units(clock):
    p = Progress("api_download um BTCUSDT", 90, unit="days", clock=clock)
    clock.now += 60
    p.add(30)
    assert p.line() == "api_download um BTCUSDT: 30/90 days, 0.5 days/s, ETA 2 min 00 s"


def test_a_status_is_added_while_it_has_something_to_say(clock):
    """e.g. a REST job waiting on the host's weight budget: its days and ETA stand still."""
    waiting = ["waiting on the host's rate limit, next request in 38 s"]
    p = Progress("api_download um BTCUSDT", 90, unit="days", clock=clock, status=lambda: waiting[0])
    clock.now += 60
    p.add(30)
    assert p.line() == (
        "api_download um BTCUSDT: 30/90 days, 0.5 days/s, ETA 2 min 00 s, "
        "waiting on the host's rate limit, next request in 38 s"
    )
    waiting[0] = None
    assert p.line() == "api_download um BTCUSDT: 30/90 days, 0.5 days/s, ETA 2 min 00 s"


def test_eta_unknown_before_progress_and_zero_when_done(clock):
    p = Progress("x", 3, clock=clock)
    assert math.isinf(p.eta_seconds()) and p.line().endswith("ETA unknown")
    clock.now += 1
    p.add(3)
    assert p.eta_seconds() == 0.0


def test_lines_are_paced_and_plain(clock, caplog):
    logger = logging.getLogger("test_progress")
    p = Progress("job", 100, every_s=5.0, logger=logger, clock=clock)
    with caplog.at_level(logging.INFO, logger="test_progress"):
        for _ in range(20):  # one unit per second for 20 s
            clock.now += 1
            p.add(1)
            p.maybe_log()
        p.finish()
    lines = [r.getMessage() for r in caplog.records]
    assert [line.split(",")[0] for line in lines] == [
        "job: 5/100 files", "job: 10/100 files", "job: 15/100 files", "job: 20/100 files",
        "job: 20/100 files",  # finish: the closing line
    ]  # fmt: skip
    assert all(c.isprintable() for line in lines for c in line)


def test_finish_is_silent_for_short_work(clock, caplog):
    logger = logging.getLogger("test_progress_short")
    p = Progress("job", 2, logger=logger, clock=clock)
    with caplog.at_level(logging.INFO, logger="test_progress_short"):
        p.add(2)
        p.maybe_log()
        p.finish()
    assert caplog.records == []


@pytest.mark.parametrize(
    "seconds, text",
    [(0.4, "0 s"), (59.6, "1 min 00 s"), (185, "3 min 05 s"), (7620, "2 h 07 min")],
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text
