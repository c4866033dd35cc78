"""What the caller asks for, and the HTTP request the wire formats turn it into."""

from __future__ import annotations

from rmcore.base import Base

__all__ = ["ChatRequest", "HttpRequest"]

DEFAULT_MAX_TOKENS = 1024


class ChatRequest(Base, frozen=True):
    """One completion request, independent of any provider's format.

    ``temperature`` of ``None`` leaves the provider's default; ``0.0`` is sent as 0, never replaced.
    ``source_id`` tells an AICEO gateway what asked (the seed sends ``<perspective>-analysis``).
    """

    prompt: str
    system: str | None = None
    max_tokens: int = DEFAULT_MAX_TOKENS
    temperature: float | None = None
    stream: bool = True
    source_id: str = "ask"


class HttpRequest(Base, frozen=True):
    """A complete HTTP request, ready for any client to send: method, URL, headers, body bytes.

    ``headers`` may hold a secret (an API key). ``redacted_headers`` is what may be shown.
    """

    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    body: bytes = b""

    def redacted_headers(self) -> tuple[tuple[str, str], ...]:
        """The headers with every credential replaced by ``<redacted>``."""
        secret = {"authorization", "x-api-key", "api-key", "proxy-authorization"}
        return tuple((k, "<redacted>" if k.lower() in secret else v) for k, v in self.headers)
