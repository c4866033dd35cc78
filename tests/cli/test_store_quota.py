"""Budgets, quotas and slots in the state store (every backend): reservations against caps over
time windows, their leases, settling and releasing, and counting semaphores shared by processes."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

import rmcli.store as store_module
from rmcli.store import PRUNE_AFTER_S, SCHEMA_VERSION, AttemptClaim, Slot, SlotBusy, SqliteStore, Store
from rmcore.attempts import AttemptRecord
from rmcore.quota import CapUsage, Charge, Period, Resource, refuse, window_of
from tests.cli.state_backends import WAIT_FOR_GO, Backend, run_workers

NOW = 1_764_000_000.0  # 2025-11-24 16:00 UTC
LEASE_S = 30.0
REQUESTS = "provider:gw:requests:60s"
USD = "policy:cost-first:usd:day"


def charge(
    cap_key: str = REQUESTS,
    *,
    amount: float = 1.0,
    limit: float = 3.0,
    at: float = NOW,
    window_s: float = 60.0,
) -> Charge:
    """A charge against a requests cap (fixed windows of ``window_s``) or, for ``USD``, against
    a daily dollar cap, in the window that holds ``at``."""
    resource = Resource.USD if cap_key == USD else Resource.REQUESTS
    period = Period.DAY if cap_key == USD else Period.WINDOW
    window, resets_at = window_of(period, None if cap_key == USD else window_s, at)
    return Charge(
        cap_key=cap_key, resource=resource, window=window, resets_at=resets_at, amount=amount, limit=limit
    )


def usage(store: Store, cap_key: str = REQUESTS, at: float = NOW) -> tuple[float, float]:
    """(settled, reserved) of ``cap_key``'s window current at ``at``; (0, 0) when unlisted."""
    for row in store.cap_usage(at):
        if row.cap_key == cap_key:
            return row.used, row.reserved
    return 0.0, 0.0


@pytest.fixture
def store(store_backend: Backend) -> Iterator[Store]:
    """A store of each backend in turn."""
    with store_backend.open() as opened:
        yield opened


# --- reserving -----------------------------------------------------------------------------------


def test_reservations_fit_until_the_cap_is_full_then_refused_with_refuses_reason(store: Store) -> None:
    for n in range(3):
        assert store.reserve(f"r{n}", [charge()], NOW, LEASE_S) is None
    refusal = store.reserve("r3", [charge()], NOW, LEASE_S)
    assert refusal == refuse([charge()], {(REQUESTS, charge().window): 3.0})
    assert refusal is not None
    assert (refusal.cap_key, refusal.used, refusal.requested, refusal.limit) == (REQUESTS, 3.0, 1.0, 3.0)
    assert usage(store) == (0.0, 3.0)


def test_a_refusal_records_nothing_on_any_cap(store: Store) -> None:
    """Of two caps charged together, the second refusing leaves the first untouched too."""
    assert store.reserve("a", [charge(USD, amount=0.5, limit=1.0), charge(limit=1)], NOW, LEASE_S) is None
    before = store.cap_usage(NOW)
    refusal = store.reserve("b", [charge(USD, amount=0.25, limit=1.0), charge(limit=1)], NOW, LEASE_S)
    assert refusal is not None
    assert refusal.cap_key == REQUESTS
    assert store.cap_usage(NOW) == before
    assert usage(store, USD) == (0.0, 0.5)
    store.release("b")  # it was never recorded: releasing it changes nothing
    assert store.cap_usage(NOW) == before


def test_no_charges_fit_and_record_nothing(store: Store) -> None:
    assert store.reserve("free", [], NOW, LEASE_S) is None
    assert store.cap_usage(NOW) == []


