"""A run plan (``rmcore.plan``): a decoded policy resolved against its providers into the tree of
routes the engine executes, each leaf with its effective limits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import tomli_w
from hypothesis import given, settings
from hypothesis import strategies as st
from returns.result import Failure, Success

from rmcore.errors import ErrorKind
from rmcore.plan import RoutePlan, RunPlan, TargetPlan, build_plan, first_leaf, leaves, probe_timeout_s
from rmcore.policy import Policy, resolve_providers, route_providers
from rmcore.policy.schema import Strategy
from rmcore.providers import BUILTIN_NAMES, ProviderSpec, builtin_providers
from rmcore.quota import policy_caps
from tests.core.helpers import policy_of, target

ENV = {
    "GLM_API_URL": "http://127.0.0.1:9001/v1/chat/completions",
    "ANTHROPIC_API_URL": "http://127.0.0.1:9002/v1/messages",
    "OPENAI_API_URL": "http://127.0.0.1:9003/v1/chat/completions",
}
BUILTINS = builtin_providers(ENV)
POLICIES = sorted((Path(__file__).resolve().parents[2] / "policies").glob("*.toml"))
OVERRIDES = ("attempt_timeout_s", "first_token_timeout_s", "idle_timeout_s", "max_attempts")


def plan_of(policy: Policy, **kwargs: Any) -> RunPlan:
    """The plan of ``policy`` with the built-ins and its own providers; it must build."""
    result = build_plan(policy, resolve_providers(policy, BUILTINS), **kwargs)
    assert isinstance(result, Success), result
    plan: RunPlan = result.unwrap()
    return plan


def names(node: RunPlan | RoutePlan | TargetPlan) -> list[str]:
    return [leaf.provider.name for leaf in leaves(node)]


def test_the_plan_keeps_the_route_order_and_the_limits() -> None:
    """The targets are the route's, in its order, and the run's limits, retry and breaker rules
    are the policy's."""
    policy = policy_of(
        """
        version = 1
        [route]
        strategy = "hedged"
        hedge_after_s = 1.5
        targets = ["anthropic-direct", "glm-direct", "openai-direct"]
        [limits]
        deadline_s = 45
        max_usd = 0.3
        [retry]
        on = ["timeout", "overloaded"]
        stop_on = ["auth"]
        backoff_initial_s = 0.25
        backoff_max_s = 4
        [breaker]
        failure_threshold = 5
        cooldown_s = 12
        [health]
        check_before_use = true
        """
    )
    plan = plan_of(policy)
    assert names(plan) == ["anthropic-direct", "glm-direct", "openai-direct"]
    assert [leaf.provider for leaf in leaves(plan)] == [BUILTINS[n] for n in names(plan)]
    assert (plan.strategy, plan.hedge_after_s) == (Strategy.HEDGED, 1.5)
    assert (plan.limits.deadline_s, plan.limits.max_usd) == (45.0, 0.3)
    assert plan.retry.on == {ErrorKind.TIMEOUT, ErrorKind.OVERLOADED}
    assert plan.retry.stop_on == {ErrorKind.AUTH}
    assert (plan.retry.backoff_initial_s, plan.retry.backoff_max_s) == (0.25, 4.0)
    assert (plan.breaker.enabled, plan.breaker.failure_threshold, plan.breaker.cooldown_s) == (True, 5, 12.0)
    assert plan.check_before_use is True


def test_targets_take_the_limits_and_retry_settings_when_they_set_none() -> None:
    """A plain provider name gets ``[limits]``' timeouts and ``[retry]``'s attempts, weight 1."""
    policy = policy_of(
        """
        version = 1
        [route]
        targets = ["glm-direct"]
        [limits]
        attempt_timeout_s = 11
        first_token_timeout_s = 7
        idle_timeout_s = 5
        [retry]
        max_attempts = 4
        """
    )
    [leaf] = leaves(plan_of(policy))
    assert leaf == TargetPlan(
        provider=BUILTINS["glm-direct"],
        attempt_timeout_s=11.0,
        first_token_timeout_s=7.0,
        idle_timeout_s=5.0,
        max_attempts=4,
        weight=1.0,
    )


