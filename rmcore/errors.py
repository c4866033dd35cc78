"""The vocabulary of failure: error kinds, and provider failures as values.

Every failed attempt, skipped target and failed run is described by one ``ErrorKind``. The kinds
are the contract of DESIGN §4: they appear as ``outcome`` in JSON results and in a policy's
``retry.on``.
"""

from __future__ import annotations

import enum

from rmcore.base import Base

__all__ = ["ATTEMPT_KINDS", "ErrorKind", "ProviderError"]


class ErrorKind(enum.StrEnum):
    """Why an attempt, a target or a run did not produce an answer."""

    CONNECTION = "connection"
    """Refused, reset or unresolvable: no HTTP response was received."""
    TIMEOUT = "timeout"
    """No complete answer within the attempt timeout."""
    FIRST_TOKEN_TIMEOUT = "first_token_timeout"
    """Streaming: the first token did not arrive within the first-token timeout."""
    STREAM_STALLED = "stream_stalled"
    """Streaming: the provider went silent for longer than the idle timeout."""
    STREAM_TRUNCATED = "stream_truncated"
    """The answer ended without its terminating event or was cut short: never a success."""
    RATE_LIMITED = "rate_limited"
    """HTTP 429 or a provider's quota error; may carry a Retry-After."""
    SERVER_ERROR = "server_error"
    """HTTP 500, 502, 504 and other 5xx but 503."""
    OVERLOADED = "overloaded"
    """HTTP 503 or 529, or a provider's "overloaded" error."""
    AUTH = "auth"
    """HTTP 401 or 403: the key is missing, wrong or not allowed."""
    BAD_REQUEST = "bad_request"
    """Any other 4xx."""
    CONTEXT_LENGTH = "context_length"
    """The prompt does not fit the model's context window."""
    CONTENT_FILTER = "content_filter"
    """The provider refused the content."""
    MALFORMED_RESPONSE = "malformed_response"
    """A reply that is not the provider's documented wire format."""
    BUDGET = "budget"
    """Starting the request could break the run's budget, or a daily or monthly dollar cap of
    ``[budget]`` (or the shared state that keeps those caps cannot be reached)."""
    QUOTA = "quota"
    """A request or token quota of the provider is used up for its window."""
    DEADLINE = "deadline"
    """The run's deadline was reached."""
    CIRCUIT_OPEN = "circuit_open"
    """The provider's circuit breaker is open."""
    UNHEALTHY = "unhealthy"
    """The health check before use failed."""
    CANCELLED = "cancelled"
    """Lost a race or a hedge, or the run was cancelled."""


ATTEMPT_KINDS: frozenset[ErrorKind] = frozenset(ErrorKind) - {
    ErrorKind.BUDGET,
    ErrorKind.QUOTA,
    ErrorKind.CIRCUIT_OPEN,
    ErrorKind.UNHEALTHY,
}
"""Kinds a request that was actually sent can end in (the rest describe targets skipped unsent)."""


class ProviderError(Base, frozen=True):
    """One failure, as a value: what kind, a message fit for a person, and what the reply said.

    ``retry_after_s`` is the provider's own minimum wait (Retry-After or retry-after-ms), when it
    gave one. ``status`` is the HTTP status when a response was received. Messages never contain
    an API key: they are built from status codes and provider error texts only.
    """

    kind: ErrorKind
    message: str
    status: int | None = None
    retry_after_s: float | None = None
