"""Circuit breakers in the state store (every backend): shared between runs and processes, one
probe at a time."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import rmcli.store as store_module
from rmcli.session import StoreCircuits
from rmcli.store import SCHEMA_VERSION, SqliteStore, Store, StoreError
from rmcore.attempts import AttemptRecord
from rmcore.breaker import Admission, CircuitState
from tests.cli.state_backends import BACKENDS, WAIT_FOR_GO, Backend, RedisServer, run_workers

COOLDOWN_S = 30.0
PROBE_TIMEOUT_S = 60.0


@pytest.fixture
def store(store_backend: Backend) -> Iterator[Store]:
    """A store of each backend in turn."""
    with store_backend.open() as opened:
        yield opened


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SqliteStore]:
    with SqliteStore.open(tmp_path / "home") as opened:
        yield opened


def open_circuit(store: Store, provider: str, at: float, threshold: int = 3) -> CircuitState:
    """Record ``threshold`` breaking failures, the last at ``at``: the circuit opens then."""
    state = CircuitState(provider=provider)
    for n in range(threshold):
        state = store.record_circuit(provider, "server_error", at - threshold + 1 + n, threshold)
    assert state.state == "open"
    return state


def admit_one(store: Store, provider: str, now: float) -> Admission:
    return store.admit_circuits([provider], now, COOLDOWN_S, PROBE_TIMEOUT_S)[provider]


# --- recording and admitting -------------------------------------------------------------------


def test_failures_are_counted_and_open_the_circuit_at_the_threshold(store: Store) -> None:
    assert store.record_circuit("p", "timeout", 10.0, 3) == CircuitState(provider="p", consecutive_failures=1)
    assert store.record_circuit("p", "bad_request", 11.0, 3) == CircuitState(
        provider="p", consecutive_failures=1
    )
    store.record_circuit("p", "connection", 12.0, 3)
    opened = store.record_circuit("p", "overloaded", 13.0, 3)
    assert opened == CircuitState(provider="p", state="open", consecutive_failures=3, opened_at=13.0)
    assert store.circuits() == [opened]


def test_a_success_closes_a_stored_circuit(store: Store) -> None:
    open_circuit(store, "p", at=100.0)
    assert store.record_circuit("p", "ok", 101.0, 3) == CircuitState(provider="p")
    assert store.circuits() == [CircuitState(provider="p")]


def test_unknown_providers_are_closed_and_nothing_is_written(store: Store) -> None:
    admissions = store.admit_circuits(["b", "a", "b"], 5.0, COOLDOWN_S, PROBE_TIMEOUT_S)
    assert list(admissions) == ["b", "a"]
    assert admissions["a"] == Admission(decision="allowed", state=CircuitState(provider="a"))
    assert store.circuits() == []
    assert store.admit_circuits([], 5.0, COOLDOWN_S, PROBE_TIMEOUT_S) == {}


def test_open_refuses_then_one_probe_then_refuses(store: Store) -> None:
    open_circuit(store, "p", at=100.0)
    refused = admit_one(store, "p", 129.0)
    assert (refused.decision, refused.retry_at) == ("refused", 130.0)
    probe = admit_one(store, "p", 130.0)
    assert probe.decision == "probe"
    assert store.circuits() == [probe.state]
    assert probe.state.probe_started_at == 130.0
    again = admit_one(store, "p", 131.0)
    assert (again.decision, again.retry_at) == ("refused", 190.0)
    assert store.record_circuit("p", "rate_limited", 132.0, 3).opened_at == 132.0
    assert admit_one(store, "p", 161.9).decision == "refused"


def test_a_probe_never_sent_is_handed_back_and_the_next_asker_probes(store: Store) -> None:
    opened = open_circuit(store, "p", at=100.0)
    probe = admit_one(store, "p", 200.0)
    assert probe.decision == "probe"
    assert store.release_probe("p", 200.0, 200.1) == opened
    assert store.circuits() == [opened]
    again = admit_one(store, "p", 200.2)
    assert again.decision == "probe"
    assert again.state.probe_started_at == 200.2


def test_a_late_release_never_lets_a_second_probe_in(store: Store) -> None:
    """The probe admitted at 200 timed out and another asker holds the one of 260: handing back
    the first changes nothing, and the one of 260 still keeps everyone else out."""
    open_circuit(store, "p", at=100.0)
    assert admit_one(store, "p", 200.0).decision == "probe"
    newer = admit_one(store, "p", 200.0 + PROBE_TIMEOUT_S)
    assert newer.decision == "probe"
    assert store.release_probe("p", 200.0, 261.0) == newer.state
    assert admit_one(store, "p", 262.0).decision == "refused"


def test_each_provider_is_decided_on_its_own(store: Store) -> None:
    open_circuit(store, "down", at=100.0)
    open_circuit(store, "cooled", at=50.0)
    admissions = store.admit_circuits(["down", "up", "cooled"], 110.0, COOLDOWN_S, PROBE_TIMEOUT_S)
    assert {name: a.decision for name, a in admissions.items()} == {
        "down": "refused",
        "up": "allowed",
        "cooled": "probe",
    }
    assert [(c.provider, c.state) for c in store.circuits()] == [("cooled", "half_open"), ("down", "open")]


def test_an_unknown_outcome_is_refused_and_stores_nothing(store: Store) -> None:
    with pytest.raises(ValueError):
        store.record_circuit("p", "server-error", 1.0, 3)
    assert store.circuits() == []


def test_updated_at_is_when_the_circuit_last_changed(sqlite_store: SqliteStore) -> None:
    open_circuit(sqlite_store, "p", at=100.0)
    admit_one(sqlite_store, "p", 140.0)
    admit_one(sqlite_store, "p", 150.0)  # refused: nothing changes
    with sqlite3.connect(sqlite_store.path) as conn:
        assert conn.execute("SELECT updated_at FROM circuits").fetchone() == (140.0,)


def test_an_impossible_stored_circuit_is_a_store_error(sqlite_store: SqliteStore) -> None:
    store = sqlite_store
    with sqlite3.connect(store.path) as conn:
        conn.execute(
            "INSERT INTO circuits VALUES ('p', 'open', 3, NULL, NULL, 0)"  # open without opened_at
        )
    with pytest.raises(StoreError) as caught:
        store.circuits()
    assert "the circuit of 'p' is impossible" in str(caught.value)
    with pytest.raises(StoreError):
        admit_one(store, "p", 1.0)


def test_a_circuit_changed_by_another_store_is_seen_at_once(store_backend: Backend) -> None:
    """A store reads the breakers again only when someone else may have changed them: each
    change by the other store, and each of its own, shows in its very next decision."""
    with store_backend.open() as mine, store_backend.open() as theirs:
        assert admit_one(mine, "p", 100.0).decision == "allowed"
        assert mine.record_circuit("p", "ok", 100.5, 3) == CircuitState(provider="p")
        opened = open_circuit(theirs, "p", at=101.0)
        assert admit_one(mine, "p", 102.0).decision == "refused"
        assert admit_one(mine, "p", 101.0 + COOLDOWN_S).decision == "probe"
        assert admit_one(theirs, "p", 101.0 + COOLDOWN_S).decision == "refused"
        assert theirs.record_circuit("p", "ok", 140.0, 3) == CircuitState(provider="p")
        assert admit_one(mine, "p", 141.0).decision == "allowed"
        assert mine.record_circuit("p", "timeout", 142.0, 3).consecutive_failures == 1
        assert mine.record_circuit("p", "timeout", 143.0, 3).consecutive_failures == 2
        assert theirs.record_circuit("p", "timeout", 144.0, 3).state == "open"
        assert mine.record_circuit("p", "timeout", 145.0, 3).consecutive_failures == 4
        assert opened.opened_at == 101.0


def test_an_impossible_circuit_of_another_provider_does_not_stop_this_one(
    sqlite_store: SqliteStore,
) -> None:
    store = sqlite_store
    assert admit_one(store, "p", 1.0).decision == "allowed"
    with sqlite3.connect(store.path) as conn:
        conn.execute("INSERT INTO circuits VALUES ('q', 'open', 3, NULL, NULL, 0)")
    assert admit_one(store, "p", 2.0).decision == "allowed"
    with pytest.raises(StoreError):
        admit_one(store, "q", 2.0)


def test_sqlite_store_satisfies_the_protocol(sqlite_store: SqliteStore) -> None:
    as_protocol: Store = sqlite_store
    as_protocol.record_circuit("p", "auth", 1.0, 1)
    assert admit_one(as_protocol, "p", 2.0).decision == "refused"
    assert [c.state for c in as_protocol.circuits()] == ["open"]


# --- the runner's book: StoreCircuits ------------------------------------------------------------


class Calls:
    """Wraps a store and notes the name of every method asked of it."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.names: list[str] = []

    def __getattr__(self, name: str) -> object:
        self.names.append(name)
        return getattr(self.inner, name)


