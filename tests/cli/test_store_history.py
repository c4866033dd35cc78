"""The analysis history in the state store (every backend): listing and its filters, ids and
their prefixes, statistics, deleting, export, and processes saving at once."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

import rmcli.store as store_module
from rmcli.store import HISTORY_ID_MIN_PREFIX, HistoryEntry, HistoryStats, SqliteStore, Store, StoreError
from tests.cli.state_backends import WAIT_FOR_GO, Backend, run_workers


@pytest.fixture
def store(store_backend: Backend) -> Iterator[Store]:
    """A store of each backend in turn."""
    with store_backend.open() as opened:
        yield opened


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SqliteStore]:
    with SqliteStore.open(tmp_path / "home") as opened:
        yield opened


@pytest.fixture
def ids(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ids the store will draw next, in order (a test appends them before saving)."""
    queue: list[str] = []
    monkeypatch.setattr(store_module, "_new_history_id", lambda: queue.pop(0))
    return queue


def add(
    store: Store,
    agent: str = "agent-1",
    *,
    at: int = 1_000,
    confidence: float | None = 0.5,
    status: str = "ok",
    question: str = "Should we adopt Rust?",
) -> str:
    return store.history_add(agent, question, status, confidence, at, f'{{"at": {at}}}'.encode())


def listed(entries: list[HistoryEntry]) -> list[int]:
    return [entry.created_ms for entry in entries]


# --- saving and reading back -------------------------------------------------------------------


def test_an_entry_reads_back_field_for_field_with_its_payload(store: Store) -> None:
    payload = '{"question": "Ünïcode?", "bytes": "\\u0000"}'.encode() + b"\xff"
    entry_id = store.history_add("agent-1", "Ünïcode?", "partial", 0.625, 1_234, payload)
    assert re.fullmatch(r"[0-9a-f]{12}", entry_id)
    expected = HistoryEntry(
        id=entry_id,
        agent_id="agent-1",
        question="Ünïcode?",
        status="partial",
        overall_confidence=0.625,
        created_ms=1_234,
    )
    assert store.history_get(entry_id) == (expected, payload)
    assert store.history_list("agent-1") == [expected]


def test_ids_are_distinct(store: Store) -> None:
    assert len({add(store) for _ in range(50)}) == 50


def test_an_unknown_confidence_is_kept_unknown(store: Store) -> None:
    entry_id = add(store, confidence=None)
    found = store.history_get(entry_id)
    assert found is not None
    assert found[0].overall_confidence is None


@pytest.mark.parametrize("confidence", [1.5, -0.1, float("nan"), float("inf")])
def test_a_confidence_outside_0_to_1_is_refused_and_nothing_saved(store: Store, confidence: float) -> None:
    with pytest.raises(ValueError, match="overall confidence"):
        add(store, confidence=confidence)
    assert store.history_list(None) == []


def test_confidences_0_and_1_are_accepted(store: Store) -> None:
    add(store, confidence=0.0, at=1)
    add(store, confidence=1.0, at=2)
    assert [e.overall_confidence for e in store.history_list(None)] == [1.0, 0.0]


def test_an_id_already_taken_is_drawn_again(store: Store, ids: list[str]) -> None:
    ids.extend(["aaaa00000001", "aaaa00000001", "aaaa00000001", "bbbb00000002"])
    assert add(store) == "aaaa00000001"
    assert add(store) == "bbbb00000002"
    assert ids == []


def test_an_id_never_free_is_a_store_error_and_saves_nothing(store: Store, ids: list[str]) -> None:
    ids.extend(["aaaa00000001"] * 20)
    add(store)
    with pytest.raises(StoreError, match="no free history id"):
        add(store, agent="other")
    assert [e.agent_id for e in store.history_list(None)] == ["agent-1"]


