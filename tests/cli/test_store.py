"""The state store: round trips and concurrent writers on every backend; for the SQLite file,
permissions, locks, and files it must not touch."""

from __future__ import annotations

import hashlib
import os
import random
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rmcli.store import (
    APPLICATION_ID,
    DB_FILENAME,
    SCHEMA_VERSION,
    SqliteStore,
    Store,
    StoreError,
)
from rmcore.attempts import AttemptRecord
from rmcore.completion import Usage
from rmcore.usage import AttemptRow
from tests.cli.state_backends import WAIT_FOR_GO, Backend, run_workers


def record(
    provider: str = "glm-direct",
    *,
    outcome: str = "ok",
    started_at_ms: int = 1_000,
    latency_ms: float = 120.5,
    message: str | None = None,
) -> AttemptRecord:
    return AttemptRecord(
        provider=provider,
        model="glm-4.7",
        outcome=outcome,
        status=200 if outcome == "ok" else 503,
        latency_ms=latency_ms,
        started_at_ms=started_at_ms,
        usage=Usage(input_tokens=11, output_tokens=22, estimated=True),
        cost_usd=0.0025,
        message=message,
    )


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def store(store_backend: Backend) -> Iterator[Store]:
    """A store of each backend in turn."""
    with store_backend.open() as opened:
        yield opened


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SqliteStore]:
    with SqliteStore.open(tmp_path / "home") as opened:
        yield opened


# --- round trips --------------------------------------------------------------------------------


def test_recorded_attempts_read_back_field_for_field(store: Store) -> None:
    """Every field the usage statistics need survives the trip through the store."""
    store.record_attempts(
        "run-1",
        "ask",
        [record(started_at_ms=5_000), record("openai-direct", outcome="overloaded", started_at_ms=6_000)],
    )
    rows = store.attempts_since(0)
    assert rows == [
        AttemptRow(
            provider="glm-direct",
            model="glm-4.7",
            outcome="ok",
            status=200,
            latency_ms=120.5,
            started_at_ms=5_000,
            input_tokens=11,
            output_tokens=22,
            cost_usd=0.0025,
            run_id="run-1",
        ),
        AttemptRow(
            provider="openai-direct",
            model="glm-4.7",
            outcome="overloaded",
            status=503,
            latency_ms=120.5,
            started_at_ms=6_000,
            input_tokens=11,
            output_tokens=22,
            cost_usd=0.0025,
            run_id="run-1",
        ),
    ]


def test_command_estimate_and_message_are_stored(sqlite_store: SqliteStore) -> None:
    """Columns that AttemptRow does not carry are still written, and long messages are cut short."""
    sqlite_store.record_attempts("r", "analyze", [record(outcome="timeout", message="x" * 5000)])
    with sqlite3.connect(sqlite_store.path) as conn:
        command, estimated, message, status = conn.execute(
            "SELECT command, usage_estimated, message, status FROM attempts"
        ).fetchone()
    assert (command, estimated, status) == ("analyze", 1, 503)
    assert message == "x" * 2000


def test_since_is_inclusive_and_ordered_oldest_first(store: Store) -> None:
    store.record_attempts("r", "ask", [record(started_at_ms=t) for t in (300, 100, 200, 400)])
    assert [row.started_at_ms for row in store.attempts_since(200)] == [200, 300, 400]
    assert store.attempts_since(401) == []


def test_attempts_of_the_same_millisecond_keep_their_order(store: Store) -> None:
    store.record_attempts("r1", "ask", [record("b", started_at_ms=5), record("a", started_at_ms=5)])
    store.record_attempts("r2", "ask", [record("c", started_at_ms=5), record("d", started_at_ms=4)])
    assert [row.provider for row in store.attempts_since(0)] == ["d", "b", "a", "c"]


