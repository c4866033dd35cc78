"""The Redis state store on its own: choosing it, its keys, data it cannot read, and what it does
when Redis is unreachable, never answers, restarts, or wants a password."""

from __future__ import annotations

import inspect
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis

import rmcli.redis_store as redis_store_module
from rmcli.redis_store import DEFAULT_PREFIX, RedisStore, _window_field, redacted_url
from rmcli.session import StoreCircuits, StoreQuotas
from rmcli.state import STATE_VARIABLE, open_state, state_url
from rmcli.store import AttemptClaim, Slot, SlotBusy, SqliteStore, Store, StoreError, StoreUnavailable
from rmcore.attempts import AttemptRecord
from rmcore.breaker import Admission, CircuitState
from rmcore.quota import Charge, Refusal, Resource, refuse
from tests.cli.state_backends import RedisServer, free_port

NOW = 1_764_000_000.0
CHARGE = Charge(
    cap_key="provider:gw:requests:60s",
    resource=Resource.REQUESTS,
    window="1763999940",
    resets_at=1_764_000_000.0,
    amount=1.0,
    limit=10.0,
)
CLAIM = AttemptClaim(holder="h", lease_s=30.0, slot=Slot(name="gw", limit=2, lease_s=5.0), charges=(CHARGE,))


@pytest.fixture
def redis_store(redis_server: RedisServer) -> Iterator[RedisStore]:
    redis_server.flush()
    with RedisStore.open(redis_server.url()) as opened:
        yield opened


def every_call(store: Store) -> dict[str, Callable[[], object]]:
    """One call of every method of the ``Store`` protocol, by name."""
    return {
        "record_attempts": lambda: store.record_attempts(
            "r", "ask", [AttemptRecord(provider="p", model="m", outcome="ok", started_at_ms=1)]
        ),
        "attempts_since": lambda: store.attempts_since(0),
        "admit_circuits": lambda: store.admit_circuits(["p"], NOW, 30.0, 60.0),
        "record_circuit": lambda: store.record_circuit("p", "timeout", NOW, 3),
        "release_probe": lambda: store.release_probe("p", NOW, NOW),
        "circuits": store.circuits,
        "cache_get": lambda: store.cache_get("k", 0, 1000),
        "cache_put": lambda: store.cache_put("k", "security", b"x", 0),
        "cache_stats": lambda: store.cache_stats(0, 1000),
        "cache_clear": store.cache_clear,
        "cache_prune": lambda: store.cache_prune(0, 1000),
        "history_add": lambda: store.history_add("a", "q", "ok", 0.5, 0, b"{}"),
        "history_list": lambda: store.history_list(None),
        "history_resolve": lambda: store.history_resolve("abcd"),
        "history_get": lambda: store.history_get("abcd"),
        "history_stats": lambda: store.history_stats(None),
        "history_delete": lambda: store.history_delete("abcd"),
        "history_clear": lambda: store.history_clear(None),
        "history_export": lambda: store.history_export("a"),
        "reserve": lambda: store.reserve("r", [CHARGE], NOW, 30.0),
        "settle": lambda: store.settle("r", [CHARGE], NOW),
        "release": lambda: store.release("r"),
        "cap_usage": lambda: store.cap_usage(NOW),
        "acquire_slot": lambda: store.acquire_slot("gw", 2, "h", NOW, 30.0),
        "release_slot": lambda: store.release_slot("gw", "h"),
        "begin_attempt": lambda: store.begin_attempt(CLAIM, NOW),
        "end_attempt": lambda: store.end_attempt(CLAIM, [CHARGE], NOW),
    }


def test_every_call_covers_the_whole_protocol() -> None:
    methods = {name for name, _ in inspect.getmembers(Store, inspect.isfunction) if not name.startswith("_")}
    assert set(every_call(SqliteStore.__new__(SqliteStore))) == methods - {"close"}


# --- unreachable, silent, restarted --------------------------------------------------------------


