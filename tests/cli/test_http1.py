"""``rmcli.http1``: httpx's API over our own HTTP/1.1 pool, against raw local servers.

Every server here is a few lines over a loopback socket that this test controls byte by byte, so
what the transport must do with a server that reuses, closes, stalls or lies is exact: a
connection reused only when its reply was read to the end, closed at once when abandoned or
cancelled, never reused once the server closed it; httpx's errors with the OS's cause; TLS
verified against the context given (a test CA made for these tests, valid for a century).
"""

from __future__ import annotations

import socket
import ssl
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import h11
import httpx
import pytest
from anyio.streams.tls import TLSListener

from rmcli.connection_errors import ConnectionWatch, Phase, connect_failed
from rmcli.http1 import (
    MAX_HEAD_BYTES,
    BodyIdle,
    Http1Transport,
    Reply,
    TLSHandshakeTimeout,
    head_bytes,
    parse_endpoint,
)
from rmcore.providers import builtin_providers

pytestmark = pytest.mark.anyio

# A CA made for these tests only (EC P-256, valid until 2126) and a leaf it signed for 127.0.0.1.
TEST_CA = """-----BEGIN CERTIFICATE-----
MIIBdDCCARqgAwIBAgIUa1rIujM91E7/twj+3mE856vRerUwCgYIKoZIzj0EAwIw
FzEVMBMGA1UEAwwMcm1nciB0ZXN0IENBMCAXDTI2MTIwNjA0MjQwOFoYDzIxMjYx
MTEyMDQyNDA4WjAXMRUwEwYDVQQDDAxybWdyIHRlc3QgQ0EwWTATBgcqhkjOPQIB
BggqhkjOPQMBBwNCAASak4IntOC6iwRpMKcmfpGIxAck87uAUCRJmXCpoM+GFA8b
Y8PAWVByuNJwpoPTiXtbnnU2CTDvBYgoBjtiTwHBo0IwQDAPBgNVHRMBAf8EBTAD
AQH/MA4GA1UdDwEB/wQEAwIBBjAdBgNVHQ4EFgQUD9Ptb41Fovi9Rg8/d83ynewN
KT4wCgYIKoZIzj0EAwIDSAAwRQIgeu7VsgnaAUzPP6hOtlgXbLK6oeu7TVLuHa+1
vDktQ7ECIQCpx5KhUVuaNcJ3XlltncGKiBStAiZNsH8tSzobDKcyMA==
-----END CERTIFICATE-----"""
TEST_LEAF = """-----BEGIN CERTIFICATE-----
MIIBwzCCAWigAwIBAgIUZ64IfZZ6HtsEKdKsO4k+OQG6pCYwCgYIKoZIzj0EAwIw
FzEVMBMGA1UEAwwMcm1nciB0ZXN0IENBMCAXDTI2MTIwNjA0MjQwOFoYDzIxMjYx
MTEyMDQyNDA4WjAUMRIwEAYDVQQDDAkxMjcuMC4wLjEwWTATBgcqhkjOPQIBBggq
hkjOPQMBBwNCAASm0L+5dtVWTxqork3D4d+EcimSSEJpB2ODTgRz2l55aGgWk2UI
Hm6WKa8yecp7b8LH8CK0OyB1/EkNMWWw7qgeo4GSMIGPMAwGA1UdEwEB/wQCMAAw
DgYDVR0PAQH/BAQDAgWgMBMGA1UdJQQMMAoGCCsGAQUFBwMBMBoGA1UdEQQTMBGH
BH8AAAGCCWxvY2FsaG9zdDAdBgNVHQ4EFgQUFSk6Hun6AQjdRfIUnO3v/Z6x/rww
HwYDVR0jBBgwFoAUD9Ptb41Fovi9Rg8/d83ynewNKT4wCgYIKoZIzj0EAwIDSQAw
RgIhAKWF/mWJk9E7O6XAtOA3UdsMV6N+319F+wzEHXh+UcRBAiEA5shMoj8KlYSQ
d2Sg7hw/xiBZ3zw93zP+QmbpS8qEl7g=
-----END CERTIFICATE-----"""
TEST_LEAF_KEY = """-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg4X7Eo0p3kIad2mN0
F5Yxizzo9fGXiK1w4AtINIkJG4+hRANCAASm0L+5dtVWTxqork3D4d+EcimSSEJp
B2ODTgRz2l55aGgWk2UIHm6WKa8yecp7b8LH8CK0OyB1/EkNMWWw7qge
-----END PRIVATE KEY-----"""

