"""What the shell needs from its state, one small protocol per concern, and the values they trade.

Five concerns: ``Attempts`` (every request sent, recorded when it leaves, settled when it ends),
``Circuits`` (the breakers), ``Caps`` (budgets, quotas and concurrency slots over time windows),
``Cache`` (answers by key) and ``History`` (saved analyses). A ``State`` bundles one of each;
``rmcli.state.open_state`` is the only way to get one (SQLite in the state folder, or Redis for a
fleet with SQLite behind it). Every method is a coroutine: a store on the network must never block
the event loop, and one signature for both backends keeps callers blind to which they have. A store
on a network raises ``StoreUnavailable`` when it cannot be reached; any store raises ``StoreError``
when it cannot be used (a damaged file, another application's data).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any, Protocol, Self

from rmcli.state.conversations import Conversations
from rmcore.attempts import AttemptRecord, Origin
from rmcore.base import Base
from rmcore.breaker import Admission, CircuitState
from rmcore.quota import CapUsage, Charge, Refusal
from rmcore.usage import AttemptRow

__all__ = [
    "HISTORY_ID_MIN_PREFIX", "AttemptClaim", "Attempts", "Cache", "CacheStats", "Caps", "Circuits", "History",
    "HistoryEntry", "HistoryStats", "Origin", "Slot", "SlotBusy", "State", "StoreError", "StoreUnavailable",
]

HISTORY_ID_MIN_PREFIX = 4
"""The fewest leading characters of a history id that may stand for it (like a short git hash)."""


class StoreError(Exception):
    """The state cannot be used. The message says what is wrong and what to do about it; it never
    holds an API key or a password. ``path`` is the file (or folder) concerned, None for Redis."""

    def __init__(self, path: Path | None, message: str) -> None:
        super().__init__(message)
        self.path, self.message = path, message


class StoreUnavailable(StoreError):
    """The shared state cannot be reached (refused, down, or silent past the store's short
    timeouts). The call's effect is unknown, so a caller that must not spend unchecked starts
    no paid request. ``url`` is the state's URL without any password."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(None, f"the shared state ({url}) is unreachable: {reason}")
        self.url, self.reason = url, reason


class CacheStats(Base, frozen=True):
    """The answer cache at one moment: ``entries`` stored, ``fresh_entries`` young enough for the
    TTL asked with, lookups' ``hits`` and ``misses`` since the last clear (``hit_rate`` None before
    the first), the oldest and newest entries' times (epoch ms) and the payloads' total ``bytes``."""

    entries: int
    fresh_entries: int
    hits: int
    misses: int
    hit_rate: float | None
    oldest_ms: int | None
    newest_ms: int | None
    bytes: int


class HistoryEntry(Base, frozen=True):
    """One saved analysis without its payload: ``id`` is 12 lowercase hex digits, ``status`` the
    analysis's, ``overall_confidence`` None when unknown, ``created_ms`` epoch ms."""

    id: str
    agent_id: str
    question: str
    status: str
    overall_confidence: float | None
    created_ms: int


class HistoryStats(Base, frozen=True):
    """Saved analyses summed up: counts per status; average, minimum and maximum over the entries
    whose confidence is known (``with_confidence`` of them); the oldest and newest times."""

    total: int
    by_status: dict[str, int]
    with_confidence: int
    average_confidence: float | None
    min_confidence: float | None
    max_confidence: float | None
    first_ms: int | None
    last_ms: int | None


def check_lease(lease_s: float) -> None:
    """Refuse a lease that is not a positive number of seconds (``ValueError``)."""
    if not (math.isfinite(lease_s) and lease_s > 0):
        raise ValueError(f"a lease must last a positive number of seconds, not {lease_s!r}")


def check_charges(charges: Sequence[Charge]) -> None:
    """Refuse charges no store can add up (``ValueError``): an amount that is not finite (it would
    poison its window's sum for good), or a cap window charged twice."""
    for charge in charges:
        if not math.isfinite(charge.amount):
            raise ValueError(f"the charge to {charge.cap_key} must be a finite amount, not {charge.amount!r}")
    if len({(c.cap_key, c.window) for c in charges}) != len(charges):
        raise ValueError("a reservation charges each cap window at most once")


