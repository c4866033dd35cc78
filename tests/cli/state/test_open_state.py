"""Choosing the state (``rmcli.state.open_state``): the variable, the URLs it takes and how they
are shown, and the check before use."""

from __future__ import annotations

from pathlib import Path

import pytest

from rmcli.state import DB_FILENAME, STATE_VARIABLE, StoreError, open_state, redacted_url, state_url
from rmcli.state.sqlite import open_sqlite
from tests.cli.state.backends import RedisServer

pytestmark = pytest.mark.anyio


def ignore(line: str) -> None:
    raise AssertionError(f"nothing should be warned: {line}")


@pytest.mark.parametrize("value", [None, "", "  ", "sqlite", "SQLite"])
async def test_sqlite_is_the_default(tmp_path: Path, value: str | None) -> None:
    """Unset, empty or ``sqlite``: the SQLite file in the state folder."""
    env = {} if value is None else {STATE_VARIABLE: value}
    assert state_url(env) is None
    async with await open_state(env, tmp_path / "home", warn=ignore) as state:
        assert state.where == str(tmp_path / "home" / DB_FILENAME)
        assert state.local_caps is None


async def test_a_redis_url_chooses_redis_and_writes_nothing_in_the_home(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """A Redis URL (spaces trimmed) opens the shared state, named without password; while Redis
    answers, nothing is written in the state folder."""
    redis_server.flush()
    url = redis_server.url().replace("redis://", "redis://:pw-not-needed@")
    async with await open_state(
        {STATE_VARIABLE: f" {redis_server.url()} "}, tmp_path / "home", warn=ignore
    ) as state:
        assert state.where == redis_server.url() and state.local_caps is not None
        await state.cache.put("k", "security", b"x", 0)
        assert await state.cache.get("k", 0, 10) == b"x"
    assert not (tmp_path / "home").exists()
    assert redacted_url(url) == redis_server.url()


@pytest.mark.parametrize(
    ("value", "shown", "hidden"),
    [
        ("memcached://user:pw-123@127.0.0.1:11211", "memcached://...", "pw-123"),
        ("/var/lib/rmgr/state.db", "/var/lib/rmgr/state.db", None),
        ("user:pw-123@127.0.0.1:6379", "...127.0.0.1:6379", "pw-123"),
    ],
)
async def test_another_value_is_a_store_error_naming_the_variable(
    tmp_path: Path, value: str, shown: str, hidden: str | None
) -> None:
    """A value that is neither SQLite nor Redis names the variable and an example, never a password."""
    with pytest.raises(StoreError) as caught:
        await open_state({STATE_VARIABLE: value}, tmp_path / "home", warn=ignore)
    message = str(caught.value)
    assert STATE_VARIABLE in message and repr(shown) in message and "redis://127.0.0.1:6379/0" in message
    assert hidden is None or hidden not in message
    assert not (tmp_path / "home").exists()


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis://[::1/0", "is not a URL"),
        ("redis://127.0.0.1:port/0", "has no usable port"),
        ("redis://127.0.0.1:99999/0", "has no usable port"),
        ("redis://127.0.0.1:6379/zero", "not a number"),
        ("redis:///0", "names no host"),
    ],
)
async def test_a_malformed_redis_url_is_a_store_error(tmp_path: Path, url: str, problem: str) -> None:
    """A Redis URL that cannot be used says what is wrong with it."""
    with pytest.raises(StoreError, match=problem):
        await open_state({STATE_VARIABLE: url}, tmp_path / "home", warn=ignore)


def test_urls_are_shown_without_credentials_or_query() -> None:
    """Users, passwords and queries (which may hold a password) are cut from what is shown."""
    assert redacted_url("redis://u:p@10.0.0.1:6379/3?password=p") == "redis://10.0.0.1:6379/3"
    assert redacted_url("rediss://:p@[::1]:6380/0") == "rediss://[::1]:6380/0"
    assert redacted_url("redis://127.0.0.1:6379") == "redis://127.0.0.1:6379"


async def test_check_refuses_a_damaged_file_behind_redis_too(tmp_path: Path) -> None:
    """With Redis chosen, ``check=True`` checks this host's SQLite file when there is one (it is
    where bookkeeping goes during an outage), and creates none when there is not."""
    env = {STATE_VARIABLE: "redis://127.0.0.1:6379/0"}
    await (await open_state(env, tmp_path / "none", warn=ignore, check=True)).aclose()
    assert not (tmp_path / "none").exists()
    await open_sqlite(tmp_path / "home").aclose()
    path = tmp_path / "home" / DB_FILENAME
    path.write_bytes(path.read_bytes()[:100] + b"\x00" * 4096 * 3)
    with pytest.raises(StoreError, match=r"mv .*state\.db") as caught:
        await open_state(env, tmp_path / "home", warn=ignore, check=True)
    assert caught.value.path == path