def test_provider_filter(store: Store) -> None:
    store.record_attempts("r", "ask", [record("a"), record("b"), record("c"), record("a")])
    assert [row.provider for row in store.attempts_since(0, ["a", "c"])] == ["a", "c", "a"]
    assert [row.provider for row in store.attempts_since(0, {"b"})] == ["b"]
    assert store.attempts_since(0, []) == []
    assert len(store.attempts_since(0, None)) == 4


def test_empty_batch_writes_nothing(store: Store) -> None:
    store.record_attempts("r", "ask", [])
    assert store.attempts_since(0) == []


def test_rows_survive_closing_and_reopening(store_backend: Backend) -> None:
    with store_backend.open() as first:
        first.record_attempts("r1", "ask", [record(started_at_ms=1)])
    with store_backend.open() as second:
        second.record_attempts("r2", "ask", [record(started_at_ms=2)])
        assert [row.run_id for row in second.attempts_since(0)] == ["r1", "r2"]


def test_sqlite_store_satisfies_the_protocol(sqlite_store: SqliteStore) -> None:
    as_protocol: Store = sqlite_store
    as_protocol.record_attempts("r", "ask", [record()])
    assert len(as_protocol.attempts_since(0)) == 1


def test_a_failing_batch_is_stored_not_at_all(sqlite_store: SqliteStore) -> None:
    """A batch is one transaction: a row refused in the middle leaves none of its rows behind."""
    store = sqlite_store
    store.record_attempts("before", "ask", [record()])
    with sqlite3.connect(store.path) as conn:
        conn.execute(
            "CREATE TRIGGER refuse_bad BEFORE INSERT ON attempts WHEN NEW.provider = 'bad' "
            "BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
    with pytest.raises(StoreError) as caught:
        store.record_attempts("broken", "ask", [record("good"), record("bad"), record("good")])
    assert "refused" in str(caught.value)
    assert [row.run_id for row in store.attempts_since(0)] == ["before"]


# --- the file on disk ---------------------------------------------------------------------------


def test_schema_is_versioned_and_in_wal_mode(sqlite_store: SqliteStore) -> None:
    with sqlite3.connect(sqlite_store.path) as conn:
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        indexes = {row[1] for row in conn.execute("PRAGMA index_list(attempts)")}
    assert "attempts_started_at" in indexes


def test_home_and_parents_are_created_private(tmp_path: Path) -> None:
    home = tmp_path / "a" / "b" / "home"
    with SqliteStore.open(home) as opened:
        assert opened.path == home / DB_FILENAME
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE((home / DB_FILENAME).stat().st_mode) == 0o600


def test_modes_do_not_depend_on_the_umask(tmp_path: Path) -> None:
    """With a umask that would strip the owner's own write bit, the folder is still 0700 and
    the database 0600."""
    old = os.umask(0o277)
    try:
        SqliteStore.open(tmp_path / "home").close()
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "home").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "home" / DB_FILENAME).stat().st_mode) == 0o600


def test_an_existing_folder_keeps_its_mode(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o750)
    os.chmod(home, 0o750)
    SqliteStore.open(home).close()
    assert stat.S_IMODE(home.stat().st_mode) == 0o750


def test_nothing_is_written_outside_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with SqliteStore.open(home) as opened:
        opened.record_attempts("r", "ask", [record()])
        assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]
        assert {p.name for p in home.iterdir()} <= {"state.db", "state.db-wal", "state.db-shm"}


# --- files that are not ours stay untouched ----------------------------------------------------


def assert_refused_untouched(home: Path, *expected: str) -> StoreError:
    path = home / DB_FILENAME
    before = sha256(path)
    with pytest.raises(StoreError) as caught:
        SqliteStore.open(home)
    assert sha256(path) == before
    error = caught.value
    assert error.path == path
    assert str(path) in str(error)
    assert f"mv {path} {path}.bak" in str(error)
    for text in expected:
        assert text in str(error)
    return error


def test_random_bytes_are_refused_and_left_intact(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / DB_FILENAME).write_bytes(random.Random(7).randbytes(8192))
    assert_refused_untouched(home, "not an SQLite database")


