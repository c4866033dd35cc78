"""HTTP/1.1 for provider calls: llhttp (``httptools``) parses the replies, asyncio's transports
carry the bytes, and a keep-alive pool keeps the connections.

``Http1Transport`` is both httpx's transport (``handle_async_request``: what an
``httpx.AsyncClient`` of ``rmcli.api`` sends through unless an embedder passes a transport of its
own, or a proxy is configured) and, without httpx's API in between, the transport
``rmcli.transport`` calls directly (``request``) for a provider that no proxy, hook or cookie
concerns (``rmcli.http_client.ProviderClient.direct``). Chosen by measurement (issue 19; 2,000
calls at concurrency 32 against the sandbox, CPU per call): httpx's own pool (httpcore) 2.8 ms,
httpx's API over our earlier h11 transport 0.41 ms, that transport alone 0.19 ms, bare aiohttp
0.15 ms. What the earlier one spent went to h11's pure-Python parsing and validation (about
50 µs a call against llhttp's 2), anyio's stream wrappers (about 35 µs) and httpx's request and
response objects (about 200 µs); this module keeps none of them on the direct path.

What the rest of ``rmcli`` relies on:

- Errors are httpx's: ``ConnectError`` (with the OS's or OpenSSL's exception as its cause, which
  ``rmcli.connection_errors`` reads), ``ReadError``, ``RemoteProtocolError`` ("Server disconnected
  without sending a response." when a connection closes before a reply; a body cut short says
  how much arrived), ``LocalProtocolError`` for a header that cannot be sent (a CR or LF in a
  value would let it forge a header: refused, never sent).
- The ``trace`` callback hears ``connection.connect_tcp.started``/``.complete`` and
  ``connection.start_tls.started``/``.complete``, as httpcore's did (``ConnectionWatch`` follows
  the connection's phase by them). On httpx's way the watch's cancel scope bounds a TLS
  handshake; on the direct way ``request`` bounds it itself (``tls_timeout_s``), raising
  ``TLSHandshakeTimeout``, so a request on a pooled connection pays for no scope.
- A reply that is not read to its end, or whose request is cancelled at any await, closes its
  connection at once (never back to the pool half-read); one read to its end goes back to the
  pool unless the server said ``Connection: close``, sent more than was asked for, or ended the
  body with the connection. A pooled connection that the server closed while it was idle, or
  that idled longer than ``KEEPALIVE_EXPIRY_S``, is dropped before it is used.
- A reply's head larger than ``MAX_HEAD_BYTES`` is a ``RemoteProtocolError``; a body arriving
  faster than it is read stops being read from the socket past ``_PAUSE_BYTES`` (so a runaway
  provider cannot fill memory behind the caller's back: ``rmcli.transport`` counts the rest).
- TLS is the caller's ``ssl.SSLContext`` (``rmcli.api``'s verifying one), with the URL's host for
  SNI and the certificate check; bodies are passed on raw (``rmcli.transport`` decodes them
  within its limits); httpx's client timeouts, when given, are honoured on its path; ``rmcli``
  gives none (its limits are cancel scopes).
- ``Reply.next_chunk(within_s)`` gives a body's next bytes, or ``BodyIdle`` when none arrive in
  time: a stream's idle and first-token limits (``rmcli.transport``) kept by one timer per
  connection, not a cancel scope per chunk. ``Http1Transport.send(..., within_s=...)`` gives a
  whole request (its connection, head and body) an end kept the same way, ``BodyIdle`` past it:
  a non-streamed attempt's timeout, without a cancel scope around each attempt.
- ``max_connections`` bounds the connections open at once (a request waits for one to be
  released past it); ``max_keepalive_connections`` bounds the idle ones kept.

Asyncio-only: ``rmcli`` runs on anyio's asyncio backend, whose cancel scopes cancel the awaits
here like any other.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import re
import select
import socket
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import urlsplit

import anyio
import httptools
import httpx

__all__ = [
    "KEEPALIVE_EXPIRY_S",
    "MAX_HEAD_BYTES",
    "BodyIdle",
    "Endpoint",
    "Http1Transport",
    "Reply",
    "TLSHandshakeTimeout",
    "head_bytes",
    "parse_endpoint",
]

KEEPALIVE_EXPIRY_S: Final = 5.0
"""How long an idle pooled connection is kept (httpx's default): servers commonly close theirs
after 5 to 60 s, and a connection they closed is a request that fails."""

MAX_HEAD_BYTES: Final = 100 * 1024
"""The largest reply head accepted (httpcore's figure): a provider's head is a few hundred bytes;
more is a broken or hostile server."""

_PAUSE_BYTES: Final = 256 * 1024
"""Body bytes received and not yet read past which the socket is no longer read."""

_DEFAULT_PORTS: Final = {"http": 80, "https": 443}

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FIELD_VALUE = re.compile(rb"[^\x00\r\n]*")

Origin = tuple[str, str, int]
Trace = Callable[[str, Mapping[str, Any]], Awaitable[None]]
Headers = Sequence[tuple[bytes, bytes]]


class Endpoint:
    """A URL as a request needs it: its origin, the request target, the Host header."""

    __slots__ = ("host", "origin", "target", "url")

    def __init__(self, url: str, origin: Origin, target: bytes, host: bytes) -> None:
        self.url = url
        self.origin = origin
        self.target = target
        self.host = host

    @classmethod
    def of(cls, url: httpx.URL) -> Endpoint:
        """httpx's parsed ``url`` as an endpoint."""
        scheme = url.scheme
        if scheme not in _DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}: use http or https")
        return cls(str(url), (scheme, url.host, url.port or _DEFAULT_PORTS[scheme]), url.raw_path, url.netloc)


def head_bytes(method: bytes, target: bytes, headers: Headers) -> bytes:
    """A request's head, every header checked first: ``httpx.LocalProtocolError`` for a name that
    is not a token or a value with a CR, LF or NUL (which would end the header early and let the
    rest pose as another)."""
    return head_lines(method, target, headers) + b"\r\n"


def head_lines(method: bytes, target: bytes, headers: Headers) -> bytes:
    """A request's head without the empty line that ends it, checked as ``head_bytes`` says: a
    caller that sends the same head again and again adds its varying headers to a copy."""
    lines = [method, b" ", target, b" HTTP/1.1\r\n"]
    for name, value in headers:
        if _TOKEN.fullmatch(name) is None:
            raise httpx.LocalProtocolError(f"illegal header name {name[:40]!r}")
        if _FIELD_VALUE.fullmatch(value) is None:
            raise httpx.LocalProtocolError(f"illegal character in the value of header {name.decode()!r}")
        lines += (name, b": ", value, b"\r\n")
    return b"".join(lines)


def _readable(sock: Any) -> bool:
    """Whether ``sock`` has something to read (or is gone): an idle keep-alive connection that
    does was closed by the server, or sent what no request asked for, and is not reused. (The
    loop hears it too, but perhaps not yet in this turn.)"""
    if sock is None or sock.fileno() < 0:
        return True
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    return bool(poller.poll(0))


class BodyIdle(Exception):
    """Nothing arrived by the deadline a wait on the connection was given: no byte of a reply's
    body within the time ``Reply.next_chunk`` was given, or a request not done by the end
    ``Http1Transport.send`` was given (its connection, its head or its body late)."""


_LATE: Final = object()


_NO_LIMIT: Final = contextlib.nullcontext()
_NO_TIMEOUTS: Final[Mapping[str, float | None]] = MappingProxyType({})


def _limit(
    seconds: float | None, error: type[httpx.TimeoutException]
) -> contextlib.AbstractContextManager[None]:
    """``error`` after ``seconds`` (an httpx client timeout); nothing when None, as ``rmcli`` sets it
    (then a shared empty context: no generator to run on every request and every chunk)."""
    return _NO_LIMIT if seconds is None else _limited(seconds, error)


@contextlib.contextmanager
def _limited(seconds: float, error: type[httpx.TimeoutException]) -> Iterator[None]:
    try:
        with anyio.fail_after(seconds):
            yield
    except TimeoutError as exc:
        raise error(f"timed out after {seconds} s") from exc


@contextlib.contextmanager
def _by(deadline: float | None) -> Iterator[None]:
    """``BodyIdle`` at ``deadline`` (the loop's clock) for a wait that cannot take one itself (a
    connection being made, room in the pool): rare waits, where a cancel scope costs nothing."""
    if deadline is None:
        yield
        return
    try:
        with anyio.fail_after(max(deadline - asyncio.get_running_loop().time(), 0.0)):
            yield
    except TimeoutError:
        raise BodyIdle from None


@functools.lru_cache(maxsize=256)
def parse_endpoint(url: str) -> Endpoint:
    """``url`` as an endpoint (parsed once: the endpoints of a process are few);
    ``httpx.UnsupportedProtocol`` for a scheme other than http and https, or no host."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise httpx.UnsupportedProtocol(f"unsupported URL {url!r}: use http:// or https:// and a host")
    default = _DEFAULT_PORTS[scheme]
    port = parts.port or default
    host = parts.hostname.encode("idna")
    shown = b"[" + host + b"]" if b":" in host else host  # an IPv6 literal in brackets
    if port != default:
        shown += b":%d" % port
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Endpoint(url, (scheme, parts.hostname, port), target.encode("ascii"), shown)


class TLSHandshakeTimeout(httpx.ConnectTimeout):
    """A TLS handshake ran past the limit the request gave it: most likely a server that does not
    speak TLS and waits, silent, for a request line."""


class _Unasked(Exception):
    """The server sent a reply no request asked for."""


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: its asyncio transport, llhttp's parser fed as bytes arrive, and
    the reply in progress (head, body pieces not yet read, how it ended)."""

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.idle_since = 0.0
        self.reusable_after = True  # False once it must close when its reply ends
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[object] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop's, once connected
        self._deadline: float | None = None  # when the wait in progress gives up (BodyIdle)
        self._timer: asyncio.TimerHandle | None = None  # due at or before that deadline
        self._paused = False
        self._lost: BaseException | None = None
        self._gone = False
        self._begin_reply(head_only=False)

    def _begin_reply(self, *, head_only: bool) -> None:
        self.asked = False
        self.head_only = head_only
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_done = False
        self.complete = False
        self.until_close = False  # the body ends with the connection (no length, not chunked)
        self.body: list[bytes] = []
        self.received = 0
        self.head_size = 0
        self.informational = False
        self.error: Exception | None = None

    # -- what the loop tells us ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._loop = asyncio.get_running_loop()  # once: each look-up is a system call (getpid)

    def now(self) -> float:
        """The loop's time (the loop looked up once it connected: each look-up is a getpid)."""
        return (self._loop or asyncio.get_running_loop()).time()

    def data_received(self, data: bytes) -> None:
        if not self.asked or self.complete:
            self.reusable_after = False  # nothing was asked: a broken or hostile server
            return
        if not self.head_done:
            self.head_size += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _Unasked):  # bytes after a whole reply: the reply
                self.reusable_after = False  # stands, the connection is not reused
            else:
                self.error = httpx.RemoteProtocolError(f"malformed reply: {exc}")
        if not self.head_done and self.head_size > MAX_HEAD_BYTES and self.error is None:
            self.error = httpx.RemoteProtocolError(f"reply head larger than {MAX_HEAD_BYTES} bytes")
        if self.received > _PAUSE_BYTES and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self._gone = True
        self.reusable_after = False
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._gone = True
        self._lost = exc
        self.reusable_after = False
        self._wake()

    # -- what llhttp tells us -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:
            raise _Unasked

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:  # 100 Continue and the like: the real reply follows
            self.headers = []
            self.informational = True
            return
        self.status = status
        self.head_done = True
        if self.head_only:  # a reply to HEAD has no body, whatever its Content-Length says
            self.complete = True
            self.reusable_after = False
            return
        framed = status in (204, 304) or any(
            name.lower() in (b"content-length", b"transfer-encoding") for name, _ in self.headers
        )
        self.until_close = not framed

    def on_body(self, body: bytes) -> None:
        if not self.complete:
            self.body.append(body)
            self.received += len(body)

    def on_message_complete(self) -> None:
        if self.informational:
            self.informational = False
            return
        if not self._parser.should_keep_alive():
            self.reusable_after = False
        self.complete = True

    # -- what a request does ----------------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self, deadline: float | None = None) -> None:
        """Until the connection has news, or ``BodyIdle`` at ``deadline``. The deadline is kept
        by one timer per connection, left in place from wait to wait and moved only when it
        fires early or a wait needs it sooner: a stream's chunks, each waited for with a later
        deadline, cost no timer each (nor a cancel scope each, as a limit around the wait would)."""
        loop = self._loop or asyncio.get_running_loop()  # as ``now`` finds it
        waiter = self._waiter = loop.create_future()
        if deadline is not None:
            self._deadline = deadline
            timer = self._timer
            if timer is None or timer.when() > deadline:
                if timer is not None:
                    timer.cancel()
                self._timer = loop.call_at(deadline, self._on_timer)
        try:
            await waiter
        finally:
            self._waiter = None
            self._deadline = None
        if waiter.result() is _LATE:
            raise BodyIdle

    def _on_timer(self) -> None:
        self._timer = None
        deadline, waiter = self._deadline, self._waiter
        if deadline is None or waiter is None or waiter.done():
            return  # no wait with a deadline in progress: nothing to do until the next
        loop = waiter.get_loop()
        if loop.time() >= deadline:
            waiter.set_result(_LATE)
        else:  # set for an earlier wait, which ended: on to this one's deadline
            self._timer = loop.call_at(deadline, self._on_timer)

    def send(self, data: bytes, *, head_only: bool) -> None:
        """Send a request; its reply is read by ``read_head`` and ``read_body``."""
        self._begin_reply(head_only=head_only)
        self.asked = True
        transport = self.transport
        if transport is None or transport.is_closing() or self._gone:
            raise httpx.WriteError("the connection was closed")
        transport.write(data)

    def _ended(self, before_head: bool) -> Exception:
        """What the end of the connection means for the reply in progress."""
        lost = self._lost
        if before_head:
            if isinstance(lost, OSError):
                error: Exception = httpx.ReadError(str(lost) or type(lost).__name__)
            else:
                error = httpx.RemoteProtocolError("Server disconnected without sending a response.")
        else:
            error = httpx.RemoteProtocolError(
                f"peer closed connection without sending complete message body: received "
                f"{self.received} bytes"
            )
        error.__cause__ = lost
        return error

    async def read_head(self, deadline: float | None = None) -> None:
        """Wait for the reply's head (its status and headers); ``BodyIdle`` when it has not come
        by ``deadline`` (the loop's clock)."""
        while not self.head_done:
            if self.error is not None:
                raise self.error
            if self._gone:
                raise self._ended(before_head=True)
            await self._wait(deadline)

    async def read_body(self, deadline: float | None = None) -> bytes | None:
        """The body's next bytes as they arrived, or None once it ended; ``BodyIdle`` when none
        came by ``deadline`` (the loop's clock)."""
        while True:
            if self.body:
                data = self.body[0] if len(self.body) == 1 else b"".join(self.body)
                self.body = []
                self.received = 0
                if self._paused and self.transport is not None:
                    self._paused = False
                    self.transport.resume_reading()
                return data
            if self.complete:
                return None
            if self.error is not None:
                raise self.error
            if self._gone:
                if self.until_close:
                    self.complete = True
                    return None
                raise self._ended(before_head=False)
            await self._wait(deadline)

    def reusable(self, now: float) -> bool:
        """Whether this idle connection may carry another request now."""
        transport = self.transport
        return (
            self.reusable_after
            and not self._gone
            and transport is not None
            and not transport.is_closing()
            and now - self.idle_since < KEEPALIVE_EXPIRY_S
            and not _readable(transport.get_extra_info("socket"))
        )

    def close(self) -> None:
        """Close at once, whatever is pending."""
        self.reusable_after = False
        if self.transport is not None:
            self.transport.abort()


