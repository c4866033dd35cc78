"""A TCP port that can stop and start listening, and the HTTP/1.1 connections it has accepted.

``down`` must look like a provider whose process died: connections refused and open ones cut.
Going back up must listen on the same port, since clients were told its URL. So while it is down
the port stays reserved by a socket that is bound but not listening: the kernel answers a
connection attempt with a reset, which a client sees as "connection refused", and no other
process can take the port in between. ``stop`` and ``start`` are synchronous so that a change of
mode takes effect before the caller's next request.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable

from rmcli.sandbox.connection import HttpConnection
from rmcli.sandbox.request import HttpError, Request

__all__ = ["Handler", "Listener", "Unreadable"]

Handler = Callable[[Request, HttpConnection], Awaitable[None]]
"""Answers one request on its connection; the connection serves another only if the answer was
ended and neither side asked to close (``HttpConnection.next_cycle``)."""

Unreadable = Callable[[HttpError], bytes]
"""The JSON body of the answer to a request that could not be read."""

_BACKLOG = 128
_ACCEPT_RETRY_S = 0.05
_CLOSE_WAIT_S = 2.0


def _bound_socket(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class Listener:
    """One port: bound at ``bind``, accepting between ``start`` and ``stop``, released at ``aclose``."""

    def __init__(self, host: str, port: int, handler: Handler, unreadable: Unreadable) -> None:
        self.host = host
        self.port = port
        self._handler = handler
        self._unreadable = unreadable
        self._sock: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._closing_writers: set[asyncio.StreamWriter] = set()
        self.accepted = 0
        """Connections accepted so far (keep-alive reuses one for many requests)."""

    @property
    def listening(self) -> bool:
        return self._accepting is not None

    def bind(self) -> None:
        """Reserve the port (the ephemeral one the system picks when ``port`` is 0)."""
        self._sock = _bound_socket(self.host, self.port)
        self.port = self._sock.getsockname()[1]

    def start(self) -> None:
        """Listen and accept connections. Needs a running event loop."""
        if self._accepting is not None:
            return
        if self._sock is None:
            self.bind()
        assert self._sock is not None
        self._sock.listen(_BACKLOG)
        self._accepting = asyncio.get_running_loop().create_task(self._accept(self._sock))

    def stop(self) -> None:
        """Stop listening, cut every open connection, and keep the port reserved (refusing)."""
        self._release()
        self._sock = _bound_socket(self.host, self.port)

    def _release(self) -> None:
        if self._accepting is not None:
            self._accepting.cancel()
            self._accepting = None
        if self._sock is not None:
            with contextlib.suppress(RuntimeError):
                # Unregister now: the socket is closed below, and its number may be reused at once.
                asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        for writer in self._writers:
            sock = writer.get_extra_info("socket")
            if sock is not None:
                # The transport closes its socket on the next loop turn; the client must see the
                # connection end before its next request, so end it now.
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            writer.transport.abort()
        self._closing_writers |= self._writers
        self._writers = set()
        for task in self._tasks:
            task.cancel()

    async def aclose(self) -> None:
        """Release the port, cut every connection, and wait for their handlers to end."""
        self._release()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        closing, self._closing_writers = self._closing_writers, set()
        for writer in closing:
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _accept(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(sock)
            except OSError:
                await asyncio.sleep(_ACCEPT_RETRY_S)  # e.g. out of file descriptors: try again soon
                continue
            try:
                reader, writer = await asyncio.open_connection(sock=conn)
            except asyncio.CancelledError:
                conn.close()
                raise
            except OSError:
                conn.close()
                continue
            self.accepted += 1
            self._writers.add(writer)
            task = loop.create_task(self._connection(reader, writer))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = HttpConnection(reader, writer)
        try:
            while True:
                try:
                    request = await connection.next_request()
                except HttpError as error:
                    await connection.refuse(error, self._unreadable(error))
                    break
                if request is None:
                    break
                await self._handler(request, connection)
                if not connection.next_cycle():
                    break
        except ConnectionError:
            pass
        except asyncio.CancelledError:
            writer.transport.abort()
            raise
        finally:
            self._writers.discard(writer)
            self._closing_writers.add(writer)
            writer.close()
            await self._wait_closed(writer)

    async def _wait_closed(self, writer: asyncio.StreamWriter) -> None:
        """Wait until the socket is really closed (flushed, then FIN), cutting it if that drags on."""
        try:
            await asyncio.wait_for(writer.wait_closed(), _CLOSE_WAIT_S)
        except asyncio.CancelledError:
            writer.transport.abort()
            raise
        except Exception:
            writer.transport.abort()  # aclose still waits for this one
        else:
            self._closing_writers.discard(writer)
