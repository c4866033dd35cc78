"""``rmcli.api.Client`` on a Redis state that stalls mid-run: the event loop is never held."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from rmcli import api
from rmcli.sandbox import Sandbox
from tests.cli.state.backends import RedisServer

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


def test_client_ask_on_a_stalled_redis_holds_no_callback_past_50_ms(
    server: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis stopped by SIGSTOP between calls: ``Client.ask`` under asyncio debug mode (slow
    callbacks logged past 50 ms) still answers, its bookkeeping falling back to this host's
    state, and asyncio logs no callback that held the loop."""

    async def main() -> list[str | None]:
        asyncio.get_running_loop().slow_callback_duration = 0.05
        providers: list[str | None] = []
        async with Sandbox() as box:
            env = {**box.env(), "RECURSIVEMANAGER_STATE": server.url()}
            async with api.Client(POLICY, env=env, state_home=tmp_path / "home") as client:
                providers.append((await client.ask("warm up", stream=False)).provider)
                with server.stalled():
                    for i in range(3):
                        providers.append((await client.ask(f"question {i}", stream=False)).provider)
        return providers

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        providers = asyncio.run(main(), debug=True)
    assert providers == ["glm-direct"] * 4
    slow = [record.getMessage() for record in caplog.records if "Executing" in record.getMessage()]
    assert slow == []
