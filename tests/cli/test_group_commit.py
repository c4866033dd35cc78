"""``rmcli.group_commit``: writes of one turn committed together, each caller with its own result."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import pytest

from rmcli.group_commit import GroupCommit, WouldWait

pytestmark = pytest.mark.anyio


class Store:
    """A fake connection's ``run``: logs each commit (the writes it held), fails writes asked to."""

    def __init__(self, busy: int = 0) -> None:
        self.commits: list[list[str]] = []
        self.rows: list[str] = []
        self.busy = busy  # how many times ``run_now`` finds the lock held
        self.ways: list[str] = []

    async def run(self, work: Callable[[Store], Any], begin: str | None = None) -> Any:
        await anyio.lowlevel.checkpoint()
        self.ways.append("run")
        return self.commit(work)

    def run_now(self, work: Callable[[Store], Any], begin: str | None = None) -> Any:
        if self.busy:
            self.busy -= 1
            raise WouldWait("the lock is held")
        self.ways.append("now")
        return self.commit(work)

    def commit(self, work: Callable[[Store], Any]) -> Any:
        before = len(self.rows)
        try:
            result = work(self)
        except ValueError:
            del self.rows[before:]  # the transaction is rolled back
            raise
        self.commits.append(self.rows[before:])
        return result


def writer(name: str) -> Callable[[Store], str]:
    def work(store: Store) -> str:
        if name.startswith("bad"):
            raise ValueError(name)
        store.rows.append(name)
        return name.upper()

    return work


async def test_alone_a_write_commits_at_once_and_together_they_share_one_commit() -> None:
    store = Store()
    group = GroupCommit[Store](store.run, "BEGIN")
    assert await group.run(writer("a"), in_flight=[]) == "A"
    results: dict[str, str] = {}

    async def one(name: str) -> None:
        results[name] = await group.run(writer(name), in_flight=[1, 2, 3])

    async with anyio.create_task_group() as tg:
        for name in ("b", "c", "d"):
            tg.start_soon(one, name)
    assert results == {"b": "B", "c": "C", "d": "D"}
    assert store.commits == [["a"], ["b", "c", "d"]]


async def test_a_bad_write_fails_alone_and_the_others_are_still_committed() -> None:
    store = Store()
    group = GroupCommit[Store](store.run, "BEGIN")
    outcomes: dict[str, str] = {}

    async def one(name: str) -> None:
        try:
            outcomes[name] = await group.run(writer(name), in_flight=[1, 2])
        except ValueError as exc:
            outcomes[name] = f"error {exc}"

    async with anyio.create_task_group() as tg:
        for name in ("a", "bad", "c"):
            tg.start_soon(one, name)
    assert outcomes == {"a": "A", "bad": "error bad", "c": "C"}
    assert store.rows == ["a", "c"]


async def test_a_write_whose_caller_is_cancelled_once_it_joined_is_still_committed() -> None:
    store = Store()
    group = GroupCommit[Store](store.run, "BEGIN")

    async def first() -> None:
        await group.run(writer("a"), in_flight=[1, 2])

    async with anyio.create_task_group() as tg:
        tg.start_soon(first)
        await anyio.lowlevel.checkpoint()  # the first write is gathering
        with anyio.CancelScope() as scope:
            scope.cancel()
            await group.run(writer("b"), in_flight=[1, 2])
    assert store.rows == ["a", "b"]


async def together(group: GroupCommit[Store], names: list[str]) -> dict[str, str]:
    results: dict[str, str] = {}

    async def one(name: str) -> None:
        results[name] = await group.run(writer(name), in_flight=names)

    async with anyio.create_task_group() as tg:
        for name in names:
            tg.start_soon(one, name)
    return results


async def test_a_store_that_can_commit_at_once_commits_the_turns_writes_without_a_task() -> None:
    store = Store()
    group = GroupCommit[Store](store.run, "BEGIN", store.run_now)
    assert await together(group, ["a", "b", "c"]) == {"a": "A", "b": "B", "c": "C"}
    assert store.commits == [["a", "b", "c"]]
    assert store.ways == ["now"]


async def test_writes_the_store_cannot_commit_at_once_are_committed_once_it_can() -> None:
    store = Store(busy=1)
    group = GroupCommit[Store](store.run, "BEGIN", store.run_now)
    assert await together(group, ["a", "b"]) == {"a": "A", "b": "B"}
    assert store.commits == [["a", "b"]]
    assert store.ways == ["run"]