def test_a_target_s_own_settings_win_and_a_nested_route_s_are_inherited() -> None:
    """A target's own limits win; one inside a nested route takes the route's, else the policy's."""
    policy = policy_of(
        """
        version = 1
        [limits]
        attempt_timeout_s = 30
        [retry]
        max_attempts = 2

        [[route.targets]]
        provider = "aiceo-gateway"
        attempt_timeout_s = 9
        weight = 3

        [[route.targets]]
        strategy = "fastest"
        attempt_timeout_s = 12
        max_attempts = 1
        targets = ["glm-direct", { provider = "openai-direct", attempt_timeout_s = 4 }]
        """
    )
    plan = plan_of(policy)
    gateway, nested = plan.targets
    assert isinstance(gateway, TargetPlan) and isinstance(nested, RoutePlan)
    assert (gateway.attempt_timeout_s, gateway.max_attempts, gateway.weight) == (9.0, 2, 3.0)
    assert nested.strategy is Strategy.FASTEST
    glm, openai = nested.targets
    assert isinstance(glm, TargetPlan) and isinstance(openai, TargetPlan)
    assert (glm.attempt_timeout_s, glm.max_attempts) == (12.0, 1)
    assert (openai.attempt_timeout_s, openai.max_attempts) == (4.0, 1)


def test_a_nested_route_without_a_strategy_is_sequential_and_takes_the_hedge_delay_above() -> None:
    """A nested route's strategy defaults to sequential and its hedge delay to its enclosing route's."""
    policy = policy_of(
        """
        version = 1
        [route]
        strategy = "hedged"
        hedge_after_s = 3.5
        targets = [{ targets = ["glm-direct", "openai-direct"] }, "anthropic-direct"]
        """
    )
    nested = plan_of(policy).targets[0]
    assert isinstance(nested, RoutePlan)
    assert (nested.strategy, nested.hedge_after_s, nested.weight) == (Strategy.SEQUENTIAL, 3.5, 1.0)


@pytest.mark.parametrize(
    ("observed", "expected"), [({"glm-direct": 0.8, "openai-direct": 5.0}, 0.8), ({}, 2.0)]
)
def test_hedging_on_p95_uses_the_first_target_s_observed_latency_or_2_s(
    observed: dict[str, float], expected: float
) -> None:
    """``hedge_after_s = "p95"`` is the first target's observed 95th percentile, 2 s before any."""
    policy = policy_of(
        """
        version = 1
        [route]
        strategy = "hedged"
        hedge_after_s = "p95"
        targets = ["glm-direct", "openai-direct"]
        """
    )
    assert plan_of(policy, observed_p95_s=observed).hedge_after_s == expected


def test_a_nested_route_hedging_on_p95_uses_its_own_first_target() -> None:
    """A nested route's "p95" is read for the first provider inside that route."""
    policy = policy_of(
        """
        version = 1
        [[route.targets]]
        provider = "aiceo-gateway"

        [[route.targets]]
        strategy = "hedged"
        hedge_after_s = "p95"
        targets = ["openai-direct", "glm-direct"]
        """
    )
    nested = plan_of(policy, observed_p95_s={"aiceo-gateway": 9.0, "openai-direct": 1.25}).targets[1]
    assert isinstance(nested, RoutePlan)
    assert nested.hedge_after_s == 1.25


def test_breakers_are_on_only_when_the_shell_can_keep_them() -> None:
    """``breakers=False`` (no state store) turns the circuit breakers off; the thresholds stay."""
    policy = policy_of("version = 1\n[breaker]\nfailure_threshold = 7\n")
    off = plan_of(policy, breakers=False).breaker
    assert (off.enabled, off.failure_threshold) == (False, 7)
    assert plan_of(policy).breaker.enabled


def test_an_unknown_provider_is_a_failure_naming_it() -> None:
    """A target the providers mapping lacks fails the plan, naming the provider, instead of raising."""
    policy = policy_of('version = 1\n[route]\ntargets = ["glm-direct", "openai-direct"]\n')
    providers = {name: spec for name, spec in BUILTINS.items() if name != "openai-direct"}
    result = build_plan(policy, providers)
    assert isinstance(result, Failure)
    assert "openai-direct" in str(result.failure())


def test_the_plan_carries_the_policy_s_caps_and_state_rule() -> None:
    """The plan's caps are the policy's budget caps and quotas; the state rule is the policy's."""
    policy = policy_of(
        """
        version = 1
        name = "capped"
        [route]
        targets = ["aiceo-gateway"]
        [budget]
        daily_usd = 5
        on_state_unavailable = "fail_open"
        """
    )
    providers = resolve_providers(policy, BUILTINS)
    plan = build_plan(policy, providers).unwrap()
    assert plan.caps == policy_caps(policy, providers)
    assert {cap.key for cap in plan.caps} >= {
        "policy:capped:usd:day",
        "provider:aiceo-gateway:requests:18000s",
    }
    assert plan.on_state_unavailable == "fail_open"


