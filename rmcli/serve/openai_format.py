"""The OpenAI chat-completions shapes the gateway answers in: an answer, a streamed answer's
``chat.completion.chunk`` events, the model list, and ``{error: {message, type, param, code}}``.

Pure functions from values to bytes (msgspec's JSON encoder), so that the endpoints stay small
and every shape is in one place. A run's failure is mapped to a status here (``run_error``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import msgspec

from rmcore.completion import Completion
from rmcore.errors import ErrorKind, ProviderError

__all__ = [
    "DONE",
    "Chunks",
    "OpenAIStream",
    "RunError",
    "chunk",
    "closing_chunks",
    "completion_body",
    "error_body",
    "error_event",
    "error_object",
    "error_type",
    "finish_reason",
    "models_body",
    "retry_after_header",
    "run_error",
    "usage_chunk",
]

_encode = msgspec.json.Encoder().encode

DONE = b"data: [DONE]\n\n"
"""The event that ends an OpenAI stream."""


def error_type(status: int) -> str:
    """OpenAI's error ``type`` for an HTTP status."""
    if status == 429:
        return "rate_limit_error"
    return "server_error" if status >= 500 else "invalid_request_error"


def error_object(status: int, message: str, code: str | None, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error object: ``{error: {message, type, param, code}}``."""
    return {"error": {"message": message, "type": error_type(status), "param": param, "code": code}}


def error_body(status: int, message: str, code: str | None, param: str | None = None) -> bytes:
    """An error response's JSON body."""
    return _encode(error_object(status, message, code, param))


def error_event(status: int, message: str, code: str | None) -> bytes:
    """The event that ends a stream cut after its first bytes: the SDKs raise on it, and no
    ``finish_reason`` ever follows, so a cut answer is never taken for a whole one."""
    return b"data: " + _encode(error_object(status, message, code)) + b"\n\n"


class RunError(NamedTuple):
    """How a run that ended without an answer is told to the client (in any format)."""

    status: int
    code: str
    retry_after_s: float | None


_TIMED_OUT = frozenset(
    {ErrorKind.DEADLINE, ErrorKind.TIMEOUT, ErrorKind.FIRST_TOKEN_TIMEOUT, ErrorKind.STREAM_STALLED}
)
"""Nothing answered in time: 504."""

_UNAVAILABLE = frozenset(
    {
        ErrorKind.RATE_LIMITED,
        ErrorKind.OVERLOADED,
        ErrorKind.CIRCUIT_OPEN,
        ErrorKind.UNHEALTHY,
        ErrorKind.QUOTA,
        ErrorKind.BUDGET,
    }
)
"""The providers are there but may not be used now (busy, open circuit, budget or quota spent):
503, worth retrying later, with ``Retry-After`` when a wait is known."""

_CLIENTS_FAULT = {
    ErrorKind.BAD_REQUEST: "invalid_request",
    ErrorKind.CONTEXT_LENGTH: "context_length_exceeded",
    ErrorKind.CONTENT_FILTER: "content_filter",
}
"""The provider refused the request itself (sent as the client gave it): 400, with OpenAI's code."""


def run_error(error: ProviderError) -> RunError:
    """The status of a run that failed with ``error`` (its last, deciding failure): 400 when the
    provider refused the request itself, 504 when nothing answered in time, 503 when providers
    are busy or may not be used now (budget, circuit, quota), 502 for every other upstream fault
    (errors, broken replies, an upstream key refused: never 401, which would blame the client's
    key). ``code`` is the error kind (``rmgr``'s vocabulary)."""
    kind = ErrorKind(error.kind)
    if kind in _CLIENTS_FAULT:
        return RunError(400, _CLIENTS_FAULT[kind], None)
    if kind in _TIMED_OUT:
        return RunError(504, kind.value, None)
    if kind in _UNAVAILABLE:
        return RunError(503, kind.value, error.retry_after_s)
    return RunError(502, kind.value, None)


def retry_after_header(seconds: float | None) -> list[tuple[bytes, bytes]]:
    """A ``Retry-After`` header (whole seconds, rounded up) when a wait is known."""
    if seconds is None or not seconds >= 0 or math.isinf(seconds):
        return []
    return [(b"retry-after", str(max(1, math.ceil(seconds))).encode())]


def _usage(completion: Completion) -> dict[str, int]:
    used = completion.usage
    return {
        "prompt_tokens": used.input_tokens,
        "completion_tokens": used.output_tokens,
        "total_tokens": used.input_tokens + used.output_tokens,
    }


def _tool_calls(completion: Completion, *, indexed: bool) -> list[dict[str, Any]]:
    return [
        {
            **({"index": i} if indexed else {}),
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": call.arguments},
        }
        for i, call in enumerate(completion.tool_calls)
    ]


def finish_reason(completion: Completion) -> str:
    """The answer's finish reason; ``tool_calls`` whenever it asks for tools (some formats say
    ``stop`` then), ``stop`` when the provider gave none."""
    if completion.tool_calls:
        return "tool_calls"
    return completion.finish_reason or "stop"


def completion_body(completion: Completion, completion_id: str, created: int, model: str) -> bytes:
    """A whole answer: the ``chat.completion`` object. ``model`` is the route the client asked
    for (the provider's own model is in ``x-rmgr-provider``'s company)."""
    message: dict[str, Any] = {"role": "assistant", "content": completion.content, "refusal": None}
    if completion.tool_calls:
        message["content"] = completion.content or None
        message["tool_calls"] = _tool_calls(completion, indexed=False)
    return _encode(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason(completion)}
            ],
            "usage": _usage(completion),
        }
    )


