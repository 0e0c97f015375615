"""Weight limiter, request plan and client error mapping."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter

import pytest
import requests
from crypto_lakehouse_emulator.rest import RestEmulator

from crypto_lakehouse.rest import kline_weight
from crypto_lakehouse.rest.client import (
    InvalidSymbol,
    RateLimited,
    RestClient,
    RestError,
    TransientFailure,
)
from crypto_lakehouse.rest.klines import DAY_MS, check_interval, plan_chunks
from crypto_lakehouse.rest.limiter import HostStopped, WindowLimiter

D = 19_000


# ---------------------------------------------------------------- limiter
def test_budget_is_the_share_of_the_limit():
    assert WindowLimiter(2400, share=0.8).budget == 1920
    assert WindowLimiter(6000).budget == 4800
    with pytest.raises(ValueError):
        WindowLimiter(10, share=0)


def _align(lim):
    """Sleep to just after a window start, so the next steps happen inside one window."""
    now = time.time()
    time.sleep(lim.window_start(lim.window_of(now) + 1) - now + 0.01)


def test_waits_for_the_next_window_when_the_budget_is_used():
    lim = WindowLimiter(10, share=1.0, window_s=1.0, guard_s=0.02)
    _align(lim)
    first = lim.acquire(5)
    second = lim.acquire(5)
    assert first.window == second.window
    lim.release(first)
    lim.release(second)
    assert lim.acquire(1).window == first.window + 1
    assert time.time() >= lim.window_start(first.window + 1)


def test_server_header_fills_the_window_but_only_its_own():
    lim = WindowLimiter(10, share=1.0, window_s=1.0, guard_s=0.02)
    _align(lim)
    first = lim.acquire(1)
    lim.release(first)
    w = first.window
    lim.observe(w - 1, 10)  # a late answer to a request of the previous window: ignored
    second = lim.acquire(1)
    lim.release(second)
    assert second.window == w
    lim.observe(w, 10)  # the server counts 10 (other clients share the IP)
    assert lim.acquire(1).window == w + 1


class _Clock:
    def __init__(self, t):
        self.t = t

    def __call__(self):
        return self.t


def _limiter_at(t):
    """Budget 10 per 10 s window, guard 0.5 s; a clock the test moves by hand."""
    clock = _Clock(t)
    return WindowLimiter(10, share=1.0, window_s=10.0, guard_s=0.5, clock=clock), clock


def test_a_request_unanswered_at_the_boundary_counts_in_the_next_window():
    # The server counts a request when it arrives. 8 units reserved just before the
    # boundary and still travelling may land in the next window, so it admits only 2 more.
    lim, clock = _limiter_at(1009.9)
    late = lim.acquire(8)
    assert late.window == 100 and not late.in_guard
    clock.t = 1010.6  # past the guard time: window 101
    assert lim.acquire(2).window == 101
    assert lim.used == 10  # full: the next acquire would wait for window 102
    lim.release(late)
    assert lim.used == 10  # answered now, but it may have been counted in 101


def test_a_request_answered_after_the_boundary_counts_in_the_next_window():
    lim, clock = _limiter_at(1009.9)
    late = lim.acquire(8)
    clock.t = 1010.05  # answered after the wall boundary, inside the guard time
    lim.release(late)
    clock.t = 1010.6
    assert lim.acquire(2).window == 101
    assert lim.used == 10


def test_a_request_answered_before_the_boundary_frees_the_next_window():
    lim, clock = _limiter_at(1009.0)
    early = lim.acquire(8)
    clock.t = 1009.5
    lim.release(early)  # the server counted it in window 100
    clock.t = 1010.6
    assert lim.acquire(2).window == 101
    assert lim.used == 2


def test_a_request_sent_in_the_guard_time_counts_once_in_the_next_window():
    lim, clock = _limiter_at(1010.2)  # after the wall boundary, before window 101 begins
    guard = lim.acquire(3)
    assert guard.window == 100 and guard.in_guard
    lim.release(guard)
    clock.t = 1010.6
    lim.acquire(1)
    assert lim.used == 4


def _two_jobs_of_one_host(tmp_path, t):
    """Two limiters on one shared window file, as two REST jobs of one host (two processes:
    each limiter has its own descriptor, so the flock excludes them as it would)."""
    clock = _Clock(t)
    path = tmp_path / "rest_budget" / "um_futures.weight.json"
    make = dict(share=1.0, window_s=10.0, guard_s=0.5, clock=clock, shared_path=path)
    return WindowLimiter(10, **make), WindowLimiter(10, **make), clock


def test_jobs_of_one_host_reserve_from_one_window(tmp_path):
    a, b, clock = _two_jobs_of_one_host(tmp_path, 1001.0)
    sent = a.acquire(8)  # under way: no answer, no used-weight header yet
    assert b.used == 8
    b.acquire(2)
    assert a.is_full(sent.window) and b.is_full(sent.window)
    # a's request answered before the boundary, b's still under way at it: the next window
    # starts with b's 2 for both
    a.release(sent)
    clock.t = 1010.6
    assert a.acquire(8).window == 101
    assert b.used == 10


def test_a_429_pause_of_one_job_holds_the_others(tmp_path):
    a, b, clock = _two_jobs_of_one_host(tmp_path, 1001.0)
    a.pause_until(1001.5)
    waited = []
    worker = threading.Thread(target=lambda: waited.append(b.acquire(1)))
    worker.start()
    worker.join(0.2)
    assert worker.is_alive()  # b waits on a's pause
    clock.t = 1001.6
    worker.join(5)
    assert waited and waited[0].window == 100


def test_an_unreadable_shared_window_counts_as_empty(tmp_path):
    a, b, clock = _two_jobs_of_one_host(tmp_path, 1001.0)
    a.acquire(9)
    a._state.path.write_bytes(b'{"window": 100, "used": ')  # a process killed mid-write
    assert b.acquire(10).window == 100  # a fresh window: the whole budget
    assert a.used == 10
    a.close()
    b.close()


def test_stop_wakes_waiting_threads():
    lim = WindowLimiter(1, share=1.0, window_s=30)
    lim.acquire(1)
    errors = []

    def worker():
        try:
            lim.acquire(1)
        except HostStopped as exc:
            errors.append(str(exc))

    th = threading.Thread(target=worker)
    th.start()
    time.sleep(0.1)
    lim.stop("banned")
    th.join(2)
    assert errors == ["banned"]
    with pytest.raises(HostStopped):
        lim.acquire(0)


def test_blocked_for_says_how_long_the_blocked_threads_wait_and_only_while_they_do():
    """The progress line's "waiting on the rate limit" figure: None while nothing waits, the
    seconds to the next window while a request waits for one, None again once it is sent."""
    lim = WindowLimiter(1, share=1.0, window_s=30)
    lim.acquire(1)  # the window's whole budget
    assert lim.blocked_for() is None
    sent, stopped = [], []

    def send():
        # stop() ends the wait with HostStopped, the contract of acquire (as for a ban):
        # caught here, so the thread ends cleanly and the test sees why it ended.
        try:
            sent.append(lim.acquire(1))
        except HostStopped as exc:
            stopped.append(str(exc))

    th = threading.Thread(target=send, daemon=True)
    th.start()
    deadline = time.monotonic() + 5
    while lim.blocked_for() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    waiting = lim.blocked_for()
    to_next_window = lim.seconds_to_end(lim.window_of(time.time()))
    assert (
        waiting is not None
        and 0 < to_next_window
        and waiting == pytest.approx(to_next_window, abs=0.1)
    )
    lim.pause_until(0)  # wakes the thread, which waits again: still blocked
    time.sleep(0.05)
    assert lim.blocked_for() is not None
    lim.stop("test over")
    th.join(2)
    assert not th.is_alive() and sent == [] and lim.blocked_for() is None
    assert stopped == ["test over"]


def test_a_pause_counts_as_blocked_for_its_length():
    lim = WindowLimiter(100, window_s=60)
    lim.pause_for(0.6)
    th = threading.Thread(target=lambda: lim.acquire(1), daemon=True)
    th.start()
    time.sleep(0.1)
    waiting = lim.blocked_for()
    assert waiting is not None and 0.2 < waiting <= 0.6
    th.join(2)
    assert lim.blocked_for() is None


def test_pause_blocks_everyone():
    lim = WindowLimiter(100, window_s=60)
    lim.pause_for(0.3)
    t0 = time.monotonic()
    lim.acquire(1)
    assert time.monotonic() - t0 >= 0.28


def test_threads_never_exceed_the_budget_of_a_window():
    lim = WindowLimiter(10, share=1.0, window_s=0.1, guard_s=0.005)
    per_window = Counter()
    lock = threading.Lock()

    def worker():
        for _ in range(5):
            reserved = lim.acquire(3)
            lim.release(reserved)
            with lock:
                per_window[reserved.window] += 3

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert sum(per_window.values()) == 90
    assert max(per_window.values()) <= 9  # three requests of 3 fit into 10


# ---------------------------------------------------------------- plan
def _cover(chunk, ims):
    """The windows tile the chunk's days exactly, each within its limit."""
    start = chunk.first_day * DAY_MS
    for w in chunk.windows:
        assert w.start_ms == start
        assert (w.end_ms + 1 - w.start_ms) // ims == w.limit
        start = w.end_ms + 1
    assert start == (chunk.first_day + chunk.n_days) * DAY_MS