def test_the_top_route_and_leaves_read_the_tree_depth_first() -> None:
    """``route`` is the top route as a ``RoutePlan``; ``leaves`` walks every provider in order."""
    inner = RoutePlan(strategy=Strategy.FASTEST, targets=(target("b"), target("c")))
    plan = RunPlan(targets=(target("a"), inner, target("d")), strategy=Strategy.CHEAPEST, hedge_after_s=4.0)
    assert plan.route == RoutePlan(strategy=Strategy.CHEAPEST, targets=plan.targets, hedge_after_s=4.0)
    assert names(plan) == ["a", "b", "c", "d"]
    assert names(inner) == ["b", "c"]
    assert names(target("x")) == ["x"]


@pytest.mark.parametrize("path", POLICIES, ids=lambda p: p.name)
def test_every_shipped_policy_plans_its_route_in_order(path: Path) -> None:
    """Each shipped policy builds a plan whose providers, once each, are the route's in order."""
    policy = policy_of(path.read_text(encoding="utf-8"), str(path))
    plan = plan_of(policy)
    assert list(dict.fromkeys(names(plan))) == route_providers(policy)
    assert plan.limits.deadline_s == policy.limits.deadline_s
    assert plan.limits.max_usd == policy.limits.max_usd


# --- any route tree ------------------------------------------------------------------------------

SECONDS = st.sampled_from([0.5, 1.0, 2.5, 7.0, 30.0])
SETTINGS = {
    "attempt_timeout_s": SECONDS,
    "first_token_timeout_s": SECONDS,
    "idle_timeout_s": SECONDS,
    "max_attempts": st.integers(min_value=1, max_value=5),
}


@st.composite
def overrides(draw: st.DrawFn) -> dict[str, Any]:
    return {key: draw(value) for key, value in SETTINGS.items() if draw(st.booleans())}


@st.composite
def route_targets(draw: st.DrawFn, depth: int = 0) -> list[Any]:
    """A route's targets as written in TOML: names, provider tables, nested routes."""
    items: list[Any] = []
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        choice = draw(st.integers(min_value=0, max_value=2 if depth < 2 else 1))
        name = draw(st.sampled_from(BUILTIN_NAMES))
        if choice == 0:
            items.append(name)
        elif choice == 1:
            table = {"provider": name, **draw(overrides())}
            if draw(st.booleans()):
                table["weight"] = draw(st.sampled_from([0.5, 2.0, 3.0]))
            items.append(table)
        else:
            nested: dict[str, Any] = {"targets": draw(route_targets(depth + 1)), **draw(overrides())}
            if draw(st.booleans()):
                nested["strategy"] = draw(st.sampled_from([s.value for s in Strategy]))
            items.append(nested)
    return items


def expected_leaves(
    items: list[Any], inherited: dict[str, Any], top: dict[str, Any]
) -> list[tuple[Any, ...]]:
    """Each provider in written order with its effective settings: its own, else the nearest
    enclosing nested route's, else the policy's; weight its own or 1."""
    found: list[tuple[Any, ...]] = []
    for item in items:
        table = {"provider": item} if isinstance(item, str) else item
        merged = {key: table.get(key, inherited.get(key)) for key in SETTINGS}
        if "targets" in table:
            found.extend(expected_leaves(table["targets"], merged, top))
        else:
            effective = tuple(top[key] if merged[key] is None else merged[key] for key in SETTINGS)
            found.append((table["provider"], *effective, float(table.get("weight", 1.0))))
    return found


@settings(max_examples=60, deadline=None)
@given(
    route_targets(),
    st.sampled_from([s.value for s in Strategy]),
    st.fixed_dictionaries({key: SECONDS for key in OVERRIDES[:3]}),
    st.integers(min_value=1, max_value=5),
)
def test_any_decoded_route_keeps_its_order_and_each_target_s_effective_limits(
    targets: list[Any], strategy: str, limits: dict[str, float], max_attempts: int
) -> None:
    """For any route written in TOML, nested to depth three, the plan's leaves are its providers
    in written order, each with its own setting, else its nearest route's, else the policy's."""
    document = {
        "version": 1,
        "route": {"strategy": strategy, "targets": targets},
        "limits": limits,
        "retry": {"max_attempts": max_attempts},
    }
    policy = policy_of(tomli_w.dumps(document))
    plan = plan_of(policy)
    top = {**limits, "max_attempts": max_attempts}
    got = [
        (
            t.provider.name,
            t.attempt_timeout_s,
            t.first_token_timeout_s,
            t.idle_timeout_s,
            t.max_attempts,
            t.weight,
        )
        for t in leaves(plan)
    ]
    assert got == expected_leaves(targets, {}, top)
    assert plan.strategy == Strategy(strategy)


