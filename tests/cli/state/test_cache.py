"""The answer cache on every backend: the TTL, and hit and miss counts shared by processes."""

from __future__ import annotations

import hashlib

import pytest

from rmcli.state import CacheStats, State
from tests.cli.state.backends import WAIT_FOR_GO, Backend, run_workers

pytestmark = pytest.mark.anyio

TTL_MS = 3_600_000
EMPTY = CacheStats(
    entries=0, fresh_entries=0, hits=0, misses=0, hit_rate=None, oldest_ms=None, newest_ms=None, bytes=0
)


def key(question: str, perspective: str = "security") -> str:
    return hashlib.sha256(f"{perspective}\n{question}".encode()).hexdigest()


async def counts(state: State) -> tuple[int, int]:
    stats = await state.cache.stats(0, TTL_MS)
    return stats.hits, stats.misses


async def test_a_stored_answer_comes_back_byte_for_byte_and_counts_a_hit(state: State) -> None:
    """Payloads are opaque bytes, returned exactly; a lookup that finds one is a hit."""
    payload = b'{"analysis": "fine", "confidence": 0.8}\x00\xff'
    await state.cache.put(key("q"), "security", payload, 1_000)
    assert await state.cache.get(key("q"), 1_000, TTL_MS) == payload
    assert await counts(state) == (1, 0)


async def test_an_unknown_key_is_a_miss(state: State) -> None:
    """A key never stored is a miss."""
    await state.cache.put(key("q"), "security", b"{}", 1_000)
    assert await state.cache.get(key("other"), 1_000, TTL_MS) is None
    assert await state.cache.get(key("q", "ux"), 1_000, TTL_MS) is None
    assert await counts(state) == (0, 2)


async def test_an_entry_exactly_ttl_old_is_fresh_one_millisecond_more_is_not(state: State) -> None:
    """The TTL is inclusive."""
    await state.cache.put(key("q"), "security", b"answer", 10_000)
    assert await state.cache.get(key("q"), 10_100, 100) == b"answer"
    assert await state.cache.get(key("q"), 10_101, 100) is None
    assert await counts(state) == (1, 1)


async def test_an_expired_entry_is_a_miss_and_is_removed(state: State) -> None:
    """Once found expired the entry is gone: a longer TTL asked later does not bring it back."""
    await state.cache.put(key("q"), "security", b"answer", 10_000)
    await state.cache.put(key("kept"), "ux", b"other", 10_000)
    assert await state.cache.get(key("q"), 20_000, 5_000) is None
    assert await state.cache.get(key("q"), 20_000, TTL_MS) is None
    assert (await state.cache.stats(20_000, TTL_MS)).entries == 1
    assert await state.cache.get(key("kept"), 20_000, TTL_MS) == b"other"


async def test_a_ttl_of_zero_and_a_clock_running_ahead(state: State) -> None:
    """A TTL of zero serves only answers of the same millisecond; one stored "later" is fresh."""
    await state.cache.put(key("q"), "security", b"answer", 500)
    assert await state.cache.get(key("q"), 500, 0) == b"answer"
    assert await state.cache.get(key("q"), 501, 0) is None
    await state.cache.put(key("q"), "security", b"answer", 50_000)
    assert await state.cache.get(key("q"), 40_000, 100) == b"answer"


async def test_a_negative_ttl_is_refused_and_counts_nothing(state: State) -> None:
    """A negative TTL is a ``ValueError`` from every method that takes one."""
    await state.cache.put(key("q"), "security", b"answer", 0)
    with pytest.raises(ValueError, match="TTL"):
        await state.cache.get(key("q"), 0, -1)
    with pytest.raises(ValueError, match="TTL"):
        await state.cache.stats(0, -1)
    with pytest.raises(ValueError, match="TTL"):
        await state.cache.prune(0, -1)
    assert await counts(state) == (0, 0)
    assert (await state.cache.stats(0, 0)).entries == 1


async def test_a_put_replaces_the_entry_and_restarts_its_age(state: State) -> None:
    """A put of a stored key replaces payload and age."""
    await state.cache.put(key("q"), "security", b"old", 1_000)
    await state.cache.put(key("q"), "security", b"new", 5_000)
    assert await state.cache.get(key("q"), 5_900, 1_000) == b"new"
    stats = await state.cache.stats(5_900, 1_000)
    assert (stats.entries, stats.oldest_ms, stats.newest_ms, stats.bytes) == (1, 5_000, 5_000, 3)


