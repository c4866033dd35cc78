"""The answer cache in the state store (every backend): TTL, hit and miss counts shared by
processes; and the SQLite migration that brought it (with the history) to databases of an older
schema."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

import rmcli.store as store_module
from rmcli.store import SCHEMA_VERSION, CacheStats, SqliteStore, Store, StoreError
from rmcore.attempts import AttemptRecord
from tests.cli.state_backends import WAIT_FOR_GO, Backend, run_workers

TTL_MS = 3_600_000


def key(question: str, perspective: str = "security") -> str:
    return hashlib.sha256(f"{perspective}\n{question}".encode()).hexdigest()


@pytest.fixture
def store(store_backend: Backend) -> Iterator[Store]:
    """A store of each backend in turn."""
    with store_backend.open() as opened:
        yield opened


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SqliteStore]:
    with SqliteStore.open(tmp_path / "home") as opened:
        yield opened


def counts(store: Store) -> tuple[int, int]:
    stats = store.cache_stats(0, TTL_MS)
    return stats.hits, stats.misses


# --- lookups and the TTL -----------------------------------------------------------------------


def test_a_stored_answer_comes_back_byte_for_byte_and_counts_a_hit(store: Store) -> None:
    payload = b'{"analysis": "fine", "confidence": 0.8}\x00\xff'
    store.cache_put(key("q"), "security", payload, 1_000)
    assert store.cache_get(key("q"), 1_000, TTL_MS) == payload
    assert counts(store) == (1, 0)


def test_an_unknown_key_is_a_miss(store: Store) -> None:
    store.cache_put(key("q"), "security", b"{}", 1_000)
    assert store.cache_get(key("other"), 1_000, TTL_MS) is None
    assert store.cache_get(key("q", "ux"), 1_000, TTL_MS) is None
    assert counts(store) == (0, 2)


def test_an_entry_exactly_ttl_old_is_fresh_one_millisecond_more_is_not(store: Store) -> None:
    store.cache_put(key("q"), "security", b"answer", 10_000)
    assert store.cache_get(key("q"), 10_100, 100) == b"answer"
    assert store.cache_get(key("q"), 10_101, 100) is None
    assert counts(store) == (1, 1)


def test_an_expired_entry_is_a_miss_and_is_removed(store: Store) -> None:
    """Once found expired the entry is gone: a longer TTL asked later does not bring it back."""
    store.cache_put(key("q"), "security", b"answer", 10_000)
    store.cache_put(key("kept"), "ux", b"other", 10_000)
    assert store.cache_get(key("q"), 20_000, 5_000) is None
    assert store.cache_get(key("q"), 20_000, TTL_MS) is None
    assert store.cache_stats(20_000, TTL_MS).entries == 1
    assert store.cache_get(key("kept"), 20_000, TTL_MS) == b"other"


def test_a_ttl_of_zero_only_serves_answers_of_the_same_millisecond(store: Store) -> None:
    store.cache_put(key("q"), "security", b"answer", 500)
    assert store.cache_get(key("q"), 500, 0) == b"answer"
    assert store.cache_get(key("q"), 501, 0) is None


def test_an_entry_from_a_clock_running_ahead_is_fresh(store: Store) -> None:
    store.cache_put(key("q"), "security", b"answer", 50_000)
    assert store.cache_get(key("q"), 40_000, 100) == b"answer"


def test_a_negative_ttl_is_refused_and_counts_nothing(store: Store) -> None:
    store.cache_put(key("q"), "security", b"answer", 0)
    with pytest.raises(ValueError, match="TTL"):
        store.cache_get(key("q"), 0, -1)
    with pytest.raises(ValueError, match="TTL"):
        store.cache_stats(0, -1)
    with pytest.raises(ValueError, match="TTL"):
        store.cache_prune(0, -1)
    assert counts(store) == (0, 0)
    assert store.cache_stats(0, 0).entries == 1


def test_a_put_replaces_the_entry_and_restarts_its_age(store: Store) -> None:
    store.cache_put(key("q"), "security", b"old", 1_000)
    store.cache_put(key("q"), "security", b"new", 5_000)
    assert store.cache_get(key("q"), 5_900, 1_000) == b"new"
    stats = store.cache_stats(5_900, 1_000)
    assert (stats.entries, stats.oldest_ms, stats.newest_ms, stats.bytes) == (1, 5_000, 5_000, 3)


def test_answers_survive_closing_and_reopening(store_backend: Backend) -> None:
    with store_backend.open() as first:
        first.cache_put(key("q"), "security", b"answer", 1_000)
        assert first.cache_get(key("nothing"), 1_000, TTL_MS) is None
    with store_backend.open() as second:
        assert second.cache_get(key("q"), 2_000, TTL_MS) == b"answer"
        assert counts(second) == (1, 1)


def test_a_payload_that_is_not_bytes_is_a_store_error(sqlite_store: SqliteStore) -> None:
    store = sqlite_store
    with sqlite3.connect(store.path) as conn:
        conn.execute("INSERT INTO cache VALUES ('k', 'security', 'text, not bytes', 0)")
    with pytest.raises(StoreError, match="has no payload bytes"):
        store.cache_get("k", 0, TTL_MS)
    assert counts(store) == (0, 0)


# --- statistics, clearing and pruning ----------------------------------------------------------


def test_stats_of_an_empty_cache(store: Store) -> None:
    assert store.cache_stats(1_000, TTL_MS) == CacheStats(
        entries=0,
        fresh_entries=0,
        hits=0,
        misses=0,
        hit_rate=None,
        oldest_ms=None,
        newest_ms=None,
        bytes=0,
    )


def test_stats_count_fresh_and_stale_entries_without_removing_any(store: Store) -> None:
    store.cache_put(key("a"), "security", b"12345", 1_000)
    store.cache_put(key("b"), "ux", b"123", 2_000)
    store.cache_put(key("c"), "growth", b"1", 3_000)
    for _ in range(3):
        store.cache_get(key("c"), 3_000, TTL_MS)
    store.cache_get(key("missing"), 3_000, TTL_MS)
    assert store.cache_stats(3_500, 1_500) == CacheStats(
        entries=3,
        fresh_entries=2,
        hits=3,
        misses=1,
        hit_rate=0.75,
        oldest_ms=1_000,
        newest_ms=3_000,
        bytes=9,
    )
    assert store.cache_stats(3_500, 1_500).entries == 3


def test_clear_removes_every_entry_and_resets_the_counters(store: Store) -> None:
    store.cache_put(key("a"), "security", b"x", 1_000)
    store.cache_put(key("b"), "ux", b"y", 1_000)
    store.cache_get(key("a"), 1_000, TTL_MS)
    store.cache_get(key("z"), 1_000, TTL_MS)
    assert store.cache_clear() == 2
    assert store.cache_stats(1_000, TTL_MS) == CacheStats(
        entries=0,
        fresh_entries=0,
        hits=0,
        misses=0,
        hit_rate=None,
        oldest_ms=None,
        newest_ms=None,
        bytes=0,
    )
    assert store.cache_get(key("a"), 1_000, TTL_MS) is None
    assert counts(store) == (0, 1)
    assert store.cache_clear() == 0


def test_prune_removes_only_expired_entries_and_keeps_the_counters(store: Store) -> None:
    store.cache_put(key("old"), "security", b"x", 1_000)
    store.cache_put(key("edge"), "security", b"y", 2_000)
    store.cache_put(key("new"), "security", b"z", 3_000)
    store.cache_get(key("new"), 3_000, TTL_MS)
    assert store.cache_prune(3_000, 1_000) == 1
    assert store.cache_get(key("edge"), 3_000, 1_000) == b"y"
    assert store.cache_stats(3_000, 1_000).entries == 2
    assert counts(store) == (2, 0)


# --- counts shared by stores and processes -----------------------------------------------------


def test_counts_add_up_across_two_stores_on_one_database(store_backend: Backend) -> None:
    with store_backend.open() as one, store_backend.open() as two:
        one.cache_put(key("q"), "security", b"answer", 0)
        assert two.cache_get(key("q"), 1, TTL_MS) == b"answer"
        assert one.cache_get(key("q"), 2, TTL_MS) == b"answer"
        assert two.cache_get(key("none"), 3, TTL_MS) is None
        assert one.cache_get(key("none"), 4, TTL_MS) is None
        assert one.cache_get(key("none"), 5, TTL_MS) is None
        assert counts(one) == counts(two) == (2, 3)
        two.cache_clear()
        assert counts(one) == (0, 0)


LOOKER = (
    WAIT_FOR_GO
    + """