@settings(max_examples=60, deadline=None)
@given(route_targets(), st.fixed_dictionaries({key: SECONDS for key in OVERRIDES[:3]}))
def test_the_first_leaf_and_the_probe_timeout_are_read_off_the_leaves(
    targets: list[Any], limits: dict[str, float]
) -> None:
    """What every run asks of its plan without walking it by generators: the first target is
    the first leaf, and a probe may take as long as the longest attempt timeout of the leaves."""
    plan = plan_of(policy_of(tomli_w.dumps({"version": 1, "route": {"targets": targets}, "limits": limits})))
    assert first_leaf(plan) == next(leaves(plan))
    assert probe_timeout_s(plan) == max(t.attempt_timeout_s for t in leaves(plan))


def test_a_provider_spec_in_the_plan_is_the_resolved_one() -> None:
    """A built-in the policy overrides appears in the plan with the policy's fields."""
    policy = policy_of(
        """
        version = 1
        [providers.glm-direct]
        model = "glm-5"
        input_usd_per_mtok = 2.0
        [route]
        targets = ["glm-direct"]
        """
    )
    [leaf] = leaves(plan_of(policy))
    provider: ProviderSpec = leaf.provider
    assert (provider.model, provider.input_usd_per_mtok) == ("glm-5", 2.0)


# -- named routes --------------------------------------------------------------------------------

ROUTED = """
version = 1
name = "routed"
[route]
targets = ["glm-direct"]
[routes.deep]
strategy = "hedged"
hedge_after_s = 0.5
targets = ["anthropic-direct", { provider = "glm-direct", max_attempts = 1 }]
[routes.chair]
targets = ["aiceo-gateway"]
[limits]
deadline_s = 60
[budget]
daily_usd = 3
"""


def test_a_named_route_plans_its_own_targets_and_strategy_under_the_policy_s_rules() -> None:
    """``build_plan(..., route=NAME)`` plans that route's targets, strategy and hedge delay, with
    the run-wide limits, retry and breaker rules every route shares; ``default`` is ``[route]``."""
    policy = policy_of(ROUTED)
    deep = plan_of(policy, route="deep")
    assert names(deep) == ["anthropic-direct", "glm-direct"]
    assert (deep.strategy, deep.hedge_after_s) == (Strategy.HEDGED, 0.5)
    assert [t.max_attempts for t in leaves(deep)] == [2, 1]
    default = plan_of(policy, route="default")
    assert default == plan_of(policy)
    assert names(default) == ["glm-direct"]
    assert (deep.limits, deep.retry, deep.breaker) == (default.limits, default.retry, default.breaker)
    assert deep.limits.deadline_s == 60


def test_an_unknown_route_name_is_a_failure_listing_the_routes() -> None:
    """A route the policy lacks fails the plan (``unknown_route``) with every route's name."""
    policy = policy_of(ROUTED)
    result = build_plan(policy, resolve_providers(policy, BUILTINS), route="nope")
    assert isinstance(result, Failure)
    assert result.failure().kind == "unknown_route"
    assert str(result.failure()) == 'no route named "nope"; routes: default, deep, chair'


def test_a_named_route_s_caps_are_the_budget_s_and_its_own_providers_quotas() -> None:
    """Each route's plan carries the policy's dollar caps and the quotas of the providers that route
    names, not those of another route."""
    policy = policy_of(ROUTED)
    providers = resolve_providers(policy, BUILTINS)
    chair = plan_of(policy, route="chair")
    deep = plan_of(policy, route="deep")
    assert chair.caps == policy_caps(policy, providers, "chair")
    assert "provider:aiceo-gateway:requests:18000s" in {cap.key for cap in chair.caps}
    assert "provider:aiceo-gateway:requests:18000s" not in {cap.key for cap in deep.caps}
    assert "policy:routed:usd:day" in {cap.key for cap in deep.caps}


ROUTE_NAMES = st.from_regex(r"[a-z][a-z0-9_-]{0,6}", fullmatch=True).filter(lambda n: n != "default")


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(ROUTE_NAMES, route_targets(), min_size=1, max_size=3), route_targets())
def test_every_declared_route_plans_exactly_the_providers_it_names(
    routes: dict[str, list[Any]], default: list[Any]
) -> None:
    """For any named routes (nested to depth three), each name builds a plan whose providers are
    exactly those that route names, in written order, and ``default`` builds ``[route]``'s."""
    document = {
        "version": 1,
        "route": {"targets": default},
        "routes": {name: {"targets": targets} for name, targets in routes.items()},
    }
    policy = policy_of(tomli_w.dumps(document))
    settings_of = {"attempt_timeout_s": 30.0, "first_token_timeout_s": 15.0, "idle_timeout_s": 20.0}
    top = {**settings_of, "max_attempts": 2}
    for name, targets in {"default": default, **routes}.items():
        plan = plan_of(policy, route=name)
        assert names(plan) == [leaf[0] for leaf in expected_leaves(targets, {}, top)]
        assert set(names(plan)) == set(route_providers(policy, name))
