"""``rmcli.api.Client`` on a Redis state that stalls mid-run: the event loop is never held."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from anyio.from_thread import start_blocking_portal

from rmcli import api
from rmcli.sandbox import Sandbox
from tests.cli.state.backends import HELD_S, RedisServer

POLICY = """
version = 1
[route]
targets = ["glm-direct"]
[budget]
on_state_unavailable = "fail_open"
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, to stall."""
    running = RedisServer(tmp_path)
    running.start()
    try:
        yield running
    finally:
        running.stop()


def test_client_ask_on_a_stalled_redis_holds_no_callback_past_300_ms(
    server: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis stopped by SIGSTOP between calls: ``Client.ask`` under asyncio debug mode (slow
    callbacks logged past ``HELD_S``) still answers, its bookkeeping falling back to this host's
    state, and asyncio logs no callback that held the loop. The sandbox runs on a loop of its own
    (another thread), so that only the client's callbacks are timed."""

    async def main(env: dict[str, str]) -> list[str | None]:
        asyncio.get_running_loop().slow_callback_duration = HELD_S
        providers: list[str | None] = []
        async with api.Client(POLICY, env=env, state_home=tmp_path / "home") as client:
            providers.append((await client.ask("warm up", stream=False)).provider)
            with server.stalled():
                for i in range(3):
                    providers.append((await client.ask(f"question {i}", stream=False)).provider)
        return providers

    with (
        start_blocking_portal(backend="asyncio") as portal,
        portal.wrap_async_context_manager(Sandbox()) as box,
        caplog.at_level(logging.WARNING, logger="asyncio"),
    ):
        env = {**box.env(), "RECURSIVEMANAGER_STATE": server.url()}
        providers = asyncio.run(main(env), debug=True)
    assert providers == ["glm-direct"] * 4
    slow = [record.getMessage() for record in caplog.records if "Executing" in record.getMessage()]
    assert slow == []
