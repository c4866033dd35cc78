"""The engine on a virtual clock against simulated providers (``rmcore.simulate``): what
``rmgr policy simulate`` prints, and what the engine's property tests run on.

The engine's strategies are tested through the simulator in ``test_engine_strategies.py``; this
file checks what the simulator itself promises: providers behave as described (replies in order,
the last repeating; unlisted ones answer in half a second; a silent one ends on its timeout),
the clock is virtual and starts where asked, breakers are kept with the shell's rules, the run is
determined by its seed, and the trace reads as lines."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rmcore.breaker import CircuitState
from rmcore.completion import Usage
from rmcore.errors import ErrorKind
from rmcore.events import AttemptFailed, StartAttempt
from rmcore.plan import BreakerRules, RunLimits, RunPlan, TargetPlan
from rmcore.policy.schema import Strategy
from rmcore.pricing import cost_usd, estimate_prompt_tokens, worst_case_usd
from rmcore.simulate import SimProvider, SimReply, Simulation, describe, simulate
from tests.core.helpers import REQUEST, run_plan, spec, target

UP = SimProvider()
DOWN = SimProvider(replies=(SimReply(latency_s=0.05, kind=ErrorKind.CONNECTION),))
NAMES = ("a", "b", "c", "d")
LINE = re.compile(r"^\[ *\d+\.\d{3}s\] +\S")


def starts(sim: Simulation) -> list[StartAttempt]:
    return [step.action for step in sim.steps if isinstance(step.action, StartAttempt)]


def test_a_provider_that_is_down_fails_over_to_the_next() -> None:
    """The first provider refusing connections is retried, then the run fails over and the
    second answers: a fallback, both providers called."""
    sim = simulate(run_plan("a", "b"), REQUEST, {"a": DOWN, "b": UP})
    assert sim.outcome.ok
    assert sim.outcome.provider == "b"
    assert sim.outcome.fallback_used
    assert sim.calls == {"a": 2, "b": 1}
    assert [a.outcome for a in sim.outcome.attempts] == ["connection", "connection", "ok"]


def test_an_unlisted_provider_answers_after_half_a_second() -> None:
    """A provider the simulation does not describe answers, at 0.5 s of virtual time."""
    sim = simulate(run_plan("a"), REQUEST, {})
    assert sim.outcome.ok
    assert sim.elapsed_s == 0.5
    assert sim.calls == {"a": 1}


def test_a_silent_provider_ends_on_its_attempt_timeout() -> None:
    """A reply that never comes fails as ``timeout`` exactly at the attempt timeout."""
    plan = RunPlan(
        targets=(TargetPlan(provider=spec("a"), attempt_timeout_s=3.0, max_attempts=1), target("b"))
    )
    sim = simulate(plan, REQUEST, {"a": SimProvider(replies=(SimReply(latency_s=None),))})
    [failed] = [step for step in sim.steps if isinstance(step.event, AttemptFailed)]
    assert isinstance(failed.event, AttemptFailed)
    assert (failed.at, failed.event.error.kind) == (3.0, ErrorKind.TIMEOUT)
    assert sim.outcome.provider == "b"
    assert sim.elapsed_s == 3.5


def test_replies_come_in_order_and_the_last_repeats() -> None:
    """A provider failing twice then answering answers on the third attempt; asked again, it
    keeps answering."""
    flaky = SimProvider(
        replies=(
            SimReply(latency_s=0.1, kind=ErrorKind.SERVER_ERROR),
            SimReply(latency_s=0.1, kind=ErrorKind.SERVER_ERROR),
            SimReply(latency_s=0.1),
        )
    )
    sim = simulate(run_plan("a", max_attempts=3), REQUEST, {"a": flaky})
    assert sim.outcome.ok
    assert [a.outcome for a in sim.outcome.attempts] == ["server_error", "server_error", "ok"]
    again = simulate(run_plan("a", max_attempts=3), REQUEST, {"a": flaky}, calls_before={"a": 7})
    assert [a.outcome for a in again.outcome.attempts] == ["ok"]


def test_earlier_calls_walk_through_the_replies() -> None:
    """``calls_before`` counts earlier requests: after two, the provider gives its third reply."""
    flaky = SimProvider(replies=(SimReply(kind=ErrorKind.AUTH), SimReply(kind=ErrorKind.AUTH), SimReply()))
    assert not simulate(run_plan("a"), REQUEST, {"a": flaky}).outcome.ok
    assert simulate(run_plan("a"), REQUEST, {"a": flaky}, calls_before={"a": 2}).outcome.ok


def test_the_clock_starts_where_asked_and_elapsed_is_relative() -> None:
    """With ``start_s`` the trace is dated from it, attempts are dated on the wall clock it
    stands for, and ``elapsed_s`` counts from it."""
    sim = simulate(run_plan("a"), REQUEST, {}, start_s=1_000.0)
    assert sim.steps[0].at == 1_000.0
    assert sim.elapsed_s == 0.5
    assert sim.outcome.attempts[0].started_at_ms == 1_000_000


def test_a_reply_uses_all_of_max_tokens_unless_it_says_otherwise() -> None:
    """A simulated answer costs the request's worst case; with ``output_tokens`` it costs that many
    (never more than ``max_tokens``)."""
    provider = spec("a", 3.0)
    plan = RunPlan(targets=(TargetPlan(provider=provider),))
    full = simulate(plan, REQUEST, {})
    assert full.outcome.cost_usd == pytest.approx(worst_case_usd(REQUEST, provider))
    short = simulate(plan, REQUEST, {"a": SimProvider(replies=(SimReply(output_tokens=5),))})
    expected = cost_usd(Usage(input_tokens=estimate_prompt_tokens(REQUEST), output_tokens=5), provider)
    assert short.outcome.cost_usd == pytest.approx(expected)
    capped = simulate(plan, REQUEST, {"a": SimProvider(replies=(SimReply(output_tokens=10**6),))})
    assert capped.outcome.cost_usd == pytest.approx(full.outcome.cost_usd)


def test_an_unhealthy_provider_is_skipped_without_a_request_when_checked() -> None:
    """With ``check_before_use`` a provider whose check fails gets no request."""
    plan = RunPlan(targets=(target("a"), target("b")), check_before_use=True)
    sim = simulate(plan, REQUEST, {"a": SimProvider(healthy=False)})
    assert sim.calls == {"b": 1}
    assert [s.kind for s in sim.outcome.skipped] == [ErrorKind.UNHEALTHY]


def test_breakers_are_kept_across_runs() -> None:
    """A failure that opens a's circuit is in the circuits returned; the next run given them skips
    a without a request until the cooldown has passed."""
    plan = RunPlan(
        targets=(target("a", max_attempts=1), target("b")),
        breaker=BreakerRules(enabled=True, failure_threshold=1, cooldown_s=60.0),
    )
    broken = SimProvider(replies=(SimReply(latency_s=0.1, kind=ErrorKind.SERVER_ERROR),))
    first = simulate(plan, REQUEST, {"a": broken})
    assert first.circuits["a"].state == "open"
    second = simulate(plan, REQUEST, {"a": broken}, circuits=first.circuits, start_s=10.0)
    assert "a" not in second.calls
    assert [s.kind for s in second.outcome.skipped] == [ErrorKind.CIRCUIT_OPEN]
    assert second.outcome.provider == "b"


def test_breakers_off_keep_no_circuits() -> None:
    """Without breakers, failures leave the circuits as they were."""
    broken = SimProvider(replies=(SimReply(latency_s=0.1, kind=ErrorKind.SERVER_ERROR),))
    sim = simulate(run_plan("a", "b", max_attempts=1), REQUEST, {"a": broken})
    assert sim.circuits == {}


def test_the_trace_reads_as_dated_lines() -> None:
    """``describe`` gives one dated line per step worth telling, from the first call to the answer."""
    sim = simulate(run_plan("a", "b"), REQUEST, {"a": DOWN})
    lines = describe(sim.steps)
    assert all(LINE.match(line) for line in lines), lines
    assert lines[0] == "[   0.000s] call a (attempt 1), giving up after 30 s (the attempt timeout)"
    assert any("leave a (connection) for b" in line for line in lines)
    assert "answered by b, cost $" in lines[-1]


def test_a_failed_run_is_described_with_its_error() -> None:
    """The last line of a failed run's trace says it failed and why."""
    sim = simulate(run_plan("a", max_attempts=1), REQUEST, {"a": DOWN})
    assert "failed: connection" in describe(sim.steps)[-1]


