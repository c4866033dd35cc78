"""The state store: every attempt and every provider's circuit breaker (and later the answer
cache and history).

One SQLite database, ``$RECURSIVEMANAGER_HOME/state.db`` in WAL mode, shared safely by ``rmgr``
processes that run one after another or at the same time (DESIGN §5). The rest of the shell
depends only on the ``Store`` protocol, so the same state can later live in Redis.

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
and ``SCHEMA_VERSION`` is their count. To add a table (the cache, history, breaker state),
append a migration; never edit one that has shipped.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from types import TracebackType
from typing import Final, Protocol, Self, TypeVar

import msgspec

from rmcore.attempts import AttemptRecord
from rmcore.breaker import Admission, CircuitState, admit, is_breaking, record
from rmcore.usage import AttemptRow

__all__ = [
    "APPLICATION_ID",
    "DB_FILENAME",
    "SCHEMA_VERSION",
    "SqliteStore",
    "Store",
    "StoreError",
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
)

SCHEMA_VERSION: Final = len(_MIGRATIONS)
"""``PRAGMA user_version`` of the schema this code writes."""

_DEFAULT_BUSY_TIMEOUT_S: Final = 10.0
_RETRY_PAUSES_S: Final = (0.05, 0.1, 0.2, 0.4)
_MAX_MESSAGE_CHARS: Final = 2000
_SQLITE_HEADER: Final = b"SQLite format 3\x00"

# Primary SQLite result codes (the low byte of an extended code).
_SQLITE_PERM, _SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY = 3, 5, 6, 8
_SQLITE_IOERR, _SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_CANTOPEN = 10, 11, 13, 14
_SQLITE_AUTH, _SQLITE_NOTADB = 23, 26

_T = TypeVar("_T")


class StoreError(Exception):
    """The state store cannot be used. The message says what is wrong with ``path`` and what
    to do about it; it never contains an API key."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


class Store(Protocol):
    """What the shell needs from the state store; ``SqliteStore`` is the one implementation."""

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

    def circuits(self) -> list[CircuitState]:
        """Every stored circuit, by provider name (a provider never recorded is closed)."""
        ...

    def close(self) -> None:
        """Release the store. Closing twice is harmless."""
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


class SqliteStore:
    """The ``Store`` in one SQLite file. Open it with ``SqliteStore.open(home)``; use it as a
    context manager or call ``close()``."""

    def __init__(self, path: Path, connection: sqlite3.Connection) -> None:
        """Wrap an already opened and migrated connection; use ``open`` instead."""
        self.path = path
        self._conn = connection

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
        if rows:
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

        All circuits are read, decided and the changed ones written back in one ``BEGIN
        IMMEDIATE`` transaction: while it runs no other process can read-then-write them, so of
        any number of processes asking at once about an open, cooled-down circuit exactly one
        gets the probe. A provider without a stored circuit is closed (and nothing is written).
        """
        names = list(dict.fromkeys(providers))
        admissions: dict[str, Admission] = {}

        def decide(conn: sqlite3.Connection) -> None:
            # The transaction may be retried after a lock timeout: decide afresh each time.
            admissions.clear()
            stored = self._read_circuits(conn, names)
            for name in names:
                current = stored.get(name, CircuitState(provider=name))
                admission = admit(current, now, cooldown_s=cooldown_s, probe_timeout_s=probe_timeout_s)
                if admission.state != current:
                    _write_circuit(conn, admission.state, now)
                admissions[name] = admission

        if names:
            self._write(decide)
        return dict(admissions)

    def record_circuit(self, provider: str, outcome: str, now: float, failure_threshold: int) -> CircuitState:
        """``rmcore.breaker.record`` on ``provider``'s stored circuit: read, update and write back
        in one ``BEGIN IMMEDIATE`` transaction, so that outcomes recorded by processes at the
        same time are all counted. Returns the new state. Raises ``ValueError`` (and stores
        nothing) when ``outcome`` is neither ``"ok"`` nor an error kind."""
        is_breaking(outcome)  # an unknown outcome raises here, before the lock is taken
        updated: list[CircuitState] = []

        def apply(conn: sqlite3.Connection) -> None:
            updated.clear()
            current = self._read_circuits(conn, [provider]).get(provider, CircuitState(provider=provider))
            new = record(current, outcome, now, failure_threshold=failure_threshold)
            if new != current:
                _write_circuit(conn, new, now)
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

    def close(self) -> None:
        """Close the connection (the last one out folds the WAL back into the file)."""
        self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

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
