"""Circuit breakers on every backend: shared between states and processes, one probe at a time,
a success on a circuit admitted clean costing nothing, and closed by a reset."""

from __future__ import annotations

import json

import anyio
import pytest

from rmcli.state import State
from rmcore.breaker import Admission, CircuitState
from tests.cli.state.backends import BACKENDS, WAIT_FOR_GO, Backend, RedisServer, run_workers

pytestmark = pytest.mark.anyio

COOLDOWN_S = 30.0
PROBE_TIMEOUT_S = 60.0


async def open_circuit(state: State, provider: str, at: float, threshold: int = 3) -> CircuitState:
    """Record ``threshold`` breaking failures, the last at ``at``: the circuit opens then."""
    circuit = CircuitState(provider=provider)
    for n in range(threshold):
        circuit = await state.circuits.record(provider, "server_error", at - threshold + 1 + n, threshold)
    assert circuit.state == "open"
    return circuit


async def admit(state: State, provider: str, now: float) -> Admission:
    return await state.circuits.admit(provider, now, COOLDOWN_S, PROBE_TIMEOUT_S)


async def test_failures_are_counted_and_open_the_circuit_at_the_threshold(state: State) -> None:
    """Breaking failures count up to the threshold, which opens the circuit; others change nothing."""
    assert await state.circuits.record("p", "timeout", 10.0, 3) == CircuitState(
        provider="p", consecutive_failures=1
    )
    assert await state.circuits.record("p", "bad_request", 11.0, 3) == CircuitState(
        provider="p", consecutive_failures=1
    )
    await state.circuits.record("p", "connection", 12.0, 3)
    opened = await state.circuits.record("p", "overloaded", 13.0, 3)
    assert opened == CircuitState(provider="p", state="open", consecutive_failures=3, opened_at=13.0)
    assert await state.circuits.all() == [opened]


async def test_a_success_closes_a_stored_circuit(state: State) -> None:
    """A success resets the count and closes the circuit."""
    await open_circuit(state, "p", at=100.0)
    assert await state.circuits.record("p", "ok", 101.0, 3) == CircuitState(provider="p")
    assert await state.circuits.all() == [CircuitState(provider="p")]


async def test_unknown_providers_are_closed_and_nothing_is_written(state: State) -> None:
    """A provider never recorded is admitted, and admitting it stores nothing."""
    assert await admit(state, "a", 5.0) == Admission(decision="allowed", state=CircuitState(provider="a"))
    assert await state.circuits.all() == []


async def test_open_refuses_then_one_probe_then_refuses(state: State) -> None:
    """An open circuit refuses until its cooldown ends, lets one probe through, then refuses
    until the probe times out; a breaking failure meanwhile reopens it."""
    await open_circuit(state, "p", at=100.0)
    refused = await admit(state, "p", 129.0)
    assert (refused.decision, refused.retry_at) == ("refused", 130.0)
    probe = await admit(state, "p", 130.0)
    assert probe.decision == "probe"
    assert await state.circuits.all() == [probe.state]
    again = await admit(state, "p", 131.0)
    assert (again.decision, again.retry_at) == ("refused", 190.0)
    assert (await state.circuits.record("p", "rate_limited", 132.0, 3)).opened_at == 132.0
    assert (await admit(state, "p", 161.9)).decision == "refused"


async def test_a_probe_never_sent_is_handed_back_and_the_next_asker_probes(state: State) -> None:
    """Releasing an unsent probe reopens the circuit with its cooldown run: the next asker probes."""
    opened = await open_circuit(state, "p", at=100.0)
    assert (await admit(state, "p", 200.0)).decision == "probe"
    assert await state.circuits.release_probe("p", 200.0, 200.1) == opened
    assert await state.circuits.all() == [opened]
    again = await admit(state, "p", 200.2)
    assert (again.decision, again.state.probe_started_at) == ("probe", 200.2)


