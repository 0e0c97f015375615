"""The emulator's transport (aiohttp's low-level server) as the tests and benchmarks rely on
it: absolute-form targets (the emulator plays an HTTP proxy), latency waited concurrently,
REST handlers off the loop, dropped bodies, 500 on an internal error, stop() and idle
connections; and ``Emulator.respond``. HTTP compliance itself is aiohttp's, not tested here.

Every socket has a timeout, so a broken server fails a test instead of hanging it.
"""

from __future__ import annotations

import http.client
import os
import socket
import threading
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor

import pytest
from crypto_lakehouse_emulator import Emulator, Faults

DIR = "data/spot/daily/klines/AUSDT/1m/"
KEY_A = DIR + "AUSDT-1m-2024-01-01.zip"
KEY_B = DIR + "AUSDT-1m-2024-01-02.zip"
KEY_C = DIR + "AUSDT-1m-2024-01-03.zip"
SIZES = {KEY_A: 10_000, KEY_B: 20_000, KEY_C: 300_000}
TIMEOUT = 10


@pytest.fixture
def mirror(tmp_path):
    bodies = {}
    for key, size in SIZES.items():
        (tmp_path / key).parent.mkdir(parents=True, exist_ok=True)
        bodies[key] = os.urandom(size)
        (tmp_path / key).write_bytes(bodies[key])
    return tmp_path, bodies


class Conn:
    """One client connection reading responses one by one (pipelining-safe)."""

    def __init__(self, port: int, timeout: float = TIMEOUT):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.file = self.sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def get(self, target: str, extra: str = "", method: str = "GET") -> None:
        self.send(f"{method} {target} HTTP/1.1\r\nHost: emulator\r\n{extra}\r\n".encode())

    def response(self, head: bool = False) -> tuple[int, dict[str, str], bytes]:
        """(status, lower-case headers, body); the body is read up to Content-Length or EOF."""
        line = self.file.readline()
        if not line:
            raise EOFError("connection closed before a response")
        status = int(line.split()[1])
        headers: dict[str, str] = {}
        while True:
            line = self.file.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        body = b"" if head else self.file.read(int(headers["content-length"]))
        return status, headers, body

    def closed_by_server(self) -> bool:
        """True when the server closed the connection (EOF or reset); a timeout fails."""
        try:
            return self.file.read(1) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@pytest.fixture
def conn():
    opened: list[Conn] = []

    def make(emu: Emulator) -> Conn:
        c = Conn(emu.port)
        opened.append(c)
        return c

    yield make
    for c in opened:
        c.close()


class _SlowRest:
    """A REST handler that blocks (as injected delays do) before answering."""

    def __init__(self, delay: float):
        self.delay = delay

    def handle(self, method, path, query, headers):
        time.sleep(self.delay)
        return 200, {}, b'{"slow":true}'


def test_blocking_rest_handler_does_not_stall_archive_requests(emulator, mirror):
    root, bodies = mirror
    emu = emulator(mirror_dir=root, rest=_SlowRest(1.0))
    with ThreadPoolExecutor(4) as pool:
        slow = [pool.submit(_fetch, emu.port, "/api/v3/time") for _ in range(3)]
        time.sleep(0.1)  # the REST requests are in their handler now
        t0 = time.monotonic()
        assert _fetch(emu.port, "/" + KEY_A) == (200, bodies[KEY_A])
        assert time.monotonic() - t0 < 0.8  # not behind the 1 s handlers
        assert [f.result()[0] for f in slow] == [200] * 3


def test_rest_latency_is_waited_concurrently_before_the_handler(emulator):
    calls = []

    class Rest:
        def handle(self, method, path, query, headers):
            calls.append(time.monotonic())
            return 200, {}, b"{}"

    emu = emulator(rest=Rest(), faults=Faults(latency=0.3, apply_to_rest=True))
    t0 = time.monotonic()
    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(lambda _: _fetch(emu.port, "/api/v3/time"), range(10)))
    assert results == [(200, b"{}")] * 10
    assert len(calls) == 10 and min(calls) - t0 >= 0.3  # the handler sees the request late
    assert time.monotonic() - t0 < 2.5  # one after the other: 10 × 0.3 s = 3 s
    emu.faults.apply_to_rest = False
    emu.faults.latency = 3.0  # archive requests only now
    t0 = time.monotonic()
    assert _fetch(emu.port, "/api/v3/time") == (200, b"{}")
    assert time.monotonic() - t0 < 2.0


def _fetch(port: int, target: str) -> tuple[int, bytes]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        c.request("GET", target)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def test_absolute_form_target_is_served_like_origin_form(emulator, mirror, conn):
    root, bodies = mirror
    emu = emulator(mirror_dir=root)
    c = conn(emu)
    c.get(f"{emu.base_url}/{KEY_A}")
    assert c.response()[::2] == (200, bodies[KEY_A])
    c.get(f"{emu.base_url}/data.binance.vision/{KEY_B}")
    assert c.response()[::2] == (200, bodies[KEY_B])
    c.get(f"{emu.base_url}/?prefix={DIR}&delimiter=/")
    status, _, body = c.response()
    keys = [e.text for e in ET.fromstring(body).iter() if e.tag.endswith("}Key")]
    assert status == 200 and keys == [KEY_A, KEY_B, KEY_C]