def test_futures_1m_day_is_three_requests_of_480():
    (chunk,) = plan_chunks("um_futures", "1m", [D])
    assert [(w.limit, w.weight) for w in chunk.windows] == [(480, 2)] * 3
    _cover(chunk, 60_000)


def test_spot_1m_pairs_of_days_use_960_candle_windows():
    chunks = plan_chunks("spot", "1m", [D, D + 1, D + 2])
    assert [c.n_days for c in chunks] == [2, 1]
    assert [w.limit for w in chunks[0].windows] == [960] * 3
    assert [w.limit for w in chunks[1].windows] == [720] * 2
    assert all(w.weight == 2 for c in chunks for w in c.windows)
    for c in chunks:
        _cover(c, 60_000)


def test_non_consecutive_days_are_separate_chunks():
    chunks = plan_chunks("cm_futures", "1m", [D + 5, D, D + 1, D + 5])
    assert [(c.first_day, c.n_days) for c in chunks] == [(D, 1), (D + 1, 1), (D + 5, 1)]


def test_futures_1h_groups_20_days_into_one_request():
    (chunk,) = plan_chunks("um_futures", "1h", range(D, D + 20))
    assert [(w.limit, w.weight) for w in chunk.windows] == [(480, 2)]
    (single,) = plan_chunks("um_futures", "1h", [D + 40])
    assert [(w.limit, w.weight) for w in single.windows] == [(24, 1)]