def test_every_method_raises_store_unavailable_at_once_when_nothing_listens() -> None:
    """With nothing on the port, each method fails within 2 s, with the URL minus its password."""
    port = free_port()
    with RedisStore.open(f"redis://rmgr:s3cret-pw@127.0.0.1:{port}/2") as store:
        for name, call in every_call(store).items():
            started = time.monotonic()
            with pytest.raises(StoreUnavailable) as caught:
                call()
            assert time.monotonic() - started < 2.0, name
            error = caught.value
            assert error.url == f"redis://127.0.0.1:{port}/2", name
            assert error.path is None
            assert str(error).startswith(f"the shared state (redis://127.0.0.1:{port}/2) is unreachable: "), (
                name
            )
            assert "s3cret" not in str(error), name
            assert isinstance(error, StoreError)


def test_a_reservation_of_nothing_needs_no_server() -> None:
    with RedisStore.open(f"redis://127.0.0.1:{free_port()}/0") as store:
        assert store.reserve("free", [], NOW, 30.0) is None


def test_a_server_that_never_answers_is_unavailable_after_the_socket_timeout() -> None:
    """A listener that accepts connections but never replies: StoreUnavailable after about the
    1 s answer timeout, not a hang."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        with RedisStore.open(f"redis://127.0.0.1:{port}/0") as store:
            started = time.monotonic()
            with pytest.raises(StoreUnavailable, match="no answer within 1 s"):
                store.circuits()
            assert 0.9 < time.monotonic() - started < 2.0


def test_after_redis_restarts_the_same_store_works_again(tmp_path: Path) -> None:
    """Connections and loaded scripts die with the server; the store makes new ones by itself."""
    server = RedisServer(tmp_path)
    server.start()
    try:
        with RedisStore.open(server.url()) as store:
            store.cache_put("k", "security", b"answer", 0)
            assert store.cache_get("k", 0, 1000) == b"answer"
            assert store.reserve("r", [CHARGE], NOW, 30.0) is None
            server.stop()
            with pytest.raises(StoreUnavailable):
                store.cache_get("k", 0, 1000)
            with pytest.raises(StoreUnavailable):
                store.reserve("s", [CHARGE], NOW, 30.0)
            server.start()
            # Nothing was persisted: the restarted server is empty, and every call works on it.
            assert store.cache_get("k", 0, 1000) is None
            store.cache_put("k", "security", b"again", 0)
            assert store.cache_get("k", 0, 1000) == b"again"
            assert store.reserve("s", [CHARGE], NOW, 30.0) is None
            assert store.admit_circuits(["p"], NOW, 30.0, 60.0)["p"].decision == "allowed"
            assert [u.reserved for u in store.cap_usage(NOW - 1)] == [1.0]
    finally:
        server.stop()


@pytest.mark.parametrize("moment", ["before the read", "before the write"])
def test_redis_going_down_during_a_reservation_is_unavailable_and_records_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, moment: str
) -> None:
    """The server stops before the state is read, or after it was read and before the
    reservation is written: the store says it is unavailable (not some other error), and after a
    restart the reservation is not there."""
    server = RedisServer(tmp_path)
    server.start()
    read, decide = redis_store_module._QUOTA_RESERVE.run, redis_store_module.refuse

    def stop_then_read(*args: Any) -> object:
        server.stop()
        return read(*args)

    def stop_then_decide(*args: Any) -> Refusal | None:
        server.stop()
        return decide(*args)

    try:
        with RedisStore.open(server.url()) as store:
            assert store.cap_usage(NOW) == []  # connected before the server stops
            if moment == "before the read":
                monkeypatch.setattr(redis_store_module._QUOTA_RESERVE, "run", stop_then_read)
            else:
                monkeypatch.setattr(redis_store_module, "refuse", stop_then_decide)
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                store.reserve("r", [CHARGE], NOW, 30.0)
            assert time.monotonic() - started < 2.0
            monkeypatch.undo()
            server.start()
            assert store.cap_usage(NOW - 1) == []
    finally:
        server.stop()


def test_a_password_the_server_refuses_is_a_store_error_that_does_not_show_it(tmp_path: Path) -> None:
    """Wrong or missing credentials are a configuration error (exit 2), not an outage."""
    server = RedisServer(tmp_path)
    server.start()
    try:
        with server.client() as admin:
            admin.config_set("requirepass", "right-pw")
        for url in (f"redis://:wrong-pw@127.0.0.1:{server.port}/0", server.url()):
            with RedisStore.open(url) as store, pytest.raises(StoreError) as caught:
                store.circuits()
            assert not isinstance(caught.value, StoreUnavailable)
            assert "credentials" in str(caught.value)
            assert "wrong-pw" not in str(caught.value)
        with RedisStore.open(f"redis://:right-pw@127.0.0.1:{server.port}/0") as store:
            assert store.circuits() == []
    finally:
        server.stop()


# --- choosing the store --------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, "", "  ", "sqlite", "SQLite"])
def test_sqlite_is_the_default(tmp_path: Path, value: str | None) -> None:
    env = {} if value is None else {STATE_VARIABLE: value}
    assert state_url(env) is None
    with open_state(env, tmp_path / "home") as store:
        assert isinstance(store, SqliteStore)
        assert store.path == tmp_path / "home" / "state.db"


def test_a_redis_url_chooses_redis_and_writes_nothing_in_the_home(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    redis_server.flush()
    env = {STATE_VARIABLE: f" {redis_server.url()} "}
    with open_state(env, tmp_path / "home") as store:
        assert isinstance(store, RedisStore)
        assert store.url == redis_server.url()
        store.cache_put("k", "security", b"x", 0)
    assert not (tmp_path / "home").exists()


@pytest.mark.parametrize(
    ("value", "shown", "hidden"),
    [
        ("memcached://user:pw-123@127.0.0.1:11211", "memcached://...", "pw-123"),
        ("/var/lib/rmgr/state.db", "/var/lib/rmgr/state.db", None),
        ("user:pw-123@127.0.0.1:6379", "...127.0.0.1:6379", "pw-123"),
    ],
)
def test_another_value_is_a_store_error_naming_the_variable(
    tmp_path: Path, value: str, shown: str, hidden: str | None
) -> None:
    with pytest.raises(StoreError) as caught:
        open_state({STATE_VARIABLE: value}, tmp_path / "home")
    message = str(caught.value)
    assert STATE_VARIABLE in message
    assert repr(shown) in message
    assert "redis://127.0.0.1:6379/0" in message
    if hidden is not None:
        assert hidden not in message
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
def test_a_malformed_redis_url_is_a_store_error(tmp_path: Path, url: str, problem: str) -> None:
    with pytest.raises(StoreError, match=problem):
        open_state({STATE_VARIABLE: url}, tmp_path / "home")


def test_urls_are_shown_without_credentials_or_query() -> None:
    assert redacted_url("redis://u:p@10.0.0.1:6379/3?password=p") == "redis://10.0.0.1:6379/3"
    assert redacted_url("rediss://:p@[::1]:6380/0") == "rediss://[::1]:6380/0"
    assert redacted_url("redis://127.0.0.1:6379") == "redis://127.0.0.1:6379"


# --- keys and data -------------------------------------------------------------------------------


def test_every_key_is_under_the_prefix_and_prefixes_keep_stores_apart(
    redis_store: RedisStore, redis_server: RedisServer
) -> None:
    for call in every_call(redis_store).values():
        call()
    redis_store.reserve("live", [CHARGE], NOW, 30.0)
    redis_store.acquire_slot("gw", 2, "h", NOW, 30.0)
    with redis_server.client() as client:
        keys = sorted(key.decode() for key in client.keys("*"))
    assert keys
    assert all(key.startswith(DEFAULT_PREFIX) for key in keys), keys
    with RedisStore.open(redis_server.url(), prefix="other:") as other:
        assert other.attempts_since(0) == []
        assert other.cap_usage(NOW - 1) == []
        assert other.acquire_slot("gw", 1, "x", NOW, 30.0)
    assert [u.reserved for u in redis_store.cap_usage(NOW - 1)] == [1.0]


def test_long_attempt_messages_are_cut_short(redis_store: RedisStore, redis_server: RedisServer) -> None:
    redis_store.record_attempts(
        "r",
        "ask",
        [AttemptRecord(provider="p", model="m", outcome="timeout", started_at_ms=1, message="x" * 5000)],
    )
    with redis_server.client() as client:
        (member,) = client.zrange(DEFAULT_PREFIX + "attempts", 0, -1)
    assert b"x" * 2000 in member
    assert b"x" * 2001 not in member


def test_data_the_store_never_writes_is_a_store_error(
    redis_store: RedisStore, redis_server: RedisServer
) -> None:
    with redis_server.client() as client:
        client.set(DEFAULT_PREFIX + "circuit:p", b'{"state": "open", "consecutive_failures": 3}')
        client.sadd(DEFAULT_PREFIX + "circuits", "p")
        client.set(DEFAULT_PREFIX + "attempts", "not a sorted set")
        client.hset(
            DEFAULT_PREFIX + "history:entry:abcdabcdabcd", mapping={"agent_id": "a", "created_ms": "x"}
        )
        client.zadd(DEFAULT_PREFIX + "history:all", {"0000000000000001:abcdabcdabcd": 0})
    with pytest.raises(StoreError, match="the circuit of 'p' is impossible") as caught:
        redis_store.circuits()
    assert not isinstance(caught.value, StoreUnavailable)
    with pytest.raises(StoreError, match="the circuit of 'p' is impossible"):
        redis_store.admit_circuits(["p"], NOW, 30.0, 60.0)
    with pytest.raises(StoreError, match="WRONGTYPE"):
        redis_store.attempts_since(0)
    with pytest.raises(StoreError, match="history entry 'abcdabcdabcd' is impossible"):
        redis_store.history_list(None)


# --- round trips and compare-and-set -------------------------------------------------------------


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """``[n]``: how many times any Redis connection sent something (a command, or a pipeline of
    commands) since the fixture was made; each is a round trip."""
    sent = [0]
    send = redis.connection.AbstractConnection.send_packed_command

    def counted(self: redis.connection.AbstractConnection, command: Any, check_health: bool = True) -> None:
        sent[0] += 1
        send(self, command, check_health)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counted)
    return sent


def routed_call(store: RedisStore, holder: str, charges: list[Charge]) -> dict[str, Callable[[], object]]:
    """What the runner asks of the state for one routed call, in its order, through the books it
    uses (``StoreCircuits``, ``StoreQuotas``) and the attempt recorder."""
    circuits, quotas = StoreCircuits(store), StoreQuotas(store)
    claim = AttemptClaim(
        holder=holder,
        lease_s=30.0,
        slot=Slot(name="provider:p", limit=8, lease_s=5.0),
        charges=tuple(charges),
    )
    return {
        "admit_circuits": lambda: circuits.admit("p", 30.0, 60.0),
        "begin_attempt": lambda: quotas.begin_attempt(claim, NOW),
        "end_attempt": lambda: quotas.end_attempt(claim, charges, NOW),
        "record_circuit": lambda: circuits.record("p", "ok", 3),
        "record_attempts": lambda: store.record_attempts(
            "r", "ask", [AttemptRecord(provider="p", model="m", outcome="ok", started_at_ms=1)]
        ),
    }


def test_a_routed_call_is_four_round_trips(redis_store: RedisStore, round_trips: list[int]) -> None:
    """On a closed circuit, with the windows last settled by this store and no other client
    charging them: the admission, taking the slot with the reservation, settling it with the
    slot given back, and recording the attempt are one round trip each (no WATCH, no separate
    read before a write); the success on the circuit admitted clean is none."""
    budget = msgspec.structs.replace(CHARGE, cap_key="policy:p:usd:day", resource=Resource.USD, amount=0.25)
    charges = [CHARGE, budget]
    for call in routed_call(redis_store, "warm", charges).values():
        call()  # connects and settles once: the state of any call after the first
    counts = {}
    for name, call in routed_call(redis_store, "second", charges).items():
        before = round_trips[0]
        call()
        counts[name] = round_trips[0] - before
    assert counts == {
        "admit_circuits": 1,
        "begin_attempt": 1,
        "end_attempt": 1,
        "record_circuit": 0,
        "record_attempts": 1,
    }
    assert [(u.used, u.reserved) for u in redis_store.cap_usage(NOW - 1)] == [(0.5, 0.0), (2.0, 0.0)]
    assert redis_store.acquire_slot("provider:p", 1, "another", NOW, 5.0), "the slots were given back"


def test_a_stale_guess_costs_a_second_trip_and_a_refusal_on_it_holds_nothing(
    redis_store: RedisStore, redis_server: RedisServer, round_trips: list[int]
) -> None:
    """The sums this store's last settlement left are a guess: when another store charged the
    windows since, the first trip writes nothing (slot included) and the decision is taken on
    the sums it returned, a second trip when they fit. When they do not, the refusal leaves no
    slot and no reservation behind."""
    two = msgspec.structs.replace(CHARGE, limit=2.0)
    slot = Slot(name="gw", limit=1, lease_s=5.0)
    with RedisStore.open(redis_server.url()) as other:
        redis_store.settle("a", [two], NOW)  # leaves 1 of 2 as the guess
        assert other.reserve("b", [two], NOW, 30.0) is None  # now full
        before = round_trips[0]
        refusal = redis_store.begin_attempt(
            AttemptClaim(holder="c", lease_s=30.0, slot=slot, charges=(two,)), NOW
        )
        assert refusal == refuse([two], {(two.cap_key, two.window): 2.0})
        assert round_trips[0] - before == 1
        assert other.acquire_slot("gw", 1, "someone", NOW, 5.0), "no slot stayed taken"
        other.release_slot("gw", "someone")
        other.release("b")
        before = round_trips[0]
        assert (
            redis_store.begin_attempt(AttemptClaim(holder="d", lease_s=30.0, slot=slot, charges=(two,)), NOW)
            is None
        )
        assert round_trips[0] - before == 2  # no guess left: the sums read, then the commit
        assert not other.acquire_slot("gw", 1, "someone", NOW, 5.0)
    assert [(u.used, u.reserved) for u in redis_store.cap_usage(NOW - 1)] == [(1.0, 1.0)]


def test_a_busy_slot_is_one_round_trip_that_reserves_nothing(
    redis_store: RedisStore, round_trips: list[int]
) -> None:
    slot = Slot(name="gw", limit=1, lease_s=5.0)
    assert redis_store.acquire_slot("gw", 1, "holder", NOW, 5.0)
    redis_store.settle("a", [CHARGE], NOW)  # a guess that fits
    before = round_trips[0]
    claim = AttemptClaim(holder="b", lease_s=30.0, slot=slot, charges=(CHARGE,))
    assert redis_store.begin_attempt(claim, NOW) == SlotBusy()
    assert round_trips[0] - before == 1
    assert [(u.used, u.reserved) for u in redis_store.cap_usage(NOW - 1)] == [(1.0, 0.0)]


def test_a_probe_raced_for_between_the_read_and_the_write_goes_to_one_store(
    redis_store: RedisStore, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both stores read the open, cooled-down circuit; the other one stores its probe first, so
    this one's write finds the circuit changed, decides again on it, and is refused."""
    for _ in range(3):
        redis_store.record_circuit("p", "timeout", NOW, 3)
    later = NOW + 31
    decide = redis_store_module.admit
    raced: list[str] = []

    def admit_after_the_other(state: CircuitState, now: float, **limits: float) -> Admission:
        if not raced:
            raced.append("racing")
            with RedisStore.open(redis_server.url()) as other:
                raced[0] = other.admit_circuits(["p"], now, 30.0, 60.0)["p"].decision
        return decide(state, now, **limits)

    monkeypatch.setattr(redis_store_module, "admit", admit_after_the_other)
    answer = redis_store.admit_circuits(["p"], later, 30.0, 60.0)["p"]
    assert raced == ["probe"]
    assert answer.decision == "refused"
    assert answer.retry_at == later + 60.0
    (stored,) = redis_store.circuits()
    assert (stored.state, stored.probe_started_at) == ("half_open", later)