async def test_a_late_release_never_lets_a_second_probe_in(state: State) -> None:
    """The probe admitted at 200 timed out and another asker holds the one of 260: handing back
    the first changes nothing, and the one of 260 still keeps everyone else out."""
    await open_circuit(state, "p", at=100.0)
    assert (await admit(state, "p", 200.0)).decision == "probe"
    newer = await admit(state, "p", 200.0 + PROBE_TIMEOUT_S)
    assert newer.decision == "probe"
    assert await state.circuits.release_probe("p", 200.0, 261.0) == newer.state
    assert (await admit(state, "p", 262.0)).decision == "refused"


async def test_each_provider_is_decided_on_its_own(state: State) -> None:
    """Circuits of different providers do not affect each other; ``all`` lists them by name."""
    await open_circuit(state, "down", at=100.0)
    await open_circuit(state, "cooled", at=50.0)
    decisions = {name: (await admit(state, name, 110.0)).decision for name in ("down", "up", "cooled")}
    assert decisions == {"down": "refused", "up": "allowed", "cooled": "probe"}
    assert [(c.provider, c.state) for c in await state.circuits.all()] == [
        ("cooled", "half_open"),
        ("down", "open"),
    ]


async def test_an_unknown_outcome_is_refused_and_stores_nothing(state: State) -> None:
    """A typo in an outcome is a ``ValueError``, never a silent no-op."""
    with pytest.raises(ValueError):
        await state.circuits.record("p", "server-error", 1.0, 3)
    assert await state.circuits.all() == []


async def test_reset_closes_the_circuits_named_or_all(state: State) -> None:
    """A reset deletes the named circuits (closing them) and says which were stored; None: all."""
    for name in ("a", "b", "c"):
        await open_circuit(state, name, at=100.0)
    assert await state.circuits.reset(["b", "nobody"]) == ["b"]
    assert await state.circuits.reset([]) == []
    assert [c.provider for c in await state.circuits.all()] == ["a", "c"]
    assert (await admit(state, "b", 101.0)).decision == "allowed"
    assert await state.circuits.reset(None) == ["a", "c"]
    assert await state.circuits.all() == []


async def test_a_circuit_changed_by_another_state_is_seen_at_once(backend: Backend) -> None:
    """Each change by another state (or process) shows in this one's very next decision."""
    async with backend.open() as mine, backend.open() as theirs:
        assert (await admit(mine, "p", 100.0)).decision == "allowed"
        opened = await open_circuit(theirs, "p", at=101.0)
        assert (await admit(mine, "p", 102.0)).decision == "refused"
        assert (await admit(mine, "p", 101.0 + COOLDOWN_S)).decision == "probe"
        assert (await admit(theirs, "p", 101.0 + COOLDOWN_S)).decision == "refused"
        assert await theirs.circuits.record("p", "ok", 140.0, 3) == CircuitState(provider="p")
        assert (await admit(mine, "p", 141.0)).decision == "allowed"
        assert (await mine.circuits.record("p", "timeout", 142.0, 3)).consecutive_failures == 1
        assert (await mine.circuits.record("p", "timeout", 143.0, 3)).consecutive_failures == 2
        assert (await theirs.circuits.record("p", "timeout", 144.0, 3)).state == "open"
        assert (await mine.circuits.record("p", "timeout", 145.0, 3)).consecutive_failures == 4
        assert opened.opened_at == 101.0


async def test_a_success_on_a_circuit_admitted_clean_is_not_sent(backend: Backend) -> None:
    """A success on a circuit last admitted closed with no failures changes nothing, so it is not
    written: a failure another state recorded since the admission stays counted (the success is
    taken to have happened at the admission). Once admitted with that failure, a success is sent."""
    async with backend.open() as mine, backend.open() as other:
        assert (await admit(mine, "p", 100.0)).decision == "allowed"
        await other.circuits.record("p", "timeout", 100.5, 3)
        assert await mine.circuits.record("p", "ok", 101.0, 3) == CircuitState(provider="p")
        assert await other.circuits.all() == [CircuitState(provider="p", consecutive_failures=1)]
        assert (await admit(mine, "p", 102.0)).decision == "allowed"
        await mine.circuits.record("p", "ok", 103.0, 3)
        assert await other.circuits.all() == [CircuitState(provider="p")]