def test_cm_windows_stay_within_200_days():
    chunks = plan_chunks("cm_futures", "1d", range(D, D + 1000))
    for c in chunks:
        _cover(c, DAY_MS)
        for w in c.windows:
            assert w.end_ms - w.start_ms <= 200 * DAY_MS


@pytest.mark.parametrize("interval", ["7m", "1w", "2d"])
def test_intervals_that_do_not_tile_a_day_are_refused(interval):
    with pytest.raises(ValueError, match="does not divide a day"):
        check_interval(interval)


def test_weight_table():
    assert [kline_weight("um_futures", n) for n in (1, 99, 100, 499, 500, 1000, 1001)] == [
        1,
        1,
        2,
        2,
        5,
        5,
        10,
    ]
    assert {kline_weight("spot", n) for n in (1, 500, 1000)} == {2}


# ---------------------------------------------------------------- client errors
def test_client_maps_error_codes(emulator):
    rest = RestEmulator(now_ms=D * DAY_MS)
    rest.add_symbol("um", "AUSDT")
    emu = emulator(rest=rest)
    lim = WindowLimiter(2400)
    with RestClient(emu.base_url, "um_futures", weight_limiter=lim) as client:
        with pytest.raises(InvalidSymbol) as err:
            client.get_json("/klines", {"symbol": "NOPE", "interval": "1m"}, weight=5)
        assert err.value.code == -1121
        with pytest.raises(RestError) as err:
            client.get_json("/klines", {"symbol": "AUSDT", "interval": "1m", "limit": 5000})
        assert err.value.code == -1130 and not isinstance(err.value, InvalidSymbol)
        assert client.server_time_ms() == D * DAY_MS
        assert client.stats.requests == 3


def test_requests_in_the_guard_time_count_for_the_next_window_too():
    lim, clock = _limiter_at(1010.2)  # past the wall boundary, before window 101 begins
    guard = lim.acquire(6)
    lim.release(guard)
    assert guard.window == 100
    # the server already counts these 6 in the new window: only 4 more fit there
    clock.t = 1010.6
    assert lim.acquire(4).window == 101
    assert lim.used == lim.budget  # the next acquire waits for window 102


