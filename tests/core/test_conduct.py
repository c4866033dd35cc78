"""The decision table (``rmcore.conduct``) checked against the behaviour of the modules that read it.

Each column of the kinds table and each trait of the strategies table is compared with what the
engine, the breaker, the schema, decode, explain and usage actually do, so that the table cannot
say one thing while the code does another.
"""

from __future__ import annotations

import pytest
from returns.result import Failure, Success

from rmcore import conduct
from rmcore.breaker import BREAKING_KINDS, CircuitState, is_breaking, record
from rmcore.conduct import CONDUCT, STRATEGIES, Concurrency, Order, Strategy, Then
from rmcore.engine import Engine
from rmcore.errors import ATTEMPT_KINDS, ErrorKind
from rmcore.events import AdmitCircuit, AttemptRefused, CancelAttempt, Finish, StartAttempt
from rmcore.plan import BreakerRules, RetryRules, RoutePlan, RunLimits, RunPlan, TargetPlan, build_plan
from rmcore.policy import NON_ATTEMPT_KINDS, Policy, decode_policy, explain
from rmcore.policy.schema import Retry, Route
from rmcore.providers import BUILTIN_NAMES, ProviderKind, ProviderSpec
from rmcore.requests import ChatRequest
from rmcore.simulate import SimProvider, SimReply, Simulation, simulate
from rmcore.usage import AttemptRow, summarize

REQUEST = ChatRequest.ask("Should we migrate to Kubernetes?", max_tokens=100)
CONFIGURABLE = sorted(conduct.CONFIGURABLE_KINDS)
"""The kinds a provider can end an attempt with (and a policy can list in ``retry``)."""


def spec(name: str, price: float = 1.0) -> ProviderSpec:
    return ProviderSpec(
        name=name,
        kind=ProviderKind.OPENAI,
        url=f"http://127.0.0.1:9/{name}",
        model=f"{name}-model",
        input_usd_per_mtok=price,
        output_usd_per_mtok=price,
    )


def default_plan(*names: str) -> RunPlan:
    """The plan of a policy that sets nothing but its targets: every conduct at its default."""
    policy = Policy(version=1, route=Route(targets=names))
    return build_plan(policy, {name: spec(name) for name in names}, breakers=False).unwrap()


def fails_once(kind: ErrorKind) -> SimProvider:
    return SimProvider(replies=(SimReply(latency_s=0.01, kind=kind), SimReply(latency_s=0.01)))


def starts(sim: Simulation) -> list[tuple[float, StartAttempt]]:
    return [(s.at, s.action) for s in sim.steps if isinstance(s.action, StartAttempt)]


# --- the tables are whole -----------------------------------------------------------------------


def test_every_error_kind_has_exactly_one_row() -> None:
    """Rule 3: the kinds table has a row for each ``ErrorKind`` and for nothing else."""
    assert set(CONDUCT) == set(ErrorKind)
    assert len(CONDUCT) == len(ErrorKind)


def test_every_strategy_has_exactly_one_row() -> None:
    """Rule 3: the strategies table has the traits of each ``Strategy`` and of nothing else."""
    assert set(STRATEGIES) == set(Strategy)


def test_a_row_is_consistent_with_itself() -> None:
    """An unsent kind is never retried (nothing was tried); a kind that stops the run is not
    retried first; only ``cancelled`` and ``unsupported`` are no failure; a run's own endings are
    not configurable."""
    for kind, row in CONDUCT.items():
        assert not (row.retried and not row.sent), kind
        assert not (row.retried and row.stops), kind
        assert row.fails_over == (row.then is Then.FAIL_OVER)
        assert row.failure == (kind not in (ErrorKind.CANCELLED, ErrorKind.UNSUPPORTED))
        assert row.configurable == (row.sent and row.then is not Then.END)


# --- what reads the kinds table -----------------------------------------------------------------


def test_the_schema_defaults_are_the_tables() -> None:
    """``retry.on`` and ``retry.stop_on`` default to the ``retried`` and ``stop`` columns, in the
    table's order (the order ``policy explain`` names them), and the plan's defaults are the
    schema's."""
    assert (
        Retry().on
        == conduct.DEFAULT_RETRY_ON
        == (
            ErrorKind.RATE_LIMITED,
            ErrorKind.SERVER_ERROR,
            ErrorKind.CONNECTION,
        )
    )
    assert Retry().stop_on == conduct.DEFAULT_STOP_ON == (ErrorKind.CONTENT_FILTER,)
    assert RetryRules().on == frozenset(Retry().on)
    assert RetryRules().stop_on == frozenset(Retry().stop_on)


