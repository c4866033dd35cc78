"""The providers' wire formats, pure: requests built and replies parsed without any I/O.

Each function dispatches on ``provider.kind`` to the format's own module (``openai``,
``anthropic``, ``aiceo``). The shell sends the ``HttpRequest`` that ``build_request`` returns; for
a whole reply it calls ``parse_response``; for a streamed reply with status 200 it feeds the body's
chunks to a ``stream_parser`` and calls its ``finish`` when the body ends. Any other status goes
to ``parse_response`` (or ``classify_failure``) with the whole body. Failures are values:
``Result[Completion, ProviderError]``, never exceptions, whatever bytes arrive.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec
from returns.result import Result

from rmcore.completion import Completion
from rmcore.errors import ProviderError
from rmcore.providers import ProviderKind, ProviderSpec
from rmcore.requests import ChatRequest, HttpRequest
from rmcore.wire import aiceo, anthropic, anthropic_request, endpoint, openai
from rmcore.wire.classify import classify_failure
from rmcore.wire.retry_after import parse_retry_after
from rmcore.wire.stream import StreamParser

__all__ = [
    "StreamParser",
    "adjustments",
    "build_request",
    "classify_failure",
    "parse_response",
    "parse_retry_after",
    "stream_parser",
]


def build_request(provider: ProviderSpec, request: ChatRequest, api_key: str | None) -> HttpRequest:
    """The HTTP request that asks ``provider`` for ``request``; ``api_key`` ``None`` sends no
    credential (local servers). The AICEO gateway is never asked to stream."""
    match provider.kind:
        case ProviderKind.OPENAI:
            return openai.build_request(provider, request, api_key)
        case ProviderKind.ANTHROPIC:
            return anthropic.build_request(provider, request, api_key)
        case ProviderKind.AICEO:
            return aiceo.build_request(provider, request, api_key)


def adjustments(provider: ProviderSpec, request: ChatRequest) -> tuple[str, ...]:
    """What ``provider``'s format cannot carry of ``request`` as given, and how it is sent
    instead, in words (for ``--verbose``): Anthropic has no ``seed``, its temperature ends at 1,
    and it takes no stop sequence that is only whitespace. Empty when the request goes as given."""
    if provider.kind is not ProviderKind.ANTHROPIC:
        return ()
    notes = []
    if request.seed is not None:
        notes.append(f"seed {request.seed} not sent (the Messages API has none)")
    if request.temperature is not None and request.temperature > anthropic_request.MAX_TEMPERATURE:
        notes.append(f"temperature {request.temperature:g} sent as {anthropic_request.MAX_TEMPERATURE:g}")
    if dropped := [s for s in request.stop if s not in anthropic_request.sendable_stops(request.stop)]:
        which = f"stop sequence{'s' if len(dropped) > 1 else ''} {', '.join(map(repr, dropped))}"
        notes.append(f"{which} not sent (only whitespace: the Messages API refuses it)")
    return tuple(notes)


def parse_response(
    provider: ProviderSpec,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    now: float,
    request: ChatRequest | None = None,
) -> Result[Completion, ProviderError]:
    """The completion in a whole reply to ``request``, or the classified failure (``headers``
    lower-cased, ``now`` in Unix seconds for an HTTP-date Retry-After). A 404 or 405 from a URL
    that is not a full endpoint says so, with the endpoint it probably meant
    (``endpoint.wrong_endpoint``). Pass the request: an Anthropic reply carrying a
    ``response_format`` answer is read with it (``rmcore.wire.anthropic``)."""
    match provider.kind:
        case ProviderKind.OPENAI:
            parsed = openai.parse_response(provider, status, headers, body, now)
        case ProviderKind.ANTHROPIC:
            parsed = anthropic.parse_response(provider, status, headers, body, now, request)
        case ProviderKind.AICEO:
            parsed = aiceo.parse_response(provider, status, headers, body, now)
    return parsed.alt(lambda error: _with_endpoint_hint(provider, error))


def _with_endpoint_hint(provider: ProviderSpec, error: ProviderError) -> ProviderError:
    if error.status is None or (hint := endpoint.wrong_endpoint(provider, error.status)) is None:
        return error
    return msgspec.structs.replace(error, message=hint)


def stream_parser(provider: ProviderSpec, request: ChatRequest) -> StreamParser:
    """A fresh parser for one streamed reply (status 200) to ``request``. For the AICEO gateway,
    which never streams, it parses the body whole when it ends."""
    match provider.kind:
        case ProviderKind.OPENAI:
            return openai.OpenAIStreamParser(provider, request)
        case ProviderKind.ANTHROPIC:
            return anthropic.AnthropicStreamParser(provider, request)
        case ProviderKind.AICEO:
            return aiceo.whole_body_parser(provider)
