"""``rmcli.http_client.ProviderClient``: httpx's client, its cookies read only from replies that set one."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from rmcli.http_client import ProviderClient

pytestmark = pytest.mark.anyio


async def _request_head(stream: Any) -> bytes:
    """The head of the request arriving on ``stream`` (an anyio socket stream), without its blank line."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += await stream.receive()
    return data.split(b"\r\n\r\n", 1)[0]


async def test_a_cookie_a_provider_sets_comes_back_on_its_next_request() -> None:
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("cookie"))
        if len(seen) == 1:
            return httpx.Response(200, headers={"set-cookie": "affinity=b7; Path=/"}, text="ok")
        return httpx.Response(200, text="ok")

    async with ProviderClient(transport=httpx.MockTransport(handler)) as client:
        for _ in range(3):
            await client.post("http://127.0.0.1:9/v1/chat/completions", content=b"{}")
        assert client.cookies.get("affinity") == "b7"
    assert seen == [None, "affinity=b7", "affinity=b7"]


async def test_replies_without_cookies_leave_the_jar_empty_and_cookies_can_be_set() -> None:
    async with ProviderClient(transport=httpx.MockTransport(lambda r: httpx.Response(204))) as client:
        await client.get("http://127.0.0.1:9/")
        assert not client.cookies
        client.cookies = {"given": "1"}
        sent = await client.get("http://127.0.0.1:9/")
        assert sent.request.headers["cookie"] == "given=1"


async def test_the_proxy_variables_are_honoured_as_httpx_does_and_the_rest_goes_through_our_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Given ``own``, the client still mounts httpx's transport through ``HTTP_PROXY`` (the request
    reaches the proxy in absolute form), while a host ``NO_PROXY`` exempts goes through ``own``."""
    import ssl

    import anyio
    import anyio.abc

    from rmcli.http1 import Http1Transport

    heads: list[bytes] = []

    async def answer(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            heads.append((await _request_head(stream)).split(b"\r\n", 1)[0])
            await stream.send(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")

    carried: list[str] = []

    class Own(Http1Transport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            carried.append(request.url.path)
            return await super().handle_async_request(request)

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    own = Own(ssl.create_default_context())
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, answer)
        async with ProviderClient(own=own, timeout=None) as client:
            assert (await client.get("http://10.255.255.1/v1/models")).text == "ok"
            assert (await client.get(f"http://127.0.0.1:{port}/direct")).text == "ok"
        tg.cancel_scope.cancel()
    assert heads == [b"GET http://10.255.255.1/v1/models HTTP/1.1", b"GET /direct HTTP/1.1"]
    assert carried == ["/direct"]


async def test_the_direct_way_sends_what_httpx_would_and_steps_aside_for_hooks_cookies_and_proxies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``direct`` gives the endpoint of a URL our transport carries; ``send_direct`` sends Host,
    the client's default headers under the request's own, and Content-Length, and puts a cookie the
    reply sets in the jar, after which (a cookie to send) requests go through httpx's API again, as
    they do with an event hook or through a proxy."""
    import ssl

    import anyio
    import anyio.abc

    from rmcli.http1 import Http1Transport

    heads: list[bytes] = []

    async def answer(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            heads.append(await _request_head(stream))
            cookie = b"set-cookie: affinity=b7; Path=/\r\n" if len(heads) == 1 else b""
            head = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n" + cookie
            await stream.send(head + b"\r\nok")

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, answer)
        own = Http1Transport(ssl.create_default_context())
        async with ProviderClient(own=own, timeout=None) as client:
            endpoint = client.direct(url)
            assert endpoint is not None and endpoint.host == f"127.0.0.1:{port}".encode()
            headers = [("Authorization", "Bearer k"), ("Accept-Encoding", "gzip, deflate")]
            reply = await client.send_direct("POST", endpoint, headers, b"{}")
            assert (reply.status_code, b"".join([c async for c in reply.aiter_raw()])) == (200, b"ok")
            reply.close()
            assert client.cookies.get("affinity") == "b7"
            assert client.direct(url) is None  # a cookie to send: httpx's way, which sends it
            assert (await client.post(url, content=b"{}")).text == "ok"
        hooks: dict[str, list[Any]] = {"request": [lambda request: None]}
        async with ProviderClient(own=own, timeout=None, event_hooks=hooks) as hooked:
            assert hooked.direct(url) is None
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
        async with ProviderClient(own=own, timeout=None) as proxied:
            assert proxied.direct(url) is None  # through the proxy: httpx's way
        tg.cancel_scope.cancel()
    first = heads[0].split(b"\r\n")
    assert first[0] == b"POST /v1/chat/completions HTTP/1.1"
    assert first[1] == f"Host: 127.0.0.1:{port}".encode()
    names = [line.split(b":", 1)[0].lower() for line in first[1:]]
    defaults = [b"accept", b"connection", b"user-agent"]  # httpx's, but Accept-Encoding: ours
    assert names == [b"host", *defaults, b"authorization", b"accept-encoding", b"content-length"]
    assert b"cookie: affinity=b7" in heads[1].lower()
