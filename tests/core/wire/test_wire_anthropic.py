"""Anthropic's Messages API: request bytes, whole replies, event streams."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from returns.result import Failure, Result, Success

from rmcore.completion import Completion, Usage
from rmcore.errors import ErrorKind, ProviderError
from rmcore.providers import ProviderKind, ProviderSpec
from rmcore.requests import ChatRequest, ToolCall
from rmcore.wire import build_request, parse_response, stream_parser
from tests.core.helpers import split

PROVIDER = ProviderSpec(
    name="claude", kind=ProviderKind.ANTHROPIC, url="http://127.0.0.1:8001/v1/messages", model="claude-test"
)
REQUEST = ChatRequest.ask("Say hi", system="Be brief", max_tokens=64, temperature=0.0, stream=True)
NOW = 1_700_000_000.0


def event(name: str, data: dict[str, object]) -> str:
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def text_delta(text: str, index: int = 1) -> str:
    return event(
        "content_block_delta",
        {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}},
    )


MESSAGE_START = event(
    "message_start",
    {
        "type": "message_start",
        "message": {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": "claude-test-20250101",
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 25, "output_tokens": 1},
        },
    },
)
MESSAGE_STOP = event("message_stop", {"type": "message_stop"})


def message_delta(stop_reason: str, output_tokens: int | None = 15) -> str:
    data: dict[str, object] = {
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": None},
    }
    if output_tokens is not None:
        data["usage"] = {"output_tokens": output_tokens}
    return event("message_delta", data)


STREAM = (
    MESSAGE_START
    + event(
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}},
    )
    + event(
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hmm"}},
    )
    + event("content_block_stop", {"type": "content_block_stop", "index": 0})
    + event(
        "content_block_start",
        {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
    )
    + event("ping", {"type": "ping"})
    + text_delta("Héllo")
    + text_delta(", 世界 🎉")
    + event("content_block_stop", {"type": "content_block_stop", "index": 1})
    + event("some_future_event", {"type": "some_future_event", "x": [1]})
    + message_delta("end_turn")
    + MESSAGE_STOP
).encode()
EXPECTED = Completion(
    content="Héllo, 世界 🎉",
    model="claude-test-20250101",
    usage=Usage(input_tokens=25, output_tokens=15),
    finish_reason="stop",
)


def run_stream(*chunks: bytes) -> tuple[list[str], Result[Completion, ProviderError]]:
    parser = stream_parser(PROVIDER, REQUEST)
    deltas: list[str] = []
    for piece in chunks:
        deltas.extend(parser.feed(piece))
    return deltas, parser.finish()


# build_request


def test_streaming_request_headers_and_body() -> None:
    """A streamed request sends the key, the API version and the Messages body with a top-level system
    text."""
    http = build_request(PROVIDER, REQUEST, "sk-ant-test")
    assert (http.method, http.url) == ("POST", PROVIDER.url)
    assert http.headers == (
        ("content-type", "application/json"),
        ("x-api-key", "sk-ant-test"),
        ("anthropic-version", "2023-06-01"),
        ("accept", "text/event-stream"),
    )
    assert http.body == (
        b'{"model":"claude-test","system":"Be brief","messages":[{"role":"user","content":"Say hi"}],'
        b'"max_tokens":64,"temperature":0.0,"stream":true}'
    )


def test_whole_request_without_key_system_or_temperature() -> None:
    """Without a key, system text or temperature none is sent; ``max_tokens`` always is."""
    http = build_request(PROVIDER, ChatRequest.ask("Q", stream=False), None)
    assert [name for name, _ in http.headers] == ["content-type", "anthropic-version", "accept"]
    assert json.loads(http.body) == {
        "model": "claude-test",
        "messages": [{"role": "user", "content": "Q"}],
        "max_tokens": 1024,
    }


# parse_response


def reply(**overrides: object) -> bytes:
    obj: dict[str, object] = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-test-20250101",
        "content": [
            {"type": "text", "text": "Hello"},
            {"type": "tool_use", "id": "t", "name": "n", "input": {}},
            {"type": "text", "text": " world"},
        ],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 4, "cache_read_input_tokens": 0},
    }
    obj.update(overrides)
    return json.dumps(obj).encode()


def test_whole_reply_joins_text_blocks() -> None:
    """A whole reply's text blocks are joined and its tool_use block is a tool call (its input as
    JSON text); model and usage are kept, the stop reason normalised (``end_turn`` is ``stop``)."""
    assert parse_response(PROVIDER, 200, {}, reply(), NOW) == Success(
        Completion(
            content="Hello world",
            model="claude-test-20250101",
            usage=Usage(input_tokens=10, output_tokens=4),
            finish_reason="stop",
            tool_calls=(ToolCall(id="t", name="n", arguments="{}"),),
        )
    )


def test_missing_usage_is_estimated() -> None:
    """A whole reply without usage estimates its output tokens and names the configured model."""
    body = json.dumps({"content": [{"type": "text", "text": "12345"}], "stop_reason": "max_tokens"}).encode()
    assert parse_response(PROVIDER, 200, {}, body, NOW) == Success(
        Completion(
            content="12345",
            model="claude-test",
            usage=Usage(output_tokens=2, estimated=True),
            finish_reason="length",
        )
    )


def test_refusal_is_a_content_filter_failure() -> None:
    """A ``refusal`` stop reason is a ``content_filter`` failure."""
    error = parse_response(PROVIDER, 200, {}, reply(stop_reason="refusal"), NOW).failure()
    assert (error.kind, error.status) == (ErrorKind.CONTENT_FILTER, 200)


@pytest.mark.parametrize(
    "body",
    [b"", b"{", b"[]", b'{"content": "text"}', b'{"type": "message"}', b'{"content": [{"text": "no type"}]}'],
)
def test_wrong_shapes_are_malformed(body: bytes) -> None:
    """A body that is not a Messages reply is ``malformed_response``."""
    assert parse_response(PROVIDER, 200, {}, body, NOW).failure().kind is ErrorKind.MALFORMED_RESPONSE


def test_error_statuses_are_classified() -> None:
    """A 529 with an ``overloaded_error`` body is ``overloaded`` with its Retry-After and message."""
    body = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
    error = parse_response(PROVIDER, 529, {"retry-after": "2"}, body, NOW).failure()
    assert (error.kind, error.status, error.retry_after_s, error.message) == (
        ErrorKind.OVERLOADED,
        529,
        2.0,
        "HTTP 529: Overloaded",
    )


def test_an_error_body_with_status_200_is_classified() -> None:
    """An error body sent with status 200 is classified by its type, not taken for an answer."""
    body = b'{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}'
    assert parse_response(PROVIDER, 200, {}, body, NOW).failure().kind is ErrorKind.RATE_LIMITED


# streams


def test_stream_yields_text_deltas_only() -> None:
    """Only text deltas are shown: thinking blocks, pings and unknown events are not."""
    deltas, result = run_stream(STREAM)
    assert deltas == ["Héllo", ", 世界 🎉"]
    assert result == Success(EXPECTED)


def test_done_only_at_message_stop() -> None:
    """The stream is done at ``message_stop`` and not before; later text is ignored."""
    parser = stream_parser(PROVIDER, REQUEST)
    parser.feed(STREAM[: STREAM.index(b"event: message_stop")])
    before = parser.done
    parser.feed(MESSAGE_STOP.encode())
    assert (before, parser.done) == (False, True)
    assert parser.feed(text_delta("late").encode()) == []


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=15))
def test_stream_parses_the_same_whatever_the_chunk_boundaries(cuts: list[int]) -> None:
    """The stream gives the same deltas and completion however it is split into chunks."""
    deltas, result = run_stream(*split(STREAM, cuts))
    assert "".join(deltas) == EXPECTED.content
    assert result == Success(EXPECTED)


def test_every_cut_before_message_stop_is_truncated_never_success() -> None:
    """A stream cut at any byte before the end of ``message_stop`` is ``stream_truncated``."""
    for end in range(len(STREAM)):
        _, result = run_stream(STREAM[:end])
        assert isinstance(result, Failure), end
        assert result.failure().kind is ErrorKind.STREAM_TRUNCATED


def test_truncation_message_says_how_much_text_arrived() -> None:
    """A truncated stream says it ended before ``message_stop`` and how many characters had arrived."""
    cut = STREAM.index(b"event: content_block_stop", STREAM.index(b"text_delta"))
    error = run_stream(STREAM[:cut])[1].failure()
    assert (
        error.message
        == f"the stream ended before message_stop, after {len(EXPECTED.content)} characters of text"
    )


@pytest.mark.parametrize(
    ("error_type", "kind"),
    [
        ("overloaded_error", ErrorKind.OVERLOADED),
        ("api_error", ErrorKind.SERVER_ERROR),
        ("rate_limit_error", ErrorKind.RATE_LIMITED),
        ("invalid_request_error", ErrorKind.BAD_REQUEST),
    ],
)
def test_an_error_event_stops_the_stream(error_type: str, kind: ErrorKind) -> None:
    """An ``error`` event stops the stream with the kind its type says; nothing after it is shown."""
    stream = (
        MESSAGE_START
        + text_delta("part")
        + event("error", {"type": "error", "error": {"type": error_type, "message": "Overloaded"}})
        + text_delta("more")
        + message_delta("end_turn")
        + MESSAGE_STOP
    ).encode()
    parser = stream_parser(PROVIDER, REQUEST)
    assert parser.feed(stream) == ["part"]
    assert parser.error is not None
    assert (parser.error.kind, parser.error.message) == (kind, "stream error: Overloaded")
    assert not parser.done
    assert parser.finish() == Failure(parser.error)


def test_non_json_data_is_malformed() -> None:
    """An event whose data is not JSON makes the stream ``malformed_response``."""
    parser = stream_parser(PROVIDER, REQUEST)
    parser.feed((MESSAGE_START + "event: content_block_delta\ndata: {oops\n\n").encode())
    assert parser.error is not None
    assert parser.error.kind is ErrorKind.MALFORMED_RESPONSE


def test_refusal_stop_reason_in_a_stream_is_a_failure() -> None:
    """A streamed ``refusal`` stop reason is a ``content_filter`` failure, even with text."""
    stream = (MESSAGE_START + text_delta("I") + message_delta("refusal") + MESSAGE_STOP).encode()
    assert run_stream(stream)[1].failure().kind is ErrorKind.CONTENT_FILTER


def test_missing_output_usage_is_estimated() -> None:
    """A stream without an output count estimates it from the text and marks the usage estimated."""
    stream = (
        MESSAGE_START + text_delta("abcdefgh") + message_delta("end_turn", None) + MESSAGE_STOP
    ).encode()
    completion = run_stream(stream)[1].unwrap()
    assert completion.usage == Usage(input_tokens=25, output_tokens=2, estimated=True)
