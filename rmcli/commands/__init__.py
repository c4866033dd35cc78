"""``rmgr``'s commands, one module per family: each parses its options, calls ``rmcli.api``,
renders what comes back, and returns an exit code."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from rmcli.state import State

__all__ = ["read_records"]

_T = TypeVar("_T")


def read_records(work: Callable[[State], Awaitable[_T]]) -> _T:
    """``work`` on the state that ``rmcli.api.records`` opens, on an event loop of its own."""
    from rmcli import api, interrupt

    async def main() -> _T:
        async with api.records() as state:
            return await work(state)

    return interrupt.run(main)
