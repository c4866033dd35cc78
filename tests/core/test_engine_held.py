"""Attempts the shell holds back before sending (``AttemptHeld``: waiting for a provider's
concurrency slot): one cancelled while held never left the process, so it is no attempt (not
recorded, nothing charged); one let go is an attempt like any other."""

from __future__ import annotations

import pytest

from rmcore.budget import Ledger
from rmcore.completion import Completion, Usage
from rmcore.engine import Engine
from rmcore.errors import ErrorKind
from rmcore.events import (
    Action,
    AttemptHeld,
    AttemptSucceeded,
    CancelAttempt,
    Finish,
    RunOutcome,
    StartAttempt,
    TimePassed,
)
from rmcore.plan import RunLimits, RunPlan, TargetPlan
from rmcore.policy.schema import Strategy
from rmcore.requests import ChatRequest
from tests.core.helpers import spec

REQUEST = ChatRequest.ask("Should we migrate to Kubernetes?", max_tokens=100)


def race(ledger: Ledger | None = None, deadline_s: float = 30.0) -> tuple[Engine, StartAttempt, StartAttempt]:
    """A ``fastest`` route of a and b, both started."""
    plan = RunPlan(
        targets=(TargetPlan(provider=spec("a")), TargetPlan(provider=spec("b"))),
        strategy=Strategy.FASTEST,
        limits=RunLimits(deadline_s=deadline_s),
    )
    engine = Engine(plan, REQUEST, seed=0, ledger=ledger)
    a, b = engine.start(0.0)
    assert isinstance(a, StartAttempt) and isinstance(b, StartAttempt)
    return engine, a, b


def answer(start: StartAttempt, at: float) -> AttemptSucceeded:
    usage = Usage(input_tokens=10, output_tokens=20)
    completion = Completion(content="yes", model=start.provider.model, usage=usage)
    return AttemptSucceeded(attempt_id=start.attempt_id, at=at, completion=completion)


def finished(actions: list[Action]) -> RunOutcome:
    [finish] = [a for a in actions if isinstance(a, Finish)]
    assert isinstance(finish, Finish)
    return finish.outcome


def test_a_held_attempt_that_loses_the_race_is_no_attempt() -> None:
    """a waits for a slot while b answers: a is cancelled (its task must stop) but neither
    recorded nor charged; the run costs exactly b's answer."""
    ledger = Ledger(1.0)
    engine, a, b = race(ledger)
    assert engine.handle(AttemptHeld(attempt_id=a.attempt_id, at=0.0)) == []
    actions = engine.handle(answer(b, 0.5))
    assert CancelAttempt(attempt_id=a.attempt_id, reason=ErrorKind.CANCELLED) in actions
    outcome = finished(actions)
    assert [(r.provider, r.outcome) for r in outcome.attempts] == [("b", "ok")]
    assert outcome.cost_usd == outcome.attempts[0].cost_usd
    assert ledger.reserved_usd == 0.0 and ledger.spent_usd == pytest.approx(outcome.cost_usd)


def test_an_attempt_let_go_then_cancelled_is_recorded_as_before() -> None:
    """Once let go (its request handed to the transport), a lost race is a ``cancelled`` attempt
    whose prompt is charged, as for a shell that never holds attempts back."""
    engine, a, b = race()
    engine.handle(AttemptHeld(attempt_id=a.attempt_id, at=0.0))
    engine.handle(AttemptHeld(attempt_id=a.attempt_id, at=0.1, held=False))
    outcome = finished(engine.handle(answer(b, 0.5)))
    assert sorted((r.provider, r.outcome) for r in outcome.attempts) == [("a", "cancelled"), ("b", "ok")]
    cancelled = next(r for r in outcome.attempts if r.provider == "a")
    assert cancelled.usage.estimated and cancelled.cost_usd > 0


def test_attempts_held_at_the_deadline_leave_no_record() -> None:
    """Both wait for slots until the run's deadline: the run fails with ``deadline`` and no
    attempt, since no request left."""
    engine, a, b = race(deadline_s=5.0)
    for start in (a, b):
        engine.handle(AttemptHeld(attempt_id=start.attempt_id, at=0.0))
    outcome = finished(engine.handle(TimePassed(at=5.0)))
    assert outcome.error is not None and outcome.error.kind is ErrorKind.DEADLINE
    assert outcome.attempts == () and outcome.cost_usd == 0.0


def test_holding_an_attempt_that_is_not_running_changes_nothing() -> None:
    """A late or unknown ``AttemptHeld`` is ignored: the attempt that ended stays recorded."""
    engine, a, _ = race()
    engine.handle(AttemptHeld(attempt_id=99, at=0.0))
    outcome = finished(engine.handle(answer(a, 0.2)))
    assert engine.handle(AttemptHeld(attempt_id=a.attempt_id, at=0.3)) == []
    assert sorted((r.provider, r.outcome) for r in outcome.attempts) == [("a", "ok"), ("b", "cancelled")]
