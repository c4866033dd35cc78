"""The vocabulary of failure: error kinds, and provider failures as values.

Every failed attempt, skipped target and failed run is described by one ``ErrorKind``. The kinds
are the contract of DESIGN §4: they appear as ``outcome`` in JSON results and in a policy's
``retry.on``. What the core does about each kind (retry, fail over, stop, break the circuit) is
not here but in :mod:`rmcore.conduct`'s table.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from rmcore.base import Base

if TYPE_CHECKING:
    ATTEMPT_KINDS: frozenset[ErrorKind]
    """Kinds a request that was actually sent can end in: ``rmcore.conduct.SENT_KINDS``."""

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
    UNSUPPORTED = "unsupported"
    """The target cannot carry what the request needs (tools, images, a JSON answer): nothing
    is sent to it. No verdict on the provider."""


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


def __getattr__(name: str) -> frozenset[ErrorKind]:
    """``ATTEMPT_KINDS``, kept for the shell: the fact lives in :mod:`rmcore.conduct` (which
    imports this module, hence the lazy look-up)."""
    if name == "ATTEMPT_KINDS":
        from rmcore.conduct import SENT_KINDS

        return SENT_KINDS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
