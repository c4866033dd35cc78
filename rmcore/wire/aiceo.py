"""The AICEO gateway's envelope: a queueing proxy in front of GLM, never streamed.

Request: ``POST`` with ``X-API-Key`` and ``{provider, model, priority, source: "recursivemanager",
sourceId, messages: [{role, content}], temperature?, maxTokens}``. Text only: a conversation is
flattened to its text messages (:mod:`rmcore.wire.messages`, which says what cannot go over); the
router never sends the gateway tools, images or a ``response_format``.

Reply: ``{success, response: {content, model, usage: {inputTokens, outputTokens}}, error?,
metadata: {waitTime, queueDepth, requestId, provider}}``. A ``success: false`` reply reports its
failure as free text in ``error``; its kind is read from that text (see ``classify``).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

import msgspec
from returns.result import Failure, Result, Success

from rmcore.completion import Completion
from rmcore.errors import ErrorKind, ProviderError
from rmcore.providers import ProviderKind, ProviderSpec
from rmcore.requests import ChatRequest, HttpRequest
from rmcore.wire.messages import ChatMessage, chat_messages
from rmcore.wire.reply import Reply, accepted, classified, decoded
from rmcore.wire.stream import WholeBodyParser
from rmcore.wire.usage import TokenCount, usage_from

__all__ = ["SOURCE", "build_request", "parse_response", "whole_body_parser"]

SOURCE = "recursivemanager"
"""What the gateway is told about who is asking (its ``source`` field), as the seed sends."""


class _Body(msgspec.Struct, frozen=True, gc=False, kw_only=True, omit_defaults=True):
    provider: str
    model: str
    priority: str
    source: str
    sourceId: str
    messages: tuple[ChatMessage, ...]
    temperature: float | None = None
    maxTokens: int


class _Usage(msgspec.Struct, frozen=True, gc=False):
    inputTokens: TokenCount | None = None
    outputTokens: TokenCount | None = None


class _Answer(msgspec.Struct, frozen=True, gc=False):
    content: str
    model: str | None = None
    usage: _Usage | None = None


class _Envelope(msgspec.Struct, frozen=True, gc=False):
    success: bool
    response: _Answer | None = None
    error: Any = None


def build_request(provider: ProviderSpec, request: ChatRequest, api_key: str | None) -> HttpRequest:
    """The gateway's submit request for ``request``. Never streamed, whatever ``request.stream``."""
    headers = [("Content-Type", "application/json")]
    if api_key is not None:
        headers.append(("X-API-Key", api_key))
    headers.append(("Accept", "application/json"))
    body = _Body(
        provider=provider.aiceo_provider,
        model=provider.model,
        priority=provider.aiceo_priority,
        source=SOURCE,
        sourceId=request.source_id,
        messages=chat_messages(request),
        temperature=request.temperature,
        maxTokens=request.max_tokens,
    )
    return HttpRequest(
        method="POST", url=provider.url, headers=tuple(headers), body=msgspec.json.encode(body)
    )


def _malformed(status: int, what: str) -> ProviderError:
    return ProviderError(
        kind=ErrorKind.MALFORMED_RESPONSE,
        message=f"HTTP {status}: not an AICEO gateway reply ({what})",
        status=status,
    )


def parse_response(
    provider: ProviderSpec, status: int, headers: Mapping[str, str], body: bytes, now: float
) -> Result[Completion, ProviderError]:
    """The completion in the gateway's reply, or why there is none: the steps of
    :mod:`rmcore.wire.reply`, then the envelope's answer."""
    reply = Reply(kind=ProviderKind.AICEO, status=status, headers=headers, body=body, now=now)
    return accepted(reply).bind(_DECODED).bind(partial(_answer, provider, reply))


_DECODED = decoded(_Envelope, partial(_malformed, what="unexpected JSON shape or invalid JSON"))


def _answer(provider: ProviderSpec, reply: Reply, envelope: _Envelope) -> Result[Completion, ProviderError]:
    """The envelope's answer; a ``success: false`` envelope is classified by its error text."""
    if not envelope.success:
        return Failure(classified(reply))
    if envelope.response is None:
        return Failure(_malformed(reply.status, "success without a response"))
    answer = envelope.response
    usage = answer.usage or _Usage()
    return Success(
        Completion(
            content=answer.content,
            model=answer.model or provider.model,
            usage=usage_from(usage.inputTokens, usage.outputTokens, answer.content),
        )
    )


def whole_body_parser(provider: ProviderSpec) -> WholeBodyParser:
    """A stream parser for a gateway reply: the body is parsed whole when it ends."""
    return WholeBodyParser(lambda body: parse_response(provider, 200, {}, body, 0.0))
