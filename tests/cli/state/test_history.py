"""The analysis history on every backend: listing and its filters, ids and their prefixes,
statistics, deleting, export, and processes saving at once."""

from __future__ import annotations

import re

import pytest

from rmcli.state import HISTORY_ID_MIN_PREFIX, HistoryEntry, HistoryStats, State, StoreError
from rmcli.state import rules as rules_module
from tests.cli.state.backends import WAIT_FOR_GO, Backend, run_workers

pytestmark = pytest.mark.anyio


@pytest.fixture
def ids(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ids the state will draw next, in order (a test appends them before saving)."""
    queue: list[str] = []
    monkeypatch.setattr(rules_module, "new_history_id", lambda: queue.pop(0))
    return queue


async def add(
    state: State,
    agent: str = "agent-1",
    *,
    at: int = 1_000,
    confidence: float | None = 0.5,
    status: str = "ok",
) -> str:
    return await state.history.add(
        agent, "Should we adopt Rust?", status, confidence, at, f'{{"at": {at}}}'.encode()
    )


def listed(entries: list[HistoryEntry]) -> list[int]:
    return [entry.created_ms for entry in entries]


async def test_an_entry_reads_back_field_for_field_with_its_payload(state: State) -> None:
    """Every field and the payload's bytes survive; ids are 12 lowercase hex digits."""
    payload = '{"question": "Ünïcode?", "bytes": "\\u0000"}'.encode() + b"\xff"
    entry_id = await state.history.add("agent-1", "Ünïcode?", "partial", 0.625, 1_234, payload)
    assert re.fullmatch(r"[0-9a-f]{12}", entry_id)
    expected = HistoryEntry(
        id=entry_id,
        agent_id="agent-1",
        question="Ünïcode?",
        status="partial",
        overall_confidence=0.625,
        created_ms=1_234,
    )
    assert await state.history.get(entry_id) == (expected, payload)
    assert await state.history.list("agent-1") == [expected]


async def test_ids_are_distinct_and_an_unknown_confidence_stays_unknown(state: State) -> None:
    """Fifty saves, fifty ids; a None confidence reads back None."""
    assert len({await add(state) for _ in range(50)}) == 50
    found = await state.history.get(await add(state, confidence=None))
    assert found is not None and found[0].overall_confidence is None


@pytest.mark.parametrize("confidence", [1.5, -0.1, float("nan"), float("inf")])
async def test_a_confidence_outside_0_to_1_is_refused_and_nothing_saved(
    state: State, confidence: float
) -> None:
    """A confidence that is no probability is a ``ValueError``."""
    with pytest.raises(ValueError, match="overall confidence"):
        await add(state, confidence=confidence)
    assert await state.history.list(None) == []


async def test_an_id_already_taken_is_drawn_again(state: State, ids: list[str]) -> None:
    """A random id that is taken is drawn again; one never free is a ``StoreError``, saving nothing."""
    ids.extend(["aaaa00000001", "aaaa00000001", "aaaa00000001", "bbbb00000002"])
    assert await add(state) == "aaaa00000001"
    assert await add(state) == "bbbb00000002"
    assert ids == []
    ids.extend(["aaaa00000001"] * 20)
    with pytest.raises(StoreError, match="no free history id"):
        await add(state, agent="other")
    assert {e.agent_id for e in await state.history.list(None)} == {"agent-1"}


async def test_entries_survive_closing_and_reopening(backend: Backend) -> None:
    """An entry outlives the state that saved it."""
    async with backend.open() as first:
        entry_id = await add(first, at=7)
    async with backend.open() as second:
        found = await second.history.get(entry_id)
        assert found is not None and (found[0].created_ms, found[1]) == (7, b'{"at": 7}')


async def test_newest_first_and_the_last_saved_first_within_a_millisecond(state: State) -> None:
    """Listing is newest first; entries of one millisecond, the last saved first."""
    first = await add(state, at=2_000)
    await add(state, at=1_000)
    second = await add(state, at=2_000)
    await add(state, at=3_000)
    entries = await state.history.list("agent-1")
    assert listed(entries) == [3_000, 2_000, 2_000, 1_000]
    assert [entries[1].id, entries[2].id] == [second, first]


async def test_list_of_one_agent_or_of_all(state: State) -> None:
    """One agent's entries, or (None) everyone's."""
    await add(state, "a", at=1)
    await add(state, "b", at=2)
    await add(state, "a", at=3)
    assert listed(await state.history.list("a")) == [3, 1]
    assert listed(await state.history.list("nobody")) == []
    assert [(e.agent_id, e.created_ms) for e in await state.history.list(None)] == [
        ("a", 3),
        ("b", 2),
        ("a", 1),
    ]


async def test_filters_and_limit(state: State) -> None:
    """``min_confidence`` is inclusive and excludes unknown ones, ``since_ms`` is inclusive,
    ``limit`` keeps the newest, and they combine; a negative limit is a ``ValueError``."""
    for at, confidence in enumerate([0.2, 0.5, None, 0.9, 0.49999]):
        await add(state, at=at * 100, confidence=confidence)
    await add(state, "zero", at=0, confidence=0.0)
    assert listed(await state.history.list("agent-1", min_confidence=0.5)) == [300, 100]
    assert listed(await state.history.list("agent-1", min_confidence=0.0)) == [400, 300, 100, 0]
    assert listed(await state.history.list("zero", min_confidence=0.0)) == [0]
    assert listed(await state.history.list("agent-1", since_ms=200)) == [400, 300, 200]
    assert listed(await state.history.list("agent-1", limit=2)) == [400, 300]
    assert listed(await state.history.list("agent-1", limit=10)) == [400, 300, 200, 100, 0]
    assert await state.history.list("agent-1", limit=0) == []
    assert listed(await state.history.list("agent-1", min_confidence=0.5, since_ms=50, limit=1)) == [300]
    assert listed(await state.history.list(None, min_confidence=0.45, since_ms=150)) == [400, 300]
    with pytest.raises(ValueError, match="limit"):
        await state.history.list("agent-1", limit=-1)


async def test_a_unique_prefix_names_one_entry_and_an_ambiguous_one_none(
    state: State, ids: list[str]
) -> None:
    """A hex prefix of ``HISTORY_ID_MIN_PREFIX``+ digits (either case, spaces trimmed) names the ids
    it starts; ``get`` needs exactly one."""
    ids.extend(["abcd00000002", "abcd00000001", "abce00000003"])
    for at in range(3):
        await add(state, at=at)
    assert await state.history.resolve("abce") == ["abce00000003"]
    found = await state.history.get("abce")
    assert found is not None and found[0].id == "abce00000003"
    assert await state.history.get("ABCD00000002") is not None
    assert await state.history.resolve(" AbCd00000001 ") == ["abcd00000001"]
    assert await state.history.resolve("abcd") == ["abcd00000001", "abcd00000002"]
    assert await state.history.get("abcd") is None


async def test_too_short_or_not_hex_or_unknown_names_nothing(state: State, ids: list[str]) -> None:
    """References that cannot be a prefix, or match nothing, name nothing."""
    ids.append("abcd00000001")
    await add(state)
    assert HISTORY_ID_MIN_PREFIX == 4
    for reference in ("", "a", "abc", "abcd*", "abc?", "abcd%", "zzzz", "abcd00000001x", "bcd0"):
        assert await state.history.resolve(reference) == [], reference
        assert await state.history.get(reference) is None, reference


async def test_stats_count_statuses_and_summarise_known_confidences(state: State) -> None:
    """Counts per status (by name), and average, minimum and maximum over known confidences."""
    assert await state.history.stats(None) == HistoryStats(
        total=0,
        by_status={},
        with_confidence=0,
        average_confidence=None,
        min_confidence=None,
        max_confidence=None,
        first_ms=None,
        last_ms=None,
    )
    await add(state, "a", at=300, confidence=0.5, status="ok")
    await add(state, "a", at=100, confidence=None, status="failed")
    await add(state, "a", at=200, confidence=0.25, status="partial")
    await add(state, "a", at=400, confidence=0.75, status="ok")
    await add(state, "b", at=50, confidence=1.0, status="ok")
    stats = await state.history.stats("a")
    assert stats == HistoryStats(
        total=4,
        by_status={"failed": 1, "ok": 2, "partial": 1},
        with_confidence=3,
        average_confidence=0.5,
        min_confidence=0.25,
        max_confidence=0.75,
        first_ms=100,
        last_ms=400,
    )
    assert list(stats.by_status) == ["failed", "ok", "partial"]
    everyone = await state.history.stats(None)
    assert (everyone.total, everyone.by_status["ok"], everyone.first_ms, everyone.max_confidence) == (
        5,
        3,
        50,
        1.0,
    )


async def test_delete_by_id_or_unique_prefix(state: State, ids: list[str]) -> None:
    """One entry named exactly is deleted; an ambiguous or unknown reference deletes nothing."""
    ids.extend(["abcd00000001", "abcd00000002", "ef0100000003"])
    for at in range(3):
        await add(state, at=at)
    assert await state.history.delete("abcd") is False
    assert await state.history.delete("9999") is False
    assert await state.history.delete("abcd00000001") is True
    assert await state.history.delete("abcd00000001") is False
    assert await state.history.delete("EF01") is True
    assert [e.id for e in await state.history.list(None)] == ["abcd00000002"]
    assert await state.history.resolve("abcd") == ["abcd00000002"]


async def test_clear_one_agent_or_all_before_a_date(state: State) -> None:
    """Clearing deletes one agent's entries (or all), those strictly before ``before_ms`` when given."""
    for at in (100, 200, 300):
        await add(state, "a", at=at)
        await add(state, "b", at=at)
    assert await state.history.clear("a", before_ms=200) == 1
    assert listed(await state.history.list("a")) == [300, 200]
    assert await state.history.clear(None, before_ms=300) == 3
    assert [(e.agent_id, e.created_ms) for e in await state.history.list(None)] == [("b", 300), ("a", 300)]
    assert await state.history.clear("a") == 1
    assert await state.history.clear("a") == 0
    assert await state.history.clear(None) == 1
    assert (await state.history.stats(None)).total == 0


async def test_export_is_one_agent_oldest_first_with_payloads(state: State) -> None:
    """Export gives one agent's entries with payloads, oldest first, in the order saved."""
    late = await add(state, "a", at=300)
    early = await add(state, "a", at=100)
    await add(state, "b", at=200)
    same_ms = await add(state, "a", at=300)
    exported = await state.history.export("a")
    assert [(entry.id, entry.created_ms) for entry, _ in exported] == [
        (early, 100),
        (late, 300),
        (same_ms, 300),
    ]
    assert [payload for _, payload in exported] == [b'{"at": 100}', b'{"at": 300}', b'{"at": 300}']
    assert await state.history.export("nobody") == []


SAVER = (
    WAIT_FOR_GO
    + """
async def main(worker: int) -> None:
    async with await open_it() as state:
        wait_for_go()
        for i in range(30):
            await state.history.add(f"agent-{worker}", f"question {i}", "ok", i / 30, i, str(i).encode())

anyio.run(main, int(sys.argv[4]))
"""
)


async def test_two_processes_saving_at_once_both_land(backend: Backend) -> None:
    """Two OS processes open the same new state at the same moment and each save 30 analyses:
    all 60 are there, with distinct ids, and neither process fails."""
    run_workers(
        SAVER, [[backend.spec, str(backend.home), str(n)] for n in range(2)], backend.home.parent / "go"
    )
    async with backend.open() as state:
        assert len({entry.id for entry in await state.history.list(None)}) == 60
        for n in range(2):
            exported = await state.history.export(f"agent-{n}")
            assert [payload for _, payload in exported] == [str(i).encode() for i in range(30)]
