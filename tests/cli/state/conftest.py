"""Fixtures of the state tests: each backend in turn (the session's redis-server is
``tests/cli/conftest.py``'s)."""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from rmcli.state import State
from tests.cli.state.backends import BACKENDS, Backend, RedisServer


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