class Chunks(NamedTuple):
    """What every chunk of one stream shares."""

    completion_id: str
    created: int
    model: str
    include_usage: bool


def chunk(of: Chunks, delta: dict[str, Any], finish: str | None = None) -> bytes:
    """One ``chat.completion.chunk`` event with one choice."""
    body: dict[str, Any] = {
        "id": of.completion_id,
        "object": "chat.completion.chunk",
        "created": of.created,
        "model": of.model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    if of.include_usage:
        body["usage"] = None
    return b"data: " + _encode(body) + b"\n\n"


def closing_chunks(of: Chunks, completion: Completion) -> bytes:
    """After the text: the tool calls (one chunk), the finish reason, the usage when asked, then
    ``[DONE]``."""
    events = []
    if completion.tool_calls:
        events.append(chunk(of, {"tool_calls": _tool_calls(completion, indexed=True)}))
    events.append(chunk(of, {}, finish_reason(completion)))
    if of.include_usage:
        events.append(usage_chunk(of, completion))
    events.append(DONE)
    return b"".join(events)


class OpenAIStream:
    """The OpenAI stream as ``rmcli.serve.relay`` writes it (``relay.StreamShape``)."""

    def __init__(self, of: Chunks) -> None:
        self.of = of

    def opening(self) -> bytes:
        return chunk(self.of, {"role": "assistant", "content": ""})

    def text(self, pieces: Sequence[str]) -> bytes:
        return b"".join(chunk(self.of, {"content": piece}) for piece in pieces)

    def closing(self, completion: Completion) -> bytes:
        return closing_chunks(self.of, completion)

    def error_event(self, status: int, message: str, code: str) -> bytes:
        return error_event(status, message, code)

    def error_body(self, status: int, message: str, code: str) -> bytes:
        return error_body(status, message, code)


def usage_chunk(of: Chunks, completion: Completion) -> bytes:
    """The chunk ``stream_options.include_usage`` asks for: no choices, the usage."""
    body = {
        "id": of.completion_id,
        "object": "chat.completion.chunk",
        "created": of.created,
        "model": of.model,
        "choices": [],
        "usage": _usage(completion),
    }
    return b"data: " + _encode(body) + b"\n\n"


def models_body(names: Sequence[str]) -> bytes:
    """``GET /v1/models``: each route of the policy as a model id."""
    return _encode(
        {
            "object": "list",
            "data": [{"id": name, "object": "model", "created": 0, "owned_by": "rmgr"} for name in names],
        }
    )