Handler = Callable[["Server", anyio.abc.SocketStream], Awaitable[None]]


class Server:
    """A loopback server: each connection handled by ``handler``; counts what it saw."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.closed_by_client = 0
        self.requests = 0
        self.port = 0
        self.eof = anyio.Event()
        self.hung_up = 0  # connections this server closed

    async def read_request(self, stream: anyio.abc.ByteStream, conn: h11.Connection) -> h11.Request | None:
        """The next request's head (its body read and dropped), or None when the client closed."""
        request: h11.Request | None = None
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                try:
                    data = await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    data = b""
                if not data:
                    self.closed_by_client += 1
                    self.eof.set()
                    return None
                conn.receive_data(data)
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.EndOfMessage):
                self.requests += 1
                return request
            elif isinstance(event, h11.ConnectionClosed):
                self.closed_by_client += 1
                self.eof.set()
                return None

    async def _serve(self, stream: anyio.abc.SocketStream) -> None:
        self.connections += 1
        async with stream:
            await self.handler(self, stream)
        self.hung_up += 1


def reply(body: bytes, *headers: tuple[str, str], status: int = 200) -> bytes:
    """A whole HTTP/1.1 reply with a Content-Length."""
    head = [f"HTTP/1.1 {status} OK", f"content-length: {len(body)}", *(f"{k}: {v}" for k, v in headers)]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def keep_alive(server: Server, stream: anyio.abc.SocketStream) -> None:
    """Answer every request on the connection with ``ok``."""
    conn = h11.Connection(h11.SERVER)
    while (await server.read_request(stream, conn)) is not None:
        await stream.send(reply(b"ok"))
        conn = h11.Connection(h11.SERVER)  # the reply was sent raw, past h11


@asynccontextmanager
async def serving(handler: Handler, tls: ssl.SSLContext | None = None) -> AsyncIterator[Server]:
    server = Server(handler)
    listener: Any = await anyio.create_tcp_listener(local_host="127.0.0.1")
    server.port = listener.extra(anyio.abc.SocketAttribute.local_port)
    if tls is not None:
        listener = TLSListener(listener, tls, standard_compatible=False)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, server._serve)
        yield server
        tg.cancel_scope.cancel()


def client_tls() -> ssl.SSLContext:
    """A verifying context that trusts the test CA (as ``SSL_CERT_FILE`` would)."""
    context = ssl.create_default_context()
    context.load_verify_locations(cadata=TEST_CA)
    return context


def server_tls() -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    with tempfile.TemporaryDirectory() as folder:
        cert, key = Path(folder, "leaf.pem"), Path(folder, "leaf.key")
        cert.write_text(TEST_LEAF)
        key.write_text(TEST_LEAF_KEY)
        context.load_cert_chain(cert, key)
    return context


def client(transport: Http1Transport | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=transport or Http1Transport(client_tls()), timeout=None)


async def test_a_reply_read_to_its_end_leaves_its_connection_for_the_next_request() -> None:
    async with serving(keep_alive) as server, client() as http:
        for _ in range(3):
            response = await http.post(f"http://127.0.0.1:{server.port}/v1", content=b"{}")
            assert (response.status_code, response.text) == (200, "ok")
        assert (server.connections, server.requests) == (1, 3)


