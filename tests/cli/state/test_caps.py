"""Budgets, quotas and slots on every backend: reservations against caps over time windows, their
leases, settling and releasing, and counting semaphores shared by processes."""

from __future__ import annotations

import json

import msgspec
import pytest

from rmcli.state import AttemptClaim, Slot, SlotBusy, State
from rmcli.state.rules import PRUNE_AFTER_S
from rmcore.quota import CapUsage, Charge, Period, Refusal, Resource, refuse, window_of
from tests.cli.state.backends import WAIT_FOR_GO, Backend, run_workers

pytestmark = pytest.mark.anyio

NOW = 1_764_000_000.0  # 2025-11-24 16:00 UTC
LEASE_S = 30.0
REQUESTS = "provider:gw:requests:60s"
USD = "policy:cost-first:usd:day"


def charge(cap_key: str = REQUESTS, *, amount: float = 1.0, limit: float = 3.0, at: float = NOW) -> Charge:
    """A charge against a requests cap (windows of 60 s) or, for ``USD``, a daily dollar cap, in
    the window that holds ``at``."""
    resource = Resource.USD if cap_key == USD else Resource.REQUESTS
    period = Period.DAY if cap_key == USD else Period.WINDOW
    window, resets_at = window_of(period, None if cap_key == USD else 60.0, at)
    return Charge(
        cap_key=cap_key, resource=resource, window=window, resets_at=resets_at, amount=amount, limit=limit
    )


def claim(holder: str, *charges: Charge, limit: int | None = None, lease_s: float = LEASE_S) -> AttemptClaim:
    """An attempt of ``holder``: one of ``limit`` slots of "gw" (none when None) and ``charges``."""
    slot = None if limit is None else Slot(name="gw", limit=limit, lease_s=5.0)
    return AttemptClaim(holder=holder, lease_s=lease_s, slot=slot, charges=charges)


async def reserve(
    state: State, holder: str, *charges: Charge, at: float = NOW, lease_s: float = LEASE_S
) -> Refusal | None:
    answer = await state.caps.begin(claim(holder, *charges, lease_s=lease_s), at)
    assert not isinstance(answer, SlotBusy)
    return answer


async def settle(state: State, holder: str, *used: Charge, at: float = NOW) -> None:
    await state.caps.end(claim(holder), used, at)


async def release(state: State, holder: str, *charges: Charge) -> None:
    await state.caps.end(claim(holder, *charges), None, NOW)


async def renew(state: State, holder: str, limit: int, at: float = NOW, lease_s: float = 5.0) -> bool:
    return await state.caps.renew(Slot(name="gw", limit=limit, lease_s=lease_s), holder, at)


async def usage(state: State, cap_key: str = REQUESTS, at: float = NOW) -> tuple[float, float]:
    """(settled, reserved) of ``cap_key``'s window current at ``at``; (0, 0) when unlisted."""
    for row in await state.caps.usage(at):
        if row.cap_key == cap_key:
            return row.used, row.reserved
    return 0.0, 0.0


# --- reserving -----------------------------------------------------------------------------------


async def test_reservations_fit_until_the_cap_is_full_then_refused_with_refuses_reason(state: State) -> None:
    """Three of a cap of three fit; the fourth gets ``rmcore.quota.refuse``'s refusal."""
    for n in range(3):
        assert await reserve(state, f"r{n}", charge()) is None
    refusal = await reserve(state, "r3", charge())
    assert refusal == refuse([charge()], {(REQUESTS, charge().window): 3.0})
    assert await usage(state) == (0.0, 3.0)


async def test_a_refusal_records_nothing_on_any_cap(state: State) -> None:
    """Of two caps charged together, the second refusing leaves the first untouched too."""
    assert await reserve(state, "a", charge(USD, amount=0.5, limit=1.0), charge(limit=1)) is None
    before = await state.caps.usage(NOW)
    refusal = await reserve(state, "b", charge(USD, amount=0.25, limit=1.0), charge(limit=1))
    assert refusal is not None and refusal.cap_key == REQUESTS
    assert await state.caps.usage(NOW) == before
    await release(state, "b", charge(limit=1))  # never recorded: releasing it changes nothing
    assert await state.caps.usage(NOW) == before