def test_cap_usage_reports_each_current_window_by_key(store: Store) -> None:
    day = charge(USD, amount=0.04, limit=5.0)
    assert store.reserve("r", [day, charge(limit=100)], NOW, LEASE_S) is None
    store.settle("r", [charge(USD, amount=0.01, limit=5.0), charge(limit=100)], NOW + 1)
    assert store.reserve("s", [day], NOW + 2, LEASE_S) is None
    assert store.cap_usage(NOW + 3) == [
        CapUsage(
            cap_key=USD,
            resource=Resource.USD,
            window=day.window,
            resets_at=day.resets_at,
            limit=5.0,
            used=0.01,
            reserved=0.04,
        ),
        CapUsage(
            cap_key=REQUESTS,
            resource=Resource.REQUESTS,
            window=charge().window,
            resets_at=charge().resets_at,
            limit=100.0,
            used=1.0,
            reserved=0.0,
        ),
    ]
    assert [row.cap_key for row in store.cap_usage(charge().resets_at)] == [USD]
    assert store.cap_usage(day.resets_at) == []


def test_each_window_is_counted_apart(store: Store) -> None:
    assert store.reserve("a", [charge(limit=1)], NOW, LEASE_S) is None
    assert store.reserve("b", [charge(limit=1)], NOW, LEASE_S) is not None
    later = NOW + 60
    assert store.reserve("c", [charge(limit=1, at=later)], later, LEASE_S) is None
    assert [row.window for row in store.cap_usage(NOW)] == [charge().window, charge(at=later).window]


def test_dollar_amounts_that_add_up_to_the_limit_fit(store: Store) -> None:
    """0.1 + 0.2 + 0.3 is 0.6000000000000001 in floats: still within a $0.60 cap."""
    for n, amount in enumerate((0.1, 0.2, 0.3)):
        assert store.reserve(f"r{n}", [charge(USD, amount=amount, limit=0.6)], NOW, LEASE_S) is None
    assert store.reserve("r3", [charge(USD, amount=0.01, limit=0.6)], NOW, LEASE_S) is not None


def test_reserving_a_live_id_again_replaces_it(store: Store) -> None:
    """A reserve whose answer was lost can be asked again without counting twice."""
    assert store.reserve("r", [charge(limit=1)], NOW, LEASE_S) is None
    assert store.reserve("r", [charge(limit=1)], NOW + 1, LEASE_S) is None
    assert usage(store) == (0.0, 1.0)
    store.release("r")
    assert usage(store) == (0.0, 0.0)


# --- leases --------------------------------------------------------------------------------------


def test_an_expired_lease_is_reclaimed(store: Store) -> None:
    """A reservation whose holder never settled holds its share until its lease ends, then not."""
    assert store.reserve("lost", [charge(limit=1)], NOW, 10.0) is None
    assert store.reserve("next", [charge(limit=1)], NOW + 9.9, 10.0) is not None
    assert usage(store, at=NOW + 9.9) == (0.0, 1.0)
    assert usage(store, at=NOW + 10) == (0.0, 0.0)
    assert store.reserve("next", [charge(limit=1)], NOW + 10, 10.0) is None
    assert usage(store, at=NOW + 10) == (0.0, 1.0)


def test_settling_after_the_lease_expired_still_counts_the_spend(store: Store) -> None:
    assert store.reserve("slow", [charge(USD, amount=0.5, limit=1.0)], NOW, 10.0) is None
    assert store.reserve("other", [charge(USD, amount=0.5, limit=1.0)], NOW + 20, 10.0) is None
    store.settle("slow", [charge(USD, amount=0.4, limit=1.0)], NOW + 25)
    assert usage(store, USD, at=NOW + 25) == (0.4, 0.5)
    refusal = store.reserve("third", [charge(USD, amount=0.2, limit=1.0)], NOW + 26, 10.0)
    assert refusal is not None
    assert refusal.used == pytest.approx(0.9)


def test_settle_replaces_the_worst_case_with_the_real_use(store: Store) -> None:
    assert store.reserve("r", [charge(USD, amount=0.05, limit=1.0), charge()], NOW, LEASE_S) is None
    assert usage(store, USD) == (0.0, 0.05)
    store.settle("r", [charge(USD, amount=0.012, limit=1.0), charge()], NOW + 1)
    assert usage(store, USD) == (0.012, 0.0)
    assert usage(store) == (1.0, 0.0)
    store.settle("r", [], NOW + 2)  # settling again with nothing changes nothing
    assert usage(store, USD) == (0.012, 0.0)


