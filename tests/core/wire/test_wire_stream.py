"""Streamed replies (``rmcore.wire.stream``): the parser contract the shell drives, and the
event-stream machinery the OpenAI and Anthropic parsers share.

The contract, checked here for both event-stream formats (and with a parser of its own for the
base class): chunks may be split anywhere and give the same answer; a stream is a success only
once its terminating event arrived; after the end or an error, input is ignored. The formats' own
event shapes are tested in ``test_wire_openai.py`` and ``test_wire_anthropic.py``."""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from returns.result import Failure, Result, Success

from rmcore.completion import Completion, Usage, normalise_finish_reason
from rmcore.errors import ErrorKind, ProviderError
from rmcore.pricing import estimate_prompt_tokens
from rmcore.providers import ProviderKind, ProviderSpec
from rmcore.requests import ChatRequest
from rmcore.wire import stream_parser
from rmcore.wire.sse import SseEvent
from rmcore.wire.stream import EventStreamParser, StreamParser, WholeBodyParser
from tests.core.helpers import spec, split

REQUEST = ChatRequest.ask("Say hi", system="Be brief", max_tokens=64, stream=True)
INPUT_TOKENS = 12
OUTPUT_TOKENS = 7

# --- streams of the two event-stream formats, built from pieces of text -------------------------


def openai_stream(pieces: list[str], finish: str = "stop") -> bytes:
    """A chat-completions stream: one chunk per piece, the finish, the usage, ``[DONE]``."""

    def data(obj: object) -> str:
        return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"

    body = "".join(
        data({"model": "gpt-stream", "choices": [{"index": 0, "delta": {"content": p}}]}) for p in pieces
    )
    body += data({"model": "gpt-stream", "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    body += data(
        {"choices": [], "usage": {"prompt_tokens": INPUT_TOKENS, "completion_tokens": OUTPUT_TOKENS}}
    )
    return (body + "data: [DONE]\n\n").encode()


def anthropic_stream(pieces: list[str], finish: str = "end_turn") -> bytes:
    """A Messages stream: start, one text delta per piece, the stop reason, ``message_stop``."""

    def event(name: str, obj: dict[str, object]) -> str:
        return f"event: {name}\ndata: {json.dumps({'type': name, **obj}, ensure_ascii=False)}\n\n"

    body = event(
        "message_start",
        {"message": {"model": "claude-stream", "usage": {"input_tokens": INPUT_TOKENS, "output_tokens": 1}}},
    )
    body += event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
    body += "".join(
        event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": p}}) for p in pieces
    )
    body += event("content_block_stop", {"index": 0})
    body += event(
        "message_delta", {"delta": {"stop_reason": finish}, "usage": {"output_tokens": OUTPUT_TOKENS}}
    )
    return (body + event("message_stop", {})).encode()


class Format:
    """One event-stream format: its provider, a stream of pieces, and what it should parse to."""

    def __init__(
        self, kind: ProviderKind, build: Callable[[list[str]], bytes], model: str, finish: str
    ) -> None:
        self.provider = spec(kind.value, kind=kind)
        self.build = build
        self.model = model
        self.finish = finish

    def expected(self, pieces: list[str]) -> Completion:
        return Completion(
            content="".join(pieces),
            model=self.model,
            usage=Usage(input_tokens=INPUT_TOKENS, output_tokens=OUTPUT_TOKENS),
            finish_reason=normalise_finish_reason(self.finish),
        )

    def __repr__(self) -> str:
        return self.provider.kind.value


FORMATS = [
    Format(ProviderKind.OPENAI, openai_stream, "gpt-stream", "stop"),
    Format(ProviderKind.ANTHROPIC, anthropic_stream, "claude-stream", "end_turn"),
]
PIECES = st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=6)
PROPERTY = settings(max_examples=60, deadline=None)


def run(parser: StreamParser, chunks: list[bytes]) -> tuple[list[str], Result[Completion, ProviderError]]:
    """Feed every chunk, then finish: the deltas shown and the outcome."""
    deltas: list[str] = []
    for chunk in chunks:
        deltas.extend(parser.feed(chunk))
    return deltas, parser.finish()


# --- the contract, for both formats --------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS, ids=repr)
@PROPERTY
@given(pieces=PIECES, data=st.data())
def test_any_chunking_yields_the_same_deltas_and_completion(
    fmt: Format, pieces: list[str], data: st.DataObject
) -> None:
    """A stream fed in any chunking, even inside a UTF-8 character, shows the same text and
    ends in the same completion."""
    stream = fmt.build(pieces)
    cuts = data.draw(st.lists(st.integers(min_value=0, max_value=len(stream)), max_size=20))
    deltas, result = run(stream_parser(fmt.provider, REQUEST), split(stream, cuts))
    assert "".join(deltas) == "".join(pieces)
    assert result == Success(fmt.expected(pieces))