async def test_a_claim_of_nothing_fits_and_records_nothing(state: State) -> None:
    """No slot and no charges: nothing to take, nothing stored."""
    assert await reserve(state, "free") is None
    await state.caps.end(claim("free"), None, NOW)
    assert await state.caps.usage(NOW) == []


async def test_usage_reports_each_current_window_by_key(state: State) -> None:
    """Settled use and live reservations per current window, sorted by cap key; ended windows drop out."""
    day = charge(USD, amount=0.04, limit=5.0)
    assert await reserve(state, "r", day, charge(limit=100)) is None
    await settle(state, "r", charge(USD, amount=0.01, limit=5.0), charge(limit=100), at=NOW + 1)
    assert await reserve(state, "s", day, at=NOW + 2) is None
    assert await state.caps.usage(NOW + 3) == [
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
    assert [row.cap_key for row in await state.caps.usage(charge().resets_at)] == [USD]
    assert await state.caps.usage(day.resets_at) == []


async def test_each_window_is_counted_apart(state: State) -> None:
    """A full window does not refuse a charge to the next one."""
    assert await reserve(state, "a", charge(limit=1)) is None
    assert await reserve(state, "b", charge(limit=1)) is not None
    later = NOW + 60
    assert await reserve(state, "c", charge(limit=1, at=later), at=later) is None
    assert [row.window for row in await state.caps.usage(NOW)] == [charge().window, charge(at=later).window]


async def test_dollar_amounts_that_add_up_to_the_limit_fit(state: State) -> None:
    """0.1 + 0.2 + 0.3 is 0.6000000000000001 in floats: still within a $0.60 cap."""
    for n, amount in enumerate((0.1, 0.2, 0.3)):
        assert await reserve(state, f"r{n}", charge(USD, amount=amount, limit=0.6)) is None
    assert await reserve(state, "r3", charge(USD, amount=0.01, limit=0.6)) is not None


async def test_reserving_a_live_id_again_replaces_it(state: State) -> None:
    """A begin whose answer was lost can be asked again without counting twice."""
    assert await reserve(state, "r", charge(limit=1)) is None
    assert await reserve(state, "r", charge(limit=1), at=NOW + 1) is None
    assert await usage(state) == (0.0, 1.0)
    await release(state, "r", charge(limit=1))
    assert await usage(state) == (0.0, 0.0)


# --- leases, settling, releasing -----------------------------------------------------------------


async def test_an_expired_lease_is_reclaimed(state: State) -> None:
    """A reservation whose holder never settled holds its share until its lease ends, then not."""
    assert await reserve(state, "lost", charge(limit=1), lease_s=10.0) is None
    assert await reserve(state, "next", charge(limit=1), at=NOW + 9.9, lease_s=10.0) is not None
    assert await usage(state, at=NOW + 9.9) == (0.0, 1.0)
    assert await usage(state, at=NOW + 10) == (0.0, 0.0)
    assert await reserve(state, "next", charge(limit=1), at=NOW + 10, lease_s=10.0) is None
    assert await usage(state, at=NOW + 10) == (0.0, 1.0)


async def test_settling_after_the_lease_expired_still_counts_the_spend(state: State) -> None:
    """The money was spent: a late settlement counts in full."""
    assert await reserve(state, "slow", charge(USD, amount=0.5, limit=1.0), lease_s=10.0) is None
    assert (
        await reserve(state, "other", charge(USD, amount=0.5, limit=1.0), at=NOW + 20, lease_s=10.0) is None
    )
    await settle(state, "slow", charge(USD, amount=0.4, limit=1.0), at=NOW + 25)
    assert await usage(state, USD, at=NOW + 25) == (0.4, 0.5)
    refusal = await reserve(state, "third", charge(USD, amount=0.2, limit=1.0), at=NOW + 26, lease_s=10.0)
    assert refusal is not None and refusal.used == pytest.approx(0.9)


async def test_settle_replaces_the_worst_case_with_the_real_use(state: State) -> None:
    """The reservation's worst case goes; the real use is added; settling nothing changes nothing."""
    assert await reserve(state, "r", charge(USD, amount=0.05, limit=1.0), charge()) is None
    assert await usage(state, USD) == (0.0, 0.05)
    await settle(state, "r", charge(USD, amount=0.012, limit=1.0), charge(), at=NOW + 1)
    assert await usage(state, USD) == (0.012, 0.0)
    assert await usage(state) == (1.0, 0.0)
    await settle(state, "r", at=NOW + 2)
    assert await usage(state, USD) == (0.012, 0.0)


async def test_release_settles_nothing_and_frees_the_share(state: State) -> None:
    """A request never sent gives its share back, however often it is released."""
    assert await reserve(state, "r", charge(limit=1)) is None
    await release(state, "r", charge(limit=1))
    await release(state, "r", charge(limit=1))
    await release(state, "never-reserved", charge(limit=1))
    assert await usage(state) == (0.0, 0.0)
    assert await reserve(state, "s", charge(limit=1)) is None


async def test_windows_are_pruned_a_day_after_they_end(state: State) -> None:
    """A settlement forgets the windows that ended ``PRUNE_AFTER_S`` or more before it."""
    old = charge(limit=10)
    await settle(state, "a", old)
    almost = old.resets_at + PRUNE_AFTER_S - 1
    await settle(state, "b", charge(limit=10, at=almost), at=almost)
    assert [row.window for row in await state.caps.usage(NOW)] == [old.window, charge(at=almost).window]
    await settle(state, "c", charge(limit=10, at=almost + 1), at=almost + 1)
    assert [row.window for row in await state.caps.usage(NOW)] == [
        charge(at=almost).window,
        charge(at=almost + 1).window,
    ]


async def test_amounts_no_store_can_add_up_are_refused(state: State) -> None:
    """Claims no store can hold cannot be made; an end with such amounts stores nothing."""
    for make in (
        lambda: claim("r", charge(amount=float("nan"))),
        lambda: claim("r", charge(), charge()),
        lambda: claim("r", lease_s=0.0),
        lambda: Slot(name="gw", limit=0, lease_s=5.0),
        lambda: Slot(name="gw", limit=1, lease_s=float("inf")),
    ):
        with pytest.raises(ValueError, match=r"finite|once|lease|at least 1"):
            make()
    assert await reserve(state, "a", charge()) is None
    with pytest.raises(ValueError, match="finite"):
        await state.caps.end(claim("a", charge(), limit=1), [charge(amount=float("inf"))], NOW)
    assert await usage(state) == (0.0, 1.0)


# --- slots ---------------------------------------------------------------------------------------


async def test_slots_up_to_the_limit(state: State) -> None:
    """No more holders than the limit; a holder asking again keeps its slot; a given-back slot is free."""
    assert await renew(state, "a", 2)
    assert await renew(state, "b", 2)
    assert not await renew(state, "c", 2)
    assert await renew(state, "b", 2, at=NOW + 1)
    await state.caps.end(claim("a", limit=2), None, NOW)
    await state.caps.end(claim("a", limit=2), None, NOW)
    assert await renew(state, "c", 2, at=NOW + 2)
    assert not await renew(state, "a", 2, at=NOW + 2)


async def test_an_expired_slot_is_reclaimed_and_a_renewed_one_is_not(state: State) -> None:
    """A holder that stopped renewing loses its slot when the lease ends; one that renews keeps it."""
    assert await renew(state, "crashed", 2)
    assert await renew(state, "alive", 2)
    assert await renew(state, "alive", 2, at=NOW + 4)
    assert not await renew(state, "new", 2, at=NOW + 4.9)
    assert await renew(state, "new", 2, at=NOW + 5)
    assert not await renew(state, "crashed", 2, at=NOW + 5)


async def test_renewing_a_slot_keeps_the_reservation(state: State) -> None:
    """Renewing the slot of an attempt that runs leaves its reservation as it was."""
    assert await state.caps.begin(claim("a", charge(), limit=1), NOW) is None
    assert await renew(state, "a", 1, at=NOW + 1)
    assert await usage(state) == (0.0, 1.0)


# --- an attempt's slot and reservation at once ---------------------------------------------------


async def test_begin_holds_the_slot_and_the_reservation(state: State) -> None:
    """Both are held after one ``begin``."""
    assert await state.caps.begin(claim("a", charge(limit=2), limit=1), NOW) is None
    assert await usage(state) == (0.0, 1.0)
    assert not await renew(state, "other", 1)


async def test_a_busy_slot_reserves_nothing(state: State) -> None:
    """Every slot held: ``SlotBusy``, and nothing reserved."""
    assert await renew(state, "holder", 1)
    assert await state.caps.begin(claim("a", charge(), charge(USD, amount=0.5), limit=1), NOW) == SlotBusy()
    assert await state.caps.usage(NOW) == []
    await state.caps.end(claim("holder", limit=1), None, NOW)
    assert await state.caps.begin(claim("a", charge(), charge(USD, amount=0.5), limit=1), NOW) is None


async def test_a_refused_reservation_gives_the_slot_back(state: State) -> None:
    """The cap is full: the refusal is ``refuse``'s, nothing is reserved, and the slot is free again."""
    assert await reserve(state, "full", charge(limit=1)) is None
    refusal = await state.caps.begin(claim("a", charge(limit=1), limit=1), NOW)
    assert refusal == refuse([charge(limit=1)], {(REQUESTS, charge().window): 1.0})
    assert await usage(state) == (0.0, 1.0)
    assert await renew(state, "other", 1)


async def test_end_settles_and_gives_the_slot_back(state: State) -> None:
    """One ``end`` settles the real use and frees the slot."""
    held = claim("a", charge(USD, amount=0.5, limit=1.0), charge(limit=2), limit=1)
    assert await state.caps.begin(held, NOW) is None
    await state.caps.end(held, [charge(USD, amount=0.1, limit=1.0), charge(limit=2)], NOW + 1)
    assert await usage(state, USD) == (0.1, 0.0)
    assert await usage(state) == (1.0, 0.0)
    assert await renew(state, "other", 1, at=NOW + 1)


async def test_end_of_an_unsent_request_releases_and_gives_the_slot_back(state: State) -> None:
    """``used`` None: the request was never sent, nothing is settled."""
    held = claim("a", charge(limit=2), limit=1)
    assert await state.caps.begin(held, NOW) is None
    await state.caps.end(held, None, NOW + 1)
    assert await usage(state) == (0.0, 0.0)
    assert await renew(state, "other", 1, at=NOW + 1)


async def test_a_claim_of_a_slot_alone_or_of_charges_alone(state: State) -> None:
    """A claim may hold only a slot, or only charges."""
    assert await state.caps.begin(claim("a", limit=1), NOW) is None
    assert await state.caps.begin(claim("b", limit=1), NOW) == SlotBusy()
    await state.caps.end(claim("a", limit=1), (), NOW)
    assert await state.caps.begin(claim("b", limit=1), NOW) is None
    assert await reserve(state, "c", charge(limit=1)) is None
    assert await reserve(state, "d", charge(limit=1)) is not None
    await settle(state, "c", charge(limit=1))
    assert await usage(state) == (1.0, 0.0)


async def test_an_expired_slot_is_reclaimed_by_begin(state: State) -> None:
    """``begin`` reclaims a slot whose lease ended."""
    assert await renew(state, "crashed", 1)
    assert await state.caps.begin(claim("a", charge(), limit=1), NOW + 4.9) == SlotBusy()
    assert await state.caps.begin(claim("a", charge(), limit=1), NOW + 5) is None


# --- processes at once ---------------------------------------------------------------------------

# Each worker slows the decision down, so that without one transaction (or compare-and-set) around
# read, decide and write, the eight would all read the cap before any wrote a reservation.
ATTEMPTER = (
    WAIT_FOR_GO
    + """
import json
import msgspec
import rmcli.state.redis, rmcli.state.sqlite
from rmcli.state import AttemptClaim, Slot, SlotBusy
from rmcore.quota import Charge

def slowly(decide):
    def slow(*args, **kwargs):
        time.sleep(0.02)
        return decide(*args, **kwargs)
    return slow

for module in (rmcli.state.sqlite, rmcli.state.redis):
    module.refuse = slowly(module.refuse)

async def main(worker: str, charges: tuple[Charge, ...], limit: int) -> list[dict[str, object]]:
    slot = Slot(name="gw", limit=limit, lease_s=30.0) if limit else None
    results: list[dict[str, object]] = []
    async with await open_it() as state:
        wait_for_go()
        for i in range(2):
            claim = AttemptClaim(holder=f"{worker}-{i}", lease_s=30.0, slot=slot, charges=charges)
            busy, give_up = 0, time.monotonic() + 20
            while isinstance(answer := await state.caps.begin(claim, 1_764_000_000.0), SlotBusy):
                if time.monotonic() > give_up:
                    sys.exit("no slot in 20 s")
                busy += 1
                await anyio.sleep(0.01)
            if answer is not None:
                results.append({"refused": answer.cap_key, "busy": busy})
                continue
            entered = time.monotonic()
            await anyio.sleep(0.15)
            left = time.monotonic()
            await state.caps.end(claim, charges, 1_764_000_000.0)
            results.append({"span": [entered, left], "busy": busy})
    return results

charges = tuple(msgspec.json.decode(sys.argv[5], type=list[Charge]))
print(json.dumps(anyio.run(main, sys.argv[4], charges, int(sys.argv[6]))))
"""
)


def most_at_once(spans: list[tuple[float, float]]) -> int:
    events = sorted([(entered, 1) for entered, _ in spans] + [(left, -1) for _, left in spans])
    holding, most = 0, 0
    for _, change in events:
        holding += change
        most = max(most, holding)
    return most


@pytest.mark.parametrize(
    ("capped", "slots"), [(True, 3), (True, 0), (False, 3)], ids=["both", "caps", "slots"]
)
async def test_eight_processes_beginning_attempts_at_once_keep_the_cap_and_the_slots(
    backend: Backend, capped: bool, slots: int
) -> None:
    """Eight OS processes each begin two attempts at the same moment, against 3 slots, or a cap of
    5 requests (with a $1.00 cap that 0.15 a request would let 6 through), or both. Capped:
    exactly 5 are admitted, the 11 others refused by the requests cap. With slots: never more than
    3 hold one at once. At the end everything is settled and every slot free."""
    charges = [charge(limit=5), charge(USD, amount=0.15, limit=1.0)] if capped else []
    encoded = msgspec.json.encode(charges).decode()
    argv = [[backend.spec, str(backend.home), f"w{n}", encoded, str(slots)] for n in range(8)]
    outputs = run_workers(ATTEMPTER, argv, backend.home.parent / "go")
    results = [result for out in outputs for result in json.loads(out)]
    spans: list[tuple[float, float]] = [tuple(r["span"]) for r in results if "span" in r]
    assert len(spans) == (5 if capped else 16)
    assert sorted(r["refused"] for r in results if "refused" in r) == ([REQUESTS] * 11 if capped else [])
    if slots:
        assert most_at_once(spans) <= 3
    if slots and not capped:
        # Sixteen holders of 0.15 s through three slots must meet a full one; five (capped) may not,
        # when a loaded machine starts the processes far enough apart.
        assert sum(r["busy"] for r in results) > 0, "the slot limit was reached"
    async with backend.open() as state:
        if capped:
            assert await usage(state) == (5.0, 0.0)
            assert await usage(state, USD) == pytest.approx((0.75, 0.0))
        assert all([await renew(state, f"after {n}", 3) for n in range(3)])