class Reply:
    """A reply whose head arrived: its status and headers, its body to be read (raw: a
    Content-Encoding is left to the caller). Closing it returns its connection to the pool when
    the body was read to its end, else closes the connection."""

    __slots__ = (
        "_connection", "_deadline", "_headers", "_pool", "_read_timeout_s", "raw_headers", "status_code"
    )

    is_stream_consumed: Final = False
    """As ``httpx.Response``'s: the body is still to be read."""

    def __init__(
        self,
        pool: Http1Transport,
        connection: _Connection,
        read_timeout_s: float | None,
        deadline: float | None = None,
    ) -> None:
        self._pool = pool
        self._connection: _Connection | None = connection
        self._read_timeout_s = read_timeout_s
        self._deadline = deadline  # the request's end (``Http1Transport.send``): BodyIdle past it
        self.status_code: int = connection.status
        self.raw_headers: list[tuple[bytes, bytes]] = connection.headers
        self._headers: dict[str, str] | None = None

    @property
    def headers(self) -> dict[str, str]:
        """The headers by lower-case name, repeated ones joined by ", " (as httpx's ``items()``)."""
        if self._headers is None:
            joined: dict[str, str] = {}
            for raw_name, raw_value in self.raw_headers:
                name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
                joined[name] = f"{joined[name]}, {value}" if name in joined else value
            self._headers = joined
        return self._headers

    async def next_chunk(self, within_s: float) -> bytes | None:
        """The body's next bytes as they arrive, None at its end; ``BodyIdle`` when none arrive
        within ``within_s`` seconds. A stream's idle and first-token limits, checked this way,
        cost a timer per chunk instead of a cancel scope."""
        connection = self._connection
        if connection is None:
            return None
        deadline = connection.now() + within_s
        with _limit(self._read_timeout_s, httpx.ReadTimeout):
            return await connection.read_body(deadline)

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        """The body's bytes as they arrive (``BodyIdle`` past the request's end, when it has one)."""
        connection = self._connection
        if connection is None:
            return
        while True:
            with _limit(self._read_timeout_s, httpx.ReadTimeout):
                data = await connection.read_body(self._deadline)
            if data is None:
                return
            yield data

    def close(self) -> None:
        """Done with the reply: its connection goes back to the pool when the body was read to
        its end, else it is closed (aborted: at once, nothing to wait for)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            self._pool._release(connection)

    async def aclose(self) -> None:
        """``close``, as httpx's streams are closed."""
        self.close()