def book(store: Store) -> tuple[StoreCircuits, list[str]]:
    """A ``StoreCircuits`` over ``store``, and the names of the store methods it calls."""
    calls = Calls(store)
    return StoreCircuits(calls), calls.names  # type: ignore[arg-type]


def test_a_success_on_a_circuit_admitted_clean_is_not_sent(store: Store) -> None:
    """It would change nothing: a closed circuit with no failures stays so."""
    circuits, calls = book(store)
    assert circuits.admit("p", COOLDOWN_S, PROBE_TIMEOUT_S).decision == "allowed"
    circuits.record("p", "ok", 3)
    circuits.record("p", "ok", 3)
    assert calls == ["admit_circuits"]
    assert store.circuits() == []


def test_after_any_other_outcome_a_success_is_recorded_again(store: Store) -> None:
    circuits, calls = book(store)
    circuits.admit("p", COOLDOWN_S, PROBE_TIMEOUT_S)
    circuits.record("p", "timeout", 3)
    assert store.circuits() == [CircuitState(provider="p", consecutive_failures=1)]
    circuits.record("p", "ok", 3)
    assert store.circuits() == [CircuitState(provider="p")]
    circuits.admit("p", COOLDOWN_S, PROBE_TIMEOUT_S)
    circuits.record("p", "bad_request", 3)  # no verdict on the provider, but told all the same
    circuits.record("p", "ok", 3)
    assert calls == ["admit_circuits", "record_circuit", "record_circuit"] * 2


