"""Runs that stop cleanly when the person (Ctrl-C) or the system (SIGTERM) asks them to.

``run`` drives a command's async work with SIGINT and SIGTERM turned into a cancellation of that
work: every route settles its attempts in flight as ``cancelled`` (shielded from the
cancellation), then ``Interrupted`` carries the exit status a shell expects (130 for SIGINT, 143
for SIGTERM). A second signal while it settles is not caught: it stops the process at once.
"""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

__all__ = ["Interrupted", "run"]

_T = TypeVar("_T")


class Interrupted(Exception):
    """The run was stopped by a signal; ``code`` is the exit status (128 + the signal number)."""

    def __init__(self, signum: int) -> None:
        super().__init__("interrupted")
        self.code = 128 + signum


def run(main: Callable[[], Awaitable[_T]]) -> _T:
    """``main()`` on a new event loop, cancelled cleanly on SIGINT or SIGTERM (``Interrupted``)."""
    return anyio.run(_guarded, main)


async def _guarded(main: Callable[[], Awaitable[_T]]) -> _T:
    caught: list[int] = []
    results: list[_T] = []
    try:
        async with anyio.create_task_group() as group:

            async def watch() -> None:
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for signum in signals:
                        caught.append(signum)
                        group.cancel_scope.cancel()
                        return

            group.start_soon(watch)
            try:
                results.append(await main())
            finally:
                group.cancel_scope.cancel()
    except BaseExceptionGroup as errors:
        raise _one(errors) from None
    if caught:
        raise Interrupted(caught[0])
    return results[0]


def _one(errors: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error a group of errors stands for: its first leaf when every leaf is of one type (the
    same failure met by every task, e.g. each perspective finding the state unusable)."""
    leaves: list[BaseException] = []

    def collect(error: BaseException) -> None:
        if isinstance(error, BaseExceptionGroup):
            for inner in error.exceptions:
                collect(inner)
        else:
            leaves.append(error)

    collect(errors)
    return leaves[0] if len({type(e) for e in leaves}) == 1 else errors
