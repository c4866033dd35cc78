"""The public API dispatches on the provider's kind, and no input makes any parser raise."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st
from returns.result import Failure, Result, Success

from rmcore.completion import Completion
from rmcore.errors import ProviderError
from rmcore.providers import ProviderKind, ProviderSpec
from rmcore.requests import ChatRequest
from rmcore.wire import adjustments, anthropic, build_request, parse_response, stream_parser
from rmcore.wire.aiceo import SOURCE
from rmcore.wire.anthropic_request import anthropic_body
from tests.core.helpers import spec

PROVIDERS = {
    kind: ProviderSpec(name=f"p-{kind}", kind=kind, url="http://127.0.0.1:9999/x", model=f"m-{kind}")
    for kind in ProviderKind
}
REQUEST = ChatRequest.ask("p", system="s", stream=True)

KEYS = [
    "error",
    "type",
    "code",
    "message",
    "choices",
    "delta",
    "content",
    "text",
    "finish_reason",
    "usage",
    "prompt_tokens",
    "completion_tokens",
    "input_tokens",
    "output_tokens",
    "model",
    "message",
    "index",
    "stop_reason",
    "content_block",
    "success",
    "response",
    "inputTokens",
    "outputTokens",
]
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.sampled_from(
        [
            "text_delta",
            "text",
            "message_start",
            "message_stop",
            "content_block_delta",
            "message_delta",
            "error",
            "overloaded_error",
            "stop",
            "refusal",
            "content_filter",
            "[DONE]",
        ]
    )
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=5),
    max_leaves=15,
)
EVENT_NAMES = st.sampled_from(
    [
        "message",
        "error",
        "ping",
        "message_start",
        "content_block_delta",
        "message_delta",
        "message_stop",
        "content_block_start",
        "weird",
    ]
)


def check_result(result: Result[Completion, ProviderError]) -> None:
    assert isinstance(result, (Success, Failure))
    if isinstance(result, Success):
        assert isinstance(result.unwrap(), Completion)
    else:
        assert isinstance(result.failure(), ProviderError)


def test_build_request_dispatches_on_kind() -> None:
    """``build_request`` builds each kind's own request format."""
    assert b'"stream_options"' in build_request(PROVIDERS[ProviderKind.OPENAI], REQUEST, "k").body
    anthropic_headers = dict(build_request(PROVIDERS[ProviderKind.ANTHROPIC], REQUEST, "k").headers)
    assert anthropic_headers["anthropic-version"] == anthropic.ANTHROPIC_VERSION
    aiceo_body = json.loads(build_request(PROVIDERS[ProviderKind.AICEO], REQUEST, "k").body)
    assert aiceo_body["source"] == SOURCE
    assert "stream" not in aiceo_body


def test_parse_response_dispatches_on_kind() -> None:
    """``parse_response`` reads each kind's reply format, and a reply of another format is a failure."""
    openai_body = b'{"choices": [{"message": {"content": "o"}}]}'
    anthropic_body = b'{"content": [{"type": "text", "text": "a"}]}'
    aiceo_body = b'{"success": true, "response": {"content": "g"}}'
    for kind, _, text in [
        (ProviderKind.OPENAI, openai_body, "o"),
        (ProviderKind.ANTHROPIC, anthropic_body, "a"),
        (ProviderKind.AICEO, aiceo_body, "g"),
    ]:
        for other, other_body, _ in [
            (ProviderKind.OPENAI, openai_body, ""),
            (ProviderKind.ANTHROPIC, anthropic_body, ""),
            (ProviderKind.AICEO, aiceo_body, ""),
        ]:
            result = parse_response(PROVIDERS[kind], 200, {}, other_body, 0.0)
            if other is kind:
                assert result.unwrap().content == text
            else:
                assert isinstance(result, Failure)


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(list(ProviderKind)),
    st.integers(min_value=-5, max_value=1000),
    st.dictionaries(st.sampled_from(["retry-after", "retry-after-ms", "content-type"]), st.text(max_size=30)),
    st.one_of(st.binary(max_size=400), JSON.map(lambda obj: json.dumps(obj).encode())),
)
def test_parse_response_never_raises(
    kind: ProviderKind, status: int, headers: dict[str, str], body: bytes
) -> None:
    """Any status, headers and body give a completion or a failure, never an exception; a non-2xx status is
    always a failure."""
    result = parse_response(PROVIDERS[kind], status, headers, body, 1e9)
    check_result(result)
    if not 200 <= status < 300:
        assert isinstance(result, Failure)


def drive(kind: ProviderKind, chunks: list[bytes]) -> None:
    parser = stream_parser(PROVIDERS[kind], REQUEST)
    for piece in chunks:
        deltas = parser.feed(piece)
        assert all(isinstance(d, str) and d for d in deltas)
        assert parser.error is None or isinstance(parser.error, ProviderError)
    result = parser.finish()
    check_result(result)
    if parser.error is not None:
        assert result == Failure(parser.error)
    if isinstance(result, Success):
        assert parser.done


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(list(ProviderKind)), st.lists(st.binary(max_size=80), max_size=8))
def test_stream_parsers_never_raise_on_random_bytes(kind: ProviderKind, chunks: list[bytes]) -> None:
    """Every kind's stream parser takes any bytes without raising."""
    drive(kind, chunks)


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(list(ProviderKind)),
    st.lists(st.tuples(st.none() | EVENT_NAMES, JSON | st.just("[DONE]") | st.text(max_size=10)), max_size=8),
    st.integers(min_value=1, max_value=64),
)
def test_stream_parsers_never_raise_on_random_events(
    kind: ProviderKind, events: list[tuple[str | None, object]], size: int
) -> None:
    """Every kind's stream parser takes any well-formed events, of any names and data, without raising."""
    stream = "".join(
        (f"event: {name}\n" if name else "")
        + f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"
        for name, data in events
    ).encode()
    drive(kind, [stream[i : i + size] for i in range(0, len(stream), size)])


def test_the_wire_formats_import_nothing_impure() -> None:
    """Checked in a fresh interpreter: ``email.utils``, for one, would bring ``socket`` and ``random``."""
    code = (
        "import sys, rmcore.wire\n"
        "bad = {'socket', 'random', 'threading', 'anyio', 'httpx', 'sqlite3'} & set(sys.modules)\n"
        "print(sorted(bad))\n"
    )
    root = Path(__file__).resolve().parents[3]
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=root,
        env={"PYTHONPATH": str(root)},
    ).stdout
    assert out.strip() == "[]"


def test_adjustments_name_what_anthropic_cannot_carry_as_given() -> None:
    request = ChatRequest.ask("hi", temperature=1.5)
    request = msgspec.structs.replace(request, seed=7)
    assert adjustments(spec("o", kind=ProviderKind.OPENAI), request) == ()
    assert adjustments(spec("a", kind=ProviderKind.ANTHROPIC), request) == (
        "seed 7 not sent (the Messages API has none)",
        "temperature 1.5 sent as 1",
    )
    assert adjustments(spec("a", kind=ProviderKind.ANTHROPIC), ChatRequest.ask("hi")) == ()
    stops = msgspec.structs.replace(ChatRequest.ask("hi"), stop=("\r", "END", " "))
    assert adjustments(spec("a", kind=ProviderKind.ANTHROPIC), stops) == (
        "stop sequences '\\r', ' ' not sent (only whitespace: the Messages API refuses it)",
    )
    assert b'"stop_sequences":["END"]' in anthropic_body("m", stops)
    assert adjustments(spec("o", kind=ProviderKind.OPENAI), stops) == ()