def test_entries_survive_closing_and_reopening(store_backend: Backend) -> None:
    with store_backend.open() as first:
        entry_id = add(first, at=7)
    with store_backend.open() as second:
        found = second.history_get(entry_id)
        assert found is not None
        assert (found[0].created_ms, found[1]) == (7, b'{"at": 7}')


def test_an_impossible_stored_entry_is_a_store_error(sqlite_store: SqliteStore) -> None:
    store = sqlite_store
    with sqlite3.connect(store.path) as conn:
        conn.execute(
            "INSERT INTO history (id, agent_id, question, status, overall_confidence, created_ms, payload)"
            " VALUES ('abcdabcdabcd', 'a', 'q', 'ok', NULL, 'yesterday', x'00')"
        )
    with pytest.raises(StoreError, match="history entry 'abcdabcdabcd' is impossible"):
        store.history_list(None)


# --- listing -----------------------------------------------------------------------------------


def test_newest_first_and_the_last_saved_first_within_a_millisecond(store: Store) -> None:
    first = add(store, at=2_000)
    add(store, at=1_000)
    second = add(store, at=2_000)
    add(store, at=3_000)
    entries = store.history_list("agent-1")
    assert listed(entries) == [3_000, 2_000, 2_000, 1_000]
    assert [entries[1].id, entries[2].id] == [second, first]


def test_list_of_one_agent_or_of_all(store: Store) -> None:
    add(store, "a", at=1)
    add(store, "b", at=2)
    add(store, "a", at=3)
    assert listed(store.history_list("a")) == [3, 1]
    assert listed(store.history_list("b")) == [2]
    assert listed(store.history_list("nobody")) == []
    assert [(e.agent_id, e.created_ms) for e in store.history_list(None)] == [("a", 3), ("b", 2), ("a", 1)]


def test_min_confidence_is_inclusive_and_excludes_unknown(store: Store) -> None:
    for at, confidence in enumerate([0.2, 0.5, None, 0.9, 0.49999]):
        add(store, at=at, confidence=confidence)
    assert listed(store.history_list("agent-1", min_confidence=0.5)) == [3, 1]
    assert listed(store.history_list("agent-1", min_confidence=0.0)) == [4, 3, 1, 0]
    assert listed(store.history_list("agent-1")) == [4, 3, 2, 1, 0]


def test_since_is_inclusive_and_before_exclusive(store: Store) -> None:
    for at in (100, 200, 300, 400):
        add(store, at=at)
    assert listed(store.history_list("agent-1", since_ms=200)) == [400, 300, 200]
    assert listed(store.history_list("agent-1", before_ms=300)) == [200, 100]
    assert listed(store.history_list("agent-1", since_ms=200, before_ms=400)) == [300, 200]


def test_limit_keeps_the_newest(store: Store) -> None:
    for at in (100, 200, 300, 400):
        add(store, at=at)
    assert listed(store.history_list("agent-1", limit=2)) == [400, 300]
    assert listed(store.history_list("agent-1", limit=10)) == [400, 300, 200, 100]
    assert store.history_list("agent-1", limit=0) == []
    with pytest.raises(ValueError, match="limit"):
        store.history_list("agent-1", limit=-1)


def test_filters_combine(store: Store) -> None:
    add(store, "a", at=100, confidence=0.9)
    add(store, "a", at=200, confidence=0.3)
    add(store, "a", at=300, confidence=0.8)
    add(store, "b", at=400, confidence=0.95)
    add(store, "a", at=500, confidence=0.85)
    assert listed(store.history_list("a", min_confidence=0.8, since_ms=150, limit=1)) == [500]
    assert listed(store.history_list("a", min_confidence=0.8, since_ms=150)) == [500, 300]
    assert listed(store.history_list(None, min_confidence=0.8, since_ms=150)) == [500, 400, 300]


# --- ids and prefixes --------------------------------------------------------------------------


