"""Tool calls in replies, whole and streamed (``rmcore.wire.tool_calls`` and the OpenAI and
Anthropic parsers): assembled from their pieces however the stream is chunked, in one shape
whatever the format, with a normalised finish reason; a stream cut inside a tool call is
``stream_truncated``, never a success; an Anthropic call of the answer tool is the answer's text."""

from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from returns.result import Failure, Result, Success

from rmcore.completion import Completion, Usage, normalise_finish_reason
from rmcore.errors import ErrorKind, ProviderError
from rmcore.providers import ProviderKind
from rmcore.requests import ChatRequest, ResponseFormat, ToolCall
from rmcore.wire import parse_response, stream_parser
from rmcore.wire.tool_calls import ToolCallAssembly
from tests.core.helpers import spec, split

OPENAI = spec("openai", kind=ProviderKind.OPENAI)
ANTHROPIC = spec("anthropic", kind=ProviderKind.ANTHROPIC)
REQUEST = ChatRequest.ask("Weather in Paris and Rome?", max_tokens=100)
CALLS = (
    ToolCall(id="call_1", name="get_weather", arguments='{"city": "Paris"}'),
    ToolCall(id="call_2", name="get_weather", arguments='{"city": "Rome"}'),
)
PROPERTY = settings(max_examples=60, deadline=None)


def sse(obj: object, event: str | None = None) -> str:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(obj)}\n\n"


def run(parser_of: object, chunks: list[bytes]) -> tuple[list[str], Result[Completion, ProviderError]]:
    parser = parser_of  # a StreamParser
    deltas: list[str] = []
    for chunk in chunks:
        deltas += parser.feed(chunk)  # type: ignore[attr-defined]
    return deltas, parser.finish()  # type: ignore[attr-defined]


# --- the assembly --------------------------------------------------------------------------------


def test_pieces_are_joined_by_key_in_order_of_first_sight() -> None:
    """Id and name from the first piece that brings them, arguments joined, calls in order."""
    assembly = ToolCallAssembly()
    assembly.piece(1, id="b", name="g", arguments="{")
    assembly.piece(0, id="a", name="f", arguments='{"x"')
    assembly.piece(1, arguments="}")
    assembly.piece(0, id="a", name="f", arguments=": 1}")
    assert assembly.calls() == Success(
        (ToolCall(id="b", name="g", arguments="{}"), ToolCall(id="a", name="f", arguments='{"x": 1}'))
    )


def test_a_call_is_open_until_closed() -> None:
    """A begun call is open (named) until it is closed; ``close_all`` closes every call."""
    assembly = ToolCallAssembly()
    assert assembly.open_call() is None
    assembly.begin(3, id="t", name="lookup")
    assert assembly.open_call() == "lookup"
    assembly.close(3)
    assert assembly.open_call() is None
    assembly.piece(4, arguments="{")
    assert assembly.open_call() == "#4"
    assembly.close_all()
    assert assembly.open_call() is None


def test_a_call_without_arguments_takes_its_default_and_one_without_id_gets_one() -> None:
    """Anthropic's start input stands when no slice follows; a missing id is ``call_<key>``."""
    assembly = ToolCallAssembly()
    assembly.begin(0, id="", name="now", default_arguments="{}")
    assert assembly.calls() == Success((ToolCall(id="call_0", name="now", arguments="{}"),))


def test_a_call_without_a_name_is_an_error() -> None:
    """Arguments with no function name cannot be a call."""
    assembly = ToolCallAssembly()
    assembly.piece(0, id="a", arguments="{}")
    assert assembly.calls() == Failure("tool call 0 has no function name")


# --- OpenAI ---------------------------------------------------------------------------------------