# ---------------------------------------------------------------- client: 429
def _into_a_window(window_s: float, seconds_in: float):
    """A limiter clock: the wall clock shifted so that it stands ``seconds_in`` after the
    start of a window now, whatever the time of day (the window's end is a known time away)."""
    guard = min(0.5, 0.05 * window_s)  # WindowLimiter's default guard time
    shift = 1000 * window_s + guard + seconds_in - time.time()
    return lambda: time.time() + shift


class _Answers:
    """A session double: answers the client's GETs with ``(status, headers)`` in turn."""

    def __init__(self, *answers):
        self.answers = list(answers)

    def get(self, url, params=None, timeout=None):
        status, headers = self.answers.pop(0)
        resp = requests.Response()
        resp.status_code = status
        resp.headers.update(headers)
        resp._content = b"[]"
        return resp

    def close(self):
        pass


def _client_answering(monkeypatch, answers, *, window_s, seconds_in, **kw):
    lim = WindowLimiter(2400, window_s=window_s, clock=_into_a_window(window_s, seconds_in))
    client = RestClient("http://127.0.0.1:9", "um_futures", weight_limiter=lim, **kw)
    session = _Answers(*answers)
    monkeypatch.setattr(client, "_session", lambda: session)
    return client, session


def _timed_get(client, caplog):
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="crypto_lakehouse.rest.client"):
        client.get_json("/klines", {"symbol": "AUSDT"}, weight=1)
    return time.monotonic() - t0


def test_429_with_retry_after_resumes_after_it_not_at_the_window_end(emulator, caplog):
    rest = RestEmulator(now_ms=D * DAY_MS)
    rest.add_symbol("um", "AUSDT")
    rest.inject(429, market="um", path="/klines", retry_after=1)
    emu = emulator(rest=rest)
    # 1 s into a 60 s window: waiting to the window's end (as before) would take 59 s.
    lim = WindowLimiter(2400, window_s=60.0, clock=_into_a_window(60.0, 1.0))
    with RestClient(emu.base_url, "um_futures", weight_limiter=lim) as client:
        t0 = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="crypto_lakehouse.rest.client"):
            client.get_json("/klines", {"symbol": "AUSDT", "interval": "1m", "limit": 5})
        elapsed = time.monotonic() - t0
        assert client.stats.http_429 == 1
    assert rest.counters("um")["requests/klines"] == 2  # the 429, then the same request again
    assert 0.9 <= elapsed < 20  # generous: the point is 1 s, not 59 s
    assert "HTTP 429, retry 1/5: every request to the host waits 1.0 s (Retry-After)" in caplog.text


def test_429_without_retry_after_waits_to_the_window_end(monkeypatch, caplog):
    # 0.5 s into a 2 s window whose guard time is 0.1 s: the window ends 1.5 s from now.
    client, session = _client_answering(
        monkeypatch, [(429, {}), (200, {})], window_s=2.0, seconds_in=0.5
    )
    elapsed = _timed_get(client, caplog)
    assert session.answers == []
    assert 1.3 <= elapsed < 10
    assert "waits 1.5 s (no Retry-After: to the end of the rate-limit window)" in caplog.text


def test_429_whose_used_weight_fills_the_window_waits_to_its_end(monkeypatch, caplog):
    # A genuine weight-limit 429: the answer reports the IP's whole limit used. A request
    # sent after Retry-After but inside the window would be refused again (and repeated
    # violations end in a 418 ban): the limiter holds every request to the window's end.
    used_up = {"Retry-After": "1", "X-MBX-USED-WEIGHT-1M": "2400"}
    client, session = _client_answering(
        monkeypatch, [(429, used_up), (200, {})], window_s=4.0, seconds_in=1.0
    )
    elapsed = _timed_get(client, caplog)
    assert session.answers == []
    assert 2.8 <= elapsed < 10  # the window ends 3 s from the 429, Retry-After said 1 s
    assert "waits 3.0 s (Retry-After 1 s; the window's weight is used up: to its end)" in (
        caplog.text
    )


