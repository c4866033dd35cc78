"""The fail-over engine: examples of its conduct, and hypothesis properties of its invariants."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from rmcore.engine import Engine
from rmcore.errors import ATTEMPT_KINDS, ErrorKind
from rmcore.events import (
    AttemptFailed,
    AttemptSucceeded,
    Backoff,
    CheckHealth,
    FailedOver,
    Finish,
    StartAttempt,
    TimePassed,
)
from rmcore.plan import RetryRules, RunLimits, RunPlan, TargetPlan
from rmcore.requests import ChatRequest
from rmcore.simulate import SimProvider, SimReply, simulate
from tests.core.helpers import failure, spec

REQUEST = ChatRequest.ask("Should we migrate to Kubernetes?", max_tokens=100)


def plan(*names: str, max_attempts: int = 2, **limits: float) -> RunPlan:
    return RunPlan(
        targets=tuple(TargetPlan(provider=spec(n), max_attempts=max_attempts) for n in names),
        limits=RunLimits(**limits),
    )


def test_connection_refused_fails_over_after_retries_and_marks_fallback() -> None:
    """A refused primary is retried (connection is retryable), then the fallback answers."""
    sim = simulate(
        plan("primary", "fallback"),
        REQUEST,
        {"primary": SimProvider(replies=(SimReply(latency_s=0.001, kind=ErrorKind.CONNECTION),))},
    )
    assert sim.outcome.ok and sim.outcome.provider == "fallback" and sim.outcome.fallback_used
    assert [a.outcome for a in sim.outcome.attempts] == ["connection", "connection", "ok"]
    assert any(isinstance(s.action, FailedOver) and s.action.primary for s in sim.steps)


def test_retry_after_is_the_minimum_wait() -> None:
    """A 429 with Retry-After 2 is retried on the same target no sooner than 2 s later."""
    engine = Engine(plan("a"), REQUEST, seed=1)
    [start] = engine.start(0.0)
    assert isinstance(start, StartAttempt)
    [wait] = engine.handle(
        AttemptFailed(attempt_id=start.attempt_id, at=0.1, error=failure(ErrorKind.RATE_LIMITED, 2.0))
    )
    assert isinstance(wait, Backoff) and wait.until >= 2.1
    assert engine.next_wakeup() == wait.until
    assert engine.handle(TimePassed(at=wait.until - 0.01)) == [], "not a moment sooner"
    [again] = engine.handle(TimePassed(at=wait.until))
    assert isinstance(again, StartAttempt) and again.attempt_no == 2 and again.provider.name == "a"


def test_retry_after_beyond_the_deadline_fails_over_instead_of_waiting() -> None:
    """A Retry-After that would cross the deadline is not waited for: the next target is tried."""
    sim = simulate(
        plan("a", "b", deadline_s=5.0),
        REQUEST,
        {"a": SimProvider(replies=(SimReply(latency_s=0.1, kind=ErrorKind.RATE_LIMITED, retry_after_s=30),))},
    )
    assert sim.outcome.provider == "b"
    assert not any(isinstance(s.action, Backoff) for s in sim.steps)


def test_persistent_503_is_tried_max_attempts_times_then_fails_over() -> None:
    """overloaded retried when the policy says so, at most max_attempts times on one target."""
    p = RunPlan(
        targets=(TargetPlan(provider=spec("a"), max_attempts=3), TargetPlan(provider=spec("b"))),
        retry=RetryRules(on=frozenset({ErrorKind.OVERLOADED})),
    )
    sim = simulate(
        p, REQUEST, {"a": SimProvider(replies=(SimReply(latency_s=0.01, kind=ErrorKind.OVERLOADED),))}
    )
    assert sim.calls["a"] == 3 and sim.outcome.provider == "b"


def test_silent_provider_is_abandoned_after_one_attempt_timeout() -> None:
    """A hang ends at the attempt timeout; timeout is not retried by default, so the next target answers."""
    p = RunPlan(
        targets=(TargetPlan(provider=spec("a"), attempt_timeout_s=1.0), TargetPlan(provider=spec("b")))
    )
    sim = simulate(p, REQUEST, {"a": SimProvider(replies=(SimReply(latency_s=None),))})
    assert sim.calls["a"] == 1 and sim.outcome.provider == "b"
    assert sim.outcome.attempts[0].outcome == "timeout"
    assert 1.0 <= sim.elapsed_s < 2.0


def test_content_filter_stops_the_run_with_the_providers_reason() -> None:
    """A content filter stops the whole run: the next provider is not asked."""
    sim = simulate(
        plan("a", "b"), REQUEST, {"a": SimProvider(replies=(SimReply(kind=ErrorKind.CONTENT_FILTER),))}
    )
    assert not sim.outcome.ok and sim.outcome.error is not None
    assert sim.outcome.error.kind is ErrorKind.CONTENT_FILTER and "b" not in sim.calls


def test_budget_skips_targets_whose_worst_case_does_not_fit() -> None:
    """A provider whose worst case exceeds the budget is never called; a cheaper one is."""
    p = RunPlan(
        targets=(
            TargetPlan(provider=spec("dear", price=1_000.0)),
            TargetPlan(provider=spec("cheap", price=0.1)),
        ),
        limits=RunLimits(max_usd=0.01),
    )
    sim = simulate(p, REQUEST, {})
    assert "dear" not in sim.calls and sim.outcome.provider == "cheap"
    assert sim.outcome.skipped[0].kind is ErrorKind.BUDGET


def test_no_target_fits_the_budget_fails_with_budget() -> None:
    """When no target's worst case fits the budget nothing is sent and the run fails with ``budget``."""
    p = RunPlan(targets=(TargetPlan(provider=spec("dear", price=1_000.0)),), limits=RunLimits(max_usd=0.0001))
    sim = simulate(p, REQUEST, {})
    assert sim.calls == {} and sim.outcome.error is not None and sim.outcome.error.kind is ErrorKind.BUDGET


