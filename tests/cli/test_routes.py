"""Named routes from the shell: ``rmgr policy validate`` and ``explain`` on a policy with
``[routes.NAME]``, ``rmgr ask --route NAME`` against the sandbox, ``rmcli.api``'s ``route=``, and
``RouteSetup.for_route`` (the plan of each route, built once)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from rmcli.api import ConfigError, ask
from rmcli.config import RouteSetup, route_for
from rmcli.sandbox import Sandbox
from rmcore.plan import leaves
from rmcore.policy import Policy
from tests.cli.helpers import Cli, SandboxProcess, write_policy
from tests.core.helpers import policy_of

PANEL = """\
version = 1
name = "panel"

[route]
targets = ["glm-direct"]

[routes.deep]
targets = ["anthropic-direct"]

[routes.chair]
strategy = "hedged"
hedge_after_s = "p95"
targets = ["openai-direct", "glm-direct"]

[analysis]
synthesis_route = "chair"

[analysis.routes]
security = "deep"
"""

THREE_MISTAKES = """\
version = 1
[routes.deep]
targets = ["anthropic-direct"]
timeout_s = 5
[analysis]
synthesis_route = "chiar"
[analysis.routes]
security = "nope"
"""


def leaf_names(setup: RouteSetup) -> list[str]:
    return [leaf.provider.name for leaf in leaves(setup.plan)]


# -- policy validate / explain -------------------------------------------------------------------


def test_validate_reports_three_route_mistakes_each_at_its_line(cli: Cli) -> None:
    """``policy validate`` on a file with three route mistakes (an unknown key in a named route, an
    unknown synthesis route, a perspective sent to an unknown route) prints all three as
    ``FILE:LINE: $.path: message`` and exits 2."""
    write_policy(cli.home, "routes.toml", THREE_MISTAKES)
    done = cli.run("policy", "validate", "routes.toml")
    assert done.returncode == 2
    errors = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("routes.toml:")]
    assert len(errors) == 3, done.stdout + done.stderr
    assert errors[0].startswith("routes.toml:4: $.routes.deep.timeout_s: unknown key `timeout_s`")
    assert errors[1].startswith('routes.toml:6: $.analysis.synthesis_route: no route named "chiar"; routes:')
    assert errors[2] == (
        'routes.toml:8: $.analysis.routes.security: no route named "nope"; routes: default, deep'
    )


def test_validate_names_the_routes_of_a_valid_policy(cli: Cli) -> None:
    """A valid policy with named routes is reported valid, with its routes' names."""
    write_policy(cli.home, "panel.toml", PANEL)
    done = cli.run("policy", "validate", "panel.toml")
    assert done.returncode == 0, done.stderr
    valid = "panel.toml: valid (panel: sequential, 1 target(s); routes: default, deep, chair)"
    assert done.stdout.strip() == valid


def test_explain_shows_every_route_and_the_perspectives_using_it(cli: Cli) -> None:
    """``policy explain`` shows the default route then each named one, with the perspectives that
    go by it and the synthesis's route."""
    write_policy(cli.home, "panel.toml", PANEL)
    done = cli.run("policy", "explain", "panel.toml")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    default = out.index('Route "default" (sequential), for architecture, simplicity, financial,')
    deep = out.index('Route "deep" (sequential), for security: ')
    chair = out.index('Route "chair" (hedged), for the synthesis: ')
    assert default < deep < chair
    assert out.index("1. anthropic-direct:", deep) < chair
    assert 'weighs their answers into a decision, by route "chair".' in out


# -- rmgr ask --route ----------------------------------------------------------------------------


