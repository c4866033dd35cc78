"""The one fallback-to-local policy of a shared state (Redis), with this host's SQLite state behind it.

While the shared state cannot be reached, a run must neither hang nor lose what it did, nor spend
past the fleet's caps unsaid. The bookkeeping of runs (``BOOKKEEPING``) goes to this host's state in
the state folder, so breakers keep working on what this host sees and nothing paid for is lost; one
warning says so per outage. Everything else raises ``StoreUnavailable``: the caps (the runner applies
the policy's ``on_state_unavailable``: refuse paid requests, or count them in ``State.local_caps``)
and the reads shown to a person, which must not pass a host's view off as the fleet's. After a call
finds the shared state unreachable, calls in the next ``RETRY_AFTER_S`` skip it (a server firewalled
away would cost a connect timeout each); then it is tried again, so a restarted one is used again.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Final, cast

import anyio

from rmcli.state.base import Caps, State, StoreUnavailable
from rmcli.state.sqlite import open_sqlite

__all__ = ["BOOKKEEPING", "RETRY_AFTER_S", "Fallback"]

RETRY_AFTER_S: Final = 1.0
"""How long after finding the shared state unreachable calls skip it before trying it again."""

BOOKKEEPING: Final[Mapping[str, tuple[str, ...]]] = {
    "attempts": ("sent", "settle", "withdraw"), "circuits": ("admit", "record", "release_probe"),
    "cache": ("get", "put"), "history": ("add",), "conversations": ("save",), "caps": (),
}
"""Per concern, the methods that go to this host's state while the shared one is unreachable."""


class Fallback:
    """The ``shared`` state with the SQLite state in ``home`` behind it for ``BOOKKEEPING`` (opened
    on first need); ``warn`` shows one line to the person (stderr in the CLI)."""

    def __init__(
        self,
        shared: State,
        home: Path,
        *,
        warn: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
        open_local: Callable[[Path], State] = open_sqlite,
    ) -> None:
        self.shared, self.home, self._warn, self._clock = shared, home, warn, clock
        self._open_local = open_local
        self._local: State | None = None
        self._down: StoreUnavailable | None = None
        self._down_until = -float("inf")
        self._warned = False

    def state(self) -> State:
        """The ``State`` whose every call goes through this policy."""
        concerns: dict[str, Any] = {name: _Routed(self, name) for name in BOOKKEEPING}
        local_caps = cast(Caps, _Routed(self, "caps", local=True))
        return State(**concerns, where=self.shared.where, local_caps=local_caps, closers=[self])

    async def local(self) -> State:
        """This host's own state, opened on first use in a worker thread (creating the file may hold
        the event loop too long); ``StoreError`` when its folder cannot be used."""
        local = self._local
        if local is None:
            local = await anyio.to_thread.run_sync(self._open_local, self.home)
            if self._local is not None:  # another task opened it meanwhile
                await local.aclose()
                local = self._local
            self._local = local
        return local

    async def call(self, concern: str, method: str, args: Any, kwargs: Any, *, local: bool = False) -> Any:
        """``concern.method(*args, **kwargs)`` on the shared state, or as the policy says on this
        host's (always there when ``local``: ``State.local_caps``)."""
        down = self._down
        if not local and (down is None or self._clock() >= self._down_until):
            try:
                result = await getattr(getattr(self.shared, concern), method)(*args, **kwargs)
            except StoreUnavailable as exc:
                down, self._down, self._down_until = exc, exc, self._clock() + RETRY_AFTER_S
            else:
                self._down, self._warned = None, False
                return result
        if down is not None and not local and method not in BOOKKEEPING.get(concern, ()):
            raise StoreUnavailable(down.url, down.reason) from None
        if down is not None and not self._warned:
            self._warned = True
            self._warn(f"{down.message}; until it is back, the attempts, circuit breakers, answer "
                       "cache and history (and the caps, where the policy fails open) use this host's state "
                       f"in {self.home}")
        return await getattr(getattr(await self.local(), concern), method)(*args, **kwargs)

    async def aclose(self) -> None:
        """Close the shared state and this host's, when it was opened."""
        try:
            await self.shared.aclose()
        finally:
            if self._local is not None:
                await self._local.aclose()


class _Routed:
    """One concern of a ``Fallback``'s state: each method a coroutine that ``Fallback.call`` runs."""

    def __init__(self, policy: Fallback, concern: str, *, local: bool = False) -> None:
        self._policy, self._concern, self._local = policy, concern, local

    def __getattr__(self, method: str) -> Callable[..., Awaitable[Any]]:
        if method.startswith("_"):
            raise AttributeError(method)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await self._policy.call(self._concern, method, args, kwargs, local=self._local)

        return call
