"""Which state store a process uses: ``RECURSIVEMANAGER_STATE`` chooses.

Unset, empty or ``sqlite``: the SQLite database in the state folder (``SqliteStore``), right for
one machine. ``redis://HOST:PORT/DB`` (or ``rediss://`` for TLS, with ``USER:PASSWORD@`` when the
server wants them): one Redis database that a fleet of machines shares (``RedisStore``), so that
their budgets, quotas, circuit breakers, cache and history are one.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Final

from rmcli.store import SqliteStore, Store, StoreError

__all__ = ["STATE_VARIABLE", "open_state", "state_url"]

STATE_VARIABLE: Final = "RECURSIVEMANAGER_STATE"
"""The environment variable that chooses the state store."""

_REDIS_SCHEMES: Final = ("redis://", "rediss://")


def state_url(env: Mapping[str, str]) -> str | None:
    """The Redis URL ``env`` chooses (password and all: never show it; messages use
    ``rmcli.redis_store.redacted_url``), or None for the SQLite store. Raises ``StoreError``
    naming the variable when its value is neither."""
    value = env.get(STATE_VARIABLE, "").strip()
    if value.lower() in ("", "sqlite"):
        return None
    if value.lower().startswith(_REDIS_SCHEMES):
        return value
    scheme, separator, _ = value.partition("://")
    # Whatever stands before an "@" may be a password: never shown.
    shown = f"{scheme}://..." if separator else "..." * ("@" in value) + value.rpartition("@")[2]
    raise StoreError(
        None,
        f"{STATE_VARIABLE} must be unset, 'sqlite' or a Redis URL such as redis://127.0.0.1:6379/0, "
        f"not {shown!r}.",
    )


def open_state(env: Mapping[str, str], home: Path) -> Store:
    """The state store ``env`` chooses: ``RedisStore`` for a ``redis://`` URL in
    ``RECURSIVEMANAGER_STATE``, else the SQLite database in ``home`` (the state folder).

    Raises ``StoreError`` for a value of the variable that is neither, a malformed Redis URL, or
    a state folder or database that cannot be used. A Redis server is not contacted here: when it
    cannot be reached, the store's first call raises ``StoreUnavailable``.
    """
    url = state_url(env)
    if url is None:
        return SqliteStore.open(home)
    # Imported here so that commands on the SQLite store never load the Redis client.
    from rmcli.redis_store import RedisStore

    return RedisStore.open(url)