def test_a_malformed_sqlite_file_is_refused_and_left_intact(tmp_path: Path) -> None:
    """A valid SQLite header followed by garbage pages is reported as damaged, not repaired."""
    home = tmp_path / "home"
    SqliteStore.open(home).close()
    path = home / DB_FILENAME
    original = path.read_bytes()
    garbage = random.Random(3).randbytes(len(original) - 100)
    path.write_bytes(original[:100] + garbage)
    assert_refused_untouched(home, "not a usable recursive-manager state database")


def test_another_applications_database_is_refused_and_left_intact(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    conn = sqlite3.connect(home / DB_FILENAME)
    conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    conn.execute("INSERT INTO notes (body) VALUES ('keep me')")
    conn.commit()
    conn.close()
    assert_refused_untouched(home, "another application", "notes")


def test_a_database_with_another_application_id_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    conn = sqlite3.connect(home / DB_FILENAME)
    conn.execute("PRAGMA application_id = 1234")
    conn.execute("CREATE TABLE attempts (id INTEGER PRIMARY KEY)")
    conn.commit()
    conn.close()
    assert_refused_untouched(home, "application_id 1234")


def test_a_foreign_database_in_wal_mode_is_left_intact(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    conn = sqlite3.connect(home / DB_FILENAME)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    assert_refused_untouched(home, "another application")


def test_a_newer_schema_is_refused_and_left_intact(tmp_path: Path) -> None:
    home = tmp_path / "home"
    SqliteStore.open(home).close()
    conn = sqlite3.connect(home / DB_FILENAME)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    assert_refused_untouched(home, "newer recursive-manager", "Upgrade")


class _SchemaCreatedMidRead:
    """Stands in for a read-only connection and lets another opener create the schema between
    its reading the header (application_id, user_version) and reading the table list."""

    def __init__(self, connection: sqlite3.Connection, home: Path) -> None:
        self._connection = connection
        self._home = home

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
        if "sqlite_master" in sql:
            _opening_inside.append(True)
            SqliteStore.open(self._home).close()
        return self._connection.execute(sql, *args)

    def close(self) -> None:
        self._connection.close()


_opening_inside: list[bool] = []


def test_a_schema_created_while_another_opener_reads_is_not_taken_for_foreign(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Processes opening a new state at once: one checks the file while another creates the
    schema. The check reads one snapshot, so it never sees our tables without our header."""
    home = tmp_path / "home"
    home.mkdir()
    conn = sqlite3.connect(home / DB_FILENAME)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.close()
    assert (home / DB_FILENAME).stat().st_size > 0
    real_connect = sqlite3.connect

    def connect(database: str, *args: object, **kwargs: object) -> object:
        connection = real_connect(database, *args, **kwargs)  # type: ignore[call-overload]
        if "mode=ro" in str(database) and not _opening_inside:
            return _SchemaCreatedMidRead(connection, home)
        return connection

    monkeypatch.setattr(sqlite3, "connect", connect)
    _opening_inside.clear()
    with SqliteStore.open(home) as opened:
        assert _opening_inside == [True]
        opened.record_attempts("r", "ask", [record()])
        assert len(opened.attempts_since(0)) == 1


def test_an_empty_file_becomes_a_store(tmp_path: Path) -> None:
    """A zero-byte state.db (e.g. left by a run killed while creating it) is simply initialised."""
    home = tmp_path / "home"
    home.mkdir()
    (home / DB_FILENAME).touch()
    with SqliteStore.open(home) as opened:
        opened.record_attempts("r", "ask", [record()])
        assert len(opened.attempts_since(0)) == 1


# --- folders that cannot be used ---------------------------------------------------------------


def test_home_that_is_a_file_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.write_text("not a folder")
    with pytest.raises(StoreError) as caught:
        SqliteStore.open(home)
    assert caught.value.path == home
    assert "not a folder" in str(caught.value)
    assert "RECURSIVEMANAGER_HOME" in str(caught.value)
    assert home.read_text() == "not a folder"


def test_home_below_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("x")
    home = tmp_path / "blocker" / "home"
    with pytest.raises(StoreError) as caught:
        SqliteStore.open(home)
    assert caught.value.path == home
    assert "cannot create the state folder" in str(caught.value)


def test_database_path_that_is_a_folder_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / DB_FILENAME).mkdir(parents=True)
    with pytest.raises(StoreError) as caught:
        SqliteStore.open(home)
    assert "not a regular file" in str(caught.value)
    assert (home / DB_FILENAME).is_dir()


def test_permission_denied_on_the_folder_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unwritable location (simulated: these tests may run as root, who may write anywhere)
    is reported with the path and the fix."""
    home = tmp_path / "home"

    def denied(self: Path, mode: int = 0o777, parents: bool = False, exist_ok: bool = False) -> None:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", denied)
    with pytest.raises(StoreError) as caught:
        SqliteStore.open(home)
    message = str(caught.value)
    assert "Permission denied" in message
    assert f"mkdir -p -m 700 {home}" in message


def test_permission_denied_on_the_file_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    real_open = os.open

    def denied(path: str | os.PathLike[str], flags: int, mode: int = 0o777) -> int:
        if Path(path).name == DB_FILENAME:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, mode)

    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(StoreError) as caught:
        SqliteStore.open(home)
    message = str(caught.value)
    assert "Permission denied" in message
    assert f"chmod 700 {home}" in message
    assert caught.value.path == home / DB_FILENAME


# --- locks and concurrent writers -------------------------------------------------------------


def hold_write_lock(path: Path, seconds: float, holding: threading.Event) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    holding.set()
    time.sleep(seconds)
    conn.execute("ROLLBACK")
    conn.close()


def test_a_write_is_retried_after_the_busy_timeout(tmp_path: Path) -> None:
    """Another process holding the write lock longer than the busy timeout delays the write;
    it does not lose it."""
    with SqliteStore.open(tmp_path / "home", busy_timeout_s=0.02) as opened:
        holding = threading.Event()
        holder = threading.Thread(target=hold_write_lock, args=(opened.path, 0.3, holding))
        holder.start()
        holding.wait()
        opened.record_attempts("r", "ask", [record()])
        holder.join()
        assert len(opened.attempts_since(0)) == 1


def test_a_lock_that_never_ends_gives_a_store_error(tmp_path: Path) -> None:
    with SqliteStore.open(tmp_path / "home", busy_timeout_s=0.02) as opened:
        holding = threading.Event()
        holder = threading.Thread(target=hold_write_lock, args=(opened.path, 1.2, holding))
        holder.start()
        holding.wait()
        try:
            with pytest.raises(StoreError) as caught:
                opened.record_attempts("r", "ask", [record()])
        finally:
            holder.join()
        assert "locked by another process" in str(caught.value)
        assert opened.attempts_since(0) == []


WRITER = (
    WAIT_FOR_GO
    + """
from rmcli.state import open_state
from rmcore.attempts import AttemptRecord

spec, home, worker = sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
wait_for_go()
with open_state({"RECURSIVEMANAGER_STATE": spec}, home) as store:
    for i in range(50):
        store.record_attempts(
            f"run-{worker}",
            "ask",
            [AttemptRecord(provider=f"p{worker}", model="m", outcome="ok", started_at_ms=worker * 1000 + i)],
        )
"""
)


def test_eight_processes_writing_at_once_lose_nothing(store_backend: Backend, tmp_path: Path) -> None:
    """Eight OS processes open the same new store at the same moment and each write 50
    attempts in 50 batches: exactly 400 rows, and no process fails."""
    run_workers(
        WRITER,
        [[store_backend.spec, str(store_backend.home), str(n)] for n in range(8)],
        tmp_path / "go",
    )
    with store_backend.open() as opened:
        rows = opened.attempts_since(0)
    assert len(rows) == 400
    for n in range(8):
        mine = [row.started_at_ms for row in rows if row.provider == f"p{n}"]
        assert mine == [n * 1000 + i for i in range(50)]
