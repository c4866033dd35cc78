"""The engine's strategies, nested to any depth: hypothesis properties of its invariants over
random route trees and provider behaviours, and examples of each strategy's conduct.

Every property drives ``rmcore.simulate.simulate`` (the engine on a virtual clock, attempts run
concurrently where the route says so) and checks the decision trace it returns. The plans are
random trees up to three levels deep mixing every strategy; a provider may appear in several
places; providers answer, fail with any attempt kind (with or without Retry-After) or never
answer; breakers are on or off, and each provider's circuit may start closed, open or half-open.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Iterator
from typing import TypeVar

from hypothesis import given, settings
from hypothesis import strategies as st

from rmcore.breaker import CircuitState, admit, record
from rmcore.completion import Usage
from rmcore.errors import ErrorKind
from rmcore.events import (
    AdmitCircuit,
    AttemptFailed,
    AttemptSucceeded,
    CancelAttempt,
    Finish,
    StartAttempt,
    TargetSkipped,
)
from rmcore.plan import BreakerRules, RetryRules, RoutePlan, RunLimits, RunPlan, TargetPlan, leaves
from rmcore.policy.schema import NON_ATTEMPT_KINDS, Strategy
from rmcore.pricing import cost_usd, estimate_prompt_tokens, worst_case_usd
from rmcore.providers import ProviderSpec
from rmcore.requests import ChatRequest
from rmcore.simulate import SimProvider, SimReply, Simulation, simulate
from tests.core.helpers import spec, target

T = TypeVar("T")

START_S = 1_000.0
NAMES = ("a", "b", "c", "d")
EPS = 1e-9
USD_EPS = 1e-12
REQUEST = ChatRequest.ask("Should we migrate to Kubernetes?", max_tokens=100)

# Kinds a provider can end an attempt with (the others describe runs or skipped targets), and
# those a random policy may list in ``retry.on``.
FAIL_KINDS = sorted(k for k in ErrorKind if k not in NON_ATTEMPT_KINDS)
RETRY_ON_CHOICES = sorted(k for k in FAIL_KINDS if k is not ErrorKind.CONTENT_FILTER)


def answers_after(latency_s: float | None) -> SimProvider:
    return SimProvider(replies=(SimReply(latency_s=latency_s),))


def fails(kind: ErrorKind, latency_s: float = 0.01, times: int | None = None) -> SimProvider:
    """Fails with ``kind`` after ``latency_s``: ``times`` times, then answers; forever when None."""
    failure = SimReply(latency_s=latency_s, kind=kind)
    if times is None:
        return SimProvider(replies=(failure,))
    return SimProvider(replies=(*(failure,) * times, SimReply(latency_s=0.2)))


# --- the trace, read back -------------------------------------------------------------------------


def starts(sim: Simulation) -> list[tuple[float, StartAttempt]]:
    return [(s.at, s.action) for s in sim.steps if isinstance(s.action, StartAttempt)]


def ends(sim: Simulation) -> list[tuple[float, AttemptSucceeded | AttemptFailed]]:
    return [(s.at, s.event) for s in sim.steps if isinstance(s.event, AttemptSucceeded | AttemptFailed)]


def cancels(sim: Simulation) -> list[tuple[float, CancelAttempt]]:
    return [(s.at, s.action) for s in sim.steps if isinstance(s.action, CancelAttempt)]


def provider_of(sim: Simulation) -> dict[int, str]:
    return {a.attempt_id: a.provider.name for _, a in starts(sim)}


def routes_of(route: RoutePlan) -> Iterator[RoutePlan]:
    yield route
    for t in route.targets:
        if isinstance(t, RoutePlan):
            yield from routes_of(t)


def strategies_in(run_plan: RunPlan) -> set[Strategy]:
    return {r.strategy for r in routes_of(run_plan.route)}


# --- generators -----------------------------------------------------------------------------------


def mostly(usual: st.SearchStrategy[T], rare: st.SearchStrategy[T], odds: int = 3) -> st.SearchStrategy[T]:
    """``usual`` about ``odds`` times as often as ``rare``."""
    return st.one_of(*(usual,) * odds, rare)


replies = st.builds(
    SimReply,
    # Mostly prompt answers; sometimes slow, sometimes never.
    latency_s=mostly(st.floats(min_value=0.0, max_value=2.0), st.one_of(st.none(), st.floats(0.0, 20.0))),
    # Half answer; the failures favour the kinds retried by default, so retries happen.
    kind=st.one_of(
        st.none(), st.none(), st.sampled_from(sorted(RetryRules().on)), st.sampled_from(FAIL_KINDS)
    ),
    retry_after_s=mostly(st.none(), st.floats(min_value=0.0, max_value=30.0)),
    output_tokens=st.one_of(st.none(), st.integers(min_value=0, max_value=3_000)),
)
sim_providers = st.builds(
    SimProvider,
    replies=st.lists(replies, min_size=1, max_size=4).map(tuple),
    healthy=mostly(st.just(True), st.just(False), odds=5),
)
strategies = st.sampled_from(list(Strategy))
BREAKERS_ON_OR_OFF = st.booleans()


@st.composite
def route_trees(
    draw: st.DrawFn,
    specs: dict[str, ProviderSpec],
    depth: int = 1,
    max_depth: int = 3,
    width: tuple[int, int] = (1, 3),
) -> RoutePlan:
    """A route of ``depth`` (1 is the top) with ``width`` targets that are providers or, above
    ``max_depth``, nested routes; every strategy, weight, hedge delay, attempt limit and timeout
    is random."""
    children: list[TargetPlan | RoutePlan] = []
    for _ in range(draw(st.integers(*width))):
        if depth < max_depth and draw(st.integers(min_value=0, max_value=2)) == 0:
            children.append(draw(route_trees(specs, depth + 1, max_depth)))
        else:
            children.append(
                TargetPlan(
                    provider=specs[draw(st.sampled_from(sorted(specs)))],
                    attempt_timeout_s=draw(mostly(st.floats(1.0, 30.0), st.floats(0.05, 1.0))),
                    max_attempts=draw(st.integers(min_value=1, max_value=4)),
                    weight=draw(st.floats(min_value=0.1, max_value=10.0)),
                )
            )
    return RoutePlan(
        strategy=draw(strategies),
        targets=tuple(children),
        hedge_after_s=draw(mostly(st.floats(0.01, 2.0), st.floats(2.0, 10.0))),
        weight=draw(st.floats(min_value=0.1, max_value=10.0)),
    )


@st.composite
def prior_circuits(draw: st.DrawFn, names: list[str], cooldown_s: float) -> dict[str, CircuitState]:
    """Each provider's circuit before the run: absent (closed), closed with some failures, open
    (cooled down or not yet), or half-open with its probe running or given up."""
    book: dict[str, CircuitState] = {}
    for name in names:
        phase = draw(st.sampled_from(["absent", "absent", "absent", "closed", "open", "half_open"]))
        if phase == "closed":
            book[name] = CircuitState(provider=name, consecutive_failures=draw(st.integers(0, 5)))
        elif phase == "open":
            book[name] = CircuitState(
                provider=name,
                state="open",
                consecutive_failures=draw(st.integers(1, 5)),
                opened_at=START_S - draw(st.floats(min_value=0.0, max_value=2 * cooldown_s + 1.0)),
            )
        elif phase == "half_open":
            probe_at = START_S - draw(st.floats(min_value=0.0, max_value=60.0))
            book[name] = CircuitState(
                provider=name,
                state="half_open",
                consecutive_failures=draw(st.integers(1, 5)),
                opened_at=probe_at - cooldown_s,
                probe_started_at=probe_at,
            )
    return book


class Scenario:
    """One random run: the plan, the request, the providers, the seed, the prior circuits and
    what was spent of the budget before."""

    def __init__(
        self,
        plan: RunPlan,
        request: ChatRequest,
        providers: dict[str, SimProvider],
        seed: int,
        circuits: dict[str, CircuitState],
        spent_usd: float,
    ) -> None:
        self.plan = plan
        self.request = request
        self.providers = providers
        self.seed = seed
        self.circuits = circuits
        self.spent_usd = spent_usd

    def run(self) -> Simulation:
        return simulate(
            self.plan,
            self.request,
            self.providers,
            seed=self.seed,
            circuits=self.circuits,
            start_s=START_S,
            spent_usd=self.spent_usd,
        )

    def __repr__(self) -> str:
        return (
            f"Scenario(plan={self.plan!r}, request={self.request!r}, providers={self.providers!r}, "
            f"seed={self.seed}, circuits={self.circuits!r}, spent_usd={self.spent_usd!r})"
        )


@st.composite
def scenarios(
    draw: st.DrawFn,
    top: st.SearchStrategy[Strategy] = strategies,
    max_depth: int = 3,
    width: tuple[int, int] = (1, 3),
    breakers: st.SearchStrategy[bool] = BREAKERS_ON_OR_OFF,
) -> Scenario:
    """A random run whose top route is drawn from ``top``, ``max_depth`` levels at most, the
    top route ``width`` targets wide, breakers on or off as ``breakers`` says."""
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=4, unique=True))
    price = st.one_of(st.just(0.0), st.floats(min_value=0.01, max_value=30.0))
    specs = {n: spec(n, draw(price)) for n in names}
    root = draw(route_trees(specs, max_depth=max_depth, width=width))
    breaker = BreakerRules(
        enabled=draw(breakers),
        failure_threshold=draw(st.integers(1, 4)),
        cooldown_s=draw(st.floats(min_value=0.0, max_value=60.0)),
    )
    request = ChatRequest.ask(draw(st.text(max_size=80)), max_tokens=draw(st.integers(1, 2_000)))
    dearest = max(worst_case_usd(request, p) for p in specs.values())
    # A generous budget, or one of a few worst cases, where what running attempts may still cost
    # decides whether another can start.
    max_usd = draw(
        st.one_of(st.just(1.0), st.floats(0.0, 3.0).map(lambda k: k * dearest), st.floats(0.0, 0.1))
    )
    run_plan = RunPlan(
        targets=root.targets,
        strategy=draw(top),
        hedge_after_s=root.hedge_after_s,
        limits=RunLimits(
            deadline_s=draw(mostly(st.floats(5.0, 60.0), st.floats(0.05, 5.0))), max_usd=max_usd
        ),
        retry=RetryRules(
            on=draw(
                mostly(st.just(RetryRules().on), st.frozensets(st.sampled_from(RETRY_ON_CHOICES)), odds=1)
            ),
            stop_on=frozenset(draw(st.lists(st.sampled_from(FAIL_KINDS), max_size=1))),
            backoff_initial_s=draw(st.floats(min_value=0.0, max_value=2.0)),
            backoff_max_s=draw(st.floats(min_value=0.0, max_value=5.0)),
            budget_ratio=draw(st.one_of(st.just(0.0), st.floats(min_value=0.0, max_value=1.0))),
            budget_floor=draw(st.integers(0, 3)),
        ),
        breaker=breaker,
        check_before_use=draw(st.integers(0, 4)) == 0,
    )
    providers = {n: draw(sim_providers) for n in names}
    circuits = draw(prior_circuits(names, breaker.cooldown_s))
    spent = draw(st.one_of(st.just(0.0), st.floats(min_value=0.0, max_value=max_usd)))
    return Scenario(run_plan, request, providers, draw(st.integers(0, 2**32)), circuits, spent)


PROPERTY = settings(max_examples=200, deadline=None)


# --- properties -----------------------------------------------------------------------------------


@PROPERTY
@given(scenarios())
def test_every_run_terminates_with_one_finish(s: Scenario) -> None:
    """Whatever the tree and the providers, the run ends: exactly one ``Finish``, as the last step,
    within the deadline; a run that failed on its deadline had something running until then."""
    sim = s.run()
    finishes = [i for i, step in enumerate(sim.steps) if isinstance(step.action, Finish)]
    assert finishes == [len(sim.steps) - 1]
    assert sim.elapsed_s <= s.plan.limits.deadline_s + EPS
    error = sim.outcome.error
    if error is not None and error.kind is ErrorKind.DEADLINE:
        deadline_at = START_S + s.plan.limits.deadline_s
        at_deadline = [at for at, _ in ends(sim)] + [at for at, _ in cancels(sim)]
        assert any(math.isclose(at, deadline_at, abs_tol=1e-6) for at in at_deadline)


@PROPERTY
@given(scenarios(breakers=st.booleans() | st.just(True)))
def test_no_request_goes_to_an_open_circuit_but_the_one_probe(s: Scenario) -> None:
    """With breakers on, a provider whose circuit (as it stood before the run) is open and not yet
    cooled down at the start gets no call while it stays so (at most the one probe, should the
    cooldown end during the run); one cooled down gets at most that one probe, retries included.
    Precisely: refused when the run first asks its breaker, no call; admitted as the probe, at
    most one. With breakers off, no circuit is consulted at all."""
    sim = s.run()
    asks = [
        (step.at, step.action.provider.name) for step in sim.steps if isinstance(step.action, AdmitCircuit)
    ]
    if not s.plan.breaker.enabled:
        assert asks == []
        return
    probe_timeout = max(t.attempt_timeout_s for t in leaves(s.plan))
    first_ask: dict[str, float] = {}
    for at, name in asks:
        first_ask.setdefault(name, at)
    end = START_S + sim.elapsed_s
    for name, state in s.circuits.items():
        calls = sim.calls.get(name, 0)
        at_start = admit(state, START_S, cooldown_s=s.plan.breaker.cooldown_s, probe_timeout_s=probe_timeout)
        if state.state != "closed":
            assert calls <= 1, f"{name}'s circuit was {state.state}, yet it got {calls} calls"
        if at_start.retry_at is not None and at_start.retry_at > end:
            assert calls == 0, f"{name}'s circuit was open throughout the run, yet it was called"
        if name not in first_ask:
            assert calls == 0, f"{name} was called without asking its breaker"
            continue
        decision = admit(
            state, first_ask[name], cooldown_s=s.plan.breaker.cooldown_s, probe_timeout_s=probe_timeout
        ).decision
        if decision == "refused":
            assert calls == 0, f"{name}'s circuit was open, yet it was called"
        elif decision == "probe":
            assert calls <= 1, f"{name} got more than its one half-open probe"


@PROPERTY
@given(scenarios())
def test_budget_deadline_attempts_and_retry_budget_are_never_exceeded(s: Scenario) -> None:
    """No attempt starts whose worst case exceeds what is left of ``max_usd`` (spent before,
    settled and reserved by running attempts counted), so the run never costs more than that;
    no attempt runs past the deadline; each target is tried at most its ``max_attempts`` times;
    retries never exceed ``budget_floor + budget_ratio * first attempts``."""
    sim = s.run()
    plan, limits = s.plan, s.plan.limits
    assert sim.outcome.cost_usd <= limits.max_usd - s.spent_usd + USD_EPS
    # Replay the budget as the engine must see it at each start.
    specs = {t.provider.name: t.provider for t in leaves(plan)}
    who = provider_of(sim)
    reserved: dict[int, float] = {}
    settled = 0.0
    for step in sim.steps:
        match step.action, step.event:
            case StartAttempt() as a, _:
                worst = worst_case_usd(s.request, a.provider)
                left = limits.max_usd - s.spent_usd - settled - sum(reserved.values())
                assert worst <= left + USD_EPS, f"{a.provider.name} started over budget"
                assert step.at + a.timeout_s <= START_S + limits.deadline_s + EPS
                reserved[a.attempt_id] = worst
            case CancelAttempt() as c, _:
                reserved.pop(c.attempt_id)
                prompt = Usage(input_tokens=estimate_prompt_tokens(s.request), estimated=True)
                settled += cost_usd(prompt, specs[who[c.attempt_id]])
            case _, AttemptSucceeded() as ok:
                reserved.pop(ok.attempt_id)
                settled += cost_usd(ok.completion.usage, specs[who[ok.attempt_id]])
            case _, AttemptFailed() as failed:
                reserved.pop(failed.attempt_id)
    # max_attempts: the k-th attempt of provider p can only come from a target of p allowing k.
    allowing: Counter[tuple[str, int]] = Counter()
    for t in leaves(plan):
        for k in range(1, t.max_attempts + 1):
            allowing[(t.provider.name, k)] += 1
    made = Counter((a.provider.name, a.attempt_no) for _, a in starts(sim))
    for key, count in made.items():
        assert count <= allowing[key], f"attempt {key[1]} of {key[0]} exceeds max_attempts"
    firsts = sum(1 for _, a in starts(sim) if a.attempt_no == 1)
    retries = sum(1 for _, a in starts(sim) if a.attempt_no > 1)
    assert retries <= plan.retry.budget_floor + plan.retry.budget_ratio * firsts + EPS


@PROPERTY
@given(scenarios())
def test_cost_is_the_sum_of_attempts_each_with_exactly_one_outcome(s: Scenario) -> None:
    """Every attempt started ends exactly once (its end event or a cancellation, never both),
    before ``Finish``; there is one record per attempt and the run's cost is their sum;
    cancelled attempts are recorded as ``cancelled`` (``deadline`` when the deadline cancelled
    them) and carry the prompt's estimated cost."""
    sim = s.run()
    outcome = sim.outcome
    started = [a.attempt_id for _, a in starts(sim)]
    assert len(started) == len(set(started)) == len(outcome.attempts)
    closed = Counter([e.attempt_id for _, e in ends(sim)] + [c.attempt_id for _, c in cancels(sim)])
    assert all(closed[i] == 1 for i in started) and set(closed) == set(started)
    assert math.isclose(outcome.cost_usd, math.fsum(a.cost_usd for a in outcome.attempts), abs_tol=USD_EPS)
    kinds = {"ok"} | {k.value for k in ErrorKind}
    assert all(a.outcome in kinds for a in outcome.attempts)
    cancelled = [c for _, c in cancels(sim) if c.reason is ErrorKind.CANCELLED]
    records = [a for a in outcome.attempts if a.outcome == "cancelled"]
    assert len(records) == len(cancelled)
    specs = {t.provider.name: t.provider for t in leaves(s.plan)}
    for r in records:
        assert r.usage.estimated and r.usage.input_tokens == estimate_prompt_tokens(s.request)
        if specs[r.provider].input_usd_per_mtok > 0:
            assert r.cost_usd > 0
    assert outcome.ok == (outcome.completion is not None) == (outcome.error is None)


