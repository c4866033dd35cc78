"""The two APIs the gateway speaks, behind one small interface (``Dialect``): how a request body
is read, and how answers, streams and errors are written. ``app`` serves both the same way."""

from __future__ import annotations

import os
import time
from typing import NamedTuple, Protocol

import msgspec
from returns.result import Failure, Result, Success

from rmcli.serve import anthropic_format, openai_format
from rmcli.serve.relay import StreamShape
from rmcore.chat_request import decode_openai_chat
from rmcore.completion import Completion
from rmcore.problems import Problem
from rmcore.requests import ChatRequest

__all__ = ["ANTHROPIC", "OPENAI", "Decoded", "Dialect"]


class Decoded(NamedTuple):
    """A request body read: the request, the model (route) it names, whether a stream must end
    with its usage."""

    request: ChatRequest
    model: str | None
    include_usage: bool = False


class Dialect(Protocol):
    """One API's shapes."""

    def decode(self, body: bytes) -> Result[Decoded, Problem]:
        """The request in ``body``, or the problem with its ``$.path``."""
        ...

    def error_body(self, status: int, message: str, code: str, param: str | None = None) -> bytes:
        """An error response's body."""
        ...

    def answer(self, completion: Completion, model: str) -> bytes:
        """A whole answer's body."""
        ...

    def stream(self, decoded: Decoded, model: str) -> StreamShape:
        """The events of a streamed answer."""
        ...


class _StreamOptions(msgspec.Struct):
    include_usage: bool | None = None


class _Streaming(msgspec.Struct):
    """The one field of a body ``decode_openai_chat`` drops that the gateway needs."""

    stream_options: _StreamOptions | None = None


class _OpenAI:
    """``POST /v1/chat/completions``."""

    def decode(self, body: bytes) -> Result[Decoded, Problem]:
        match decode_openai_chat(body):
            case Failure(problem):
                return Failure(problem)
            case Success(found):
                usage = False
                if found.request.stream:  # read again, for stream_options only: it was valid
                    options = msgspec.json.decode(body, type=_Streaming).stream_options
                    usage = bool(options and options.include_usage)
                return Success(Decoded(found.request, found.model, usage))
        raise AssertionError("unreachable")  # pragma: no cover

    def error_body(self, status: int, message: str, code: str, param: str | None = None) -> bytes:
        return openai_format.error_body(status, message, code, param)

    def answer(self, completion: Completion, model: str) -> bytes:
        return openai_format.completion_body(completion, _chat_id(), int(time.time()), model)

    def stream(self, decoded: Decoded, model: str) -> StreamShape:
        chunks = openai_format.Chunks(_chat_id(), int(time.time()), model, decoded.include_usage)
        return openai_format.OpenAIStream(chunks)


def _chat_id() -> str:
    return f"chatcmpl-{os.urandom(12).hex()}"


class _Anthropic:
    """``POST /v1/messages``."""

    def decode(self, body: bytes) -> Result[Decoded, Problem]:
        return anthropic_format.decode_messages(body).map(lambda found: Decoded(found[0], found[1]))

    def error_body(self, status: int, message: str, code: str, param: str | None = None) -> bytes:
        return anthropic_format.error_body(status, message, code)

    def answer(self, completion: Completion, model: str) -> bytes:
        return anthropic_format.message_body(completion, anthropic_format.new_id(), model)

    def stream(self, decoded: Decoded, model: str) -> StreamShape:
        return anthropic_format.AnthropicStream(anthropic_format.new_id(), model)


OPENAI: Dialect = _OpenAI()
ANTHROPIC: Dialect = _Anthropic()