from rmcli.state import open_state

spec, home, worker = sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
with open_state({"RECURSIVEMANAGER_STATE": spec}, home) as store:
    wait_for_go()
    for i in range(25):
        store.cache_get("shared", 1_000, 3_600_000)
        store.cache_get(f"absent-{worker}-{i}", 1_000, 3_600_000)
        store.cache_put(f"own-{worker}-{i}", "ux", b"x" * i, 1_000 + i)
"""
)


def test_four_processes_looking_up_at_once_lose_no_count(store_backend: Backend, tmp_path: Path) -> None:
    """Four OS processes each make 25 hits, 25 misses and 25 puts at the same moment: every
    one is counted, every put is stored, and no process fails (no "database is locked")."""
    with store_backend.open() as store:
        store.cache_put("shared", "security", b"answer", 1_000)
    run_workers(
        LOOKER, [[store_backend.spec, str(store_backend.home), str(n)] for n in range(4)], tmp_path / "go"
    )
    with store_backend.open() as store:
        stats = store.cache_stats(1_000, TTL_MS)
    assert (stats.hits, stats.misses, stats.hit_rate) == (100, 100, 0.5)
    assert stats.entries == 1 + 4 * 25
    assert stats.bytes == len(b"answer") + 4 * sum(range(25))


# --- the schema --------------------------------------------------------------------------------


def test_sqlite_store_satisfies_the_protocol(sqlite_store: SqliteStore) -> None:
    as_protocol: Store = sqlite_store
    as_protocol.cache_put(key("q"), "security", b"answer", 0)
    assert as_protocol.cache_get(key("q"), 0, TTL_MS) == b"answer"
    assert as_protocol.cache_stats(0, TTL_MS).hit_rate == 1.0


def test_cache_and_history_tables_are_indexed(sqlite_store: SqliteStore) -> None:
    with sqlite3.connect(sqlite_store.path) as conn:
        cache_indexes = {row[1] for row in conn.execute("PRAGMA index_list(cache)")}
        history_indexes = {row[1] for row in conn.execute("PRAGMA index_list(history)")}
        agent_created = [row[2] for row in conn.execute("PRAGMA index_info(history_agent_created)")]
    assert "cache_created" in cache_indexes
    assert {"history_agent_created", "history_created"} <= history_indexes
    assert agent_created == ["agent_id", "created_ms"]


def test_a_schema_2_database_is_migrated_and_keeps_its_attempts_and_circuits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database written by the store before the cache and history existed (its migrations
    cut to the first two) is brought up to date on opening, with every row kept."""
    home = tmp_path / "home"
    monkeypatch.setattr(store_module, "_MIGRATIONS", store_module._MIGRATIONS[:2])
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", 2)
    with SqliteStore.open(home) as old:
        old.record_attempts(
            "run-1",
            "ask",
            [
                AttemptRecord(provider="p", model="m", outcome=o, started_at_ms=t)
                for t, o in enumerate(["ok", "timeout", "server_error"])
            ],
        )
        old.record_circuit("p", "timeout", 10.0, 1)
        old.record_circuit("q", "server_error", 11.0, 3)
        attempts, circuits = old.attempts_since(0), old.circuits()
    with sqlite3.connect(home / "state.db") as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (2,)
        new_tables = "SELECT name FROM sqlite_master WHERE name IN ('cache', 'cache_counters', 'history')"
        assert conn.execute(new_tables).fetchall() == []
    monkeypatch.undo()

    with SqliteStore.open(home) as new:
        assert new.attempts_since(0) == attempts
        assert len(attempts) == 3
        assert new.circuits() == circuits
        assert [c.state for c in circuits] == ["open", "closed"]
        new.cache_put(key("q"), "security", b"answer", 0)
        assert new.cache_get(key("q"), 0, TTL_MS) == b"answer"
        entry_id = new.history_add("agent", "q?", "ok", 0.5, 0, b"{}")
        assert [e.id for e in new.history_list(None)] == [entry_id]
    with sqlite3.connect(home / "state.db") as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    with SqliteStore.open(home) as again:
        assert again.attempts_since(0) == attempts
        assert counts(again) == (1, 0)
