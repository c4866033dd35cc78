"""A ledger shared by engines running at the same time keeps them, together, within one budget."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from rmcore.budget import Ledger
from rmcore.completion import Completion, Usage
from rmcore.engine import Engine
from rmcore.events import AttemptSucceeded, Finish, StartAttempt
from rmcore.plan import RunLimits, RunPlan, TargetPlan
from rmcore.pricing import worst_case_usd
from rmcore.providers import ProviderKind, ProviderSpec
from rmcore.requests import ChatRequest

SPEC = ProviderSpec(
    name="p",
    kind=ProviderKind.OPENAI,
    url="http://127.0.0.1:1/",
    model="m",
    input_usd_per_mtok=10.0,
    output_usd_per_mtok=30.0,
)
REQUEST = ChatRequest(prompt="Should we?", max_tokens=1000)
PLAN = RunPlan(targets=(TargetPlan(provider=SPEC),), limits=RunLimits(max_usd=1.0))


def test_a_running_attempt_of_one_engine_holds_budget_from_another() -> None:
    """Room for one worst case only: the second engine's request is not sent while the first runs."""
    worst = worst_case_usd(REQUEST, SPEC)
    ledger = Ledger(max_usd=worst * 1.5)
    first, second = (Engine(PLAN, REQUEST, seed=i, ledger=ledger) for i in range(2))
    assert isinstance(first.start(0.0)[0], StartAttempt)
    [finish] = [a for a in second.start(0.0) if isinstance(a, Finish)]
    assert finish.outcome.error is not None and finish.outcome.error.kind.value == "budget"


def test_settling_releases_the_reservation_and_spends_the_real_cost() -> None:
    """When an attempt ends its worst case is released and its real cost spent."""
    ledger = Ledger(max_usd=1.0)
    engine = Engine(PLAN, REQUEST, seed=0, ledger=ledger)
    [start] = engine.start(0.0)
    assert isinstance(start, StartAttempt)
    assert ledger.reserved_usd == worst_case_usd(REQUEST, SPEC)
    usage = Usage(input_tokens=100, output_tokens=10)
    engine.handle(
        AttemptSucceeded(attempt_id=1, at=1.0, completion=Completion(content="x", model="m", usage=usage))
    )
    assert ledger.reserved_usd == 0.0
    assert ledger.spent_usd == (100 * 10.0 + 10 * 30.0) / 1_000_000


@given(st.integers(min_value=1, max_value=12), st.floats(min_value=0.0, max_value=0.2))
def test_engines_sharing_a_ledger_never_commit_beyond_it(runs: int, budget: float) -> None:
    """However many runs start at once, the worst cases they commit fit in the shared budget."""
    ledger = Ledger(max_usd=budget)
    started = 0
    for i in range(runs):
        engine = Engine(PLAN, REQUEST, seed=i, ledger=ledger)
        started += sum(isinstance(a, StartAttempt) for a in engine.start(0.0))
    assert started * worst_case_usd(REQUEST, SPEC) <= budget + 1e-12