class Slot(Base, frozen=True):
    """One of the ``limit`` slots of the counting semaphore ``name`` (a provider's
    ``max_concurrency`` across processes), held for ``lease_s`` seconds unless renewed."""

    name: str
    limit: int
    lease_s: float

    def __post_init__(self) -> None:
        """Refuse a ``limit`` below 1 or a lease that is not a positive number (``ValueError``)."""
        if self.limit < 1:
            raise ValueError(f"a slot limit must be at least 1, not {self.limit}")
        check_lease(self.lease_s)


class AttemptClaim(Base, frozen=True):
    """What one attempt holds while it runs, under ``holder`` (also its reservation's id): a
    ``slot`` (none when None) and a reservation of ``charges`` (its worst case) whose lease ends
    ``lease_s`` after it is made. ``Caps.begin`` takes both at once and ``Caps.end`` gives both
    back at once: one round trip each to a store on the network."""

    holder: str
    lease_s: float
    slot: Slot | None = None
    charges: tuple[Charge, ...] = ()

    def __post_init__(self) -> None:
        """Refuse what no store can hold (``ValueError``): see ``check_charges`` and ``check_lease``."""
        check_charges(self.charges)
        check_lease(self.lease_s)

    @property
    def empty(self) -> bool:
        """Nothing to take: no slot and no charges."""
        return self.slot is None and not self.charges


class SlotBusy(Base, frozen=True):
    """``Caps.begin``'s answer when every slot was held: nothing was taken or reserved."""


class Attempts(Protocol):
    """Every request sent to a provider. ``sent`` records it the moment it leaves, as it would
    stand if nothing more were heard of it (outcome ``cancelled``, the prompt's estimated cost);
    ``settle`` replaces that with how it ended. A process killed in between leaves the first
    record, so a request the provider received is never missing from ``rmgr usage``. A store whose
    class sets ``cancel_safe = True`` lets ``sent`` be cancelled (the runner then needs no shield
    around it): the record is then written or not, and ``withdraw`` takes it back either way."""

    async def sent(self, key: str, origin: Origin, record: AttemptRecord) -> None:
        """Record the attempt ``key`` (unique, made by the caller) as it leaves; nothing when ``key``
        is recorded already."""
    async def settle(self, key: str, origin: Origin, record: AttemptRecord) -> None:
        """How the attempt ``key`` ended (recorded afresh when ``sent`` never reached this store)."""
    async def withdraw(self, key: str) -> None:
        """Remove the attempt ``key``: given up while ``sent`` recorded it, it never left."""
    async def since(self, since_ms: int, providers: Collection[str] | None = None) -> list[AttemptRow]:
        """The attempts started at or after ``since_ms`` (epoch ms), oldest first (one millisecond in
        the order sent); only those of ``providers`` when given (an empty collection selects none)."""


class Circuits(Protocol):
    """The circuit breakers, one per provider, decided by ``rmcore.breaker`` atomically across
    every process sharing the state (times: epoch seconds)."""

    async def admit(self, provider: str, now: float, cooldown_s: float, probe_timeout_s: float) -> Admission:
        """May a request go to ``provider`` now (``rmcore.breaker.admit``, stored)?"""
    async def record(self, provider: str, outcome: str, now: float, failure_threshold: int) -> CircuitState:
        """An attempt on ``provider`` ended in ``outcome`` (``rmcore.breaker.record``, stored)."""
    async def release_probe(self, provider: str, probe_started_at: float, now: float) -> CircuitState:
        """Hand back a probe that was never sent (``rmcore.breaker.release_probe``, stored)."""
    async def all(self) -> list[CircuitState]:
        """Every stored circuit, by provider name (a provider never recorded is closed)."""
    async def reset(self, providers: Collection[str] | None) -> list[str]:
        """Close the circuits of ``providers`` (every one when None); the names that were stored."""


