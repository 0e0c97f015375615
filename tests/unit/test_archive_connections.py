"""``archive.connections``: the aiohttp downloader as our pipeline relies on it.

Not a test of HTTP itself (aiohttp's job) but of what the downloads need: hashes of the
published bytes, keep-alive reuse, stale connections, redirects, error classes, proxies from
the environment and TLS with a CA bundle. Scripted servers answer exactly what a case needs;
the emulator serves real objects and plays an HTTP proxy (it accepts absolute-form request
targets, as a proxy receives them).
"""

import asyncio
import hashlib
import os
import select
import shutil
import socket
import socketserver
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from crypto_lakehouse.archive import connections, http
from tests.conftest import FIXTURES

MIRROR = FIXTURES / "legacy-v1-real" / "mirror"
KEY = "data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2020-01-01.zip"


class ScriptedServer:
    """Loopback TCP server; ``answer(request_head, n)`` returns the raw bytes to send for
    the n-th request (1-based, over all connections) and whether to close afterwards.
    With ``tls`` (an ``ssl.SSLContext``) it speaks HTTPS."""

    def __init__(self, answer, tls=None):
        self.requests: list[bytes] = []
        self.connections = 0
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                outer.connections += 1
                if tls is not None:
                    try:
                        self.request = tls.wrap_socket(self.request, server_side=True)
                    except OSError:  # a client that refuses our certificate
                        return
                buf = b""
                while True:
                    while b"\r\n\r\n" not in buf:
                        data = self.request.recv(65536)
                        if not data:
                            return
                        buf += data
                    head, buf = buf.split(b"\r\n\r\n", 1)
                    outer.requests.append(head)
                    raw, close = answer(head, len(outer.requests))
                    self.request.sendall(raw)
                    if close:
                        self.request.shutdown(socket.SHUT_RDWR)
                        return

        socketserver.ThreadingTCPServer.daemon_threads = True
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scripted():
    servers = []

    def make(answer, tls=None):
        servers.append(ScriptedServer(answer, tls))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def ok(body: bytes, extra: str = "") -> bytes:
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


class Client:
    """The download functions driven synchronously on one event loop and one session (so
    that keep-alive carries over from one call to the next)."""

    def __init__(self, timeout_s: float):
        self.loop = asyncio.new_event_loop()
        self.session = self.loop.run_until_complete(self._open(timeout_s))

    @staticmethod
    async def _open(timeout_s):
        return connections.Downloader(4, timeout_s)

    def get_bytes(self, url: str) -> bytes:
        return self.loop.run_until_complete(self.session.get_bytes(url))

    def stream_to_file(self, url: str, dest: Path, flags=os.O_WRONLY | os.O_CREAT):
        async def go():
            resp = await self.session.open_get(url)
            fd = os.open(dest, flags, 0o644)
            try:
                return await connections.stream_to_fd(resp, url, fd)
            finally:
                os.close(fd)

        return self.loop.run_until_complete(go())

    def close(self):
        self.loop.run_until_complete(self.session.close())
        self.loop.close()


@pytest.fixture
def conns():
    c = Client(timeout_s=5)
    yield c
    c.close()


def test_object_streams_to_file_with_its_sha256(tmp_path, emulator, conns):
    emu = emulator(mirror_dir=MIRROR)
    expected = (MIRROR / KEY).read_bytes()
    dest = tmp_path / "out.zip"
    n_bytes, digest = conns.stream_to_file(f"{emu.base_url}/{KEY}", dest)
    assert dest.read_bytes() == expected
    assert (n_bytes, digest) == (len(expected), hashlib.sha256(expected).hexdigest())
    checksum = conns.get_bytes(f"{emu.base_url}/{KEY}.CHECKSUM")
    assert checksum == (MIRROR / f"{KEY}.CHECKSUM").read_bytes()


def test_requests_of_one_thread_share_one_keep_alive_connection(scripted, conns):
    server = scripted(lambda head, n: (ok(b"x" * n), False))
    bodies = [conns.get_bytes(f"{server.url}/k{i}") for i in range(1, 4)]
    assert bodies == [b"x", b"xx", b"xxx"]
    assert server.connections == 1
    first = server.requests[0].decode().split("\r\n")
    assert first[0] == "GET /k1 HTTP/1.1"
    # Hashes are over the published bytes: the client must not invite compression.
    assert "Accept-Encoding: identity" in first