@PROPERTY
@given(scenarios())
def test_the_first_answer_wins_and_no_answer_is_ignored(s: Scenario) -> None:
    """The winning answer is the first that arrived, whatever the tree (races and hedges
    included); an answer that arrived is never dropped unless a ``stop_on`` failure ended the
    run; without ``compare`` in the tree, nothing is started after the first answer and nothing
    is left running."""
    sim = s.run()
    outcome = sim.outcome
    successes = [e for _, e in ends(sim) if isinstance(e, AttemptSucceeded)]
    stopped = any(isinstance(e, AttemptFailed) and e.error.kind in s.plan.retry.stop_on for _, e in ends(sim))
    if not successes:
        assert not outcome.ok
        return
    if stopped and not outcome.ok:
        return
    assert outcome.ok, f"an answer arrived but the run failed: {outcome.error}"
    assert outcome.completion == successes[0].completion
    assert outcome.provider == provider_of(sim)[successes[0].attempt_id]
    if Strategy.COMPARE not in strategies_in(s.plan):
        assert len(successes) == 1 and len(outcome.answers) == 1
        index = next(i for i, step in enumerate(sim.steps) if step.event == successes[0])
        assert not any(isinstance(step.action, StartAttempt) for step in sim.steps[index:])


@PROPERTY
@given(scenarios(top=st.just(Strategy.COMPARE), max_depth=1))
def test_compare_returns_every_answer_that_arrived(s: Scenario) -> None:
    """A ``compare`` route keeps every answer: unless a ``stop_on`` failure ended the run, the
    answers are exactly the attempts that ended ``ok``, in the order they arrived."""
    sim = s.run()
    outcome = sim.outcome
    ok = [e for _, e in ends(sim) if isinstance(e, AttemptSucceeded)]
    stopped = any(isinstance(e, AttemptFailed) and e.error.kind in s.plan.retry.stop_on for _, e in ends(sim))
    if stopped:
        return
    assert outcome.ok == bool(ok)
    assert [a.completion for a in outcome.answers] == [e.completion for e in ok]
    assert len(outcome.answers) == sum(1 for a in outcome.attempts if a.outcome == "ok")


