"""Streamed replies: the parser interface the shell drives, and the event-stream machinery the
OpenAI and Anthropic parsers share.

The shell creates one parser per response whose status is 200, feeds it every body chunk as it
arrives (split anywhere), shows the text deltas it returns, aborts when ``error`` is set, and calls
``finish`` when the body ends. A stream is a success only when its terminating event arrived:
``finish`` on a stream cut short is ``Failure(stream_truncated)``, however much text came, and
whether or not it was cut inside a tool call (the message says which). Tool calls are assembled
from their pieces (:mod:`rmcore.wire.tool_calls`) and come back in the ``Completion``.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Protocol

from returns.pipeline import is_successful
from returns.result import Failure, Result, Success

from rmcore.completion import Completion, normalise_finish_reason
from rmcore.errors import ErrorKind, ProviderError
from rmcore.providers import ProviderSpec
from rmcore.requests import ChatRequest, ToolCall
from rmcore.wire.reply import not_withheld
from rmcore.wire.sse import SseDecoder, SseEvent
from rmcore.wire.tool_calls import ToolCallAssembly
from rmcore.wire.usage import usage_from

__all__ = ["EventStreamParser", "StreamParser", "WholeBodyParser"]


class StreamParser(Protocol):
    """Turns one streamed response body into text deltas and, at the end, a Completion."""

    def feed(self, chunk: bytes) -> list[str]:
        """The text deltas decoded from ``chunk`` (chunks may split anything, even a UTF-8
        character). Input after the terminating event or after an error is ignored."""
        ...

    @property
    def error(self) -> ProviderError | None:
        """Set once the stream reported an error or sent something malformed: abort then."""
        ...

    @property
    def done(self) -> bool:
        """Whether the stream's terminating event was seen."""
        ...

    def finish(self) -> Result[Completion, ProviderError]:
        """The outcome, once the body has ended."""
        ...


class EventStreamParser(abc.ABC):
    """A ``StreamParser`` over server-sent events. Subclasses interpret each event by setting the
    fields below through ``_on_event``; this class keeps the text, the end and the outcome."""

    terminator: str = "the terminating event"
    """How the stream's last event is named in a truncation message."""

    def __init__(self, provider: ProviderSpec, request: ChatRequest) -> None:
        self._provider = provider
        self._request = request
        self._sse = SseDecoder()
        self._parts: list[str] = []
        self._chars = 0
        self._error: ProviderError | None = None
        self._done = False
        self._model: str | None = None
        self._input_tokens: int | None = None
        self._output_tokens: int | None = None
        self._finish_reason: str | None = None
        self._refusal: list[str] = []
        self._tools = ToolCallAssembly()

    @property
    def error(self) -> ProviderError | None:
        """Set once the stream reported an error or sent something malformed."""
        return self._error

    @property
    def done(self) -> bool:
        """Whether the stream's terminating event was seen."""
        return self._done

    def feed(self, chunk: bytes) -> list[str]:
        """The text deltas completed by ``chunk``; nothing once done or failed."""
        if self._stopped():
            return []
        deltas: list[str] = []
        for event in self._sse.feed(chunk):
            text = self._on_event(event)
            if text:
                deltas.append(text)
            if self._stopped():
                break
        self._parts.extend(deltas)
        self._chars += sum(len(d) for d in deltas)
        return deltas

    def finish(self) -> Result[Completion, ProviderError]:
        """Success only when the terminating event arrived, every tool call was whole and the
        answer was not withheld: the stream's text and tool calls, through the same
        :func:`~rmcore.wire.reply.not_withheld` step as a whole reply, made a ``Completion``."""
        return Result.do(
            self._completion(content, calls)
            for text in self._text()
            for calls in self._tool_calls()
            for content in not_withheld(text, self._finish_reason, refused=bool(self._refusal) and not calls)
        )

    def _text(self) -> Result[str, ProviderError]:
        """The text received, once the stream ended well: not after an error, not cut short."""
        if self._error is not None:
            return Failure(self._error)
        if not self._done:
            where = f", inside tool call {name}" if (name := self._tools.open_call()) else ""
            return Failure(
                ProviderError(
                    kind=ErrorKind.STREAM_TRUNCATED,
                    message=(
                        f"the stream ended before {self.terminator}, after {self._chars} characters of text"
                        f"{where}"
                    ),
                    status=200,
                )
            )
        return Success("".join(self._parts))

    def _tool_calls(self) -> Result[tuple[ToolCall, ...], ProviderError]:
        """The assembled tool calls; a call without a name makes the stream malformed."""
        return self._tools.calls().alt(
            lambda what: ProviderError(
                kind=ErrorKind.MALFORMED_RESPONSE, message=f"malformed stream: {what}", status=200
            )
        )

    def _completion(self, content: str, calls: tuple[ToolCall, ...]) -> Completion:
        output = content + self._tools.arguments_text()
        return Completion(
            content=content,
            model=self._model or self._provider.model,
            usage=usage_from(self._input_tokens, self._output_tokens, output, self._request),
            finish_reason=normalise_finish_reason(self._finish_reason, has_tool_calls=bool(calls)),
            tool_calls=calls,
        )

    def _stopped(self) -> bool:
        return self._done or self._error is not None

    def _fail(self, error: ProviderError) -> None:
        self._error = error

    def _malformed(self, what: str) -> None:
        self._error = ProviderError(
            kind=ErrorKind.MALFORMED_RESPONSE, message=f"malformed stream: {what}", status=200
        )

    @abc.abstractmethod
    def _on_event(self, event: SseEvent) -> str | None:
        """Interpret one event; return its text delta, if any."""


class WholeBodyParser:
    """A ``StreamParser`` for a format that is never streamed (the AICEO gateway): it keeps the
    body and parses it whole when it ends. No text arrives before ``finish``; ``done`` turns true
    when ``finish`` found a complete answer."""

    def __init__(self, parse: Callable[[bytes], Result[Completion, ProviderError]]) -> None:
        self._parse = parse
        self._body = bytearray()
        self._done = False

    @property
    def error(self) -> ProviderError | None:
        """Always ``None``: a whole body is judged only at ``finish``."""
        return None

    @property
    def done(self) -> bool:
        """Whether ``finish`` parsed a complete answer."""
        return self._done

    def feed(self, chunk: bytes) -> list[str]:
        """Keep ``chunk``; no text until the body is whole."""
        self._body += chunk
        return []

    def finish(self) -> Result[Completion, ProviderError]:
        """The whole body, parsed."""
        result = self._parse(bytes(self._body))
        self._done = is_successful(result)
        return result
