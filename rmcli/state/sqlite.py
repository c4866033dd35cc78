"""The state in one SQLite file, ``$RECURSIVEMANAGER_HOME/state.db`` in WAL mode, shared safely by
the ``rmgr`` processes of one machine, one after another or at once (DESIGN §5). Its rules:

- A file it does not recognise (not SQLite, corrupt, another application's, a newer schema) is
  never written: it is first read in one snapshot through a read-only connection (a process may
  be creating the schema meanwhile), and the ``StoreError`` says how to move it aside. With
  ``check``, that snapshot also runs ``PRAGMA quick_check``: a file damaged inside is reported
  before a request is sent, not after it was paid for.
- A write is one statement (autocommit: an attempt's start and its end, one each) or one short
  ``BEGIN IMMEDIATE`` transaction, so processes deciding at once never both win. SQLite waits for
  another process's lock at most ``BUSY_SLICE_S`` at a time (the event loop is never held longer);
  the call then pauses without blocking and tries again, for up to ``busy_timeout_s``.
- The folder is made 0700 and the file 0600 (``-wal`` and ``-shm`` get its mode); nothing is
  written outside the folder; no API key is ever stored; payloads are opaque bytes.
- Schema changes are data: ``MIGRATIONS[i]`` takes the schema from version ``i`` to ``i + 1``;
  append one to change it, never edit one that has shipped.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sqlite3
import stat
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path
from typing import Final, Self, TypeVar

import anyio

from rmcli.group_commit import GroupCommit, WouldWait
from rmcli.state import base, rules
from rmcli.state.base import SlotBusy, State, StoreError
from rmcli.state.conversations import SqliteConversations
from rmcli.state.rules import CapsRules, CircuitRules, Decide, convert
from rmcore.attempts import AttemptRecord, Origin
from rmcore.breaker import CircuitState
from rmcore.quota import CapUsage, Charge, Refusal, refuse
from rmcore.usage import AttemptRow

__all__ = ["APPLICATION_ID", "DB_FILENAME", "MIGRATIONS", "SCHEMA_VERSION", "Database", "open_sqlite"]

APPLICATION_ID: Final = 0x524D_4752
"""``PRAGMA application_id`` of our databases: ASCII "RMGR". Tells our file from anyone else's."""

DB_FILENAME: Final = "state.db"
"""The database's file name inside the state folder."""

MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    # 0 -> 1: every attempt, for usage statistics.
    (
        """CREATE TABLE attempts (
            id INTEGER PRIMARY KEY, run_id TEXT NOT NULL, command TEXT NOT NULL, provider TEXT NOT NULL,
            model TEXT NOT NULL, outcome TEXT NOT NULL, status INTEGER, latency_ms REAL NOT NULL,
            started_at_ms INTEGER NOT NULL, input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL,
            usage_estimated INTEGER NOT NULL, cost_usd REAL NOT NULL, message TEXT)""",
        "CREATE INDEX attempts_started_at ON attempts (started_at_ms)",
    ),
    # 1 -> 2: the per-provider circuit breakers (times: epoch seconds).
    ("""CREATE TABLE circuits (
            provider TEXT PRIMARY KEY, state TEXT NOT NULL CHECK (state IN ('closed', 'open', 'half_open')),
            consecutive_failures INTEGER NOT NULL CHECK (consecutive_failures >= 0),
            opened_at REAL, probe_started_at REAL, updated_at REAL NOT NULL)""",),
    # 2 -> 3: the answer cache with its hit/miss counters (one row, id 1), and the analysis history
    # (times: epoch ms; ``seq`` orders entries of the same millisecond).
    (
        """CREATE TABLE cache (key TEXT PRIMARY KEY, perspective_id TEXT NOT NULL, payload BLOB NOT NULL,
            created_ms INTEGER NOT NULL)""",
        "CREATE INDEX cache_created ON cache (created_ms)",
        """CREATE TABLE cache_counters (id INTEGER PRIMARY KEY CHECK (id = 1),
            hits INTEGER NOT NULL CHECK (hits >= 0), misses INTEGER NOT NULL CHECK (misses >= 0))""",
        """CREATE TABLE history (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, agent_id TEXT NOT NULL,
            question TEXT NOT NULL, status TEXT NOT NULL,
            overall_confidence REAL CHECK (overall_confidence BETWEEN 0 AND 1),
            created_ms INTEGER NOT NULL, payload BLOB NOT NULL)""",
        "CREATE INDEX history_agent_created ON history (agent_id, created_ms)",
        "CREATE INDEX history_created ON history (created_ms)",
    ),
    # 3 -> 4: budgets and quotas, and concurrency slots (times: epoch seconds). ``cap_windows``:
    # each window's settled use, with the cap as last charged; ``reservations``: live ones, a row
    # per charge, with their lease; ``slots``: the holders of each counting semaphore.
    (
        """CREATE TABLE cap_windows (cap_key TEXT NOT NULL, window_name TEXT NOT NULL, resource TEXT NOT NULL,
            cap_limit REAL NOT NULL, resets_at REAL NOT NULL, settled REAL NOT NULL,
            PRIMARY KEY (cap_key, window_name)) WITHOUT ROWID""",
        "CREATE INDEX cap_windows_resets_at ON cap_windows (resets_at)",
        """CREATE TABLE reservations (reservation_id TEXT NOT NULL, cap_key TEXT NOT NULL,
            window_name TEXT NOT NULL, amount REAL NOT NULL, expires_at REAL NOT NULL,
            PRIMARY KEY (reservation_id, cap_key, window_name)) WITHOUT ROWID""",
        "CREATE INDEX reservations_window ON reservations (cap_key, window_name)",
        "CREATE INDEX reservations_expires_at ON reservations (expires_at)",
        """CREATE TABLE slots (name TEXT NOT NULL, holder TEXT NOT NULL, expires_at REAL NOT NULL,
            PRIMARY KEY (name, holder)) WITHOUT ROWID""",
    ),
    # 4 -> 5: an attempt is recorded when it is sent and settled by its caller's key when it ends.
    ("ALTER TABLE attempts ADD COLUMN key TEXT",
     "CREATE UNIQUE INDEX attempts_key ON attempts (key) WHERE key IS NOT NULL"),
    # 5 -> 6: an attempt is settled by the row its ``sent`` made (the key index cost a page write
    # on every attempt).
    ("DROP INDEX IF EXISTS attempts_key",),
    # 6 -> 7: the analysis perspective that sent an attempt (``usage --by perspective``).
    ("ALTER TABLE attempts ADD COLUMN perspective TEXT",),
    # 7 -> 8: chat conversations (``rmcli.state.conversations``).
    ("CREATE TABLE conversations (seq INTEGER PRIMARY KEY, id TEXT UNIQUE, saved_ms INTEGER, payload BLOB)",),
)

