"""The OpenAI chat-completions format: request bytes, whole replies, streams."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from returns.result import Failure, Result, Success

from rmcore.completion import Completion, Usage
from rmcore.errors import ErrorKind, ProviderError
from rmcore.pricing import estimate_prompt_tokens
from rmcore.providers import ProviderKind, ProviderSpec
from rmcore.requests import ChatRequest
from rmcore.wire import build_request, parse_response, stream_parser
from tests.core.helpers import split

PROVIDER = ProviderSpec(
    name="local", kind=ProviderKind.OPENAI, url="http://127.0.0.1:8000/v1/chat/completions", model="gpt-test"
)
REQUEST = ChatRequest.ask("Say hi", system="Be brief", max_tokens=50, temperature=0.0, stream=True)
NOW = 1_700_000_000.0


def chunk(delta: dict[str, str], finish: str | None = None, **extra: object) -> str:
    obj = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-test-0613",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        "usage": None,
    }
    obj.update(extra)
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


USAGE_CHUNK = (
    'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-test-0613",'
    '"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17}}\n\n'
)
STREAM = (
    chunk({"role": "assistant", "content": ""})
    + ": keep-alive\n\n"
    + chunk({"content": "Héllo"})
    + chunk({"content": ", 世界 🎉"})
    + chunk({}, "stop")
    + USAGE_CHUNK
    + "data: [DONE]\n\n"
).encode()
EXPECTED = Completion(
    content="Héllo, 世界 🎉",
    model="gpt-test-0613",
    usage=Usage(input_tokens=12, output_tokens=5),
    finish_reason="stop",
)


def run_stream(
    *chunks: bytes, request: ChatRequest = REQUEST
) -> tuple[list[str], Result[Completion, ProviderError]]:
    parser = stream_parser(PROVIDER, request)
    deltas: list[str] = []
    for piece in chunks:
        deltas.extend(parser.feed(piece))
    return deltas, parser.finish()


# build_request


def test_streaming_request_headers_and_body() -> None:
    """A streamed request sends the bearer key and the chat body asking for usage in the stream;
    temperature 0 is sent as 0."""
    http = build_request(PROVIDER, REQUEST, "sk-test")
    assert (http.method, http.url) == ("POST", PROVIDER.url)
    assert http.headers == (
        ("Content-Type", "application/json"),
        ("Authorization", "Bearer sk-test"),
        ("Accept", "text/event-stream"),
    )
    assert http.body == (
        b'{"model":"gpt-test","messages":[{"role":"system","content":"Be brief"},'
        b'{"role":"user","content":"Say hi"}],"max_tokens":50,"temperature":0.0,'
        b'"stream":true,"stream_options":{"include_usage":true}}'
    )
    assert json.loads(http.body)["temperature"] == 0


def test_whole_request_without_key_system_or_temperature() -> None:
    """Without a key, system text or temperature none is sent; ``max_tokens`` always is."""
    http = build_request(PROVIDER, ChatRequest.ask("Q", stream=False), None)
    assert http.headers == (("Content-Type", "application/json"), ("Accept", "application/json"))
    assert json.loads(http.body) == {
        "model": "gpt-test",
        "messages": [{"role": "user", "content": "Q"}],
        "max_tokens": 1024,
    }


def test_temperature_is_sent_as_given() -> None:
    """A temperature is sent as the request gives it."""
    http = build_request(PROVIDER, ChatRequest.ask("Q", temperature=0.7), "k")
    assert json.loads(http.body)["temperature"] == 0.7


def test_the_key_appears_only_in_its_header() -> None:
    """The key is only in the ``Authorization`` header, which redaction hides, never in the body."""
    http = build_request(PROVIDER, REQUEST, "sk-secret")
    assert b"sk-secret" not in http.body
    assert ("Authorization", "<redacted>") in http.redacted_headers()


# parse_response


def reply(**overrides: object) -> bytes:
    obj: dict[str, object] = {
        "id": "chatcmpl-9",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-test-0613",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hi!", "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12},
    }
    obj.update(overrides)
    return json.dumps(obj).encode()


def test_whole_reply() -> None:
    """A whole reply gives the first choice's content, the model, usage and finish reason."""
    assert parse_response(PROVIDER, 200, {}, reply(), NOW) == Success(
        Completion(
            content="Hi!",
            model="gpt-test-0613",
            usage=Usage(input_tokens=9, output_tokens=3),
            finish_reason="stop",
        )
    )


