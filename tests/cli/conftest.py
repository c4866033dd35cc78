"""Shared fixtures of the shell's tests."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.helpers import Cli, SandboxProcess, sandbox_process


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
