"""One accepted HTTP/1.1 connection of the sandbox, spoken through h11 over asyncio streams.

h11 does the HTTP: it parses each request (request line, headers, a Content-Length or chunked
body, ``Expect: 100-continue``), frames each response (status line, headers, Content-Length or
chunked body, the last chunk), and decides whether the connection may serve another request.
This module only moves bytes between h11 and the socket, and adds the limits a server must set.

The fault modes need three things that are not HTTP, and get them by going around h11:

- ``reset`` closes the socket with a TCP reset before any byte of the answer (SO_LINGER 0 and an
  aborted transport). h11 has no event for it: no bytes are sent, so there is nothing to frame.
- An answer cut short (``truncate``, ``stall``) is a head and some body sent through h11, then the
  connection closed (or left silent) without h11's ``EndOfMessage``: no last chunk for a chunked
  body, fewer bytes than the Content-Length for a plain one. h11 is never told of the close, since
  it would rightly refuse to close a message it is still sending.
- Waiting for the client to leave (``hang``, ``stall``, ``slow``) reads the socket until it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import socket
import struct
from collections.abc import Iterable

import h11

from rmcli.sandbox.request import HttpError, Request

__all__ = ["MAX_BODY_BYTES", "MAX_HEAD_BYTES", "HttpConnection"]

MAX_HEAD_BYTES = 64 * 1024
"""A request whose target and header fields come to more than this is refused with 431."""

MAX_BODY_BYTES = 32 * 1024 * 1024
"""Larger request bodies are refused with 413 (the Messages API's own limit is of this order)."""

_READ_BYTES = 64 * 1024
_SERVER = ("server", "rmgr-sandbox")
_REASONS = {status.value: status.phrase.encode() for status in http.HTTPStatus} | {529: b"Site Overloaded"}

Headers = Iterable[tuple[str, str]]
"""Response headers, names lower-case. h11 adds the framing ones (and ``connection: close``
when the client asked for it) unless they are given."""


def _headers(event: h11.Request) -> dict[str, str]:
    """The request's headers, names lower-cased, repeats joined by ", " (h11 has validated them).

    ``HttpError`` 431 when the target and header fields come to more than ``MAX_HEAD_BYTES``:
    h11's own limit is on what it buffers while a head is incomplete, so a head that arrives
    whole in one read would pass it.
    """
    headers: dict[str, str] = {}
    size = len(event.target)
    for raw_name, raw_value in event.headers.raw_items():  # a list: cheaper to walk than Headers
        size += len(raw_name) + len(raw_value)
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    if size > MAX_HEAD_BYTES:
        raise HttpError(431, "request head too large")
    return headers


def _to_request(event: h11.Request, headers: dict[str, str], body: bytes) -> Request:
    path, _, query = event.target.decode("latin-1").partition("?")
    method = event.method.decode("ascii").upper()
    return Request(method=method, path=path, query=query, headers=headers, body=body)


class HttpConnection:
    """The requests of one connection, one after another, and the answer to each.

    ``next_request`` reads a whole request; then the handler answers it with ``respond`` (a whole
    response), or ``start``, ``send`` and ``end`` (a streamed one), or leaves it unfinished (a
    fault). ``next_cycle`` says whether another request may follow.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        self._client_closed = False
        self._head_only = False

    # -- reading ---------------------------------------------------------------------------------

    async def _next_event(self) -> h11.Event:
        """The next event h11 reads from the client, reading the socket as h11 needs more.

        ``HttpError`` for what h11 refuses to read; ``ConnectionResetError`` when the client
        closed the connection in the middle of a request (there is no one left to answer).
        """
        while True:
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError as error:
                if self._client_closed:
                    raise ConnectionResetError("the client closed the connection mid-request") from None
                raise HttpError(error.error_status_hint, str(error)) from None
            if event is h11.NEED_DATA:
                data = await self._reader.read(_READ_BYTES)
                self._client_closed = not data
                self._h11.receive_data(data)  # b"" tells h11 the client closed its side
            elif isinstance(event, h11.Event):
                return event
            else:  # PAUSED: the previous request's cycle was not ended; a bug in the caller.
                raise RuntimeError("the previous request was not answered before reading the next")

    async def next_request(self) -> Request | None:
        """The next whole request, or ``None`` when the client closed the connection between requests.

        Raises ``HttpError`` for a request that cannot be read or is too large (answer it with
        ``refuse``) and ``ConnectionError`` when the client goes away in the middle of one.
        """
        self._head_only = False
        event = await self._next_event()
        if isinstance(event, h11.ConnectionClosed):
            return None
        assert isinstance(event, h11.Request)  # the only other event h11 gives between requests
        self._head_only = event.method == b"HEAD"
        headers = _headers(event)
        # h11 has checked the Content-Length is one number; a chunked body is measured as it comes.
        if "transfer-encoding" not in headers and int(headers.get("content-length", "0")) > MAX_BODY_BYTES:
            raise HttpError(413, "request body too large")
        if self._h11.they_are_waiting_for_100_continue:
            self._writer.write(self._h11.send(h11.InformationalResponse(status_code=100, headers=[])))
        parts: list[bytes] = []
        size = 0
        while not isinstance(data := await self._next_event(), h11.EndOfMessage):
            assert isinstance(data, h11.Data)  # h11 raises, rather than end a body early
            size += len(data.data)
            if size > MAX_BODY_BYTES:
                raise HttpError(413, "request body too large")
            parts.append(data.data)
        return _to_request(event, headers, b"".join(parts))

    # -- writing ---------------------------------------------------------------------------------

    def _head(self, status: int, headers: Headers) -> bytes:
        response = h11.Response(
            status_code=status, headers=[_SERVER, *headers], reason=_REASONS.get(status, b"Unknown")
        )
        return self._h11.send(response)

    async def _write(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    async def respond(self, status: int, headers: Headers, body: bytes) -> None:
        """A whole response with a Content-Length body, written at once."""
        head = self._head(status, [*headers, ("content-length", str(len(body)))])
        if self._head_only:  # h11 knows an answer to HEAD has no body, and would refuse one
            body = b""
        data = self._h11.send(h11.Data(data=body)) if body else b""
        await self._write(head + data + self._h11.send(h11.EndOfMessage()))

    async def refuse(self, error: HttpError, body: bytes) -> None:
        """Answer a request that could not be read (``error``) with a JSON ``body``; the
        connection must close after it, since where the next request would start is unknown."""
        headers = [("content-type", "application/json"), ("connection", "close")]
        await self.respond(error.status, headers, body)

    async def start(self, status: int, headers: Headers) -> None:
        """The head of a response whose body follows with ``send``: chunked, unless the headers
        give a Content-Length."""
        await self._write(self._head(status, headers))

    async def send(self, data: bytes) -> None:
        """Part of the body of a started response (one chunk of a chunked body)."""
        await self._write(self._h11.send(h11.Data(data=data)))

    async def end(self, data: bytes = b"") -> None:
        """The last part of a started response's body, if any, and its end (the last chunk)."""
        last = self._h11.send(h11.Data(data=data)) if data else b""
        await self._write(last + self._h11.send(h11.EndOfMessage()))

    def next_cycle(self) -> bool:
        """After a handler: whether the connection may serve another request, and if so get ready.

        Only when the response was ended and both sides want to go on (h11 knows whether the
        client or the response asked to close); an answer cut short leaves the connection to close.
        """
        if self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE:
            self._h11.start_next_cycle()
            return True
        return False

    # -- faults ----------------------------------------------------------------------------------

    def reset(self) -> None:
        """Close the connection with a TCP reset (SO_LINGER 0) instead of an orderly FIN."""
        sock = self._writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._writer.transport.abort()

    async def _read_until_closed(self, keep: bool) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await self._reader.read(_READ_BYTES):
                if keep:
                    self._h11.receive_data(data)

    async def wait_until_client_leaves(self) -> None:
        """Read and discard whatever the client sends until it closes the connection."""
        await self._read_until_closed(keep=False)

    async def client_left_within(self, seconds: float) -> bool:
        """Wait ``seconds``; True as soon as the client closes the connection in that time.

        What the client sends meanwhile (a pipelined request) is kept for ``next_request``.
        """
        try:
            async with asyncio.timeout(seconds):
                await self._read_until_closed(keep=True)
        except TimeoutError:
            return False
        return True