def test_missing_usage_and_model_are_estimated_and_defaulted() -> None:
    """A reply without usage estimates its output tokens; without a model, the configured one is named."""
    body = json.dumps({"choices": [{"message": {"content": "x" * 41}, "finish_reason": "length"}]}).encode()
    result = parse_response(PROVIDER, 200, {}, body, NOW)
    assert result == Success(
        Completion(
            content="x" * 41,
            model="gpt-test",
            usage=Usage(input_tokens=0, output_tokens=11, estimated=True),
            finish_reason="length",
        )
    )


@pytest.mark.parametrize("reason", ["content_filter", "sensitive"])
def test_filtered_answers_are_content_filter_failures(reason: str) -> None:
    """A ``content_filter`` or ``sensitive`` finish reason is a ``content_filter`` failure."""
    body = reply(choices=[{"index": 0, "message": {"content": ""}, "finish_reason": reason}])
    result = parse_response(PROVIDER, 200, {}, body, NOW)
    assert isinstance(result, Failure)
    assert result.failure().kind is ErrorKind.CONTENT_FILTER


def test_a_refusal_is_a_content_filter_failure() -> None:
    """A refusal in place of content is a ``content_filter`` failure."""
    body = reply(
        choices=[{"index": 0, "message": {"content": None, "refusal": "I can't."}, "finish_reason": "stop"}]
    )
    assert parse_response(PROVIDER, 200, {}, body, NOW).failure().kind is ErrorKind.CONTENT_FILTER


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b'{"choices": []}',
        b'{"choices": [{"message": {"content": 5}}]}',
        b'{"object": "chat.completion"}',
        reply()[:-5],
        reply(usage={"prompt_tokens": -1, "completion_tokens": 1}),
    ],
)
def test_wrong_shapes_are_malformed(body: bytes) -> None:
    """Bodies that are not a chat completion, cut ones and negative counts included, are
    ``malformed_response``."""
    error = parse_response(PROVIDER, 200, {}, body, NOW).failure()
    assert error.kind is ErrorKind.MALFORMED_RESPONSE
    assert error.status == 200


def test_an_error_object_in_a_200_reply_is_classified() -> None:
    """An error object sent with status 200 is classified by its code, not taken for an answer."""
    body = b'{"error": {"message": "maximum context length exceeded", "code": "context_length_exceeded"}}'
    assert parse_response(PROVIDER, 200, {}, body, NOW).failure().kind is ErrorKind.CONTEXT_LENGTH


def test_error_statuses_are_classified_with_retry_after() -> None:
    """A 429 is ``rate_limited`` with the provider's message and its ``retry-after-ms``."""
    body = b'{"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}'
    error = parse_response(PROVIDER, 429, {"retry-after-ms": "250"}, body, NOW).failure()
    assert (error.kind, error.status, error.retry_after_s) == (ErrorKind.RATE_LIMITED, 429, 0.25)
    assert error.message == "HTTP 429: Rate limit reached"


# streams


def test_stream_yields_deltas_and_a_completion() -> None:
    """A stream shows its text deltas and ends in the completion with the usage of its last chunk."""
    deltas, result = run_stream(STREAM)
    assert deltas == ["Héllo", ", 世界 🎉"]
    assert result == Success(EXPECTED)


def test_done_only_at_the_done_marker() -> None:
    """The stream is done at ``data: [DONE]`` and not before; later chunks are ignored."""
    parser = stream_parser(PROVIDER, REQUEST)
    parser.feed(STREAM[: STREAM.index(b"data: [DONE]")])
    before = parser.done
    parser.feed(b"data: [DONE]\n\n")
    assert (before, parser.done) == (False, True)
    assert parser.feed(chunk({"content": "late"}).encode()) == []
    assert parser.finish() == Success(EXPECTED)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=15))
