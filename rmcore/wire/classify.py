"""Why a provider call failed, as an ``ErrorKind``, from the HTTP status and the error body.

All the rules live here, as data first and then the few functions that read them. Order of
precedence, most specific first:

1. an error *code or type* in the body that names the cause (``context_length_exceeded``,
   ``overloaded_error``, ...), whatever the status;
2. an error *message* saying the prompt does not fit the context (only for 4xx and for errors
   reported inside a 2xx response, never for 429 or 5xx, whose texts talk about tokens per minute);
3. the HTTP status (DESIGN §4): 429 rate_limited, 401/403 auth, 503/529 overloaded, other 5xx
   server_error, other 4xx bad_request (408 is a timeout, 413 a context_length);
4. for an error reported inside a 2xx response (an event-stream ``error`` event, an error object
   in place of an answer), the body's error type; for the AICEO gateway, whose failures are free
   text, that text decides a 2xx ``success: false`` and refines a status that only says 5xx.

Messages are built from the status and the provider's error text only (never headers, which may
hold a key), on one line and cut to ``MESSAGE_LIMIT`` characters. The Retry-After wait comes from
``retry_after``.
"""

from __future__ import annotations

import http
import re
from collections.abc import Mapping
from typing import Any

from rmcore.base import Base
from rmcore.errors import ErrorKind, ProviderError
from rmcore.providers import ProviderKind
from rmcore.wire.decode import decode_any
from rmcore.wire.retry_after import parse_retry_after

__all__ = [
    "CONTENT_FILTER_REASONS",
    "MESSAGE_LIMIT",
    "ErrorDetail",
    "classify_failure",
    "content_filter_error",
    "error_detail",
    "excerpt",
    "is_error_body",
    "kind_of_detail",
    "parse_retry_after",
    "stream_error",
]

MESSAGE_LIMIT = 300
"""Longest provider text kept in an error message, in characters."""

_CODE_KINDS: Mapping[str, ErrorKind] = {
    # OpenAI error codes (also sent as the error type by some OpenAI-compatible servers).
    "context_length_exceeded": ErrorKind.CONTEXT_LENGTH,
    "content_policy_violation": ErrorKind.CONTENT_FILTER,
    "content_filter": ErrorKind.CONTENT_FILTER,
    "rate_limit_exceeded": ErrorKind.RATE_LIMITED,
    "insufficient_quota": ErrorKind.RATE_LIMITED,
    # Anthropic error types.
    "overloaded_error": ErrorKind.OVERLOADED,
    "rate_limit_error": ErrorKind.RATE_LIMITED,
    "authentication_error": ErrorKind.AUTH,
    "permission_error": ErrorKind.AUTH,
    "request_too_large": ErrorKind.CONTEXT_LENGTH,
    "billing_error": ErrorKind.RATE_LIMITED,
    # GLM (Zhipu) numeric codes: arrears, prompt too long, unsafe content, concurrency/frequency.
    "1113": ErrorKind.RATE_LIMITED,
    "1261": ErrorKind.CONTEXT_LENGTH,
    "1301": ErrorKind.CONTENT_FILTER,
    "1302": ErrorKind.RATE_LIMITED,
    "1303": ErrorKind.RATE_LIMITED,
    "1305": ErrorKind.RATE_LIMITED,
}
"""Body error codes and types that name their cause: they win over the HTTP status."""

_INLINE_TYPE_KINDS: Mapping[str, ErrorKind] = {
    "invalid_request_error": ErrorKind.BAD_REQUEST,
    "not_found_error": ErrorKind.BAD_REQUEST,
    "api_error": ErrorKind.SERVER_ERROR,
    "server_error": ErrorKind.SERVER_ERROR,
}
"""Error types reported inside a 2xx response, where no status tells the kind. Any other type
is a server_error: the provider gave up on a request it had accepted."""

