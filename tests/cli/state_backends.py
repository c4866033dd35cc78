"""The state backends the shell's tests run on, and the redis-server they start: the state tests'
own (``tests/cli/state/backends.py``), re-exported so that the tests outside ``tests/cli/state``
and ``tests/cli/conftest.py`` share them. ``Backend.open()`` is an async context manager yielding an
``rmcli.state.State`` opened with ``open_state``, as the shell opens it."""

from tests.cli.state.backends import (
    BACKENDS,
    REPO_ROOT,
    WAIT_FOR_GO,
    Backend,
    RedisServer,
    free_port,
    run_workers,
)

__all__ = ["BACKENDS", "REPO_ROOT", "WAIT_FOR_GO", "Backend", "RedisServer", "free_port", "run_workers"]