@pytest.mark.parametrize("fmt", FORMATS, ids=repr)
@PROPERTY
@given(pieces=PIECES, data=st.data())
def test_a_stream_cut_before_its_terminating_event_is_truncated(
    fmt: Format, pieces: list[str], data: st.DataObject
) -> None:
    """Any stream cut short of its last byte is ``stream_truncated`` (status 200), never a
    success, and says how many characters of text had arrived."""
    stream = fmt.build(pieces)
    end = data.draw(st.integers(min_value=0, max_value=len(stream) - 1))
    parser = stream_parser(fmt.provider, REQUEST)
    deltas, result = run(parser, [stream[:end]])
    assert not parser.done
    assert isinstance(result, Failure)
    error = result.failure()
    assert error.kind is ErrorKind.STREAM_TRUNCATED
    assert error.status == 200
    assert f"after {sum(map(len, deltas))} characters" in error.message


@pytest.mark.parametrize("fmt", FORMATS, ids=repr)
def test_done_turns_true_only_with_the_last_byte_of_the_terminating_event(fmt: Format) -> None:
    """``done`` is false until the terminating event is dispatched (its blank line included)."""
    stream = fmt.build(["Hello"])
    parser = stream_parser(fmt.provider, REQUEST)
    parser.feed(stream[:-1])
    assert not parser.done
    parser.feed(stream[-1:])
    assert parser.done


@pytest.mark.parametrize("fmt", FORMATS, ids=repr)
def test_input_after_the_terminating_event_is_ignored(fmt: Format) -> None:
    """Once done, more text (even an error) changes nothing: no delta, the same completion."""
    parser = stream_parser(fmt.provider, REQUEST)
    run(parser, [fmt.build(["Hi"])])
    late = fmt.build(["late"]) + b'data: {"error": {"message": "boom", "type": "server_error"}}\n\n'
    assert parser.feed(late) == []
    assert parser.error is None
    assert parser.finish() == Success(fmt.expected(["Hi"]))


@pytest.mark.parametrize("fmt", FORMATS, ids=repr)
def test_after_an_error_input_is_ignored_and_the_error_is_the_outcome(fmt: Format) -> None:
    """An error in the stream sets ``error``; what follows (even the terminator) is ignored."""
    parser = stream_parser(fmt.provider, REQUEST)
    stream = fmt.build(["Hel", "lo"])
    first = stream.index(b"\n\n") + 2
    parser.feed(stream[:first])
    assert parser.error is None
    parser.feed(b'event: error\ndata: {"error": {"type": "overloaded_error", "message": "busy"}}\n\n')
    error = parser.error
    assert error == ProviderError(kind=ErrorKind.OVERLOADED, message="stream error: busy", status=200)
    assert parser.feed(stream[first:]) == []
    assert not parser.done
    assert parser.finish() == Failure(error)


@pytest.mark.parametrize("fmt", FORMATS, ids=repr)
def test_an_empty_body_is_truncated_after_zero_characters(fmt: Format) -> None:
    """A 200 whose body ends at once is truncated, with no text."""
    parser = stream_parser(fmt.provider, REQUEST)
    result = parser.finish()
    assert isinstance(result, Failure)
    assert result.failure().kind is ErrorKind.STREAM_TRUNCATED
    assert "after 0 characters" in result.failure().message


@pytest.mark.parametrize("fmt", FORMATS, ids=repr)
@pytest.mark.parametrize("reason", ["content_filter", "refusal", "sensitive"])
def test_a_withheld_answer_is_a_content_filter_failure_even_when_complete(fmt: Format, reason: str) -> None:
    """A stream that ends properly but with a content-filter finish reason is not a success."""
    stream = fmt.build(["partial"]).replace(fmt.finish.encode(), reason.encode())
    _, result = run(stream_parser(fmt.provider, REQUEST), [stream])
    assert isinstance(result, Failure)
    assert result.failure().kind is ErrorKind.CONTENT_FILTER


# --- the base class, through a format of its own -------------------------------------------------


class ToyParser(EventStreamParser):
    """A minimal event-stream format: ``text`` events carry text, ``end`` terminates, ``model``,
    ``finish``, ``refusal`` and ``usage`` set what they say, ``bad`` is malformed."""

    terminator = "the end event"

    def _on_event(self, event: SseEvent) -> str | None:
        match event.event:
            case "text":
                return event.data
            case "model":
                self._model = event.data
            case "finish":
                self._finish_reason = event.data
            case "refusal":
                self._refusal.append(event.data)
            case "usage":
                given_in, given_out = event.data.split()
                self._input_tokens, self._output_tokens = int(given_in), int(given_out)
            case "bad":
                self._malformed("a bad event")
            case "end":
                self._done = True
        return None


PROVIDER: ProviderSpec = spec("toy")


def toy(*events: tuple[str, str]) -> bytes:
    return "".join(f"event: {name}\ndata: {data}\n\n" for name, data in events).encode()