def test_health_check_before_use_skips_unhealthy_targets() -> None:
    """With health checks on, an unhealthy provider is skipped unsent, and the skip is announced when it
    happens."""
    p = RunPlan(
        targets=(TargetPlan(provider=spec("a")), TargetPlan(provider=spec("b"))), check_before_use=True
    )
    sim = simulate(p, REQUEST, {"a": SimProvider(healthy=False)})
    assert "a" not in sim.calls and sim.outcome.provider == "b"
    assert sum(isinstance(s.action, CheckHealth) for s in sim.steps) == 2
    assert sim.outcome.skipped[0].kind is ErrorKind.UNHEALTHY
    kinds = [type(s.action).__name__ for s in sim.steps if s.action is not None]
    assert kinds.index("TargetSkipped") < kinds.index("StartAttempt"), "the skip is announced when it happens"


def test_attempt_timeout_is_capped_by_the_deadline() -> None:
    """An attempt's timeout never reaches past the run's deadline, and ending on it is a ``deadline``
    failure."""
    engine = Engine(
        RunPlan(
            targets=(TargetPlan(provider=spec("a"), attempt_timeout_s=30),), limits=RunLimits(deadline_s=5)
        ),
        REQUEST,
        seed=0,
    )
    [start] = engine.start(10.0)
    assert isinstance(start, StartAttempt)
    assert start.timeout_s == 5 and start.timeout_kind is ErrorKind.DEADLINE
    [finish] = engine.handle(AttemptFailed(attempt_id=1, at=15.0, error=failure(ErrorKind.DEADLINE)))
    assert isinstance(finish, Finish) and finish.outcome.error is not None
    assert finish.outcome.error.kind is ErrorKind.DEADLINE


def test_success_records_real_usage_and_cost() -> None:
    """A success records its latency, wall-clock start, and the cost of its real usage."""
    engine = Engine(plan("a"), REQUEST, seed=0, epoch_s=1_700_000_000.0)
    [_start] = engine.start(100.0)
    from rmcore.completion import Completion, Usage

    done = engine.handle(
        AttemptSucceeded(
            attempt_id=1,
            at=100.25,
            completion=Completion(content="yes", model="m", usage=Usage(input_tokens=10, output_tokens=20)),
        )
    )
    [finish] = done
    assert isinstance(finish, Finish)
    [record] = finish.outcome.attempts
    assert record.latency_ms == 250.0 and record.started_at_ms == 1_700_000_000_000
    assert finish.outcome.cost_usd == record.cost_usd == 30 / 1_000_000


def test_attempt_count_follows_the_attempts_without_copying_them() -> None:
    """``attempt_count`` is ``len(attempts)`` at every step (the shell checks it after each event)."""
    engine = Engine(plan("a"), REQUEST, seed=0)
    engine.start(100.0)
    assert engine.attempt_count == len(engine.attempts) == 0
    engine.handle(AttemptFailed(attempt_id=1, at=100.1, error=failure(ErrorKind.CONNECTION)))
    assert engine.attempt_count == len(engine.attempts) == len(engine.attempt_ids) == 1


# --- properties ----------------------------------------------------------------------------------

KINDS = sorted(ATTEMPT_KINDS)

