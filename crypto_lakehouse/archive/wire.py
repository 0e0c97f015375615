"""HTTP/1.1 on one socket, for GETs of archive objects: request out, response head parsed,
body handed over in chunks.

What it speaks: status line and headers (1xx answers skipped), bodies delimited by
Content-Length, by chunked transfer coding, or by the end of the connection; keep-alive as
HTTP/1.1 defines it (``Connection: close`` and HTTP/1.0 end it). No compression is asked for.
Why not ``http.client``: it reads the head line by line through a buffered file object and
parses headers with ``email.parser``; per ~40 KB archive file that cost as much CPU as the
rest of the download (see :mod:`.connections`).

Errors: :class:`WireError` for anything the peer did wrong (bad head, body cut short), and
the socket's own ``OSError`` (reset, timeout) as raised.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

MAX_HEAD_BYTES = 64 * 1024
RECV_BYTES = 1 << 16
_NO_BODY_STATUS = frozenset({204, 304})


class WireError(Exception):
    """The peer broke HTTP/1.1 (or closed the connection early)."""


class Response:
    """A response head; the body is read with :meth:`Connection.body`."""

    __slots__ = ("status", "headers", "length", "chunked", "keep_alive")

    def __init__(self, status: int, headers: dict[str, str], keep_alive: bool, no_body: bool):
        self.status = status
        self.headers = headers  # names in lower case; repeated headers joined with ", "
        coding = headers.get("transfer-encoding", "").lower()
        self.chunked = not no_body and "chunked" in coding
        length = headers.get("content-length")
        if no_body:
            self.length: int | None = 0
        elif self.chunked or length is None:
            self.length = None
        else:
            try:
                self.length = int(length)
            except ValueError:
                raise WireError(f"bad Content-Length {length!r}") from None
            if self.length < 0:
                raise WireError(f"bad Content-Length {length!r}")
        # A body that ends with the connection leaves nothing to keep alive.
        self.keep_alive = keep_alive and (self.chunked or self.length is not None)


def _parse_head(head: bytes) -> tuple[int, dict[str, str], bool]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise WireError(f"bad status line {lines[0][:100]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise WireError(f"bad header line {line[:100]!r}")
        name = name.lower()
        value = value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    if parts[0] == "HTTP/1.0":
        keep_alive = "keep-alive" in tokens
    else:
        keep_alive = "close" not in tokens
    return int(parts[1]), headers, keep_alive


class Connection:
    """One connected socket (already TLS-wrapped when needed) and what was read ahead."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.pending = bytearray()  # bytes received but not consumed yet
        self.used = False  # a response was read on it: it may have gone stale since
        self.reusable = True

    def close(self) -> None:
        self.reusable = False
        try:
            self.sock.close()
        except OSError:
            pass

    # ------------------------------------------------------------ reading
    def _fill(self) -> int:
        chunk = self.sock.recv(RECV_BYTES)
        self.pending += chunk
        return len(chunk)

    def _head(self) -> bytes | None:
        """The next response head without its blank line; None on a clean EOF before any
        byte of it (a keep-alive connection the server had closed)."""
        start = 0
        while True:
            end = self.pending.find(b"\r\n\r\n", start)
            if end >= 0:
                head = bytes(self.pending[:end])
                del self.pending[: end + 4]
                return head
            if len(self.pending) > MAX_HEAD_BYTES:
                raise WireError(f"response head longer than {MAX_HEAD_BYTES} bytes")
            start = max(0, len(self.pending) - 3)
            if not self._fill():
                if not self.pending:
                    return None
                raise WireError("connection closed inside a response head")

    def _line(self) -> bytes:
        while True:
            end = self.pending.find(b"\r\n")
            if end >= 0:
                line = bytes(self.pending[:end])
                del self.pending[: end + 2]
                return line
            if len(self.pending) > MAX_HEAD_BYTES:
                raise WireError("chunk header line too long")
            if not self._fill():
                raise WireError("connection closed inside a chunked body")

    def send(self, method: str, target: str, headers: dict[str, str]) -> None:
        """Send a request without body; its answer is read with :meth:`response`."""
        head_lines = [f"{method} {target} HTTP/1.1"]
        head_lines += [f"{name}: {value}" for name, value in headers.items()]
        self.sock.sendall(("\r\n".join(head_lines) + "\r\n\r\n").encode("latin-1"))

    def response(self, method: str) -> Response | None:
        """The final response head to a request sent with ``method``; None when the
        connection turned out to be closed by the peer before answering (only possible on a
        reused one). After a 2xx answer to CONNECT the socket is a tunnel: no body follows."""
        while True:
            head = self._head()
            if head is None:
                self.close()
                return None
            status, response_headers, keep_alive = _parse_head(head)
            if 100 <= status < 200:
                continue  # interim answer (100 Continue, 103 Early Hints): the real one follows
            self.used = True
            no_body = status in _NO_BODY_STATUS or (method == "CONNECT" and status < 300)
            no_body = no_body or method == "HEAD"
            response = Response(status, response_headers, keep_alive, no_body)
            self.reusable = response.keep_alive
            return response

    def request(self, method: str, target: str, headers: dict[str, str]) -> Response | None:
        """:meth:`send`, then :meth:`response`."""
        self.send(method, target, headers)
        return self.response(method)

    def body(self, response: Response) -> Iterator[memoryview | bytes]:
        """The body in chunks (valid until the next one is taken). A body cut short raises
        :class:`WireError`; after a body that ends the connection, it is closed."""
        if response.chunked:
            yield from self._chunked()
        elif response.length is not None:
            yield from self._sized(response.length)
        else:
            yield from self._until_close()
        if not self.reusable:
            self.close()

    def _sized(self, length: int) -> Iterator[memoryview | bytes]:
        remaining = length
        if self.pending:
            take = min(remaining, len(self.pending))
            chunk = bytes(self.pending[:take])
            del self.pending[:take]
            remaining -= take
            yield chunk
        if remaining:
            buffer = bytearray(min(remaining, RECV_BYTES))
            view = memoryview(buffer)
            while remaining:
                n = self.sock.recv_into(view, min(remaining, len(buffer)))
                if not n:
                    self.close()
                    raise WireError(f"body cut short: {length - remaining} of {length} bytes")
                remaining -= n
                yield view[:n]

    def _chunked(self) -> Iterator[bytes]:
        while True:
            size_text = self._line().split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise WireError(f"bad chunk size {size_text[:20]!r}") from None
            if size == 0:
                while self._line():  # trailer fields, then the blank line
                    pass
                return
            while len(self.pending) < size + 2:
                if not self._fill():
                    raise WireError("connection closed inside a chunked body")
            if self.pending[size : size + 2] != b"\r\n":
                raise WireError("chunk not followed by CRLF")
            chunk = bytes(self.pending[:size])
            del self.pending[: size + 2]
            yield chunk

    def _until_close(self) -> Iterator[bytes]:
        self.reusable = False
        if self.pending:
            chunk = bytes(self.pending)
            self.pending.clear()
            yield chunk
        while True:
            chunk = self.sock.recv(RECV_BYTES)
            if not chunk:
                return
            yield chunk