SCHEMA_VERSION: Final = len(MIGRATIONS)
"""``PRAGMA user_version`` of the schema this code writes."""

DEFAULT_BUSY_TIMEOUT_S: Final = 10.0
"""How long a call waits, in all, for another process's lock before it fails."""
BUSY_SLICE_S: Final = 0.05
"""The longest SQLite waits for a lock at once (blocking), before the call pauses and tries again."""

_PAUSES_S: Final = (0.05, 0.1, 0.2, 0.4)
_SQLITE_HEADER: Final = b"SQLite format 3\x00"
_T = TypeVar("_T")

# None binds as NULL without adapting; left to sqlite3 (3.11), each None bound looks for an
# ``__adapt__`` and a ``__conform__`` that are not there, formatting two AttributeErrors it drops.
sqlite3.register_adapter(type(None), lambda _: None)

# Primary SQLite result codes (the low byte of an extended code).
_PERM, _BUSY, _LOCKED, _READONLY, _IOERR, _CORRUPT, _FULL, _CANTOPEN, _AUTH, _NOTADB = (
    3, 5, 6, 8, 10, 11, 13, 14, 23, 26,
)

_FIELDS: Final = rules.ATTEMPT_FIELDS
_COLUMNS: Final = ", ".join(_FIELDS)
_WITHDRAW: Final = "DELETE FROM attempts WHERE id = ? AND key = ?"
_INSERT: Final = f"INSERT INTO attempts (key, {_COLUMNS}) VALUES (?{', ?' * len(_FIELDS)})"
_AT: Final = _FIELDS.index("started_at_ms")  # a settle keeps it: the index's page is not written again
_SETTLED: Final = _FIELDS[:_AT] + _FIELDS[_AT + 1 :]
_SETTLE: Final = f"UPDATE attempts SET {' = ?, '.join(_SETTLED)} = ? WHERE id = ? AND key = ?"
_CIRCUIT: Final = "provider, state, consecutive_failures, opened_at, probe_started_at"
_WRITE_CIRCUIT: Final = f"INSERT OR REPLACE INTO circuits ({_CIRCUIT}, updated_at) VALUES (?, ?, ?, ?, ?, ?)"
_HISTORY: Final = ", ".join(rules.HISTORY_FIELDS)
_CACHE_STATS: Final = """
    SELECT count(*), coalesce(sum(created_ms >= ?), 0), min(created_ms), max(created_ms),
           coalesce(sum(length(payload)), 0), coalesce((SELECT hits FROM cache_counters), 0),
           coalesce((SELECT misses FROM cache_counters), 0) FROM cache"""
_HELD: Final = """
    SELECT coalesce((SELECT settled FROM cap_windows WHERE cap_key = ?1 AND window_name = ?2), 0.0)
         + coalesce((SELECT sum(amount) FROM reservations
                     WHERE cap_key = ?1 AND window_name = ?2 AND reservation_id != ?3), 0.0)"""
