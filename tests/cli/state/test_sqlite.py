"""The SQLite backend's file: modes, files it must not touch, schema migrations, the check before
use, locks held by other processes, and rows no recursive-manager writes."""

from __future__ import annotations

import hashlib
import os
import random
import sqlite3
import stat
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from rmcli.state import DB_FILENAME, Origin, State, StoreError, open_state
from rmcli.state import sqlite as sqlite_module
from rmcli.state.sqlite import APPLICATION_ID, SCHEMA_VERSION, open_sqlite
from rmcore.attempts import AttemptRecord

pytestmark = pytest.mark.anyio

ATTEMPT = AttemptRecord(provider="p", model="m", outcome="ok", started_at_ms=1)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sql(path: Path, *statements: str) -> list[tuple[object, ...]]:
    """Run ``statements`` on the file through a connection of its own; the last one's rows."""
    with sqlite3.connect(path) as conn:
        rows: list[tuple[object, ...]] = []
        for statement in statements:
            rows = conn.execute(statement).fetchall()
    conn.close()
    return rows


@pytest.fixture
async def opened(tmp_path: Path) -> AsyncIterator[State]:
    """A SQLite state in this test's folder."""
    async with open_sqlite(tmp_path / "home") as state:
        yield state


# --- the file on disk ----------------------------------------------------------------------------


async def test_schema_is_versioned_and_in_wal_mode(tmp_path: Path) -> None:
    """Our application id, the current schema version, WAL, and the indexes the reads need."""
    await open_sqlite(tmp_path).aclose()
    path = tmp_path / DB_FILENAME
    assert sql(path, "PRAGMA application_id") == [(APPLICATION_ID,)]
    assert sql(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)] == [(8,)]
    assert sql(path, "PRAGMA journal_mode") == [("wal",)]
    indexes = {row[1] for row in sql(path, "PRAGMA index_list(attempts)")}
    assert indexes == {"attempts_started_at"}  # an attempt is settled by its row id, not its key
    assert {row[1] for row in sql(path, "PRAGMA index_list(history)")} >= {
        "history_agent_created",
        "history_created",
    }


async def test_an_attempt_is_one_row_written_by_one_statement_each_way(opened: State, tmp_path: Path) -> None:
    """``sent`` and ``settle`` are one autocommitted statement each (no BEGIN/COMMIT pair) on one
    row, the settle found by the row id the insert gave; the command, the estimate flag and a cut
    message are stored too."""
    traced: list[str] = []
    connection = opened.attempts._db._conn  # type: ignore[attr-defined]
    connection.set_trace_callback(traced.append)
    await opened.attempts.sent(
        "k", Origin("r", "analyze"), AttemptRecord(provider="p", model="m", outcome="cancelled")
    )
    await opened.attempts.settle(
        "k",
        Origin("r", "analyze"),
        AttemptRecord(provider="p", model="m", outcome="timeout", message="x" * 5000),
    )
    connection.set_trace_callback(None)
    assert [line.split(" ", 2)[:2] for line in traced] == [["INSERT", "INTO"], ["UPDATE", "attempts"]]
    assert traced[1].endswith("WHERE id = 1 AND key = 'k'")
    rows = sql(
        tmp_path / "home" / DB_FILENAME,
        "SELECT key, command, usage_estimated, outcome, message FROM attempts",
    )
    assert rows == [("k", "analyze", 0, "timeout", "x" * 2000)]


async def test_home_and_parents_are_created_private_whatever_the_umask(tmp_path: Path) -> None:
    """The folder is 0700 and the file 0600, even under a umask that strips the owner's write bit."""
    home = tmp_path / "a" / "b" / "home"
    old = os.umask(0o277)
    try:
        await open_sqlite(home).aclose()
    finally:
        os.umask(old)
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE((home / DB_FILENAME).stat().st_mode) == 0o600


async def test_an_existing_folder_keeps_its_mode_and_nothing_is_written_outside_it(tmp_path: Path) -> None:
    """A folder the person made keeps its mode; only the database and its WAL files appear."""
    home = tmp_path / "home"
    home.mkdir(mode=0o750)
    os.chmod(home, 0o750)
    async with open_sqlite(home) as state:
        await state.attempts.sent("k", Origin("r", "ask"), ATTEMPT)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]
        assert {p.name for p in home.iterdir()} <= {"state.db", "state.db-wal", "state.db-shm"}
    assert stat.S_IMODE(home.stat().st_mode) == 0o750