def test_a_unique_prefix_names_one_entry(store: Store, ids: list[str]) -> None:
    ids.extend(["abcd00000001", "abcd00000002", "abce00000003"])
    for at in range(3):
        add(store, at=at)
    assert store.history_resolve("abce") == ["abce00000003"]
    found = store.history_get("abce")
    assert found is not None
    assert found[0].id == "abce00000003"
    assert store.history_get("ABCD00000002") is not None
    assert store.history_resolve(" AbCd00000001 ") == ["abcd00000001"]


def test_an_ambiguous_prefix_names_several_and_gets_nothing(store: Store, ids: list[str]) -> None:
    ids.extend(["abcd00000002", "abcd00000001", "abce00000003"])
    for at in range(3):
        add(store, at=at)
    assert store.history_resolve("abcd") == ["abcd00000001", "abcd00000002"]
    assert store.history_resolve("abc") == []
    assert store.history_get("abcd") is None
    assert store.history_get("abcd0000000") is None
    assert store.history_get("abcd00000001") is not None


def test_too_short_or_not_hex_or_unknown_names_nothing(store: Store, ids: list[str]) -> None:
    ids.append("abcd00000001")
    add(store)
    assert HISTORY_ID_MIN_PREFIX == 4
    for reference in ("", "a", "abc", "abcd*", "abc?", "abcd%", "zzzz", "abcd00000001x", "bcd0"):
        assert store.history_resolve(reference) == [], reference
        assert store.history_get(reference) is None, reference


def test_an_id_that_is_not_hex_is_still_found_exactly(sqlite_store: SqliteStore) -> None:
    """Ids are found by exact match first, whatever their form (prefixes must be hex)."""
    store = sqlite_store
    with sqlite3.connect(store.path) as conn:
        conn.execute(
            "INSERT INTO history (id, agent_id, question, status, overall_confidence, created_ms, payload)"
            " VALUES ('imported-1', 'a', 'q', 'ok', NULL, 5, x'7b7d')"
        )
    assert store.history_resolve("imported-1") == ["imported-1"]
    found = store.history_get("imported-1")
    assert found is not None
    assert found[1] == b"{}"
    assert store.history_resolve("impo") == []


# --- statistics --------------------------------------------------------------------------------


def test_stats_of_no_entries(store: Store) -> None:
    assert store.history_stats(None) == HistoryStats(
        total=0,
        by_status={},
        with_confidence=0,
        average_confidence=None,
        min_confidence=None,
        max_confidence=None,
        first_ms=None,
        last_ms=None,
    )


def test_stats_count_statuses_and_summarise_known_confidences(store: Store) -> None:
    add(store, "a", at=300, confidence=0.5, status="ok")
    add(store, "a", at=100, confidence=None, status="failed")
    add(store, "a", at=200, confidence=0.25, status="partial")
    add(store, "a", at=400, confidence=0.75, status="ok")
    add(store, "b", at=50, confidence=1.0, status="ok")
    stats = store.history_stats("a")
    assert stats == HistoryStats(
        total=4,
        by_status={"failed": 1, "ok": 2, "partial": 1},
        with_confidence=3,
        average_confidence=0.5,  # (0.5 + 0.25 + 0.75) / 3, exact in binary
        min_confidence=0.25,
        max_confidence=0.75,
        first_ms=100,
        last_ms=400,
    )
    assert list(stats.by_status) == ["failed", "ok", "partial"]
    everyone = store.history_stats(None)
    assert (everyone.total, everyone.by_status["ok"], everyone.first_ms, everyone.max_confidence) == (
        5,
        3,
        50,
        1.0,
    )


def test_stats_when_no_confidence_is_known(store: Store) -> None:
    add(store, at=10, confidence=None, status="failed")
    stats = store.history_stats("agent-1")
    assert (stats.total, stats.with_confidence, stats.average_confidence, stats.min_confidence) == (
        1,
        0,
        None,
        None,
    )
    assert (stats.first_ms, stats.last_ms) == (10, 10)


# --- deleting ----------------------------------------------------------------------------------