@pytest.mark.parametrize("kind", CONFIGURABLE)
def test_the_engine_default_conduct_for_each_kind_is_the_tables(kind: ErrorKind) -> None:
    """Under a policy's defaults, a target whose first attempt ends in ``kind`` is retried on the
    same target when the table says ``retried``, otherwise the run fails over to the next target,
    or stops at once when the table says ``stop``."""
    row = CONDUCT[kind]
    sim = simulate(default_plan("a", "b"), REQUEST, {"a": fails_once(kind)})
    called = [action.provider.name for _, action in starts(sim)]
    if row.retried:
        assert called == ["a", "a"] and sim.outcome.provider == "a"
    elif row.stops:
        assert called == ["a"] and not sim.outcome.ok
        assert sim.outcome.error is not None and sim.outcome.error.kind is kind
    else:
        assert row.fails_over
        assert called == ["a", "b"] and sim.outcome.provider == "b"


@pytest.mark.parametrize("kind", sorted(ErrorKind))
def test_the_breaker_counts_exactly_the_breaking_kinds(kind: ErrorKind) -> None:
    """``is_breaking`` is the ``breaking`` column, and only a breaking kind moves a circuit: one
    failure opens a circuit whose threshold is 1, any other leaves it closed."""
    assert is_breaking(kind.value) is CONDUCT[kind].breaking
    assert (kind in BREAKING_KINDS) is CONDUCT[kind].breaking
    after = record(CircuitState(provider="a"), kind.value, 10.0, failure_threshold=1)
    assert (after.state == "open") is CONDUCT[kind].breaking


def test_ok_is_no_kind_and_a_typo_is_an_error() -> None:
    """``"ok"`` has no row (it breaks nothing); a string that is no kind raises."""
    assert conduct.conduct_of("ok") is None
    assert not is_breaking("ok")
    with pytest.raises(ValueError):
        conduct.conduct_of("timed_out")


@pytest.mark.parametrize("kind", [k for k in CONFIGURABLE if not CONDUCT[k].stops])
def test_the_engine_asks_the_breaker_again_after_a_breaking_failure(kind: ErrorKind) -> None:
    """A provider that appears twice in a route: after a breaking failure its circuit is asked
    again before its second target starts (it may have opened); after any other, the first
    answer stands."""
    one_try = TargetPlan(provider=spec("a"), max_attempts=1)
    plan = RunPlan(
        targets=(one_try, one_try), breaker=BreakerRules(enabled=True), retry=RetryRules(on=frozenset())
    )
    sim = simulate(plan, REQUEST, {"a": fails_once(kind)})
    asked = sum(isinstance(s.action, AdmitCircuit) for s in sim.steps)
    assert asked == (2 if CONDUCT[kind].breaking else 1)


def test_sent_kinds_are_the_attempt_kinds() -> None:
    """``errors.ATTEMPT_KINDS`` (which the shell's notices read) is the ``sent`` column, and the
    unsent kinds are the rest."""
    assert ATTEMPT_KINDS == conduct.SENT_KINDS
    assert frozenset(ErrorKind) - conduct.SENT_KINDS == conduct.UNSENT_KINDS
    assert {
        ErrorKind.BUDGET,
        ErrorKind.QUOTA,
        ErrorKind.CIRCUIT_OPEN,
        ErrorKind.UNHEALTHY,
        ErrorKind.UNSUPPORTED,
    } == conduct.UNSENT_KINDS


def test_a_target_skipped_for_an_unsent_kind_leaves_no_attempt() -> None:
    """Budget, open circuit and failed health check: the target is skipped with that kind and
    nothing is recorded, since nothing was sent; the run fails over to the next target."""
    dear, cheap = spec("dear", price=1_000.0), spec("cheap", price=0.001)
    budget = simulate(
        RunPlan(
            targets=(TargetPlan(provider=dear), TargetPlan(provider=cheap)), limits=RunLimits(max_usd=0.01)
        ),
        REQUEST,
        {},
    )
    opened = {"a": CircuitState(provider="a", state="open", consecutive_failures=3, opened_at=0.0)}
    circuit = simulate(
        RunPlan(
            targets=(TargetPlan(provider=spec("a")), TargetPlan(provider=spec("b"))),
            breaker=BreakerRules(enabled=True),
        ),
        REQUEST,
        {},
        circuits=opened,
        start_s=1.0,
    )
    health = simulate(
        RunPlan(
            targets=(TargetPlan(provider=spec("a")), TargetPlan(provider=spec("b"))), check_before_use=True
        ),
        REQUEST,
        {"a": SimProvider(healthy=False)},
    )
    for sim, kind, skipped in (
        (budget, ErrorKind.BUDGET, "dear"),
        (circuit, ErrorKind.CIRCUIT_OPEN, "a"),
        (health, ErrorKind.UNHEALTHY, "a"),
    ):
        assert not CONDUCT[kind].sent and CONDUCT[kind].fails_over
        assert [(s.provider, s.kind) for s in sim.outcome.skipped] == [(skipped, kind)]
        assert all(a.provider != skipped for a in sim.outcome.attempts)
        assert sim.outcome.ok