def test_release_settles_nothing_and_frees_the_share(store: Store) -> None:
    assert store.reserve("r", [charge(limit=1)], NOW, LEASE_S) is None
    store.release("r")
    store.release("r")
    store.release("never-reserved")
    assert usage(store) == (0.0, 0.0)
    assert store.reserve("s", [charge(limit=1)], NOW, LEASE_S) is None


def test_windows_are_pruned_a_day_after_they_end(store: Store) -> None:
    """A settle forgets the windows that ended ``PRUNE_AFTER_S`` or more before it."""
    old = charge(limit=10)
    store.settle("a", [old], NOW)
    almost = old.resets_at + PRUNE_AFTER_S - 1
    store.settle("b", [charge(limit=10, at=almost)], almost)
    assert [row.window for row in store.cap_usage(NOW)] == [old.window, charge(at=almost).window]
    store.settle("c", [charge(limit=10, at=almost + 1)], almost + 1)
    assert [row.window for row in store.cap_usage(NOW)] == [
        charge(at=almost).window,
        charge(at=almost + 1).window,
    ]


@pytest.mark.parametrize("lease_s", [0.0, -1.0, float("inf"), float("nan")])
def test_a_lease_that_is_no_positive_time_is_refused(store: Store, lease_s: float) -> None:
    with pytest.raises(ValueError, match="lease"):
        store.reserve("r", [charge()], NOW, lease_s)
    with pytest.raises(ValueError, match="lease"):
        store.acquire_slot("s", 1, "h", NOW, lease_s)
    assert store.cap_usage(NOW) == []


def test_charges_no_store_can_add_up_are_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="finite"):
        store.reserve("r", [charge(amount=float("nan"))], NOW, LEASE_S)
    with pytest.raises(ValueError, match="finite"):
        store.settle("r", [charge(amount=float("inf"))], NOW)
    with pytest.raises(ValueError, match="once"):
        store.reserve("r", [charge(), charge()], NOW, LEASE_S)
    assert store.cap_usage(NOW) == []


# --- slots ---------------------------------------------------------------------------------------


def test_slots_up_to_the_limit(store: Store) -> None:
    assert store.acquire_slot("gw", 2, "a", NOW, LEASE_S)
    assert store.acquire_slot("gw", 2, "b", NOW, LEASE_S)
    assert not store.acquire_slot("gw", 2, "c", NOW, LEASE_S)
    assert store.acquire_slot("gw", 2, "b", NOW + 1, LEASE_S)  # a holder asking again keeps its slot
    assert store.acquire_slot("other", 1, "c", NOW, LEASE_S)
    store.release_slot("gw", "a")
    store.release_slot("gw", "a")
    store.release_slot("gw", "nobody")
    assert store.acquire_slot("gw", 2, "c", NOW + 2, LEASE_S)
    assert not store.acquire_slot("gw", 2, "a", NOW + 2, LEASE_S)


def test_an_expired_slot_is_reclaimed_and_a_renewed_one_is_not(store: Store) -> None:
    assert store.acquire_slot("gw", 2, "crashed", NOW, 5.0)
    assert store.acquire_slot("gw", 2, "alive", NOW, 5.0)
    assert store.acquire_slot("gw", 2, "alive", NOW + 4, 5.0)
    assert not store.acquire_slot("gw", 2, "new", NOW + 4.9, 5.0)
    assert store.acquire_slot("gw", 2, "new", NOW + 5, 5.0)
    assert not store.acquire_slot("gw", 2, "crashed", NOW + 5, 5.0)


def test_a_slot_limit_below_one_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        store.acquire_slot("gw", 0, "a", NOW, LEASE_S)


# --- an attempt's slot and reservation at once --------------------------------------------------


def claim(holder: str, *charges: Charge, limit: int | None = 1) -> AttemptClaim:
    """An attempt of ``holder``: one of ``limit`` slots of "gw" (none when None) and ``charges``."""
    slot = None if limit is None else Slot(name="gw", limit=limit, lease_s=5.0)
    return AttemptClaim(holder=holder, lease_s=LEASE_S, slot=slot, charges=charges)


def test_begin_attempt_holds_the_slot_and_the_reservation(store: Store) -> None:
    assert store.begin_attempt(claim("a", charge(limit=2)), NOW) is None
    assert usage(store) == (0.0, 1.0)
    assert not store.acquire_slot("gw", 1, "other", NOW, 5.0)


