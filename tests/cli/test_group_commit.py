"""``rmcli.group_commit``: writes of one turn committed together, each caller with its own result."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import pytest

from rmcli.group_commit import GroupCommit

pytestmark = pytest.mark.anyio


class Store:
    """A fake connection's ``run``: logs each commit (the writes it held), fails writes asked to."""

    def __init__(self) -> None:
        self.commits: list[list[str]] = []
        self.rows: list[str] = []

    async def run(self, work: Callable[[Store], Any], begin: str | None = None) -> Any:
        await anyio.lowlevel.checkpoint()
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
