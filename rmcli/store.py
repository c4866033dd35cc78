"""The state store: every attempt, every provider's circuit breaker, the answer cache, the
analysis history, the budgets and quotas over time windows, and the concurrency slots.

One SQLite database, ``$RECURSIVEMANAGER_HOME/state.db`` in WAL mode, shared safely by ``rmgr``
processes that run one after another or at the same time (DESIGN §5). The rest of the shell
depends only on the ``Store`` protocol; ``rmcli.redis_store.RedisStore`` keeps the same state in
Redis for a fleet of machines, and ``rmcli.state.open_state`` picks one by the environment.

Safety rules this module keeps:

- A file it does not recognise (not SQLite, corrupt, another application's database, a newer
  schema) is never written, overwritten or deleted: it is checked through a read-only connection
  before anything writes, and the ``StoreError`` says how to move it aside.
- Each write is one short ``BEGIN IMMEDIATE`` transaction, so a batch of attempts is stored
  whole or not at all. When another process holds the lock past the busy timeout, the write
  is retried a few times after short pauses.
- Nothing is written outside the home folder; the folder is created ``0700`` and the database
  ``0600`` (SQLite gives its ``-wal`` and ``-shm`` files the database's mode). API keys are
  never stored: attempts carry provider names, models, outcomes and key-free messages only.

Schema changes are data: ``_MIGRATIONS[i]`` takes the schema from version ``i`` to ``i + 1``,
and ``SCHEMA_VERSION`` is their count. To add a table, append a migration; never edit one that
has shipped.

The answer cache and the history hold payloads as opaque bytes (the caller's JSON): the store
keys, dates, counts and filters them, and never looks inside.
"""

from __future__ import annotations

import abc
import contextlib
import math
import os
import sqlite3
import stat
import time
import uuid
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from types import TracebackType
from typing import Final, Protocol, Self, TypeVar

import msgspec

from rmcore.attempts import AttemptRecord
from rmcore.base import Base
from rmcore.breaker import Admission, CircuitState, admit, is_breaking, record, release_probe
from rmcore.quota import CapUsage, Charge, Refusal, refuse
from rmcore.usage import AttemptRow

__all__ = [
    "APPLICATION_ID",
    "DB_FILENAME",
    "HISTORY_ID_MIN_PREFIX",
    "PRUNE_AFTER_S",
    "SCHEMA_VERSION",
    "AttemptClaim",
    "CacheStats",
    "HistoryEntry",
    "HistoryStats",
    "Slot",
    "SlotBusy",
    "SqliteStore",
    "Store",
    "StoreError",
    "StoreUnavailable",
]

APPLICATION_ID: Final = 0x524D_4752
"""``PRAGMA application_id`` of our databases: ASCII "RMGR". Tells our file from anyone else's."""

DB_FILENAME: Final = "state.db"
"""The database's file name inside the home folder."""

_MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    # 0 -> 1: attempts, for usage statistics.
    (
        """
        CREATE TABLE attempts (
            id INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL,
            command TEXT NOT NULL,
            provider TEXT NOT NULL,
            model TEXT NOT NULL,
            outcome TEXT NOT NULL,
            status INTEGER,
            latency_ms REAL NOT NULL,
            started_at_ms INTEGER NOT NULL,
            input_tokens INTEGER NOT NULL,
            output_tokens INTEGER NOT NULL,
            usage_estimated INTEGER NOT NULL,
            cost_usd REAL NOT NULL,
            message TEXT
        )
        """,
        "CREATE INDEX attempts_started_at ON attempts (started_at_ms)",
    ),
    # 1 -> 2: circuits, the per-provider circuit breakers every run shares (times: epoch seconds).
    (
        """
        CREATE TABLE circuits (
            provider TEXT PRIMARY KEY,
            state TEXT NOT NULL CHECK (state IN ('closed', 'open', 'half_open')),
            consecutive_failures INTEGER NOT NULL CHECK (consecutive_failures >= 0),
            opened_at REAL,
            probe_started_at REAL,
            updated_at REAL NOT NULL
        )
        """,
    ),
    # 2 -> 3: the answer cache with its hit/miss counters (one row, id 1), and the analysis
    # history (times: epoch milliseconds). ``seq`` orders history entries of the same millisecond.
    (
        """
        CREATE TABLE cache (
            key TEXT PRIMARY KEY,
            perspective_id TEXT NOT NULL,
            payload BLOB NOT NULL,
            created_ms INTEGER NOT NULL
        )
        """,
        "CREATE INDEX cache_created ON cache (created_ms)",
        """
        CREATE TABLE cache_counters (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            hits INTEGER NOT NULL CHECK (hits >= 0),
            misses INTEGER NOT NULL CHECK (misses >= 0)
        )
        """,
        """
        CREATE TABLE history (
            seq INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            agent_id TEXT NOT NULL,
            question TEXT NOT NULL,
            status TEXT NOT NULL,
            overall_confidence REAL CHECK (overall_confidence BETWEEN 0 AND 1),
            created_ms INTEGER NOT NULL,
            payload BLOB NOT NULL
        )
        """,
        "CREATE INDEX history_agent_created ON history (agent_id, created_ms)",
        "CREATE INDEX history_created ON history (created_ms)",
    ),
    # 3 -> 4: budgets and quotas, and concurrency slots (times: epoch seconds). ``cap_windows``
    # holds each cap window's settled use with the cap's resource, limit and reset time as last
    # charged; ``reservations`` the live reservations, one row per charge, with their lease;
    # ``slots`` the holders of each named counting semaphore, with their lease.
    (
        """
        CREATE TABLE cap_windows (
            cap_key TEXT NOT NULL,
            window_name TEXT NOT NULL,
            resource TEXT NOT NULL,
            cap_limit REAL NOT NULL,
            resets_at REAL NOT NULL,
            settled REAL NOT NULL,
            PRIMARY KEY (cap_key, window_name)
        ) WITHOUT ROWID
        """,
        "CREATE INDEX cap_windows_resets_at ON cap_windows (resets_at)",
        """
        CREATE TABLE reservations (
            reservation_id TEXT NOT NULL,
            cap_key TEXT NOT NULL,
            window_name TEXT NOT NULL,
            amount REAL NOT NULL,
            expires_at REAL NOT NULL,
            PRIMARY KEY (reservation_id, cap_key, window_name)
        ) WITHOUT ROWID
        """,
        "CREATE INDEX reservations_window ON reservations (cap_key, window_name)",
        "CREATE INDEX reservations_expires_at ON reservations (expires_at)",
        """
        CREATE TABLE slots (
            name TEXT NOT NULL,
            holder TEXT NOT NULL,
            expires_at REAL NOT NULL,
            PRIMARY KEY (name, holder)
        ) WITHOUT ROWID
        """,
    ),
)

SCHEMA_VERSION: Final = len(_MIGRATIONS)
"""``PRAGMA user_version`` of the schema this code writes."""

_DEFAULT_BUSY_TIMEOUT_S: Final = 10.0
_RETRY_PAUSES_S: Final = (0.05, 0.1, 0.2, 0.4)
_MAX_MESSAGE_CHARS: Final = 2000
_SQLITE_HEADER: Final = b"SQLite format 3\x00"

HISTORY_ID_MIN_PREFIX: Final = 4
"""The fewest leading characters of a history id that may stand for it (like a short git hash)."""

PRUNE_AFTER_S: Final = 86_400.0
"""How long after a cap window ends its settled use is kept before ``settle`` prunes it: a day,
so that hosts whose clocks run a little behind still count the whole window."""

_HISTORY_ID_CHARS: Final = 12
_HEX_DIGITS: Final = frozenset("0123456789abcdef")
_NEW_ID_TRIES: Final = 8

