"""A shared state (Redis) with this host's SQLite state behind it: what falls back, what fails,
what is said once per outage, and when Redis is tried again."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from rmcli.state import AttemptClaim, Origin, Slot, State, StoreUnavailable, open_state
from rmcli.state.fallback import RETRY_AFTER_S, Fallback
from rmcli.state.redis import open_redis
from rmcli.state.sqlite import open_sqlite
from rmcore.attempts import AttemptRecord
from rmcore.quota import Charge, Resource
from tests.cli.state.backends import RedisServer, free_port

pytestmark = pytest.mark.anyio

ATTEMPT = AttemptRecord(
    provider="glm-direct", model="glm-4.7", outcome="cancelled", started_at_ms=1_764_000_000_000
)
CHARGE = Charge(
    cap_key="provider:x:requests:60s",
    resource=Resource.REQUESTS,
    window="0",
    resets_at=9e9,
    amount=1.0,
    limit=5.0,
)
CLAIM = AttemptClaim(
    holder="me", lease_s=30.0, slot=Slot(name="provider:x", limit=1, lease_s=5.0), charges=(CHARGE,)
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Counting:
    """Wraps a concern and counts the calls that reach it."""

    def __init__(self, inner: object, calls: list[str]) -> None:
        self.inner, self.calls = inner, calls

    def __getattr__(self, name: str) -> object:
        self.calls.append(name)
        return getattr(self.inner, name)


class Down:
    """A shared state nothing listens for, behind a ``Fallback``: the lines it warned, its clock,
    and the calls that reached the shared state."""

    def __init__(self, home: Path, url: str) -> None:
        self.lines: list[str] = []
        self.clock = Clock()
        self.calls: list[str] = []
        shared = open_redis(url)
        for concern in ("attempts", "circuits", "caps", "cache", "history"):
            setattr(shared, concern, Counting(getattr(shared, concern), self.calls))
        self.policy = Fallback(shared, home, warn=self.lines.append, clock=self.clock)
        self.state = self.policy.state()


@pytest.fixture
async def down(tmp_path: Path) -> AsyncIterator[Down]:
    opened = Down(tmp_path / "home", f"redis://127.0.0.1:{free_port()}/0")
    async with opened.state:
        yield opened


async def test_bookkeeping_falls_back_to_this_host_and_warns_once(down: Down, tmp_path: Path) -> None:
    """Attempts, circuits, the cache and the history of a run go to this host's state while the
    shared one is unreachable, with one WARNING for the whole outage naming the state folder."""
    state = down.state
    await state.attempts.sent("k", Origin("run", "ask"), ATTEMPT)
    down.clock.now += 5
    await state.attempts.settle("k", Origin("run", "ask"), ATTEMPT)
    assert (await state.circuits.admit("glm-direct", 1.0, 30.0, 60.0)).decision == "allowed"
    await state.circuits.record("glm-direct", "server_error", 1.0, 1)
    await state.cache.put("key", "security", b"payload", 1000)
    assert await state.cache.get("key", 1000, 10_000) == b"payload"
    entry = await state.history.add("default", "q?", "ok", 0.5, 1000, b"{}")
    assert len(down.lines) == 1 and down.lines[0].startswith("the shared state (redis://127.0.0.1:")
    assert str(tmp_path / "home") in down.lines[0]
    async with open_sqlite(tmp_path / "home") as local:
        assert [(row.provider, row.outcome) for row in await local.attempts.since(0)] == [
            ("glm-direct", "cancelled")
        ]
        assert [c.state for c in await local.circuits.all()] == ["open"]
        assert await local.history.get(entry) is not None


async def test_caps_and_what_a_person_is_shown_are_never_served_from_this_host(
    down: Down, tmp_path: Path
) -> None:
    """Caps and the reads and clean-ups a person is shown raise ``StoreUnavailable``: a host's
    partial view must not pass for the fleet's, and the policy decides about spending."""
    state = down.state
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: state.caps.begin(CLAIM, 0.0),
        lambda: state.caps.end(CLAIM, None, 0.0),
        lambda: state.caps.renew(Slot(name="provider:x", limit=1, lease_s=5.0), "me", 0.0),
        lambda: state.caps.usage(0.0),
        lambda: state.attempts.since(0),
        lambda: state.circuits.all(),
        lambda: state.circuits.reset(None),
        lambda: state.history.list(None),
        lambda: state.history.stats(None),
        lambda: state.cache.stats(0, 1000),
        lambda: state.cache.clear(),
    ]
    for call in calls:
        with pytest.raises(StoreUnavailable, match="is unreachable"):
            await call()
    assert down.lines == [] and not (tmp_path / "home").exists()