def test_delete_by_id_or_unique_prefix(store: Store, ids: list[str]) -> None:
    ids.extend(["abcd00000001", "abcd00000002", "ef0100000003"])
    for at in range(3):
        add(store, at=at)
    assert store.history_delete("abcd00000001") is True
    assert store.history_delete("abcd00000001") is False
    assert store.history_delete("EF01") is True
    assert [e.id for e in store.history_list(None)] == ["abcd00000002"]


def test_an_ambiguous_or_unknown_delete_deletes_nothing(store: Store, ids: list[str]) -> None:
    ids.extend(["abcd00000001", "abcd00000002"])
    add(store, at=1)
    add(store, at=2)
    assert store.history_delete("abcd") is False
    assert store.history_delete("abc") is False
    assert store.history_delete("9999") is False
    assert len(store.history_list(None)) == 2


def test_clear_one_agent(store: Store) -> None:
    for at in (1, 2, 3):
        add(store, "a", at=at)
    add(store, "b", at=4)
    assert store.history_clear("a") == 3
    assert [e.agent_id for e in store.history_list(None)] == ["b"]
    assert store.history_clear("a") == 0


def test_clear_before_a_date_is_strictly_before(store: Store) -> None:
    for at in (100, 200, 300):
        add(store, "a", at=at)
        add(store, "b", at=at)
    assert store.history_clear("a", before_ms=200) == 1
    assert listed(store.history_list("a")) == [300, 200]
    assert store.history_clear(None, before_ms=300) == 3
    assert [(e.agent_id, e.created_ms) for e in store.history_list(None)] == [("b", 300), ("a", 300)]


def test_clear_everything(store: Store) -> None:
    add(store, "a")
    add(store, "b")
    assert store.history_clear(None) == 2
    assert store.history_stats(None).total == 0


# --- export ------------------------------------------------------------------------------------


def test_export_is_one_agent_oldest_first_with_payloads(store: Store) -> None:
    late = add(store, "a", at=300)
    early = add(store, "a", at=100)
    add(store, "b", at=200)
    same_ms = add(store, "a", at=300)
    exported = store.history_export("a")
    assert [(entry.id, entry.created_ms) for entry, _ in exported] == [
        (early, 100),
        (late, 300),
        (same_ms, 300),
    ]
    assert [payload for _, payload in exported] == [b'{"at": 100}', b'{"at": 300}', b'{"at": 300}']
    assert {entry.agent_id for entry, _ in exported} == {"a"}
    assert store.history_export("nobody") == []


def test_the_store_satisfies_the_protocol(store: Store) -> None:
    as_protocol: Store = store
    entry_id = add(as_protocol, at=1)
    assert as_protocol.history_resolve(entry_id[:4]) == [entry_id]
    assert [e.id for e, _ in as_protocol.history_export("agent-1")] == [entry_id]
    assert as_protocol.history_delete(entry_id) is True


# --- processes at once -------------------------------------------------------------------------

SAVER = (
    WAIT_FOR_GO
    + """
from rmcli.state import open_state

spec, home, worker = sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
with open_state({"RECURSIVEMANAGER_STATE": spec}, home) as store:
    wait_for_go()
    for i in range(30):
        store.history_add(f"agent-{worker}", f"question {i}", "ok", i / 30, i, str(i).encode())
"""
)


def test_two_processes_saving_at_once_both_land(store_backend: Backend, tmp_path: Path) -> None:
    """Two OS processes open the same new store at the same moment and each save 30 analyses:
    all 60 are there, with distinct ids, and neither process fails."""
    run_workers(
        SAVER, [[store_backend.spec, str(store_backend.home), str(n)] for n in range(2)], tmp_path / "go"
    )
    with store_backend.open() as opened:
        everything = opened.history_list(None)
        assert len({entry.id for entry in everything}) == 60
        for n in range(2):
            exported = opened.history_export(f"agent-{n}")
            assert [payload for _, payload in exported] == [str(i).encode() for i in range(30)]
