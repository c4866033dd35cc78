"""Anthropic's Messages API.

Request: ``POST`` with ``x-api-key``, ``anthropic-version: 2023-06-01`` and the request translated
by :mod:`rmcore.wire.anthropic_request` (``{model, system?, messages, max_tokens, temperature?,
top_p?, stop_sequences?, tools?, tool_choice?, stream?}``).

Reply: ``{content: [{type: text, text} | {type: tool_use, id, name, input}, ...], model,
stop_reason, usage: {input_tokens, output_tokens}}``. Streamed: ``message_start`` (model, input
tokens), ``content_block_start`` (a ``tool_use`` block brings its id and name),
``content_block_delta`` (``text_delta``, or ``input_json_delta`` slices of a tool's input JSON),
``content_block_stop``, ``message_delta`` (stop_reason, cumulative output tokens),
``message_stop``, with ``ping`` events anywhere and an ``error`` event when the request fails
mid-stream. Unknown event and block types are ignored, as Anthropic's versioning policy asks of
clients.

A call of the answer tool that carries a ``response_format`` (see ``anthropic_request``) is the
answer itself: its input JSON becomes the reply's text (streamed as it arrives), not a tool call,
and a ``tool_use`` stop reason with no other call becomes ``stop``. To know that tool, the parser
needs the request: ``parse_response(..., request=)`` and every stream parser have it.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

import msgspec
from returns.result import Result

from rmcore.completion import Completion, normalise_finish_reason
from rmcore.errors import ErrorKind, ProviderError
from rmcore.providers import ProviderKind, ProviderSpec
from rmcore.requests import ChatRequest, HttpRequest, ToolCall
from rmcore.wire.anthropic_request import answer_tool_name, anthropic_body
from rmcore.wire.classify import is_error_body, stream_error
from rmcore.wire.decode import decode_any, decode_as
from rmcore.wire.reply import Reply, accepted, decoded, not_withheld
from rmcore.wire.sse import SseEvent
from rmcore.wire.stream import EventStreamParser
from rmcore.wire.usage import TokenCount, usage_from

__all__ = ["ANTHROPIC_VERSION", "AnthropicStreamParser", "build_request", "parse_response"]

ANTHROPIC_VERSION = "2023-06-01"


class _Usage(msgspec.Struct, frozen=True, gc=False):
    input_tokens: TokenCount | None = None
    output_tokens: TokenCount | None = None


class _Block(msgspec.Struct, frozen=True, gc=False):
    type: str
    text: str | None = None
    id: str = ""
    name: str = ""
    input: msgspec.Raw = msgspec.Raw()


class _Response(msgspec.Struct, frozen=True, gc=False):
    content: list[_Block]
    model: str | None = None
    stop_reason: str | None = None
    usage: _Usage | None = None


class _StreamMessage(msgspec.Struct, frozen=True, gc=False):
    model: str | None = None
    usage: _Usage | None = None


class _StreamDelta(msgspec.Struct, frozen=True, gc=False):
    type: str | None = None
    text: str | None = None
    partial_json: str | None = None
    stop_reason: str | None = None


class _StreamEvent(msgspec.Struct, frozen=True, gc=False):
    type: str | None = None
    index: int = 0
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
    return HttpRequest(
        method="POST", url=provider.url, headers=tuple(headers), body=anthropic_body(provider.model, request)
    )


def parse_response(
    provider: ProviderSpec,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    now: float,
    request: ChatRequest | None = None,
) -> Result[Completion, ProviderError]:
    """The completion in a whole (non-streamed) reply to ``request``, or why there is none: the
    steps of :mod:`rmcore.wire.reply`, then the message's text and tool-use blocks. Without the
    request, a call of the answer tool stays a tool call."""
    answer_tool = answer_tool_name(request) if request is not None else None
    reply = Reply(kind=ProviderKind.ANTHROPIC, status=status, headers=headers, body=body, now=now)
    return accepted(reply).bind(_DECODED).bind(partial(_answer, provider, status, answer_tool))


def _malformed(status: int) -> ProviderError:
    return ProviderError(
        kind=ErrorKind.MALFORMED_RESPONSE,
        message=f"HTTP {status}: not an Anthropic message (unexpected JSON shape or invalid JSON)",
        status=status,
    )


_DECODED = decoded(_Response, _malformed)


def _answer(
    provider: ProviderSpec, status: int, answer_tool: str | None, reply: _Response
) -> Result[Completion, ProviderError]:
    """The message's text and tool calls, unless the provider withheld it (its stop reason). The
    answer tool's input is text."""
    texts: list[str] = []
    calls: list[ToolCall] = []
    for block in reply.content:
        if block.type == "text" and block.text:
            texts.append(block.text)
        elif block.type == "tool_use" and block.name == answer_tool:
            texts.append(_input_text(block.input))
        elif block.type == "tool_use":
            calls.append(ToolCall(id=block.id, name=block.name, arguments=_input_text(block.input)))
    content = "".join(texts)
    usage = reply.usage or _Usage()
    output = content + "".join(c.arguments for c in calls)
    return not_withheld(content, reply.stop_reason, refused=False, status=status).map(
        lambda text: Completion(
            content=text,
            model=reply.model or provider.model,
            usage=usage_from(usage.input_tokens, usage.output_tokens, output),
            finish_reason=normalise_finish_reason(reply.stop_reason, has_tool_calls=bool(calls)),
            tool_calls=tuple(calls),
        )
    )


def _input_text(raw: msgspec.Raw) -> str:
    """A tool-use block's ``input`` as JSON text, exactly as sent (``{}`` when absent)."""
    return bytes(raw).decode() if raw else "{}"


class AnthropicStreamParser(EventStreamParser):
    """Parses a streamed message: text deltas and tool-use blocks until ``message_stop``. The
    answer tool's input slices are text deltas (see the module's docstring)."""

    terminator = "message_stop"

    def __init__(self, provider: ProviderSpec, request: ChatRequest) -> None:
        super().__init__(provider, request)
        self._answer_tool = answer_tool_name(request)
        self._answer_blocks: dict[int, str] = {}
        """Index of each answer-tool block, to the text to show if no slice of its input came."""

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
            return self._block_started(parsed.index, parsed.content_block)
        elif kind == "content_block_delta" and parsed.delta is not None:
            return self._block_delta(parsed.index, parsed.delta)
        elif kind == "content_block_stop":
            self._tools.close(parsed.index)
            return self._answer_blocks.pop(parsed.index, None) or None
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

    def _block_started(self, index: int, block: _Block) -> str | None:
        if block.type == "text":
            return block.text or None
        if block.type == "tool_use" and block.name == self._answer_tool:
            self._answer_blocks[index] = _input_text(block.input)
        elif block.type == "tool_use":
            self._tools.begin(index, id=block.id, name=block.name, default_arguments=_input_text(block.input))
        return None

    def _block_delta(self, index: int, delta: _StreamDelta) -> str | None:
        if delta.type == "text_delta":
            return delta.text or None
        if delta.type != "input_json_delta" or not delta.partial_json:
            return None
        if index in self._answer_blocks:
            self._answer_blocks[index] = ""  # its input arrives as text: nothing more to show at its end
            return delta.partial_json
        self._tools.piece(index, arguments=delta.partial_json)
        return None