async def test_local_caps_count_on_this_host_and_say_so_once(down: Down, tmp_path: Path) -> None:
    """``State.local_caps`` (for a policy that fails open) is this host's SQLite caps; the one
    warning of the outage says so."""
    state = down.state
    assert state.local_caps is not None
    with pytest.raises(StoreUnavailable):
        await state.caps.begin(CLAIM, 0.0)
    assert await state.local_caps.begin(CLAIM, 0.0) is None
    await state.attempts.sent("k", Origin("run", "ask"), ATTEMPT)
    assert len(down.lines) == 1 and "caps" in down.lines[0]
    async with open_sqlite(tmp_path / "home") as local:
        assert [u.reserved for u in await local.caps.usage(0.0)] == [1.0]


async def test_an_unreachable_state_is_not_asked_again_for_a_moment(down: Down) -> None:
    """After a failed call, calls within ``RETRY_AFTER_S`` fail (or fall back) at once without
    trying the network (a firewalled server would cost a timeout each); then it is tried again."""
    state = down.state
    with pytest.raises(StoreUnavailable):
        await state.circuits.all()
    tried = len(down.calls)
    with pytest.raises(StoreUnavailable, match="is unreachable"):
        await state.caps.usage(0.0)
    await state.attempts.sent("k", Origin("run", "ask"), ATTEMPT)
    assert len(down.calls) == tried
    down.clock.now += RETRY_AFTER_S
    with pytest.raises(StoreUnavailable):
        await state.circuits.all()
    assert len(down.calls) == tried + 1


async def test_a_restarted_server_is_used_again_and_a_new_outage_is_announced_again(tmp_path: Path) -> None:
    """Down, then up: the shared state is back in use by itself; down again: warned again."""
    server = RedisServer(tmp_path)
    lines: list[str] = []
    clock = Clock()
    async with Fallback(
        open_redis(server.url()), tmp_path / "home", warn=lines.append, clock=clock
    ).state() as state:
        await state.attempts.sent("a", Origin("run", "ask"), ATTEMPT)  # down: on this host
        server.start()
        try:
            clock.now += RETRY_AFTER_S
            await state.attempts.sent("b", Origin("run", "ask"), ATTEMPT)
            assert len(await state.attempts.since(0)) == 1
        finally:
            server.stop()
        clock.now += RETRY_AFTER_S
        await state.attempts.sent("c", Origin("run", "ask"), ATTEMPT)
    assert len(lines) == 2


def test_a_stalled_redis_behind_open_state_never_blocks_the_event_loop(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis stopped with SIGSTOP mid-run, the state opened as the shell opens it: under asyncio
    debug mode no callback holds the loop past 50 ms, while the run's bookkeeping goes to this
    host (its SQLite opened in a worker thread) and the caps raise ``StoreUnavailable``."""
    server = RedisServer(tmp_path)
    server.start()
    lines: list[str] = []

    async def run(state: State, n: int) -> Any:
        await state.circuits.admit("p", 1.0, 30.0, 60.0)
        with contextlib.suppress(StoreUnavailable):
            await state.caps.begin(AttemptClaim(holder=f"h{n}", lease_s=30.0, charges=(CHARGE,)), 1.0)
        await state.attempts.sent(f"k{n}", Origin("run", "ask"), ATTEMPT)
        await state.attempts.settle(f"k{n}", Origin("run", "ask"), ATTEMPT)
        await state.circuits.record("p", "timeout", 2.0, 3)

    async def main() -> float:
        asyncio.get_running_loop().slow_callback_duration = 0.05
        async with await open_state(
            {"RECURSIVEMANAGER_STATE": server.url()}, tmp_path / "home", warn=lines.append
        ) as state:
            await run(state, 0)
            with server.stalled():
                started = time.monotonic()
                await asyncio.gather(*(run(state, n) for n in range(1, 4)))
                return time.monotonic() - started

    try:
        with caplog.at_level(logging.WARNING, logger="asyncio"):
            took = asyncio.run(main(), debug=True)
    finally:
        server.stop()
    assert [record.getMessage() for record in caplog.records if "Executing" in record.getMessage()] == []
    assert len(lines) == 1 and took < 3.0