def test_a_refused_attempt_is_not_recorded() -> None:
    """``quota`` (an attempt the shell could not reserve a cap's share for) was never sent: the
    engine records no attempt for it and moves on to the next target."""
    engine = Engine(
        RunPlan(targets=(TargetPlan(provider=spec("a")), TargetPlan(provider=spec("b")))), REQUEST, seed=0
    )
    first = engine.start(0.0)[0]
    assert isinstance(first, StartAttempt)
    actions = engine.handle(
        AttemptRefused(attempt_id=first.attempt_id, at=0.1, kind=ErrorKind.QUOTA, message="full")
    )
    assert not CONDUCT[ErrorKind.QUOTA].sent
    assert engine.attempts == ()
    assert [a.provider.name for a in actions if isinstance(a, StartAttempt)] == ["b"]


def test_a_cancelled_race_loser_was_sent_and_is_no_failure() -> None:
    """``cancelled`` is sent (the loser of a race is recorded and billed) but no failure: usage
    counts it as a request, not a failure, exactly as the ``failure`` column says."""
    race = RunPlan(
        targets=(TargetPlan(provider=spec("slow")), TargetPlan(provider=spec("quick"))),
        strategy=Strategy.FASTEST,
    )
    sim = simulate(race, REQUEST, {"slow": SimProvider(replies=(SimReply(latency_s=5.0),))})
    outcomes = {a.provider: a.outcome for a in sim.outcome.attempts}
    assert outcomes == {"quick": "ok", "slow": ErrorKind.CANCELLED.value}
    assert CONDUCT[ErrorKind.CANCELLED].sent and not CONDUCT[ErrorKind.CANCELLED].failure


@pytest.mark.parametrize("kind", sorted(conduct.SENT_KINDS))
def test_usage_counts_failures_as_the_table_says(kind: ErrorKind) -> None:
    """An attempt recorded with outcome ``kind`` is a failure in ``rmgr usage`` exactly when the
    ``failure`` column says so (only ``cancelled`` is not)."""
    row = AttemptRow(
        provider="a",
        model="m",
        outcome=kind.value,
        status=None,
        latency_ms=10.0,
        started_at_ms=0,
        input_tokens=1,
        output_tokens=0,
        cost_usd=0.0,
        run_id="r",
    )
    (usage,) = summarize([row])
    assert usage.requests == 1
    assert (usage.failures == 1) is CONDUCT[kind].failure


def test_a_deadline_cuts_a_sent_attempt() -> None:
    """``deadline`` is sent (the attempt running at the deadline is recorded with it) and ends
    the run: nothing follows it."""
    plan = RunPlan(
        targets=(TargetPlan(provider=spec("a")), TargetPlan(provider=spec("b"))),
        limits=RunLimits(deadline_s=1.0),
    )
    sim = simulate(plan, REQUEST, {"a": SimProvider(replies=(SimReply(latency_s=None),))})
    assert [a.outcome for a in sim.outcome.attempts] == [ErrorKind.DEADLINE.value]
    assert sim.outcome.error is not None and sim.outcome.error.kind is ErrorKind.DEADLINE
    assert CONDUCT[ErrorKind.DEADLINE].sent and CONDUCT[ErrorKind.DEADLINE].then is Then.END


@pytest.mark.parametrize("kind", sorted(ErrorKind))
def test_decode_accepts_in_retry_lists_exactly_the_configurable_kinds(kind: ErrorKind) -> None:
    """``retry.on`` may name a kind only when it is the provider's verdict on an attempt
    (``configurable``); the schema's ``NON_ATTEMPT_KINDS`` are the others."""
    text = f'version = 1\n[retry]\non = ["{kind.value}"]\nstop_on = []\n'
    result = decode_policy(text, "p.toml", BUILTIN_NAMES)
    assert isinstance(result, Success) is CONDUCT[kind].configurable
    assert (kind in NON_ATTEMPT_KINDS) is not CONDUCT[kind].configurable
    if isinstance(result, Failure):
        assert result.failure()[0].path == "$.retry.on[0]"