def test_a_busy_slot_reserves_nothing(store: Store) -> None:
    assert store.acquire_slot("gw", 1, "holder", NOW, 5.0)
    assert store.begin_attempt(claim("a", charge(), charge(USD, amount=0.5)), NOW) == SlotBusy()
    assert store.cap_usage(NOW) == []
    store.release_slot("gw", "holder")
    assert store.begin_attempt(claim("a", charge(), charge(USD, amount=0.5)), NOW) is None


def test_a_refused_reservation_gives_the_slot_back(store: Store) -> None:
    """The cap is full: the refusal is ``refuse``'s, nothing is reserved, and the slot the call
    took is free again."""
    assert store.reserve("full", [charge(limit=1)], NOW, LEASE_S) is None
    refusal = store.begin_attempt(claim("a", charge(limit=1)), NOW)
    assert refusal == refuse([charge(limit=1)], {(REQUESTS, charge().window): 1.0})
    assert usage(store) == (0.0, 1.0)
    assert store.acquire_slot("gw", 1, "other", NOW, 5.0)


def test_end_attempt_settles_and_gives_the_slot_back(store: Store) -> None:
    held = claim("a", charge(USD, amount=0.5, limit=1.0), charge(limit=2))
    assert store.begin_attempt(held, NOW) is None
    store.end_attempt(held, [charge(USD, amount=0.1, limit=1.0), charge(limit=2)], NOW + 1)
    assert usage(store, USD) == (0.1, 0.0)
    assert usage(store) == (1.0, 0.0)
    assert store.acquire_slot("gw", 1, "other", NOW + 1, 5.0)


def test_end_attempt_of_an_unsent_request_releases_and_gives_the_slot_back(store: Store) -> None:
    held = claim("a", charge(limit=2))
    assert store.begin_attempt(held, NOW) is None
    store.end_attempt(held, None, NOW + 1)
    assert usage(store) == (0.0, 0.0)
    assert store.acquire_slot("gw", 1, "other", NOW + 1, 5.0)


def test_a_claim_of_a_slot_alone_or_of_charges_alone(store: Store) -> None:
    slot_only = claim("a")
    assert store.begin_attempt(slot_only, NOW) is None
    assert store.begin_attempt(claim("b"), NOW) == SlotBusy()
    store.end_attempt(slot_only, (), NOW)
    assert store.begin_attempt(claim("b"), NOW) is None
    charges_only = claim("c", charge(limit=1), limit=None)
    assert store.begin_attempt(charges_only, NOW) is None
    assert store.begin_attempt(claim("d", charge(limit=1), limit=None), NOW) is not None
    store.end_attempt(charges_only, [charge(limit=1)], NOW)
    assert usage(store) == (1.0, 0.0)
    assert store.begin_attempt(claim("e", limit=None), NOW) is None  # nothing to take
    store.end_attempt(claim("e", limit=None), None, NOW)


def test_an_expired_slot_is_reclaimed_by_begin_attempt(store: Store) -> None:
    assert store.acquire_slot("gw", 1, "crashed", NOW, 5.0)
    assert store.begin_attempt(claim("a", charge()), NOW + 4.9) == SlotBusy()
    assert store.begin_attempt(claim("a", charge()), NOW + 5) is None


def test_a_claim_no_store_can_hold_cannot_be_made() -> None:
    with pytest.raises(ValueError, match="lease"):
        AttemptClaim(holder="a", lease_s=0.0)
    with pytest.raises(ValueError, match="at least 1"):
        Slot(name="gw", limit=0, lease_s=5.0)
    with pytest.raises(ValueError, match="lease"):
        Slot(name="gw", limit=1, lease_s=float("inf"))
    with pytest.raises(ValueError, match="finite"):
        claim("a", charge(amount=float("nan")))
    with pytest.raises(ValueError, match="once"):
        claim("a", charge(), charge())


def test_end_attempt_refuses_amounts_no_store_can_add_up(store: Store) -> None:
    held = claim("a", charge())
    assert store.begin_attempt(held, NOW) is None
    with pytest.raises(ValueError, match="finite"):
        store.end_attempt(held, [charge(amount=float("inf"))], NOW)
    assert usage(store) == (0.0, 1.0)
    assert not store.acquire_slot("gw", 1, "other", NOW, 5.0), "nothing was given back either"