def test_idle_connection_closed_by_the_server_is_reopened_transparently(scripted, conns):
    # The first answer says keep-alive but the server closes right after it, as S3 does
    # with idle connections: the next GET meets a dead socket and must not fail.
    server = scripted(lambda head, n: (ok(b"body"), n == 1))
    assert conns.get_bytes(f"{server.url}/a") == b"body"
    assert conns.get_bytes(f"{server.url}/b") == b"body"
    assert server.connections == 2


def test_redirects_are_followed_to_the_object(tmp_path, scripted, emulator, conns):
    emu = emulator(mirror_dir=MIRROR)
    moved = f"HTTP/1.1 301 Moved Permanently\r\nLocation: {emu.base_url}/{KEY}\r\n"
    server = scripted(lambda head, n: ((moved + "Content-Length: 0\r\n\r\n").encode(), False))
    n_bytes, _ = conns.stream_to_file(f"{server.url}/{KEY}", tmp_path / "z")
    assert n_bytes == (MIRROR / KEY).stat().st_size


@pytest.mark.parametrize("fetch", ["stream", "bytes"])
def test_body_cut_short_is_a_transient_error(tmp_path, scripted, conns, fetch):
    short = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"y" * 40
    server = scripted(lambda head, n: (short, True))
    with pytest.raises(http.TransientError, match="/cut"):
        if fetch == "stream":
            conns.stream_to_file(f"{server.url}/cut", tmp_path / "cut")
        else:
            conns.get_bytes(f"{server.url}/cut")


@pytest.mark.parametrize(
    ("status", "error"),
    [(404, http.NotFound), (503, http.TransientError), (400, http.HTTPStatusError)],
)
def test_status_classes_and_the_connection_survives_an_error_body(scripted, conns, status, error):
    def answer(head, n):
        if n == 1:
            body = b"<Error>no</Error>"
            return (
                f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body,
                False,
            )
        return ok(b"fine"), False

    server = scripted(answer)
    with pytest.raises(error):
        conns.get_bytes(f"{server.url}/first")
    assert conns.get_bytes(f"{server.url}/second") == b"fine"
    assert server.connections == 1


def test_refused_connection_is_fatal_not_transient(conns):
    # Issue 12: a refused connection is not retried like a 5xx (the host is not there).
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: connections are refused
        with pytest.raises(http.Unreachable, match="connection refused"):
            conns.get_bytes(f"http://127.0.0.1:{port}/x")


def test_silent_server_times_out_as_transient(scripted):
    server = scripted(lambda head, n: (b"", False))  # reads the request, never answers
    slow = Client(timeout_s=0.3)
    try:
        with pytest.raises(http.TransientError, match="(?i)time(d )?out"):
            slow.get_bytes(f"{server.url}/x")
    finally:
        slow.close()