async def test_after_any_other_outcome_a_success_is_recorded_again(state: State) -> None:
    """An outcome that is not a success forgets the clean admission: the next success is written."""
    await admit(state, "p", 100.0)
    await state.circuits.record("p", "timeout", 101.0, 3)
    assert await state.circuits.all() == [CircuitState(provider="p", consecutive_failures=1)]
    await state.circuits.record("p", "ok", 102.0, 3)
    assert await state.circuits.all() == [CircuitState(provider="p")]


async def test_circuits_survive_closing_and_reopening(backend: Backend) -> None:
    """A half-open circuit stored by one state is half-open for the next."""
    async with backend.open() as first:
        await open_circuit(first, "p", at=100.0)
        probe = await admit(first, "p", 200.0)
    async with backend.open() as second:
        assert await second.circuits.all() == [probe.state]
        assert (await admit(second, "p", 201.0)).decision == "refused"
        assert await second.circuits.record("p", "ok", 202.0, 3) == CircuitState(provider="p")


# Each worker slows the pure decisions down, so that without one transaction (or compare-and-set)
# around read, decide and write, all eight would read the circuit before any of them wrote it back.
WORKER = (
    WAIT_FOR_GO
    + """
import json

import anyio
from rmcore import breaker

def slowly(decide, pause_s):
    def slow(*args, **kwargs):
        time.sleep(pause_s)
        return decide(*args, **kwargs)
    return slow

breaker.admit = slowly(breaker.admit, 0.05)
breaker.record = slowly(breaker.record, 0.005)

async def main() -> dict[str, str]:
    async with await open_it() as state:
        wait_for_go()
        admit = state.circuits.admit
        decisions = {name: (await admit(name, 1100.0, 30.0, 60.0)).decision for name in ("down", "up")}
        for n in range(5):
            await state.circuits.record("busy", "server_error", 1100.0 + n, 1000)
    return decisions

print(json.dumps(anyio.run(main)))
"""
)


@pytest.fixture(scope="module", params=BACKENDS)
def eight_processes(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[list[dict[str, str]], list[CircuitState]]:
    """Eight OS processes that, at the same moment, ask about an open, cooled-down circuit
    ("down") and a closed one ("up"), then each record five failures of "busy"; what each was
    told, and the circuits stored at the end."""
    base = tmp_path_factory.mktemp("processes")
    backend = Backend("sqlite", "sqlite", base / "home")
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        server.flush()
        backend = Backend("redis", server.url(), base / "home")

    async def prepare() -> None:
        async with backend.open() as state:
            await open_circuit(state, "down", at=1000.0)

    async def read() -> list[CircuitState]:
        async with backend.open() as state:
            return await state.circuits.all()

    anyio.run(prepare)
    outputs = run_workers(WORKER, [[backend.spec, str(backend.home)]] * 8, base / "go")
    return [json.loads(out) for out in outputs], anyio.run(read)


def test_of_eight_processes_exactly_one_gets_the_probe(
    eight_processes: tuple[list[dict[str, str]], list[CircuitState]],
) -> None:
    """Of eight processes asking an open, cooled-down circuit at once, one probes; all pass a closed one."""
    decisions, circuits = eight_processes
    assert sorted(d["down"] for d in decisions) == ["probe"] + ["refused"] * 7
    assert [d["up"] for d in decisions] == ["allowed"] * 8
    assert [c for c in circuits if c.provider == "down"] == [
        CircuitState(
            provider="down",
            state="half_open",
            consecutive_failures=3,
            opened_at=1000.0,
            probe_started_at=1100.0,
        )
    ]


def test_failures_recorded_by_eight_processes_at_once_are_all_counted(
    eight_processes: tuple[list[dict[str, str]], list[CircuitState]],
) -> None:
    """Forty failures recorded by eight processes at once are forty."""
    _, circuits = eight_processes
    assert [c for c in circuits if c.provider == "busy"] == [
        CircuitState(provider="busy", consecutive_failures=40)
    ]