def toy_run(*events: tuple[str, str]) -> tuple[ToyParser, list[str], Result[Completion, ProviderError]]:
    parser = ToyParser(PROVIDER, REQUEST)
    deltas, result = run(parser, [toy(*events)])
    return parser, deltas, result


def test_the_completion_joins_the_deltas_with_the_stream_s_model_and_usage() -> None:
    """Text is the deltas joined; model, finish reason and usage are what the stream said."""
    _, deltas, result = toy_run(
        ("model", "toy-2"), ("text", "Hel"), ("text", "lo"), ("finish", "stop"), ("usage", "5 2"), ("end", "")
    )
    assert deltas == ["Hel", "lo"]
    assert result == Success(
        Completion(
            content="Hello", model="toy-2", usage=Usage(input_tokens=5, output_tokens=2), finish_reason="stop"
        )
    )


def test_without_a_model_or_usage_the_provider_s_model_is_named_and_usage_estimated() -> None:
    """A stream that names no model is the provider's; unreported usage is estimated from the
    request and the text, and marked so."""
    _, _, result = toy_run(("text", "abcdefghi"), ("end", ""))
    assert result == Success(
        Completion(
            content="abcdefghi",
            model=PROVIDER.model,
            usage=Usage(
                input_tokens=estimate_prompt_tokens(REQUEST), output_tokens=math.ceil(9 / 4), estimated=True
            ),
        )
    )


def test_truncation_names_the_format_s_terminator() -> None:
    """The truncation message says which event was missing, as the format names it."""
    _, _, result = toy_run(("text", "abc"))
    assert result == Failure(
        ProviderError(
            kind=ErrorKind.STREAM_TRUNCATED,
            message="the stream ended before the end event, after 3 characters of text",
            status=200,
        )
    )


def test_a_malformed_event_stops_the_stream_as_malformed_response() -> None:
    """An event the format cannot read sets ``malformed_response`` (status 200) and nothing after
    it is shown, not even text in the same chunk."""
    parser, deltas, result = toy_run(("text", "a"), ("bad", "?"), ("text", "b"), ("end", ""))
    assert deltas == ["a"]
    assert parser.error == ProviderError(
        kind=ErrorKind.MALFORMED_RESPONSE, message="malformed stream: a bad event", status=200
    )
    assert result == Failure(parser.error)


def test_a_refusal_without_text_is_a_content_filter_failure() -> None:
    """A stream that only refused withholds the answer: ``content_filter``."""
    _, _, result = toy_run(("refusal", "I can't help with that"), ("end", ""))
    assert isinstance(result, Failure)
    assert result.failure().kind is ErrorKind.CONTENT_FILTER


def test_a_refusal_beside_real_text_keeps_the_text() -> None:
    """A refusal note next to an actual answer does not throw the answer away."""
    _, _, result = toy_run(("refusal", "partly"), ("text", "the answer"), ("end", ""))
    assert isinstance(result, Success)
    assert result.unwrap().content == "the answer"


def test_empty_text_deltas_are_not_shown() -> None:
    """An event with empty text yields no delta."""
    _, deltas, _ = toy_run(("text", ""), ("text", "x"), ("end", ""))
    assert deltas == ["x"]


# --- the whole-body parser -----------------------------------------------------------------------


def whole(body: bytes) -> Result[Completion, ProviderError]:
    """A toy whole-body format: the body is the answer's text; an empty body is malformed."""
    if not body:
        return Failure(ProviderError(kind=ErrorKind.MALFORMED_RESPONSE, message="empty", status=200))
    return Success(Completion(content=body.decode(), model="m", usage=Usage()))


@given(
    st.binary(min_size=1, max_size=60).filter(lambda b: b.isascii()), st.lists(st.integers(0, 60), max_size=8)
)
def test_a_whole_body_is_parsed_once_joined_whatever_its_chunks(body: bytes, cuts: list[int]) -> None:
    """The whole-body parser shows no text while the body arrives and parses it joined at the end."""
    parser = WholeBodyParser(whole)
    deltas, result = run(parser, split(body, cuts))
    assert deltas == []
    assert result == Success(Completion(content=body.decode(), model="m", usage=Usage()))
    assert parser.done


def test_a_whole_body_parser_is_done_only_when_finish_found_an_answer() -> None:
    """``done`` stays false before ``finish`` and after a ``finish`` that failed; ``error`` is
    never set, since a whole body is judged only at the end."""
    parser = WholeBodyParser(whole)
    assert not parser.done
    result = parser.finish()
    assert isinstance(result, Failure)
    assert not parser.done
    assert parser.error is None


def test_both_parsers_start_empty_not_done_and_without_error() -> None:
    """A fresh parser of either kind shows nothing, is not done and has no error."""
    parsers: list[StreamParser] = [ToyParser(PROVIDER, REQUEST), WholeBodyParser(whole)]
    for parser in parsers:
        assert parser.feed(b"") == []
        assert parser.error is None
        assert parser.done is False