@PROPERTY
@given(scenarios(top=st.just(Strategy.CHEAPEST), max_depth=1))
def test_cheapest_goes_up_the_price_list_within_budget(s: Scenario) -> None:
    """A flat ``cheapest`` route tries its targets in non-decreasing order of worst-case cost,
    and starts none whose worst case exceeds what is left of the budget."""
    sim = s.run()
    firsts = [a for _, a in starts(sim) if a.attempt_no == 1]
    costs = [worst_case_usd(s.request, a.provider) for a in firsts]
    assert costs == sorted(costs)
    limit = s.plan.limits.max_usd - s.spent_usd
    assert all(c <= limit + USD_EPS for c in costs)


@PROPERTY
@given(scenarios(top=st.just(Strategy.HEDGED), max_depth=1, width=(3, 4)))
def test_hedged_starts_each_target_on_time(s: Scenario) -> None:
    """A flat ``hedged`` route starts its next target exactly when it should: not before
    ``hedge_after_s`` has passed since the previous target started, unless a target failed or
    was skipped at that moment (a hedge that waited for room in the budget starts when a
    failure makes room, and the delay restarts then); and, when the budget holds every target
    at once (so none waits), never later, while targets remain to be tried."""
    sim = s.run()
    h = s.plan.hedge_after_s
    firsts = [at for at, a in starts(sim) if a.attempt_no == 1]
    ended_at = {at for at, e in ends(sim) if isinstance(e, AttemptFailed)}
    ended_at |= {step.at for step in sim.steps if isinstance(step.action, TargetSkipped)}
    for prev, at in itertools.pairwise(firsts):
        assert at >= prev + h - EPS or at in ended_at, f"hedged at {at - START_S} s, {at - prev} s after"
    untried = len(s.plan.targets) - len(firsts) - len(sim.outcome.skipped)
    room = s.plan.limits.max_usd - s.spent_usd
    none_wait = sum(worst_case_usd(s.request, t.provider) for t in leaves(s.plan)) <= room - USD_EPS
    if firsts and untried > 0 and none_wait:
        assert sim.elapsed_s <= firsts[-1] - START_S + h + EPS, "a hedge was due but never started"


