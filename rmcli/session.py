"""What every command that talks to providers shares: the store and one HTTP client."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from rmcli.config import ConfigError
from rmcli.environment import state_home
from rmcli.store import SqliteStore, StoreError

__all__ = ["http_client", "open_store"]


@contextmanager
def open_store(env: dict[str, str]) -> Iterator[SqliteStore]:
    """The state store of ``$RECURSIVEMANAGER_HOME``; a store that cannot be used is a ConfigError."""
    try:
        store = SqliteStore.open(state_home(env))
    except StoreError as exc:
        raise ConfigError(exc.message) from None
    with store:
        yield store


def http_client() -> httpx.AsyncClient:
    """The one client a run shares: pooled connections, no client-side timeouts (the engine's
    deadlines are enforced with cancel scopes), no redirects (an endpoint URL is used as given)."""
    return httpx.AsyncClient(
        timeout=None,
        follow_redirects=False,
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=32),
    )
