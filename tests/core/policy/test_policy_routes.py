"""Named routes in a policy: ``[routes.NAME]`` beside ``[route]`` (named ``default``),
``[analysis.routes]`` sending perspectives to them, and ``[analysis] synthesis_route`` /
``synthesis``: how they decode, how their mistakes are reported (each at its line, all at once),
and how ``policy explain`` shows them."""

from __future__ import annotations

from typing import Any

import hypothesis.strategies as st
import tomli_w
from hypothesis import given, settings

from rmcore.policy import (
    DEFAULT_ROUTE,
    Policy,
    Route,
    Strategy,
    all_route_providers,
    explain,
    resolve_providers,
    route_providers,
)
from rmcore.providers import BUILTIN_NAMES, builtin_providers
from tests.core.helpers import policy_issues as issues
from tests.core.helpers import policy_of as decode

PANEL = """\
version = 1
name = "panel"

[route]
targets = ["glm-direct"]

[routes.deep]
strategy = "fastest"
targets = ["anthropic-direct", "glm-direct"]

[routes.chair]
targets = ["openai-direct"]

[analysis]
synthesis_route = "chair"

[analysis.routes]
security = "deep"
"""

ENV = {
    "GLM_API_URL": "http://127.0.0.1:9001/v1/chat/completions",
    "ANTHROPIC_API_URL": "http://127.0.0.1:9002/v1/messages",
    "OPENAI_API_URL": "http://127.0.0.1:9003/v1/chat/completions",
}


def explained(text: str) -> str:
    policy = decode(text, "p.toml")
    return explain(policy, resolve_providers(policy, builtin_providers(ENV)))


# -- decoding ------------------------------------------------------------------------------------


def test_named_routes_decode_beside_the_default_route() -> None:
    """``[routes.NAME]`` decode to routes with the same keys as ``[route]``; ``route_names`` lists
    ``default`` first, then the named ones in file order, and ``named_route`` finds each."""
    policy = decode(PANEL)
    assert policy.route_names() == ("default", "deep", "chair")
    assert policy.named_route(DEFAULT_ROUTE) == policy.route
    assert policy.named_route("deep") == Route(
        strategy=Strategy.FASTEST, targets=("anthropic-direct", "glm-direct")
    )
    assert policy.named_route("nope") is None


def test_analysis_sends_listed_perspectives_to_their_route_and_the_others_to_default() -> None:
    """``[analysis.routes]`` maps a perspective to a route; a perspective it does not list goes by
    ``default``; the synthesis goes by ``synthesis_route`` and is on unless turned off."""
    analysis = decode(PANEL).analysis
    assert analysis.route_for("security") == "deep"
    assert analysis.route_for("marketing") == "default"
    assert (analysis.synthesis, analysis.synthesis_route) == (True, "chair")


def test_a_policy_without_named_routes_has_the_default_alone() -> None:
    """Without ``[routes]`` the only route is ``default``; the synthesis is on, by ``default``."""
    policy = decode("version = 1\n")
    assert policy.route_names() == ("default",)
    assert (policy.analysis.synthesis, policy.analysis.synthesis_route) == (True, "default")
    assert decode("version = 1\n[analysis]\nsynthesis = false\n").analysis.synthesis is False


def test_route_providers_reads_one_route_and_all_route_providers_every_route() -> None:
    """``route_providers`` names the providers of one route (default: ``[route]``);
    ``all_route_providers`` those of every route, ``[route]``'s first, once each."""
    policy = decode(PANEL)
    assert route_providers(policy) == ["glm-direct"]
    assert route_providers(policy, "deep") == ["anthropic-direct", "glm-direct"]
    assert route_providers(policy, "nope") == []
    assert all_route_providers(policy) == ["glm-direct", "anthropic-direct", "openai-direct"]


# -- mistakes, each at its line ------------------------------------------------------------------


def test_an_unknown_route_in_analysis_routes_is_refused_at_its_line() -> None:
    """A perspective sent to a route the policy lacks is refused at its line, listing the routes."""
    text = PANEL.replace('security = "deep"', 'security = "nope"')
    [issue] = issues(text, "it.toml")
    expected = 'it.toml:18: $.analysis.routes.security: no route named "nope"; routes: default, deep, chair'
    assert str(issue) == expected