_STATUS_KINDS: Mapping[int, ErrorKind] = {
    401: ErrorKind.AUTH,
    403: ErrorKind.AUTH,
    408: ErrorKind.TIMEOUT,
    413: ErrorKind.CONTEXT_LENGTH,
    429: ErrorKind.RATE_LIMITED,
    503: ErrorKind.OVERLOADED,
    529: ErrorKind.OVERLOADED,
}
"""Statuses with a kind of their own; the rest of 4xx is bad_request, of 5xx server_error."""

_CONTEXT_MESSAGE = re.compile(
    r"prompt is too long|prompt too long|input is too long|context[ _]length|context window"
    r"|maximum context|exceeds? (?:the )?(?:model's )?(?:maximum )?context",
    re.IGNORECASE,
)
"""Messages of a prompt that does not fit (Anthropic: "prompt is too long: N tokens > M maximum";
OpenAI-compatible servers: "This model's maximum context length is N tokens")."""

_TEXT_KINDS: tuple[tuple[re.Pattern[str], ErrorKind], ...] = (
    (_CONTEXT_MESSAGE, ErrorKind.CONTEXT_LENGTH),
    (re.compile(r"quota|rate[ _-]?limit|too many requests", re.IGNORECASE), ErrorKind.RATE_LIMITED),
    (re.compile(r"time[ _-]?out|timed out|deadline exceeded", re.IGNORECASE), ErrorKind.TIMEOUT),
    (re.compile(r"overload|queue (?:is )?full|capacity|busy", re.IGNORECASE), ErrorKind.OVERLOADED),
)
"""The AICEO gateway reports failures as free text: these words decide its kind (first match)."""

CONTENT_FILTER_REASONS: frozenset[str] = frozenset({"content_filter", "refusal", "sensitive"})
"""Finish/stop reasons of an answer the provider withheld: OpenAI's ``content_filter``,
Anthropic's ``refusal``, GLM's ``sensitive``."""


class ErrorDetail(Base, frozen=True):
    """What an error body said, whatever its format: type, code and message, each if given."""

    type: str | None = None
    code: str | None = None
    message: str | None = None


def _text(value: object) -> str | None:
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def error_detail(obj: Any) -> ErrorDetail:
    """The type, code and message of a decoded error body, in any of the shapes providers use:
    OpenAI ``{"error": {"message", "type", "code"}}``, Anthropic ``{"type": "error", "error":
    {"type", "message"}}``, AICEO ``{"success": false, "error": "text"}``, and the flat
    ``{"message", "type", "code"}`` or ``{"detail": "text"}`` of some OpenAI-compatible servers."""
    if not isinstance(obj, dict):
        return ErrorDetail()
    error = obj.get("error")
    if isinstance(error, dict):
        return ErrorDetail(
            type=_text(error.get("type")),
            code=_text(error.get("code")),
            message=_text(error.get("message")),
        )
    if _text(error) is not None:
        return ErrorDetail(code=_text(obj.get("code")), message=_text(error))
    kind = _text(obj.get("type"))
    return ErrorDetail(
        type=None if kind == "error" else kind,
        code=_text(obj.get("code")),
        message=_text(obj.get("message")) or _text(obj.get("detail")),
    )


def is_error_body(obj: Any) -> bool:
    """Whether a decoded body is an error report (an ``error`` member, or ``type: "error"``)
    rather than an answer in an unexpected shape."""
    return isinstance(obj, dict) and (obj.get("error") is not None or obj.get("type") == "error")


def _body_detail(body: bytes) -> ErrorDetail:
    detail = error_detail(decode_any(body))
    if detail.message is None and detail.type is None and detail.code is None:
        text = body.decode("utf-8", errors="replace")
        return ErrorDetail(message=text if text.strip() else None)
    return detail


