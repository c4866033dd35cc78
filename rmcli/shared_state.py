"""A state store on the network (Redis) with this host's own SQLite state behind it.

When the shared state cannot be reached, a run must neither hang nor lose what it did, and it
must not spend past the fleet's caps without saying so. ``SharedState`` wraps the network store
and sorts its calls in two:

- Bookkeeping that a run does on the way (circuit breakers, recording attempts, the answer cache,
  saving an analysis in the history) falls back to this host's SQLite state (the state folder,
  ``$RECURSIVEMANAGER_HOME``) while the shared state is unreachable: breakers keep working on
  what this host sees, and nothing that was paid for is lost. One WARNING line on stderr says
  so, once per outage.
- Everything else raises ``StoreUnavailable`` as the network store does: budgets, quotas and
  concurrency slots (the runner applies the policy's ``[budget] on_state_unavailable``: refuse
  paid requests, or count them in :meth:`SharedState.local`), and the reads and clean-ups that
  commands show a person (``rmgr usage``, ``history``, ``cache``), which must not pass a host's
  partial view off as the fleet's.

After a call finds the shared state unreachable, calls in the next ``RETRY_AFTER_S`` do not
try it again (they fail, or fall back, at once): a server that is down behind a firewall would
otherwise cost a connect timeout per call, on the event loop. Then it is tried again, so a
restarted server is back in use without anyone doing anything.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Final, TypeVar

from rmcli.store import (
    AttemptClaim,
    CacheStats,
    ClosingStore,
    HistoryEntry,
    HistoryStats,
    SlotBusy,
    SqliteStore,
    Store,
    StoreUnavailable,
)
from rmcore.attempts import AttemptRecord
from rmcore.breaker import Admission, CircuitState
from rmcore.quota import CapUsage, Charge, Refusal
from rmcore.usage import AttemptRow

__all__ = ["RETRY_AFTER_S", "SharedState"]

RETRY_AFTER_S: Final = 1.0
"""How long after finding the shared state unreachable calls skip it before trying it again."""

_T = TypeVar("_T")


class SharedState(ClosingStore):
    """The ``Store`` of a fleet: ``shared`` (a store on the network, named by ``url`` without its
    password), with the SQLite state in ``home`` for the bookkeeping of runs while ``shared``
    cannot be reached. ``warn`` shows one line to the person (stderr in the CLI)."""

    def __init__(
        self,
        shared: Store,
        url: str,
        home: Path,
        *,
        warn: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.shared = shared
        self.url = url
        self.home = home
        self._warn = warn
        self._clock = clock
        self._local: SqliteStore | None = None
        self._down_until = -float("inf")
        self._down: StoreUnavailable | None = None
        self._warned = False

    def local(self) -> Store:
        """This host's own state (the SQLite database in the state folder), opened on first use.
        Raises ``StoreError`` when that folder cannot be used."""
        if self._local is None:
            self._local = SqliteStore.open(self.home)
        return self._local

    # --- the bookkeeping of runs: this host's state while the shared one is unreachable --------

    def record_attempts(self, run_id: str, command: str, attempts: Sequence[AttemptRecord]) -> None:
        """Store the attempts of a run; on this host while the shared state is unreachable."""
        self._or_local(lambda store: store.record_attempts(run_id, command, attempts))

    def admit_circuits(
        self, providers: Sequence[str], now: float, cooldown_s: float, probe_timeout_s: float
    ) -> dict[str, Admission]:
        """Ask the circuits, shared by the fleet; this host's own while the shared state is
        unreachable (one probe per host then, not one in all)."""
        return self._or_local(lambda store: store.admit_circuits(providers, now, cooldown_s, probe_timeout_s))

    def record_circuit(self, provider: str, outcome: str, now: float, failure_threshold: int) -> CircuitState:
        """Apply an outcome to a circuit; to this host's own while the shared state is unreachable."""
        return self._or_local(lambda store: store.record_circuit(provider, outcome, now, failure_threshold))

    def release_probe(self, provider: str, probe_started_at: float, now: float) -> CircuitState:
        """``Store.release_probe``; on this host's state while the shared one is unreachable."""
        return self._or_local(lambda store: store.release_probe(provider, probe_started_at, now))

    def cache_get(self, key: str, now_ms: int, ttl_ms: int) -> bytes | None:
        """A cached answer; from this host's cache while the shared state is unreachable."""
        return self._or_local(lambda store: store.cache_get(key, now_ms, ttl_ms))

    def cache_put(self, key: str, perspective_id: str, payload: bytes, now_ms: int) -> None:
        """Cache an answer; in this host's cache while the shared state is unreachable."""
        self._or_local(lambda store: store.cache_put(key, perspective_id, payload, now_ms))

    def history_add(
        self,
        agent_id: str,
        question: str,
        status: str,
        overall_confidence: float | None,
        created_ms: int,
        payload: bytes,
    ) -> str:
        """Save an analysis; in this host's history while the shared state is unreachable."""

        def add(store: Store) -> str:
            return store.history_add(agent_id, question, status, overall_confidence, created_ms, payload)

        return self._or_local(add)

    # --- caps, slots and what commands show: the shared state or StoreUnavailable ---------------

    def attempts_since(self, since_ms: int, providers: Collection[str] | None = None) -> list[AttemptRow]:
        """The fleet's attempts (``Store.attempts_since``)."""
        return self._shared(lambda store: store.attempts_since(since_ms, providers))

    def circuits(self) -> list[CircuitState]:
        """The fleet's circuits (``Store.circuits``)."""
        return self._shared(lambda store: store.circuits())

    def cache_stats(self, now_ms: int, ttl_ms: int) -> CacheStats:
        """The fleet's answer cache (``Store.cache_stats``)."""
        return self._shared(lambda store: store.cache_stats(now_ms, ttl_ms))

    def cache_clear(self) -> int:
        """Empty the fleet's answer cache (``Store.cache_clear``)."""
        return self._shared(lambda store: store.cache_clear())

    def cache_prune(self, now_ms: int, ttl_ms: int) -> int:
        """Remove the fleet's expired answers (``Store.cache_prune``)."""
        return self._shared(lambda store: store.cache_prune(now_ms, ttl_ms))

    def history_list(
        self,
        agent_id: str | None,
        *,
        min_confidence: float | None = None,
        since_ms: int | None = None,
        before_ms: int | None = None,
        limit: int | None = None,
    ) -> list[HistoryEntry]:
        """The fleet's saved analyses (``Store.history_list``)."""
        return self._shared(
            lambda store: store.history_list(
                agent_id, min_confidence=min_confidence, since_ms=since_ms, before_ms=before_ms, limit=limit
            )
        )

    def history_resolve(self, reference: str) -> list[str]:
        """The ids ``reference`` names (``Store.history_resolve``)."""
        return self._shared(lambda store: store.history_resolve(reference))

    def history_get(self, entry_id: str) -> tuple[HistoryEntry, bytes] | None:
        """One saved analysis (``Store.history_get``)."""
        return self._shared(lambda store: store.history_get(entry_id))

    def history_stats(self, agent_id: str | None) -> HistoryStats:
        """A summary of saved analyses (``Store.history_stats``)."""
        return self._shared(lambda store: store.history_stats(agent_id))

    def history_delete(self, entry_id: str) -> bool:
        """Delete one saved analysis (``Store.history_delete``)."""
        return self._shared(lambda store: store.history_delete(entry_id))

    def history_clear(self, agent_id: str | None, before_ms: int | None = None) -> int:
        """Delete saved analyses (``Store.history_clear``)."""
        return self._shared(lambda store: store.history_clear(agent_id, before_ms))

    def history_export(self, agent_id: str) -> list[tuple[HistoryEntry, bytes]]:
        """An agent's analyses with their payloads (``Store.history_export``)."""
        return self._shared(lambda store: store.history_export(agent_id))

    def reserve(
        self, reservation_id: str, charges: Sequence[Charge], now: float, lease_s: float
    ) -> Refusal | None:
        """Reserve against the fleet's caps (``Store.reserve``)."""
        if not charges:
            return None
        return self._shared(lambda store: store.reserve(reservation_id, charges, now, lease_s))

    def settle(self, reservation_id: str, charges: Sequence[Charge], now: float) -> None:
        """Settle a reservation in the fleet's caps (``Store.settle``)."""
        self._shared(lambda store: store.settle(reservation_id, charges, now))

    def release(self, reservation_id: str) -> None:
        """Release a reservation of the fleet's caps (``Store.release``)."""
        self._shared(lambda store: store.release(reservation_id))

    def cap_usage(self, now: float) -> list[CapUsage]:
        """The fleet's current cap windows (``Store.cap_usage``)."""
        return self._shared(lambda store: store.cap_usage(now))

    def acquire_slot(self, name: str, limit: int, holder: str, now: float, lease_s: float) -> bool:
        """Take a slot of the fleet's semaphore ``name`` (``Store.acquire_slot``)."""
        return self._shared(lambda store: store.acquire_slot(name, limit, holder, now, lease_s))

    def release_slot(self, name: str, holder: str) -> None:
        """Give back a slot of the fleet's semaphore ``name`` (``Store.release_slot``)."""
        self._shared(lambda store: store.release_slot(name, holder))

    def begin_attempt(self, claim: AttemptClaim, now: float) -> Refusal | SlotBusy | None:
        """Take a slot of the fleet's and reserve against its caps at once
        (``Store.begin_attempt``); an empty claim is None without asking the shared state."""
        if claim.empty:
            return None
        return self._shared(lambda store: store.begin_attempt(claim, now))

    def end_attempt(self, claim: AttemptClaim, used: Sequence[Charge] | None, now: float) -> None:
        """Settle or release a reservation of the fleet's caps and give back its slot at once
        (``Store.end_attempt``); nothing to give back asks nothing of the shared state."""
        if claim.empty and not used:
            return
        self._shared(lambda store: store.end_attempt(claim, used, now))

    def close(self) -> None:
        """Close the shared store and this host's, when it was opened."""
        try:
            self.shared.close()
        finally:
            if self._local is not None:
                self._local.close()

    # --- internals -------------------------------------------------------------------------------

    def _shared(self, work: Callable[[Store], _T]) -> _T:
        if self._down is not None and self._clock() < self._down_until:
            raise StoreUnavailable(self._down.url, self._down.reason)
        try:
            result = work(self.shared)
        except StoreUnavailable as exc:
            self._down, self._down_until = exc, self._clock() + RETRY_AFTER_S
            raise
        self._down, self._warned = None, False
        return result

    def _or_local(self, work: Callable[[Store], _T]) -> _T:
        try:
            return self._shared(work)
        except StoreUnavailable as exc:
            if not self._warned:
                self._warned = True
                self._warn(
                    f"WARNING: {exc.message}; until it is back, circuit breakers, attempts, the "
                    f"answer cache and the history use this host's state in {self.home}"
                )
            return work(self.local())
