"""Group commit: the writes that tasks of one process issue in the same turn of the event loop,
committed in one transaction instead of one each.

A store that commits each write on its own pays the commit (a lock, the journal's frames, the
file's index) once per write. ``GroupCommit`` lets the writes that arrive together share it: the
first write of a turn, when the caller says others are likely (``gather``), schedules the commit
behind the tasks ready in the same turn, so that they add theirs, then commits them all in one
transaction. Every caller returns only once its own write is committed, so nothing is
acknowledged before it is stored: a process killed at any moment loses only writes whose callers
were still waiting, and those callers had not gone on (an attempt's request had not left).

The commit runs in a callback of the loop, not in a caller's task: no caller's cancellation can
stop it, so a write that joined a group is committed whatever happens to its caller (one
cancelled while it waits raises at once; its write is committed all the same), without a shield
from cancellation per write. A store that can commit without waiting (``run_now``) commits there
and then; one that must wait (another process holds the lock), or has no ``run_now``, commits in
a task of its own.

When the whole group fails (a lock held past the wait, a bad row), each write is tried alone,
so one bad write does not fail the others, and each caller gets its own result or error.

Asyncio-only, as ``rmcli`` is (anyio's asyncio backend): the loop's callbacks, futures and tasks
are asyncio's own, several times cheaper than anyio's on a path taken twice per attempt (and the
loop is looked up once per group: in Python 3.11 each look-up is a ``getpid`` system call).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sized
from typing import Any, Generic, TypeVar

__all__ = ["GroupCommit", "WouldWait"]

C = TypeVar("C")
R = TypeVar("R")

_UNSET = object()

Run = Callable[[Callable[[C], Any], str | None], Awaitable[Any]]
"""A store's ``run(work, begin)``: ``work`` on its connection, alone (``begin`` None: each
statement commits by itself) or in one transaction opened by ``begin``."""

RunNow = Callable[[Callable[[C], Any], str | None], Any]
"""The same without waiting: ``WouldWait`` when it cannot (nothing of ``work`` is then kept)."""


class WouldWait(Exception):
    """``run_now`` could not commit without waiting (another process holds the lock)."""


class _Pending:
    """One write waiting in a group: what to run, then its result or error; ``done`` is told the
    result once it is committed (whether or not its caller still waits)."""

    __slots__ = ("done", "error", "result", "work")

    def __init__(self, work: Callable[[Any], Any], done: Callable[[Any], None] | None) -> None:
        self.work = work
        self.done = done
        self.result: Any = _UNSET
        self.error: BaseException | None = None

    def committed(self, result: Any) -> None:
        self.result = result
        if self.done is not None:
            self.done(result)

    def value(self) -> Any:
        if self.error is not None:
            raise self.error
        if self.result is _UNSET:
            raise RuntimeError("the group commit was interrupted before this write was committed")
        return self.result


class _Group:
    """The writes gathered in one turn, and a future for each caller waiting on them (its own:
    a cancelled caller cancels only its own), all made by the one loop found once per group."""

    __slots__ = ("loop", "pending", "waiting")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.pending: list[_Pending] = []
        self.waiting: list[asyncio.Future[None]] = []

    async def wait(self) -> None:
        """Return once the group is committed (or failed)."""
        done = self.loop.create_future()
        self.waiting.append(done)
        await done

    def work(self, conn: Any) -> list[Any]:
        """Every write of the group on ``conn``, in order: the transaction's work."""
        return [pending.work(conn) for pending in self.pending]

    def committed(self, results: list[Any]) -> None:
        """The group's transaction committed with ``results``, one per write in order."""
        for pending, result in zip(self.pending, results, strict=True):
            pending.committed(result)

    def set(self) -> None:
        """The group is committed (or failed): wake every caller still waiting."""
        for done in self.waiting:
            if not done.done():
                done.set_result(None)


class GroupCommit(Generic[C]):
    """Writes on a connection ``C`` through ``run`` (or ``run_now``): alone, or a turn's together
    in one transaction opened by ``begin``; each caller gets its own write's result."""

    def __init__(self, run: Run[C], begin: str, run_now: RunNow[C] | None = None) -> None:
        self._run = run
        self._run_now = run_now
        self._begin = begin
        self._gathering: _Group | None = None
        self._committing: set[asyncio.Task[None]] = set()  # groups that had to wait

    async def run(
        self, work: Callable[[C], R], in_flight: Sized, done: Callable[[R], None] | None = None
    ) -> R:
        """``work`` committed. It joins the group gathering in this turn if there is one; else,
        when ``in_flight`` (the caller's writers under way) holds others, it starts one; else it
        commits alone, at once, with no turn of the loop lost. ``done`` is told the result the
        moment it is committed, before any other task runs: a caller cancelled while it waits
        still has its write's result seen to."""
        group = self._gathering
        if group is None:
            if len(in_flight) < 2:
                result: R = await self._run(work, None)
                if done is not None:
                    done(result)
                return result
            loop = asyncio.get_running_loop()
            group = self._gathering = _Group(loop)
            loop.call_soon(self._commit_soon, group)
        pending = _Pending(work, done)
        group.pending.append(pending)
        await group.wait()
        return pending.value()  # type: ignore[no-any-return]

    def _commit_soon(self, group: _Group) -> None:
        """The loop's callback once the turn's writers joined: commit them now if the store can
        without waiting, else in a task of their own."""
        self._gathering = None
        if self._run_now is not None:
            try:
                results = self._run_now(group.work, self._begin)
            except Exception:
                pass  # a lock held, a bad write: the task below sorts it out
            else:
                group.committed(results)
                group.set()
                return
        task = group.loop.create_task(self._commit(group))
        self._committing.add(task)
        task.add_done_callback(self._committing.discard)

    async def _commit(self, group: _Group) -> None:
        try:
            if len(group.pending) > 1:
                try:
                    results = await self._run(group.work, self._begin)
                except Exception:
                    pass  # each alone below, each with its own result or error
                else:
                    group.committed(results)
                    return
            for pending in group.pending:
                try:
                    pending.committed(await self._run(pending.work, None))
                except Exception as exc:
                    pending.error = exc
        finally:
            group.set()