def test_stream_parses_the_same_whatever_the_chunk_boundaries(cuts: list[int]) -> None:
    """The stream gives the same deltas and completion however it is split into chunks."""
    deltas, result = run_stream(*split(STREAM, cuts))
    assert "".join(deltas) == EXPECTED.content
    assert result == Success(EXPECTED)


def test_every_cut_before_the_done_marker_is_truncated_never_success() -> None:
    """A stream cut at any byte before the end of ``[DONE]`` is ``stream_truncated``, counting the
    characters shown."""
    for end in range(len(STREAM)):
        deltas, result = run_stream(STREAM[:end])
        assert isinstance(result, Failure), end
        error = result.failure()
        assert error.kind is ErrorKind.STREAM_TRUNCATED
        assert f"after {sum(map(len, deltas))} characters" in error.message


def test_stream_without_usage_is_estimated_from_the_request_and_the_text() -> None:
    """A stream without usage estimates input from the request and output from the text, marked estimated."""
    stream = (chunk({"content": "abcdefghi"}) + chunk({}, "stop") + "data: [DONE]\n\n").encode()
    _, result = run_stream(stream)
    assert result == Success(
        Completion(
            content="abcdefghi",
            model="gpt-test-0613",
            usage=Usage(input_tokens=estimate_prompt_tokens(REQUEST), output_tokens=3, estimated=True),
            finish_reason="stop",
        )
    )


def test_an_error_chunk_stops_the_stream() -> None:
    """An error chunk stops the stream with its kind; neither text after it nor ``[DONE]`` is taken."""
    stream = (
        chunk({"content": "par"})
        + 'data: {"error": {"message": "The server is overloaded", "type": "server_error", "code": null}}\n\n'
        + chunk({"content": "tial"})
    ).encode()
    parser = stream_parser(PROVIDER, REQUEST)
    assert parser.feed(stream) == ["par"]
    assert parser.error is not None
    assert parser.error.kind is ErrorKind.SERVER_ERROR
    assert parser.feed(b"data: [DONE]\n\n") == []
    assert parser.finish() == Failure(parser.error)


def test_an_error_chunk_with_a_code_is_classified_by_it() -> None:
    """An error chunk's code decides its kind."""
    stream = b'data: {"error": {"message": "Rate limit", "code": "rate_limit_exceeded"}}\n\n'
    _, result = run_stream(stream)
    assert result.failure().kind is ErrorKind.RATE_LIMITED


@pytest.mark.parametrize("data", [b"data: {not json\n\n", b"data: [1, 2]\n\n", b'data: {"choices": 3}\n\n'])
def test_non_chunk_data_is_malformed(data: bytes) -> None:
    """Data that is not a chat completion chunk makes the stream ``malformed_response``."""
    parser = stream_parser(PROVIDER, REQUEST)
    parser.feed(chunk({"content": "a"}).encode() + data)
    assert parser.error is not None
    assert parser.error.kind is ErrorKind.MALFORMED_RESPONSE
    assert parser.finish().failure().kind is ErrorKind.MALFORMED_RESPONSE


def test_content_filter_finish_in_a_stream_is_a_failure() -> None:
    """A streamed ``content_filter`` finish is a ``content_filter`` failure, even after text."""
    stream = (chunk({"content": "I"}) + chunk({}, "content_filter") + "data: [DONE]\n\n").encode()
    assert run_stream(stream)[1].failure().kind is ErrorKind.CONTENT_FILTER


def test_refusal_deltas_without_content_are_a_content_filter_failure() -> None:
    """Refusal deltas without content show nothing and fail as ``content_filter``."""
    stream = (chunk({"refusal": "I can't help"}) + chunk({}, "stop") + "data: [DONE]\n\n").encode()
    deltas, result = run_stream(stream)
    assert deltas == []
    assert result.failure().kind is ErrorKind.CONTENT_FILTER


def test_crlf_streams_parse_like_lf_streams() -> None:
    """A stream with CRLF line ends parses to the same completion."""
    assert run_stream(STREAM.replace(b"\n", b"\r\n"))[1] == Success(EXPECTED)
