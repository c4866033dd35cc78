"""Attempts the shell could not reserve a cap's share for (``AttemptRefused``): never sent, never
recorded, their target skipped with the refusal's kind and message, the route moving on."""

from __future__ import annotations

import heapq

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rmcore.budget import Ledger
from rmcore.engine import Engine
from rmcore.errors import ErrorKind, ProviderError
from rmcore.events import (
    Action,
    AttemptFailed,
    AttemptRefused,
    Backoff,
    CancelAttempt,
    Event,
    FailedOver,
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
from rmcore.simulate import SimStep, describe
from tests.core.helpers import answer, spec

REQUEST = ChatRequest.ask("Should we migrate to Kubernetes?", max_tokens=100)
QUOTA_FULL = "the 5-hour request quota provider:a:requests:18000s (2400 of 2400 requests used) is full"
BUDGET_FULL = "the daily budget policy:p:usd:day ($5.00 of $5.00 used) cannot take this request"


def target(name: str, max_attempts: int = 2) -> TargetPlan:
    return TargetPlan(provider=spec(name), max_attempts=max_attempts)


def refused(start: StartAttempt, at: float, kind: ErrorKind = ErrorKind.QUOTA) -> AttemptRefused:
    return AttemptRefused(
        attempt_id=start.attempt_id,
        at=at,
        kind=kind,
        message=QUOTA_FULL if kind is ErrorKind.QUOTA else BUDGET_FULL,
    )


def only(actions: list[Action], kind: type[Action]) -> list[Action]:
    return [a for a in actions if isinstance(a, kind)]


def test_a_refused_attempt_skips_its_target_unrecorded_and_the_route_moves_on() -> None:
    """An attempt refused by a cap is not recorded, releases its reservation, and the route fails over to
    the next target."""
    ledger = Ledger(1.0)
    engine = Engine(RunPlan(targets=(target("a"), target("b"))), REQUEST, seed=0, ledger=ledger)
    [first] = engine.start(0.0)
    assert isinstance(first, StartAttempt) and first.provider.name == "a"
    assert ledger.reserved_usd > 0
    actions = engine.handle(refused(first, 0.01))
    [skip] = only(actions, TargetSkipped)
    assert isinstance(skip, TargetSkipped)
    assert (skip.skipped.provider, skip.skipped.kind, skip.skipped.message) == (
        "a",
        ErrorKind.QUOTA,
        QUOTA_FULL,
    )
    [moved] = only(actions, FailedOver)
    assert isinstance(moved, FailedOver) and (moved.from_provider, moved.to_provider) == ("a", "b")
    assert moved.error.kind is ErrorKind.QUOTA
    [second] = only(actions, StartAttempt)
    assert isinstance(second, StartAttempt) and second.provider.name == "b" and second.attempt_no == 1
    assert engine.attempts == (), "nothing was sent, so nothing is recorded"
    assert ledger.spent_usd == 0.0
    assert ledger.reserved_usd == pytest.approx(worst_case_usd(REQUEST, second.provider)), (
        "a's hold is released"
    )
    [finish] = engine.handle(answer(second, 0.5))
    assert isinstance(finish, Finish)
    outcome = finish.outcome
    assert outcome.ok and outcome.provider == "b" and outcome.fallback_used
    assert [a.provider for a in outcome.attempts] == ["b"]
    assert [(s.provider, s.kind) for s in outcome.skipped] == [("a", ErrorKind.QUOTA)]
    assert ledger.reserved_usd == 0 and ledger.spent_usd == outcome.cost_usd


def test_when_every_target_is_refused_the_run_fails_with_the_refusals() -> None:
    """When every target is refused the run fails at no cost, its message quoting every refusal."""
    engine = Engine(RunPlan(targets=(target("a"), target("b"))), REQUEST, seed=0)
    [first] = engine.start(0.0)
    assert isinstance(first, StartAttempt)
    [second] = only(engine.handle(refused(first, 0.0, ErrorKind.BUDGET)), StartAttempt)
    assert isinstance(second, StartAttempt)
    [finish] = only(engine.handle(refused(second, 0.0)), Finish)
    assert isinstance(finish, Finish)
    outcome = finish.outcome
    assert not outcome.ok and outcome.attempts == () and outcome.cost_usd == 0
    assert outcome.error is not None and outcome.error.kind is ErrorKind.QUOTA
    assert BUDGET_FULL in outcome.error.message and QUOTA_FULL in outcome.error.message
    assert engine.next_wakeup() is None


def test_a_refused_retry_keeps_the_failure_that_asked_for_it() -> None:
    """a fails with rate_limited; its retry is refused (the day's budget is spent): a is skipped,
    its error stays the provider's failure, and b is tried."""
    engine = Engine(RunPlan(targets=(target("a", max_attempts=3), target("b"))), REQUEST, seed=3)
    [first] = engine.start(0.0)
    assert isinstance(first, StartAttempt)
    failed = AttemptFailed(
        attempt_id=first.attempt_id,
        at=0.1,
        error=ProviderError(kind=ErrorKind.RATE_LIMITED, message="slow down", status=429),
    )
    [wait] = engine.handle(failed)
    assert isinstance(wait, Backoff)
    [retry] = engine.handle(TimePassed(at=wait.until))
    assert isinstance(retry, StartAttempt) and retry.provider.name == "a" and retry.attempt_no == 2
    actions = engine.handle(refused(retry, wait.until, ErrorKind.BUDGET))
    [moved] = only(actions, FailedOver)
    assert isinstance(moved, FailedOver) and moved.error.kind is ErrorKind.RATE_LIMITED
    [third] = only(actions, StartAttempt)
    assert isinstance(third, StartAttempt) and third.provider.name == "b"
    assert [a.outcome for a in engine.attempts] == ["rate_limited"]
    [finish] = engine.handle(answer(third, wait.until + 1))
    assert isinstance(finish, Finish) and finish.outcome.provider == "b"
    assert [(s.provider, s.kind, s.message) for s in finish.outcome.skipped] == [
        ("a", ErrorKind.BUDGET, BUDGET_FULL)
    ]


def test_a_refused_first_attempt_earns_no_retry_budget() -> None:
    """The retry budget is a share of the first attempts *sent*: with half a retry per first
    attempt and no floor, a refused a leaves b's one sent attempt with no retry to spend."""
    plan = RunPlan(
        targets=(target("a"), target("b")),
        retry=RetryRules(budget_ratio=0.5, budget_floor=0, backoff_initial_s=0.0, backoff_max_s=0.0),
    )
    engine = Engine(plan, REQUEST, seed=0)
    [first] = engine.start(0.0)
    assert isinstance(first, StartAttempt)
    [second] = only(engine.handle(refused(first, 0.0)), StartAttempt)
    assert isinstance(second, StartAttempt)
    failed = AttemptFailed(
        attempt_id=second.attempt_id, at=0.1, error=ProviderError(kind=ErrorKind.SERVER_ERROR, message="500")
    )
    actions = engine.handle(failed)
    actions += engine.handle(TimePassed(at=0.1))
    [finish] = only(actions, Finish)
    assert isinstance(finish, Finish) and not finish.outcome.ok
    assert [(s.provider, s.message) for s in finish.outcome.skipped] == [
        ("a", QUOTA_FULL),
        ("b", "the run's retry budget is spent"),
    ]


def test_a_refusal_in_a_race_leaves_the_other_runner_running() -> None:
    """In a race, a refused runner drops out without cancelling the others."""
    plan = RunPlan(targets=(target("a"), target("b")), strategy=Strategy.FASTEST)
    engine = Engine(plan, REQUEST, seed=0)
    first, second = engine.start(0.0)
    assert isinstance(first, StartAttempt) and isinstance(second, StartAttempt)
    actions = engine.handle(refused(first, 0.0))
    assert only(actions, CancelAttempt) == [] and only(actions, Finish) == []
    [finish] = engine.handle(answer(second, 0.3))
    assert isinstance(finish, Finish) and finish.outcome.provider == "b"
    assert len(finish.outcome.attempts) == 1


def test_refusals_of_unknown_or_ended_attempts_are_ignored() -> None:
    """A refusal of an attempt that is unknown or already over changes nothing."""
    engine = Engine(RunPlan(targets=(target("a"), target("b"))), REQUEST, seed=0)
    [first] = engine.start(0.0)
    assert isinstance(first, StartAttempt)
    assert engine.handle(AttemptRefused(attempt_id=99, at=0.0, kind=ErrorKind.QUOTA, message="?")) == []
    [finish] = engine.handle(answer(first, 0.2))
    assert isinstance(finish, Finish)
    assert engine.handle(refused(first, 0.3)) == []


def test_a_refusal_at_the_deadline_ends_the_run_with_the_deadline() -> None:
    """A refusal arriving at the deadline ends the run with ``deadline``, nothing recorded."""
    engine = Engine(
        RunPlan(targets=(target("a"), target("b")), limits=RunLimits(deadline_s=1.0)), REQUEST, seed=0
    )
    [first] = engine.start(0.0)
    assert isinstance(first, StartAttempt)
    [finish] = only(engine.handle(refused(first, 1.0)), Finish)
    assert isinstance(finish, Finish) and finish.outcome.error is not None
    assert finish.outcome.error.kind is ErrorKind.DEADLINE and finish.outcome.attempts == ()


def test_the_trace_says_a_refused_attempt_was_not_sent() -> None:
    """The trace says a refused attempt was not sent, and why."""
    step = SimStep(
        at=0.0, event=AttemptRefused(attempt_id=1, at=0.0, kind=ErrorKind.QUOTA, message=QUOTA_FULL)
    )
    assert describe([step]) == [f"[   0.000s]   attempt 1: not sent (quota): {QUOTA_FULL}"]


# --- property: a driver that refuses some attempts ------------------------------------------------


def drive(
    plan: RunPlan, seed: int, refusals: list[ErrorKind | None], replies: list[tuple[float, ErrorKind | None]]
) -> tuple[RunOutcome, list[StartAttempt], dict[int, AttemptRefused], Engine]:
    """Run ``plan`` on a virtual clock: the n-th attempt is refused with ``refusals[n]`` (None: sent),
    a sent one answers or fails with the next of ``replies`` after its latency."""
    ledger = Ledger(plan.limits.max_usd)
    engine = Engine(plan, REQUEST, seed=seed, ledger=ledger)
    now = 0.0
    pending = list(engine.start(now))
    inflight: list[tuple[float, int, Event]] = []
    cancelled: set[int] = set()
    starts: list[StartAttempt] = []
    refused_ids: dict[int, AttemptRefused] = {}
    for _ in range(10_000):
        while pending:
            action = pending.pop(0)
            if isinstance(action, Finish):
                assert not pending and engine.next_wakeup() is None
                return action.outcome, starts, refused_ids, engine
            if isinstance(action, CancelAttempt):
                cancelled.add(action.attempt_id)
            if not isinstance(action, StartAttempt):
                continue
            n = len(starts)
            starts.append(action)
            refusal = refusals[n % len(refusals)] if refusals else None
            if refusal is not None:
                event = AttemptRefused(
                    attempt_id=action.attempt_id, at=now, kind=refusal, message=f"full {n}"
                )
                refused_ids[action.attempt_id] = event
                pending.extend(engine.handle(event))
                continue
            latency, kind = replies[n % len(replies)]
            ended: Event
            if latency >= action.timeout_s:
                error = ProviderError(kind=action.timeout_kind, message="no answer")
                ended = AttemptFailed(attempt_id=action.attempt_id, at=now + action.timeout_s, error=error)
            elif kind is None:
                ended = answer(action, now + latency)
            else:
                ended = AttemptFailed(
                    attempt_id=action.attempt_id,
                    at=now + latency,
                    error=ProviderError(kind=kind, message="x"),
                )
            heapq.heappush(inflight, (ended.at, n, ended))
        while inflight and getattr(inflight[0][2], "attempt_id", None) in cancelled:
            heapq.heappop(inflight)
        wake = engine.next_wakeup()
        if inflight and (wake is None or inflight[0][0] <= wake):
            at, _, ended = heapq.heappop(inflight)
            now = max(now, at)
            pending.extend(engine.handle(ended))
        else:
            assert wake is not None, "the engine stopped without finishing"
            now = max(now, wake)
            pending.extend(engine.handle(TimePassed(at=now)))
    raise AssertionError("the run did not end")


SENT_KINDS = [ErrorKind.RATE_LIMITED, ErrorKind.SERVER_ERROR, ErrorKind.TIMEOUT, ErrorKind.AUTH]


@st.composite
def plans(draw: st.DrawFn) -> RunPlan:
    names = draw(st.lists(st.sampled_from("abcd"), min_size=1, max_size=4))
    leaves = [target(n, max_attempts=draw(st.integers(1, 3))) for n in names]
    nodes: list[TargetPlan | RoutePlan] = list(leaves)
    if len(nodes) >= 3 and draw(st.booleans()):
        inner = RoutePlan(strategy=draw(st.sampled_from(list(Strategy))), targets=tuple(leaves[1:]))
        nodes = [leaves[0], inner]
    return RunPlan(
        targets=tuple(nodes),
        strategy=draw(st.sampled_from(list(Strategy))),
        hedge_after_s=draw(st.floats(0.05, 3.0)),
        limits=RunLimits(deadline_s=draw(st.floats(0.5, 60.0)), max_usd=draw(st.floats(0.0, 0.01))),
        retry=RetryRules(
            on=frozenset(draw(st.lists(st.sampled_from(SENT_KINDS), max_size=3))),
            stop_on=frozenset(),
            backoff_initial_s=0.1,
            backoff_max_s=1.0,
        ),
    )


@settings(max_examples=300, deadline=None)
@given(
    plans(),
    st.integers(0, 2**32),
    st.lists(st.sampled_from([None, ErrorKind.QUOTA, ErrorKind.BUDGET]), max_size=6),
    st.lists(st.tuples(st.floats(0.0, 20.0), st.sampled_from([None, *SENT_KINDS])), min_size=1, max_size=6),
)
def test_a_refused_attempt_is_never_recorded_and_the_run_still_terminates(
    plan: RunPlan,
    seed: int,
    refusals: list[ErrorKind | None],
    replies: list[tuple[float, ErrorKind | None]],
) -> None:
    """Whatever is refused, exactly the sent attempts are recorded, each refusal skips its target once, no
    reservation outlives the run and the budget holds."""
    outcome, starts, refused_ids, engine = drive(plan, seed, refusals, replies)
    assert len(outcome.attempts) == len(starts) - len(refused_ids), "exactly the sent attempts are recorded"
    by_id = {s.attempt_id: s for s in starts}
    skipped = list(outcome.skipped)
    for attempt_id, refusal in refused_ids.items():
        # Attempts start only before the deadline, so every refusal skips its target, once.
        [note] = [s for s in skipped if s.message == refusal.message]
        assert (note.provider, note.kind) == (by_id[attempt_id].provider.name, refusal.kind)
    assert engine.ledger.reserved_usd == 0, "no reservation outlives the run"
    assert abs(engine.ledger.spent_usd - outcome.cost_usd) < 1e-12
    assert outcome.cost_usd <= plan.limits.max_usd + 1e-12
    assert outcome.ok == (outcome.error is None)
    if refused_ids and len(refused_ids) == len(starts):
        assert not outcome.ok and outcome.cost_usd == 0
