"""Shared fixtures of the shell's tests."""

import pytest


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio (the sandbox and the shell are built on it)."""
    return "asyncio"
