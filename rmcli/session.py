"""What every command that talks to providers shares: the store and one HTTP client."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from rmcli.config import ConfigError
from rmcli.environment import state_home
from rmcli.store import SqliteStore, Store, StoreError

__all__ = ["StoreCircuits", "http_client", "open_store"]


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


class StoreCircuits:
    """The runner's ``CircuitBook`` over the state store: breakers shared by every ``rmgr``
    process using the same state folder, dated by the wall clock."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def admit(self, provider: str, cooldown_s: float, probe_timeout_s: float) -> tuple[str, float | None]:
        """Ask ``provider``'s breaker, atomically across processes."""
        now = time.time()
        admission = self.store.admit_circuits([provider], now, cooldown_s, probe_timeout_s)[provider]
        retry_in = None if admission.retry_at is None else max(admission.retry_at - now, 0.0)
        return admission.decision, retry_in

    def record(self, provider: str, outcome: str, failure_threshold: int) -> None:
        """Tell ``provider``'s breaker how an attempt ended."""
        self.store.record_circuit(provider, outcome, time.time(), failure_threshold)