class Caps(Protocol):
    """Budgets and quotas over time windows, and concurrency slots, shared by every process."""

    async def begin(self, claim: AttemptClaim, now: float) -> Refusal | SlotBusy | None:
        """Take the claim's slot and reserve its charges at once; None when both were had, else
        why not (and nothing is held)."""
    async def end(self, claim: AttemptClaim, used: Sequence[Charge] | None, now: float) -> None:
        """Settle the claim's reservation with ``used`` (``None``: release it, nothing was sent)
        and give its slot back, at once."""
    async def renew(self, slot: Slot, holder: str, now: float) -> bool:
        """Renew (or take) ``holder``'s slot; False when every slot is held by others."""
    async def usage(self, now: float) -> list[CapUsage]:
        """Each cap window's use now: settled plus live reservations."""


class Cache(Protocol):
    """Answers by key, as opaque bytes, with hit and miss counters."""

    async def get(self, key: str, now_ms: int, ttl_ms: int) -> bytes | None:
        """The payload stored under ``key`` if younger than ``ttl_ms``; counts a hit or a miss."""
    async def put(self, key: str, perspective_id: str, payload: bytes, now_ms: int) -> None:
        """Store ``payload`` under ``key`` as of ``now_ms``, replacing an entry of that key."""
    async def stats(self, now_ms: int, ttl_ms: int) -> CacheStats:
        """The cache now."""
    async def clear(self) -> int:
        """Remove every entry and reset the counters; how many entries there were."""
    async def prune(self, now_ms: int, ttl_ms: int) -> int:
        """Remove the entries older than ``ttl_ms``; how many."""


class History(Protocol):
    """Saved analyses, by agent, payloads as opaque bytes."""

    async def add(
        self, agent_id: str, question: str, status: str, overall_confidence: float | None, created_ms: int,
        payload: bytes,
    ) -> str:
        """Save an analysis; its new id."""
    async def resolve(self, reference: str) -> list[str]:
        """``[reference]`` when it is an id; else the ids it is a hex prefix of (at least
        ``HISTORY_ID_MIN_PREFIX`` digits, either case), sorted: several mean it is ambiguous."""
    async def get(self, entry_id: str) -> tuple[HistoryEntry, bytes] | None:
        """The entry and payload ``entry_id`` (an id or unambiguous prefix) names, else None."""
    async def stats(self, agent_id: str | None) -> HistoryStats:
        """Counts per status, and confidence and dates over ``agent_id``'s entries (all when None)."""
    async def delete(self, entry_id: str) -> bool:
        """Delete the entry ``entry_id`` (an id or unambiguous prefix) names; whether one was."""
    async def clear(self, agent_id: str | None, before_ms: int | None = None) -> int:
        """Delete the entries of ``agent_id`` (all when None) saved before ``before_ms``; how many."""
    async def export(self, agent_id: str) -> list[tuple[HistoryEntry, bytes]]:
        """Every entry of ``agent_id`` with its payload, oldest first, in the order saved."""
    async def list(
        self, agent_id: str | None, *, min_confidence: float | None = None, since_ms: int | None = None,
        limit: int | None = None,
    ) -> list[HistoryEntry]:
        """Entries newest first (of every agent when ``agent_id`` is None)."""


class State:
    """One of each concern, opened together by ``open_state`` and closed together.
    ``where`` names the state for messages (a path, or a URL without its password)."""

    def __init__(
        self, *, attempts: Attempts, circuits: Circuits, caps: Caps, cache: Cache, history: History,
        conversations: Conversations, where: str, local_caps: Caps | None = None, closers: Sequence[Any] = (),
    ) -> None:
        self.attempts, self.circuits, self.caps = attempts, circuits, caps
        self.cache, self.history, self.conversations, self.where = cache, history, conversations, where
        self.local_caps = local_caps
        """This host's own caps, counted in while a shared state is unreachable and the policy
        fails open; None when the state is not shared (its caps are local already)."""
        self._closers = list(closers)

    async def aclose(self) -> None:
        """Close every connection the state holds."""
        closers, self._closers = self._closers, []
        for closer in closers:
            await closer.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()