def test_an_unknown_synthesis_route_is_refused_at_its_line_with_a_suggestion() -> None:
    """A ``synthesis_route`` the policy lacks is refused at its line, with the closest name."""
    [issue] = issues(PANEL.replace('synthesis_route = "chair"', 'synthesis_route = "chiar"'))
    assert (issue.line, issue.path) == (15, "$.analysis.synthesis_route")
    assert issue.message == 'no route named "chiar"; routes: default, deep, chair; did you mean `chair`?'


def test_analysis_routes_names_only_known_perspectives() -> None:
    """An ``[analysis.routes]`` key that is no perspective (of the eight or ``[perspectives]``) is
    an error listing the known ids; one defined under ``[perspectives]`` is accepted."""
    [issue] = issues(PANEL.replace('security = "deep"', 'securty = "deep"'))
    assert (issue.line, issue.path) == (18, "$.analysis.routes.securty")
    assert "unknown perspective `securty`" in issue.message
    assert "security, architecture, simplicity, financial, marketing, ux, growth, emotional" in issue.message
    assert "did you mean `security`?" in issue.message
    legal = PANEL + 'legal = "deep"\n[perspectives.legal]\ntitle = "Legal"\nsystem = "You are a lawyer."\n'
    assert decode(legal).analysis.route_for("legal") == "deep"


def test_routes_default_is_reserved_for_route() -> None:
    """``[routes.default]`` is an error saying that ``default`` is ``[route]``'s name."""
    [issue] = issues('version = 1\n[routes.default]\ntargets = ["glm-direct"]\n')
    assert (issue.line, issue.path) == (2, "$.routes.default")
    assert "`default` is the name of [route]" in issue.message


def test_route_names_are_lowercase_letters_digits_dashes_and_underscores() -> None:
    """A route name with other characters is refused at its header; ``a-1_b`` is accepted."""
    [issue] = issues('version = 1\n[routes.Deep]\ntargets = ["glm-direct"]\n')
    assert (issue.line, issue.path) == (2, "$.routes.Deep")
    assert "lowercase letters, digits, '-' or '_'" in issue.message
    assert decode('version = 1\n[routes.a-1_b]\ntargets = ["glm-direct"]\n').route_names()[1] == "a-1_b"


def test_a_named_route_must_write_its_targets() -> None:
    """A named route without ``targets`` is refused (it would silently go to the default primary)."""
    [issue] = issues('version = 1\n[routes.deep]\nstrategy = "fastest"\n')
    assert (issue.line, issue.path) == (2, "$.routes.deep")
    assert "needs `targets`" in issue.message


def test_an_unknown_provider_in_a_named_route_is_refused_at_its_line() -> None:
    """A named route's provider is checked as ``[route]``'s are: unknown, at its line, with a suggestion."""
    [issue] = issues('version = 1\n[routes.deep]\ntargets = ["glm-direct",\n  "antropic-direct"]\n')
    assert (issue.line, issue.path) == (4, "$.routes.deep.targets[1]")
    assert "unknown provider `antropic-direct`" in issue.message
    assert "did you mean `anthropic-direct`?" in issue.message


def test_unknown_keys_in_a_named_route_get_a_suggestion_like_route() -> None:
    """A misspelt key in ``[routes.NAME]`` is reported with its path, line and the key meant, as in
    ``[route]``; so is an unknown strategy."""
    found = issues('version = 1\n[routes.deep]\ntargets = ["glm-direct"]\nstrategi = "fastest"\n')
    assert [(i.line, i.path) for i in found] == [(4, "$.routes.deep.strategi")]
    assert "did you mean `strategy`?" in found[0].message
    [bad] = issues('version = 1\n[routes.deep]\ntargets = ["glm-direct"]\nstrategy = "fastst"\n')
    assert (bad.line, bad.path) == (4, "$.routes.deep.strategy")
    assert "did you mean `fastest`?" in bad.message


def test_every_route_mistake_is_reported_at_once() -> None:
    """Mistakes in several routes and in ``[analysis]`` are all reported in one round, in line
    order: a mistake in one named route hides nothing about another, nor about ``[analysis]``."""
    text = """\
        version = 1
        [routes.deep]
        targets = ["glm-direct"]
        strategi = "fastest"
        [routes.chair]
        targets = ["openai-drect"]
        [analysis]
        synthesis_route = "chiar"
        [analysis.routes]
        security = "nope"
        """
    found = issues(text)
    assert [(i.line, i.path) for i in found] == [
        (4, "$.routes.deep.strategi"),
        (6, "$.routes.chair.targets[0]"),
        (8, "$.analysis.synthesis_route"),
        (10, "$.analysis.routes.security"),
    ]


