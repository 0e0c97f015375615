"""A TCP proxy on loopback that delays every answer by a fixed time: an object store "far
away" (AWS S3 answers in tens of ms) in front of the local SeaweedFS, for the benchmarks.

Each chunk the server sends back is delivered ``latency`` seconds after it arrived, in
order, without throttling the bytes (a delay queue, not a sleep per chunk): a request's
round trip grows by ``latency``, a large transfer by ``latency`` once.

    python tests/latency_proxy.py LISTEN_PORT UPSTREAM_PORT LATENCY_S

``LatencyProxy`` starts it as a subprocess (the proxy needs its own interpreter: in the
measured process it would compete with the jobs' threads for the GIL).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path


async def _pipe(reader, writer, latency: float) -> None:
    queue: asyncio.Queue = asyncio.Queue()

    async def deliver() -> None:
        loop = asyncio.get_running_loop()
        while True:
            due, data = await queue.get()
            if data is None:
                break
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        writer.close()

    delivering = asyncio.create_task(deliver())
    loop = asyncio.get_running_loop()
    try:
        while data := await reader.read(1 << 16):
            queue.put_nowait((loop.time() + latency, data))
    except ConnectionError:
        pass
    finally:
        queue.put_nowait((0.0, None))
        try:
            await delivering
        except ConnectionError:
            pass


async def _serve(listen_port: int, upstream_port: int, latency: float) -> None:
    async def handle(client_reader, client_writer) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(
            _pipe(client_reader, up_writer, 0.0),
            _pipe(up_reader, client_writer, latency),
            return_exceptions=True,
        )

    server = await asyncio.start_server(handle, "127.0.0.1", listen_port)
    async with server:
        await server.serve_forever()


class LatencyProxy:
    """The proxy as a subprocess: ``port`` forwards to ``upstream_port``."""

    def __init__(self, upstream_port: int, latency_s: float):
        import socket

        with socket.socket() as probe:  # a free loopback port
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__)), str(self.port), str(upstream_port),
             str(latency_s)]
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("latency proxy did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


if __name__ == "__main__":
    asyncio.run(_serve(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])))
