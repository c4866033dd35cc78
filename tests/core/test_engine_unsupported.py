"""Targets that cannot carry what the request needs (``unsupported``): skipped before anything is
asked of them (no circuit question, no health check, no request), like an open circuit, the route
moving on; never a verdict on the provider."""

from __future__ import annotations

from rmcore.breaker import CircuitState
from rmcore.capabilities import Capability
from rmcore.conduct import CONDUCT
from rmcore.engine import Engine
from rmcore.errors import ErrorKind
from rmcore.events import (
    AdmitCircuit,
    CheckHealth,
    FailedOver,
    Finish,
    StartAttempt,
    TargetSkipped,
)
from rmcore.plan import BreakerRules, RunPlan, TargetPlan
from rmcore.providers import ProviderKind
from rmcore.requests import ChatRequest, ImagePart, Message, TextPart, Tool
from rmcore.simulate import SimProvider, SimReply, simulate
from tests.core.helpers import spec

GATEWAY = spec("aiceo-gateway", kind=ProviderKind.AICEO)
OPENAI = spec("openai-direct")
TOOLS = ChatRequest(
    messages=(Message(role="user", content="Weather in Paris?"),),
    tools=(Tool(name="get_weather"),),
    max_tokens=100,
)
TOOLS_AND_IMAGE = ChatRequest(
    messages=(Message(role="user", content=(TextPart(text="Where?"), ImagePart(url="https://x.test/a.png"))),),
    tools=(Tool(name="get_weather"),),
    max_tokens=100,
)
TEXT = ChatRequest.ask("Should we migrate to Kubernetes?", max_tokens=100)


def plan(*providers: object, **fields: object) -> RunPlan:
    return RunPlan(targets=tuple(TargetPlan(provider=p) for p in providers), **fields)  # type: ignore[arg-type]


def test_the_gateway_is_skipped_for_a_tools_request_and_the_next_target_answers() -> None:
    """Route aiceo-gateway → openai-direct with a tools request: the gateway is skipped at once
    (``unsupported``, ``cannot carry tools``), no request goes to it, and the first attempt is
    openai-direct's."""
    engine = Engine(plan(GATEWAY, OPENAI), TOOLS, seed=0)
    actions = engine.start(0.0)
    skips = [a for a in actions if isinstance(a, TargetSkipped)]
    starts = [a for a in actions if isinstance(a, StartAttempt)]
    assert [(s.skipped.provider, s.skipped.kind, s.skipped.message) for s in skips] == [
        ("aiceo-gateway", ErrorKind.UNSUPPORTED, "cannot carry tools")
    ]
    assert [s.provider.name for s in starts] == ["openai-direct"]
    [moved] = [a for a in actions if isinstance(a, FailedOver)]
    assert moved.error.kind is ErrorKind.UNSUPPORTED


def test_a_text_request_still_goes_to_the_gateway() -> None:
    """A text request needs nothing: the gateway is tried first as before."""
    [first] = Engine(plan(GATEWAY, OPENAI), TEXT, seed=0).start(0.0)
    assert isinstance(first, StartAttempt) and first.provider.name == "aiceo-gateway"


def test_the_skip_names_every_missing_capability() -> None:
    """A provider lacking several capabilities the request needs is skipped naming each, in the
    enum's order."""
    sim = simulate(plan(GATEWAY, OPENAI), TOOLS_AND_IMAGE, {})
    skipped = [(s.provider, s.message) for s in sim.outcome.skipped]
    assert skipped == [("aiceo-gateway", "cannot carry tools, images")]
    partial = spec("partial", supports=frozenset({Capability.IMAGES}))
    sim = simulate(plan(partial, OPENAI), TOOLS_AND_IMAGE, {})
    assert [(s.provider, s.message) for s in sim.outcome.skipped] == [("partial", "cannot carry tools")]


def test_no_circuit_question_nor_health_check_for_a_target_that_cannot_carry_the_request() -> None:
    """The capability check comes first: nothing at all is asked about a target it rules out."""
    checked = plan(GATEWAY, OPENAI, breaker=BreakerRules(enabled=True), check_before_use=True)
    sim = simulate(checked, TOOLS, {})
    asked = [s.action.provider.name for s in sim.steps if isinstance(s.action, AdmitCircuit | CheckHealth)]
    assert "aiceo-gateway" not in asked and "openai-direct" in asked
    assert sim.outcome.ok and sim.outcome.provider == "openai-direct"


def test_unsupported_is_no_failure_and_leaves_the_circuit_alone() -> None:
    """Never sent, never breaking, no failure: a gateway whose circuit is one failure from
    opening is left exactly as it was, and nothing is recorded for it."""
    row = CONDUCT[ErrorKind.UNSUPPORTED]
    assert not row.sent and not row.breaking and not row.failure and row.fails_over
    nearly = CircuitState(provider="aiceo-gateway", consecutive_failures=2)
    sim = simulate(
        plan(GATEWAY, OPENAI, breaker=BreakerRules(enabled=True, failure_threshold=3)),
        TOOLS,
        {},
        circuits={"aiceo-gateway": nearly},
    )
    assert sim.circuits["aiceo-gateway"] == nearly
    assert [a.provider for a in sim.outcome.attempts] == ["openai-direct"]
    assert sim.calls == {"openai-direct": 1}


def test_a_route_failing_after_a_skip_reports_the_real_failure() -> None:
    """openai-direct fails (server_error, no retries left), the gateway after it is skipped as
    unsupported: the run's error is the server error, not the skip."""
    one_try = TargetPlan(provider=OPENAI, max_attempts=1)
    failing = {"openai-direct": SimProvider(replies=(SimReply(latency_s=0.01, kind=ErrorKind.SERVER_ERROR),))}
    sim = simulate(RunPlan(targets=(one_try, TargetPlan(provider=GATEWAY))), TOOLS, failing)
    assert not sim.outcome.ok and sim.outcome.error is not None
    assert sim.outcome.error.kind is ErrorKind.SERVER_ERROR
    assert "aiceo-gateway: unsupported (cannot carry tools)" in sim.outcome.error.message


def test_when_no_target_can_carry_the_request_the_engine_ends_without_a_request() -> None:
    """Alone (without the shell's check before the run) the engine still sends nothing: the run
    ends at once with ``unsupported`` saying what no target can carry."""
    engine = Engine(plan(GATEWAY), TOOLS, seed=0)
    actions = engine.start(0.0)
    assert not [a for a in actions if isinstance(a, StartAttempt)]
    [finish] = [a for a in actions if isinstance(a, Finish)]
    error = finish.outcome.error
    assert error is not None and error.kind is ErrorKind.UNSUPPORTED
    assert error.message == "no target can carry tools (aiceo-gateway: cannot carry tools)"
    assert finish.outcome.attempts == ()
