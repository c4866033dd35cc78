"""Targets that wait for room in the budget inside one run: a race (fastest, compare) starts what
fits and holds the rest until its own attempts settle, a hedge is not started while nothing of
its route is in flight, and a run with nothing running beside it never waits.

The rule (``rmcore.engine``): a target whose worst case does not fit what is left now, but would
fit if every running attempt settled at no cost, waits; it starts when room is made, fails with
``budget`` once it can never fit, or ends with the run (an answer elsewhere, the deadline).
"""

from __future__ import annotations

import pytest

from rmcore.budget import Ledger
from rmcore.engine import Engine
from rmcore.errors import ErrorKind
from rmcore.events import (
    Action,
    AttemptFailed,
    CancelAttempt,
    Finish,
    RunOutcome,
    StartAttempt,
    TargetSkipped,
    TimePassed,
)
from rmcore.plan import RetryRules, RoutePlan, RunLimits, RunPlan, TargetPlan
from rmcore.policy.schema import Strategy
from rmcore.pricing import worst_case_usd
from rmcore.requests import ChatRequest
from tests.core.helpers import answer, failure, spec

REQUEST = ChatRequest.ask("Should we migrate to Kubernetes?", max_tokens=1000)
WORST = worst_case_usd(REQUEST, spec("a"))
"""The worst case of one attempt at any provider of these tests (all priced alike)."""

NO_RETRY = RetryRules(on=frozenset())


def plan(strategy: Strategy, *names: str, max_usd: float, hedge_after_s: float = 2.0) -> RunPlan:
    return RunPlan(
        targets=tuple(TargetPlan(provider=spec(n)) for n in names),
        strategy=strategy,
        hedge_after_s=hedge_after_s,
        limits=RunLimits(max_usd=max_usd, deadline_s=60.0),
        retry=NO_RETRY,
    )


def starts(actions: list[Action]) -> list[StartAttempt]:
    return [a for a in actions if isinstance(a, StartAttempt)]


def skips(actions: list[Action]) -> list[TargetSkipped]:
    return [a for a in actions if isinstance(a, TargetSkipped)]


def outcome_of(actions: list[Action]) -> RunOutcome:
    [finish] = [a for a in actions if isinstance(a, Finish)]
    assert isinstance(finish, Finish)
    return finish.outcome


def failed(start: StartAttempt, at: float) -> AttemptFailed:
    return AttemptFailed(attempt_id=start.attempt_id, at=at, error=failure(ErrorKind.SERVER_ERROR))


def test_a_race_starts_what_fits_and_holds_the_rest_until_a_racer_fails() -> None:
    """fastest over a, b, c with room for two worst cases: a and b start, c waits (no skip);
    when a fails, its reservation is released and c starts at that moment."""
    engine = Engine(plan(Strategy.FASTEST, "a", "b", "c", max_usd=2.5 * WORST), REQUEST, seed=0)
    actions = engine.start(0.0)
    a, b = starts(actions)
    assert [a.provider.name, b.provider.name] == ["a", "b"] and not skips(actions)
    waiting_before = engine.waiting_for_budget
    [c] = starts(engine.handle(failed(a, 1.0)))
    assert waiting_before and c.provider.name == "c" and not engine.waiting_for_budget
    outcome = outcome_of(engine.handle(answer(b, 2.0)))
    assert outcome.provider == "b" and outcome.skipped == ()
    assert sorted((r.provider, r.outcome) for r in outcome.attempts) == [
        ("a", "server_error"),
        ("b", "ok"),
        ("c", "cancelled"),
    ]


def test_a_racer_still_waiting_when_the_race_is_won_is_never_sent() -> None:
    """b answers while c still waits: the race is over, c is dropped without a request (no
    record, no charge, no skip)."""
    engine = Engine(plan(Strategy.FASTEST, "a", "b", "c", max_usd=2.5 * WORST), REQUEST, seed=0)
    a, b = starts(engine.start(0.0))
    actions = engine.handle(answer(b, 1.0))
    assert CancelAttempt(attempt_id=a.attempt_id, reason=ErrorKind.CANCELLED) in actions
    outcome = outcome_of(actions)
    assert outcome.provider == "b" and {r.provider for r in outcome.attempts} == {"a", "b"}
    assert outcome.skipped == () and engine.ledger.reserved_usd == 0.0


def test_compare_gets_every_answer_when_the_budget_holds_them_one_after_another() -> None:
    """compare over a, b, c with room for two at once: c waits, starts when a's answer settles
    below its worst case, and the run keeps all three answers: none is skipped for budget."""
    engine = Engine(plan(Strategy.COMPARE, "a", "b", "c", max_usd=2.5 * WORST), REQUEST, seed=0)
    a, b = starts(engine.start(0.0))
    [c] = starts(engine.handle(answer(a, 1.0)))
    assert engine.handle(answer(b, 1.5)) == []
    outcome = outcome_of(engine.handle(answer(c, 2.0)))
    assert [x.provider for x in outcome.answers] == ["a", "b", "c"] and outcome.skipped == ()
    assert engine.ledger.spent_usd <= 2.5 * WORST


