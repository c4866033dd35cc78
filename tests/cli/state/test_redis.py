"""The Redis backend on its own: unreachable, silent, stalled, restarted or refusing a password;
its keys and data it cannot read; its round trips and its compare-and-set under races."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import anyio
import msgspec
import pytest
import redis.asyncio.connection

from rmcli.state import AttemptClaim, Origin, Slot, SlotBusy, State, StoreError, StoreUnavailable
from rmcli.state.redis import DEFAULT_PREFIX, open_redis
from rmcore import breaker, quota
from rmcore.attempts import AttemptRecord
from rmcore.quota import Charge, Refusal, Resource, refuse
from tests.cli.state.backends import HELD_S, RedisServer, free_port

pytestmark = pytest.mark.anyio

_T = TypeVar("_T")
NOW = 1_764_000_000.0
CHARGE = Charge(
    cap_key="provider:gw:requests:60s",
    resource=Resource.REQUESTS,
    window="1763999940",
    resets_at=NOW,
    amount=1.0,
    limit=10.0,
)
CLAIM = AttemptClaim(holder="h", lease_s=30.0, slot=Slot(name="gw", limit=2, lease_s=5.0), charges=(CHARGE,))
ATTEMPT = AttemptRecord(provider="p", model="m", outcome="ok", started_at_ms=1)


@pytest.fixture
async def store(redis_server: RedisServer) -> AsyncIterator[State]:
    """The Redis state on the session's server, flushed."""
    redis_server.flush()
    async with open_redis(redis_server.url()) as opened:
        yield opened


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, to stop, stall or restart."""
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def every_call(state: State) -> dict[str, Callable[[], Awaitable[object]]]:
    """One call of every method of every concern, by name."""
    return {
        "attempts.sent": lambda: state.attempts.sent("k", Origin("r", "ask"), ATTEMPT),
        "attempts.settle": lambda: state.attempts.settle("k", Origin("r", "ask"), ATTEMPT),
        "attempts.withdraw": lambda: state.attempts.withdraw("k"),
        "attempts.since": lambda: state.attempts.since(0),
        "circuits.admit": lambda: state.circuits.admit("p", NOW, 30.0, 60.0),
        "circuits.record": lambda: state.circuits.record("p", "timeout", NOW, 3),
        "circuits.release_probe": lambda: state.circuits.release_probe("p", NOW, NOW),
        "circuits.all": lambda: state.circuits.all(),
        "circuits.reset": lambda: state.circuits.reset(None),
        "caps.begin": lambda: state.caps.begin(CLAIM, NOW),
        "caps.end": lambda: state.caps.end(CLAIM, [CHARGE], NOW),
        "caps.renew": lambda: state.caps.renew(Slot(name="gw", limit=2, lease_s=5.0), "h", NOW),
        "caps.usage": lambda: state.caps.usage(NOW),
        "cache.get": lambda: state.cache.get("k", 0, 1000),
        "cache.put": lambda: state.cache.put("k", "security", b"x", 0),
        "cache.stats": lambda: state.cache.stats(0, 1000),
        "cache.clear": lambda: state.cache.clear(),
        "cache.prune": lambda: state.cache.prune(0, 1000),
        "history.add": lambda: state.history.add("a", "q", "ok", 0.5, 0, b"{}"),
        "history.list": lambda: state.history.list(None),
        "history.resolve": lambda: state.history.resolve("abcd"),
        "history.get": lambda: state.history.get("abcd"),
        "history.stats": lambda: state.history.stats(None),
        "history.delete": lambda: state.history.delete("abcd"),
        "history.clear": lambda: state.history.clear(None),
        "history.export": lambda: state.history.export("a"),
    }


async def all_at_once(
    calls: dict[str, Callable[[], Awaitable[object]]],
) -> dict[str, tuple[BaseException | None, float]]:
    """Run ``calls`` concurrently: each one's error (None when it succeeded) and duration."""
    results: dict[str, tuple[BaseException | None, float]] = {}

    async def one(name: str, call: Callable[[], Awaitable[object]]) -> None:
        started = time.monotonic()
        try:
            await call()
        except Exception as exc:
            results[name] = (exc, time.monotonic() - started)
        else:
            results[name] = (None, time.monotonic() - started)

    async with anyio.create_task_group() as tasks:
        for name, call in calls.items():
            tasks.start_soon(one, name, call)
    return results


