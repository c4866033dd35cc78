"""``rmcli.transport``: the request an attempt sends is the one httpx's ``build_request`` makes."""

from __future__ import annotations

import time

import httpx
import pytest

from rmcli.http_client import ProviderClient
from rmcli.transport import perform_attempt
from rmcore import wire
from rmcore.errors import ErrorKind
from rmcore.events import AttemptSucceeded, StartAttempt
from rmcore.providers import builtin_providers
from rmcore.requests import ChatRequest

pytestmark = pytest.mark.anyio

BODY = (
    b'{"id":"x","object":"chat.completion","model":"glm-4.7","choices":[{"index":0,"message":'
    b'{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,'
    b'"completion_tokens":1}}'
)


@pytest.mark.parametrize("make", [httpx.AsyncClient, ProviderClient])
async def test_an_attempt_sends_what_build_request_would_with_the_clients_cookies(make: type) -> None:
    env = {"GLM_API_URL": "http://127.0.0.1:9/api/paas/v4/chat/completions", "GLM_API_KEY": "k" * 12}
    spec = builtin_providers(env)["glm-direct"]
    request = ChatRequest.ask("hi")
    sent: list[httpx.Request] = []

    def handler(outgoing: httpx.Request) -> httpx.Response:
        sent.append(outgoing)
        return httpx.Response(200, headers={"content-type": "application/json"}, content=BODY)

    action = StartAttempt(
        attempt_id=1,
        provider=spec,
        attempt_no=1,
        timeout_s=10.0,
        timeout_kind=ErrorKind.TIMEOUT,
        first_token_timeout_s=10.0,
        idle_timeout_s=10.0,
    )
    mock = httpx.MockTransport(handler)
    async with make(transport=mock, timeout=None, cookies={"affinity": "b7"}) as client:
        event = await perform_attempt(client, action, request, "k" * 12, time.monotonic)
        http = wire.build_request(spec, request, "k" * 12)
        headers = [*http.headers, ("Accept-Encoding", "gzip, deflate")]
        expected = client.build_request(http.method, http.url, headers=headers, content=http.body)
    assert isinstance(event, AttemptSucceeded)
    (outgoing,) = sent
    assert (outgoing.method, outgoing.url) == (expected.method, expected.url)
    assert outgoing.content == expected.content
    assert sorted(outgoing.headers.multi_items()) == sorted(expected.headers.multi_items())
    assert outgoing.headers["cookie"] == "affinity=b7"
    assert outgoing.headers["accept-encoding"] == "gzip, deflate"
    assert outgoing.extensions["timeout"] == expected.extensions["timeout"]