async def test_a_reply_not_read_to_its_end_closes_its_connection_at_once() -> None:
    """The head read, the body abandoned: the server sees the connection end, and the next
    request opens a new one instead of reading the rest of the old reply."""

    async def half(server: Server, stream: anyio.abc.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        while (await server.read_request(stream, conn)) is not None:
            await stream.send(reply(b"x" * 100_000)[:50_000])

    async with serving(half) as server, client() as http:
        async with http.stream("GET", f"http://127.0.0.1:{server.port}/") as response:
            assert response.status_code == 200
        with anyio.fail_after(2):
            await server.eof.wait()
        async with http.stream("GET", f"http://127.0.0.1:{server.port}/") as response:
            assert response.status_code == 200
        assert server.connections == 2


async def test_a_request_cancelled_while_it_waits_for_its_reply_closes_the_connection() -> None:
    """A cancel scope that ends the request while the server is silent closes the connection at
    once (the server hears its end), and frees its place in the pool."""

    async def silent(server: Server, stream: anyio.abc.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        await server.read_request(stream, conn)
        await server.read_request(stream, conn)  # returns when the client closes

    transport = Http1Transport(client_tls(), max_connections=1)
    async with serving(silent) as server, client(transport) as http:
        started = time.monotonic()
        with anyio.move_on_after(0.2):
            await http.get(f"http://127.0.0.1:{server.port}/")
        with anyio.fail_after(2):
            await server.eof.wait()
        assert time.monotonic() - started < 1.5
        assert transport.open_connections == 0


async def test_a_connection_the_server_closed_while_idle_is_not_reused() -> None:
    async def one_each(server: Server, stream: anyio.abc.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        if await server.read_request(stream, conn) is not None:
            await stream.send(reply(b"ok"))  # keep-alive by its headers, then closed anyway

    async with serving(one_each) as server, client() as http:
        for number in range(3):
            response = await http.get(f"http://127.0.0.1:{server.port}/")
            assert response.text == "ok"
            with anyio.fail_after(2):
                while server.hung_up <= number:  # the server's close reaches us while it idles
                    await anyio.sleep(0.005)
        assert server.connections == 3


async def test_connection_close_and_a_body_up_to_the_end_of_the_connection() -> None:
    """``Connection: close`` and a body without a length (read to the end of the connection) are
    read whole, and such a connection is never reused."""

    async def closing(server: Server, stream: anyio.abc.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        if await server.read_request(stream, conn) is not None:
            await stream.send(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the end")

    async with serving(closing) as server, client() as http:
        for _ in range(2):
            response = await http.get(f"http://127.0.0.1:{server.port}/")
            assert response.text == "until the end"
        assert server.connections == 2


async def test_a_chunked_reply_comes_raw_and_whole() -> None:
    """Chunked framing is undone; a Content-Encoding is not (``rmcli.transport`` decodes within its
    limits)."""

    async def chunked(server: Server, stream: anyio.abc.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        while (await server.read_request(stream, conn)) is not None:
            head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-encoding: gzip\r\n\r\n"
            await stream.send(head + b"3\r\nabc\r\n")
            await anyio.sleep(0.01)
            await stream.send(b"2\r\nde\r\n0\r\n\r\n")
            conn = h11.Connection(h11.SERVER)  # the reply was sent raw, past h11

    async with serving(chunked) as server, client() as http:
        for _ in range(2):
            async with http.stream("GET", f"http://127.0.0.1:{server.port}/") as response:
                assert b"".join([chunk async for chunk in response.aiter_raw()]) == b"abcde"
        assert server.connections == 1


async def test_a_server_that_closes_before_replying_is_a_remote_protocol_error() -> None:
    async def hang_up(server: Server, stream: anyio.abc.SocketStream) -> None:
        await server.read_request(stream, h11.Connection(h11.SERVER))

    async with serving(hang_up) as server, client() as http:
        with pytest.raises(httpx.RemoteProtocolError, match="Server disconnected without sending a response"):
            await http.get(f"http://127.0.0.1:{server.port}/")


async def test_a_body_cut_short_is_a_remote_protocol_error() -> None:
    async def short(server: Server, stream: anyio.abc.SocketStream) -> None:
        if await server.read_request(stream, h11.Connection(h11.SERVER)) is not None:
            await stream.send(reply(b"x" * 100)[:-10])

    async with serving(short) as server, client() as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.get(f"http://127.0.0.1:{server.port}/")


async def test_a_refused_connection_is_a_connect_error_with_the_os_reason() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        env = {"OPENAI_API_URL": f"http://127.0.0.1:{port}/v1/chat/completions"}
        spec = builtin_providers(env)["openai-direct"]
        async with client() as http:
            with pytest.raises(httpx.ConnectError) as caught:
                await http.get(f"http://127.0.0.1:{port}/")
    assert connect_failed(caught.value, spec).startswith(f"connection refused to 127.0.0.1:{port}")


async def test_at_most_max_connections_at_once_the_rest_wait_their_turn() -> None:
    async def slow(server: Server, stream: anyio.abc.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        while (await server.read_request(stream, conn)) is not None:
            await anyio.sleep(0.05)
            await stream.send(reply(b"ok"))
            conn = h11.Connection(h11.SERVER)  # the reply was sent raw, past h11

    transport = Http1Transport(client_tls(), max_connections=2, max_keepalive_connections=2)
    async with serving(slow) as server, client(transport) as http:
        texts: list[str] = []

        async def one() -> None:
            texts.append((await http.get(f"http://127.0.0.1:{server.port}/")).text)

        async with anyio.create_task_group() as tg:
            for _ in range(6):
                tg.start_soon(one)
        assert texts == ["ok"] * 6
        assert (server.connections, server.requests) == (2, 6)
        assert transport.open_connections == 2


async def test_https_is_verified_and_its_phases_are_traced() -> None:
    """A certificate the context trusts: the request goes through, and ``ConnectionWatch`` heard the
    TCP connection and the TLS handshake. The same server with the default CA bundle: refused,
    with OpenSSL's verification error as the cause."""
    async with serving(keep_alive, tls=server_tls()) as server:
        url = f"https://127.0.0.1:{server.port}/"
        watch = ConnectionWatch()
        async with client() as http:
            response = await http.get(url, extensions=watch.extensions)
            assert response.text == "ok"
            assert watch.phase is Phase.CONNECTED
            again = ConnectionWatch()
            await http.get(url, extensions=again.extensions)
            assert again.phase is Phase.REUSED  # the pooled connection: no new handshake
        assert server.connections == 1
        async with client(Http1Transport(ssl.create_default_context())) as http:
            with pytest.raises(httpx.ConnectError) as caught:
                await http.get(url)
        cause: BaseException | None = caught.value
        while cause is not None and not isinstance(cause, ssl.SSLCertVerificationError):
            cause = cause.__cause__ or cause.__context__
        assert isinstance(cause, ssl.SSLCertVerificationError)


async def test_a_closed_transport_closes_its_idle_connections() -> None:
    transport = Http1Transport(client_tls())
    async with serving(keep_alive) as server:
        async with client(transport) as http:
            await http.get(f"http://127.0.0.1:{server.port}/")
            assert transport.open_connections == 1
        assert transport.open_connections == 0
        with anyio.fail_after(2):
            await server.eof.wait()


async def test_a_head_past_its_limit_or_malformed_is_a_remote_protocol_error() -> None:
    async def endless_head(server: Server, stream: anyio.abc.SocketStream) -> None:
        if await server.read_request(stream, h11.Connection(h11.SERVER)) is not None:
            await stream.send(b"HTTP/1.1 200 OK\r\n" + b"x-filler: " + b"a" * (MAX_HEAD_BYTES + 10))
            await server.eof.wait()

    async def garbage(server: Server, stream: anyio.abc.SocketStream) -> None:
        if await server.read_request(stream, h11.Connection(h11.SERVER)) is not None:
            await stream.send(b"this is not HTTP\r\n\r\n")
            await server.eof.wait()

    for handler, words in ((endless_head, "reply head larger than"), (garbage, "malformed reply")):
        async with serving(handler) as server, client() as http:
            with anyio.fail_after(5), pytest.raises(httpx.RemoteProtocolError, match=words):
                await http.get(f"http://127.0.0.1:{server.port}/")


async def test_bytes_after_a_whole_reply_keep_the_reply_and_close_the_connection() -> None:
    """A server that sends more than was asked for: the reply stands, the connection is not used
    again (what follows could be taken for the next request's reply)."""

    async def chatty(server: Server, stream: anyio.abc.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        while (await server.read_request(stream, conn)) is not None:
            await stream.send(reply(b"ok") + reply(b"unasked"))
            conn = h11.Connection(h11.SERVER)

    async with serving(chatty) as server, client() as http:
        for _ in range(2):
            assert (await http.get(f"http://127.0.0.1:{server.port}/")).text == "ok"
        assert server.connections == 2


async def test_informational_replies_are_skipped_and_head_replies_have_no_body() -> None:
    async def continuing(server: Server, stream: anyio.abc.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        while (request := await server.read_request(stream, conn)) is not None:
            body = b"" if request.method == b"HEAD" else b"ok"
            await stream.send(b"HTTP/1.1 100 Continue\r\n\r\n" + reply(body, ("x-size", "2")))
            conn = h11.Connection(h11.SERVER)

    async with serving(continuing) as server, client() as http:
        response = await http.post(f"http://127.0.0.1:{server.port}/", content=b"{}")
        assert (response.status_code, response.text, response.headers["x-size"]) == (200, "ok", "2")
        head = await http.head(f"http://127.0.0.1:{server.port}/")
        assert (head.status_code, head.content) == (200, b"")


async def test_a_header_that_could_forge_another_is_refused_before_anything_is_sent() -> None:
    async with serving(keep_alive) as server, client() as http:
        for name, value in (("x-key", "a\r\nx-admin: yes"), ("bad name", "v"), ("x-null", "a\x00b")):
            with pytest.raises(httpx.LocalProtocolError):
                await http.get(f"http://127.0.0.1:{server.port}/", headers={name: value})
        assert server.requests == 0
        assert head_bytes(b"GET", b"/v1", [(b"Host", b"h"), (b"X-Ok", b"a b")]) == (
            b"GET /v1 HTTP/1.1\r\nHost: h\r\nX-Ok: a b\r\n\r\n"
        )


async def test_the_direct_way_bounds_a_tls_handshake_itself() -> None:
    """https to a server that takes the connection and says nothing: ``request`` gives up after
    ``tls_timeout_s`` with ``TLSHandshakeTimeout`` (a ``ConnectTimeout``), having traced the TCP
    connection and the handshake's start."""

    async def silent(server: Server, stream: anyio.abc.SocketStream) -> None:
        await server.eof.wait()

    heard: list[str] = []

    async def trace(event: str, info: Any) -> None:
        heard.append(event)

    transport = Http1Transport(client_tls())
    async with serving(silent) as server:
        endpoint = parse_endpoint(f"https://127.0.0.1:{server.port}/v1")
        started = time.monotonic()
        with anyio.fail_after(5), pytest.raises(TLSHandshakeTimeout):
            await transport.request(
                b"GET", endpoint, [(b"Host", endpoint.host)], b"", trace=trace, tls_timeout_s=0.3
            )
        assert 0.25 < time.monotonic() - started < 2
        server.eof.set()
    assert heard == [
        "connection.connect_tcp.started",
        "connection.connect_tcp.complete",
        "connection.start_tls.started",
    ]
    assert transport.open_connections == 0


def sending(*steps: bytes | float | anyio.Event) -> Handler:
    """A server that reads one request, then in turn sends each ``bytes``, sleeps each ``float``
    and waits for each event, and then for the client to hang up."""

    async def handler(server: Server, stream: anyio.abc.SocketStream) -> None:
        await server.read_request(stream, h11.Connection(h11.SERVER))
        for step in steps:
            if isinstance(step, bytes):
                await stream.send(step)
            elif isinstance(step, anyio.Event):
                await step.wait()
            else:
                await anyio.sleep(step)
        await server.eof.wait()

    return handler


async def get(transport: Http1Transport, server: Server) -> Reply:
    """A GET sent the direct way (``request``), its reply's head read."""
    endpoint = parse_endpoint(f"http://127.0.0.1:{server.port}/v1")
    return await transport.request(b"GET", endpoint, [(b"Host", endpoint.host)], b"")


CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"


async def test_next_chunk_gives_a_body_as_it_arrives_and_body_idle_when_nothing_comes_in_time() -> None:
    """A chunked reply whose server sends one chunk, stalls, then sends the rest: ``next_chunk``
    returns the first at once, raises ``BodyIdle`` after the time it was given (not before, and
    without losing what comes later), then returns the rest and None at the end; the connection,
    read to its end, goes back to the pool."""
    go_on = anyio.Event()
    transport = Http1Transport(client_tls())
    async with serving(sending(CHUNKED_HEAD + b"5\r\nfirst\r\n", go_on, b"4\r\nrest\r\n0\r\n\r\n")) as server:
        reply = await get(transport, server)
        assert await reply.next_chunk(2.0) == b"first"
        started = time.monotonic()
        with anyio.fail_after(5), pytest.raises(BodyIdle):
            await reply.next_chunk(0.2)
        assert 0.15 < time.monotonic() - started < 2
        go_on.set()
        with anyio.fail_after(5):
            assert await reply.next_chunk(2.0) == b"rest"
            assert await reply.next_chunk(2.0) is None
        reply.close()
        assert transport.open_connections == 1  # kept idle for the next request
        await transport.aclose()
        server.eof.set()


async def test_a_short_limit_that_ended_in_time_does_not_cut_the_next_longer_wait() -> None:
    """The first chunk, waited for with a short limit, arrives within it; the next, sent half a
    second later, is waited for with a longer one: the earlier limit's passing (its timer, kept
    for the connection) must not end the later wait."""
    transport = Http1Transport(client_tls())
    steps = (CHUNKED_HEAD, 0.05, b"1\r\na\r\n", 0.5, b"1\r\nb\r\n0\r\n\r\n")
    async with serving(sending(*steps)) as server:
        reply = await get(transport, server)
        with anyio.fail_after(5):
            assert await reply.next_chunk(0.3) == b"a"
            assert await reply.next_chunk(3.0) == b"b"
            assert await reply.next_chunk(3.0) is None
        reply.close()
        await transport.aclose()
        server.eof.set()


async def send_within(transport: Http1Transport, server: Server, within_s: float) -> Reply:
    """A GET sent with ``send``, given ``within_s`` for the whole request."""
    endpoint = parse_endpoint(f"http://127.0.0.1:{server.port}/v1")
    data = head_bytes(b"GET", endpoint.target, [(b"Host", endpoint.host)])
    return await transport.send(endpoint, data, within_s=within_s)


async def test_a_request_given_an_end_is_body_idle_past_it_with_its_head_or_its_body_late() -> None:
    """``send(within_s=...)``: a head that does not come in time, or a body that stops coming,
    is ``BodyIdle`` at the request's end (not before), and the connection is closed, not pooled."""
    transport = Http1Transport(client_tls())
    for steps in ((), (CHUNKED_HEAD + b"5\r\nfirst\r\n",)):
        async with serving(sending(*steps)) as server:
            started = time.monotonic()
            with anyio.fail_after(5), pytest.raises(BodyIdle):
                reply = await send_within(transport, server, 0.3)
                async for _ in reply.aiter_raw():
                    pass
            assert 0.25 < time.monotonic() - started < 2
            if steps:
                reply.close()
            assert transport.open_connections == 0
            server.eof.set()
    await transport.aclose()


async def test_a_request_given_an_end_waits_for_room_in_the_pool_no_longer() -> None:
    """Every connection busy (``max_connections``): a request given an end waits for one only
    until then, ``BodyIdle``, and leaves the pool as it found it."""
    transport = Http1Transport(client_tls(), max_connections=1)
    async with serving(sending(CHUNKED_HEAD)) as server:
        busy = await get(transport, server)
        started = time.monotonic()
        with anyio.fail_after(5), pytest.raises(BodyIdle):
            await send_within(transport, server, 0.2)
        assert 0.15 < time.monotonic() - started < 2
        assert transport.open_connections == 1
        busy.close()
        await transport.aclose()
        server.eof.set()
