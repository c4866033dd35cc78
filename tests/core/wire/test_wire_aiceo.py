"""The AICEO gateway's envelope: request bytes, replies, failures reported as text."""

from __future__ import annotations

import json

import pytest
from returns.result import Success

from rmcore.completion import Completion, Usage
from rmcore.errors import ErrorKind
from rmcore.providers import ProviderKind, ProviderSpec
from rmcore.requests import ChatRequest
from rmcore.wire import build_request, parse_response, stream_parser

PROVIDER = ProviderSpec(
    name="aiceo-gateway",
    kind=ProviderKind.AICEO,
    url="http://127.0.0.1:4000/api/glm/submit",
    model="glm-4.7",
    aiceo_provider="glm",
    aiceo_priority="normal",
)
REQUEST = ChatRequest.ask(
    "Analyze X",
    system="You are an expert",
    max_tokens=2000,
    temperature=0.0,
    stream=True,
    source_id="security-analysis",
)
NOW = 1_700_000_000.0


def reply(**overrides: object) -> bytes:
    obj: dict[str, object] = {
        "success": True,
        "response": {
            "content": "Looks fine. Confidence: 0.8",
            "model": "glm-4.7-0101",
            "usage": {"inputTokens": 30, "outputTokens": 9},
        },
        "metadata": {"waitTime": 12, "queueDepth": 0, "requestId": "req-1", "provider": "glm"},
    }
    obj.update(overrides)
    return json.dumps(obj).encode()


def test_request_headers_and_body_are_never_streamed() -> None:
    """A gateway request carries its key in ``X-API-Key`` and the seed's envelope, and never asks to
    stream."""
    http = build_request(PROVIDER, REQUEST, "gw-key")
    assert (http.method, http.url) == ("POST", PROVIDER.url)
    assert http.headers == (
        ("Content-Type", "application/json"),
        ("X-API-Key", "gw-key"),
        ("Accept", "application/json"),
    )
    assert http.body == (
        b'{"provider":"glm","model":"glm-4.7","priority":"normal","source":"recursivemanager",'
        b'"sourceId":"security-analysis","messages":[{"role":"system","content":"You are an expert"},'
        b'{"role":"user","content":"Analyze X"}],"temperature":0.0,"maxTokens":2000}'
    )


def test_request_without_key_system_or_temperature() -> None:
    """Without a key, system text or temperature, none of them is sent; the source id defaults to ``ask``."""
    http = build_request(PROVIDER, ChatRequest.ask("Q"), None)
    assert all(name != "X-API-Key" for name, _ in http.headers)
    body = json.loads(http.body)
    assert body["messages"] == [{"role": "user", "content": "Q"}]
    assert "temperature" not in body
    assert "stream" not in body
    assert body["sourceId"] == "ask"


def test_reply() -> None:
    """A successful reply gives its content, model and token counts."""
    assert parse_response(PROVIDER, 200, {}, reply(), NOW) == Success(
        Completion(
            content="Looks fine. Confidence: 0.8",
            model="glm-4.7-0101",
            usage=Usage(input_tokens=30, output_tokens=9),
        )
    )


def test_reply_without_usage_or_model() -> None:
    """A reply without usage or model names the configured model and estimates the output tokens."""
    body = reply(response={"content": "abcd"}, metadata=None)
    assert parse_response(PROVIDER, 200, {}, body, NOW) == Success(
        Completion(content="abcd", model="glm-4.7", usage=Usage(output_tokens=1, estimated=True))
    )


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        ("Quota exceeded", ErrorKind.RATE_LIMITED),
        ("GLM request timeout", ErrorKind.TIMEOUT),
        ("Queue full, try later", ErrorKind.OVERLOADED),
        ("GLM API error: 500", ErrorKind.SERVER_ERROR),
    ],
)
def test_unsuccessful_replies_are_classified_from_their_text(error: str, kind: ErrorKind) -> None:
    """``success: false`` with status 200 is classified from the error text, keeping its Retry-After."""
    failure = parse_response(
        PROVIDER, 200, {"retry-after": "60"}, reply(success=False, response=None, error=error), NOW
    ).failure()
    assert (failure.kind, failure.status, failure.retry_after_s) == (kind, 200, 60.0)
    assert error in failure.message


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (429, ErrorKind.RATE_LIMITED),
        (401, ErrorKind.AUTH),
        (503, ErrorKind.OVERLOADED),
        (500, ErrorKind.SERVER_ERROR),
    ],
)
def test_error_statuses_are_classified(status: int, kind: ErrorKind) -> None:
    """Error statuses are classified by status, the message quoting the gateway's error."""
    body = json.dumps({"success": False, "error": "no"}).encode()
    failure = parse_response(PROVIDER, status, {}, body, NOW).failure()
    assert (failure.kind, failure.message) == (kind, f"HTTP {status}: no")


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"nope",
        b'{"response": {"content": "x"}}',
        b'{"success": true}',
        b'{"success": true, "response": {"content": 1}}',
        b'{"success": "yes"}',
    ],
)
def test_wrong_shapes_are_malformed(body: bytes) -> None:
    """A body that is not the gateway's envelope is ``malformed_response``."""
    assert parse_response(PROVIDER, 200, {}, body, NOW).failure().kind is ErrorKind.MALFORMED_RESPONSE


def test_its_stream_parser_parses_the_body_whole_at_the_end() -> None:
    """The gateway's parser shows no text while the body arrives and parses it whole at the end, as
    ``parse_response`` does."""
    body = reply()
    parser = stream_parser(PROVIDER, REQUEST)
    assert [parser.feed(body[i : i + 7]) for i in range(0, len(body), 7)] == [[]] * len(
        range(0, len(body), 7)
    )
    assert parser.error is None
    assert not parser.done
    assert parser.finish() == parse_response(PROVIDER, 200, {}, body, NOW)
    assert parser.done


def test_its_stream_parser_never_succeeds_on_a_cut_body() -> None:
    """A gateway body cut anywhere is malformed, never an answer."""
    body = reply()
    for end in range(len(body)):
        parser = stream_parser(PROVIDER, REQUEST)
        parser.feed(body[:end])
        assert parser.finish().failure().kind is ErrorKind.MALFORMED_RESPONSE
        assert not parser.done