def openai_stream(
    calls: tuple[ToolCall, ...], slices: int = 3, *, finish: bool = True, done: bool = True
) -> bytes:
    """A chat-completions stream with some text, then each call: the first piece with id, name and
    no arguments, then the arguments in ``slices`` pieces; the finish, the usage, ``[DONE]``."""

    def chunk(delta: dict[str, object], finish_reason: str | None = None) -> str:
        return sse(
            {"model": "gpt-x", "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}
        )

    body = chunk({"role": "assistant", "content": "Let me check."})
    for i, call in enumerate(calls):
        first = {
            "index": i,
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        body += chunk({"tool_calls": [first]})
        size = max(1, -(-len(call.arguments) // slices))
        for start in range(0, len(call.arguments), size):
            piece = {"index": i, "function": {"arguments": call.arguments[start : start + size]}}
            body += chunk({"tool_calls": [piece]})
    if finish:
        body += chunk({}, "tool_calls")
        body += sse({"choices": [], "usage": {"prompt_tokens": 20, "completion_tokens": 30}})
    if done:
        body += "data: [DONE]\n\n"
    return body.encode()


OPENAI_EXPECTED = Completion(
    content="Let me check.",
    model="gpt-x",
    usage=Usage(input_tokens=20, output_tokens=30),
    finish_reason="tool_calls",
    tool_calls=CALLS,
)


def test_openai_streamed_tool_calls_are_assembled() -> None:
    """Two calls streamed in pieces come back whole, with the text and ``tool_calls`` finish."""
    deltas, outcome = run(stream_parser(OPENAI, REQUEST), [openai_stream(CALLS)])
    assert deltas == ["Let me check."]
    assert outcome == Success(OPENAI_EXPECTED)


@PROPERTY
@given(slices=st.integers(1, 20), cuts=st.lists(st.integers(0, 3000), max_size=12))
def test_openai_tool_calls_parse_the_same_whatever_the_chunking(slices: int, cuts: list[int]) -> None:
    """However the arguments are sliced and the body chunked, the same completion."""
    _, outcome = run(stream_parser(OPENAI, REQUEST), split(openai_stream(CALLS, slices), cuts))
    assert outcome == Success(OPENAI_EXPECTED)


def test_openai_interleaved_pieces_are_assembled_by_index() -> None:
    """Pieces of two calls arriving interleaved are joined by their index."""
    pieces = [
        {"index": 0, "id": "call_1", "function": {"name": "get_weather", "arguments": '{"city": '}},
        {"index": 1, "id": "call_2", "function": {"name": "get_weather", "arguments": '{"city": "Ro'}},
        {"index": 0, "function": {"arguments": '"Paris"}'}},
        {"index": 1, "function": {"arguments": 'me"}'}},
    ]
    body = "".join(sse({"choices": [{"index": 0, "delta": {"tool_calls": [p]}}]}) for p in pieces)
    body += sse({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}) + "data: [DONE]\n\n"
    _, outcome = run(stream_parser(OPENAI, REQUEST), [body.encode()])
    assert outcome.unwrap().tool_calls == CALLS


@pytest.mark.parametrize("cut", ["mid-arguments", "before-finish", "before-done"])
def test_openai_stream_cut_inside_a_tool_call_is_truncated(cut: str) -> None:
    """No ``[DONE]``: ``stream_truncated``, never a success, the open call named when it was open."""
    full = openai_stream(CALLS)
    body = {
        "mid-arguments": full[: full.index(b"\n\n", full.index(b'"call_2"')) + 12],
        "before-finish": openai_stream(CALLS, finish=False, done=False),
        "before-done": openai_stream(CALLS, done=False),
    }[cut]
    _, outcome = run(stream_parser(OPENAI, REQUEST), [body])
    error = outcome.failure()
    assert error.kind is ErrorKind.STREAM_TRUNCATED
    assert ("inside tool call get_weather" in error.message) is (cut != "before-done")


def test_openai_whole_reply_tool_calls() -> None:
    """A whole reply's ``message.tool_calls`` (content null) come back in the same shape."""
    message = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in CALLS
        ],
    }
    body = json.dumps(
        {
            "model": "gpt-x",
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 30},
        }
    ).encode()
    assert parse_response(OPENAI, 200, {}, body, 0.0, REQUEST) == Success(
        Completion(
            content="",
            model="gpt-x",
            usage=Usage(input_tokens=20, output_tokens=30),
            finish_reason="tool_calls",
            tool_calls=CALLS,
        )
    )


# --- Anthropic ------------------------------------------------------------------------------------


def anthropic_stream(
    calls: tuple[ToolCall, ...], slices: int = 3, *, stop_block: bool = True, stop: bool = True
) -> bytes:
    """A Messages stream: a text block, then one tool_use block per call whose input arrives in
    ``slices`` ``input_json_delta`` pieces; the ``tool_use`` stop reason, ``message_stop``."""
    body = sse(
        {"type": "message_start", "message": {"model": "claude-x", "usage": {"input_tokens": 20}}},
        "message_start",
    )
    body += sse(
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        "content_block_start",
    )
    body += sse(
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Let me check."}},
        "content_block_delta",
    )
    body += sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
    for i, call in enumerate(calls, start=1):
        block = {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}
        body += sse(
            {"type": "content_block_start", "index": i, "content_block": block}, "content_block_start"
        )
        size = max(1, -(-len(call.arguments) // slices))
        for start in range(0, len(call.arguments), size):
            delta = {"type": "input_json_delta", "partial_json": call.arguments[start : start + size]}
            body += sse({"type": "content_block_delta", "index": i, "delta": delta}, "content_block_delta")
        if stop_block:
            body += sse({"type": "content_block_stop", "index": i}, "content_block_stop")
    if stop:
        body += sse(
            {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 30}},
            "message_delta",
        )
        body += sse({"type": "message_stop"}, "message_stop")
    return body.encode()


ANTHROPIC_EXPECTED = Completion(
    content="Let me check.",
    model="claude-x",
    usage=Usage(input_tokens=20, output_tokens=30),
    finish_reason="tool_calls",
    tool_calls=CALLS,
)


def test_anthropic_streamed_tool_use_is_assembled_in_the_same_shape() -> None:
    """tool_use blocks and their input_json_delta slices: the same calls as from OpenAI, the
    ``tool_use`` stop reason read as ``tool_calls``."""
    deltas, outcome = run(stream_parser(ANTHROPIC, REQUEST), [anthropic_stream(CALLS)])
    assert deltas == ["Let me check."]
    assert outcome == Success(ANTHROPIC_EXPECTED)


@PROPERTY
@given(slices=st.integers(1, 20), cuts=st.lists(st.integers(0, 4000), max_size=12))
def test_anthropic_tool_use_parses_the_same_whatever_the_chunking(slices: int, cuts: list[int]) -> None:
    """However the input is sliced and the body chunked, the same completion."""
    _, outcome = run(stream_parser(ANTHROPIC, REQUEST), split(anthropic_stream(CALLS, slices), cuts))
    assert outcome == Success(ANTHROPIC_EXPECTED)


def test_anthropic_stream_cut_inside_a_tool_use_block_is_truncated() -> None:
    """No ``message_stop`` and the block never stopped: ``stream_truncated``, naming the call."""
    _, outcome = run(
        stream_parser(ANTHROPIC, REQUEST), [anthropic_stream(CALLS[:1], stop_block=False, stop=False)]
    )
    error = outcome.failure()
    assert error.kind is ErrorKind.STREAM_TRUNCATED
    assert "inside tool call get_weather" in error.message


def test_anthropic_whole_reply_tool_use() -> None:
    """A whole reply's tool_use blocks: ``input`` back as JSON text, exactly as sent."""
    content = [{"type": "text", "text": "Let me check."}] + [
        {"type": "tool_use", "id": c.id, "name": c.name, "input": json.loads(c.arguments)} for c in CALLS
    ]
    body = json.dumps(
        {
            "model": "claude-x",
            "content": content,
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 20, "output_tokens": 30},
        }
    ).encode()
    assert parse_response(ANTHROPIC, 200, {}, body, 0.0, REQUEST) == Success(ANTHROPIC_EXPECTED)


JSON_REQUEST = ChatRequest.ask(
    "Verdict?",
    response_format=ResponseFormat(
        type="json_schema", name="verdict", schema=msgspec.Raw(b'{"type":"object"}')
    ),
)


def test_anthropic_answer_tool_in_a_whole_reply_is_the_text() -> None:
    """The forced answer tool's input is the reply's text (JSON); no tool call, finish ``stop``."""
    body = json.dumps(
        {
            "model": "claude-x",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "verdict", "input": {"go": True}}],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 5, "output_tokens": 6},
        }
    ).encode()
    completion = parse_response(ANTHROPIC, 200, {}, body, 0.0, JSON_REQUEST).unwrap()
    assert (json.loads(completion.content), completion.tool_calls, completion.finish_reason) == (
        {"go": True},
        (),
        "stop",
    )


def test_anthropic_answer_tool_in_a_stream_is_streamed_text() -> None:
    """Streamed, the answer tool's input slices are text deltas as they arrive."""
    answer = ToolCall(id="toolu_1", name="verdict", arguments='{"go": true, "why": "cheap"}')
    deltas, outcome = run(stream_parser(ANTHROPIC, JSON_REQUEST), [anthropic_stream((answer,), slices=4)])
    completion = outcome.unwrap()
    assert "".join(deltas) == "Let me check." + answer.arguments
    assert (completion.content, completion.tool_calls, completion.finish_reason) == (
        "Let me check." + answer.arguments,
        (),
        "stop",
    )


# --- finish reasons -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "normal"),
    [
        ("stop", "stop"),
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("length", "length"),
        ("max_tokens", "length"),
        ("tool_calls", "tool_calls"),
        ("tool_use", "tool_calls"),
        ("content_filter", "content_filter"),
        ("refusal", "content_filter"),
        (None, None),
        ("something_new", "something_new"),
    ],
)
def test_finish_reasons_are_normalised(reason: str | None, normal: str | None) -> None:
    """OpenAI's and Anthropic's reasons in one vocabulary; an unknown one shows as it is."""
    assert normalise_finish_reason(reason) == normal
