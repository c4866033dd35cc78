"""httpx's transport for provider calls: HTTP/1.1 on h11 over anyio streams, with a keep-alive pool.

``H11Transport`` is what every ``httpx.AsyncClient`` of ``rmcli.api`` sends through (unless an
embedder passes a transport of its own, or a proxy is configured: httpx mounts its own transport
for the proxy variables, as before). It does what httpcore's pool did for us, for less: httpcore
(1.0) walks its whole pool, and each idle connection against every other, whenever a request
starts or a reply ends, and spends several awaits and scopes per request besides; here a request
takes an idle connection of its origin in O(1) or opens one, writes its head and body in one
``send``, and a reply read to its end puts the connection back. Measured in one run against the
sandbox (issue 19; 2,000 calls at concurrency 32, CPU per call): ``httpx.AsyncClient.post`` over
this transport 0.41 ms, over httpcore 2.8 ms, over ``httpx-aiohttp`` 0.34 ms; bare aiohttp 0.19
ms. ``httpx-aiohttp`` is a little cheaper but keeps fewer guarantees: it sends no ``trace``
events, so a TLS handshake that never ends runs to the attempt's timeout instead of
``TLS_HANDSHAKE_TIMEOUT_S``, and a timeout cannot say it was still connecting.

What the rest of ``rmcli`` relies on, kept as httpcore had it:

- Errors are httpx's: ``ConnectError`` (with the OS's or OpenSSL's exception as its cause, which
  ``rmcli.connection_errors`` reads), ``ConnectTimeout``, ``ReadError``, ``WriteError``,
  ``RemoteProtocolError`` ("Server disconnected without sending a response." when a connection
  closes before a reply; a body cut short is h11's own message).
- The ``trace`` request extension hears ``connection.connect_tcp.started``/``.complete`` and
  ``connection.start_tls.started``/``.complete`` (``rmcli.connection_errors.ConnectionWatch``
  bounds the TLS handshake by them).
- A reply that is not read to its end, or whose request is cancelled at any await, closes its
  connection at once (never back to the pool half-read); one read to its end goes back to the
  pool unless the server said ``Connection: close``. A pooled connection that the server closed
  while it was idle (readable when idle) or that idled longer than ``KEEPALIVE_EXPIRY_S`` is
  dropped before it is used.
- TLS is the caller's ``ssl.SSLContext`` (``rmcli.api``'s verifying one), with the URL's host for
  SNI and the certificate check; bodies are passed on raw (``rmcli.transport`` decodes them
  within its limits); client timeouts, when given, are honoured, but ``rmcli`` gives none (its
  limits are cancel scopes).
- ``max_connections`` bounds the connections open at once (a request waits for one to be
  released past it); ``max_keepalive_connections`` bounds the idle ones kept.

The anyio asyncio backend is the one ``rmcli`` runs on; nothing here is asyncio-only.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import Any, Final

import anyio
import anyio.abc
import h11
import httpx
from anyio.streams.tls import TLSStream

__all__ = ["KEEPALIVE_EXPIRY_S", "H11Transport"]

KEEPALIVE_EXPIRY_S: Final = 5.0
"""How long an idle pooled connection is kept (httpx's default): servers commonly close theirs
after 5 to 60 s, and a connection they closed is a request that fails."""

_READ_BYTES: Final = 64 * 1024
"""The most read from a socket at once."""

_MAX_HEAD_BYTES: Final = 100 * 1024
"""The largest response head h11 will buffer (httpcore's figure): a provider's head is a few
hundred bytes; more is a broken or hostile server."""

_WRITE_BATCH_BYTES: Final = 64 * 1024
"""A request's head and body go out in one ``send`` up to this size; a larger body in pieces."""

_DEFAULT_PORTS: Final = {"http": 80, "https": 443}

_CONNECT_ERRORS: Final = (OSError, anyio.BrokenResourceError, anyio.EndOfStream)
_IO_ERRORS: Final = (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError)

Origin = tuple[str, str, int]
Trace = Callable[[str, Mapping[str, Any]], Awaitable[None]]


def _readable(sock: socket.socket | None) -> bool:
    """Whether ``sock`` has something to read (or is gone): an idle keep-alive connection that
    does was closed by the server, or sent what no request asked for, and is not reused."""
    if sock is None or sock.fileno() < 0:
        return True
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


@contextlib.contextmanager
def _limit(seconds: float | None, error: type[httpx.TimeoutException]) -> Iterator[None]:
    """``error`` after ``seconds`` (a client timeout); nothing when None, as ``rmcli`` sets it."""
    if seconds is None:
        yield
        return
    try:
        with anyio.fail_after(seconds):
            yield
    except TimeoutError as exc:
        raise error(f"timed out after {seconds} s") from exc


class _Connection:
    """One HTTP/1.1 connection: its stream, its h11 state, and when it went idle."""

    __slots__ = ("h11", "idle_since", "origin", "sock", "stream")

    def __init__(self, origin: Origin, stream: anyio.abc.ByteStream, sock: socket.socket | None) -> None:
        self.origin = origin
        self.stream = stream
        self.sock = sock
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=_MAX_HEAD_BYTES)
        self.idle_since = 0.0

    def reusable(self, now: float) -> bool:
        """Whether this idle connection may carry another request now."""
        return now - self.idle_since < KEEPALIVE_EXPIRY_S and not _readable(self.sock)

    async def send(self, data: bytes) -> None:
        try:
            await self.stream.send(data)
        except _IO_ERRORS as exc:
            raise httpx.WriteError(str(exc) or type(exc).__name__) from exc

    async def next_event(self, timeout_s: float | None = None) -> Any:
        """h11's next event from the server, reading as it needs."""
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                raise httpx.RemoteProtocolError(str(exc)) from exc
            if event is not h11.NEED_DATA:
                return event
            try:
                with _limit(timeout_s, httpx.ReadTimeout):
                    data = await self.stream.receive(_READ_BYTES)
            except anyio.EndOfStream:
                data = b""
            except _IO_ERRORS as exc:
                raise httpx.ReadError(str(exc) or type(exc).__name__) from exc
            if not data and self.h11.their_state is h11.SEND_RESPONSE:
                raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
            self.h11.receive_data(data)

    async def close(self) -> None:
        """Close at once, whatever is pending (shielded: a cancelled caller still closes)."""
        with anyio.CancelScope(shield=True):
            await anyio.aclose_forcefully(self.stream)


class _Body(httpx.AsyncByteStream):
    """A reply's body as it arrives, still encoded; closing it returns its connection to the pool
    when the reply was read to its end, else closes it."""

    def __init__(self, pool: H11Transport, connection: _Connection, read_timeout_s: float | None) -> None:
        self._pool = pool
        self._connection: _Connection | None = connection
        self._read_timeout_s = read_timeout_s
        self._complete = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        connection = self._connection
        if connection is None or self._complete:
            return
        while True:
            event = await connection.next_event(self._read_timeout_s)
            if type(event) is h11.Data:
                yield bytes(event.data)
            elif type(event) is h11.EndOfMessage:
                self._complete = True
                return

    async def aclose(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await self._pool._release(connection, self._complete)


class H11Transport(httpx.AsyncBaseTransport):
    """HTTP/1.1 for an ``httpx.AsyncClient``: h11 for the protocol, anyio streams for the I/O, a
    keep-alive pool per origin (module docstring). ``ssl_context`` verifies https servers."""

    def __init__(
        self,
        ssl_context: ssl.SSLContext,
        *,
        max_connections: int = 100,
        max_keepalive_connections: int = 32,
    ) -> None:
        self._ssl_context = ssl_context
        self._max_connections = max_connections
        self._max_idle = max_keepalive_connections
        self._idle: dict[Origin, list[_Connection]] = {}
        self._idle_order: dict[_Connection, None] = {}  # every idle connection, longest idle first
        self._busy = 0
        self._waiters: deque[anyio.Event] = deque()
        self._closed = False

    @property
    def open_connections(self) -> int:
        """Connections open now: carrying a request, or idle in the pool."""
        return self._busy + len(self._idle_order)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` on a pooled or new connection and return the reply with its head read
        and its body to be streamed."""
        if self._closed:
            raise RuntimeError("the transport is closed")
        url = request.url
        scheme = url.scheme
        if scheme not in _DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}: use http or https")
        origin = (scheme, url.host, url.port or _DEFAULT_PORTS[scheme])
        timeouts: Mapping[str, float | None] = request.extensions.get("timeout") or {}
        with _limit(timeouts.get("pool"), httpx.PoolTimeout):
            connection = await self._take(origin)
        try:
            if connection is None:
                trace: Trace | None = request.extensions.get("trace")
                sni = request.extensions.get("sni_hostname") or url.host
                connection = await self._connect(origin, sni, trace, timeouts.get("connect"))
            with _limit(timeouts.get("write"), httpx.WriteTimeout):
                await self._send_request(connection, request)
            read_timeout_s = timeouts.get("read")
            while True:
                event = await connection.next_event(read_timeout_s)
                if type(event) is h11.Response:
                    break
                if type(event) is not h11.InformationalResponse:  # pragma: no cover - h11 gives no other
                    raise httpx.RemoteProtocolError(f"unexpected {type(event).__name__} before a response")
        except BaseException:
            if connection is not None:
                await connection.close()
            self._free()
            raise
        return httpx.Response(
            status_code=event.status_code,
            headers=event.headers.raw_items(),
            stream=_Body(self, connection, read_timeout_s),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": bytes(event.reason)},
        )

    async def aclose(self) -> None:
        """Close every idle connection; those carrying a reply close when it is closed."""
        self._closed = True
        idle, self._idle_order = list(self._idle_order), {}
        self._idle.clear()
        for connection in idle:
            await connection.close()

    # -- the pool ------------------------------------------------------------------------------

    async def _take(self, origin: Origin) -> _Connection | None:
        """A reusable idle connection to ``origin``, or None with room counted for a new one
        (waiting while ``max_connections`` are busy; an idle one of another origin is closed)."""
        stale: list[_Connection] = []
        try:
            while True:
                idle = self._idle.get(origin)
                now = time.monotonic()
                while idle:
                    connection = idle.pop()
                    del self._idle_order[connection]
                    if connection.reusable(now):
                        self._busy += 1
                        return connection
                    stale.append(connection)
                if self._busy + len(self._idle_order) < self._max_connections:
                    self._busy += 1
                    return None
                if self._idle_order:  # room for ours: the longest idle of another origin goes
                    oldest = next(iter(self._idle_order))
                    del self._idle_order[oldest]
                    self._idle[oldest.origin].remove(oldest)
                    stale.append(oldest)
                    continue
                released = anyio.Event()
                self._waiters.append(released)
                try:
                    await released.wait()
                finally:
                    with contextlib.suppress(ValueError):
                        self._waiters.remove(released)
        finally:
            for connection in stale:
                await connection.close()

    def _free(self) -> None:
        """A busy connection was closed or put back: wake one request waiting for room."""
        self._busy -= 1
        if self._waiters:
            self._waiters.popleft().set()

    async def _release(self, connection: _Connection, complete: bool) -> None:
        """Put ``connection`` back in the pool when its exchange ended cleanly, else close it."""
        state = connection.h11
        keep = (
            complete
            and not self._closed
            and state.our_state is h11.DONE
            and state.their_state is h11.DONE
            and len(self._idle_order) < self._max_idle
        )
        if keep:
            state.start_next_cycle()
            connection.idle_since = time.monotonic()
            self._idle.setdefault(connection.origin, []).append(connection)
            self._idle_order[connection] = None
            self._free()
            return
        try:
            await connection.close()
        finally:
            self._free()

    # -- one connection ------------------------------------------------------------------------

    async def _connect(
        self, origin: Origin, sni: str, trace: Trace | None, timeout_s: float | None
    ) -> _Connection:
        scheme, host, port = origin
        try:
            with _limit(timeout_s, httpx.ConnectTimeout):
                if trace is not None:
                    await trace("connection.connect_tcp.started", {"host": host, "port": port})
                stream: anyio.abc.ByteStream = await anyio.connect_tcp(host, port)
                sock = stream.extra(anyio.abc.SocketAttribute.raw_socket, None)
                if sock is not None:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if trace is not None:
                    await trace("connection.connect_tcp.complete", {"return_value": stream})
                if scheme == "https":
                    if trace is not None:
                        await trace("connection.start_tls.started", {"server_hostname": sni})
                    try:
                        stream = await TLSStream.wrap(
                            stream, hostname=sni, ssl_context=self._ssl_context, standard_compatible=False
                        )
                    except BaseException:
                        await anyio.aclose_forcefully(stream)
                        raise
                    if trace is not None:
                        await trace("connection.start_tls.complete", {"return_value": stream})
        except _CONNECT_ERRORS as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
        return _Connection(origin, stream, sock)

    async def _send_request(self, connection: _Connection, request: httpx.Request) -> None:
        """The request's head and body, in as few writes as the body allows."""
        state = connection.h11
        try:
            url, headers = request.url, request.headers
            head = h11.Request(method=request.method, target=url.raw_path, headers=headers.raw)
            pending = [state.send(head) or b""]
            size = len(pending[0])
            stream = request.stream
            assert isinstance(stream, httpx.AsyncByteStream)
            async for chunk in stream:
                if not chunk:
                    continue
                data = state.send(h11.Data(data=chunk)) or b""
                pending.append(data)
                size += len(data)
                if size >= _WRITE_BATCH_BYTES:
                    await connection.send(b"".join(pending))
                    pending, size = [], 0
            pending.append(state.send(h11.EndOfMessage()) or b"")
        except h11.LocalProtocolError as exc:
            raise httpx.LocalProtocolError(str(exc)) from exc
        await connection.send(b"".join(pending))