def in_another_thread(work: Callable[[], Awaitable[_T]]) -> _T:
    """Run ``work`` on an event loop of its own in another thread, while this one waits: another
    process acting between this one's read and its write."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(anyio.run, work).result()


def test_every_call_covers_every_protocol() -> None:
    """The calls above are every method of the five protocols."""
    from rmcli.state import base

    protocols = {
        "attempts": base.Attempts,
        "circuits": base.Circuits,
        "caps": base.Caps,
        "cache": base.Cache,
        "history": base.History,
    }
    methods = {
        f"{concern}.{name}"
        for concern, kind in protocols.items()
        for name in vars(kind)
        if not name.startswith("_")
    }
    assert set(every_call(State.__new__(State))) == methods


# --- unreachable, silent, stalled, restarted -----------------------------------------------------


async def test_every_call_is_unavailable_at_once_when_nothing_listens() -> None:
    """With nothing on the port, every call fails within 2 s with ``StoreUnavailable`` naming the
    URL without its password (a claim of nothing asks nothing, and is None)."""
    port = free_port()
    async with open_redis(f"redis://rmgr:s3cret-pw@127.0.0.1:{port}/2") as state:
        assert await state.caps.begin(AttemptClaim(holder="h", lease_s=30.0), NOW) is None
        for name, (error, took) in (await all_at_once(every_call(state))).items():
            assert isinstance(error, StoreUnavailable) and took < 2.0, name
            assert error.url == f"redis://127.0.0.1:{port}/2" and error.path is None, name
            assert str(error).startswith(f"the shared state (redis://127.0.0.1:{port}/2) is unreachable: "), (
                name
            )
            assert "s3cret" not in str(error), name


async def test_a_server_that_never_answers_is_unavailable_after_the_socket_timeout() -> None:
    """A listener that accepts connections but never replies: ``StoreUnavailable`` after about the
    1 s answer timeout, not a hang."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        async with open_redis(f"redis://127.0.0.1:{silent.getsockname()[1]}/0") as state:
            started = time.monotonic()
            with pytest.raises(StoreUnavailable, match="no answer within 1 s"):
                await state.circuits.all()
            assert 0.4 < time.monotonic() - started < 2.0