def test_a_success_on_a_circuit_admitted_with_failures_resets_them(store: Store) -> None:
    store.record_circuit("p", "timeout", time.time(), 3)
    circuits, calls = book(store)
    assert circuits.admit("p", COOLDOWN_S, PROBE_TIMEOUT_S).decision == "allowed"
    circuits.record("p", "ok", 3)
    assert calls == ["admit_circuits", "record_circuit"]
    assert store.circuits() == [CircuitState(provider="p")]


def test_a_probe_that_succeeds_closes_the_circuit(store: Store) -> None:
    open_circuit(store, "p", at=time.time() - COOLDOWN_S - 1)
    circuits, _ = book(store)
    assert circuits.admit("p", COOLDOWN_S, PROBE_TIMEOUT_S).decision == "probe"
    circuits.record("p", "ok", 3)
    assert store.circuits() == [CircuitState(provider="p")]


def test_a_failure_another_process_recorded_since_the_admission_stays_counted(
    store_backend: Backend,
) -> None:
    """The success left out counts as having happened at the admission, before the other
    process's failure: the conservative side (the failure is not wiped by it)."""
    with store_backend.open() as mine, store_backend.open() as other:
        circuits = StoreCircuits(mine)
        circuits.admit("p", COOLDOWN_S, PROBE_TIMEOUT_S)
        other.record_circuit("p", "timeout", time.time(), 3)
        circuits.record("p", "ok", 3)
        assert other.circuits() == [CircuitState(provider="p", consecutive_failures=1)]
        assert circuits.admit("p", COOLDOWN_S, PROBE_TIMEOUT_S).decision == "allowed"
        circuits.record("p", "ok", 3)  # admitted with a failure: this success is recorded
        assert other.circuits() == [CircuitState(provider="p")]


