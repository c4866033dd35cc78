"""Health checks as values: the request that asks whether a provider is up, and how to read the reply.

The AICEO gateway has a status endpoint (``/status`` beside ``/submit``); its body is documented two
ways (``{status: "operational", ...}`` and ``{healthy: true, ...}``) and both are accepted. The OpenAI
and Anthropic kinds are asked for their model list (``/models``), which needs a valid key: so bad
credentials show up as unhealthy (``auth``), unlike the original, which counted HTTP 401 as healthy.
"""

from __future__ import annotations

import msgspec

from rmcore.base import Base
from rmcore.providers import ProviderKind, ProviderSpec, health_url
from rmcore.requests import HttpRequest

__all__ = ["HealthReport", "build_health_request", "read_health_reply"]


class HealthReport(Base, frozen=True):
    """One provider's health: ``reason`` is None when healthy, else ``unreachable``, ``timeout``,
    ``auth``, ``HTTP <code>`` or what the status body said."""

    provider: str
    healthy: bool
    reason: str | None
    response_time_ms: float | None


def build_health_request(spec: ProviderSpec, api_key: str | None) -> HttpRequest:
    """The GET request that checks ``spec``'s health, with the provider's own credentials."""
    headers: list[tuple[str, str]] = [("Accept", "application/json")]
    if spec.kind is ProviderKind.AICEO:
        if api_key:
            headers.append(("X-API-Key", api_key))
    elif spec.kind is ProviderKind.ANTHROPIC:
        headers.append(("anthropic-version", "2023-06-01"))
        if api_key:
            headers.append(("x-api-key", api_key))
    elif api_key:
        headers.append(("Authorization", f"Bearer {api_key}"))
    return HttpRequest(method="GET", url=health_url(spec), headers=tuple(headers))


def read_health_reply(spec: ProviderSpec, status: int, body: bytes) -> str | None:
    """Why the reply says ``spec`` is unhealthy, or None when it is healthy."""
    if status in (401, 403):
        return "auth"
    if not 200 <= status < 300:
        return f"HTTP {status}"
    if spec.kind is not ProviderKind.AICEO:
        return None
    try:
        doc = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return "status body is not JSON"
    if not isinstance(doc, dict):
        return "status body is not a JSON object"
    if doc.get("healthy") is True or doc.get("status") == "operational":
        return None
    if "status" in doc:
        return f"status: {str(doc['status'])[:80]}"
    return "status body says unhealthy"