# --- processes at once ---------------------------------------------------------------------------

# Each worker slows the decision down, so that without one transaction (or compare-and-set)
# around read, decide and write, the eight would all read the cap before any wrote a reservation.
SLOW_DECISIONS = """
import json
import msgspec
import rmcli.redis_store, rmcli.store
from rmcli.state import open_state
from rmcore.quota import Charge

def slowly(decide):
    def slow(*args, **kwargs):
        time.sleep(0.02)
        return decide(*args, **kwargs)
    return slow

for module in (rmcli.store, rmcli.redis_store):
    module.refuse = slowly(module.refuse)
"""

RESERVER = (
    WAIT_FOR_GO
    + SLOW_DECISIONS
    + """
spec, home, worker = sys.argv[2], Path(sys.argv[3]), sys.argv[4]
charges = msgspec.json.decode(sys.argv[5], type=list[Charge])
answers = []
with open_state({"RECURSIVEMANAGER_STATE": spec}, home) as store:
    wait_for_go()
    for i in range(2):
        refusal = store.reserve(f"{worker}-{i}", charges, 1_764_000_000.0, 30.0)
        answers.append(None if refusal is None else refusal.cap_key)
print(json.dumps(answers))
"""
)


def test_eight_processes_reserving_at_once_get_exactly_what_fits(
    store_backend: Backend, tmp_path: Path
) -> None:
    """Eight OS processes each make two reservations at the same moment against a cap of 5
    requests (and a $1.00 cap that 0.15 a request would let 6 through): exactly 5 fit, and the
    11 others are refused by the requests cap."""
    charges = [charge(limit=5), charge(USD, amount=0.15, limit=1.0)]
    encoded = msgspec.json.encode(charges).decode()
    outputs = run_workers(
        RESERVER,
        [[store_backend.spec, str(store_backend.home), f"w{n}", encoded] for n in range(8)],
        tmp_path / "go",
    )
    answers = [answer for out in outputs for answer in json.loads(out)]
    assert answers.count(None) == 5
    assert sorted(a for a in answers if a is not None) == [REQUESTS] * 11
    with store_backend.open() as store:
        assert usage(store) == (0.0, 5.0)
        assert usage(store, USD)[1] == pytest.approx(0.75)


SLOT_HOLDER = (
    WAIT_FOR_GO
    + """
import json
from rmcli.state import open_state

spec, home, worker = sys.argv[2], Path(sys.argv[3]), sys.argv[4]
with open_state({"RECURSIVEMANAGER_STATE": spec}, home) as store:
    wait_for_go()
    give_up = time.monotonic() + 20
    while not store.acquire_slot("gw", 3, worker, time.time(), 30.0):
        if time.monotonic() > give_up:
            sys.exit("no slot in 20 s")
        time.sleep(0.02)
    entered = time.monotonic()
    time.sleep(0.15)
    left = time.monotonic()
    store.release_slot("gw", worker)
print(json.dumps([entered, left]))
"""
)


def test_eight_processes_never_hold_more_slots_than_the_limit(store_backend: Backend, tmp_path: Path) -> None:
    """Eight OS processes each wait for one of 3 slots, hold it 0.1 s and give it back: all get
    one, and at no moment do more than 3 hold one (the monotonic clock is the machine's)."""
    outputs = run_workers(
        SLOT_HOLDER,
        [[store_backend.spec, str(store_backend.home), f"w{n}"] for n in range(8)],
        tmp_path / "go",
    )
    spans = [tuple(json.loads(out)) for out in outputs]
    events = sorted([(entered, 1) for entered, _ in spans] + [(left, -1) for _, left in spans])
    holding, most = 0, 0
    for _, change in events:
        holding += change
        most = max(most, holding)
    assert most == 3


