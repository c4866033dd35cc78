"""Shared fixtures of the shell's tests."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.helpers import Cli, SandboxProcess, sandbox_process
from tests.cli.state_backends import BACKENDS, Backend, RedisServer


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio (the sandbox and the shell are built on it)."""
    return "asyncio"


@pytest.fixture(scope="session")
def sandbox() -> Iterator[SandboxProcess]:
    """One ``rmgr sandbox`` process for the session, every provider up (``ok``). Tests that read
    its request logs or change its modes start their own with ``sandbox_process``."""
    with sandbox_process() as running:
        yield running


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    """``rmgr`` run in this test's own folder (working directory, HOME, RECURSIVEMANAGER_HOME)."""
    return Cli(tmp_path)


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
def store_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """Each state backend in turn: SQLite in this test's folder, then Redis (database 0 of the
    session's server, flushed for this test). ``Backend.open()`` opens an ``rmcli.state.State``
    on it (an async context manager), as the shell does."""
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        server.flush()
        return Backend("redis", server.url(), tmp_path / "home")
    return Backend("sqlite", "sqlite", tmp_path / "home")
