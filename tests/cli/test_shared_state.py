"""A shared state (Redis) with this host's SQLite state behind it (``rmcli.shared_state``), and
how commands open the state (``rmcli.session.open_store``): what falls back, what fails, what
is said, and that no password is ever shown."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from rmcli.config import ConfigError
from rmcli.redis_store import RedisStore
from rmcli.session import open_store
from rmcli.shared_state import RETRY_AFTER_S, SharedState
from rmcli.state import STATE_VARIABLE
from rmcli.store import AttemptClaim, Slot, SqliteStore, Store, StoreError, StoreUnavailable
from rmcore.attempts import AttemptRecord
from rmcore.completion import Usage
from tests.cli.helpers import closed_port
from tests.cli.state_backends import RedisServer

ATTEMPT = AttemptRecord(
    provider="glm-direct",
    model="glm-4.7",
    outcome="ok",
    status=200,
    latency_ms=12.0,
    started_at_ms=1_764_000_000_000,
    usage=Usage(input_tokens=3, output_tokens=5),
    cost_usd=0.001,
)

CLAIM = AttemptClaim(holder="me", lease_s=30.0, slot=Slot(name="provider:x", limit=1, lease_s=5.0))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Counting:
    """Wraps a store and counts the calls that reach it."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.calls = 0

    def __getattr__(self, name: str) -> object:
        self.calls += 1
        return getattr(self.inner, name)


@pytest.fixture
def down(tmp_path: Path) -> Iterator[tuple[SharedState, list[str], Clock, Counting]]:
    """A shared state nothing listens for, with the lines it warned and a clock to move."""
    url = f"redis://127.0.0.1:{closed_port()}/0"
    lines: list[str] = []
    clock = Clock()
    shared = Counting(RedisStore.open(url))
    state = SharedState(shared, url, tmp_path / "home", warn=lines.append, clock=clock)  # type: ignore[arg-type]
    with state:
        yield state, lines, clock, shared


def test_bookkeeping_falls_back_to_this_host_and_warns_once(
    down: tuple[SharedState, list[str], Clock, Counting], tmp_path: Path
) -> None:
    """Attempts, circuits, the cache and the history of a run go to this host's state while the
    shared one is unreachable, with one WARNING for the whole outage that names the state
    folder."""
    state, lines, clock, _ = down
    state.record_attempts("run", "ask", [ATTEMPT])
    clock.now += 5
    state.record_circuit("glm-direct", "server_error", 1.0, 1)
    state.cache_put("key", "security", b"payload", 1000)
    assert state.cache_get("key", 1000, 10_000) == b"payload"
    entry = state.history_add("default", "q?", "ok", 0.5, 1000, b"{}")
    assert len(lines) == 1 and lines[0].startswith("WARNING: the shared state (")
    assert str(tmp_path / "home") in lines[0]
    with SqliteStore.open(tmp_path / "home") as local:
        assert [row.provider for row in local.attempts_since(0)] == ["glm-direct"]
        assert [c.state for c in local.circuits()] == ["open"]
        assert local.history_get(entry) is not None


def test_caps_slots_and_what_commands_show_are_never_served_from_this_host(
    down: tuple[SharedState, list[str], Clock, Counting], tmp_path: Path
) -> None:
    """Reservations, slots and the reads a person is shown raise ``StoreUnavailable``: a host's
    partial view must not pass for the fleet's, and the policy decides about spending."""
    state, lines, _, _ = down
    for call in (
        lambda: state.cap_usage(0.0),
        lambda: state.attempts_since(0),
        lambda: state.circuits(),
        lambda: state.acquire_slot("provider:x", 1, "me", 0.0, 5.0),
        lambda: state.begin_attempt(CLAIM, 0.0),
        lambda: state.end_attempt(CLAIM, None, 0.0),
        lambda: state.history_list(None),
        lambda: state.cache_stats(0, 1000),
    ):
        with pytest.raises(StoreUnavailable):
            call()
    assert lines == [] and not (tmp_path / "home").exists()