# ---------------------------------------------------------------- faults
def test_latency_is_waited_concurrently(emulator, mirror):
    root, bodies = mirror
    emu = emulator(mirror_dir=root, faults=Faults(latency=0.2))

    def timed(_):
        t0 = time.monotonic()
        result = _fetch(emu.port, "/" + KEY_A)
        return result, time.monotonic() - t0

    t0 = time.monotonic()
    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(timed, range(20)))
    elapsed = time.monotonic() - t0
    assert all(r == (200, bodies[KEY_A]) for r, _ in results)
    assert all(took >= 0.2 for _, took in results)  # each waited its latency...
    assert elapsed < 2.0  # ...in parallel: one after the other would take 20 × 0.2 = 4 s


def test_drop_sends_fewer_bytes_than_content_length(emulator, mirror, conn):
    root, bodies = mirror
    emu = emulator(mirror_dir=root, faults=Faults(drop_rate=1.0))
    c = conn(emu)
    c.get("/" + KEY_C)
    line = c.file.readline()
    assert line.split()[1] == b"200"
    headers = {}
    while (line := c.file.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.lower()] = value.strip()
    assert headers["content-length"] == str(SIZES[KEY_C])
    assert headers["connection"] == "close"
    received = b""
    try:
        while chunk := c.file.read(65536):
            received += chunk
    except ConnectionResetError:
        pass
    assert len(received) < SIZES[KEY_C]
    assert bodies[KEY_C].startswith(received)
    assert emu.counts["fault_drop"] == 1 and emu.counts["get_bytes"] == 0


def test_exception_inside_is_a_500_that_closes_the_connection(emulator, mirror, conn, caplog):
    class Broken:
        def list_dir(self, dir_prefix):
            return []

        def info(self, key):
            raise RuntimeError("boom")

        def read(self, key):
            raise RuntimeError("boom")

    emu = emulator(listing=Broken())
    c = conn(emu)
    c.get("/" + KEY_A)
    status, headers, body = c.response()
    assert status == 500 and ET.fromstring(body).findtext("Code") == "InternalError"
    assert headers["connection"] == "close"
    assert c.closed_by_server()
    assert "emulator error on GET" in caplog.text


# ---------------------------------------------------------------- lifecycle
def test_stop_closes_idle_keep_alive_connections(mirror, conn):
    root, bodies = mirror
    emu = Emulator(mirror_dir=root).start()
    try:
        c = conn(emu)
        c.get("/" + KEY_A)
        assert c.response()[::2] == (200, bodies[KEY_A])
        waiting = conn(emu)  # connected, never sent anything
        time.sleep(0.1)  # (a connection still in the handshake when the port closes hangs)
    finally:
        emu.stop()
    assert c.closed_by_server() and waiting.closed_by_server()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", emu.port), timeout=TIMEOUT).close()


def test_stop_during_latency_and_restart(mirror, conn):
    root, bodies = mirror
    emu = Emulator(mirror_dir=root, faults=Faults(latency=5.0)).start()
    c = conn(emu)
    c.get("/" + KEY_A)
    time.sleep(0.1)
    t0 = time.monotonic()
    emu.stop()
    assert time.monotonic() - t0 < 3
    assert c.closed_by_server()  # no answer, no hang
    emu.faults.latency = 0.0
    emu.start()
    try:
        assert _fetch(emu.port, "/" + KEY_A) == (200, bodies[KEY_A])
    finally:
        emu.stop()


def test_idle_connections_are_closed_after_the_idle_timeout(mirror, conn):
    emu = Emulator(mirror_dir=mirror[0])
    emu.idle_timeout = 0.3
    with emu:
        c = conn(emu)
        c.get("/" + KEY_A)
        assert c.response()[0] == 200
        t0 = time.monotonic()
        assert c.closed_by_server()
        assert 0.2 < time.monotonic() - t0 < 5


def test_context_manager_and_many_connections(mirror):
    root, bodies = mirror
    with Emulator(mirror_dir=root) as emu:
        with ThreadPoolExecutor(64) as pool:
            results = list(pool.map(lambda _: _fetch(emu.port, "/" + KEY_B), range(128)))
        assert results == [(200, bodies[KEY_B])] * 128
        assert emu.counts["get"] == 128


# ---------------------------------------------------------------- respond without a socket
def test_respond_is_transport_independent(mirror):
    root, bodies = mirror
    emu = Emulator(mirror_dir=root, faults=Faults(latency=0.25))
    reply = emu.respond("GET", "/" + KEY_A, {"range": "bytes=0-9"})
    assert (reply.status, reply.body, reply.latency) == (206, bodies[KEY_A][:10], 0.25)
    assert reply.headers["Content-Length"] == "10"
    assert reply.headers["Content-Range"] == f"bytes 0-9/{SIZES[KEY_A]}"
    assert not reply.drop and not reply.close
    head = emu.respond("HEAD", f"http://h/data.binance.vision/{KEY_B}", {})
    assert (head.status, head.body, head.headers["Content-Length"]) == (200, b"", "20000")
    assert emu.respond("POST", "/" + KEY_A, {}, b"x").status == 405
    assert emu.respond("GET", "/" + KEY_A + "x", {}).status == 404
    emu.faults.drop_rate = 1.0
    dropped = emu.respond("GET", "/" + KEY_A, {})
    assert dropped.drop and dropped.close and dropped.headers["Connection"] == "close"
    assert emu.counts["get"] == 3 and emu.counts["head"] == 1 and emu.counts["fault_drop"] == 1
    assert emu.counts["get_bytes"] == 10


def test_stop_is_callable_twice_and_from_another_thread(mirror):
    emu = Emulator(mirror_dir=mirror[0]).start()
    t = threading.Thread(target=emu.stop)
    t.start()
    t.join(timeout=TIMEOUT)
    assert not t.is_alive()
    emu.stop()
