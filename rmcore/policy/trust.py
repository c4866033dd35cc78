"""Policies from untrusted hands: a policy must not send a key where its owner did not point it.

Policy files come from pull requests in CI. A policy could bind a built-in key variable
(``ANTHROPIC_API_KEY``, ...) to a server of its own, by a new provider with that ``key_env`` or by
overriding a built-in's ``url``, and so collect the key. ``key_leaks`` finds every provider that
would send a built-in's key to an origin (scheme, host, port) other than the one the environment
configured for that built-in; ``plain_http`` finds every provider that would send anything over
plain ``http://`` to a host that is not loopback. The shell refuses both unless allowed explicitly
(``RMGR_ALLOWED_ORIGINS``, ``RMGR_ALLOW_HTTP``).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from urllib.parse import urlsplit

from rmcore.providers import ProviderSpec

__all__ = ["key_leaks", "origin", "plain_http"]

_LOOPBACK = {"localhost", "127.0.0.1", "::1"}


def origin(url: str) -> str:
    """``scheme://host:port`` of ``url`` (the port made explicit), lower-cased."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = (parts.hostname or "").lower()
    return f"{parts.scheme.lower()}://{host}:{port}"


def _loopback(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return host in _LOOPBACK or host.startswith("127.")


def key_leaks(
    used: Iterable[ProviderSpec],
    builtins: Mapping[str, ProviderSpec],
    allowed_origins: Collection[str] = (),
) -> list[str]:
    """Why each provider of ``used`` would send a built-in provider's key to a foreign origin."""
    home = {b.key_env: origin(b.url) for b in builtins.values() if b.key_env and b.url}
    allowed = {origin(o) for o in allowed_origins}
    problems = []
    for spec in used:
        expected = home.get(spec.key_env or "")
        if expected is None or not spec.url:
            continue
        actual = origin(spec.url)
        if actual != expected and actual not in allowed:
            problems.append(
                f"provider {spec.name} would send {spec.key_env} to {actual}, but that key's provider is "
                f"configured at {expected}; refused (allow it with RMGR_ALLOWED_ORIGINS={actual})"
            )
    return problems


def plain_http(used: Iterable[ProviderSpec]) -> list[str]:
    """Why each provider of ``used`` would talk plain http to a host that is not loopback."""
    return [
        f"provider {spec.name} uses plain http to {origin(spec.url)}, which is not loopback; refused "
        "(use https, or allow it with RMGR_ALLOW_HTTP=1)"
        for spec in used
        if spec.url and urlsplit(spec.url).scheme == "http" and not _loopback(spec.url)
    ]