async def test_answers_survive_closing_and_reopening(backend: Backend) -> None:
    """Answers and counts outlive the state that stored them."""
    async with backend.open() as first:
        await first.cache.put(key("q"), "security", b"answer", 1_000)
        assert await first.cache.get(key("nothing"), 1_000, TTL_MS) is None
    async with backend.open() as second:
        assert await second.cache.get(key("q"), 2_000, TTL_MS) == b"answer"
        assert await counts(second) == (1, 1)


async def test_stats_count_fresh_and_stale_entries_without_removing_any(state: State) -> None:
    """Stats count entries, fresh ones, lookups, ages and bytes, and change nothing."""
    assert await state.cache.stats(1_000, TTL_MS) == EMPTY
    await state.cache.put(key("a"), "security", b"12345", 1_000)
    await state.cache.put(key("b"), "ux", b"123", 2_000)
    await state.cache.put(key("c"), "growth", b"1", 3_000)
    for _ in range(3):
        await state.cache.get(key("c"), 3_000, TTL_MS)
    await state.cache.get(key("missing"), 3_000, TTL_MS)
    expected = CacheStats(
        entries=3, fresh_entries=2, hits=3, misses=1, hit_rate=0.75, oldest_ms=1_000, newest_ms=3_000, bytes=9
    )
    assert await state.cache.stats(3_500, 1_500) == expected
    assert await state.cache.stats(3_500, 1_500) == expected


async def test_clear_removes_every_entry_and_resets_the_counters(state: State) -> None:
    """Statistics start afresh with the cache."""
    await state.cache.put(key("a"), "security", b"x", 1_000)
    await state.cache.put(key("b"), "ux", b"y", 1_000)
    await state.cache.get(key("a"), 1_000, TTL_MS)
    await state.cache.get(key("z"), 1_000, TTL_MS)
    assert await state.cache.clear() == 2
    assert await state.cache.stats(1_000, TTL_MS) == EMPTY
    assert await state.cache.get(key("a"), 1_000, TTL_MS) is None
    assert await counts(state) == (0, 1)
    assert await state.cache.clear() == 0


async def test_prune_removes_only_expired_entries_and_keeps_the_counters(state: State) -> None:
    """Pruning removes what ``get`` would no longer return, and counts nothing."""
    await state.cache.put(key("old"), "security", b"x", 1_000)
    await state.cache.put(key("edge"), "security", b"y", 2_000)
    await state.cache.put(key("new"), "security", b"z", 3_000)
    await state.cache.get(key("new"), 3_000, TTL_MS)
    assert await state.cache.prune(3_000, 1_000) == 1
    assert await state.cache.get(key("edge"), 3_000, 1_000) == b"y"
    assert (await state.cache.stats(3_000, 1_000)).entries == 2
    assert await counts(state) == (2, 0)


LOOKER = (
    WAIT_FOR_GO
    + """
async def main(worker: int) -> None:
    async with await open_it() as state:
        wait_for_go()
        for i in range(25):
            await state.cache.get("shared", 1_000, 3_600_000)
            await state.cache.get(f"absent-{worker}-{i}", 1_000, 3_600_000)
            await state.cache.put(f"own-{worker}-{i}", "ux", b"x" * i, 1_000 + i)

anyio.run(main, int(sys.argv[4]))
"""
)


async def test_four_processes_looking_up_at_once_lose_no_count(backend: Backend) -> None:
    """Four OS processes each make 25 hits, 25 misses and 25 puts at the same moment: every one
    is counted, every put is stored, and no process fails (no "database is locked")."""
    async with backend.open() as state:
        await state.cache.put("shared", "security", b"answer", 1_000)
    run_workers(
        LOOKER, [[backend.spec, str(backend.home), str(n)] for n in range(4)], backend.home.parent / "go"
    )
    async with backend.open() as state:
        stats = await state.cache.stats(1_000, TTL_MS)
    assert (stats.hits, stats.misses, stats.hit_rate) == (100, 100, 0.5)
    assert (stats.entries, stats.bytes) == (1 + 4 * 25, len(b"answer") + 4 * sum(range(25)))