def test_a_racer_that_can_never_fit_is_skipped_at_once() -> None:
    """A racer dearer than the whole budget does not wait: it is skipped with ``budget`` at the
    start, as before."""
    targets = (TargetPlan(provider=spec("a")), TargetPlan(provider=spec("dear", price=1_000.0)))
    race = RunPlan(targets=targets, strategy=Strategy.FASTEST, limits=RunLimits(max_usd=2 * WORST))
    engine = Engine(race, REQUEST, seed=0)
    actions = engine.start(0.0)
    assert [s.provider.name for s in starts(actions)] == ["a"]
    assert [(s.skipped.provider, s.skipped.kind) for s in skips(actions)] == [("dear", ErrorKind.BUDGET)]
    assert not engine.waiting_for_budget


def test_a_hedge_that_does_not_fit_waits_for_the_first_target() -> None:
    """hedged a, b with room for one and a half worst cases: at hedge_after_s b waits rather
    than being skipped; when a fails, b starts at once."""
    engine = Engine(plan(Strategy.HEDGED, "a", "b", max_usd=1.5 * WORST), REQUEST, seed=0)
    [a] = starts(engine.start(0.0))
    assert engine.next_wakeup() == 2.0
    actions = engine.handle(TimePassed(at=2.0))
    assert actions == [] and engine.waiting_for_budget
    [b] = starts(engine.handle(failed(a, 3.0)))
    assert b.provider.name == "b"
    assert outcome_of(engine.handle(answer(b, 4.0))).provider == "b"


def test_no_hedge_starts_while_the_route_only_waits_and_its_delay_restarts_when_one_gets_out() -> None:
    """Another run holds the budget, so hedged a, b, c cannot send a: at hedge_after_s no hedge
    is added beside a target that only waits. When the other run settles, a starts, and the next
    hedge is due hedge_after_s after that moment, not before."""
    ledger = Ledger(1.5 * WORST)
    other = Engine(plan(Strategy.SEQUENTIAL, "x", max_usd=1.0), REQUEST, seed=1, ledger=ledger)
    [x] = starts(other.start(0.0))
    engine = Engine(plan(Strategy.HEDGED, "a", "b", "c", max_usd=1.0), REQUEST, seed=0, ledger=ledger)
    assert engine.start(0.0) == [] and engine.waiting_for_budget
    assert engine.next_wakeup() == 2.0
    assert engine.handle(TimePassed(at=2.0)) == []
    assert engine.next_wakeup() == 60.0, "only the deadline: no hedge timer while nothing is out"
    other.handle(answer(x, 5.0))
    [a] = starts(engine.handle(TimePassed(at=5.0)))
    assert a.provider.name == "a" and engine.next_wakeup() == pytest.approx(7.0)
    # b is due beside a, which is out: it starts, and waits for room, as a hedge beside a.
    assert engine.handle(TimePassed(at=7.0)) == [] and engine.waiting_for_budget


def test_a_nested_race_waits_then_the_fallback_is_tried_when_it_fails() -> None:
    """race-then-fallback: sequential [fastest(a, b), c] with room for one and a half worst
    cases: a starts, b waits; when a fails b starts; when b fails too the race has failed and c
    gets its turn. Nothing is skipped for budget."""
    race = RoutePlan(
        strategy=Strategy.FASTEST, targets=(TargetPlan(provider=spec("a")), TargetPlan(provider=spec("b")))
    )
    run = RunPlan(
        targets=(race, TargetPlan(provider=spec("c"))),
        limits=RunLimits(max_usd=1.5 * WORST),
        retry=NO_RETRY,
    )
    engine = Engine(run, REQUEST, seed=0)
    [a] = starts(engine.start(0.0))
    [b] = starts(engine.handle(failed(a, 1.0)))
    [c] = starts(engine.handle(failed(b, 2.0)))
    outcome = outcome_of(engine.handle(answer(c, 3.0)))
    assert outcome.provider == "c" and outcome.skipped == ()


def test_a_lone_sequential_run_that_does_not_fit_skips_to_the_next_target_at_once() -> None:
    """Nothing runs beside it: the dear first target is skipped with ``budget`` at once and the
    cheap one is tried, as a single ``ask`` always did."""
    targets = (TargetPlan(provider=spec("dear", price=1_000.0)), TargetPlan(provider=spec("cheap")))
    engine = Engine(RunPlan(targets=targets, limits=RunLimits(max_usd=2 * WORST)), REQUEST, seed=0)
    actions = engine.start(0.0)
    assert [s.skipped.provider for s in skips(actions)] == ["dear"]
    assert [s.provider.name for s in starts(actions)] == ["cheap"] and not engine.waiting_for_budget