class _Body(httpx.AsyncByteStream):
    """A ``Reply``'s body as httpx's stream."""

    def __init__(self, reply: Reply) -> None:
        self._reply = reply

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for data in self._reply.aiter_raw():
            yield data

    async def aclose(self) -> None:
        await self._reply.aclose()


class Http1Transport(httpx.AsyncBaseTransport):
    """HTTP/1.1 with a keep-alive pool per origin (module docstring). ``ssl_context`` verifies
    https servers."""

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
        self._loop: asyncio.AbstractEventLoop | None = None

    def _clock(self) -> float:
        """The loop's time, the loop looked up once (each look-up is a getpid system call)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            loop = self._loop = asyncio.get_running_loop()
        return loop.time()

    @property
    def open_connections(self) -> int:
        """Connections open now: carrying a request, or idle in the pool."""
        return self._busy + len(self._idle_order)

    async def request(
        self,
        method: bytes,
        endpoint: Endpoint,
        headers: Headers,
        body: bytes,
        *,
        trace: Trace | None = None,
        tls_timeout_s: float | None = None,
    ) -> Reply:
        """Send a request on a pooled or new connection and return the reply with its head read
        and its body to be read. ``headers`` are sent as given (the caller's Host and
        Content-Length included). A new https connection's TLS handshake is given at most
        ``tls_timeout_s`` (``TLSHandshakeTimeout`` past it)."""
        data = head_bytes(method, endpoint.target, headers) + body
        head_only = method == b"HEAD"
        return await self.send(endpoint, data, head_only=head_only, trace=trace, tls_timeout_s=tls_timeout_s)

    async def send(
        self,
        endpoint: Endpoint,
        data: bytes,
        *,
        head_only: bool = False,
        trace: Trace | None = None,
        tls_timeout_s: float | None = None,
        within_s: float | None = None,
    ) -> Reply:
        """``request`` for a request already in bytes (its head built by ``head_bytes``, then its
        body); ``head_only`` for a HEAD request, whose reply has no body. With ``within_s``, the
        request must be done within that many seconds, its body read included: ``BodyIdle``
        past that (kept by the connection's timer: no cancel scope around the request)."""
        deadline = None if within_s is None else self._clock() + within_s
        origin = endpoint.origin
        return await self._exchange(origin, data, head_only, trace, None, None, tls_timeout_s, deadline)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """httpx's side: ``request`` sent as ``request`` sends, the reply as httpx's response."""
        endpoint = Endpoint.of(request.url)
        stream = request.stream
        assert isinstance(stream, httpx.AsyncByteStream)
        body = b"".join([chunk async for chunk in stream])
        method = request.method.encode("ascii")
        data = head_bytes(method, endpoint.target, request.headers.raw) + body
        timeouts: Mapping[str, float | None] = request.extensions.get("timeout") or {}
        sni = request.extensions.get("sni_hostname") or None
        reply = await self._exchange(
            endpoint.origin, data, method == b"HEAD", request.extensions.get("trace"), timeouts, sni
        )
        return httpx.Response(
            status_code=reply.status_code,
            headers=reply.raw_headers,
            stream=_Body(reply),
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def aclose(self) -> None:
        """Close every idle connection; those carrying a reply close when it is closed."""
        self._closed = True
        idle, self._idle_order = list(self._idle_order), {}
        self._idle.clear()
        for connection in idle:
            connection.close()

    async def _exchange(
        self,
        origin: Origin,
        data: bytes,
        head_only: bool,
        trace: Trace | None,
        timeouts: Mapping[str, float | None] | None,
        sni: str | None = None,
        tls_timeout_s: float | None = None,
        deadline: float | None = None,
    ) -> Reply:
        if self._closed:
            raise RuntimeError("the transport is closed")
        timeouts = timeouts or _NO_TIMEOUTS  # the direct way gives none
        with _limit(timeouts.get("pool"), httpx.PoolTimeout):
            connection = await self._take(origin, deadline)
        try:
            if connection is None:
                connect_s = timeouts.get("connect")
                with _by(deadline):
                    host = sni or origin[1]
                    connection = await self._connect(origin, host, trace, connect_s, tls_timeout_s)
            connection.send(data, head_only=head_only)
            with _limit(timeouts.get("read"), httpx.ReadTimeout):
                await connection.read_head(deadline)
        except BaseException:
            if connection is not None:
                connection.close()
            self._free()
            raise
        return Reply(self, connection, timeouts.get("read"), deadline)

    # -- the pool ------------------------------------------------------------------------------

    async def _take(self, origin: Origin, deadline: float | None = None) -> _Connection | None:
        """A reusable idle connection to ``origin``, or None with room counted for a new one
        (waiting while ``max_connections`` are busy, until ``deadline``; an idle one of another
        origin is closed)."""
        while True:
            idle = self._idle.get(origin)
            now = time.monotonic()
            while idle:
                connection = idle.pop()
                del self._idle_order[connection]
                if connection.reusable(now):
                    self._busy += 1
                    return connection
                connection.close()
            if self._busy + len(self._idle_order) < self._max_connections:
                self._busy += 1
                return None
            if self._idle_order:  # room for ours: the longest idle of another origin goes
                oldest = next(iter(self._idle_order))
                del self._idle_order[oldest]
                self._idle[oldest.origin].remove(oldest)
                oldest.close()
                continue
            released = anyio.Event()
            self._waiters.append(released)
            try:
                with _by(deadline):
                    await released.wait()
            finally:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(released)

    def _free(self) -> None:
        """A busy connection was closed or put back: wake one request waiting for room."""
        self._busy -= 1
        if self._waiters:
            self._waiters.popleft().set()

    def _release(self, connection: _Connection) -> None:
        """Put ``connection`` back in the pool when its exchange ended cleanly, else close it."""
        keep = (
            connection.complete
            and connection.reusable_after
            and not self._closed
            and len(self._idle_order) < self._max_idle
        )
        if keep:
            connection.asked = False
            connection.idle_since = time.monotonic()
            self._idle.setdefault(connection.origin, []).append(connection)
            self._idle_order[connection] = None
        else:
            connection.close()
        self._free()

    # -- one connection ------------------------------------------------------------------------

    async def _connect(
        self,
        origin: Origin,
        sni: str,
        trace: Trace | None,
        timeout_s: float | None,
        tls_timeout_s: float | None = None,
    ) -> _Connection:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        transport: asyncio.Transport | None = None
        try:
            with _limit(timeout_s, httpx.ConnectTimeout):
                if trace is not None:
                    await trace("connection.connect_tcp.started", {"host": host, "port": port})
                transport, connection = await self._open_tcp(loop, origin)
                if trace is not None:
                    await trace("connection.connect_tcp.complete", {"return_value": transport})
                if scheme == "https":
                    if trace is not None:
                        await trace("connection.start_tls.started", {"server_hostname": sni})
                    with anyio.move_on_after(math.inf if tls_timeout_s is None else tls_timeout_s) as bound:
                        secure = await loop.start_tls(
                            transport, connection, self._ssl_context, server_hostname=sni
                        )
                    if bound.cancelled_caught:
                        raise TLSHandshakeTimeout(f"no TLS handshake within {tls_timeout_s:g} s")
                    if secure is None:  # pragma: no cover - only when the loop is closing
                        raise ConnectionResetError("the connection closed during the TLS handshake")
                    transport = secure
                    connection.connection_made(secure)
                    if trace is not None:
                        await trace("connection.start_tls.complete", {"return_value": secure})
        except BaseException as exc:
            if transport is not None:
                transport.abort()
            if isinstance(exc, OSError):  # ssl.SSLError is one
                raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
            raise
        return connection

    @staticmethod
    async def _open_tcp(
        loop: asyncio.AbstractEventLoop, origin: Origin
    ) -> tuple[asyncio.Transport, _Connection]:
        """A TCP connection to the first of ``origin``'s addresses that accepts one; the first
        address's error (the OS's own, refused or unreachable) when none does."""
        _, host, port = origin
        addresses = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        first_error: OSError | None = None
        for family, kind, protocol, _, address in addresses:
            sock = socket.socket(family, kind, protocol)
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                await loop.sock_connect(sock, address)
                transport, connection = await loop.create_connection(lambda: _Connection(origin), sock=sock)
                assert isinstance(transport, asyncio.Transport)
                return transport, connection
            except OSError as exc:
                sock.close()
                first_error = first_error or exc
            except BaseException:
                sock.close()
                raise
        raise first_error or OSError(f"no address for {host}")
