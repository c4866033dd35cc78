"""What a request needs a provider to carry (``rmcore.capabilities``), what each provider carries,
and the routing that follows: a target that cannot carry the request is skipped unsent, and a plan
no target of which can carry it is refused before it runs (``rmcore.plan.unsupported``)."""

from __future__ import annotations

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from rmcore.capabilities import ALL_CAPABILITIES, Capability, in_words, missing, needs
from rmcore.errors import ErrorKind
from rmcore.events import AdmitCircuit, StartAttempt, TargetSkipped
from rmcore.plan import BreakerRules, RoutePlan, RunPlan, TargetPlan, leaves, unsupported
from rmcore.policy.schema import Strategy
from rmcore.problems import ProblemKind
from rmcore.providers import KIND_SUPPORTS, ProviderKind, builtin_providers
from rmcore.requests import (
    ChatRequest,
    ImagePart,
    Message,
    ResponseFormat,
    TextPart,
    Tool,
    ToolCall,
)
from rmcore.simulate import simulate
from tests.core.helpers import spec

WEATHER = Tool(
    name="get_weather",
    description="The weather in a city",
    parameters=msgspec.Raw(b'{"type":"object","properties":{"city":{"type":"string"}}}'),
)
PIXEL = "data:image/png;base64,iVBORw0KGgo="
CALL = ToolCall(id="call_1", name="get_weather", arguments='{"city": "Paris"}')
TEXT = ChatRequest.ask("Should we migrate to Kubernetes?", max_tokens=100)
TOOLS = ChatRequest(messages=(Message(role="user", content="Weather in Paris?"),), tools=(WEATHER,))


def request_with(
    *,
    tools: bool = False,
    tool_calls: bool = False,
    tool_result: bool = False,
    image: bool = False,
    response_format: str | None = None,
) -> ChatRequest:
    """A request holding exactly the features asked for (each on its own), and text besides."""
    content: str | tuple[TextPart | ImagePart, ...] = (
        (TextPart(text="What is this?"), ImagePart(url=PIXEL)) if image else "What is this?"
    )
    messages = [Message(role="system", content="Be brief."), Message(role="user", content=content)]
    if tool_calls:
        messages.append(Message(role="assistant", tool_calls=(CALL,)))
    if tool_result:
        messages.append(Message(role="tool", content="18 C", tool_call_id="call_1"))
    fmt = None if response_format is None else ResponseFormat(type=response_format)
    return ChatRequest(
        messages=tuple(messages), tools=(WEATHER,) if tools else (), response_format=fmt, max_tokens=100
    )


# --- needs --------------------------------------------------------------------------------------


def test_a_text_request_needs_nothing() -> None:
    """The simple form (a system text and a prompt), and a text conversation, need nothing."""
    assert needs(TEXT) == frozenset()
    assert needs(ChatRequest.ask("hi", system="Be brief.")) == frozenset()
    assert needs(request_with(response_format="text")) == frozenset()


def test_each_feature_needs_its_capability() -> None:
    """Tools, a tool call or a tool's result need ``tools``; an image part ``images``; a JSON
    answer (``json_object`` or ``json_schema``) ``json_schema``."""
    assert needs(request_with(tools=True)) == {Capability.TOOLS}
    assert needs(request_with(tool_calls=True)) == {Capability.TOOLS}
    assert needs(request_with(tool_result=True)) == {Capability.TOOLS}
    assert needs(request_with(image=True)) == {Capability.IMAGES}
    assert needs(request_with(response_format="json_object")) == {Capability.JSON_SCHEMA}
    assert needs(request_with(response_format="json_schema")) == {Capability.JSON_SCHEMA}