ATTEMPTER = (
    WAIT_FOR_GO
    + SLOW_DECISIONS
    + """
from rmcli.store import AttemptClaim, Slot, SlotBusy
spec, home, worker = sys.argv[2], Path(sys.argv[3]), sys.argv[4]
charges = tuple(msgspec.json.decode(sys.argv[5], type=list[Charge]))
slot = Slot(name="gw", limit=3, lease_s=30.0)
results = []
with open_state({"RECURSIVEMANAGER_STATE": spec}, home) as store:
    wait_for_go()
    for i in range(2):
        claim = AttemptClaim(holder=f"{worker}-{i}", lease_s=30.0, slot=slot, charges=charges)
        busy, give_up = 0, time.monotonic() + 20
        while isinstance(answer := store.begin_attempt(claim, 1_764_000_000.0), SlotBusy):
            if time.monotonic() > give_up:
                sys.exit("no slot in 20 s")
            busy += 1
            time.sleep(0.01)
        if answer is not None:
            results.append({"refused": answer.cap_key, "busy": busy})
            continue
        entered = time.monotonic()
        time.sleep(0.2)
        left = time.monotonic()
        store.end_attempt(claim, charges, 1_764_000_000.0)
        results.append({"span": [entered, left], "busy": busy})
print(json.dumps(results))
"""
)


def test_eight_processes_beginning_attempts_at_once_keep_the_cap_and_the_slots(
    store_backend: Backend, tmp_path: Path
) -> None:
    """Eight OS processes each begin two attempts at the same moment, against 3 slots and a cap
    of 5 requests (with a $1.00 cap that 0.15 a request would let 6 through): exactly 5 are
    admitted, the 11 others refused by the requests cap, never more than 3 hold a slot at once,
    and at the end everything is settled and every slot free."""
    charges = [charge(limit=5), charge(USD, amount=0.15, limit=1.0)]
    encoded = msgspec.json.encode(charges).decode()
    outputs = run_workers(
        ATTEMPTER,
        [[store_backend.spec, str(store_backend.home), f"w{n}", encoded] for n in range(8)],
        tmp_path / "go",
    )
    results = [result for out in outputs for result in json.loads(out)]
    spans = [tuple(r["span"]) for r in results if "span" in r]
    assert len(spans) == 5
    assert sorted(r["refused"] for r in results if "refused" in r) == [REQUESTS] * 11
    events = sorted([(entered, 1) for entered, _ in spans] + [(left, -1) for _, left in spans])
    holding, most = 0, 0
    for _, change in events:
        holding += change
        most = max(most, holding)
    assert most <= 3
    assert sum(r["busy"] for r in results) > 0, "the slot limit was reached"
    with store_backend.open() as store:
        assert usage(store) == (5.0, 0.0)
        assert usage(store, USD) == (pytest.approx(0.75), 0.0)
        assert all(store.acquire_slot("gw", 3, f"after {n}", NOW, 5.0) for n in range(3))


# --- the SQLite schema ---------------------------------------------------------------------------


def test_a_schema_3_database_is_migrated_and_keeps_its_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database written before budgets existed (its migrations cut to the first three) gains
    the reservation, settled-use and slot tables on opening, with every row kept."""
    home = tmp_path / "home"
    monkeypatch.setattr(store_module, "_MIGRATIONS", store_module._MIGRATIONS[:3])
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", 3)
    with SqliteStore.open(home) as old:
        old.record_attempts(
            "run", "ask", [AttemptRecord(provider="p", model="m", outcome="ok", started_at_ms=1)]
        )
        old.record_circuit("p", "timeout", 10.0, 1)
        old.cache_put("k", "security", b"answer", 0)
        entry_id = old.history_add("agent", "q?", "ok", 0.5, 0, b"{}")
        attempts, circuits = old.attempts_since(0), old.circuits()
    with sqlite3.connect(home / "state.db") as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (3,)
    monkeypatch.undo()

    assert SCHEMA_VERSION == 4
    with SqliteStore.open(home) as new:
        assert new.attempts_since(0) == attempts
        assert new.circuits() == circuits
        assert new.cache_get("k", 0, 1_000) == b"answer"
        assert [e.id for e in new.history_list(None)] == [entry_id]
        assert new.reserve("r", [charge()], NOW, LEASE_S) is None
        assert new.acquire_slot("gw", 1, "a", NOW, LEASE_S)
    with sqlite3.connect(home / "state.db") as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (4,)
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"cap_windows", "reservations", "slots"} <= tables
