"""Fixtures of the state tests: a redis-server for the session, and each backend in turn."""

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from rmcli.state import State
from tests.cli.state.backends import BACKENDS, Backend, RedisServer


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the session on a free loopback port, without persistence. Fails
    under CI and skips elsewhere when redis-server is not installed."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """Each backend in turn: SQLite in this test's folder, then Redis (database 0 of the
    session's server, flushed for this test)."""
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        server.flush()
        return Backend("redis", server.url(), tmp_path / "home")
    return Backend("sqlite", "sqlite", tmp_path / "home")


@pytest.fixture
async def state(backend: Backend) -> AsyncIterator[State]:
    """A state of each backend in turn, closed after the test."""
    async with backend.open() as opened:
        yield opened