replies = st.builds(
    SimReply,
    latency_s=st.one_of(st.none(), st.floats(min_value=0.0, max_value=40.0)),
    kind=st.one_of(st.none(), st.sampled_from(KINDS)),
    retry_after_s=st.one_of(st.none(), st.floats(min_value=0.0, max_value=60.0)),
    output_tokens=st.one_of(st.none(), st.integers(min_value=0, max_value=5_000)),
)
providers = st.builds(
    SimProvider, replies=st.lists(replies, min_size=1, max_size=6).map(tuple), healthy=st.booleans()
)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[RunPlan, ChatRequest, dict[str, SimProvider], int]:
    names = draw(st.lists(st.sampled_from("abcdefg"), min_size=1, max_size=5, unique=True))
    targets = tuple(
        TargetPlan(
            provider=spec(n, price=draw(st.floats(min_value=0.0, max_value=50.0))),
            attempt_timeout_s=draw(st.floats(min_value=0.01, max_value=60.0)),
            max_attempts=draw(st.integers(min_value=1, max_value=5)),
        )
        for n in names
    )
    run_plan = RunPlan(
        targets=targets,
        limits=RunLimits(
            deadline_s=draw(st.floats(min_value=0.01, max_value=200.0)),
            max_usd=draw(st.floats(min_value=0.0, max_value=0.05)),
        ),
        retry=RetryRules(
            on=frozenset(draw(st.lists(st.sampled_from(KINDS), max_size=6))),
            stop_on=frozenset(draw(st.lists(st.sampled_from(KINDS), max_size=2))),
            backoff_initial_s=draw(st.floats(min_value=0.0, max_value=5.0)),
            backoff_max_s=draw(st.floats(min_value=0.0, max_value=20.0)),
        ),
        check_before_use=draw(st.booleans()),
    )
    request = ChatRequest.ask(draw(st.text(max_size=200)), max_tokens=draw(st.integers(1, 4_000)))
    sims = {n: draw(providers) for n in names}
    return run_plan, request, sims, draw(st.integers(0, 2**32))


@settings(max_examples=400, deadline=None)
@given(scenarios())
def test_engine_invariants(scenario: tuple[RunPlan, ChatRequest, dict[str, SimProvider], int]) -> None:
    """Whatever the providers do, the run terminates within its deadline, within max_attempts per
    target and within its budget; every attempt ends in exactly one outcome; a Retry-After is never
    cut short; the run's cost is the sum of its attempts' costs."""
    run_plan, request, sims, seed = scenario
    sim = simulate(run_plan, request, sims, seed=seed)
    outcome = sim.outcome
    assert sim.elapsed_s <= run_plan.limits.deadline_s + 1e-9
    for target in run_plan.targets:
        assert sim.calls.get(target.provider.name, 0) <= target.max_attempts
    assert outcome.cost_usd <= run_plan.limits.max_usd + 1e-12
    assert abs(outcome.cost_usd - sum(a.cost_usd for a in outcome.attempts)) < 1e-15
    starts = [s for s in sim.steps if isinstance(s.action, StartAttempt)]
    assert len(starts) == len(outcome.attempts)
    valid = {"ok"} | {k.value for k in ErrorKind}
    assert all(a.outcome in valid for a in outcome.attempts)
    assert outcome.ok == (outcome.completion is not None) == (outcome.error is None)
    assert sum(isinstance(s.action, Finish) for s in sim.steps) == 1
    # Retry-After: the next start on the same provider comes no sooner than asked.
    for i, step in enumerate(sim.steps):
        if isinstance(step.event, AttemptFailed) and step.event.error.retry_after_s is not None:
            failed_provider = sim.steps[i - 1].action
            assert isinstance(failed_provider, StartAttempt)
            later = [s for s in sim.steps[i + 1 :] if isinstance(s.action, StartAttempt | FailedOver)]
            if (
                later
                and isinstance(later[0].action, StartAttempt)
                and (later[0].action.provider.name == failed_provider.provider.name)
            ):
                assert later[0].at >= step.at + step.event.error.retry_after_s - 1e-9


def test_a_failed_nested_route_names_the_provider_whose_error_it_reports() -> None:
    """The fail-over notice pairs each error with the provider that produced it."""
    from rmcore.plan import RoutePlan
    from rmcore.policy.schema import Strategy

    race = RoutePlan(
        strategy=Strategy.FASTEST, targets=(TargetPlan(provider=spec("a")), TargetPlan(provider=spec("b")))
    )
    p = RunPlan(targets=(race, TargetPlan(provider=spec("c"))))
    sims = {
        "a": SimProvider(replies=(SimReply(latency_s=0.1, kind=ErrorKind.AUTH),)),
        "b": SimProvider(replies=(SimReply(latency_s=0.3, kind=ErrorKind.OVERLOADED),)),
    }
    sim = simulate(p, REQUEST, sims)
    [notice] = [s.action for s in sim.steps if isinstance(s.action, FailedOver)]
    assert (notice.from_provider, notice.error.kind, notice.to_provider) == ("b", ErrorKind.OVERLOADED, "c")
    assert isinstance(sim.outcome.cost_usd, float)