# --- persistence and migration -----------------------------------------------------------------


def test_circuits_survive_closing_and_reopening(store_backend: Backend) -> None:
    with store_backend.open() as first:
        open_circuit(first, "p", at=100.0)
        probe = admit_one(first, "p", 200.0)
    with store_backend.open() as second:
        assert second.circuits() == [probe.state]
        assert admit_one(second, "p", 201.0).decision == "refused"
        assert second.record_circuit("p", "ok", 202.0, 3) == CircuitState(provider="p")
    with store_backend.open() as third:
        assert admit_one(third, "p", 203.0).decision == "allowed"


def test_a_schema_1_database_is_migrated_and_keeps_its_attempts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database written by the store before circuits existed (its migrations cut to the first)
    is brought up to date on opening, with every attempt kept."""
    home = tmp_path / "home"
    monkeypatch.setattr(store_module, "_MIGRATIONS", store_module._MIGRATIONS[:1])
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", 1)
    with SqliteStore.open(home) as old:
        old.record_attempts(
            "run-1",
            "ask",
            [
                AttemptRecord(provider="p", model="m", outcome=o, started_at_ms=t)
                for t, o in enumerate(["ok", "timeout"])
            ],
        )
        before = old.attempts_since(0)
    with sqlite3.connect(home / "state.db") as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (1,)
        assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'circuits'").fetchone() is None
    monkeypatch.undo()

    with SqliteStore.open(home) as new:
        assert new.attempts_since(0) == before
        assert len(before) == 2
        assert new.circuits() == []
        assert new.record_circuit("p", "timeout", 1.0, 1).state == "open"
    with sqlite3.connect(home / "state.db") as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)


# --- processes at once -------------------------------------------------------------------------

# Each worker slows the pure decisions down, so that without one transaction around read, decide
# and write, all eight would read the circuit before any of them wrote it back.
WORKER = (
    WAIT_FOR_GO
    + """
import json
import rmcli.redis_store, rmcli.store
from rmcli.state import open_state

def slowly(decide, pause_s):
    def slow(*args, **kwargs):
        time.sleep(pause_s)
        return decide(*args, **kwargs)
    return slow

for module in (rmcli.store, rmcli.redis_store):
    module.admit = slowly(module.admit, 0.05)
    module.record = slowly(module.record, 0.005)
spec, home = sys.argv[2], Path(sys.argv[3])
with open_state({"RECURSIVEMANAGER_STATE": spec}, home) as store:
    wait_for_go()
    admissions = store.admit_circuits(["down", "up"], 1100.0, 30.0, 60.0)
    for n in range(5):
        store.record_circuit("busy", "server_error", 1100.0 + n, 1000)
print(json.dumps({name: a.decision for name, a in admissions.items()}))
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
    with backend.open() as store:
        open_circuit(store, "down", at=1000.0)
    outputs = run_workers(WORKER, [[backend.spec, str(backend.home)]] * 8, base / "go")
    with backend.open() as store:
        return [json.loads(out) for out in outputs], store.circuits()


def test_of_eight_processes_exactly_one_gets_the_probe(
    eight_processes: tuple[list[dict[str, str]], list[CircuitState]],
) -> None:
    decisions, circuits = eight_processes
    assert sorted(d["down"] for d in decisions) == ["probe"] + ["refused"] * 7
    assert [d["up"] for d in decisions] == ["allowed"] * 8
    down = [c for c in circuits if c.provider == "down"]
    assert down == [
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
    _, circuits = eight_processes
    busy = [c for c in circuits if c.provider == "busy"]
    assert busy == [CircuitState(provider="busy", consecutive_failures=40)]
