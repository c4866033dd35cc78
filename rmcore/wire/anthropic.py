"""Anthropic's Messages API.

Request: ``POST`` with ``x-api-key``, ``anthropic-version: 2023-06-01`` and ``{model, system?,
messages: [{role: user, content}], max_tokens, temperature?, stream?}`` (the system prompt is a
top-level string, ``max_tokens`` is required).

Reply: ``{content: [{type: text, text}, ...], model, stop_reason, usage: {input_tokens,
output_tokens}}``. Streamed: ``message_start`` (model, input tokens), ``content_block_start``,
``content_block_delta`` (``text_delta``), ``content_block_stop``, ``message_delta`` (stop_reason,
cumulative output tokens), ``message_stop``, with ``ping`` events anywhere and an ``error`` event
when the request fails mid-stream. Unknown event types are ignored, as Anthropic's versioning
policy asks of clients.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

import msgspec
from returns.pipeline import flow
from returns.pointfree import bind
from returns.result import Result

from rmcore.completion import Completion
from rmcore.errors import ErrorKind, ProviderError
from rmcore.providers import ProviderKind, ProviderSpec
from rmcore.requests import ChatRequest, HttpRequest
from rmcore.wire.classify import is_error_body, stream_error
from rmcore.wire.decode import decode_any, decode_as
from rmcore.wire.messages import ChatMessage
from rmcore.wire.reply import Reply, accepted, decoded, not_withheld
from rmcore.wire.sse import SseEvent
from rmcore.wire.stream import EventStreamParser
from rmcore.wire.usage import TokenCount, usage_from

__all__ = ["ANTHROPIC_VERSION", "AnthropicStreamParser", "build_request", "parse_response"]

ANTHROPIC_VERSION = "2023-06-01"


class _Body(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    model: str
    system: str | None = None
    messages: tuple[ChatMessage, ...]
    max_tokens: int
    temperature: float | None = None
    stream: bool = False


class _Usage(msgspec.Struct, frozen=True):
    input_tokens: TokenCount | None = None
    output_tokens: TokenCount | None = None


class _Block(msgspec.Struct, frozen=True):
    type: str
    text: str | None = None


class _Response(msgspec.Struct, frozen=True):
    content: list[_Block]
    model: str | None = None
    stop_reason: str | None = None
    usage: _Usage | None = None


class _StreamMessage(msgspec.Struct, frozen=True):
    model: str | None = None
    usage: _Usage | None = None


class _StreamDelta(msgspec.Struct, frozen=True):
    type: str | None = None
    text: str | None = None
    stop_reason: str | None = None


class _StreamEvent(msgspec.Struct, frozen=True):
    type: str | None = None
    message: _StreamMessage | None = None
    content_block: _Block | None = None
    delta: _StreamDelta | None = None
    usage: _Usage | None = None
    error: Any = None


def build_request(provider: ProviderSpec, request: ChatRequest, api_key: str | None) -> HttpRequest:
    """The Messages API request for ``request`` at ``provider``."""
    headers = [("content-type", "application/json")]
    if api_key is not None:
        headers.append(("x-api-key", api_key))
    headers.append(("anthropic-version", ANTHROPIC_VERSION))
    headers.append(("accept", "text/event-stream" if request.stream else "application/json"))
    body = _Body(
        model=provider.model,
        system=request.system or None,
        messages=(ChatMessage(role="user", content=request.prompt),),
        max_tokens=request.max_tokens,
        temperature=request.temperature,
        stream=request.stream,
    )
    return HttpRequest(
        method="POST", url=provider.url, headers=tuple(headers), body=msgspec.json.encode(body)
    )


def parse_response(
    provider: ProviderSpec, status: int, headers: Mapping[str, str], body: bytes, now: float
) -> Result[Completion, ProviderError]:
    """The completion in a whole (non-streamed) reply, or why there is none: the steps of
    :mod:`rmcore.wire.reply`, then the message's text blocks."""
    return flow(
        Reply(kind=ProviderKind.ANTHROPIC, status=status, headers=headers, body=body, now=now),
        accepted,
        bind(decoded(_Response, _malformed)),
        bind(partial(_answer, provider, status)),
    )


def _malformed(status: int) -> ProviderError:
    return ProviderError(
        kind=ErrorKind.MALFORMED_RESPONSE,
        message=f"HTTP {status}: not an Anthropic message (unexpected JSON shape or invalid JSON)",
        status=status,
    )


def _answer(provider: ProviderSpec, status: int, reply: _Response) -> Result[Completion, ProviderError]:
    """The message's text, unless the provider withheld it (its stop reason)."""
    content = "".join(b.text for b in reply.content if b.type == "text" and b.text)
    usage = reply.usage or _Usage()
    return not_withheld(content, reply.stop_reason, refused=False, status=status).map(
        lambda text: Completion(
            content=text,
            model=reply.model or provider.model,
            usage=usage_from(usage.input_tokens, usage.output_tokens, text),
            finish_reason=reply.stop_reason,
        )
    )


class AnthropicStreamParser(EventStreamParser):
    """Parses a streamed message: text deltas until ``message_stop``."""

    terminator = "message_stop"

    def _on_event(self, event: SseEvent) -> str | None:
        data = event.data.strip()
        if not data:
            return None
        parsed = decode_as(data, _StreamEvent)
        if parsed is None:
            obj = decode_any(data)
            if is_error_body(obj):
                self._fail(stream_error(obj))
            else:
                self._malformed(f"a {event.event!r} event whose data is not an Anthropic stream event")
            return None
        kind = parsed.type or event.event
        if kind == "error" or event.event == "error":
            self._fail(stream_error(decode_any(data)))
        elif kind == "message_start" and parsed.message is not None:
            if parsed.message.model:
                self._model = parsed.message.model
            if parsed.message.usage is not None and parsed.message.usage.input_tokens is not None:
                self._input_tokens = parsed.message.usage.input_tokens
        elif kind == "content_block_start" and parsed.content_block is not None:
            block = parsed.content_block
            return block.text if block.type == "text" and block.text else None
        elif kind == "content_block_delta" and parsed.delta is not None:
            delta = parsed.delta
            return delta.text if delta.type == "text_delta" and delta.text else None
        elif kind == "message_delta":
            if parsed.delta is not None and parsed.delta.stop_reason is not None:
                self._finish_reason = parsed.delta.stop_reason
            if parsed.usage is not None:
                if parsed.usage.input_tokens is not None:
                    self._input_tokens = parsed.usage.input_tokens
                if parsed.usage.output_tokens is not None:
                    self._output_tokens = parsed.usage.output_tokens
        elif kind == "message_stop":
            self._done = True
        return None