# Primary SQLite result codes (the low byte of an extended code).
_SQLITE_PERM, _SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY = 3, 5, 6, 8
_SQLITE_IOERR, _SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_CANTOPEN = 10, 11, 13, 14
_SQLITE_AUTH, _SQLITE_NOTADB = 23, 26

_T = TypeVar("_T")


class StoreError(Exception):
    """The state store cannot be used. The message says what is wrong and what to do about it;
    it never contains an API key or a password. ``path`` is the database file (or the folder)
    concerned, None for a store that is not a file (Redis)."""

    def __init__(self, path: Path | None, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


class StoreUnavailable(StoreError):
    """The shared state cannot be reached: the server refuses connections, is down, or did not
    answer within the store's short timeouts. The call's answer is unknown (a write cut off on
    the way may or may not have happened), so a caller that must not spend unchecked (a budget
    that fails closed) starts no paid request.

    ``url`` is the state's URL without any password; ``reason`` says what happened. Only stores
    on a network raise it; ``SqliteStore`` never does.
    """

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(None, f"the shared state ({url}) is unreachable: {reason}")
        self.url = url
        self.reason = reason


class CacheStats(Base, frozen=True):
    """The answer cache at one moment.

    ``entries`` counts every stored answer, ``fresh_entries`` those young enough for the TTL
    the stats were asked with. ``hits`` and ``misses`` count the lookups of every process since
    the cache was last cleared; ``hit_rate`` is ``hits / (hits + misses)``, None before the
    first lookup. ``oldest_ms`` and ``newest_ms`` are when the oldest and newest stored answers
    were stored (epoch ms; None when the cache is empty); ``bytes`` is their payloads' total size.
    """

    entries: int
    fresh_entries: int
    hits: int
    misses: int
    hit_rate: float | None
    oldest_ms: int | None
    newest_ms: int | None
    bytes: int


class HistoryEntry(Base, frozen=True):
    """One saved analysis, without its payload: what a listing shows.

    ``id`` is 12 lowercase hex digits; ``status`` is the analysis's (``"ok"``, ``"partial"``,
    ``"failed"``); ``overall_confidence`` is None when it was unknown; ``created_ms`` is epoch ms.
    """

    id: str
    agent_id: str
    question: str
    status: str
    overall_confidence: float | None
    created_ms: int


class HistoryStats(Base, frozen=True):
    """A summary of saved analyses (of one agent or all).

    ``by_status`` counts entries per status, by status name. ``with_confidence`` counts the
    entries whose overall confidence is known; the average, minimum and maximum are over those
    only (None when there are none). ``first_ms`` and ``last_ms`` are the oldest and newest
    entries' times (None when there are no entries).
    """

    total: int
    by_status: dict[str, int]
    with_confidence: int
    average_confidence: float | None
    min_confidence: float | None
    max_confidence: float | None
    first_ms: int | None
    last_ms: int | None


class Slot(Base, frozen=True):
    """One of the ``limit`` slots of the counting semaphore ``name`` (a provider's
    ``max_concurrency`` across processes), held for ``lease_s`` seconds unless renewed."""

    name: str
    limit: int
    lease_s: float

    def __post_init__(self) -> None:
        """Refuse a ``limit`` below 1 or a lease that is not a positive number of seconds
        (``ValueError``)."""
        _check_slot(self.limit, self.lease_s)


class AttemptClaim(Base, frozen=True):
    """What one attempt holds while it runs, under ``holder`` (also its reservation's id): a
    ``slot`` (none when None) and a reservation of ``charges`` (its worst case; none when empty)
    whose lease ends ``lease_s`` after it is made. ``Store.begin_attempt`` takes both at once,
    ``Store.end_attempt`` gives both back at once: one step each, where separate calls would
    cost a round trip each to a store on the network."""

    holder: str
    lease_s: float
    slot: Slot | None = None
    charges: tuple[Charge, ...] = ()

    def __post_init__(self) -> None:
        """Refuse what no store can hold (``ValueError``): an amount that is not finite, a cap
        window charged twice, a lease that is not a positive number of seconds."""
        _check_charges(self.charges)
        _check_lease(self.lease_s)

    @property
    def empty(self) -> bool:
        """Nothing to take: no slot and no charges."""
        return self.slot is None and not self.charges


class SlotBusy(Base, frozen=True):
    """``Store.begin_attempt``'s answer when every slot was held: nothing was taken or reserved."""


class Store(Protocol):
    """What the shell needs from the state store: ``SqliteStore`` on one machine, ``RedisStore``
    (``rmcli.redis_store``) for a fleet. A store on a network raises ``StoreUnavailable`` from any
    method when it cannot be reached."""

    def record_attempts(self, run_id: str, command: str, attempts: Sequence[AttemptRecord]) -> None:
        """Store the attempts of one run of ``command``, all of them or (on error) none."""
        ...

    def attempts_since(self, since_ms: int, providers: Collection[str] | None = None) -> list[AttemptRow]:
        """Attempts started at or after ``since_ms`` (epoch ms), oldest first; only those of
        ``providers`` when it is given."""
        ...

    def admit_circuits(
        self, providers: Sequence[str], now: float, cooldown_s: float, probe_timeout_s: float
    ) -> dict[str, Admission]:
        """Ask each provider's circuit whether a request may be sent at ``now`` (epoch seconds),
        storing what the asking changed; atomically, so that two callers never both get the
        half-open probe. One entry per distinct provider."""
        ...

    def record_circuit(self, provider: str, outcome: str, now: float, failure_threshold: int) -> CircuitState:
        """Apply the outcome (``"ok"`` or an error kind) of a request to ``provider`` that ended
        at ``now`` to its circuit, atomically, and return the circuit's new state."""
        ...

    def release_probe(self, provider: str, probe_started_at: float, now: float) -> CircuitState:
        """Hand back the half-open probe admitted at ``probe_started_at`` that was never sent
        (``rmcore.breaker.release_probe``), atomically; the circuit's new state."""
        ...

    def circuits(self) -> list[CircuitState]:
        """Every stored circuit, by provider name (a provider never recorded is closed)."""
        ...

    def cache_get(self, key: str, now_ms: int, ttl_ms: int) -> bytes | None:
        """The payload cached under ``key`` when it was stored at most ``ttl_ms`` before
        ``now_ms`` (a hit); else None (a miss, and an expired entry is removed). Counts the
        hit or miss for every process to see."""
        ...

    def cache_put(self, key: str, perspective_id: str, payload: bytes, now_ms: int) -> None:
        """Cache ``payload`` under ``key`` as stored at ``now_ms``, replacing any entry of that key."""
        ...

    def cache_stats(self, now_ms: int, ttl_ms: int) -> CacheStats:
        """Entries (fresh ones judged by ``ttl_ms`` at ``now_ms``), hits, misses, ages and size."""
        ...

    def cache_clear(self) -> int:
        """Remove every entry and reset the hit and miss counters; the number of entries removed."""
        ...

    def cache_prune(self, now_ms: int, ttl_ms: int) -> int:
        """Remove the entries expired at ``now_ms`` under ``ttl_ms``; the number removed."""
        ...

    def history_add(
        self,
        agent_id: str,
        question: str,
        status: str,
        overall_confidence: float | None,
        created_ms: int,
        payload: bytes,
    ) -> str:
        """Save one analysis of ``agent_id``; its new id (12 lowercase hex digits)."""
        ...

    def history_list(
        self,
        agent_id: str | None,
        *,
        min_confidence: float | None = None,
        since_ms: int | None = None,
        before_ms: int | None = None,
        limit: int | None = None,
    ) -> list[HistoryEntry]:
        """Saved analyses of ``agent_id`` (of every agent when None), newest first, filtered."""
        ...

    def history_resolve(self, reference: str) -> list[str]:
        """The full ids that ``reference`` (an id or a prefix of at least
        ``HISTORY_ID_MIN_PREFIX`` hex digits) names: none, one, or several when ambiguous."""
        ...

    def history_get(self, entry_id: str) -> tuple[HistoryEntry, bytes] | None:
        """The entry and payload ``entry_id`` (an id or unique prefix) names; else None."""
        ...

    def history_stats(self, agent_id: str | None) -> HistoryStats:
        """Counts, confidence and dates of the analyses of ``agent_id`` (every agent when None)."""
        ...

    def history_delete(self, entry_id: str) -> bool:
        """Delete the entry ``entry_id`` (an id or unique prefix) names; whether one was deleted."""
        ...

    def history_clear(self, agent_id: str | None, before_ms: int | None = None) -> int:
        """Delete the analyses of ``agent_id`` (every agent when None) saved before ``before_ms``
        (all when None); the number deleted."""
        ...

    def history_export(self, agent_id: str) -> list[tuple[HistoryEntry, bytes]]:
        """Every analysis of ``agent_id`` with its payload, oldest first."""
        ...

    def reserve(
        self, reservation_id: str, charges: Sequence[Charge], now: float, lease_s: float
    ) -> Refusal | None:
        """Reserve ``charges`` (a request's worst case) under ``reservation_id`` at ``now`` (epoch
        seconds), atomically: reclaim the leases expired at ``now``, read what each charged cap
        window holds (settled use plus live reservations), and let ``rmcore.quota.refuse``
        decide. None means the reservation is recorded, its lease ending at ``now + lease_s``; a
        ``Refusal`` means nothing was recorded. No charges: None, and the store is not touched.
        A live reservation of the same id is replaced (it does not count against itself), so a
        reserve whose answer was lost can be asked again."""
        ...

    def settle(self, reservation_id: str, charges: Sequence[Charge], now: float) -> None:
        """Drop the reservation and add ``charges`` (the real use) to the settled use of their
        cap windows. The amounts are added even when the reservation is gone (its lease expired):
        the money was spent."""
        ...

    def release(self, reservation_id: str) -> None:
        """Drop the reservation, settling nothing: its request was never sent."""
        ...

    def cap_usage(self, now: float) -> list[CapUsage]:
        """Every cap window still current at ``now`` (``resets_at > now``) that a reservation or
        settlement has charged, by cap key and window: settled use and live reservations."""
        ...

    def acquire_slot(self, name: str, limit: int, holder: str, now: float, lease_s: float) -> bool:
        """Take one of the ``limit`` slots of the counting semaphore ``name`` for ``holder`` at
        ``now``, atomically; False when all are held. Holders whose lease ended by ``now`` are
        reclaimed first; a holder that asks again keeps its slot with a new lease."""
        ...

    def release_slot(self, name: str, holder: str) -> None:
        """Give back ``holder``'s slot of ``name`` (nothing when it holds none)."""
        ...

    def begin_attempt(self, claim: AttemptClaim, now: float) -> Refusal | SlotBusy | None:
        """Take ``claim``'s slot (as ``acquire_slot``) and, only when it was taken (or the claim
        names none), reserve its charges (as ``reserve``, refused only as ``rmcore.quota.refuse``
        says), atomically, at ``now`` (epoch seconds). None: both are held. ``SlotBusy``: every
        slot was held, and nothing was reserved. A ``Refusal``: nothing was reserved, and the
        slot just taken is given back. An empty claim is None without touching the store."""
        ...

    def end_attempt(self, claim: AttemptClaim, used: Sequence[Charge] | None, now: float) -> None:
        """Settle ``claim``'s reservation with ``used`` (the real use, as ``settle``), or release
        it when ``used`` is None (the request was never sent), and give its slot back, atomically."""
        ...

    def close(self) -> None:
        """Release the store. Closing twice is harmless."""
        ...

    def __enter__(self) -> Self:
        """The store itself; ``close`` on leaving the ``with`` block."""
        ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Close the store."""
        ...


_INSERT_ATTEMPT: Final = """
    INSERT INTO attempts (
        run_id, command, provider, model, outcome, status, latency_ms, started_at_ms,
        input_tokens, output_tokens, usage_estimated, cost_usd, message
    ) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""

_SELECT_ATTEMPTS: Final = """
    SELECT provider, model, outcome, status, latency_ms, started_at_ms,
           input_tokens, output_tokens, cost_usd, run_id
    FROM attempts WHERE started_at_ms >= ?
"""

_CIRCUIT_COLUMNS: Final = "provider, state, consecutive_failures, opened_at, probe_started_at"

_UPSERT_CIRCUIT: Final = f"""
    INSERT OR REPLACE INTO circuits ({_CIRCUIT_COLUMNS}, updated_at) VALUES (?, ?, ?, ?, ?, ?)
"""

_COUNT_LOOKUP: Final = """
    INSERT INTO cache_counters (id, hits, misses) VALUES (1, ?, ?)
    ON CONFLICT (id) DO UPDATE SET hits = hits + excluded.hits, misses = misses + excluded.misses
"""

_CACHE_STATS: Final = """
    SELECT count(*), coalesce(sum(created_ms >= ?), 0), min(created_ms), max(created_ms),
           coalesce(sum(length(payload)), 0),
           coalesce((SELECT hits FROM cache_counters WHERE id = 1), 0),
           coalesce((SELECT misses FROM cache_counters WHERE id = 1), 0)
    FROM cache
"""

_HISTORY_COLUMNS: Final = "id, agent_id, question, status, overall_confidence, created_ms"

_INSERT_HISTORY: Final = f"""
    INSERT INTO history ({_HISTORY_COLUMNS}, payload) VALUES (?, ?, ?, ?, ?, ?, ?)
"""

_HISTORY_STATS: Final = """
    SELECT count(*), count(overall_confidence), avg(overall_confidence),
           min(overall_confidence), max(overall_confidence), min(created_ms), max(created_ms)
    FROM history
"""

_WINDOW_HELD: Final = """
    SELECT coalesce((SELECT settled FROM cap_windows WHERE cap_key = ?1 AND window_name = ?2), 0.0)
         + coalesce((SELECT sum(amount) FROM reservations
                     WHERE cap_key = ?1 AND window_name = ?2 AND reservation_id != ?3), 0.0)
"""

_INSERT_RESERVATION: Final = """
    INSERT INTO reservations (reservation_id, cap_key, window_name, amount, expires_at) VALUES (?, ?, ?, ?, ?)
"""

# Charging a window adds to its settled use (0 for a reservation) and keeps the cap's resource,
# limit and reset time as the latest charge gives them.
_CHARGE_WINDOW: Final = """
    INSERT INTO cap_windows (cap_key, window_name, resource, cap_limit, resets_at, settled)
    VALUES (?, ?, ?, ?, ?, ?)
    ON CONFLICT (cap_key, window_name) DO UPDATE SET
        resource = excluded.resource,
        cap_limit = excluded.cap_limit,
        resets_at = excluded.resets_at,
        settled = settled + excluded.settled
"""

_CAP_USAGE: Final = """
    SELECT w.cap_key, w.resource, w.window_name, w.resets_at, w.cap_limit, w.settled,
           coalesce((SELECT sum(r.amount) FROM reservations r
                     WHERE r.cap_key = w.cap_key AND r.window_name = w.window_name
                       AND r.expires_at > ?1), 0.0)
    FROM cap_windows w WHERE w.resets_at > ?1 ORDER BY w.cap_key, w.window_name
"""


class ClosingStore(abc.ABC):
    """What every store shares: used in a ``with`` block, it is closed at the end."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the store's connections."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class SqliteStore(ClosingStore):
    """The ``Store`` in one SQLite file. Open it with ``SqliteStore.open(home)``; use it as a
    context manager or call ``close()``."""

    def __init__(self, path: Path, connection: sqlite3.Connection) -> None:
        """Wrap an already opened and migrated connection; use ``open`` instead."""
        self.path = path
        self._conn = connection
        # Every stored circuit as last read, and the database's data_version then (which
        # changes when another connection commits): asked before every request and told after
        # it, the breakers are read from the file only when someone else may have changed them.
        self._circuits_seen: dict[object, tuple[object, ...]] = {}
        self._circuits_version: int | None = None

    @classmethod
    def open(cls, home: Path, *, busy_timeout_s: float = _DEFAULT_BUSY_TIMEOUT_S) -> SqliteStore:
        """Open (creating when missing) ``home/state.db``.

        Creates ``home`` and its parents when missing (``home`` itself with mode 0700) and the
        database with mode 0600. Raises ``StoreError`` when the folder cannot be created or
        written, or when the file is not a recursive-manager database of this or an older
        schema; such a file is left exactly as it was. ``busy_timeout_s`` is how long one
        statement waits for another process's lock before the write is retried.
        """
        home = Path(home)
        path = home / DB_FILENAME
        _ensure_home(home)
        if _ensure_file(path):
            _check_existing(path, busy_timeout_s)
        try:
            connection = sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=None)
        except sqlite3.Error as exc:
            raise _store_error(path, exc) from None
        store = cls(path, connection)
        try:
            store._configure(busy_timeout_s)
            store._write(store._migrate)
        except BaseException:
            connection.close()
            raise
        return store

    def record_attempts(self, run_id: str, command: str, attempts: Sequence[AttemptRecord]) -> None:
        """Store the attempts of one run in one transaction: all of them or, on error, none."""
        rows = [
            (
                run_id,
                command,
                record.provider,
                record.model,
                record.outcome,
                record.status,
                float(record.latency_ms),
                int(record.started_at_ms),
                record.usage.input_tokens,
                record.usage.output_tokens,
                int(record.usage.estimated),
                float(record.cost_usd),
                None if record.message is None else record.message[:_MAX_MESSAGE_CHARS],
            )
            for record in attempts
        ]
        if len(rows) == 1:  # one statement is a transaction of its own: the usual, cheaper case
            self._with_retries(lambda conn: conn.execute(_INSERT_ATTEMPT, rows[0]))
        elif rows:
            self._write(lambda conn: conn.executemany(_INSERT_ATTEMPT, rows))

    def attempts_since(self, since_ms: int, providers: Collection[str] | None = None) -> list[AttemptRow]:
        """Attempts started at or after ``since_ms`` (epoch ms), oldest first; only those of
        ``providers`` when given (an empty collection selects nothing)."""
        sql = _SELECT_ATTEMPTS
        params: list[str | int] = [since_ms]
        if providers is not None:
            names = sorted(set(providers))
            if not names:
                return []
            sql += f" AND provider IN ({', '.join('?' * len(names))})"
            params.extend(names)
        sql += " ORDER BY started_at_ms, id"
        fetched = self._with_retries(lambda conn: conn.execute(sql, params).fetchall())
        return [
            AttemptRow(
                provider=provider,
                model=model,
                outcome=outcome,
                status=status,
                latency_ms=float(latency_ms),
                started_at_ms=started_at_ms,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cost_usd=float(cost_usd),
                run_id=run_id,
            )
            for (
                provider,
                model,
                outcome,
                status,
                latency_ms,
                started_at_ms,
                input_tokens,
                output_tokens,
                cost_usd,
                run_id,
            ) in fetched
        ]

    def admit_circuits(
        self, providers: Sequence[str], now: float, cooldown_s: float, probe_timeout_s: float
    ) -> dict[str, Admission]:
        """``rmcore.breaker.admit`` for each distinct provider of ``providers`` at ``now`` (epoch
        seconds), keyed by provider in the order given.

        When the decisions change no circuit (the usual case: all closed) one read is all it
        takes. Otherwise the circuits are read again, decided and the changed ones written back
        in one ``BEGIN IMMEDIATE`` transaction: while it runs no other process can
        read-then-write them, so of any number of processes asking at once about an open,
        cooled-down circuit exactly one gets the probe. A provider without a stored circuit is
        closed (and nothing is written).
        """
        names = list(dict.fromkeys(providers))
        if not names:
            return {}
        seen = self._with_retries(lambda conn: self._circuits_now(conn, names))
        admissions: dict[str, Admission] = {}
        for name in names:
            current = seen.get(name, CircuitState(provider=name))
            admissions[name] = admit(current, now, cooldown_s=cooldown_s, probe_timeout_s=probe_timeout_s)
            if admissions[name].state != current:
                break
        else:
            return admissions

        def decide(conn: sqlite3.Connection) -> None:
            # The transaction may be retried after a lock timeout: decide afresh each time.
            admissions.clear()
            stored = self._read_circuits(conn, names)
            for name in names:
                current = stored.get(name, CircuitState(provider=name))
                admission = admit(current, now, cooldown_s=cooldown_s, probe_timeout_s=probe_timeout_s)
                if admission.state != current:
                    _write_circuit(conn, admission.state, now)
                    self._circuits_version = None
                admissions[name] = admission

        self._write(decide)
        return dict(admissions)

    def record_circuit(self, provider: str, outcome: str, now: float, failure_threshold: int) -> CircuitState:
        """``rmcore.breaker.record`` on ``provider``'s stored circuit: read, update and write back
        in one ``BEGIN IMMEDIATE`` transaction, so that outcomes recorded by processes at the
        same time are all counted (an outcome that changes nothing, such as a success on a
        closed circuit, takes one read). Returns the new state. Raises ``ValueError`` (and
        stores nothing) when ``outcome`` is neither ``"ok"`` nor an error kind."""
        is_breaking(outcome)  # an unknown outcome raises here, before the lock is taken
        return self._change_circuit(
            provider, lambda current: record(current, outcome, now, failure_threshold=failure_threshold), now
        )

    def release_probe(self, provider: str, probe_started_at: float, now: float) -> CircuitState:
        """``rmcore.breaker.release_probe`` on ``provider``'s stored circuit, as ``record_circuit``
        applies an outcome; returns the new state."""
        return self._change_circuit(provider, lambda current: release_probe(current, probe_started_at), now)

    def _change_circuit(
        self, provider: str, change: Callable[[CircuitState], CircuitState], now: float
    ) -> CircuitState:
        """Apply ``change`` to ``provider``'s stored circuit in one ``BEGIN IMMEDIATE``
        transaction (one read when it changes nothing); the new state."""
        seen = self._with_retries(lambda conn: self._circuits_now(conn, [provider]))
        current = seen.get(provider, CircuitState(provider=provider))
        if change(current) == current:
            return current
        updated: list[CircuitState] = []

        def apply(conn: sqlite3.Connection) -> None:
            updated.clear()
            current = self._read_circuits(conn, [provider]).get(provider, CircuitState(provider=provider))
            new = change(current)
            if new != current:
                _write_circuit(conn, new, now)
                self._circuits_version = None
            updated.append(new)

        self._write(apply)
        return updated[0]

    def circuits(self) -> list[CircuitState]:
        """Every stored circuit, ordered by provider name. A provider that has never recorded a
        failure may be missing: its circuit is closed."""
        return self._with_retries(
            lambda conn: self._decode_circuits(
                conn.execute(f"SELECT {_CIRCUIT_COLUMNS} FROM circuits ORDER BY provider").fetchall()
            )
        )

    def cache_get(self, key: str, now_ms: int, ttl_ms: int) -> bytes | None:
        """The payload cached under ``key`` when it is fresh: stored at or after ``now_ms -
        ttl_ms`` (an entry exactly ``ttl_ms`` old is still fresh; one stored "after" ``now_ms``,
        by a clock running ahead, is fresh too). Else None.

        Counts a hit or a miss in the same ``BEGIN IMMEDIATE`` transaction as the lookup, so
        the counts of processes looking up at once add up. A lookup that finds an expired entry
        is a miss and removes that entry. Raises ``ValueError`` when ``ttl_ms`` is negative."""
        _check_ttl(ttl_ms)
        found: list[bytes | None] = []

        def look_up(conn: sqlite3.Connection) -> None:
            found.clear()
            row = conn.execute("SELECT payload, created_ms FROM cache WHERE key = ?", (key,)).fetchone()
            payload = None
            if row is not None:
                if row[1] >= now_ms - ttl_ms:
                    payload = self._payload(row[0], f"the cached answer {key!r}")
                else:
                    conn.execute("DELETE FROM cache WHERE key = ?", (key,))
            conn.execute(_COUNT_LOOKUP, (int(payload is not None), int(payload is None)))
            found.append(payload)

        self._write(look_up)
        return found[0]

    def cache_put(self, key: str, perspective_id: str, payload: bytes, now_ms: int) -> None:
        """Cache ``payload`` under ``key`` (the caller's hash of what makes answers equal) as
        stored at ``now_ms``; an entry of the same key is replaced, its age starting afresh."""
        row = (key, perspective_id, bytes(payload), int(now_ms))
        self._write(
            lambda conn: conn.execute(
                "INSERT OR REPLACE INTO cache (key, perspective_id, payload, created_ms) VALUES (?, ?, ?, ?)",
                row,
            )
        )

    def cache_stats(self, now_ms: int, ttl_ms: int) -> CacheStats:
        """The cache at ``now_ms``, its fresh entries judged by ``ttl_ms`` as ``cache_get`` judges
        them. Read in one statement (one consistent snapshot); nothing is removed or counted.
        Raises ``ValueError`` when ``ttl_ms`` is negative."""
        _check_ttl(ttl_ms)
        entries, fresh, oldest, newest, size, hits, misses = self._with_retries(
            lambda conn: conn.execute(_CACHE_STATS, (now_ms - ttl_ms,)).fetchone()
        )
        lookups = hits + misses
        return CacheStats(
            entries=entries,
            fresh_entries=fresh,
            hits=hits,
            misses=misses,
            hit_rate=hits / lookups if lookups else None,
            oldest_ms=oldest,
            newest_ms=newest,
            bytes=size,
        )

    def cache_clear(self) -> int:
        """Remove every cached answer and reset the hit and miss counters to zero (statistics
        start afresh with the cache), in one transaction; the number of entries removed."""
        removed: list[int] = []

        def clear(conn: sqlite3.Connection) -> None:
            removed.clear()
            removed.append(conn.execute("DELETE FROM cache").rowcount)
            conn.execute("DELETE FROM cache_counters")

        self._write(clear)
        return removed[0]

    def cache_prune(self, now_ms: int, ttl_ms: int) -> int:
        """Remove the entries ``cache_get`` would no longer return (stored before ``now_ms -
        ttl_ms``), leaving the counters alone; the number removed. Raises ``ValueError`` when
        ``ttl_ms`` is negative."""
        _check_ttl(ttl_ms)
        removed: list[int] = []

        def prune(conn: sqlite3.Connection) -> None:
            removed.clear()
            removed.append(
                conn.execute("DELETE FROM cache WHERE created_ms < ?", (now_ms - ttl_ms,)).rowcount
            )

        self._write(prune)
        return removed[0]

    def history_add(
        self,
        agent_id: str,
        question: str,
        status: str,
        overall_confidence: float | None,
        created_ms: int,
        payload: bytes,
    ) -> str:
        """Save one analysis; its new id, 12 lowercase hex digits, unique in this database (an
        id already taken is drawn again inside the same transaction). Raises ``ValueError``,
        storing nothing, when ``overall_confidence`` is neither None nor within 0.0 to 1.0."""
        if overall_confidence is not None and not 0.0 <= overall_confidence <= 1.0:
            raise ValueError(
                f"overall confidence must be within 0.0 to 1.0 or None, not {overall_confidence!r}"
            )
        confidence = None if overall_confidence is None else float(overall_confidence)
        data = bytes(payload)
        added: list[str] = []

        def insert(conn: sqlite3.Connection) -> None:
            added.clear()
            for _ in range(_NEW_ID_TRIES):
                entry_id = _new_history_id()
                if conn.execute("SELECT 1 FROM history WHERE id = ?", (entry_id,)).fetchone() is None:
                    conn.execute(
                        _INSERT_HISTORY,
                        (entry_id, agent_id, question, status, confidence, int(created_ms), data),
                    )
                    added.append(entry_id)
                    return
            raise StoreError(self.path, f"no free history id in {_NEW_ID_TRIES} random draws; run again.")

        self._write(insert)
        return added[0]

    def history_list(
        self,
        agent_id: str | None,
        *,
        min_confidence: float | None = None,
        since_ms: int | None = None,
        before_ms: int | None = None,
        limit: int | None = None,
    ) -> list[HistoryEntry]:
        """Saved analyses, newest first (entries of the same millisecond: the last saved first).

        ``agent_id`` None lists every agent's. ``min_confidence`` keeps entries whose overall
        confidence is at least that (an unknown confidence never qualifies); ``since_ms`` those
        saved at or after it; ``before_ms`` those saved strictly before it; ``limit`` keeps the
        newest that many. Raises ``ValueError`` when ``limit`` is negative."""
        if limit is not None and limit < 0:
            raise ValueError(f"limit must not be negative, not {limit}")
        where, params = _history_filter(agent_id, before_ms)
        if min_confidence is not None:
            where.append("overall_confidence >= ?")
            params.append(float(min_confidence))
        if since_ms is not None:
            where.append("created_ms >= ?")
            params.append(int(since_ms))
        sql = f"SELECT {_HISTORY_COLUMNS} FROM history{_where(where)} ORDER BY created_ms DESC, seq DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        rows = self._with_retries(lambda conn: conn.execute(sql, params).fetchall())
        return [self._history_entry(row) for row in rows]

    def history_resolve(self, reference: str) -> list[str]:
        """The full ids ``reference`` names, sorted: ``[reference]`` when it is an id; else the
        ids starting with it when it is at least ``HISTORY_ID_MIN_PREFIX`` hex digits (either
        case); else none. Several ids mean the prefix is ambiguous: a caller shows them and asks
        for more digits. ``history_get`` and ``history_delete`` resolve the same way."""
        return self._with_retries(lambda conn: _resolve(conn, reference))

    def history_get(self, entry_id: str) -> tuple[HistoryEntry, bytes] | None:
        """The entry and payload ``entry_id`` names (an id or an unambiguous prefix, see
        ``history_resolve``); None when it names no entry or several."""

        def fetch(conn: sqlite3.Connection) -> tuple[object, ...] | None:
            ids = _resolve(conn, entry_id)
            if len(ids) != 1:
                return None
            row: tuple[object, ...] | None = conn.execute(
                f"SELECT {_HISTORY_COLUMNS}, payload FROM history WHERE id = ?", ids
            ).fetchone()
            return row

        row = self._read(fetch)
        if row is None:
            return None
        return self._history_entry(row[:-1]), self._payload(row[-1], f"history entry {row[0]!r}")

    def history_stats(self, agent_id: str | None) -> HistoryStats:
        """Counts, confidence and dates of the analyses of ``agent_id`` (every agent's when
        None), read in one snapshot."""
        where, params = _history_filter(agent_id, None)
        condition = _where(where)

        def read(conn: sqlite3.Connection) -> tuple[tuple[object, ...], dict[object, object]]:
            summary = conn.execute(_HISTORY_STATS + condition, params).fetchone()
            statuses = conn.execute(
                f"SELECT status, count(*) FROM history{condition} GROUP BY status ORDER BY status", params
            ).fetchall()
            return summary, dict(statuses)

        summary, statuses = self._read(read)
        total, known, average, lowest, highest, first, last = summary
        try:
            return msgspec.convert(
                {
                    "total": total,
                    "by_status": statuses,
                    "with_confidence": known,
                    "average_confidence": average,
                    "min_confidence": lowest,
                    "max_confidence": highest,
                    "first_ms": first,
                    "last_ms": last,
                },
                HistoryStats,
            )
        except msgspec.ValidationError as exc:
            raise _corrupt_error(self.path, f"the history is impossible: {exc}") from None

    def history_delete(self, entry_id: str) -> bool:
        """Delete the entry ``entry_id`` names (an id or an unambiguous prefix, see
        ``history_resolve``); False, deleting nothing, when it names no entry or several."""
        deleted: list[bool] = []

        def delete(conn: sqlite3.Connection) -> None:
            deleted.clear()
            ids = _resolve(conn, entry_id)
            deleted.append(
                len(ids) == 1 and conn.execute("DELETE FROM history WHERE id = ?", ids).rowcount == 1
            )

        self._write(delete)
        return deleted[0]

    def history_clear(self, agent_id: str | None, before_ms: int | None = None) -> int:
        """Delete the analyses of ``agent_id`` (every agent's when None) saved strictly before
        ``before_ms`` (all of them when None), in one transaction; the number deleted."""
        where, params = _history_filter(agent_id, before_ms)
        deleted: list[int] = []

        def clear(conn: sqlite3.Connection) -> None:
            deleted.clear()
            deleted.append(conn.execute(f"DELETE FROM history{_where(where)}", params).rowcount)

        self._write(clear)
        return deleted[0]

    def history_export(self, agent_id: str) -> list[tuple[HistoryEntry, bytes]]:
        """Every analysis of ``agent_id`` with its payload, oldest first (entries of the same
        millisecond in the order they were saved)."""
        rows = self._with_retries(
            lambda conn: conn.execute(
                f"SELECT {_HISTORY_COLUMNS}, payload FROM history"
                " WHERE agent_id = ? ORDER BY created_ms, seq",
                (agent_id,),
            ).fetchall()
        )
        return [
            (self._history_entry(row[:-1]), self._payload(row[-1], f"history entry {row[0]!r}"))
            for row in rows
        ]

    def reserve(
        self, reservation_id: str, charges: Sequence[Charge], now: float, lease_s: float
    ) -> Refusal | None:
        """Reserve ``charges`` under ``reservation_id`` (see ``Store.reserve``) in one ``BEGIN
        IMMEDIATE`` transaction: expired leases are deleted, each charged window's settled use
        plus live reservations is read, and ``rmcore.quota.refuse`` decides. While the
        transaction runs no other process can reserve, so processes reserving at once against one
        cap are admitted exactly as far as it holds. Raises ``ValueError`` (storing nothing) for
        a lease that is not a positive number of seconds, an amount that is not finite, or a cap
        window charged twice."""
        _check_charges(charges)
        _check_lease(lease_s)
        if not charges:
            return None
        outcome: list[Refusal | None] = []

        def decide(conn: sqlite3.Connection) -> None:
            outcome.clear()
            outcome.append(_reserve(conn, reservation_id, charges, now, lease_s))

        self._write(decide)
        return outcome[0]

    def settle(self, reservation_id: str, charges: Sequence[Charge], now: float) -> None:
        """Drop the reservation and add the real amounts of ``charges`` to their windows' settled
        use, in one transaction (see ``Store.settle``). Also forgets the leases expired at
        ``now`` and the windows that ended ``PRUNE_AFTER_S`` before it. Raises ``ValueError``
        (storing nothing) for an amount that is not finite or a cap window charged twice."""
        _check_charges(charges)
        self._write(lambda conn: _settle(conn, reservation_id, charges, now))

    def release(self, reservation_id: str) -> None:
        """Drop the reservation (nothing when it is gone already); nothing is settled."""
        self._write(lambda conn: _release(conn, reservation_id))

    def cap_usage(self, now: float) -> list[CapUsage]:
        """The cap windows current at ``now``, by cap key and window, read in one statement:
        ``used`` is the settled use, ``reserved`` what the leases live at ``now`` hold."""
        rows = self._with_retries(lambda conn: conn.execute(_CAP_USAGE, (now,)).fetchall())
        return [self._cap_usage(row) for row in rows]

    def acquire_slot(self, name: str, limit: int, holder: str, now: float, lease_s: float) -> bool:
        """One of the ``limit`` slots of ``name`` for ``holder`` (see ``Store.acquire_slot``), in
        one ``BEGIN IMMEDIATE`` transaction, so processes asking at once never hold more than
        ``limit``. Raises ``ValueError`` for a ``limit`` below 1 or a lease that is not a
        positive number of seconds."""
        _check_slot(limit, lease_s)
        taken: list[bool] = []

        def take(conn: sqlite3.Connection) -> None:
            taken.clear()
            taken.append(_take_slot(conn, Slot(name=name, limit=limit, lease_s=lease_s), holder, now))

        self._write(take)
        return taken[0]

    def release_slot(self, name: str, holder: str) -> None:
        """Give back ``holder``'s slot of ``name``; nothing when it holds none."""
        self._write(lambda conn: _release_slot(conn, name, holder))

    def begin_attempt(self, claim: AttemptClaim, now: float) -> Refusal | SlotBusy | None:
        """Take ``claim``'s slot and reserve its charges (see ``Store.begin_attempt``) in one
        ``BEGIN IMMEDIATE`` transaction, so that processes beginning attempts at once never
        hold more slots than the limit nor reserve past a cap. A refusal deletes the slot the
        transaction took (the holder is new: it held none before)."""
        if claim.empty:
            return None
        outcome: list[Refusal | SlotBusy | None] = []

        def begin(conn: sqlite3.Connection) -> None:
            outcome.clear()
            slot = claim.slot
            if slot is not None and not _take_slot(conn, slot, claim.holder, now):
                outcome.append(SlotBusy())
                return
            refusal = (
                _reserve(conn, claim.holder, claim.charges, now, claim.lease_s) if claim.charges else None
            )
            if refusal is not None and slot is not None:
                _release_slot(conn, slot.name, claim.holder)
            outcome.append(refusal)

        self._write(begin)
        return outcome[0]

    def end_attempt(self, claim: AttemptClaim, used: Sequence[Charge] | None, now: float) -> None:
        """Settle (or, when ``used`` is None, release) ``claim``'s reservation and give its slot
        back (see ``Store.end_attempt``) in one ``BEGIN IMMEDIATE`` transaction. Raises
        ``ValueError`` (storing nothing) for an amount of ``used`` that is not finite or a cap
        window charged twice."""
        if used is not None:
            _check_charges(used)
        if claim.empty and not used:
            return

        def end(conn: sqlite3.Connection) -> None:
            if used is not None and (claim.charges or used):
                _settle(conn, claim.holder, used, now)
            elif used is None and claim.charges:
                _release(conn, claim.holder)
            if claim.slot is not None:
                _release_slot(conn, claim.slot.name, claim.holder)

        self._write(end)

    def close(self) -> None:
        """Close the connection (the last one out folds the WAL back into the file)."""
        self._conn.close()

    def _configure(self, busy_timeout_s: float) -> None:
        def pragmas(conn: sqlite3.Connection) -> None:
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            # WAL lets readers and one writer work at once; should the file system not support
            # it, SQLite stays in rollback mode, which is slower but just as safe.
            conn.execute("PRAGMA journal_mode = WAL").fetchone()
            conn.execute("PRAGMA synchronous = NORMAL")

        self._with_retries(pragmas)

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Bring the schema to ``SCHEMA_VERSION``; runs inside the opening write transaction, so
        processes that open a new file at the same time create the schema exactly once."""
        version = _recognise(conn, self.path)
        for migration in _MIGRATIONS[version:]:
            for statement in migration:
                conn.execute(statement)
        if version < SCHEMA_VERSION:
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _write(self, work: Callable[[sqlite3.Connection], object]) -> None:
        def transaction(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                work(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise

        self._with_retries(transaction)

    def _read(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``work``'s reads in one transaction, so that they all see one snapshot."""

        def transaction(conn: sqlite3.Connection) -> _T:
            conn.execute("BEGIN")
            try:
                result = work(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise
            return result

        return self._with_retries(transaction)

    def _history_entry(self, row: Sequence[object]) -> HistoryEntry:
        entry_id, agent_id, question, status, confidence, created_ms = row
        try:
            return msgspec.convert(
                {
                    "id": entry_id,
                    "agent_id": agent_id,
                    "question": question,
                    "status": status,
                    "overall_confidence": confidence,
                    "created_ms": created_ms,
                },
                HistoryEntry,
            )
        except msgspec.ValidationError as exc:
            raise _corrupt_error(self.path, f"history entry {entry_id!r} is impossible: {exc}") from None

    def _cap_usage(self, row: Sequence[object]) -> CapUsage:
        cap_key, resource, window, resets_at, limit, settled, reserved = row
        try:
            return msgspec.convert(
                {
                    "cap_key": cap_key,
                    "resource": resource,
                    "window": window,
                    "resets_at": resets_at,
                    "limit": limit,
                    "used": settled,
                    "reserved": reserved,
                },
                CapUsage,
            )
        except msgspec.ValidationError as exc:
            raise _corrupt_error(self.path, f"the use of cap {cap_key!r} is impossible: {exc}") from None

    def _payload(self, value: object, what: str) -> bytes:
        if not isinstance(value, bytes):
            raise _corrupt_error(self.path, f"{what} has no payload bytes")
        return value

    def _circuits_now(self, conn: sqlite3.Connection, providers: Sequence[str]) -> dict[str, CircuitState]:
        """The stored circuits of ``providers``, from the rows last read when no other
        connection has committed since (this connection's own circuit writes drop them)."""
        version = int(conn.execute("PRAGMA data_version").fetchone()[0])
        if version != self._circuits_version:
            rows = conn.execute(f"SELECT {_CIRCUIT_COLUMNS} FROM circuits").fetchall()
            self._circuits_seen = {row[0]: row for row in rows}
            self._circuits_version = version
        rows = [self._circuits_seen[name] for name in providers if name in self._circuits_seen]
        return {circuit.provider: circuit for circuit in self._decode_circuits(rows)}

    def _read_circuits(self, conn: sqlite3.Connection, providers: Sequence[str]) -> dict[str, CircuitState]:
        rows = conn.execute(
            f"SELECT {_CIRCUIT_COLUMNS} FROM circuits WHERE provider IN ({', '.join('?' * len(providers))})",
            list(providers),
        ).fetchall()
        return {circuit.provider: circuit for circuit in self._decode_circuits(rows)}

    def _decode_circuits(self, rows: Sequence[tuple[object, ...]]) -> list[CircuitState]:
        circuits = []
        for provider, state, failures, opened_at, probe_started_at in rows:
            try:
                circuits.append(
                    msgspec.convert(
                        {
                            "provider": provider,
                            "state": state,
                            "consecutive_failures": failures,
                            "opened_at": opened_at,
                            "probe_started_at": probe_started_at,
                        },
                        CircuitState,
                    )
                )
            except msgspec.ValidationError as exc:
                raise _corrupt_error(self.path, f"the circuit of {provider!r} is impossible: {exc}") from None
        return circuits

    def _with_retries(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``work``; when the database stays locked past the busy timeout, pause and retry a
        few times before giving up with a ``StoreError``."""
        for pause in (*_RETRY_PAUSES_S, None):
            try:
                return work(self._conn)
            except sqlite3.OperationalError as exc:
                if _primary_code(exc) not in (_SQLITE_BUSY, _SQLITE_LOCKED) or pause is None:
                    raise _store_error(self.path, exc) from None
            except sqlite3.DatabaseError as exc:
                raise _store_error(self.path, exc) from None
            time.sleep(pause)
        raise AssertionError("unreachable: the last pass returns or raises")


def _write_circuit(conn: sqlite3.Connection, circuit: CircuitState, now: float) -> None:
    conn.execute(
        _UPSERT_CIRCUIT,
        (
            circuit.provider,
            circuit.state,
            circuit.consecutive_failures,
            circuit.opened_at,
            circuit.probe_started_at,
            now,
        ),
    )


def _reserve(
    conn: sqlite3.Connection, reservation_id: str, charges: Sequence[Charge], now: float, lease_s: float
) -> Refusal | None:
    """Inside a write transaction: reclaim the expired leases, and record the reservation when
    ``rmcore.quota.refuse`` lets it (replacing one of the same id); else record nothing."""
    conn.execute("DELETE FROM reservations WHERE expires_at <= ?", (now,))
    used = {
        (c.cap_key, c.window): float(
            conn.execute(_WINDOW_HELD, (c.cap_key, c.window, reservation_id)).fetchone()[0]
        )
        for c in charges
    }
    refusal = refuse(charges, used)
    if refusal is None:
        conn.execute("DELETE FROM reservations WHERE reservation_id = ?", (reservation_id,))
        conn.executemany(
            _INSERT_RESERVATION,
            [(reservation_id, c.cap_key, c.window, float(c.amount), now + lease_s) for c in charges],
        )
        conn.executemany(_CHARGE_WINDOW, [_window_row(charge, 0.0) for charge in charges])
    return refusal


def _settle(conn: sqlite3.Connection, reservation_id: str, charges: Sequence[Charge], now: float) -> None:
    """Inside a write transaction: ``Store.settle``, with the clean-ups it does."""
    conn.execute(
        "DELETE FROM reservations WHERE reservation_id = ? OR expires_at <= ?", (reservation_id, now)
    )
    conn.executemany(_CHARGE_WINDOW, [_window_row(charge, float(charge.amount)) for charge in charges])
    conn.execute("DELETE FROM cap_windows WHERE resets_at <= ?", (now - PRUNE_AFTER_S,))


def _release(conn: sqlite3.Connection, reservation_id: str) -> None:
    conn.execute("DELETE FROM reservations WHERE reservation_id = ?", (reservation_id,))


def _take_slot(conn: sqlite3.Connection, slot: Slot, holder: str, now: float) -> bool:
    """Inside a write transaction: ``Store.acquire_slot``."""
    conn.execute("DELETE FROM slots WHERE name = ? AND expires_at <= ?", (slot.name, now))
    mine = conn.execute("SELECT 1 FROM slots WHERE name = ? AND holder = ?", (slot.name, holder)).fetchone()
    held = int(conn.execute("SELECT count(*) FROM slots WHERE name = ?", (slot.name,)).fetchone()[0])
    if mine is None and held >= slot.limit:
        return False
    conn.execute(
        "INSERT OR REPLACE INTO slots (name, holder, expires_at) VALUES (?, ?, ?)",
        (slot.name, holder, now + slot.lease_s),
    )
    return True


def _release_slot(conn: sqlite3.Connection, name: str, holder: str) -> None:
    conn.execute("DELETE FROM slots WHERE name = ? AND holder = ?", (name, holder))


def _window_row(charge: Charge, settled: float) -> tuple[str, str, str, float, float, float]:
    return (
        charge.cap_key,
        charge.window,
        charge.resource.value,
        float(charge.limit),
        float(charge.resets_at),
        settled,
    )


def _check_charges(charges: Sequence[Charge]) -> None:
    """Refuse charges no store can add up: an amount that is not finite (it would poison the
    window's sum for good) or a cap window charged twice in one reservation."""
    for charge in charges:
        if not math.isfinite(charge.amount):
            raise ValueError(f"the charge to {charge.cap_key} must be a finite amount, not {charge.amount!r}")
    windows = {(charge.cap_key, charge.window) for charge in charges}
    if len(windows) != len(charges):
        raise ValueError("a reservation charges each cap window at most once")


def _check_lease(lease_s: float) -> None:
    if not (math.isfinite(lease_s) and lease_s > 0):
        raise ValueError(f"a lease must last a positive number of seconds, not {lease_s!r}")


def _check_slot(limit: int, lease_s: float) -> None:
    if limit < 1:
        raise ValueError(f"a slot limit must be at least 1, not {limit}")
    _check_lease(lease_s)


def _check_ttl(ttl_ms: int) -> None:
    if ttl_ms < 0:
        raise ValueError(f"the cache TTL must not be negative, not {ttl_ms} ms")


def _new_history_id() -> str:
    return uuid.uuid4().hex[:_HISTORY_ID_CHARS]


def _history_filter(agent_id: str | None, before_ms: int | None) -> tuple[list[str], list[object]]:
    where: list[str] = []
    params: list[object] = []
    if agent_id is not None:
        where.append("agent_id = ?")
        params.append(agent_id)
    if before_ms is not None:
        where.append("created_ms < ?")
        params.append(int(before_ms))
    return where, params


def _where(conditions: Sequence[str]) -> str:
    return f" WHERE {' AND '.join(conditions)}" if conditions else ""


def _resolve(conn: sqlite3.Connection, reference: str) -> list[str]:
    """The ids ``reference`` names (see ``SqliteStore.history_resolve``)."""
    if conn.execute("SELECT 1 FROM history WHERE id = ?", (reference,)).fetchone() is not None:
        return [reference]
    prefix = reference.strip().lower()
    if len(prefix) < HISTORY_ID_MIN_PREFIX or not set(prefix) <= _HEX_DIGITS:
        return []
    # Hex digits hold no GLOB wildcard, and GLOB on the UNIQUE id index is a range scan.
    rows = conn.execute("SELECT id FROM history WHERE id GLOB ? ORDER BY id", (prefix + "*",)).fetchall()
    return [str(entry_id) for (entry_id,) in rows]


def _ensure_home(home: Path) -> None:
    try:
        home.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        if not home.is_dir():
            raise StoreError(
                home,
                f"{home} exists but is not a folder, so the state database cannot be kept there. "
                "Set RECURSIVEMANAGER_HOME to a folder (it is created when missing).",
            ) from None
    except OSError as exc:
        raise StoreError(
            home,
            f"cannot create the state folder {home}: {exc.strerror or exc}. Create it yourself "
            f"(mkdir -p -m 700 {home}) or set RECURSIVEMANAGER_HOME to a folder you can write.",
        ) from None
    else:
        # mkdir's mode is filtered by the umask; the state folder is private whatever it is.
        os.chmod(home, 0o700)


def _ensure_file(path: Path) -> bool:
    """Create the database file with mode 0600 when it is missing. True when a file with
    content was already there (and must be recognised before anything writes to it)."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    except OSError as exc:
        raise _access_error(path, exc.strerror or str(exc)) from None
    else:
        os.close(descriptor)
        os.chmod(path, 0o600)
        return False
    try:
        info = os.stat(path)
    except OSError as exc:
        raise _access_error(path, exc.strerror or str(exc)) from None
    if not stat.S_ISREG(info.st_mode):
        raise StoreError(
            path,
            f"{path} is not a regular file, so it cannot be the state database. Move it aside "
            f"(mv {path} {path}.bak) or set RECURSIVEMANAGER_HOME to another folder.",
        )
    return info.st_size > 0


def _check_existing(path: Path, busy_timeout_s: float) -> None:
    """Recognise an existing file through a read-only connection, which cannot change it."""
    try:
        with path.open("rb") as file:
            header = file.read(len(_SQLITE_HEADER))
    except OSError as exc:
        raise _access_error(path, exc.strerror or str(exc)) from None
    if header != _SQLITE_HEADER:
        raise _corrupt_error(path, "it is not an SQLite database")
    uri = path.resolve().as_uri() + "?mode=ro"
    try:
        connection = sqlite3.connect(uri, uri=True, timeout=busy_timeout_s, isolation_level=None)
    except sqlite3.Error as exc:
        raise _store_error(path, exc) from None
    try:
        # One snapshot: another process may be creating the schema while this reads, and
        # reading its header before and its tables after that commit looks like a foreign file.
        connection.execute("BEGIN")
        _recognise(connection, path)
    except sqlite3.Error as exc:
        raise _store_error(path, exc) from None
    finally:
        connection.close()


def _recognise(conn: sqlite3.Connection, path: Path) -> int:
    """The schema version of our database at ``conn`` (0 for an empty file), or a StoreError
    when it belongs to another application or to a newer recursive-manager."""
    application_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    tables = [
        str(name)
        for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
        ).fetchall()
    ]
    if application_id == APPLICATION_ID:
        if version > SCHEMA_VERSION:
            raise StoreError(
                path,
                f"{path} was written by a newer recursive-manager (schema {version}; this one "
                f"reads up to {SCHEMA_VERSION}). Upgrade recursive-manager, or move the file aside "
                f"(mv {path} {path}.bak) to start a new one; rmgr never overwrites or deletes it.",
            )
        return version
    if application_id == 0 and version == 0 and not tables:
        return 0
    shown = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "") if tables else "none"
    raise StoreError(
        path,
        f"{path} is an SQLite database of another application (application_id {application_id}, "
        f"tables: {shown}), not recursive-manager's state. Move it aside (mv {path} {path}.bak) "
        "and run again, or set RECURSIVEMANAGER_HOME to a folder of its own; rmgr never "
        "overwrites or deletes it.",
    )


def _primary_code(exc: sqlite3.Error) -> int:
    # Errors the sqlite3 module raises on its own carry no SQLite code.
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else 0


def _store_error(path: Path, exc: sqlite3.Error) -> StoreError:
    code = _primary_code(exc)
    if code in (_SQLITE_NOTADB, _SQLITE_CORRUPT):
        return _corrupt_error(path, f"SQLite says: {exc}")
    if code in (_SQLITE_BUSY, _SQLITE_LOCKED):
        return StoreError(
            path,
            f"{path} stayed locked by another process ({exc}). Wait for the other rmgr runs to "
            "finish and run again.",
        )
    if code in (_SQLITE_CANTOPEN, _SQLITE_PERM, _SQLITE_READONLY, _SQLITE_AUTH):
        return _access_error(path, str(exc))
    if code in (_SQLITE_FULL, _SQLITE_IOERR):
        return StoreError(
            path,
            f"cannot write {path} ({exc}). Free some disk space, or set RECURSIVEMANAGER_HOME to "
            "a folder on another disk.",
        )
    return StoreError(path, f"the state database {path} failed: {exc}.")


def _corrupt_error(path: Path, reason: str) -> StoreError:
    return StoreError(
        path,
        f"{path} is not a usable recursive-manager state database ({reason}). Move it aside "
        f"(mv {path} {path}.bak) and run again; rmgr never overwrites or deletes it.",
    )


def _access_error(path: Path, reason: str) -> StoreError:
    folder = path.parent
    return StoreError(
        path,
        f"cannot read and write {path} ({reason}). Make the folder and the file yours and "
        f"writable (chmod 700 {folder}; chmod 600 {path}), or set RECURSIVEMANAGER_HOME to "
        "another folder.",
    )
