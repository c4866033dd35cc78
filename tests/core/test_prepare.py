"""The policy path as one pipeline (``rmcore.prepare``): text → policy → providers → checked route
→ plan, each step a ``Result``, the first failure the answer."""

from __future__ import annotations

from returns.result import Failure, Success

from rmcore.plan import leaves
from rmcore.policy import Policy, decode_policy
from rmcore.policy.schema import Route
from rmcore.prepare import (
    STRICT,
    PlannedRoute,
    Trust,
    check_providers,
    check_trust,
    decode,
    plan_route,
    prepare,
    prepare_text,
    resolve,
)
from rmcore.problems import Problem, ProblemKind
from rmcore.providers import BUILTIN_NAMES, builtin_providers

ENV = {
    "GLM_API_URL": "https://glm.example/v1/chat/completions",
    "ANTHROPIC_API_URL": "https://anthropic.example/v1/messages",
}
BUILTINS = builtin_providers(ENV)
GOOD = 'version = 1\n[route]\nstrategy = "fastest"\ntargets = ["glm-direct", "anthropic-direct"]\n'


def failure_of(result: object) -> Problem:
    assert isinstance(result, Failure), result
    problem = result.failure()
    assert isinstance(problem, Problem)
    return problem


def test_a_valid_policy_text_becomes_a_plan_over_its_providers() -> None:
    """Every step succeeds: the plan runs the route as written, over the resolved providers."""
    result = prepare_text(GOOD, "fast.toml", BUILTINS)
    assert isinstance(result, Success)
    planned: PlannedRoute = result.unwrap()
    assert planned.policy.name == "fast"
    assert [t.provider.name for t in leaves(planned.plan)] == ["glm-direct", "anthropic-direct"]
    assert planned.providers["glm-direct"].url == ENV["GLM_API_URL"]
    assert planned.plan.breaker.enabled


def test_an_invalid_text_fails_at_decoding_with_every_issue() -> None:
    """An invalid policy stops the pipeline at its first step: ``invalid_policy``, its message the
    issues one per line (as ``rmgr policy validate`` prints them), the issues kept."""
    text = "version = 1\n[limits]\ndeadline_s = -1\n"
    problem = failure_of(prepare_text(text, "bad.toml", BUILTINS))
    issues = decode_policy(text, "bad.toml", BUILTIN_NAMES).failure()
    assert problem.kind is ProblemKind.INVALID_POLICY
    assert problem.issues == issues
    assert str(problem) == "\n".join(str(i) for i in issues)


def test_decode_fills_in_the_default_targets() -> None:
    """A file without ``route.targets`` routes to the default targets the shell passes."""
    policy = decode("version = 1\n", "p.toml", default_targets=("glm-direct",)).unwrap()
    assert policy.route.targets == ("glm-direct",)


def test_an_unknown_provider_is_named_with_the_known_ones() -> None:
    """A route naming a provider nothing defines fails at the check, naming it."""
    policy = Policy(version=1, route=Route(targets=("glm-direct", "nowhere")))
    problem = failure_of(prepare(policy, BUILTINS))
    assert (problem.kind, problem.subject) == (ProblemKind.UNKNOWN_PROVIDER, "nowhere")
    assert str(problem).startswith("unknown provider 'nowhere'; known providers: aiceo-gateway,")


def test_a_provider_unusable_as_configured_fails_with_its_problems() -> None:
    """A built-in whose URL is not set is unusable: the problem says which variable to set."""
    policy = Policy(version=1, route=Route(targets=("openai-direct",)))
    problem = failure_of(prepare(policy, BUILTINS))
    assert (problem.kind, problem.subject) == (ProblemKind.UNUSABLE_PROVIDER, "openai-direct")
    assert "OPENAI_API_URL is not set" in str(problem)


def test_the_first_failing_provider_in_route_order_is_the_answer() -> None:
    """Both targets fail the check: the one written first is reported."""
    policy = Policy(version=1, route=Route(targets=("openai-direct", "nowhere")))
    assert failure_of(prepare(policy, BUILTINS)).subject == "openai-direct"


LEAK = (
    'version = 1\n[providers.mine]\nkind = "openai"\nurl = "https://collector.example/v1"\n'
    'model = "m"\nkey_env = "GLM_API_KEY"\n[route]\ntargets = ["mine"]\n'
)