def test_requests_given_up_on_429_in_a_row_stop_the_host(monkeypatch, caplog):
    """A 429 that outlasts a request's retries gives up that request (its symbol fails);
    the RATE_LIMITED_TO_STOP-th in a row, whatever the symbols, means the host limits the
    whole IP: every request to it stops at once (HostStopped, as for a ban), instead of
    each remaining symbol of the job waiting out its own retries."""
    from crypto_lakehouse.rest import client as rest_client

    assert rest_client.RATE_LIMITED_TO_STOP == 3
    limited = (429, {"Retry-After": "0"})
    client, session = _client_answering(
        monkeypatch, [limited] * 3 + [(200, {})], window_s=60.0, seconds_in=1.0, max_retries=0
    )
    with caplog.at_level(logging.ERROR, logger="crypto_lakehouse.rest.client"):
        for symbol in ("AUSDT", "BUSDT"):
            with pytest.raises(RateLimited):
                client.get_json("/klines", {"symbol": symbol})
        with pytest.raises(HostStopped) as stopped:
            client.get_json("/klines", {"symbol": "CUSDT"})
    assert "3 requests in a row gave up after HTTP 429" in str(stopped.value)
    assert "symbol=CUSDT" in str(stopped.value) and "rest.max_retries=0" in str(stopped.value)
    # Stopped: the next request is not sent (the 200 waiting in the double stays unused).
    with pytest.raises(HostStopped):
        client.get_json("/klines", {"symbol": "DUSDT"})
    assert session.answers == [(200, {})]


def test_an_answer_200_between_requests_given_up_on_429_keeps_the_host_going(monkeypatch):
    limited = (429, {"Retry-After": "0"})
    client, session = _client_answering(
        monkeypatch,
        [limited, limited, (200, {}), limited, limited, (200, {})],
        window_s=60.0,
        seconds_in=1.0,
        max_retries=0,
    )
    for answer in session.answers[:]:
        if answer[0] == 429:
            with pytest.raises(RateLimited):
                client.get_json("/klines", {"symbol": "AUSDT"})
        else:
            assert client.get_json("/klines", {"symbol": "AUSDT"}) == []
    assert session.answers == []


def test_persistent_429_fails_the_request_after_max_retries_waits(emulator, caplog):
    rest = RestEmulator(now_ms=D * DAY_MS)
    rest.add_symbol("um", "BUSDT")
    rest.inject(429, count=1000, market="um", path="/klines", symbol="BUSDT", retry_after=1)
    emu = emulator(rest=rest)
    lim = WindowLimiter(2400, window_s=60.0, clock=_into_a_window(60.0, 1.0))
    with RestClient(emu.base_url, "um_futures", weight_limiter=lim, max_retries=2) as client:
        t0 = time.monotonic()
        with pytest.raises(RateLimited) as err:
            client.get_json("/klines", {"symbol": "BUSDT", "interval": "1m", "limit": 5})
        elapsed = time.monotonic() - t0
    assert isinstance(err.value, TransientFailure)  # a transient failure of the symbol
    message = str(err.value)
    assert "/fapi/v1/klines?symbol=BUSDT" in message
    assert "kept answering HTTP 429" in message and "rest.max_retries=2" in message
    assert rest.counters("um")["429"] == 3  # the first try and two retries, then no more
    assert 1.8 <= elapsed < 20  # two waits of Retry-After: 1


def test_a_rest_progress_line_says_when_the_job_waits_on_the_rate_limit():
    """The note comes from the client's limiters (funding's too), through the per-symbol
    view a shard job's symbols use, and is absent while nothing waits."""
    from crypto_lakehouse.rest.client import MeteredClient
    from crypto_lakehouse.rest.klines import waiting_note

    weight, funding = WindowLimiter(100, window_s=60), WindowLimiter(1, share=1.0, window_s=30)
    client = RestClient(
        "http://127.0.0.1:9", "um_futures", weight_limiter=weight, funding_limiter=funding
    )
    view = MeteredClient(client)
    assert waiting_note(view) is None
    funding.acquire(1)
    th = threading.Thread(target=lambda: _acquire_or_stop(funding), daemon=True)
    th.start()
    deadline = time.monotonic() + 5
    while waiting_note(view) is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert waiting_note(view).startswith("waiting on the host's rate limit, next request in ")
    funding.stop("test over")
    th.join(2)
    assert waiting_note(view) is None


def _acquire_or_stop(limiter):
    try:
        limiter.acquire(1)
    except HostStopped:
        pass