@PROPERTY
@given(scenarios(top=st.just(Strategy.WEIGHTED)))
def test_the_same_seed_gives_the_same_run(s: Scenario) -> None:
    """The engine draws nothing of its own: the same scenario and seed replay step for step
    (weighted orders and backoff jitter included)."""
    assert s.run().steps == s.run().steps


@PROPERTY
@given(scenarios(max_depth=2))
def test_no_second_target_of_a_provider_starts_after_its_circuit_opened(s: Scenario) -> None:
    """A provider may appear several times in a tree. Once its circuit has opened during the run
    (breaking failures reached the threshold), no further target of it is started: the engine
    asks the breaker again instead of trusting an earlier ``allowed``."""
    if not s.plan.breaker.enabled:
        return
    sim = s.run()
    who = provider_of(sim)
    book = dict(s.circuits)
    probe_timeout = max(t.attempt_timeout_s for t in leaves(s.plan))
    for step in sim.steps:
        if isinstance(step.event, AttemptSucceeded | AttemptFailed):
            name = who[step.event.attempt_id]
            kind = step.event.error.kind.value if isinstance(step.event, AttemptFailed) else "ok"
            state = book.get(name, CircuitState(provider=name))
            book[name] = record(state, kind, step.at, failure_threshold=s.plan.breaker.failure_threshold)
        elif isinstance(step.action, AdmitCircuit):
            name = step.action.provider.name
            state = book.get(name, CircuitState(provider=name))
            book[name] = admit(
                state, step.at, cooldown_s=s.plan.breaker.cooldown_s, probe_timeout_s=probe_timeout
            ).state
        elif isinstance(step.action, StartAttempt) and step.action.attempt_no == 1:
            name = step.action.provider.name
            phase = book.get(name, CircuitState(provider=name)).state
            assert phase != "open", f"a new target of {name} started while its circuit was open"