def test_an_attempt_that_holds_nothing_asks_nothing_of_the_shared_state(
    down: tuple[SharedState, list[str], Clock, Counting],
) -> None:
    state, _, _, shared = down
    nothing = AttemptClaim(holder="me", lease_s=30.0)
    assert state.begin_attempt(nothing, 0.0) is None
    state.end_attempt(nothing, None, 0.0)
    state.end_attempt(nothing, (), 0.0)
    assert shared.calls == 0


def test_an_unreachable_state_is_not_asked_again_for_a_moment(
    down: tuple[SharedState, list[str], Clock, Counting],
) -> None:
    """After a failed call, calls within ``RETRY_AFTER_S`` fail (or fall back) at once without
    trying the network (a firewalled server would cost a timeout each, on the event loop); then
    the shared state is tried again."""
    state, _, clock, shared = down
    with pytest.raises(StoreUnavailable):
        state.circuits()
    tried = shared.calls
    with pytest.raises(StoreUnavailable, match="is unreachable"):
        state.cap_usage(0.0)
    state.record_attempts("run", "ask", [ATTEMPT])
    assert shared.calls == tried
    clock.now += RETRY_AFTER_S
    with pytest.raises(StoreUnavailable):
        state.circuits()
    assert shared.calls == tried + 1


def test_a_restarted_server_is_used_again_and_a_new_outage_is_announced_again(tmp_path: Path) -> None:
    """Down, then up: the shared state is back in use by itself; down again: warned again."""
    server = RedisServer(tmp_path)
    lines: list[str] = []
    clock = Clock()
    state = SharedState(
        RedisStore.open(server.url()), server.url(), tmp_path / "home", warn=lines.append, clock=clock
    )
    with state:
        state.record_attempts("run", "ask", [ATTEMPT])  # down: on this host
        server.start()
        try:
            clock.now += RETRY_AFTER_S
            state.record_attempts("run", "ask", [ATTEMPT])
            assert len(state.attempts_since(0)) == 1
        finally:
            server.stop()
        clock.now += RETRY_AFTER_S
        state.record_attempts("run", "ask", [ATTEMPT])
    assert len(lines) == 2


# --- open_store -------------------------------------------------------------------------------------


def test_open_store_chooses_redis_behind_a_shared_state(redis_server: RedisServer, tmp_path: Path) -> None:
    env = {STATE_VARIABLE: redis_server.url(), "RECURSIVEMANAGER_HOME": str(tmp_path / "home")}
    with open_store(env) as store:
        assert isinstance(store, SharedState) and store.url == redis_server.url()
    with open_store({"RECURSIVEMANAGER_HOME": str(tmp_path / "home")}) as store:
        assert isinstance(store, SqliteStore)


def test_an_unreachable_state_in_a_command_is_a_config_error_without_the_password(tmp_path: Path) -> None:
    """A command that reads the fleet's state while it is unreachable ends with a ConfigError
    (exit 2) that names the URL without its password; so does a task group of such errors."""
    env = {
        STATE_VARIABLE: f"redis://rmgr:hunter2@127.0.0.1:{closed_port()}/3",
        "RECURSIVEMANAGER_HOME": str(tmp_path / "home"),
    }
    with pytest.raises(ConfigError) as raised, open_store(env) as store:
        store.cap_usage(0.0)
    assert "is unreachable" in str(raised.value) and "hunter2" not in str(raised.value)
    assert "/3" in str(raised.value)
    with pytest.raises(ConfigError, match="disk on fire"), open_store(env):
        raise ExceptionGroup("tasks", [StoreError(None, "disk on fire"), StoreError(None, "again")])
    with pytest.raises(ExceptionGroup), open_store(env):
        raise ExceptionGroup("tasks", [StoreError(None, "disk on fire"), ValueError("a bug")])


def test_a_bad_state_variable_is_a_config_error(tmp_path: Path) -> None:
    env = {STATE_VARIABLE: "postgres://u:secret@host/db", "RECURSIVEMANAGER_HOME": str(tmp_path)}
    with pytest.raises(ConfigError, match=STATE_VARIABLE) as raised, open_store(env):
        pass
    assert "secret" not in str(raised.value)