@given(
    tools=st.booleans(),
    tool_calls=st.booleans(),
    tool_result=st.booleans(),
    image=st.booleans(),
    response_format=st.sampled_from([None, "text", "json_object", "json_schema"]),
)
def test_needs_is_the_union_of_what_each_feature_needs(
    tools: bool, tool_calls: bool, tool_result: bool, image: bool, response_format: str | None
) -> None:
    """Features together need exactly the union of what each needs alone."""
    expected = set()
    if tools or tool_calls or tool_result:
        expected.add(Capability.TOOLS)
    if image:
        expected.add(Capability.IMAGES)
    if response_format in ("json_object", "json_schema"):
        expected.add(Capability.JSON_SCHEMA)
    request = request_with(
        tools=tools,
        tool_calls=tool_calls,
        tool_result=tool_result,
        image=image,
        response_format=response_format,
    )
    assert needs(request) == expected


def test_missing_and_in_words_keep_the_enums_order() -> None:
    """What a provider lacks is named in the enum's order (tools, images, json_schema), whatever
    the order of the sets given."""
    tools_and_json = (Capability.TOOLS, Capability.JSON_SCHEMA)
    assert missing([Capability.JSON_SCHEMA, Capability.TOOLS], []) == tools_and_json
    assert missing(ALL_CAPABILITIES, [Capability.IMAGES]) == tools_and_json
    assert missing([Capability.TOOLS], ALL_CAPABILITIES) == ()
    assert in_words([Capability.IMAGES, Capability.TOOLS]) == "tools, images"


# --- what providers carry -----------------------------------------------------------------------


def test_the_openai_and_anthropic_kinds_carry_everything_the_gateway_text_only() -> None:
    """By kind: OpenAI (GLM too) and Anthropic carry tools, images and JSON answers; the AICEO
    gateway carries text only. A spec's ``carries`` is its kind's unless ``supports`` says."""
    builtins = builtin_providers({})
    assert builtins["aiceo-gateway"].carries == frozenset()
    for name in ("glm-direct", "anthropic-direct", "openai-direct"):
        assert builtins[name].carries == ALL_CAPABILITIES
    assert KIND_SUPPORTS[ProviderKind.AICEO] == frozenset()
    assert spec("x", supports=frozenset({Capability.TOOLS})).carries == {Capability.TOOLS}
    assert spec("x", kind=ProviderKind.AICEO, supports=ALL_CAPABILITIES).carries == ALL_CAPABILITIES


# --- the pre-run check --------------------------------------------------------------------------


def gateway_then(*others: str) -> RunPlan:
    gateway = spec("aiceo-gateway", kind=ProviderKind.AICEO)
    return RunPlan(targets=(TargetPlan(provider=gateway), *(TargetPlan(provider=spec(n)) for n in others)))


def test_a_plan_one_target_of_which_carries_the_request_may_run() -> None:
    """One target that can carry the request is enough; a text request runs anywhere."""
    assert unsupported(gateway_then("openai-direct"), TOOLS) is None
    assert unsupported(gateway_then(), TEXT) is None


def test_a_plan_no_target_of_which_carries_the_request_is_refused_naming_feature_and_targets() -> None:
    """``this request needs tools; no target of route default can carry it (aiceo-gateway: text
    only)``: the feature, the route and why each target cannot."""
    problem = unsupported(gateway_then(), TOOLS)
    assert problem is not None and problem.kind is ProblemKind.UNSUPPORTED_REQUEST
    assert problem.message == (
        "this request needs tools; no target of route default can carry it (aiceo-gateway: text only)"
    )


def test_the_refusal_names_every_missing_capability_per_target() -> None:
    """A request needing tools and images, on a route whose targets each carry only part of it:
    no one target carries it all, so it is refused, each target with what it lacks."""
    plan = RunPlan(
        targets=(
            TargetPlan(provider=spec("a", supports=frozenset({Capability.TOOLS}))),
            TargetPlan(provider=spec("b", supports=frozenset({Capability.IMAGES}))),
            TargetPlan(provider=spec("a", supports=frozenset({Capability.TOOLS}))),
        ),
        route_name="vision",
    )
    problem = unsupported(plan, request_with(tools=True, image=True))
    assert problem is not None
    assert problem.message == (
        "this request needs tools, images; no target of route vision can carry them"
        " (a: cannot carry images; b: cannot carry tools)"
    )


