"""The gateway's client keys: read from ``RMGR_SERVE_KEYS``, checked in constant time.

A client presents its key as ``Authorization: Bearer KEY`` (what the OpenAI SDK sends) or
``x-api-key: KEY`` (what the Anthropic SDK sends). The key only ever lives in this process's
memory: it is never forwarded upstream (providers get their own keys from the environment),
logged or stored.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping

__all__ = ["KEYS_VARIABLE", "LOOPBACK_HOSTS", "authorized", "is_loopback", "parse_keys", "presented_key"]

KEYS_VARIABLE = "RMGR_SERVE_KEYS"
"""The environment variable that holds the clients' keys, comma-separated."""

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
"""The hosts ``--no-auth`` may listen on: only this machine can reach them."""


def parse_keys(env: Mapping[str, str]) -> tuple[bytes, ...]:
    """The keys ``RMGR_SERVE_KEYS`` holds (blanks around each and empty items dropped)."""
    raw = env.get(KEYS_VARIABLE, "")
    return tuple(k.strip().encode() for k in raw.split(",") if k.strip())


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only."""
    return host.strip().lower().strip("[]") in LOOPBACK_HOSTS


def presented_key(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """The key a request carries (ASGI headers: lower-case names), ``Bearer`` first, else
    ``x-api-key``; None when it carries neither."""
    bearer: bytes | None = None
    api_key: bytes | None = None
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.strip().partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                bearer = token.strip()
        elif name == b"x-api-key" and value.strip():
            api_key = value.strip()
    return bearer if bearer is not None else api_key


def authorized(presented: bytes | None, keys: tuple[bytes, ...]) -> bool:
    """Whether ``presented`` is one of ``keys``, compared with each in constant time (every key
    is compared, so the time says nothing of which one, or how much of one, matched)."""
    if presented is None:
        return False
    found = False
    for key in keys:
        found |= hmac.compare_digest(presented, key)
    return found