# --- properties ----------------------------------------------------------------------------------

PROPERTY = settings(max_examples=50, deadline=None)


@st.composite
def outages(draw: st.DrawFn) -> tuple[list[str], set[str]]:
    """A route of one to four providers, and which of them are down."""
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=4, unique=True))
    return names, set(draw(st.lists(st.sampled_from(names), unique=True)))


@PROPERTY
@given(outages(), st.integers(min_value=0, max_value=2**32))
def test_a_sequential_route_is_answered_by_its_first_provider_that_is_up(
    outage: tuple[list[str], set[str]], seed: int
) -> None:
    """Whatever providers are down, the first up in route order answers, no provider after it is
    asked, and the run fails only when all are down."""
    names, down = outage
    sim = simulate(run_plan(*names), REQUEST, {n: DOWN for n in down}, seed=seed)
    up = [n for n in names if n not in down]
    if not up:
        assert not sim.outcome.ok
        assert sim.outcome.error is not None and sim.outcome.error.kind is ErrorKind.CONNECTION
        return
    assert sim.outcome.provider == up[0]
    assert sim.outcome.fallback_used == (up[0] != names[0])
    asked = {s.provider.name for s in starts(sim)}
    assert asked <= set(names[: names.index(up[0]) + 1])


@PROPERTY
@given(
    outages(),
    st.sampled_from(list(Strategy)),
    st.integers(min_value=0, max_value=2**32),
    st.floats(min_value=0.05, max_value=2.0),
)
def test_a_run_is_determined_by_its_seed(
    outage: tuple[list[str], set[str]], strategy: Strategy, seed: int, latency_s: float
) -> None:
    """The same plan, providers and seed give the same simulation, step for step."""
    names, down = outage
    plan = run_plan(*names, strategy=strategy, deadline_s=20.0)
    providers = {
        n: DOWN if n in down else SimProvider(replies=(SimReply(latency_s=latency_s),)) for n in names
    }
    assert simulate(plan, REQUEST, providers, seed=seed) == simulate(plan, REQUEST, providers, seed=seed)