def test_a_stalled_redis_never_blocks_the_event_loop(
    own_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis stopped with SIGSTOP (connections accepted, nothing answered) while calls are made
    under asyncio debug mode with ``slow_callback_duration = HELD_S``: every call of the Redis state
    raises ``StoreUnavailable`` within about the 1 s timeout, and asyncio logs no callback that held
    the loop past ``HELD_S`` while it is stalled."""

    async def main() -> dict[str, tuple[BaseException | None, float]]:
        loop = asyncio.get_running_loop()
        loop.slow_callback_duration = HELD_S
        async with open_redis(own_server.url()) as state:
            await all_at_once(every_call(state))  # warm: connections made, scripts loaded
            caplog.clear()  # opening (imports, first connections) is start-up, not the stall
            with own_server.stalled():
                return await all_at_once(every_call(state))

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        results = asyncio.run(main(), debug=True)
    for name, (error, took) in results.items():
        assert isinstance(error, StoreUnavailable) and took < 2.0, (name, error, took)
    slow = [record.getMessage() for record in caplog.records if "Executing" in record.getMessage()]
    assert slow == []


async def test_after_redis_restarts_the_same_state_works_again(own_server: RedisServer) -> None:
    """Connections and loaded scripts die with the server; the state makes new ones by itself,
    and the first call after the restart finds the server that is back."""
    async with open_redis(own_server.url()) as state:
        await state.cache.put("k", "security", b"answer", 0)
        assert await state.caps.begin(CLAIM, NOW) is None
        own_server.stop()
        with pytest.raises(StoreUnavailable):
            await state.cache.get("k", 0, 1000)
        own_server.start()
        assert await state.cache.get("k", 0, 1000) is None  # nothing was persisted
        await state.cache.put("k", "security", b"again", 0)
        assert await state.cache.get("k", 0, 1000) == b"again"
        own_server.stop()
        own_server.start()
        assert await state.caps.begin(CLAIM, NOW) is None
        assert (await state.circuits.admit("p", NOW, 30.0, 60.0)).decision == "allowed"
        assert [u.reserved for u in await state.caps.usage(NOW - 1)] == [1.0]


@pytest.mark.parametrize("moment", ["before the read", "before the write"])
async def test_redis_going_down_during_a_reservation_is_unavailable_and_records_nothing(
    own_server: RedisServer, monkeypatch: pytest.MonkeyPatch, moment: str
) -> None:
    """The server stops before the caps are read, or after they were read and before the
    reservation is written: ``StoreUnavailable`` (not another error), and after a restart the
    reservation is not there."""
    decide = quota.refuse

    def stop_then_decide(*args: Any) -> Refusal | None:
        own_server.stop()
        return decide(*args)

    async with open_redis(own_server.url()) as state:
        assert await state.caps.usage(NOW) == []  # connected before the server stops
        if moment == "before the read":
            own_server.stop()
        else:
            monkeypatch.setattr("rmcli.state.redis.refuse", stop_then_decide)
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await state.caps.begin(AttemptClaim(holder="r", lease_s=30.0, charges=(CHARGE,)), NOW)
        assert time.monotonic() - started < 2.0
        monkeypatch.undo()
        own_server.start()
        assert await state.caps.usage(NOW - 1) == []


async def test_a_password_the_server_refuses_is_a_store_error_that_does_not_show_it(
    own_server: RedisServer,
) -> None:
    """Wrong or missing credentials are a configuration error (exit 2), not an outage."""
    with own_server.client() as admin:
        admin.config_set("requirepass", "right-pw")
    for url in (f"redis://:wrong-pw@127.0.0.1:{own_server.port}/0", own_server.url()):
        async with open_redis(url) as state:
            with pytest.raises(StoreError) as caught:
                await state.circuits.all()
        assert not isinstance(caught.value, StoreUnavailable)
        assert "credentials" in str(caught.value) and "wrong-pw" not in str(caught.value)
    async with open_redis(f"redis://:right-pw@127.0.0.1:{own_server.port}/0") as state:
        assert await state.circuits.all() == []


# --- keys and data -------------------------------------------------------------------------------


async def test_every_key_is_under_the_prefix_and_prefixes_keep_states_apart(
    store: State, redis_server: RedisServer
) -> None:
    """Every key written starts with the prefix; a state of another prefix sees none of it."""
    for call in every_call(store).values():
        await call()
    await store.caps.begin(AttemptClaim(holder="live", lease_s=30.0, slot=CLAIM.slot, charges=(CHARGE,)), NOW)
    with redis_server.client() as client:
        keys = sorted(key.decode() for key in client.keys("*"))
    assert keys and all(key.startswith(DEFAULT_PREFIX) for key in keys), keys
    async with open_redis(redis_server.url(), prefix="other:") as other:
        assert await other.attempts.since(0) == []
        assert await other.caps.usage(NOW - 1) == []
        assert await other.caps.renew(Slot(name="gw", limit=1, lease_s=5.0), "x", NOW)
    assert [u.reserved for u in await store.caps.usage(NOW - 1)] == [1.0]


async def test_long_attempt_messages_are_cut_short(store: State, redis_server: RedisServer) -> None:
    """An attempt's message is stored cut to 2,000 characters."""
    await store.attempts.sent(
        "k", Origin("r", "ask"), AttemptRecord(provider="p", model="m", outcome="timeout", message="x" * 5000)
    )
    with redis_server.client() as client:
        (member,) = client.zrange(DEFAULT_PREFIX + "attempts", 0, -1)
    assert b"x" * 2000 in member and b"x" * 2001 not in member


async def test_an_attempt_stored_before_the_perspective_was_kept_reads_without_one(
    store: State, redis_server: RedisServer
) -> None:
    """An attempt a fleet stored before schema 7 (its JSON array one field shorter) reads back with
    no perspective, not as damaged data."""
    record = AttemptRecord(provider="p", model="m", outcome="ok")
    await store.attempts.sent("k", Origin("r", "analyze", "ux"), record)
    with redis_server.client() as client:
        (member,) = client.zrange(DEFAULT_PREFIX + "attempts", 0, -1)
        client.delete(DEFAULT_PREFIX + "attempts")
        client.zadd(DEFAULT_PREFIX + "attempts", {member.replace(b',"ux"]', b"]"): 0})
    assert [r.perspective for r in await store.attempts.since(0)] == [None]


async def test_data_the_state_never_writes_is_a_store_error(store: State, redis_server: RedisServer) -> None:
    """An impossible circuit, a key of the wrong type or an entry missing fields is a
    ``StoreError`` naming it, never taken for an outage."""
    with redis_server.client() as client:
        client.set(DEFAULT_PREFIX + "circuit:p", b'{"state": "open", "consecutive_failures": 3}')
        client.sadd(DEFAULT_PREFIX + "circuits", "p")
        client.set(DEFAULT_PREFIX + "attempts", "not a sorted set")
        client.hset(
            DEFAULT_PREFIX + "history:entry:abcdabcdabcd", mapping={"agent_id": "a", "created_ms": "x"}
        )
        client.zadd(DEFAULT_PREFIX + "history:all", {"0000000000000001:abcdabcdabcd": 0})
    with pytest.raises(StoreError, match="the circuit of 'p' is impossible") as caught:
        await store.circuits.all()
    assert not isinstance(caught.value, StoreUnavailable)
    with pytest.raises(StoreError, match="the circuit of 'p' is impossible"):
        await store.circuits.admit("p", NOW, 30.0, 60.0)
    with pytest.raises(StoreError, match="WRONGTYPE"):
        await store.attempts.since(0)
    with pytest.raises(StoreError, match="history entry 'abcdabcdabcd' is impossible"):
        await store.history.list(None)


# --- round trips and compare-and-set -------------------------------------------------------------


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """``[n]``: how many times any Redis connection sent something since the fixture was made."""
    sent = [0]
    send = redis.asyncio.connection.AbstractConnection.send_packed_command

    async def counted(self: Any, command: Any, check_health: bool = True) -> None:
        sent[0] += 1
        await send(self, command, check_health)

    monkeypatch.setattr(redis.asyncio.connection.AbstractConnection, "send_packed_command", counted)
    return sent


async def test_a_routed_call_is_five_round_trips(store: State, round_trips: list[int]) -> None:
    """On a closed circuit, with the windows last settled by this state and no other client
    charging them: admitting, beginning (slot and reservation), recording the attempt sent,
    ending (settling, slot given back) and settling the attempt are one round trip each (no
    WATCH, no read before a write); the success on the circuit admitted clean is none."""
    budget = msgspec.structs.replace(CHARGE, cap_key="policy:p:usd:day", resource=Resource.USD, amount=0.25)
    slot = Slot(name="provider:p", limit=8, lease_s=5.0)

    def routed(holder: str) -> dict[str, Callable[[], Awaitable[object]]]:
        claim = AttemptClaim(holder=holder, lease_s=30.0, slot=slot, charges=(CHARGE, budget))
        return {
            "admit": lambda: store.circuits.admit("p", NOW, 30.0, 60.0),
            "begin": lambda: store.caps.begin(claim, NOW),
            "sent": lambda: store.attempts.sent(holder, Origin("r", "ask"), ATTEMPT),
            "end": lambda: store.caps.end(claim, [CHARGE, budget], NOW),
            "record": lambda: store.circuits.record("p", "ok", NOW, 3),
            "settle": lambda: store.attempts.settle(holder, Origin("r", "ask"), ATTEMPT),
        }

    for call in routed("warm").values():
        await call()  # connects and settles once: the state of any call after the first
    counts = {}
    for name, call in routed("second").items():
        before = round_trips[0]
        await call()
        counts[name] = round_trips[0] - before
    assert counts == {"admit": 1, "begin": 1, "sent": 1, "end": 1, "record": 0, "settle": 1}
    assert [(u.used, u.reserved) for u in await store.caps.usage(NOW - 1)] == [(0.5, 0.0), (2.0, 0.0)]
    assert await store.caps.renew(Slot(name="provider:p", limit=1, lease_s=5.0), "another", NOW)


async def test_a_stale_guess_costs_a_second_trip_and_a_refusal_on_it_holds_nothing(
    store: State, redis_server: RedisServer, round_trips: list[int]
) -> None:
    """The sums this state's last settlement left are a guess: when another state charged the
    windows since, the first trip writes nothing (slot included) and the decision is taken on the
    sums it returned, a second trip when they fit. A refusal leaves no slot and no reservation;
    a busy slot is one trip that reserves nothing."""
    two = msgspec.structs.replace(CHARGE, limit=2.0)
    slot = Slot(name="gw", limit=1, lease_s=5.0)
    async with open_redis(redis_server.url()) as other:
        await store.caps.end(AttemptClaim(holder="a", lease_s=30.0), [two], NOW)  # leaves 1 of 2: the guess
        assert (
            await other.caps.begin(AttemptClaim(holder="b", lease_s=30.0, charges=(two,)), NOW) is None
        )  # full
        before = round_trips[0]
        refusal = await store.caps.begin(
            AttemptClaim(holder="c", lease_s=30.0, slot=slot, charges=(two,)), NOW
        )
        assert refusal == refuse([two], {(two.cap_key, two.window): 2.0})
        assert round_trips[0] - before == 1
        assert await other.caps.renew(slot, "someone", NOW), "no slot stayed taken"
        before = round_trips[0]
        busy = await store.caps.begin(AttemptClaim(holder="c", lease_s=30.0, slot=slot, charges=(two,)), NOW)
        assert busy == SlotBusy() and round_trips[0] - before == 1
        await other.caps.end(AttemptClaim(holder="someone", lease_s=30.0, slot=slot), None, NOW)
        await other.caps.end(AttemptClaim(holder="b", lease_s=30.0, charges=(two,)), None, NOW)
        before = round_trips[0]
        assert (
            await store.caps.begin(AttemptClaim(holder="d", lease_s=30.0, slot=slot, charges=(two,)), NOW)
            is None
        )
        assert round_trips[0] - before == 2  # no guess left: the sums read, then the commit
        assert not await other.caps.renew(slot, "someone", NOW)
    assert [(u.used, u.reserved) for u in await store.caps.usage(NOW - 1)] == [(1.0, 1.0)]


async def test_a_probe_raced_for_between_the_read_and_the_write_goes_to_one_state(
    store: State, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both states read the open, cooled-down circuit; the other stores its probe first, so this
    one's write finds the circuit changed, decides again on it, and is refused."""
    for _ in range(3):
        await store.circuits.record("p", "timeout", NOW, 3)
    later, decide, raced = NOW + 31, breaker.admit, list[str]()

    def admit_after_the_other(*args: Any, **limits: Any) -> breaker.Admission:
        if not raced:
            raced.append("racing")
            raced[0] = in_another_thread(lambda: other_admits(redis_server.url(), later))
        return decide(*args, **limits)

    monkeypatch.setattr(breaker, "admit", admit_after_the_other)
    answer = await store.circuits.admit("p", later, 30.0, 60.0)
    assert raced == ["probe"]
    assert (answer.decision, answer.retry_at) == ("refused", later + 60.0)
    (stored,) = await store.circuits.all()
    assert (stored.state, stored.probe_started_at) == ("half_open", later)


async def other_admits(url: str, now: float) -> str:
    async with open_redis(url) as other:
        return (await other.circuits.admit("p", now, 30.0, 60.0)).decision


async def test_a_failure_recorded_between_the_read_and_the_write_is_counted_too(
    store: State, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another state's failure lands between this one's read and write: both are counted."""
    decide, raced = breaker.record, list[int]()

    async def other_records() -> int:
        async with open_redis(redis_server.url()) as other:
            return (await other.circuits.record("p", "timeout", NOW, 2)).consecutive_failures

    def record_after_the_other(*args: Any, **limits: Any) -> breaker.CircuitState:
        if not raced:
            raced.append(0)
            raced[0] = in_another_thread(other_records)
        return decide(*args, **limits)

    monkeypatch.setattr(breaker, "record", record_after_the_other)
    opened = await store.circuits.record("p", "timeout", NOW, 2)
    assert raced == [1]
    assert (opened.state, opened.consecutive_failures, opened.opened_at) == ("open", 2, NOW)
    assert await store.circuits.all() == [opened]


async def test_a_cap_filled_between_the_read_and_the_write_refuses_the_reservation(
    store: State, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another state reserves the last of the cap between this one's read and its write: this
    one's commit finds the sums changed, and the decision taken again refuses it."""
    one = msgspec.structs.replace(CHARGE, limit=1.0)
    decide, raced = quota.refuse, list[Refusal | SlotBusy | None]()

    async def other_reserves() -> Refusal | SlotBusy | None:
        async with open_redis(redis_server.url()) as other:
            return await other.caps.begin(AttemptClaim(holder="other", lease_s=30.0, charges=(one,)), NOW)

    def refuse_after_the_other(*args: Any) -> Refusal | None:
        if not raced:
            raced.append(SlotBusy())
            raced[0] = in_another_thread(other_reserves)
        return decide(*args)

    monkeypatch.setattr("rmcli.state.redis.refuse", refuse_after_the_other)
    refusal = await store.caps.begin(AttemptClaim(holder="mine", lease_s=30.0, charges=(one,)), NOW)
    assert raced == [None]
    assert refusal == decide([one], {(one.cap_key, one.window): 1.0})
    assert [u.reserved for u in await store.caps.usage(NOW - 1)] == [1.0]


async def test_sums_left_by_a_settlement_are_only_a_guess(store: State, redis_server: RedisServer) -> None:
    """When another state charged the windows since, the reservation is decided on what they
    hold: refused when that is full, never refused on the guess alone when there is room."""
    two = msgspec.structs.replace(CHARGE, limit=2.0)

    def claim(holder: str) -> AttemptClaim:
        return AttemptClaim(holder=holder, lease_s=30.0, charges=(two,))

    async with open_redis(redis_server.url()) as other:
        assert await store.caps.begin(claim("a"), NOW) is None
        await store.caps.end(claim("a"), [two], NOW)  # leaves 1 of 2
        assert await other.caps.begin(claim("b"), NOW) is None  # now full
        assert await store.caps.begin(claim("c"), NOW) == refuse([two], {(two.cap_key, two.window): 2.0})
        await other.caps.end(claim("b"), None, NOW)
        assert await store.caps.begin(claim("c"), NOW) is None
        await store.caps.end(claim("c"), [two], NOW)  # leaves 2 of 2: the guess refuses
        with redis_server.client() as client:
            field = msgspec.json.encode([two.cap_key, two.window])
            client.hset(DEFAULT_PREFIX + "quota:settled", field, "0.5")  # a hand edit
        assert await store.caps.begin(claim("d"), NOW) is None
    assert [(u.used, u.reserved) for u in await store.caps.usage(NOW - 1)] == [(0.5, 1.0)]


async def test_scripts_the_server_forgot_are_sent_again(store: State, redis_server: RedisServer) -> None:
    """Scripts run by their SHA1; one the server does not know (flushed, or lost in a restart) is
    sent whole, without failing the call."""
    for call in every_call(store).values():
        with redis_server.client() as client:
            client.script_flush()
        await call()
    with redis_server.client() as client:
        client.script_flush()
    assert (await store.circuits.record("p", "timeout", NOW, 3)).consecutive_failures == 1  # reset last