def test_http_proxy_from_the_environment_gets_absolute_urls(monkeypatch, emulator, scripted):
    # The archive host does not resolve: the object can only arrive through the proxy.
    emu = emulator(mirror_dir=MIRROR)
    monkeypatch.setenv("HTTP_PROXY", f"http://user:p%40ss@127.0.0.1:{emu.port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    via_proxy = Client(timeout_s=5)
    try:
        body = via_proxy.get_bytes(f"http://archive.invalid/{KEY}.CHECKSUM")
    finally:
        via_proxy.close()
    assert body == (MIRROR / f"{KEY}.CHECKSUM").read_bytes()

    # What went over the wire: absolute-form target and Basic credentials ("user:p@ss").
    server = scripted(lambda head, n: (ok(b"k"), False))
    monkeypatch.setenv("HTTP_PROXY", f"http://user:p%40ss@127.0.0.1:{server.url.rsplit(':', 1)[1]}")
    seen = Client(timeout_s=5)
    try:
        assert seen.get_bytes("http://archive.invalid/some/key") == b"k"
    finally:
        seen.close()
    lines = server.requests[0].decode().split("\r\n")
    assert lines[0] == "GET http://archive.invalid/some/key HTTP/1.1"
    assert "Proxy-Authorization: Basic dXNlcjpwQHNz" in lines


def test_no_proxy_bypasses_the_proxy(monkeypatch, scripted):
    server = scripted(lambda head, n: (ok(b"direct"), False))
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    direct = Client(timeout_s=5)
    try:
        assert direct.get_bytes(f"{server.url}/x") == b"direct"
    finally:
        direct.close()


def test_disk_errors_are_not_mistaken_for_network_errors(emulator, conns, tmp_path):
    emu = emulator(mirror_dir=MIRROR)
    read_only = tmp_path / "out.zip"  # a descriptor that refuses writes: EBADF
    with pytest.raises(OSError) as caught:
        conns.stream_to_file(f"{emu.base_url}/{KEY}", read_only, flags=os.O_RDONLY | os.O_CREAT)
    assert not isinstance(caught.value, http.ArchiveHTTPError)
    # The unread body must not poison the thread's next request.
    checksum = conns.get_bytes(f"{emu.base_url}/{KEY}.CHECKSUM")
    assert checksum == (MIRROR / f"{KEY}.CHECKSUM").read_bytes()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1 made with the openssl command."""
    if shutil.which("openssl") is None:
        pytest.fail("the openssl command is needed (Debian package openssl)")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")],
        check=True, capture_output=True,
    )  # fmt: skip
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(d / "cert.pem", d / "key.pem")
    return d / "cert.pem", server_tls


def test_https_with_the_configured_ca_bundle(monkeypatch, scripted, certificate, tmp_path):
    cert, server_tls = certificate
    server = scripted(lambda head, n: (ok(b"secret" * n), False), tls=server_tls)
    url = server.url.replace("http://", "https://")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    trusting = Client(timeout_s=5)
    try:
        assert trusting.get_bytes(f"{url}/a") == b"secret"
        n_bytes, digest = trusting.stream_to_file(f"{url}/b", tmp_path / "b")
    finally:
        trusting.close()
    assert (n_bytes, digest) == (12, hashlib.sha256(b"secret" * 2).hexdigest())
    assert server.connections == 1  # kept alive inside TLS too

    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    strict = Client(timeout_s=5)
    try:
        # A failed TLS handshake is fatal too (issue 12), naming the verification error.
        with pytest.raises(http.Unreachable, match="TLS failure .*self.signed"):
            strict.get_bytes(f"{url}/a")  # self-signed: not in certifi's bundle
    finally:
        strict.close()


class ConnectProxy:
    """A loopback HTTP proxy that only tunnels (CONNECT) and records the request heads."""

    def __init__(self):
        self.heads: list[bytes] = []
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                head = b""
                while b"\r\n\r\n" not in head:
                    data = self.request.recv(4096)
                    if not data:
                        return
                    head += data
                outer.heads.append(head)
                host, port = head.split(b" ")[1].decode().rsplit(":", 1)
                upstream = socket.create_connection((host, int(port)))
                self.request.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                pair = {self.request: upstream, upstream: self.request}
                while True:
                    ready, _, _ = select.select(list(pair), [], [], 5)
                    if not ready:
                        return
                    for s in ready:
                        data = s.recv(65536)
                        if not data:
                            upstream.close()
                            return
                        pair[s].sendall(data)

        socketserver.ThreadingTCPServer.daemon_threads = True
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_https_through_a_connect_proxy(monkeypatch, scripted, certificate):
    cert, server_tls = certificate
    server = scripted(lambda head, n: (ok(b"tunnelled"), False), tls=server_tls)
    proxy = ConnectProxy()
    try:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
        monkeypatch.setenv("HTTPS_PROXY", f"http://me:pw@127.0.0.1:{proxy.port}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        via = Client(timeout_s=5)
        try:
            url = server.url.replace("http://", "https://")
            assert via.get_bytes(f"{url}/a") == b"tunnelled"
            assert via.get_bytes(f"{url}/b") == b"tunnelled"
        finally:
            via.close()
    finally:
        proxy.close()
    assert len(proxy.heads) == 1  # one tunnel, kept alive for both GETs
    lines = proxy.heads[0].decode().split("\r\n")
    assert lines[0] == f"CONNECT 127.0.0.1:{server.url.rsplit(':', 1)[1]} HTTP/1.1"
    assert "Proxy-Authorization: Basic bWU6cHc=" in lines  # me:pw
    # The origin saw an ordinary origin-form request, never the proxy credentials.
    assert server.requests[0].decode().startswith("GET /a HTTP/1.1")
    assert b"Proxy-Authorization" not in server.requests[0]


def test_a_download_job_does_not_import_requests():
    # requests serves the listings only; importing it cost a download job process ~80 ms
    # of CPU (docs/benchmarks.md, issue 19). A fresh interpreter, as a pipeline job is.
    code = (
        "import sys\n"
        "from crypto_lakehouse.archive.sync import run_sync\n"
        "print(sorted(m for m in ('requests', 'urllib3') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )  # fmt: skip
    assert out.stdout.strip() == "[]"