# --- routing: the property ----------------------------------------------------------------------

CAPABILITY_SETS = st.frozensets(st.sampled_from(list(Capability)))


@st.composite
def routes(draw: st.DrawFn) -> tuple[RunPlan, dict[str, frozenset[Capability]]]:
    """A flat or nested route over up to five providers, each carrying a random set."""
    count = draw(st.integers(min_value=1, max_value=5))
    carried = {f"p{i}": draw(CAPABILITY_SETS) for i in range(count)}
    leaves_ = [TargetPlan(provider=spec(name, supports=caps)) for name, caps in carried.items()]
    strategy = draw(st.sampled_from(list(Strategy)))
    if count > 2 and draw(st.booleans()):
        inner = RoutePlan(strategy=draw(st.sampled_from(list(Strategy))), targets=tuple(leaves_[1:3]))
        targets: tuple[TargetPlan | RoutePlan, ...] = (leaves_[0], inner, *leaves_[3:])
    else:
        targets = tuple(leaves_)
    breaker = BreakerRules(enabled=draw(st.booleans()))
    return RunPlan(targets=targets, strategy=strategy, breaker=breaker), carried


@settings(max_examples=200, deadline=None)
@given(route=routes(), needed=CAPABILITY_SETS)
def test_no_request_reaches_a_target_that_cannot_carry_it(
    route: tuple[RunPlan, dict[str, frozenset[Capability]]], needed: frozenset[Capability]
) -> None:
    """Whatever the route: no ``StartAttempt`` (nor a circuit question) ever goes to a provider
    lacking a capability the request needs; every skipped target is exactly such a provider,
    skipped with ``unsupported`` naming what it lacks; when every target lacks one, ``unsupported``
    refuses the plan and the run ends without a request; otherwise the answer comes from a
    provider that carries the request. In a race (every target started at once) the skipped
    targets are exactly the lacking ones; in sequence, exactly those before the first that can
    carry it."""
    plan, carried = route
    request = request_with(
        tools=Capability.TOOLS in needed,
        image=Capability.IMAGES in needed,
        response_format="json_schema" if Capability.JSON_SCHEMA in needed else None,
    )
    lacking = {name for name, caps in carried.items() if not needed <= caps}
    sim = simulate(plan, request, {})
    asked = {s.action.provider.name for s in sim.steps if isinstance(s.action, StartAttempt | AdmitCircuit)}
    assert not asked & lacking
    skipped = [s.action.skipped for s in sim.steps if isinstance(s.action, TargetSkipped)]
    for skip in skipped:
        assert skip.provider in lacking and skip.kind is ErrorKind.UNSUPPORTED
        assert skip.message == f"cannot carry {in_words(missing(needed, carried[skip.provider]))}"
    assert all(a.provider not in lacking for a in sim.outcome.attempts)
    if lacking == set(carried):
        assert unsupported(plan, request) is not None
        assert not sim.outcome.ok and sim.outcome.attempts == ()
        assert sim.outcome.error is not None and sim.outcome.error.kind is ErrorKind.UNSUPPORTED
    else:
        assert unsupported(plan, request) is None
        assert sim.outcome.ok and sim.outcome.provider not in lacking
    flat = all(isinstance(t, TargetPlan) for t in plan.targets)
    if flat and plan.strategy in (Strategy.FASTEST, Strategy.COMPARE):
        assert {s.provider for s in skipped} == lacking
    if flat and plan.strategy is Strategy.SEQUENTIAL:
        # Every provider answers: skipped are the lacking ones before the first that can carry it.
        order = [t.provider.name for t in leaves(plan)]
        first = next((i for i, name in enumerate(order) if name not in lacking), len(order))
        assert [s.provider for s in skipped] == order[:first]
    assert {t.provider.name for t in leaves(plan)} == set(carried)