def test_a_key_sent_to_a_foreign_origin_is_refused_unless_allowed() -> None:
    """A policy that would send a built-in's key elsewhere is ``untrusted_provider``; allowing
    that origin lets it through."""
    problem = failure_of(prepare_text(LEAK, "leak.toml", BUILTINS))
    assert problem.kind is ProblemKind.UNTRUSTED_PROVIDER
    assert "would send GLM_API_KEY to https://collector.example:443" in str(problem)
    allowed = Trust(allowed_origins=("https://collector.example",))
    assert isinstance(prepare_text(LEAK, "leak.toml", BUILTINS, trust=allowed), Success)


def test_plain_http_to_a_remote_host_is_refused_unless_allowed() -> None:
    """Plain http to a host that is not loopback is refused by default (``STRICT``), allowed by
    ``allow_http``; loopback is always fine."""
    remote = 'version = 1\n[providers.lan]\nkind = "openai"\nurl = "http://10.0.0.5/v1"\nmodel = "m"\n'
    remote += '[route]\ntargets = ["lan"]\n'
    assert failure_of(prepare_text(remote, "lan.toml", BUILTINS, trust=STRICT)).kind is (
        ProblemKind.UNTRUSTED_PROVIDER
    )
    assert isinstance(prepare_text(remote, "lan.toml", BUILTINS, trust=Trust(allow_http=True)), Success)
    local = remote.replace("10.0.0.5", "127.0.0.1")
    assert isinstance(prepare_text(local, "local.toml", BUILTINS), Success)


def test_the_steps_compose_by_hand_as_the_pipeline_does() -> None:
    """A shell may run the steps itself (adding its own between them): the same steps, bound in
    the same order, give the same plan as ``prepare``."""
    policy = decode(GOOD, "fast.toml").unwrap()
    by_hand = (
        check_providers(resolve(BUILTINS)(policy))
        .bind(check_trust())
        .bind(plan_route(observed_p95_s={}, breakers=False))
    )
    assert by_hand == prepare(policy, BUILTINS, breakers=False)


def test_observed_latency_reaches_a_p95_hedge() -> None:
    """``observed_p95_s`` is handed to the plan: a hedge on ``"p95"`` waits the first target's."""
    text = 'version = 1\n[route]\nstrategy = "hedged"\nhedge_after_s = "p95"\ntargets = ["glm-direct"]\n'
    planned = prepare_text(text, "h.toml", BUILTINS, observed_p95_s={"glm-direct": 0.75}).unwrap()
    assert planned.plan.hedge_after_s == 0.75


ROUTED = (
    'version = 1\n[route]\ntargets = ["glm-direct"]\n'
    '[routes.deep]\nstrategy = "fastest"\ntargets = ["anthropic-direct", "glm-direct"]\n'
)


def test_the_pipeline_plans_the_named_route_it_is_asked_for() -> None:
    """``prepare_text(..., route=NAME)`` plans that route; the default is ``[route]``; an unknown
    name is an ``unknown_route`` problem."""
    deep = prepare_text(ROUTED, "r.toml", BUILTINS, route="deep").unwrap()
    assert deep.route == "deep"
    assert [leaf.provider.name for leaf in leaves(deep.plan)] == ["anthropic-direct", "glm-direct"]
    default = prepare_text(ROUTED, "r.toml", BUILTINS).unwrap()
    assert default.route == "default"
    assert [leaf.provider.name for leaf in leaves(default.plan)] == ["glm-direct"]
    unknown = failure_of(prepare_text(ROUTED, "r.toml", BUILTINS, route="nope"))
    assert unknown.kind is ProblemKind.UNKNOWN_ROUTE


def test_every_route_s_providers_are_checked_before_any_plan() -> None:
    """A provider unusable as configured is refused even when only a named route uses it."""
    text = ROUTED + '[routes.chair]\ntargets = ["openai-direct"]\n'
    problem = failure_of(prepare_text(text, "r.toml", BUILTINS))
    assert (problem.kind, problem.subject) == (ProblemKind.UNUSABLE_PROVIDER, "openai-direct")
