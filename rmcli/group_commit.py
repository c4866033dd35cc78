"""Group commit: the writes that tasks of one process issue in the same turn of the event loop,
committed in one transaction instead of one each.

A store that commits each write on its own pays the commit (a lock, the journal's frames, the
file's index) once per write. ``GroupCommit`` lets the writes that arrive together share it: the
first write of a turn, when the caller says others are likely (``gather``), yields the loop once
so the tasks ready in the same turn add theirs, then commits them all in one transaction. Every
caller still returns only once its own write is committed, so nothing is acknowledged before it
is stored: a process killed at any moment loses only writes whose callers were still waiting,
and those callers had not gone on (an attempt's request had not left). A write that joined a
group is committed whatever happens to its caller (the wait is shielded from cancellation).

When the whole group fails (a lock held past the wait, a bad row), each write is tried alone,
so one bad write does not fail the others, and each caller gets its own result or error.

Asyncio-only, as ``rmcli`` is (anyio's asyncio backend): the group's event and the gathering turn
are asyncio's own, several times cheaper than anyio's on a path taken twice per attempt; the
shields from cancellation stay anyio's, since only they hold off anyio's cancel scopes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sized
from typing import Any, Generic, TypeVar

import anyio

__all__ = ["GroupCommit"]

C = TypeVar("C")
R = TypeVar("R")

_UNSET = object()

Run = Callable[[Callable[[C], Any], str | None], Awaitable[Any]]
"""A store's ``run(work, begin)``: ``work`` on its connection, alone (``begin`` None: each
statement commits by itself) or in one transaction opened by ``begin``."""


class _Pending:
    """One write waiting in a group: what to run, then its result or error."""

    __slots__ = ("error", "result", "work")

    def __init__(self, work: Callable[[Any], Any]) -> None:
        self.work = work
        self.result: Any = _UNSET
        self.error: BaseException | None = None

    def value(self) -> Any:
        if self.error is not None:
            raise self.error
        if self.result is _UNSET:
            raise RuntimeError("the group commit was interrupted before this write was committed")
        return self.result


class _Group:
    """The writes gathered in one turn, and the one event that says they are all done (one per
    group, not one per write: an event costs more than the write's share of the commit)."""

    __slots__ = ("done", "pending")

    def __init__(self, first: _Pending) -> None:
        self.pending = [first]
        self.done = asyncio.Event()


class GroupCommit(Generic[C]):
    """Writes on a connection ``C`` through ``run``: alone, or a turn's together in one
    transaction opened by ``begin``; each caller gets its own write's result."""

    def __init__(self, run: Run[C], begin: str) -> None:
        self._run = run
        self._begin = begin
        self._gathering: _Group | None = None

    async def run(self, work: Callable[[C], R], in_flight: Sized) -> R:
        """``work`` committed. It joins the group gathering in this turn if there is one; else,
        when ``in_flight`` (the caller's writers under way) holds others, it starts one; else it
        commits alone, at once, with no turn of the loop lost."""
        gathering = self._gathering
        if gathering is None and len(in_flight) < 2:
            result: R = await self._run(work, None)
            return result
        pending = _Pending(work)
        if gathering is not None:
            gathering.pending.append(pending)
            with anyio.CancelScope(shield=True):
                await gathering.done.wait()
            return pending.value()  # type: ignore[no-any-return]
        group = self._gathering = _Group(pending)
        with anyio.CancelScope(shield=True):  # one scope for the gathering turn and the commit
            try:
                await asyncio.sleep(0)  # the others of this turn join
            finally:
                self._gathering = None
            await self._commit(group)
        return pending.value()  # type: ignore[no-any-return]

    async def _commit(self, gathered: _Group) -> None:
        group = gathered.pending
        try:
            if len(group) > 1:
                try:
                    results = await self._run(lambda conn: [p.work(conn) for p in group], self._begin)
                except Exception:
                    pass  # each alone below, each with its own result or error
                else:
                    for pending, result in zip(group, results, strict=True):
                        pending.result = result
                    return
            for pending in group:
                try:
                    pending.result = await self._run(pending.work, None)
                except Exception as exc:
                    pending.error = exc
        finally:
            gathered.done.set()