# --- files that are not ours stay untouched ------------------------------------------------------


def assert_refused_untouched(home: Path, *expected: str, check: bool = False) -> None:
    path = home / DB_FILENAME
    before = sha256(path)
    with pytest.raises(StoreError) as caught:
        open_sqlite(home, check=check)
    assert sha256(path) == before
    assert caught.value.path == path
    assert f"mv {path} {path}.bak" in str(caught.value)
    for text in expected:
        assert text in str(caught.value)


def test_random_bytes_and_a_malformed_file_are_refused_and_left_intact(tmp_path: Path) -> None:
    """Not SQLite, or an SQLite header followed by garbage: reported, never repaired."""
    home = tmp_path / "home"
    home.mkdir()
    (home / DB_FILENAME).write_bytes(random.Random(7).randbytes(8192))
    assert_refused_untouched(home, "not an SQLite database")
    (home / DB_FILENAME).unlink()
    anyio.run(lambda: open_sqlite(home).aclose())
    original = (home / DB_FILENAME).read_bytes()
    (home / DB_FILENAME).write_bytes(original[:100] + random.Random(3).randbytes(len(original) - 100))
    assert_refused_untouched(home, "not a usable recursive-manager state database")


@pytest.mark.parametrize(
    ("statements", "expected"),
    [
        (
            [
                "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)",
                "INSERT INTO notes (body) VALUES ('keep')",
            ],
            ["another application", "notes"],
        ),
        (
            ["PRAGMA application_id = 1234", "CREATE TABLE attempts (id INTEGER PRIMARY KEY)"],
            ["application_id 1234"],
        ),
        (["PRAGMA journal_mode = WAL", "CREATE TABLE t (x)"], ["another application"]),
        (
            [
                f"PRAGMA application_id = {APPLICATION_ID}",
                f"PRAGMA user_version = {SCHEMA_VERSION + 1}",
                "CREATE TABLE t (x)",
            ],
            ["newer recursive-manager", "Upgrade"],
        ),
    ],
    ids=["foreign", "other-application-id", "foreign-wal", "newer-schema"],
)
def test_a_database_that_is_not_ours_is_refused_and_left_intact(
    tmp_path: Path, statements: list[str], expected: list[str]
) -> None:
    """Another application's database, or a newer schema of ours, is never written."""
    home = tmp_path / "home"
    home.mkdir()
    sql(home / DB_FILENAME, *statements)
    assert_refused_untouched(home, *expected)


async def test_an_empty_file_becomes_a_state(tmp_path: Path) -> None:
    """A zero-byte state.db (a run killed while creating it) is simply initialised."""
    home = tmp_path / "home"
    home.mkdir()
    (home / DB_FILENAME).touch()
    async with open_sqlite(home) as state:
        await state.attempts.sent("k", Origin("r", "ask"), ATTEMPT)
        assert len(await state.attempts.since(0)) == 1


