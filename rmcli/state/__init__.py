"""The state of ``rmgr`` (attempts, circuit breakers, caps, answer cache, history): ``open_state`` is
the only way in. ``RECURSIVEMANAGER_STATE`` chooses: unset, empty or ``sqlite`` for the SQLite file in
the state folder (``sqlite``); ``redis://HOST:PORT/DB`` (``rediss://`` for TLS, ``USER:PASSWORD@``
when wanted) for one Redis database a fleet shares (``redis``), this host's SQLite behind it while
Redis cannot be reached (``fallback``).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final

import anyio

from rmcli.state import base
from rmcli.state.base import *  # noqa: F403 (the contract, re-exported)
from rmcli.state.base import State, StoreError
from rmcli.state.sqlite import DB_FILENAME, check_existing, open_sqlite

__all__ = ["DB_FILENAME", "STATE_VARIABLE", "open_state", "redacted_url", "state_url"]
__all__ += base.__all__

STATE_VARIABLE: Final = "RECURSIVEMANAGER_STATE"
"""The environment variable that chooses the state's backend."""


async def open_state(
    env: Mapping[str, str], home: Path, *, warn: Callable[[str], None], check: bool = False
) -> State:
    """The state ``env`` chooses, its SQLite file in ``home`` (the state folder), opened in a worker
    thread so as never to hold the event loop; close it with ``aclose()`` or ``async with``. ``warn``
    shows a person one line (the CLI: stderr), once per outage of a shared state. ``check`` first
    checks the SQLite file for damage (``PRAGMA quick_check``): ask for it before paid requests.
    ``StoreError`` (naming the path or variable, and what to do) for a bad variable or Redis URL, or a
    folder or file that cannot be used. Contacts no server: an unreachable Redis shows from the first
    call."""
    url = state_url(env)
    if url is None:
        return await anyio.to_thread.run_sync(lambda: open_sqlite(home, check=check))
    if check and (path := Path(home) / DB_FILENAME).is_file() and path.stat().st_size:
        await anyio.to_thread.run_sync(check_existing, path)
    # Imported here, so that runs on the SQLite state never load the Redis client.
    from rmcli.state.fallback import Fallback
    from rmcli.state.redis import open_redis

    return Fallback(open_redis(url), Path(home), warn=warn).state()


def state_url(env: Mapping[str, str]) -> str | None:
    """The Redis URL ``env`` chooses (password and all: never show it, ``redacted_url`` is for
    messages), or None for SQLite. ``StoreError`` naming the variable when its value is neither."""
    value = env.get(STATE_VARIABLE, "").strip()
    if value.lower() in ("", "sqlite"):
        return None
    if value.lower().startswith(("redis://", "rediss://")):
        return value
    scheme, separator, _ = value.partition("://")
    # Whatever stands before an "@" may be a password: never shown.
    shown = f"{scheme}://..." if separator else "..." * ("@" in value) + value.rpartition("@")[2]
    raise StoreError(None, f"{STATE_VARIABLE} must be unset, 'sqlite' or a Redis URL such as "
                     f"redis://127.0.0.1:6379/0, not {shown!r}.")


def redacted_url(url: str) -> str:
    """``url`` without its user, password and query (which may hold a password), as messages
    show it: ``redis://127.0.0.1:6379/0``."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        scheme, separator, rest = url.partition("://")
        return scheme + separator + rest.partition("?")[0].rpartition("@")[2]
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))