def test_ask_route_sends_to_the_named_route_s_provider(cli: Cli, sandbox: SandboxProcess) -> None:
    """``ask --route deep`` is answered by the deep route's provider (anthropic-direct), and the
    default route's provider receives nothing; without ``--route`` the default route answers."""
    write_policy(cli.home, "panel.toml", PANEL)
    user = cli.with_env(sandbox.env)
    prompt = f"route test {uuid.uuid4().hex}"
    done = user.run("ask", prompt, "--policy", "panel.toml", "--route", "deep", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["provider"] == "anthropic-direct"
    assert [a["provider"] for a in result["attempts"]] == ["anthropic-direct"]
    assert len([r for r in sandbox.log("anthropic-direct") if prompt in str(r["body"])]) == 1
    assert not [r for r in sandbox.log("glm-direct") if prompt in str(r["body"])]

    plain = user.run("ask", prompt, "--policy", "panel.toml", "--json")
    assert plain.returncode == 0, plain.stderr
    assert json.loads(plain.stdout)["provider"] == "glm-direct"


def test_ask_with_an_unknown_route_exits_2_with_one_line(cli: Cli, sandbox: SandboxProcess) -> None:
    """``ask --route nope`` exits 2 with one line naming the option, the policy and its routes;
    nothing is sent."""
    write_policy(cli.home, "panel.toml", PANEL)
    prompt = f"unknown route {uuid.uuid4().hex}"
    done = cli.with_env(sandbox.env).run("ask", prompt, "--policy", "panel.toml", "--route", "nope")
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.strip() == (
        'error: --route nope: no route named "nope" in panel.toml; routes: default, deep, chair'
    )
    for name in ("glm-direct", "anthropic-direct", "openai-direct"):
        assert not [r for r in sandbox.log(name) if prompt in str(r["body"])]


# -- rmcli.api and RouteSetup --------------------------------------------------------------------


@pytest.mark.anyio
async def test_api_ask_takes_a_route(tmp_path: Path) -> None:
    """``rmcli.api.ask(..., route=NAME)`` routes by that route; an unknown name is a ConfigError."""
    async with Sandbox(stream_delay_s=0.0) as box:
        outcome = await ask("Hi", policy=PANEL, env=box.env(), state_home=tmp_path, route="deep")
        assert outcome.provider == "anthropic-direct"
        default = await ask("Hi", policy=PANEL, env=box.env(), state_home=tmp_path, record=False)
        assert default.provider == "glm-direct"
        with pytest.raises(ConfigError, match='no route named "nope"'):
            await ask("Hi", policy=PANEL, env=box.env(), state_home=tmp_path, route="nope")


ENV = {
    "GLM_API_URL": "http://127.0.0.1:9001/v1/chat/completions",
    "GLM_API_KEY": "k1",
    "ANTHROPIC_API_URL": "http://127.0.0.1:9002/v1/messages",
    "ANTHROPIC_API_KEY": "k2",
    "OPENAI_API_URL": "http://127.0.0.1:9003/v1/chat/completions",
    "OPENAI_API_KEY": "k3",
}


def panel() -> Policy:
    return policy_of(PANEL, "panel.toml")


def test_for_route_builds_each_route_s_plan_once() -> None:
    """``for_route`` gives a setup whose plan runs that route, the same object on every call (from
    any setup of the policy); ``default`` is the setup itself; ``route_names`` lists them all."""
    setup = route_for(panel(), dict(ENV))
    assert setup.route_names() == ("default", "deep", "chair")
    assert setup.for_route("default") is setup
    deep = setup.for_route("deep")
    assert (deep.route, leaf_names(deep)) == ("deep", ["anthropic-direct"])
    assert setup.for_route("deep") is deep
    assert deep.for_route("default") is setup
    assert leaf_names(setup) == ["glm-direct"]


def test_a_perspective_and_the_synthesis_find_their_routes() -> None:
    """``for_perspective`` follows ``[analysis.routes]`` (``default`` otherwise); ``for_synthesis``
    follows ``synthesis_route``, and is None when the synthesis is off."""
    setup = route_for(panel(), dict(ENV))
    assert setup.for_perspective("security").route == "deep"
    assert setup.for_perspective("marketing") is setup
    synthesis = setup.for_synthesis()
    assert synthesis is not None and leaf_names(synthesis) == ["openai-direct", "glm-direct"]
    off = policy_of(PANEL.replace('synthesis_route = "chair"', "synthesis = false"))
    assert route_for(off, dict(ENV)).for_synthesis() is None


def test_for_route_refuses_an_unknown_name_listing_the_routes() -> None:
    """An unknown route name is a ConfigError naming the policy's file and its routes."""
    setup = route_for(panel(), dict(ENV), policy_path=Path("panel.toml"))
    with pytest.raises(ConfigError) as caught:
        setup.for_route("nope")
    assert str(caught.value) == 'no route named "nope" in panel.toml; routes: default, deep, chair'


def test_observed_latency_is_resolved_per_route() -> None:
    """Only a route that hedges on ``"p95"`` uses observed latency, and resolving it keeps the route."""
    setup = route_for(panel(), dict(ENV))
    chair = setup.for_route("chair")
    assert not setup.uses_observed_latency()
    assert chair.uses_observed_latency()
    resolved = chair.with_observed_latency({"openai-direct": 0.75})
    assert (resolved.route, resolved.plan.hedge_after_s) == ("chair", 0.75)
    assert leaf_names(resolved) == ["openai-direct", "glm-direct"]


def test_an_analysis_resolves_the_p95_of_every_route() -> None:
    """An analysis sends by every route: the default route does not hedge on ``"p95"``, the
    chair does, so the policy as a whole uses observed latency; the default setup resolved from
    it hands the chair the observed figure, not the 2 s guess."""
    setup = route_for(panel(), dict(ENV))
    assert setup.uses_observed_latency(every_route=True)
    resolved = setup.with_observed_latency({"openai-direct": 0.75})
    assert resolved.for_synthesis() is not None
    assert resolved.for_route("chair").plan.hedge_after_s == 0.75
    assert setup.for_route("chair").plan.hedge_after_s == 2.0


def test_every_route_s_providers_are_checked_when_the_route_is_loaded() -> None:
    """A provider only a named route uses must have its key too: the run is refused before it
    starts, rather than failing at the synthesis."""
    env = {k: v for k, v in ENV.items() if k != "OPENAI_API_KEY"}
    with pytest.raises(ConfigError, match="provider openai-direct needs an API key"):
        route_for(panel(), env)


def test_provider_option_replaces_every_route() -> None:
    """``--provider`` (``providers=``) replaces the targets of every route, so that every
    perspective and the synthesis go to that provider; the route names stay valid."""
    setup = route_for(panel(), dict(ENV), providers=["openai-direct"])
    for name in setup.route_names():
        assert leaf_names(setup.for_route(name)) == ["openai-direct"]