# --- weighted: the first choice follows the weights ----------------------------------------------


def test_weighted_first_choice_follows_the_weights() -> None:
    """Over many seeds, how often each target is tried first is near its share of the weights
    (weights 1, 2, 3, 4 give 10 %, 20 %, 30 %, 40 %; tolerance 4 points over 2000 runs)."""
    weights = {"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0}
    p = RunPlan(
        strategy=Strategy.WEIGHTED,
        targets=tuple(target(n, weight=w) for n, w in weights.items()),
    )
    runs = 2000
    first = Counter(starts(simulate(p, REQUEST, {}, seed=seed))[0][1].provider.name for seed in range(runs))
    total = sum(weights.values())
    for name, w in weights.items():
        assert abs(first[name] / runs - w / total) < 0.04, (name, first[name])


def test_weighted_orders_differ_between_seeds_and_cover_every_target() -> None:
    """Weighted is a random order, not a fixed one: failing providers are walked in an order
    that changes with the seed, every target tried once."""
    p = RunPlan(strategy=Strategy.WEIGHTED, targets=tuple(target(n, max_attempts=1) for n in NAMES))
    broken = {n: fails(ErrorKind.AUTH) for n in NAMES}
    orders = {
        tuple(a.provider.name for _, a in starts(simulate(p, REQUEST, broken, seed=i))) for i in range(40)
    }
    assert len(orders) > 5
    assert all(sorted(o) == sorted(NAMES) for o in orders)


# --- examples -------------------------------------------------------------------------------------


def test_fastest_answers_from_the_quick_provider_and_cancels_the_slow_one() -> None:
    """fastest over a 5 s provider and a 0.1 s one answers at 0.1 s from the quick one; the slow
    attempt is cancelled then, recorded as ``cancelled`` with the prompt's estimated cost."""
    p = RunPlan(strategy=Strategy.FASTEST, targets=(target("slow"), target("quick")))
    sim = simulate(p, REQUEST, {"slow": answers_after(5.0), "quick": answers_after(0.1)})
    assert sim.outcome.provider == "quick"
    assert math.isclose(sim.elapsed_s, 0.1)
    [(at, cancel)] = cancels(sim)
    assert math.isclose(at, 0.1) and cancel.reason is ErrorKind.CANCELLED
    assert provider_of(sim)[cancel.attempt_id] == "slow"
    slow = next(a for a in sim.outcome.attempts if a.provider == "slow")
    assert slow.outcome == "cancelled" and slow.cost_usd > 0
    assert all(not a.exclusive for _, a in starts(sim)), "racing attempts must not stream to the user"


def test_hedged_starts_the_second_after_hedge_after_s_and_takes_its_answer() -> None:
    """hedged with hedge_after_s=0.3 against a 5 s primary starts the second target at 0.3 s and
    answers from it shortly after (0.4 s), cancelling the primary."""
    p = RunPlan(strategy=Strategy.HEDGED, hedge_after_s=0.3, targets=(target("primary"), target("second")))
    sim = simulate(p, REQUEST, {"primary": answers_after(5.0), "second": answers_after(0.1)})
    [(t0, first), (t1, hedge)] = starts(sim)
    assert (t0, first.provider.name) == (0.0, "primary")
    assert hedge.provider.name == "second" and math.isclose(t1, 0.3)
    assert sim.outcome.provider == "second" and math.isclose(sim.elapsed_s, 0.4)
    assert [provider_of(sim)[c.attempt_id] for _, c in cancels(sim)] == ["primary"]


def test_hedged_does_not_hedge_when_the_primary_answers_in_time() -> None:
    """A primary that answers before hedge_after_s is the only request sent."""
    p = RunPlan(strategy=Strategy.HEDGED, hedge_after_s=1.0, targets=(target("primary"), target("second")))
    sim = simulate(p, REQUEST, {"primary": answers_after(0.5)})
    assert sim.calls == {"primary": 1} and cancels(sim) == []


def test_hedged_restarts_its_timer_when_a_failure_starts_the_next_target() -> None:
    """A failure starts the next target at once; the one after it is hedged only hedge_after_s
    after that start, not on the timer armed for the failed one."""
    p = RunPlan(
        strategy=Strategy.HEDGED,
        hedge_after_s=1.0,
        targets=(target("a", max_attempts=1), target("b"), target("c")),
    )
    sim = simulate(p, REQUEST, {"a": fails(ErrorKind.AUTH, latency_s=0.6), "b": answers_after(1.2)})
    assert [(round(at, 6), a.provider.name) for at, a in starts(sim)] == [(0.0, "a"), (0.6, "b"), (1.6, "c")]
    assert sim.outcome.provider == "b" and math.isclose(sim.elapsed_s, 1.8)


def breaker_plan(**limits: float) -> RunPlan:
    return RunPlan(
        targets=(target("flaky", max_attempts=3), target("steady")),
        retry=RetryRules(on=frozenset({ErrorKind.SERVER_ERROR}), backoff_initial_s=0.0),
        breaker=BreakerRules(enabled=True, failure_threshold=3, cooldown_s=30.0),
        limits=RunLimits(**limits),
    )


def test_three_failures_open_the_circuit_the_next_run_skips_it_and_after_cooldown_one_probe() -> None:
    """A provider failing 3 times (threshold 3) opens its circuit; the next run, 10 s later,
    fails over to the next target without calling it; after the 30 s cooldown exactly one probe
    goes out, and its answer closes the circuit."""
    providers = {"flaky": fails(ErrorKind.SERVER_ERROR, times=4)}
    first = simulate(breaker_plan(), REQUEST, providers, start_s=START_S)
    assert first.calls == {"flaky": 3, "steady": 1} and first.outcome.provider == "steady"
    assert first.circuits["flaky"].state == "open"

    second = simulate(
        breaker_plan(),
        REQUEST,
        providers,
        circuits=first.circuits,
        calls_before=first.calls,
        start_s=START_S + 10.0,
    )
    assert "flaky" not in second.calls and second.outcome.provider == "steady"
    [skipped] = second.outcome.skipped
    assert skipped.provider == "flaky" and skipped.kind is ErrorKind.CIRCUIT_OPEN
    assert "probed in 20 s" in skipped.message

    calls = Counter(first.calls) + Counter(second.calls)
    third = simulate(
        breaker_plan(),
        REQUEST,
        providers,
        circuits=second.circuits,
        calls_before=calls,
        start_s=START_S + 40.0,
    )
    # The 4th reply still fails: the probe is not retried, and the circuit reopens.
    assert third.calls == {"flaky": 1, "steady": 1}
    assert third.circuits["flaky"].state == "open"

    calls += Counter(third.calls)
    fourth = simulate(
        breaker_plan(),
        REQUEST,
        providers,
        circuits=third.circuits,
        calls_before=calls,
        start_s=START_S + 80.0,
    )
    assert fourth.calls == {"flaky": 1} and fourth.outcome.provider == "flaky"
    assert fourth.circuits["flaky"] == CircuitState(provider="flaky")


def test_every_circuit_open_fails_at_once_saying_when_the_first_is_probed() -> None:
    """When every target's circuit is open the run fails at once with ``circuit_open``, no
    request sent, and the message says when the first will be probed."""
    p = breaker_plan()
    circuits = {
        "flaky": CircuitState(provider="flaky", state="open", consecutive_failures=3, opened_at=START_S - 5),
        "steady": CircuitState(
            provider="steady", state="open", consecutive_failures=3, opened_at=START_S - 18
        ),
    }
    sim = simulate(p, REQUEST, {}, circuits=circuits, start_s=START_S)
    assert sim.calls == {} and sim.elapsed_s == 0.0
    error = sim.outcome.error
    assert error is not None and error.kind is ErrorKind.CIRCUIT_OPEN
    assert "flaky" in error.message and "steady" in error.message
    assert "first will be probed in 12 s" in error.message


def test_a_provider_twice_in_a_tree_is_not_called_again_once_its_circuit_opened() -> None:
    """sequential [a, b, a] with threshold 2: a's two failures open its circuit, b fails, and
    the second a is skipped as ``circuit_open`` instead of being called while open."""
    p = RunPlan(
        targets=(target("a", max_attempts=2), target("b", max_attempts=1), target("a", max_attempts=2)),
        retry=RetryRules(on=frozenset({ErrorKind.SERVER_ERROR}), backoff_initial_s=0.0),
        breaker=BreakerRules(enabled=True, failure_threshold=2, cooldown_s=30.0),
    )
    sim = simulate(p, REQUEST, {"a": fails(ErrorKind.SERVER_ERROR), "b": fails(ErrorKind.AUTH)})
    assert sim.calls == {"a": 2, "b": 1}
    assert [sk.kind for sk in sim.outcome.skipped] == [ErrorKind.CIRCUIT_OPEN]


def nested_plan() -> RunPlan:
    race = RoutePlan(
        strategy=Strategy.FASTEST, targets=(target("premium-1", 10.0), target("premium-2", 15.0))
    )
    return RunPlan(targets=(race, target("cheap", 0.1)))


def test_nested_race_of_premiums_wins_with_the_quicker_premium() -> None:
    """sequential [fastest [premium-1, premium-2], cheap]: the quicker premium answers, the other
    is cancelled and the cheap fallback is never called."""
    sim = simulate(nested_plan(), REQUEST, {"premium-1": answers_after(0.8), "premium-2": answers_after(0.3)})
    assert sim.outcome.provider == "premium-2"
    assert "cheap" not in sim.calls
    assert [provider_of(sim)[c.attempt_id] for _, c in cancels(sim)] == ["premium-1"]


def test_nested_race_of_premiums_falls_back_to_the_cheap_provider() -> None:
    """sequential [fastest [premium-1, premium-2], cheap]: when both premiums fail for good the
    cheap provider is called, once, after the last premium failed."""
    sim = simulate(
        nested_plan(),
        REQUEST,
        {"premium-1": fails(ErrorKind.AUTH, latency_s=0.2), "premium-2": fails(ErrorKind.OVERLOADED, 0.5)},
    )
    assert sim.outcome.provider == "cheap" and sim.outcome.fallback_used
    assert sim.calls == {"premium-1": 1, "premium-2": 1, "cheap": 1}
    [(at, cheap)] = [(at, a) for at, a in starts(sim) if a.provider.name == "cheap"]
    assert math.isclose(at, 0.5)
    assert cheap.exclusive is True, "the fallback runs alone once the race is over: it may stream"
    race = [a for _, a in starts(sim) if a.provider.name.startswith("premium")]
    assert all(not a.exclusive for a in race)


def test_compare_at_the_deadline_keeps_the_answers_that_arrived() -> None:
    """compare over a quick provider and one that never answers: at the deadline the silent one
    is given up and the run returns the answer that did arrive instead of failing."""
    p = RunPlan(
        strategy=Strategy.COMPARE,
        targets=(target("quick"), target("silent")),
        limits=RunLimits(deadline_s=2.0),
    )
    sim = simulate(p, REQUEST, {"quick": answers_after(0.2), "silent": answers_after(None)})
    assert sim.outcome.ok and [a.provider for a in sim.outcome.answers] == ["quick"]
    assert math.isclose(sim.elapsed_s, 2.0)
    assert {a.provider: a.outcome for a in sim.outcome.attempts} == {"quick": "ok", "silent": "deadline"}


def test_a_race_inside_compare_cancels_its_loser_when_it_is_won() -> None:
    """compare [fastest [a, b], c]: the race is won by a at 0.1 s and b is cancelled then, while
    compare still waits for c; the answers are a's and c's, never b's."""
    race = RoutePlan(strategy=Strategy.FASTEST, targets=(target("a"), target("b")))
    p = RunPlan(strategy=Strategy.COMPARE, targets=(race, target("c")))
    sim = simulate(p, REQUEST, {"a": answers_after(0.1), "b": answers_after(1.0), "c": answers_after(2.0)})
    [(at, cancel)] = cancels(sim)
    assert math.isclose(at, 0.1) and provider_of(sim)[cancel.attempt_id] == "b"
    assert [a.provider for a in sim.outcome.answers] == ["a", "c"]
    assert math.isclose(sim.elapsed_s, 2.0)


def test_compare_returns_both_answers_in_arrival_order() -> None:
    """compare waits for every target and returns every answer, the first to arrive first."""
    p = RunPlan(strategy=Strategy.COMPARE, targets=(target("a"), target("b"), target("c")))
    sim = simulate(p, REQUEST, {"a": answers_after(0.9), "b": answers_after(0.2), "c": fails(ErrorKind.AUTH)})
    assert [a.provider for a in sim.outcome.answers] == ["b", "a"]
    assert sim.outcome.provider == "b" and math.isclose(sim.elapsed_s, 0.9)


def test_cheapest_skips_what_does_not_fit_and_climbs_the_price_list() -> None:
    """cheapest sorts by worst case: the free provider first, then the mid one; the dear one
    whose worst case exceeds the budget is skipped without a call."""
    p = RunPlan(
        strategy=Strategy.CHEAPEST,
        targets=(target("dear", 1_000.0), target("mid", 5.0), target("free", 0.0)),
        limits=RunLimits(max_usd=0.01),
    )
    sim = simulate(p, REQUEST, {"free": fails(ErrorKind.AUTH), "mid": fails(ErrorKind.AUTH)})
    assert [a.provider.name for _, a in starts(sim)] == ["free", "mid"]
    assert [(sk.provider, sk.kind) for sk in sim.outcome.skipped] == [("dear", ErrorKind.BUDGET)]