@PROPERTY
@given(
    outages(),
    st.sampled_from(list(Strategy)),
    st.integers(min_value=0, max_value=2**32),
    st.floats(min_value=0.0, max_value=1e6),
)
def test_the_virtual_clock_never_runs_backwards_and_respects_the_deadline(
    outage: tuple[list[str], set[str]], strategy: Strategy, seed: int, start_s: float
) -> None:
    """Steps are in time order from ``start_s``, every request is counted in ``calls``, and the
    run ends within its deadline."""
    names, down = outage
    plan = RunPlan(
        targets=tuple(target(n, max_attempts=3) for n in names),
        strategy=strategy,
        limits=RunLimits(deadline_s=4.0),
    )
    sim = simulate(plan, REQUEST, {n: DOWN for n in down}, seed=seed, start_s=start_s)
    moments = [step.at for step in sim.steps]
    assert moments == sorted(moments)
    assert moments[0] == start_s
    assert sim.elapsed_s <= 4.0 + 1e-9
    assert sum(sim.calls.values()) == len(starts(sim))


def test_a_prior_open_circuit_is_returned_as_it_was_when_nothing_touched_it() -> None:
    """Circuits of providers the run never asked about come back unchanged."""
    other = CircuitState(provider="z", state="open", consecutive_failures=3, opened_at=0.0)
    plan = RunPlan(targets=(target("a"),), breaker=BreakerRules(enabled=True))
    sim = simulate(plan, REQUEST, {}, circuits={"z": other})
    assert sim.circuits["z"] == other
