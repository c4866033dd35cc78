"""Just enough of the server side of HTTP/1.1 for the sandbox, on asyncio streams.

Hand-written rather than borrowed from a framework because the fault modes need control of every
byte: a reset before any header, a chunked stream that stops without its last chunk, a body
shorter than its Content-Length. Requests may carry a Content-Length or a chunked body; a
connection serves requests one after another (keep-alive) until the client or a fault closes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import socket
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = [
    "LAST_CHUNK",
    "HttpError",
    "Request",
    "chunk",
    "json_response",
    "read_request",
    "reset_connection",
    "response_head",
    "wait_until_client_leaves",
]

MAX_BODY_BYTES = 32 * 1024 * 1024
"""Larger request bodies are refused with 413 (the Messages API's own limit is of this order)."""

LAST_CHUNK = b"0\r\n\r\n"
"""The zero-length chunk that ends a chunked body: a truncated stream never gets it."""

_EXTRA_REASONS = {529: "Site Overloaded"}


class HttpError(Exception):
    """A request this server cannot read: answered with ``status`` and the connection closed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class Request:
    """One request as read from the wire. Header names are lower-cased; repeats are joined by ", "."""

    method: str
    path: str
    query: str
    version: str
    headers: Mapping[str, str]
    body: bytes

    @property
    def keep_alive(self) -> bool:
        """Whether the client lets the connection serve another request after this one."""
        connection = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.0":
            return "keep-alive" in connection
        return "close" not in connection


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size_line = await reader.readuntil(b"\r\n")
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise HttpError(400, "bad chunk size in the request body") from None
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass  # trailer fields are read and ignored
            return bytes(body)
        if len(body) + size > MAX_BODY_BYTES:
            raise HttpError(413, "request body too large")
        body += await reader.readexactly(size)
        if await reader.readexactly(2) != b"\r\n":
            raise HttpError(400, "a chunk of the request body does not end with CRLF")


async def read_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Request | None:
    """The next request on the connection, or ``None`` when the client closed it between requests.

    A client that sends ``Expect: 100-continue`` (curl does, for larger bodies) is told to go on.

    Raises ``HttpError`` for a request that cannot be read (answer it, then close), and
    ``asyncio.IncompleteReadError`` or ``ConnectionError`` when the client goes away mid-request.
    """
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as error:
        if not error.partial.strip():
            return None
        raise
    except asyncio.LimitOverrunError:
        raise HttpError(431, "request head too large") from None
    lines = head.lstrip(b"\r\n").decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise HttpError(400, "malformed request line")
    method, target, version = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise HttpError(400, "malformed header line")
        key = name.lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    if headers.get("expect", "").lower() == "100-continue":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await writer.drain()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = await _read_chunked(reader)
    else:
        length_text = headers.get("content-length", "0").strip()
        if not length_text.isdigit():
            raise HttpError(400, "bad Content-Length")
        length = int(length_text)
        if length > MAX_BODY_BYTES:
            raise HttpError(413, "request body too large")
        body = await reader.readexactly(length)
    path, _, query = target.partition("?")
    return Request(method=method.upper(), path=path, query=query, version=version, headers=headers, body=body)


def response_head(status: int, headers: Iterable[tuple[str, str]]) -> bytes:
    """The status line and header block of a response, ending with the empty line."""
    try:
        reason = http.HTTPStatus(status).phrase
    except ValueError:
        reason = _EXTRA_REASONS.get(status, "Unknown")
    lines = [f"HTTP/1.1 {status} {reason}", "server: rmgr-sandbox"]
    lines.extend(f"{name}: {value}" for name, value in headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def json_response(
    status: int,
    body: bytes,
    keep_alive: bool,
    extra: Iterable[tuple[str, str]] = (),
    content_length: int | None = None,
) -> bytes:
    """A complete JSON response; ``content_length`` announces more than ``body`` (a cut answer)."""
    headers = [
        ("content-type", "application/json"),
        ("content-length", str(len(body) if content_length is None else content_length)),
        ("connection", "keep-alive" if keep_alive else "close"),
        *extra,
    ]
    return response_head(status, headers) + body


def chunk(data: bytes) -> bytes:
    """``data`` framed as one chunk of a chunked body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def reset_connection(writer: asyncio.StreamWriter) -> None:
    """Close the connection with a TCP reset (SO_LINGER 0) instead of an orderly FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def wait_until_client_leaves(reader: asyncio.StreamReader) -> None:
    """Read and discard whatever the client sends until it closes the connection."""
    with contextlib.suppress(ConnectionError):
        while await reader.read(65536):
            pass


async def client_left_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """Wait ``seconds``; True as soon as the client closes the connection in that time."""
    try:
        await asyncio.wait_for(wait_until_client_leaves(reader), seconds)
    except TimeoutError:
        return False
    return True
