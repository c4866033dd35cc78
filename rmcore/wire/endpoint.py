"""Where a provider's requests go, in words a person can act on: its address, its URL and the
setting it came from, and the full endpoint a base URL probably meant.

DESIGN §2: a provider's URL is its full endpoint, used exactly as given. A base URL
(``http://host/v1``) is the commonest mistake, and the provider answers it with a bare 404; so a
404 or 405 from a URL that does not end in its kind's endpoint path (``/chat/completions``,
``/messages``, ``/submit``) is reported with the endpoint it probably meant. Connection failures
name the host and port and the setting to change (``OPENAI_API_URL=http://...``).

URLs are shown without a password or a credential-like query parameter (``?key=...``): an error
message never holds a key.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_plus, urlsplit, urlunsplit

from rmcore.providers import ProviderKind, ProviderSpec

__all__ = [
    "ENDPOINT_PATHS",
    "HIDDEN",
    "address",
    "likely_endpoint",
    "shown_url",
    "url_setting",
    "wrong_endpoint",
]

HIDDEN = "<redacted>"
"""What a password or a credential-like query value is shown as."""

ENDPOINT_PATHS: dict[ProviderKind, str] = {
    ProviderKind.OPENAI: "/chat/completions",
    ProviderKind.ANTHROPIC: "/messages",
    ProviderKind.AICEO: "/submit",
}
"""The path a full endpoint of each kind ends with."""

_ROOTS: dict[ProviderKind, str] = {
    ProviderKind.OPENAI: "/v1",
    ProviderKind.ANTHROPIC: "/v1",
    ProviderKind.AICEO: "/api/glm",
}
"""What goes before the endpoint path when a URL has no path at all (the vendors' and the
gateway's defaults)."""

_STRAYS: dict[ProviderKind, tuple[str, ...]] = {
    ProviderKind.OPENAI: ("/completions", "/chat", "/models", "/responses"),
    ProviderKind.ANTHROPIC: ("/models", "/complete"),
    ProviderKind.AICEO: ("/status",),
}
"""Sibling endpoints a URL may end with by mistake: replaced, not extended."""

_HINTED_STATUSES = frozenset({404, 405})
"""What a server answers a POST to a path it has no endpoint at."""

_CREDENTIAL_NAME = re.compile(r"auth|key|token|secret|passw|session|cookie|credential|signature", re.I)


def shown_url(url: str) -> str:
    """``url`` as an error message may show it: a password and credential-like query values
    (``?api_key=``, ``?token=``) replaced by ``<redacted>``, the fragment dropped."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return HIDDEN
    netloc = parts.netloc
    userinfo, at, host = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.partition(':')[0]}:{HIDDEN}@{host}"
    fields = []
    for field in parts.query.split("&") if parts.query else []:
        name, equals, _ = field.partition("=")
        fields.append(f"{name}={HIDDEN}" if equals and _CREDENTIAL_NAME.search(unquote_plus(name)) else field)
    return urlunsplit((parts.scheme, netloc, parts.path, "&".join(fields), ""))


def address(url: str) -> str:
    """``host:port`` of ``url`` (the scheme's default port when it names none; IPv6 hosts in
    brackets), or the URL itself when it has no host."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return shown_url(url)
    host = parts.hostname
    if not host:
        return shown_url(url)
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def url_setting(spec: ProviderSpec) -> str:
    """The provider's URL with the setting it came from: ``OPENAI_API_URL=http://...``, or
    ``providers.local.url=http://...`` for a URL the policy gives."""
    return f"{spec.url_from or f'providers.{spec.name}.url'}={shown_url(spec.url)}"


def likely_endpoint(spec: ProviderSpec) -> str | None:
    """The full endpoint ``spec.url`` probably meant, or ``None`` when it already ends with its
    kind's endpoint path: ``http://host/v1`` → ``http://host/v1/chat/completions`` (OpenAI kind,
    GLM included), ``http://host/v1/messages`` (Anthropic), ``http://host/api/glm/submit`` from
    ``http://host`` or ``http://host/api`` (the AICEO gateway)."""
    endpoint = ENDPOINT_PATHS[spec.kind]
    try:
        parts = urlsplit(spec.url)
    except ValueError:
        return None
    path = parts.path.rstrip("/")
    if path.endswith(endpoint):
        return None
    for stray in _STRAYS[spec.kind]:
        if path.endswith(stray):
            path = path.removesuffix(stray)
            break
    if not path:
        path = _ROOTS[spec.kind]
    elif spec.kind is ProviderKind.AICEO and path.endswith("/api"):
        path += "/glm"
    return urlunsplit((parts.scheme, parts.netloc, path + endpoint, parts.query, ""))


def wrong_endpoint(spec: ProviderSpec, status: int) -> str | None:
    """The message for an HTTP ``status`` that says the URL is not an endpoint (404, 405) from a
    URL that does not end in its kind's endpoint path, or ``None`` when that is not the case."""
    if status not in _HINTED_STATUSES:
        return None
    likely = likely_endpoint(spec)
    if likely is None:
        return None
    return (
        f"HTTP {status} from {url_setting(spec)}: the URL must be the full endpoint; "
        f"did you mean {shown_url(likely)}?"
    )
