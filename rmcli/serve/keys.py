"""The gateway's client keys: read from ``RMGR_SERVE_KEYS``, checked in constant time.

Each comma-separated item is a key, or ``NAME=KEY`` to give it a name: the access log shows the
name (never the key), and ``[serve.keys.NAME]`` in the policy limits what it may spend and send.
A client presents its key as ``Authorization: Bearer KEY`` (what the OpenAI SDK sends) or
``x-api-key: KEY`` (what the Anthropic SDK sends). The key only ever lives in this process's
memory: it is never forwarded upstream (providers get their own keys from the environment),
logged or stored.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable, Mapping
from typing import NamedTuple

__all__ = [
    "KEYS_VARIABLE", "LOOPBACK_HOSTS", "ClientKey", "ClientKeysError", "authorized", "is_loopback",
    "parse_keys", "presented_key",
]

KEYS_VARIABLE = "RMGR_SERVE_KEYS"
"""The environment variable that holds the clients' keys, comma-separated."""

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
"""The hosts ``--no-auth`` may listen on: only this machine can reach them."""


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class ClientKey(NamedTuple):
    """One client key: its ``secret`` (never shown) and its ``name`` (None when unnamed)."""

    secret: bytes
    name: str | None = None

    def __repr__(self) -> str:
        return f"ClientKey(name={self.name!r})"  # the secret never reaches a log or a traceback


class ClientKeysError(ValueError):
    """``RMGR_SERVE_KEYS`` cannot be read; the message says which item (by position, never its
    key) and what to do."""


def parse_keys(env: Mapping[str, str]) -> tuple[ClientKey, ...]:
    """The keys ``RMGR_SERVE_KEYS`` holds (blanks around each and empty items dropped); an item
    ``NAME=KEY`` names its key. ``ClientKeysError`` for a name that is not one (letters, digits, ``.``,
    ``_``, ``-``), a name without a key, or a name given twice."""
    keys: list[ClientKey] = []
    for position, item in enumerate((i.strip() for i in env.get(KEYS_VARIABLE, "").split(",")), 1):
        if not item:
            continue
        name, equals, secret = item.partition("=")
        if not equals:
            keys.append(ClientKey(item.encode()))
            continue
        name, secret = name.strip(), secret.strip()
        where = f"{KEYS_VARIABLE}, item {position}"
        if not _NAME.fullmatch(name):
            raise ClientKeysError(f"{where}: the name before '=' must be letters, digits, '.', '_' or '-' "
                            "(NAME=KEY)")
        if not secret:
            raise ClientKeysError(f"{where}: the key named {name!r} is empty (NAME=KEY)")
        if any(k.name == name for k in keys):
            raise ClientKeysError(f"{where}: the name {name!r} is given to two keys")
        keys.append(ClientKey(secret.encode(), name))
    return tuple(keys)


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


def authorized(presented: bytes | None, keys: tuple[ClientKey, ...]) -> ClientKey | None:
    """The one of ``keys`` that ``presented`` is, compared with each in constant time (every key
    is compared, so the time says nothing of which one, or how much of one, matched); None when
    it is none of them."""
    if presented is None:
        return None
    found: ClientKey | None = None
    for key in keys:
        if hmac.compare_digest(presented, key.secret):
            found = key
    return found
