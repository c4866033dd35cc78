"""The OpenAI chat-completions format: OpenAI itself, GLM, and any OpenAI-compatible server.

Request: ``POST`` the endpoint with ``Authorization: Bearer KEY`` (none for keyless local servers)
and the whole request as given (:mod:`rmcore.wire.openai_request`). A streamed request asks for
``stream_options.include_usage`` so that the last chunk before ``data: [DONE]`` carries the token
counts (with empty ``choices``).

Reply: ``{choices: [{message: {content, refusal?, tool_calls?}, finish_reason}], model, usage:
{prompt_tokens, completion_tokens}}``, a tool call as ``{id, type: function, function: {name,
arguments}}``; streamed, ``data:`` chunks with ``choices[0].delta.content`` and
``choices[0].delta.tool_calls[i]`` pieces (by ``index``; the first brings ``id`` and ``name``, each
a slice of ``function.arguments``), ending with ``data: [DONE]``. An error inside the stream comes
as ``data: {"error": {...}}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

import msgspec
from returns.result import Failure, Result

from rmcore.completion import Completion, normalise_finish_reason
from rmcore.errors import ErrorKind, ProviderError
from rmcore.providers import ProviderKind, ProviderSpec
from rmcore.requests import ChatRequest, HttpRequest, ToolCall
from rmcore.wire.classify import is_error_body, stream_error
from rmcore.wire.decode import decode_any, decode_as
from rmcore.wire.openai_request import openai_body
from rmcore.wire.reply import Reply, accepted, decoded, not_withheld
from rmcore.wire.sse import SseEvent
from rmcore.wire.stream import EventStreamParser
from rmcore.wire.usage import TokenCount, usage_from

__all__ = ["OpenAIStreamParser", "build_request", "parse_response"]

DONE = "[DONE]"

# The reply's shapes, decoded data only: never in a reference cycle, so untracked by the cyclic
# collector (``gc=False``, as ``rmcore.base.Base``), like the other formats' shapes.


class _Usage(msgspec.Struct, frozen=True, gc=False):
    prompt_tokens: TokenCount | None = None
    completion_tokens: TokenCount | None = None


class _Function(msgspec.Struct, frozen=True, gc=False):
    name: str
    arguments: str = ""


class _ToolCall(msgspec.Struct, frozen=True, gc=False):
    function: _Function
    id: str = ""


class _Message(msgspec.Struct, frozen=True, gc=False):
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[_ToolCall] | None = None


class _Choice(msgspec.Struct, frozen=True, gc=False):
    message: _Message
    finish_reason: str | None = None


class _Response(msgspec.Struct, frozen=True, gc=False):
    choices: list[_Choice]
    model: str | None = None
    usage: _Usage | None = None


class _FunctionPiece(msgspec.Struct, frozen=True, gc=False):
    name: str | None = None
    arguments: str | None = None


class _ToolCallPiece(msgspec.Struct, frozen=True, gc=False):
    index: int = 0
    id: str | None = None
    function: _FunctionPiece | None = None


class _Delta(msgspec.Struct, frozen=True, gc=False):
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[_ToolCallPiece] | None = None


class _ChunkChoice(msgspec.Struct, frozen=True, gc=False):
    delta: _Delta | None = None
    finish_reason: str | None = None
    index: int = 0


class _Chunk(msgspec.Struct, frozen=True, gc=False):
    choices: list[_ChunkChoice] | None = None
    model: str | None = None
    usage: _Usage | None = None
    error: Any = None


def build_request(provider: ProviderSpec, request: ChatRequest, api_key: str | None) -> HttpRequest:
    """The chat-completions request for ``request`` at ``provider``."""
    headers = [("Content-Type", "application/json")]
    if api_key is not None:
        headers.append(("Authorization", f"Bearer {api_key}"))
    headers.append(("Accept", "text/event-stream" if request.stream else "application/json"))
    return HttpRequest(
        method="POST", url=provider.url, headers=tuple(headers), body=openai_body(provider.model, request)
    )


def _malformed(status: int, what: str) -> ProviderError:
    return ProviderError(
        kind=ErrorKind.MALFORMED_RESPONSE,
        message=f"HTTP {status}: not an OpenAI chat completion ({what})",
        status=status,
    )


def parse_response(
    provider: ProviderSpec, status: int, headers: Mapping[str, str], body: bytes, now: float
) -> Result[Completion, ProviderError]:
    """The completion in a whole (non-streamed) reply, or why there is none: the steps of
    :mod:`rmcore.wire.reply`, then the first choice's answer."""
    reply = Reply(kind=ProviderKind.OPENAI, status=status, headers=headers, body=body, now=now)
    return accepted(reply).bind(_DECODED).bind(partial(_answer, provider, status))


_DECODED = decoded(_Response, partial(_malformed, what="unexpected JSON shape or invalid JSON"))


def _answer(provider: ProviderSpec, status: int, reply: _Response) -> Result[Completion, ProviderError]:
    """The first choice's answer (text and tool calls), unless there is none or the provider
    withheld it."""
    if not reply.choices:
        return Failure(_malformed(status, "no choices"))
    choice = reply.choices[0]
    usage = reply.usage or _Usage()
    message = choice.message
    calls = tuple(
        ToolCall(id=c.id or f"call_{i}", name=c.function.name, arguments=c.function.arguments)
        for i, c in enumerate(message.tool_calls or ())
    )
    output = (message.content or "") + "".join(c.arguments for c in calls)
    return not_withheld(
        message.content or "",
        choice.finish_reason,
        refused=bool(message.refusal) and not calls,
        status=status,
    ).map(
        lambda content: Completion(
            content=content,
            model=reply.model or provider.model,
            usage=usage_from(usage.prompt_tokens, usage.completion_tokens, output),
            finish_reason=normalise_finish_reason(choice.finish_reason, has_tool_calls=bool(calls)),
            tool_calls=calls,
        )
    )


class OpenAIStreamParser(EventStreamParser):
    """Parses a streamed chat completion: text deltas and tool-call pieces until ``data: [DONE]``.
    A finish reason closes every tool call; one still open when the stream is cut is named in the
    ``stream_truncated`` message."""

    terminator = "data: [DONE]"

    def _on_event(self, event: SseEvent) -> str | None:
        data = event.data.strip()
        if not data:
            return None
        if data == DONE:
            self._done = True
            return None
        chunk = decode_as(data, _Chunk)
        if chunk is None:
            obj = decode_any(data)
            if is_error_body(obj):
                self._fail(stream_error(obj))
            else:
                self._malformed("a data line that is not a chat completion chunk")
            return None
        if chunk.error is not None or event.event == "error":
            self._fail(stream_error(decode_any(data)))
            return None
        if chunk.model:
            self._model = chunk.model
        if chunk.usage is not None:
            if chunk.usage.prompt_tokens is not None:
                self._input_tokens = chunk.usage.prompt_tokens
            if chunk.usage.completion_tokens is not None:
                self._output_tokens = chunk.usage.completion_tokens
        if not chunk.choices:
            return None
        choice = next((c for c in chunk.choices if c.index == 0), chunk.choices[0])
        if choice.delta is not None:
            for piece in choice.delta.tool_calls or ():
                function = piece.function or _FunctionPiece()
                self._tools.piece(
                    piece.index, id=piece.id, name=function.name, arguments=function.arguments or ""
                )
            if choice.delta.refusal:
                self._refusal.append(choice.delta.refusal)
        if choice.finish_reason:
            self._finish_reason = choice.finish_reason
            self._tools.close_all()
        return (choice.delta.content or None) if choice.delta is not None else None