def test_a_failure_recorded_between_the_read_and_the_write_is_counted_too(
    redis_store: RedisStore, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    decide = redis_store_module.record
    raced: list[int] = []

    def record_after_the_other(state: CircuitState, outcome: str, now: float, **limits: int) -> CircuitState:
        if not raced:
            raced.append(0)
            with RedisStore.open(redis_server.url()) as other:
                raced[0] = other.record_circuit("p", "timeout", now, 2).consecutive_failures
        return decide(state, outcome, now, **limits)

    monkeypatch.setattr(redis_store_module, "record", record_after_the_other)
    opened = redis_store.record_circuit("p", "timeout", NOW, 2)
    assert raced == [1]
    assert (opened.state, opened.consecutive_failures, opened.opened_at) == ("open", 2, NOW)
    assert redis_store.circuits() == [opened]


def test_a_cap_filled_between_the_read_and_the_write_refuses_the_reservation(
    redis_store: RedisStore, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    one = msgspec.structs.replace(CHARGE, limit=1.0)
    decide = redis_store_module.refuse
    raced: list[Refusal | str | None] = []

    def refuse_after_the_other(
        charges: Sequence[Charge], used: Mapping[tuple[str, str], float]
    ) -> Refusal | None:
        if not raced:
            raced.append("racing")
            with RedisStore.open(redis_server.url()) as other:
                raced[0] = other.reserve("other", [one], NOW, 30.0)
        return decide(charges, used)

    monkeypatch.setattr(redis_store_module, "refuse", refuse_after_the_other)
    refusal = redis_store.reserve("mine", [one], NOW, 30.0)
    assert raced == [None]
    assert refusal == decide([one], {(one.cap_key, one.window): 1.0})
    assert [u.reserved for u in redis_store.cap_usage(NOW - 1)] == [1.0]


def test_sums_left_by_a_settlement_are_only_a_guess(
    redis_store: RedisStore, redis_server: RedisServer
) -> None:
    """A reservation first tries the sums its store's last settlement of the windows left. When
    another store charged them since, it is decided on what they hold: refused when that is
    full, and never refused on the guess alone when what they hold has room."""
    two = msgspec.structs.replace(CHARGE, limit=2.0)
    with RedisStore.open(redis_server.url()) as other:
        redis_store.reserve("a", [two], NOW, 30.0)
        redis_store.settle("a", [two], NOW)  # leaves 1 of 2
        assert other.reserve("b", [two], NOW, 30.0) is None  # now full
        assert redis_store.reserve("c", [two], NOW, 30.0) == refuse([two], {(two.cap_key, two.window): 2.0})
        other.release("b")
        assert redis_store.reserve("c", [two], NOW, 30.0) is None
        redis_store.settle("c", [two], NOW)  # leaves 2 of 2: the guess refuses
        with redis_server.client() as client:
            client.hset(DEFAULT_PREFIX + "quota:settled", _window_field(two), "0.5")  # a hand edit
        assert redis_store.reserve("d", [two], NOW, 30.0) is None
    assert [(u.used, u.reserved) for u in redis_store.cap_usage(NOW - 1)] == [(0.5, 1.0)]


def test_scripts_the_server_forgot_are_sent_again(redis_store: RedisStore, redis_server: RedisServer) -> None:
    """Scripts are run by their SHA1; one the server does not know (flushed, or lost in a
    restart) is sent whole, without failing the call."""
    for call in every_call(redis_store).values():
        with redis_server.client() as client:
            client.script_flush()
        call()
    with redis_server.client() as client:
        client.script_flush()
    assert redis_store.record_circuit("p", "timeout", NOW, 3).consecutive_failures == 2
    with redis_server.client() as client:
        client.script_flush()
    assert redis_store.reserve("r", [CHARGE], NOW, 30.0) is None
    assert [u.reserved for u in redis_store.cap_usage(NOW - 1)] == [1.0]


def test_the_first_call_after_a_restart_finds_the_server_that_is_back(tmp_path: Path) -> None:
    """The store keeps a connection; the server's restart closed it, so the next call connects
    again before sending instead of failing on the closed one."""
    server = RedisServer(tmp_path)
    server.start()
    try:
        with RedisStore.open(server.url()) as store:
            assert store.admit_circuits(["p"], NOW, 30.0, 60.0)["p"].decision == "allowed"
            server.stop()
            server.start()
            assert store.record_circuit("p", "timeout", NOW, 3).consecutive_failures == 1
            server.stop()
            server.start()
            assert store.admit_circuits(["p"], NOW, 30.0, 60.0)["p"].decision == "allowed"
    finally:
        server.stop()