# Charging a window adds to its settled use (0 for a reservation) and keeps the cap as last charged.
_CHARGE_WINDOW: Final = """
    INSERT INTO cap_windows (cap_key, window_name, resource, cap_limit, resets_at, settled)
    VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (cap_key, window_name) DO UPDATE SET
        resource = excluded.resource, cap_limit = excluded.cap_limit,
        resets_at = excluded.resets_at, settled = settled + excluded.settled"""
_COUNT: Final = """INSERT INTO cache_counters VALUES (1, ?, ?)
    ON CONFLICT (id) DO UPDATE SET hits = hits + excluded.hits, misses = misses + excluded.misses"""
_DROP_RESERVATIONS: Final = "DELETE FROM reservations WHERE reservation_id = ? OR expires_at <= ?"
_CAP_USAGE: Final = """
    SELECT w.cap_key, w.resource, w.window_name, w.resets_at, w.cap_limit, w.settled,
           coalesce((SELECT sum(r.amount) FROM reservations r WHERE r.cap_key = w.cap_key
                     AND r.window_name = w.window_name AND r.expires_at > ?1), 0.0)
    FROM cap_windows w WHERE w.resets_at > ?1 ORDER BY w.cap_key, w.window_name"""


class Database:
    """One connection to ``state.db``, the concerns' shared way to it. Open with ``open``."""

    def __init__(self, path: Path, connection: sqlite3.Connection, busy_timeout_s: float) -> None:
        self.path, self._conn, self._busy_timeout_s = path, connection, busy_timeout_s

    @classmethod
    def open(cls, home: Path, *, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S, check: bool = False) -> Self:
        """Open (creating them when missing) ``home`` and ``home/state.db``. ``StoreError`` when the
        folder cannot be used, when the file is not a recursive-manager database of this or an older
        schema (it is left as it was) or, with ``check``, when ``PRAGMA quick_check`` finds it damaged."""
        home = Path(home)
        path = home / DB_FILENAME
        _ensure_home(home)
        if _ensure_file(path):
            check_existing(path, busy_timeout_s, check)
        try:  # used by one thread at a time, but may be opened in another (``fallback`` does)
            conn = sqlite3.connect(path, busy_timeout_s, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise _store_error(path, exc) from None
        try:
            for pause in (0.02, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 0.0):  # a new file opened at once: SQLite
                try:  # answers "locked" at once rather than wait (no deadlock), so wait and try again
                    with _mapped(path, busy_ok=True):  # WAL: readers and one writer at once
                        conn.execute("PRAGMA journal_mode = WAL").fetchone()
                        conn.execute("PRAGMA synchronous = NORMAL")
                        _transaction(conn, "BEGIN IMMEDIATE", lambda conn: _migrate(conn, path))
                    break
                except _Busy as busy:
                    if not pause:
                        raise _store_error(path, busy.error) from None
                    time.sleep(pause)
            conn.execute(f"PRAGMA busy_timeout = {int(min(busy_timeout_s, BUSY_SLICE_S) * 1000)}")
        except BaseException:
            conn.close()
            raise
        return cls(path, conn, busy_timeout_s)

    async def run(self, work: Callable[[sqlite3.Connection], _T], begin: str | None = None) -> _T:
        """``work`` on the connection: alone (each statement commits by itself) or in one
        ``begin`` transaction (``"BEGIN IMMEDIATE"`` to write, ``"BEGIN"`` for one snapshot).
        While another process holds the lock, paused (without blocking) and tried again."""
        give_up = time.monotonic() + self._busy_timeout_s
        for tries in itertools.count():
            try:
                return self.run_now(work, begin)
            except WouldWait as busy:
                if tries >= len(_PAUSES_S) and time.monotonic() >= give_up:
                    raise _store_error(self.path, busy.args[0]) from None
            await anyio.sleep(_PAUSES_S[min(tries, len(_PAUSES_S) - 1)])
        raise AssertionError("unreachable")  # pragma: no cover

    def run_now(self, work: Callable[[sqlite3.Connection], _T], begin: str | None = None) -> _T:
        """``run`` without pausing: ``WouldWait`` (nothing kept) while another process holds the
        lock past ``BUSY_SLICE_S``; ``StoreError`` for anything else."""
        try:
            return _transaction(self._conn, begin, work)
        except sqlite3.Error as exc:
            if _code(exc) in (_BUSY, _LOCKED):
                raise WouldWait(exc) from None
            raise _store_error(self.path, exc) from None

    async def rows(self, sql: str, params: Sequence[object] = ()) -> list[tuple[object, ...]]:
        """The rows of one query."""
        return await self.run(lambda conn: conn.execute(sql, params).fetchall())

    async def change(self, sql: str, params: Sequence[object] = ()) -> int:
        """One statement (it commits by itself); the rows it changed."""
        return await self.run(lambda conn: int(conn.execute(sql, params).rowcount))

    def corrupt(self, reason: str) -> StoreError:
        """The error for data in the file that no recursive-manager writes."""
        return _corrupt_error(self.path, reason)

    async def aclose(self) -> None:
        """Close the connection (the last one out folds the WAL back into the file)."""
        self._conn.close()


class _Part:
    def __init__(self, db: Database) -> None:
        super().__init__()
        self._db = db

    def _payload(self, value: object, what: str) -> bytes:
        if not isinstance(value, bytes):
            raise self._db.corrupt(f"{what} has no payload bytes")
        return value


class SqliteAttempts(_Part):
    """``Attempts`` in the ``attempts`` table: one row written when an attempt is sent, rewritten by
    its row id when it ends; with others in flight, group-committed (``rmcli.group_commit``).
    ``cancel_safe`` (``Attempts``): a ``sent`` whose caller is cancelled is committed all the same
    (its row known), or, withdrawn before its turn came, never written."""

    cancel_safe: Final = True

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self._rows: dict[str, int] = {}  # the row of each attempt sent here and not yet settled
        self._withdrawn: set[str] = set()  # withdrawn before their record's turn came: not written
        self._group = GroupCommit[sqlite3.Connection](db.run, "BEGIN IMMEDIATE", db.run_now)

    async def sent(self, key: str, origin: Origin, record: AttemptRecord) -> None:
        if key not in self._rows:
            values = (key, *rules.attempt_values(origin, record))

            def insert(conn: sqlite3.Connection) -> int | None:
                return None if key in self._withdrawn else _rowid(conn.execute(_INSERT, values))

            def known(row: int | None) -> None:  # committed (None: withdrawn before its turn)
                if row is None:
                    self._withdrawn.discard(key)
                else:
                    self._rows[key] = row

            await self._group.run(insert, self._rows, known)

    async def withdraw(self, key: str) -> None:
        if (row := self._rows.pop(key, None)) is None:
            self._withdrawn.add(key)  # its record, if still to be written, is not
        else:
            await self._group.run(lambda c: c.execute(_WITHDRAW, (row, key)), self._rows)

    async def settle(self, key: str, origin: Origin, record: AttemptRecord) -> None:
        """Rewrite ``key`` with how it ended, or insert it when not sent here (kept for a later settle)."""
        row, values = self._rows.pop(key, None), rules.attempt_values(origin, record)
        ended = (*values[:_AT], *values[_AT + 1 :], row, key)

        def settle(conn: sqlite3.Connection) -> int | None:
            updated = row is not None and conn.execute(_SETTLE, ended).rowcount
            return None if updated else _rowid(conn.execute(_INSERT, (key, *values)))

        if (fresh := await self._group.run(settle, self._rows)) is not None:
            self._rows[key] = fresh

    async def since(self, since_ms: int, providers: Collection[str] | None = None) -> list[AttemptRow]:
        names = None if providers is None else sorted(set(providers))
        where = "" if names is None else f" AND provider IN ({', '.join('?' * len(names))})"
        sql = f"SELECT {_COLUMNS} FROM attempts WHERE started_at_ms >= ?{where} ORDER BY started_at_ms, id"
        rows = [] if names == [] else await self._db.rows(sql, [since_ms, *(names or ())])
        return [rules.attempt_row(row, self._db.corrupt) for row in rows]


class SqliteCircuits(_Part, CircuitRules):
    """``Circuits`` in the ``circuits`` table: a decision that changes nothing is one read; one
    that does is read, decided and written again in one ``BEGIN IMMEDIATE`` transaction."""

    async def _change(self, provider: str, decide: Decide[_T], now: float) -> _T:
        current = await self._db.run(lambda conn: self._read(conn, provider))
        answer, new = decide(current)
        if new == current:
            return answer

        def write(conn: sqlite3.Connection) -> _T:
            current = self._read(conn, provider)
            answer, new = decide(current)
            if new != current:
                row = (provider, new.state, new.consecutive_failures, new.opened_at, new.probe_started_at)
                conn.execute(_WRITE_CIRCUIT, (*row, now))
            return answer

        return await self._db.run(write, "BEGIN IMMEDIATE")

    async def all(self) -> list[CircuitState]:
        rows = await self._db.rows(f"SELECT {_CIRCUIT} FROM circuits ORDER BY provider")
        return [self._circuit(row) for row in rows]

    async def reset(self, providers: Collection[str] | None) -> list[str]:
        names = None if providers is None else sorted(set(providers))
        where = "" if names is None else f" WHERE provider IN ({', '.join('?' * len(names))})"

        def delete(conn: sqlite3.Connection) -> list[str]:
            found = conn.execute(f"SELECT provider FROM circuits{where} ORDER BY 1", names or ()).fetchall()
            conn.execute(f"DELETE FROM circuits{where}", names or ())
            return [str(name) for (name,) in found]

        return [] if names == [] else await self._db.run(delete, "BEGIN IMMEDIATE")

    def _read(self, conn: sqlite3.Connection, provider: str) -> CircuitState:
        row = conn.execute(f"SELECT {_CIRCUIT} FROM circuits WHERE provider = ?", (provider,)).fetchone()
        return CircuitState(provider=provider) if row is None else self._circuit(row)

    def _circuit(self, row: Sequence[object]) -> CircuitState:
        data = dict(zip(_CIRCUIT.split(", "), row, strict=True))
        return convert(data, CircuitState, f"the circuit of {row[0]!r}", self._db.corrupt)


class SqliteCaps(_Part, CapsRules):
    """``Caps`` in ``cap_windows``, ``reservations`` and ``slots``: each call one ``BEGIN
    IMMEDIATE`` transaction, so processes at once never hold more slots than the limit nor
    reserve past a cap."""

    async def begin(self, claim: base.AttemptClaim, now: float) -> Refusal | SlotBusy | None:
        """Take the slot, then reserve the charges as ``rmcore.quota.refuse`` says on settled use plus
        live reservations (a refusal gives the slot back; the holder's own is replaced, not added)."""
        slot, holder, charges = claim.slot, claim.holder, claim.charges

        def begin(conn: sqlite3.Connection) -> Refusal | SlotBusy | None:
            if slot is not None and not _take_slot(conn, slot, holder, now):
                return SlotBusy()
            if not charges:
                return None
            conn.execute("DELETE FROM reservations WHERE expires_at <= ?", (now,))
            windows = [(c.cap_key, c.window) for c in charges]
            refusal = refuse(charges, {w: conn.execute(_HELD, (*w, holder)).fetchone()[0] for w in windows})
            if refusal is not None:
                if slot is not None:
                    conn.execute("DELETE FROM slots WHERE name = ? AND holder = ?", (slot.name, holder))
                return refusal
            conn.execute("DELETE FROM reservations WHERE reservation_id = ?", (holder,))
            rows = [(holder, c.cap_key, c.window, float(c.amount), now + claim.lease_s) for c in charges]
            conn.executemany("INSERT INTO reservations VALUES (?, ?, ?, ?, ?)", rows)
            conn.executemany(_CHARGE_WINDOW, [_window(charge, 0.0) for charge in charges])
            return None

        return None if claim.empty else await self._db.run(begin, "BEGIN IMMEDIATE")

    async def end(self, claim: base.AttemptClaim, used: Sequence[Charge] | None, now: float) -> None:
        """Drop the reservation, add ``used`` (even when its lease expired: the money was spent) to the
        windows' settled use, give the slot back; also forget expired leases and the windows that
        ended ``PRUNE_AFTER_S`` ago. ``ValueError`` (nothing stored) for amounts no store adds up."""
        base.check_charges(used or ())

        def end(conn: sqlite3.Connection) -> None:
            holder, slot = claim.holder, claim.slot
            conn.execute(_DROP_RESERVATIONS, (holder, now))
            conn.executemany(_CHARGE_WINDOW, [_window(charge, float(charge.amount)) for charge in used or ()])
            conn.execute("DELETE FROM cap_windows WHERE resets_at <= ?", (now - rules.PRUNE_AFTER_S,))
            if slot is not None:
                conn.execute("DELETE FROM slots WHERE name = ? AND holder = ?", (slot.name, holder))

        if not claim.empty or used:
            await self._db.run(end, "BEGIN IMMEDIATE")

    async def usage(self, now: float) -> list[CapUsage]:
        """The cap windows current at ``now`` (one snapshot), by cap key and window."""
        names = ("cap_key", "resource", "window", "resets_at", "limit", "used", "reserved")
        rows = [dict(zip(names, row, strict=True)) for row in await self._db.rows(_CAP_USAGE, (now,))]
        return [convert(row, CapUsage, f"cap {row['cap_key']!r}", self._db.corrupt) for row in rows]


def _take_slot(conn: sqlite3.Connection, slot: base.Slot, holder: str, now: float) -> bool:
    """Reclaim expired holders, then take (or renew) one of the slots for ``holder`` if one is free."""
    conn.execute("DELETE FROM slots WHERE name = ? AND expires_at <= ?", (slot.name, now))
    mine = conn.execute("SELECT 1 FROM slots WHERE name = ? AND holder = ?", (slot.name, holder)).fetchone()
    held = conn.execute("SELECT count(*) FROM slots WHERE name = ?", (slot.name,)).fetchone()[0]
    if mine is None and held >= slot.limit:
        return False
    conn.execute("INSERT OR REPLACE INTO slots VALUES (?, ?, ?)", (slot.name, holder, now + slot.lease_s))
    return True


def _window(c: Charge, settled: float) -> tuple[object, ...]:
    return (c.cap_key, c.window, c.resource.value, float(c.limit), float(c.resets_at), settled)


class SqliteCache(_Part):
    """``Cache`` in the ``cache`` table, its counters in ``cache_counters``."""

    async def get(self, key: str, now_ms: int, ttl_ms: int) -> bytes | None:
        """The payload when stored at or after ``now_ms - ttl_ms`` (from a clock running ahead too);
        an expired one is removed. The hit or miss counts in the same transaction: counts add up."""
        rules.check(ttl_ms=ttl_ms)

        def look_up(conn: sqlite3.Connection) -> bytes | None:
            row = conn.execute("SELECT payload, created_ms FROM cache WHERE key = ?", (key,)).fetchone()
            fresh = row is not None and row[1] >= now_ms - ttl_ms
            payload = self._payload(row[0], f"the cached answer {key!r}") if fresh else None
            conn.execute("DELETE FROM cache WHERE key = ? AND created_ms < ?", (key, now_ms - ttl_ms))
            conn.execute(_COUNT, (int(fresh), int(not fresh)))
            return payload

        return await self._db.run(look_up, "BEGIN IMMEDIATE")

    async def put(self, key: str, perspective_id: str, payload: bytes, now_ms: int) -> None:
        row = (key, perspective_id, bytes(payload), now_ms)
        await self._db.change("INSERT OR REPLACE INTO cache VALUES (?, ?, ?, ?)", row)

    async def stats(self, now_ms: int, ttl_ms: int) -> base.CacheStats:
        """The cache at ``now_ms``, read in one statement; nothing is removed or counted."""
        rules.check(ttl_ms=ttl_ms)
        return rules.cache_stats(*(await self._db.rows(_CACHE_STATS, (now_ms - ttl_ms,)))[0])  # type: ignore[arg-type]

    async def clear(self) -> int:
        """Remove every entry and reset the counters, in one transaction; how many entries."""
        def clear(conn: sqlite3.Connection) -> int:
            conn.execute("DELETE FROM cache_counters")
            return int(conn.execute("DELETE FROM cache").rowcount)

        return await self._db.run(clear, "BEGIN IMMEDIATE")

    async def prune(self, now_ms: int, ttl_ms: int) -> int:
        """Remove the entries ``get`` would no longer return, counters untouched; how many."""
        rules.check(ttl_ms=ttl_ms)
        return await self._db.change("DELETE FROM cache WHERE created_ms < ?", (now_ms - ttl_ms,))


class SqliteHistory(_Part):
    """``History`` in the ``history`` table (ids unique, ``seq`` orders entries of one millisecond)."""

    async def add(
        self, agent_id: str, question: str, status: str, overall_confidence: float | None, created_ms: int,
        payload: bytes,
    ) -> str:
        """Save an analysis under a new random id (a taken one is drawn again in the same
        transaction). ``ValueError``, saving nothing, for a confidence outside 0.0 to 1.0."""
        rules.check(confidence=overall_confidence)
        confidence = None if overall_confidence is None else float(overall_confidence)

        def insert(conn: sqlite3.Connection) -> str:
            for _ in range(rules.NEW_ID_TRIES):
                entry_id = rules.new_history_id()
                if conn.execute("SELECT 1 FROM history WHERE id = ?", (entry_id,)).fetchone() is None:
                    row = (entry_id, agent_id, question, status, confidence, created_ms, bytes(payload))
                    conn.execute(f"INSERT INTO history ({_HISTORY}, payload) VALUES ({'?, ' * 6}?)", row)
                    return entry_id
            raise StoreError(self._db.path, f"no free history id in {rules.NEW_ID_TRIES} draws; run again.")

        return await self._db.run(insert, "BEGIN IMMEDIATE")

    async def resolve(self, reference: str) -> list[str]:
        return await self._db.run(lambda conn: _resolve(conn, reference))

    async def get(self, entry_id: str) -> tuple[base.HistoryEntry, bytes] | None:
        def fetch(conn: sqlite3.Connection) -> list[tuple[object, ...]]:
            ids = _resolve(conn, entry_id)
            sql = f"SELECT {_HISTORY}, payload FROM history WHERE id = ?"
            return conn.execute(sql, ids).fetchall() if len(ids) == 1 else []

        return next(iter(self._with_payloads(await self._db.run(fetch, "BEGIN"))), None)

    async def stats(self, agent_id: str | None) -> base.HistoryStats:
        return rules.history_stats(await self.list(agent_id))

    async def delete(self, entry_id: str) -> bool:
        def delete(conn: sqlite3.Connection) -> bool:
            ids = _resolve(conn, entry_id)
            return len(ids) == 1 and conn.execute("DELETE FROM history WHERE id = ?", ids).rowcount == 1

        return await self._db.run(delete, "BEGIN IMMEDIATE")

    async def clear(self, agent_id: str | None, before_ms: int | None = None) -> int:
        where, params = _where(agent_id, ("created_ms < ?", before_ms))
        return await self._db.change(f"DELETE FROM history{where}", params)

    async def export(self, agent_id: str) -> list[tuple[base.HistoryEntry, bytes]]:
        sql = f"SELECT {_HISTORY}, payload FROM history WHERE agent_id = ? ORDER BY created_ms, seq"
        return self._with_payloads(await self._db.rows(sql, (agent_id,)))

    def _with_payloads(self, rows: Sequence[Sequence[object]]) -> list[tuple[base.HistoryEntry, bytes]]:
        return [(self._entry(row[:-1]), self._payload(row[-1], f"history entry {row[0]!r}")) for row in rows]

    def _entry(self, row: Sequence[object]) -> base.HistoryEntry:
        data = dict(zip(rules.HISTORY_FIELDS, row, strict=True))
        return convert(data, base.HistoryEntry, f"history entry {row[0]!r}", self._db.corrupt)

    async def list(
        self, agent_id: str | None, *, min_confidence: float | None = None, since_ms: int | None = None,
        limit: int | None = None,
    ) -> list[base.HistoryEntry]:
        """Entries newest first (the last saved first within a millisecond) of ``agent_id`` (all when
        None), of a known confidence of ``min_confidence`` or more, saved from ``since_ms``, ``limit``."""
        rules.check(limit=limit)
        conditions = ("overall_confidence >= ?", min_confidence), ("created_ms >= ?", since_ms)
        where, params = _where(agent_id, *conditions)
        sql = f"SELECT {_HISTORY} FROM history{where} ORDER BY created_ms DESC, seq DESC LIMIT ?"
        rows = await self._db.rows(sql, [*params, -1 if limit is None else limit])
        return [self._entry(row) for row in rows]


def _where(agent_id: str | None, *conditions: tuple[str, object]) -> tuple[str, list[object]]:
    """The WHERE clause of the conditions whose value is not None, and their values."""
    kept = [(sql, value) for sql, value in (("agent_id = ?", agent_id), *conditions) if value is not None]
    return (f" WHERE {' AND '.join(sql for sql, _ in kept)}" if kept else ""), [value for _, value in kept]


def _resolve(conn: sqlite3.Connection, reference: str) -> list[str]:
    if conn.execute("SELECT 1 FROM history WHERE id = ?", (reference,)).fetchone() is not None:
        return [reference]
    prefix = rules.id_prefix(reference)
    # Hex digits hold no GLOB wildcard, and GLOB on the UNIQUE id index is a range scan.
    glob = "SELECT id FROM history WHERE id GLOB ? ORDER BY id"
    rows = [] if prefix is None else conn.execute(glob, (prefix + "*",))
    return [str(entry_id) for (entry_id,) in rows]


def open_sqlite(home: Path, *, check: bool = False, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> State:
    """The whole state in ``home/state.db`` (see ``Database.open`` for what it raises)."""
    db = Database.open(home, busy_timeout_s=busy_timeout_s, check=check)
    return State(
        attempts=SqliteAttempts(db), circuits=SqliteCircuits(db), caps=SqliteCaps(db), cache=SqliteCache(db),
        history=SqliteHistory(db), conversations=SqliteConversations(db), where=str(db.path), closers=[db],
    )


# --- opening the file, and what SQLite's errors mean ----------------------------------------------


class _Busy(Exception):
    def __init__(self, error: sqlite3.Error) -> None:
        self.error = error


@contextlib.contextmanager
def _mapped(path: Path, *, busy_ok: bool = False) -> Iterator[None]:
    """SQLite's errors as ``StoreError``s (a lock held past the wait as ``_Busy`` when ``busy_ok``)."""
    try:
        yield
    except sqlite3.Error as exc:
        if busy_ok and _code(exc) in (_BUSY, _LOCKED):
            raise _Busy(exc) from None
        raise _store_error(path, exc) from None


def _rowid(cursor: sqlite3.Cursor) -> int:
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def _transaction(conn: sqlite3.Connection, begin: str | None, work: Callable[[sqlite3.Connection], _T]) -> _T:
    if begin is None:
        return work(conn)
    conn.execute(begin)
    try:
        result = work(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise
    return result


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring the schema to ``SCHEMA_VERSION`` inside the opening write transaction, so that
    processes opening a new file at once create the schema exactly once."""
    version = _recognise(conn, path)
    for statement in (statement for migration in MIGRATIONS[version:] for statement in migration):
        conn.execute(statement)
    if version < SCHEMA_VERSION:
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _ensure_home(home: Path) -> None:
    try:
        home.mkdir(mode=0o700, parents=True)
        os.chmod(home, 0o700)  # mkdir's mode is filtered by the umask; the folder is private whatever it is
    except FileExistsError:
        if not home.is_dir():
            raise StoreError(home, f"{home} exists but is not a folder, so the state database cannot be kept "
                             "there. Set RECURSIVEMANAGER_HOME to a folder (made when missing).") from None
    except OSError as exc:
        raise StoreError(home, f"cannot create the state folder {home}: {exc.strerror or exc}. Create it "
                         f"yourself (mkdir -p -m 700 {home}) or set RECURSIVEMANAGER_HOME to a folder you "
                         "can write.") from None


def _ensure_file(path: Path) -> bool:
    """Create the file with mode 0600 when missing; True when one with content was there already."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.chmod(path, 0o600)
        return False
    except FileExistsError:
        info = os.stat(path)
    except OSError as exc:
        raise _access_error(path, exc.strerror or str(exc)) from None
    if not stat.S_ISREG(info.st_mode):
        raise StoreError(path, f"{path} is not a regular file, so it cannot be the state database. Move it "
                         f"aside (mv {path} {path}.bak) or set RECURSIVEMANAGER_HOME to another folder.")
    return info.st_size > 0


def check_existing(path: Path, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S, check: bool = True) -> None:
    """Recognise an existing state file (and with ``check`` run ``PRAGMA quick_check`` on it) through
    a read-only connection, which cannot change it; ``StoreError`` saying what is wrong."""
    try:
        with path.open("rb") as file:
            if file.read(len(_SQLITE_HEADER)) != _SQLITE_HEADER:
                raise _corrupt_error(path, "it is not an SQLite database")
    except OSError as exc:
        raise _access_error(path, exc.strerror or str(exc)) from None
    with _mapped(path), contextlib.closing(
        sqlite3.connect(path.resolve().as_uri() + "?mode=ro", busy_timeout_s, uri=True)
    ) as conn:
        # One snapshot: a process creating the schema meanwhile must not look like a foreign file.
        conn.execute("BEGIN")
        _recognise(conn, path)
        problems = [str(row[0]) for row in conn.execute("PRAGMA quick_check(3)")] if check else ["ok"]
    if problems != ["ok"]:
        raise _corrupt_error(path, f"it is damaged: PRAGMA quick_check says {'; '.join(problems)}")


def _recognise(conn: sqlite3.Connection, path: Path) -> int:
    """The schema version of our database (0 for an empty file), or a ``StoreError`` when it
    belongs to another application or to a newer recursive-manager."""
    application_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    found = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY 1")
    tables = [str(name) for (name,) in found]
    aside = f"(mv {path} {path}.bak)"
    if application_id == APPLICATION_ID and version > SCHEMA_VERSION:
        raise StoreError(path, f"{path} was written by a newer recursive-manager (schema {version}; this one "
                         f"reads up to {SCHEMA_VERSION}). Upgrade recursive-manager, or move the file aside "
                         f"{aside} to start a new one; rmgr never overwrites or deletes it.")
    if application_id == APPLICATION_ID or (application_id == 0 and version == 0 and not tables):
        return version
    shown = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "") if tables else "none"
    raise StoreError(path, f"{path} is an SQLite database of another application (application_id "
                     f"{application_id}, tables: {shown}), not recursive-manager's state. Move it aside "
                     f"{aside} and run again, or set RECURSIVEMANAGER_HOME to a folder of its own; rmgr "
                     "never overwrites or deletes it.")


def _code(exc: sqlite3.Error) -> int:
    code = getattr(exc, "sqlite_errorcode", None)  # errors of the sqlite3 module itself carry none
    return code & 0xFF if isinstance(code, int) else 0


def _store_error(path: Path, exc: sqlite3.Error) -> StoreError:
    code = _code(exc)
    if code in (_NOTADB, _CORRUPT):
        return _corrupt_error(path, f"SQLite says: {exc}")
    if code in (_CANTOPEN, _PERM, _READONLY, _AUTH):
        return _access_error(path, str(exc))
    if code in (_BUSY, _LOCKED):
        return StoreError(path, f"{path} stayed locked by another process ({exc}). Wait for the other rmgr "
                          "runs to finish and run again.")
    if code in (_FULL, _IOERR):
        return StoreError(path, f"cannot write {path} ({exc}). Free some disk space, or set "
                          "RECURSIVEMANAGER_HOME to a folder on another disk.")
    return StoreError(path, f"the state database {path} failed: {exc}.")


def _corrupt_error(path: Path, reason: str) -> StoreError:
    return StoreError(path, f"{path} is not a usable recursive-manager state database ({reason}). Move it "
                      f"aside (mv {path} {path}.bak) and run again; rmgr never overwrites or deletes it.")


def _access_error(path: Path, reason: str) -> StoreError:
    return StoreError(path, f"cannot read and write {path} ({reason}). Make the folder and the file yours "
                      f"and writable (chmod 700 {path.parent}; chmod 600 {path}), or set "
                      "RECURSIVEMANAGER_HOME to another folder.")
