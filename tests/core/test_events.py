"""What passes between the engine and the shell (``rmcore.events``): events in, actions out, and
how a run ended. All are frozen values, so a run's whole conversation can be recorded, replayed
and printed."""

from __future__ import annotations

import typing

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from rmcore import events
from rmcore.engine import Engine
from rmcore.errors import ErrorKind, ProviderError
from rmcore.events import Action, Event, Finish, RunOutcome
from rmcore.plan import BreakerRules, RetryRules, RunLimits, RunPlan, TargetPlan
from rmcore.policy.schema import Strategy
from rmcore.requests import ChatRequest
from rmcore.simulate import SimProvider, SimReply, Simulation, simulate
from tests.core.helpers import REQUEST, completion, spec

EVENTS = set(typing.get_args(Event))
ACTIONS = set(typing.get_args(Action))
VALUES = {events.ProviderAnswer, events.RunOutcome, events.SkippedTarget}
"""What the events and actions carry: neither an event nor an action of their own."""

START_S = 500.0


def test_every_struct_is_an_event_an_action_or_a_value_they_carry() -> None:
    """Each struct the module exports is exactly one of: an event, an action, or a value inside one."""
    exported = {getattr(events, name) for name in events.__all__ if isinstance(getattr(events, name), type)}
    assert EVENTS.isdisjoint(ACTIONS)
    assert exported == EVENTS | ACTIONS | VALUES


def test_every_event_carries_the_moment_it_happened() -> None:
    """Every event has an ``at``: the engine reads no clock, the moment comes with the event."""
    for event in EVENTS:
        assert "at" in event.__struct_fields__, event.__name__


def test_a_run_is_ok_exactly_when_it_has_a_completion() -> None:
    """``ok`` is true when the run produced an answer, false when it has only an error."""
    failed = RunOutcome(
        completion=None,
        provider=None,
        model=None,
        error=ProviderError(kind=ErrorKind.BUDGET, message="no room"),
        attempts=(),
        skipped=(),
        cost_usd=0.0,
        fallback_used=False,
    )
    answered = msgspec.structs.replace(failed, completion=completion(), provider="a", model="m", error=None)
    assert not failed.ok
    assert answered.ok
    assert answered.answers == ()


# --- a run recorded and replayed -----------------------------------------------------------------

NAMES = ("a", "b", "c")
replies = st.one_of(
    st.builds(SimReply, latency_s=st.floats(0.01, 3.0)),
    st.builds(
        SimReply,
        latency_s=st.floats(0.01, 3.0),
        kind=st.sampled_from([ErrorKind.SERVER_ERROR, ErrorKind.RATE_LIMITED, ErrorKind.CONNECTION]),
        retry_after_s=st.none() | st.floats(0.0, 2.0),
    ),
    st.just(SimReply(latency_s=None)),
)


@st.composite
def runs(draw: st.DrawFn) -> tuple[RunPlan, dict[str, SimProvider], int]:
    """A flat route of the three providers under any strategy, each behaving in its own way."""
    plan = RunPlan(
        targets=tuple(
            TargetPlan(provider=spec(n, 1.0 + i), attempt_timeout_s=2.0, max_attempts=draw(st.integers(1, 3)))
            for i, n in enumerate(NAMES)
        ),
        strategy=draw(st.sampled_from(list(Strategy))),
        hedge_after_s=0.5,
        limits=RunLimits(deadline_s=draw(st.floats(3.0, 20.0))),
        retry=RetryRules(backoff_initial_s=0.1, backoff_max_s=1.0),
        breaker=BreakerRules(enabled=draw(st.booleans()), failure_threshold=1),
        check_before_use=draw(st.booleans()),
    )
    providers = {
        n: SimProvider(
            replies=tuple(draw(st.lists(replies, min_size=1, max_size=3))), healthy=draw(st.booleans())
        )
        for n in NAMES
    }
    return plan, providers, draw(st.integers(0, 2**16))


def recorded(value: msgspec.Struct) -> msgspec.Struct:
    """``value`` written as JSON and read back, as a log of the run would keep it."""
    return msgspec.json.decode(msgspec.json.encode(value), type=type(value))


def replay(plan: RunPlan, request: ChatRequest, sim: Simulation, seed: int) -> list[Action]:
    """Every action a fresh engine answers when fed the simulated run's events, read back from JSON."""
    engine = Engine(plan, request, seed=seed, epoch_s=START_S)
    actions = list(engine.start(START_S))
    for step in sim.steps:
        if step.event is not None:
            actions.extend(engine.handle(recorded(step.event)))  # type: ignore[arg-type]
    return actions


@settings(max_examples=40, deadline=None)
@given(runs())
def test_every_step_of_a_run_round_trips_through_json(
    run: tuple[RunPlan, dict[str, SimProvider], int],
) -> None:
    """Each action and event of a simulated run reads back equal from its JSON."""
    plan, providers, seed = run
    sim = simulate(plan, REQUEST, providers, seed=seed, start_s=START_S)
    for step in sim.steps:
        for value in (step.action, step.event):
            if value is not None:
                assert recorded(value) == value


@settings(max_examples=40, deadline=None)
@given(runs())
def test_replaying_a_recorded_run_gives_the_same_actions(
    run: tuple[RunPlan, dict[str, SimProvider], int],
) -> None:
    """Fed the same events (read back from JSON) with the same seed, a new engine asks for the same
    actions in the same order, down to the same ``Finish``."""
    plan, providers, seed = run
    sim = simulate(plan, REQUEST, providers, seed=seed, start_s=START_S)
    asked = [step.action for step in sim.steps if step.action is not None]
    assert isinstance(asked[-1], Finish)
    assert replay(plan, REQUEST, sim, seed) == asked