def excerpt(text: str) -> str:
    """``text`` on one line, cut to ``MESSAGE_LIMIT`` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= MESSAGE_LIMIT else flat[: MESSAGE_LIMIT - 1] + "…"


def _describe(detail: ErrorDetail, fallback: str) -> str:
    return excerpt(detail.message or detail.code or detail.type or fallback)


def kind_of_detail(detail: ErrorDetail, status: int | None) -> ErrorKind | None:
    """The kind named by the body alone (rules 1 and 2), or ``None`` when the body is not specific.
    ``status`` ``None`` means an error reported inside a successful response."""
    for token in (detail.code, detail.type):
        if token is not None and (kind := _CODE_KINDS.get(token.lower())) is not None:
            return kind
    message_may_say_context = status is None or 200 <= status < 300 or (400 <= status < 500 and status != 429)
    if message_may_say_context and detail.message and _CONTEXT_MESSAGE.search(detail.message):
        return ErrorKind.CONTEXT_LENGTH
    return None


def _kind_of_status(status: int) -> ErrorKind:
    if (kind := _STATUS_KINDS.get(status)) is not None:
        return kind
    if 500 <= status < 600:
        return ErrorKind.SERVER_ERROR
    if 400 <= status < 500:
        return ErrorKind.BAD_REQUEST
    # 1xx, 3xx and nonsense: nothing a provider documents as an answer or as an error.
    return ErrorKind.MALFORMED_RESPONSE


def _kind_of_text(message: str | None) -> ErrorKind:
    if message:
        for pattern, kind in _TEXT_KINDS:
            if pattern.search(message):
                return kind
    return ErrorKind.SERVER_ERROR


def _kind_inline(detail: ErrorDetail) -> ErrorKind:
    if detail.type is not None:
        return _INLINE_TYPE_KINDS.get(detail.type.lower(), ErrorKind.SERVER_ERROR)
    return ErrorKind.SERVER_ERROR


def classify_failure(
    kind: ProviderKind, status: int, headers: Mapping[str, str], body: bytes, now: float
) -> ProviderError:
    """The failure an HTTP response describes: a non-2xx status, or a 2xx whose body reports an
    error (an AICEO ``success: false``, an error object in place of an answer).

    ``headers`` have lower-case names; ``now`` (Unix seconds) dates an HTTP-date Retry-After."""
    detail = _body_detail(body)
    specific = kind_of_detail(detail, status)
    if 200 <= status < 300:
        if specific is not None:
            found = specific
        elif kind is ProviderKind.AICEO:
            found = _kind_of_text(detail.message)
        else:
            found = _kind_inline(detail)
        message = f"HTTP {status} with an error: {_describe(detail, 'no error message')}"
    else:
        found = specific or _kind_of_status(status)
        if specific is None and kind is ProviderKind.AICEO and found is ErrorKind.SERVER_ERROR:
            found = _kind_of_text(detail.message)
        described = _describe(detail, _reason_phrase(status))
        # A body that only repeats the status ("HTTP 503.") adds nothing.
        same = described.rstrip(".").strip() == f"HTTP {status}"
        message = f"HTTP {status}" if same else f"HTTP {status}: {described}"
    return ProviderError(
        kind=found, message=message, status=status, retry_after_s=parse_retry_after(headers, now)
    )


def stream_error(obj: Any, status: int = 200) -> ProviderError:
    """The failure an ``error`` event of an event stream describes (an Anthropic ``event: error``,
    an OpenAI ``data: {"error": ...}``), classified by its body alone."""
    detail = error_detail(obj)
    found = kind_of_detail(detail, None) or _kind_inline(detail)
    return ProviderError(
        kind=found, message=f"stream error: {_describe(detail, 'no error message')}", status=status
    )


def content_filter_error(reason: str, status: int = 200) -> ProviderError:
    """The failure of an answer withheld by the provider (finish or stop reason ``reason``)."""
    return ProviderError(
        kind=ErrorKind.CONTENT_FILTER,
        message=f"the provider withheld the answer (finish reason {excerpt(reason)!r})",
        status=status,
    )


def _reason_phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "no error message"