def test_a_schema_created_while_another_opener_reads_is_not_taken_for_foreign(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Processes opening a new state at once: one checks the file while another creates the
    schema. The check reads one snapshot, so it never sees our tables without our header."""
    home = tmp_path / "home"
    home.mkdir()
    sql(home / DB_FILENAME, "PRAGMA journal_mode = WAL")
    real_connect, created = sqlite3.connect, list[bool]()

    class SchemaCreatedMidRead:
        def __init__(self, connection: sqlite3.Connection) -> None:
            self.connection = connection

        def execute(self, statement: str, *args: Any) -> sqlite3.Cursor:
            if "sqlite_master" in statement and not created:
                created.append(True)
                anyio.run(lambda: open_sqlite(home).aclose())
            return self.connection.execute(statement, *args)

        def close(self) -> None:
            self.connection.close()

    def connect(database: str, *args: object, **kwargs: object) -> object:
        connection = real_connect(database, *args, **kwargs)  # type: ignore[call-overload]
        return SchemaCreatedMidRead(connection) if "mode=ro" in str(database) and not created else connection

    monkeypatch.setattr(sqlite3, "connect", connect)
    opened = open_sqlite(home)
    assert created == [True]

    async def use() -> None:
        async with opened as state:
            await state.attempts.sent("k", Origin("r", "ask"), ATTEMPT)

    anyio.run(use)


# --- the check before use ------------------------------------------------------------------------


async def test_a_state_damaged_inside_is_refused_by_the_check_before_use(tmp_path: Path) -> None:
    """A populated state.db with a few pages in the middle overwritten opens as before, but
    ``open_state(check=True)`` (``PRAGMA quick_check``) refuses it with a ``StoreError`` naming the
    path and how to move it aside, before anything is sent; the file is left as it was. A sound
    file passes the check."""
    home = tmp_path / "home"
    async with open_sqlite(home) as state:
        for n in range(300):
            await state.attempts.settle(
                f"k{n}", Origin("run", "ask"), AttemptRecord(provider=f"p{n}", model="m" * 200, outcome="ok")
            )
            await state.history.add("agent", f"question {n}", "ok", 0.5, n, b"x" * 3000)
    await open_sqlite(home, check=True).aclose()  # a sound file passes
    path = home / DB_FILENAME
    data = bytearray(path.read_bytes())
    page, pages = 4096, len(data) // 4096
    assert pages > 100
    for victim in range(pages // 2, pages // 2 + 3):
        data[victim * page : (victim + 1) * page] = random.Random(victim).randbytes(page)
    path.write_bytes(bytes(data))
    await open_sqlite(home).aclose()  # not noticed without the check
    assert_refused_untouched(home, "damaged", "quick_check", check=True)
    with pytest.raises(StoreError) as caught:
        await open_state({}, home, warn=print, check=True)
    assert caught.value.path == path and str(path) in str(caught.value) and "mv " in str(caught.value)


# --- folders that cannot be used -----------------------------------------------------------------


def test_folders_and_files_that_cannot_be_used_say_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A home that is a file, below a file, a database path that is a folder, and (simulated: the
    tests may run as root) permission denied on the folder or the file: each a ``StoreError``
    with the path and the fix, and nothing changed."""
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(StoreError, match=r"not a folder.*RECURSIVEMANAGER_HOME") as caught:
        open_sqlite(tmp_path / "file")
    assert caught.value.path == tmp_path / "file" and (tmp_path / "file").read_text() == "not a folder"
    with pytest.raises(StoreError, match="cannot create the state folder"):
        open_sqlite(tmp_path / "file" / "home")
    (tmp_path / "dir" / DB_FILENAME).mkdir(parents=True)
    with pytest.raises(StoreError, match="not a regular file"):
        open_sqlite(tmp_path / "dir")

    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    with monkeypatch.context() as patched:
        patched.setattr(Path, "mkdir", denied)
        with pytest.raises(StoreError, match=f"Permission denied.*mkdir -p -m 700 {tmp_path / 'new'}"):
            open_sqlite(tmp_path / "new")
    (tmp_path / "home").mkdir()
    real_open = os.open
    monkeypatch.setattr(
        os, "open", lambda path, *a: denied() if Path(path).name == DB_FILENAME else real_open(path, *a)
    )
    with pytest.raises(StoreError, match=f"Permission denied.*chmod 700 {tmp_path / 'home'}") as caught:
        open_sqlite(tmp_path / "home")
    assert caught.value.path == tmp_path / "home" / DB_FILENAME


# --- migrations ----------------------------------------------------------------------------------


async def test_a_schema_4_database_is_migrated_and_keeps_its_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database written before attempts had keys (its migrations cut to the first four) gains
    the key column and its index on opening, every row kept; sent and settled attempts then
    stand beside the old ones."""
    home = tmp_path / "home"
    with monkeypatch.context() as old:
        old.setattr(sqlite_module, "MIGRATIONS", sqlite_module.MIGRATIONS[:4])
        old.setattr(sqlite_module, "SCHEMA_VERSION", 4)
        async with open_sqlite(home) as state:
            await state.circuits.record("p", "timeout", 10.0, 1)
            await state.cache.put("k", "security", b"answer", 0)
            entry_id = await state.history.add("agent", "q?", "ok", 0.5, 0, b"{}")
    path = home / DB_FILENAME
    columns = "run_id, command, provider, model, outcome, status, latency_ms, started_at_ms, input_tokens, "
    columns += "output_tokens, usage_estimated, cost_usd"
    sql(
        path,
        f"INSERT INTO attempts ({columns}) VALUES ('old', 'ask', 'p', 'm', 'ok', 200, 5.0, 1, 1, 2, 0, 0.5)",
    )
    assert sql(path, "PRAGMA user_version") == [(4,)]
    async with open_sqlite(home) as state:
        await state.attempts.sent(
            "k",
            Origin("new", "ask"),
            AttemptRecord(provider="q", model="m", outcome="cancelled", started_at_ms=2),
        )
        await state.attempts.settle(
            "k", Origin("new", "ask"), AttemptRecord(provider="q", model="m", outcome="ok", started_at_ms=2)
        )
        assert [(r.run_id, r.outcome) for r in await state.attempts.since(0)] == [
            ("old", "ok"),
            ("new", "ok"),
        ]
        assert [c.state for c in await state.circuits.all()] == ["open"]
        assert await state.cache.get("k", 0, 1_000) == b"answer"
        assert [e.id for e in await state.history.list(None)] == [entry_id]
    assert sql(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]


async def test_a_brand_new_schema_comes_from_the_migrations_in_order(tmp_path: Path) -> None:
    """A new file gets every migration; its tables are the migrations' tables."""
    await open_sqlite(tmp_path).aclose()
    tables = {
        row[0] for row in sql(tmp_path / DB_FILENAME, "SELECT name FROM sqlite_master WHERE type = 'table'")
    }
    assert tables == {
        "attempts",
        "circuits",
        "cache",
        "cache_counters",
        "history",
        "cap_windows",
        "reservations",
        "slots",
        "conversations",
    }


# --- locks held by other processes ---------------------------------------------------------------


def hold_write_lock(path: Path, seconds: float, holding: threading.Event) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    holding.set()
    time.sleep(seconds)
    conn.execute("ROLLBACK")
    conn.close()


async def test_a_write_waits_out_a_lock_without_blocking_the_event_loop(tmp_path: Path) -> None:
    """Another process holding the write lock for 0.6 s delays the write, which is not lost, and
    meanwhile the event loop keeps running: no tick of a 10 ms ticker is late by 150 ms."""
    async with open_sqlite(tmp_path / "home") as state:
        holding = threading.Event()
        holder = threading.Thread(
            target=hold_write_lock, args=(tmp_path / "home" / DB_FILENAME, 0.6, holding)
        )
        holder.start()
        holding.wait()
        gaps: list[float] = []

        async def tick() -> None:
            last = time.monotonic()
            while True:
                await anyio.sleep(0.01)
                gaps.append(time.monotonic() - last)
                last = time.monotonic()

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(tick)
            started = time.monotonic()
            await state.attempts.sent("k", Origin("r", "ask"), ATTEMPT)
            waited = time.monotonic() - started
            tasks.cancel_scope.cancel()
        holder.join()
        assert waited > 0.4
        assert max(gaps) < 0.15
        assert len(await state.attempts.since(0)) == 1


async def test_a_lock_that_never_ends_gives_a_store_error(tmp_path: Path) -> None:
    """Past the busy timeout (and a few pauses), the call fails saying who holds the lock."""
    async with open_sqlite(tmp_path / "home", busy_timeout_s=0.02) as state:
        holding = threading.Event()
        holder = threading.Thread(
            target=hold_write_lock, args=(tmp_path / "home" / DB_FILENAME, 1.2, holding)
        )
        holder.start()
        holding.wait()
        try:
            with pytest.raises(StoreError, match="locked by another process"):
                await state.attempts.sent("k", Origin("r", "ask"), ATTEMPT)
        finally:
            holder.join()
        assert await state.attempts.since(0) == []


# --- rows no recursive-manager writes ------------------------------------------------------------


async def test_impossible_rows_are_store_errors_naming_them(opened: State, tmp_path: Path) -> None:
    """A circuit, a cached answer or a history entry no recursive-manager writes is a
    ``StoreError`` that names it; an impossible circuit of one provider does not stop another's."""
    path = tmp_path / "home" / DB_FILENAME
    assert (await opened.circuits.admit("p", 1.0, 30.0, 60.0)).decision == "allowed"
    sql(
        path,
        "INSERT INTO circuits VALUES ('q', 'open', 3, NULL, NULL, 0)",  # open without opened_at
        "INSERT INTO cache VALUES ('k', 'security', 'text, not bytes', 0)",
        "INSERT INTO history (id, agent_id, question, status, overall_confidence, created_ms, payload)"
        " VALUES ('abcdabcdabcd', 'a', 'q', 'ok', NULL, 'yesterday', x'00')",
    )
    assert (await opened.circuits.admit("p", 2.0, 30.0, 60.0)).decision == "allowed"
    with pytest.raises(StoreError, match="the circuit of 'q' is impossible"):
        await opened.circuits.all()
    with pytest.raises(StoreError, match="the circuit of 'q' is impossible"):
        await opened.circuits.admit("q", 2.0, 30.0, 60.0)
    with pytest.raises(StoreError, match="has no payload bytes"):
        await opened.cache.get("k", 0, 1_000)
    assert (await opened.cache.stats(0, 1_000)).hits == 0
    with pytest.raises(StoreError, match="history entry 'abcdabcdabcd' is impossible"):
        await opened.history.list(None)


async def test_an_id_that_is_not_hex_is_still_found_exactly(opened: State, tmp_path: Path) -> None:
    """Ids are found by exact match first, whatever their form (prefixes must be hex)."""
    sql(
        tmp_path / "home" / DB_FILENAME,
        "INSERT INTO history (id, agent_id, question, status, overall_confidence, created_ms, payload)"
        " VALUES ('imported-1', 'a', 'q', 'ok', NULL, 5, x'7b7d')",
    )
    assert await opened.history.resolve("imported-1") == ["imported-1"]
    found = await opened.history.get("imported-1")
    assert found is not None and found[1] == b"{}"
    assert await opened.history.resolve("impo") == []


async def test_attempts_in_flight_at_once_are_group_committed_each_in_the_file_before_it_goes_on(
    opened: State, tmp_path: Path
) -> None:
    """With other attempts of the process in flight, the writes of one turn of the event loop are
    committed in one transaction (fewer commits than writes), yet every ``sent`` returns only once
    its row is in the file (read through a connection of its own), and every attempt is one row,
    written by one statement each way."""
    path = tmp_path / "home" / DB_FILENAME
    traced: list[str] = []
    connection = opened.attempts._db._conn  # type: ignore[attr-defined]
    connection.set_trace_callback(traced.append)
    origin = Origin("r", "ask")
    missing: list[str] = []

    async def attempt(number: int) -> None:
        key = f"k{number:02d}"
        await opened.attempts.sent(key, origin, AttemptRecord(provider="p", model="m", outcome="cancelled"))
        if not sql(path, f"SELECT 1 FROM attempts WHERE key = '{key}'"):
            missing.append(key)
        await anyio.sleep(0.01)
        await opened.attempts.settle(key, origin, AttemptRecord(provider="p", model="m", outcome="ok"))

    async with anyio.create_task_group() as tg:
        for number in range(32):
            tg.start_soon(attempt, number)
    connection.set_trace_callback(None)
    assert missing == []
    rows = sql(path, "SELECT key, outcome FROM attempts ORDER BY key")
    assert rows == [(f"k{number:02d}", "ok") for number in range(32)]
    writes = [line.split(" ", 1)[0] for line in traced if line.split(" ", 1)[0] in ("INSERT", "UPDATE")]
    assert writes.count("INSERT") == writes.count("UPDATE") == 32
    assert 0 < traced.count("COMMIT") < 32


@pytest.mark.parametrize("withdrawn", ["before its turn", "once committed"])
async def test_an_attempt_whose_record_is_cut_off_in_a_group_is_written_or_not_and_withdrawn_either_way(
    opened: State, tmp_path: Path, withdrawn: str
) -> None:
    """``cancel_safe``: a ``sent`` waiting in a commit group (two other attempts in flight) whose
    caller is cancelled is either taken back before the group commits (never written) or, the
    group having committed it, deleted by ``withdraw``: no row is left either way, and the two
    others stay as written."""
    path = tmp_path / "home" / DB_FILENAME
    origin = Origin("r", "ask")
    sent = AttemptRecord(provider="p", model="m", outcome="cancelled")
    for key in ("a", "b"):
        await opened.attempts.sent(key, origin, sent)
    cut = anyio.CancelScope()

    async def cut_off() -> None:
        with cut:
            await opened.attempts.sent("c", origin, sent)
        assert cut.cancelled_caught
        if withdrawn == "once committed":
            await opened.attempts.withdraw("c")

    async with anyio.create_task_group() as tg:
        tg.start_soon(cut_off)
        await anyio.lowlevel.checkpoint()  # "c" waits in its group, not yet committed
        cut.cancel()
        if withdrawn == "before its turn":
            await opened.attempts.withdraw("c")
    await anyio.sleep(0.05)
    assert sql(path, "SELECT key FROM attempts ORDER BY key") == [("a",), ("b",)]
    assert opened.attempts._withdrawn == set()  # type: ignore[attr-defined]