def test_a_route_taken_away_by_a_wrong_value_does_not_mislead_analysis() -> None:
    """When a named route is itself wrong (not a table), the perspectives that name it are not
    also told that it does not exist: only the route's own mistake is reported."""
    found = issues('version = 1\nroutes.deep = "glm-direct"\n[analysis.routes]\nsecurity = "deep"\n')
    assert [i.path for i in found] == ["$.routes.deep"]


def test_synthesis_is_true_or_false() -> None:
    """``[analysis] synthesis`` takes true or false only."""
    [issue] = issues('version = 1\n[analysis]\nsynthesis = "no"\n')
    assert (issue.line, issue.path) == (3, "$.analysis.synthesis")
    assert "expected true or false" in issue.message


NAMES = st.from_regex(r"[a-z][a-z0-9_-]{0,8}", fullmatch=True).filter(lambda n: n != DEFAULT_ROUTE)


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(NAMES, st.lists(st.sampled_from(BUILTIN_NAMES), min_size=1, max_size=3), max_size=4),
    st.data(),
)
def test_any_declared_routes_decode_and_references_to_them_are_accepted(
    routes: dict[str, list[str]], data: st.DataObject
) -> None:
    """For any set of valid named routes, the decoded policy lists exactly those names after
    ``default``, each with its providers; perspectives and the synthesis may name any of them."""
    names = ["default", *routes]
    document: dict[str, Any] = {
        "version": 1,
        "routes": {name: {"targets": targets} for name, targets in routes.items()},
        "analysis": {
            "synthesis_route": data.draw(st.sampled_from(names)),
            "routes": {"security": data.draw(st.sampled_from(names))},
        },
    }
    policy: Policy = decode(tomli_w.dumps(document))
    assert policy.route_names() == tuple(names)
    for name, targets in routes.items():
        assert route_providers(policy, name) == list(dict.fromkeys(targets))


# -- explain -------------------------------------------------------------------------------------


def test_explain_shows_every_route_and_who_goes_by_it() -> None:
    """Each route is shown, default first then the named ones in file order, with the perspectives
    it asks and whether the synthesis goes by it; the analysis paragraph names the synthesis route."""
    text = explained(PANEL)
    lines = text.splitlines()
    heads = [line for line in lines if line.startswith("Route ")]
    assert heads[0].startswith(
        'Route "default" (sequential), for architecture, simplicity, financial, marketing, ux, growth'
        " and emotional: the targets in order"
    )
    assert heads[1].startswith('Route "deep" (fastest), for security: all targets at once')
    assert heads[2].startswith('Route "chair" (sequential), for the synthesis: ')
    deep = lines.index(heads[1])
    assert lines[deep + 1].strip().startswith("1. anthropic-direct: claude-sonnet-4-5")
    assert lines[deep + 2].strip().startswith("2. glm-direct:")
    assert 'the synthesis, weighs their answers into a decision, by route "chair".' in text


def test_explain_says_a_route_nobody_uses_is_for_ask() -> None:
    """A named route no perspective uses is shown as one for ``rmgr ask --route NAME``."""
    text = explained('version = 1\n[routes.spare]\ntargets = ["glm-direct"]\n')
    assert 'Route "spare" (sequential), for no perspective (rmgr ask --route spare):' in text
    assert 'Route "default" (sequential), for security, architecture,' in text
    assert "emotional and the synthesis:" in text


def test_explain_of_a_single_route_policy_keeps_its_words_and_names_the_synthesis() -> None:
    """A policy without named routes keeps its ``Route (strategy):`` line; the analysis paragraph
    says the synthesis goes by the route above, or that it is off."""
    text = explained('version = 1\n[route]\ntargets = ["glm-direct"]\n')
    assert "\nRoute (sequential): the targets in order;" in text
    assert "the synthesis, weighs their answers into a decision, by the route above." in text
    off = explained('version = 1\n[route]\ntargets = ["glm-direct"]\n[analysis]\nsynthesis = false\n')
    assert "No synthesis (synthesis = false)" in off


def test_explain_counts_the_quotas_of_every_route() -> None:
    """Quotas of a provider only a named route uses are explained too."""
    text = explained(
        'version = 1\n[route]\ntargets = ["glm-direct"]\n[routes.deep]\ntargets = ["local"]\n'
        '[providers.local]\nkind = "openai"\nurl = "http://127.0.0.1:1/v1"\nmodel = "m"\n'
        "requests_per_window = 5\n"
    )
    assert "local takes at most 5 requests per" in text
