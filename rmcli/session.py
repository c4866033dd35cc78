"""What every command that talks to providers shares: the store and one HTTP client."""

from __future__ import annotations

import functools
import ssl
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import httpx

from rmcli.config import ConfigError
from rmcli.environment import state_home
from rmcli.output import err
from rmcli.runner import CircuitAnswer
from rmcli.shared_state import SharedState
from rmcli.state import open_state
from rmcli.store import AttemptClaim, SlotBusy, SqliteStore, Store, StoreError
from rmcore.breaker import CircuitState
from rmcore.quota import Charge, Refusal

__all__ = ["StoreCircuits", "StoreQuotas", "http_client", "open_store"]


@contextmanager
def open_store(env: dict[str, str]) -> Iterator[Store]:
    """The state store ``RECURSIVEMANAGER_STATE`` chooses: the SQLite database of
    ``$RECURSIVEMANAGER_HOME`` (the default), or a Redis database shared by a fleet, with this
    host's SQLite state behind it for the bookkeeping of runs while Redis cannot be reached
    (``rmcli.shared_state``).

    A store that cannot be used is a ConfigError (exit 2), whether it fails to open or fails in
    the middle of the command (a shared state that became unreachable while a command read it);
    the message names the URL without its password."""
    home = state_home(env)
    try:
        opened = open_state(env, home)
    except StoreError as exc:
        raise ConfigError(exc.message) from None
    store: Store = opened
    if not isinstance(opened, SqliteStore):
        store = SharedState(opened, _url(opened), home, warn=err)
    with store:
        try:
            yield store
        except (StoreError, BaseExceptionGroup) as exc:
            problem = _store_error(exc)
            if problem is None:
                raise
            raise ConfigError(problem.message) from None


def _url(store: Store) -> str:
    url = getattr(store, "url", None)
    return url if isinstance(url, str) else "the shared state"


def _store_error(exc: BaseException) -> StoreError | None:
    """The store's error that ``exc`` is, or that every exception of the group ``exc`` is (a
    task group re-raises its tasks' errors as a group)."""
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        found = [_store_error(inner) for inner in exc.exceptions]
        if found and all(found):
            return found[0]
    return None


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One verifying TLS context per process: loading the CA bundle costs ~20 ms of CPU, which
    every new client would otherwise pay on the event loop."""
    return httpx.create_ssl_context()


def http_client() -> httpx.AsyncClient:
    """The one client a run shares: pooled connections, no client-side timeouts (the engine's
    deadlines are enforced with cancel scopes), no redirects (an endpoint URL is used as given),
    certificates always verified."""
    return httpx.AsyncClient(
        verify=_tls_context(),
        timeout=None,
        follow_redirects=False,
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=32),
    )


class StoreCircuits:
    """The runner's ``CircuitBook`` over the state store: breakers shared by every ``rmgr``
    process using the same state (folder or Redis), dated by the wall clock.

    A success on a provider whose circuit this book's latest admission found closed with no
    failures is not sent to the store: there it would change nothing, yet cost a round trip to
    a shared state on every routed call. The success is taken to have happened at that
    admission, while its request was on its way, so a failure another process recorded since
    stays counted and a circuit another process opened since stays open: the conservative
    side. Every admission replaces what is remembered of its provider, and any outcome but a
    success is recorded as it comes and forgets it. The engine asks a provider's circuit before
    a run's first request to it, so a success is only ever left out on an admission made after
    its own run asked, whether this book serves one run or many (an analysis's perspectives)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._clean: set[str] = set()

    def admit(self, provider: str, cooldown_s: float, probe_timeout_s: float) -> CircuitAnswer:
        """Ask ``provider``'s breaker, atomically across processes."""
        now = time.time()
        admission = self.store.admit_circuits([provider], now, cooldown_s, probe_timeout_s)[provider]
        if admission.decision == "allowed" and admission.state == CircuitState(provider=provider):
            self._clean.add(provider)
        else:
            self._clean.discard(provider)
        retry_in = None if admission.retry_at is None else max(admission.retry_at - now, 0.0)
        probe = admission.state.probe_started_at if admission.decision == "probe" else None
        return CircuitAnswer(admission.decision, retry_in, probe)

    def release_probe(self, provider: str, probe: float) -> None:
        """Hand back a probe that was never sent (``Store.release_probe``)."""
        self.store.release_probe(provider, probe, time.time())

    def record(self, provider: str, outcome: str, failure_threshold: int) -> None:
        """Tell ``provider``'s breaker how an attempt ended (nothing to tell for a success on a
        circuit admitted clean)."""
        if outcome == "ok" and provider in self._clean:
            return
        self._clean.discard(provider)
        self.store.record_circuit(provider, outcome, time.time(), failure_threshold)


class StoreQuotas:
    """The runner's ``QuotaBook`` over the state store: budgets, quotas and concurrency slots
    shared by every process using the same state. Its methods raise ``StoreUnavailable`` when a
    shared state cannot be reached; ``fallback`` is this host's own state for policies that then
    fail open."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._fallback: StoreQuotas | None = None
        self._announced = False

    def begin_attempt(self, claim: AttemptClaim, now: float) -> Refusal | SlotBusy | None:
        """``Store.begin_attempt``."""
        answer = self.store.begin_attempt(claim, now)
        self._announced = False
        return answer

    def end_attempt(self, claim: AttemptClaim, used: Sequence[Charge] | None, now: float) -> None:
        """``Store.end_attempt``."""
        self.store.end_attempt(claim, used, now)

    def acquire_slot(self, name: str, limit: int, holder: str, now: float, lease_s: float) -> bool:
        """``Store.acquire_slot``."""
        return self.store.acquire_slot(name, limit, holder, now, lease_s)

    def fallback(self) -> tuple[StoreQuotas, bool]:
        """This host's own state (the SQLite database in the state folder) to count in while
        the shared one is unreachable, and whether this is the first time it is asked for since
        the shared state last answered (so that the switch is announced once, not per attempt).
        A store that is not shared is its own fallback."""
        if self._fallback is None:
            local = self.store.local() if isinstance(self.store, SharedState) else self.store
            self._fallback = self if local is self.store else StoreQuotas(local)
        first, self._announced = not self._announced, True
        return self._fallback, first