# --- what reads the strategies table ------------------------------------------------------------


def two_targets(strategy: Strategy, first: ProviderSpec, second: ProviderSpec) -> RunPlan:
    return RunPlan(
        targets=(TargetPlan(provider=first, weight=0.001), TargetPlan(provider=second, weight=1_000.0)),
        strategy=strategy,
        hedge_after_s=1.0,
    )


@pytest.mark.parametrize("strategy", sorted(Strategy))
def test_the_engine_runs_targets_as_the_concurrency_says(strategy: Strategy) -> None:
    """Two healthy targets that answer after 3 s: ``one at a time`` starts only the first,
    ``all at once`` both at the start, ``hedged`` the second after ``hedge_after_s``; an
    attempt is ``exclusive`` (its text may be streamed) only when the strategy runs one at a time."""
    slow = {name: SimProvider(replies=(SimReply(latency_s=3.0),)) for name in ("a", "b")}
    sim = simulate(two_targets(strategy, spec("a"), spec("b")), REQUEST, slow)
    times = [at for at, _ in starts(sim)]
    traits = STRATEGIES[strategy]
    match traits.concurrency:
        case Concurrency.ONE:
            assert times == [0.0]
        case Concurrency.ALL:
            assert times == [0.0, 0.0]
        case Concurrency.HEDGED:
            assert times == [0.0, 1.0]
    assert all(action.exclusive is traits.one_at_a_time for _, action in starts(sim))


@pytest.mark.parametrize("strategy", sorted(Strategy))
def test_every_answer_is_kept_or_the_losers_cancelled_as_the_traits_say(strategy: Strategy) -> None:
    """Both targets answer (b later): a strategy that keeps every answer returns both and
    cancels nothing; one that cancels its losers cancels b once a has answered."""
    replies = {
        "a": SimProvider(replies=(SimReply(latency_s=1.0),)),
        "b": SimProvider(replies=(SimReply(latency_s=2.0),)),
    }
    plan = RunPlan(
        targets=(TargetPlan(provider=spec("a")), TargetPlan(provider=spec("b"))), strategy=strategy
    )
    sim = simulate(plan, REQUEST, replies)
    traits = STRATEGIES[strategy]
    cancelled = [s.action for s in sim.steps if isinstance(s.action, CancelAttempt)]
    assert len(sim.outcome.answers) == (2 if traits.keeps_every_answer else 1)
    assert bool(cancelled) is (traits.cancels_losers and traits.concurrency is Concurrency.ALL)


@pytest.mark.parametrize("strategy", [s for s in Strategy if STRATEGIES[s].one_at_a_time])
def test_the_first_target_tried_follows_the_order(strategy: Strategy) -> None:
    """The dear target is written first and weighs almost nothing: ``as written`` tries it
    first, ``cheapest first`` and the weighted draw try the cheap one first."""
    dear, cheap = spec("dear", price=100.0), spec("cheap", price=0.1)
    for seed in range(5):
        engine = Engine(two_targets(strategy, dear, cheap), REQUEST, seed=seed)
        first = next(a for a in engine.start(0.0) if isinstance(a, StartAttempt))
        expected = "dear" if STRATEGIES[strategy].order is Order.WRITTEN else "cheap"
        assert first.provider.name == expected


def test_a_nested_route_takes_its_traits_from_its_own_strategy() -> None:
    """A nested ``fastest`` route under a ``sequential`` one starts both of its targets at once,
    and its attempts are not exclusive; the table is read per route, not per run."""
    inner = RoutePlan(
        strategy=Strategy.FASTEST, targets=(TargetPlan(provider=spec("a")), TargetPlan(provider=spec("b")))
    )
    plan = RunPlan(targets=(inner, TargetPlan(provider=spec("c"))))
    engine = Engine(plan, REQUEST, seed=0)
    started = [a for a in engine.start(0.0) if isinstance(a, StartAttempt)]
    assert [(a.provider.name, a.exclusive) for a in started] == [("a", False), ("b", False)]
    assert not any(isinstance(a, Finish) for a in started)


@pytest.mark.parametrize("strategy", sorted(Strategy))
def test_explain_says_each_strategy_in_the_tables_words(strategy: Strategy) -> None:
    """``policy explain`` describes the route with the strategy's words from the table."""
    text = f'version = 1\n[route]\nstrategy = "{strategy.value}"\nhedge_after_s = 3\n'
    policy = decode_policy(text, "p.toml", BUILTIN_NAMES).unwrap()
    words = STRATEGIES[strategy].words.format(wait="3 s")
    assert f"Route ({strategy.value}): {words}." in explain(policy, {})
