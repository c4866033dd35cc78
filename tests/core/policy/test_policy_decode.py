"""Decoding policy text: every rejection names the file, the line, the path and the reason."""

from __future__ import annotations

from typing import Any

import hypothesis.strategies as st
import pytest
import tomli_w
from hypothesis import given, settings
from returns.result import Failure, Success

from rmcore.errors import ErrorKind
from rmcore.policy import NON_ATTEMPT_KINDS, Policy, PolicyIssue, Strategy, TargetTable, decode_policy
from rmcore.providers import BUILTIN_NAMES, ProviderKind
from tests.core.helpers import policy_issues as issues
from tests.core.helpers import policy_of as decode


def only_issue(text: str) -> PolicyIssue:
    found = issues(text)
    assert len(found) == 1, found
    return found[0]


# -- stage 2: types and constraints --------------------------------------------------------------


def test_typo_in_a_key_names_the_full_path_the_line_and_a_suggestion() -> None:
    """A misspelt key is reported with its full path, its line and the key it was probably meant to be."""
    issue = only_issue(
        """\
        version = 1

        [limits]
        attempt_timeout_s = 10
        deadlin_s = 60
        """
    )
    assert issue.path == "$.limits.deadlin_s"
    assert issue.line == 5
    assert "did you mean `deadline_s`?" in issue.message
    assert str(issue) == f"policy.toml:5: $.limits.deadlin_s: {issue.message}"


def test_typo_at_the_top_level() -> None:
    """A misspelt top-level key is located and the right one suggested."""
    issue = only_issue('version = 1\ndescripton = "x"\n')
    assert (issue.path, issue.line) == ("$.descripton", 2)
    assert "did you mean `description`?" in issue.message


def test_unknown_key_without_a_close_match_lists_the_known_keys() -> None:
    """An unknown key that resembles none lists the keys the table accepts."""
    issue = only_issue("version = 1\n[breaker]\nzzz = 1\n")
    assert issue.path == "$.breaker.zzz"
    assert "failure_threshold" in issue.message and "cooldown_s" in issue.message


def test_typo_in_a_dotted_key() -> None:
    """A misspelt key written as a dotted key is located on its line."""
    issue = only_issue("version = 1\nlimits.deadlin_s = 3\n")
    assert (issue.path, issue.line) == ("$.limits.deadlin_s", 2)


def test_typo_inside_a_provider_table_names_the_provider() -> None:
    """msgspec hides table keys as ``[...]``; the issue names the provider anyway."""
    issue = only_issue(
        """\
        version = 1
        [providers.local-llama]
        kind = "openai"
        url = "http://127.0.0.1:11434/v1/chat/completions"
        modle = "llama3.1"
        """
    )
    assert (issue.path, issue.line) == ("$.providers.local-llama.modle", 5)
    assert "did you mean `model`?" in issue.message


def test_wrong_type_inside_the_second_provider_table() -> None:
    """A wrong type in the second of two provider tables names that provider's path and line."""
    issue = only_issue(
        """\
        version = 1
        [providers.one]
        kind = "openai"
        url = "http://127.0.0.1:1/v1/chat/completions"
        model = "m"
        [providers.two]
        kind = "openai"
        url = 8080
        model = "m"
        """
    )
    assert (issue.path, issue.line) == ("$.providers.two.url", 8)
    assert issue.message == "expected a string, got 8080"


def test_wrong_type() -> None:
    """A value of the wrong type says, in TOML's words, what was expected and what was found."""
    issue = only_issue('version = 1\n[limits]\ndeadline_s = "two minutes"\n')
    assert (issue.path, issue.line) == ("$.limits.deadline_s", 3)
    assert issue.message == "expected a number, got 'two minutes'"


def test_a_boolean_is_not_a_number() -> None:
    """``true`` is not accepted where an integer belongs."""
    issue = only_issue("version = 1\n[retry]\nmax_attempts = true\n")
    assert issue.path == "$.retry.max_attempts"
    assert issue.message == "expected an integer, got true"


def test_a_table_where_a_value_belongs() -> None:
    """A table written where a number belongs is located at the table's header."""
    issue = only_issue("version = 1\n[limits.deadline_s]\nx = 1\n")
    assert (issue.path, issue.line) == ("$.limits.deadline_s", 2)
    assert issue.message == "expected a number, got a table"


@pytest.mark.parametrize(
    ("table", "key", "value"),
    [
        ("limits", "attempt_timeout_s", "-1"),
        ("limits", "first_token_timeout_s", "0"),
        ("limits", "idle_timeout_s", "-0.5"),
        ("limits", "deadline_s", "0"),
        ("limits", "max_usd", "-0.01"),
        ("retry", "max_attempts", "0"),
        ("retry", "backoff_initial_s", "-1"),
        ("breaker", "failure_threshold", "0"),
        ("breaker", "cooldown_s", "-3"),
        ("analysis", "max_concurrency", "0"),
        ("analysis", "min_perspectives", "0"),
    ],
)
def test_impossible_values_are_rejected(table: str, key: str, value: str) -> None:
    """Timeouts, budgets, attempts and thresholds out of their range are rejected with the bound and the
    value."""
    issue = only_issue(f"version = 1\n[{table}]\n{key} = {value}\n")
    assert (issue.path, issue.line) == (f"$.{table}.{key}", 3)
    assert issue.message.startswith("must be >")
    assert issue.message.endswith(f"got {value}")


def test_negative_timeout_message() -> None:
    """A negative timeout reads as ``file:line: $.path: must be > 0, got -5``."""
    issue = only_issue("version = 1\n[limits]\nattempt_timeout_s = -5\n")
    assert str(issue) == "policy.toml:3: $.limits.attempt_timeout_s: must be > 0, got -5"


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("attempt_timeout_s = 0", "attempt_timeout_s"),
        ("first_token_timeout_s = -1", "first_token_timeout_s"),
        ("idle_timeout_s = 0", "idle_timeout_s"),
        ("weight = 0", "weight"),
        ("max_attempts = 0", "max_attempts"),
    ],
)
def test_per_target_overrides_must_be_positive(override: str, expected: str) -> None:
    """A target's own timeouts, weight and attempts must be positive, and are located in the target."""
    issue = only_issue(
        f"""\
        version = 1
        [route]
        targets = [
            "glm-direct",
            {{ provider = "openai-direct", {override} }},
        ]
        """
    )
    assert (issue.path, issue.line) == (f"$.route.targets[1].{expected}", 5)


def test_negative_price() -> None:
    """A negative price of a provider is located at its key."""
    issue = only_issue("version = 1\n[providers.glm-direct]\ninput_usd_per_mtok = -1\n")
    assert (issue.path, issue.line) == ("$.providers.glm-direct.input_usd_per_mtok", 3)


def test_empty_route_is_rejected() -> None:
    """A route without targets is rejected."""
    issue = only_issue("version = 1\n[route]\ntargets = []\n")
    assert (issue.path, issue.line, issue.message) == ("$.route.targets", 3, "must not be empty")


def test_unknown_strategy_suggests_the_right_one() -> None:
    """An unknown strategy lists the six strategies and suggests the closest."""
    issue = only_issue('version = 1\n[route]\nstrategy = "fastst"\n')
    assert issue.path == "$.route.strategy"
    assert "sequential, fastest, hedged, cheapest, weighted, compare" in issue.message
    assert "did you mean `fastest`?" in issue.message


def test_unknown_error_kind_in_retry_on() -> None:
    """An unknown error kind in ``retry.on`` is located by its index, the closest kind suggested."""
    issue = only_issue('version = 1\n[retry]\non = ["connection", "rate_limit"]\n')
    assert (issue.path, issue.line) == ("$.retry.on[1]", 3)
    assert "did you mean `rate_limited`?" in issue.message


def test_hedge_after_accepts_seconds_or_p95_only() -> None:
    """``hedge_after_s`` is a number of seconds or ``"p95"``, nothing else."""
    assert decode('version = 1\n[route]\nhedge_after_s = "p95"\n').route.hedge_after_s == "p95"
    assert decode("version = 1\n[route]\nhedge_after_s = 1\n").route.hedge_after_s == 1.0
    issue = only_issue('version = 1\n[route]\nhedge_after_s = "p99"\n')
    assert issue.message == "invalid value 'p99': expected a number or 'p95'; did you mean `p95`?"


def test_a_target_that_is_neither_a_name_nor_a_table() -> None:
    """A target that is neither a provider's name nor a table is located on its own line."""
    issue = only_issue("version = 1\n[route]\ntargets = [\n  'glm-direct',\n  3,\n]\n")
    assert (issue.path, issue.line) == ("$.route.targets[1]", 5)
    assert issue.message == "expected a string or a table, got 3"


def test_missing_version_has_no_line() -> None:
    """A missing ``version`` is reported without a line, since no line writes it."""
    issue = only_issue('name = "x"\n')
    assert (issue.path, issue.line) == ("$.version", None)
    assert str(issue) == "policy.toml: $.version: missing required key; a policy starts with `version = 1`"


def test_missing_required_key_of_a_perspective_points_at_its_table() -> None:
    """A perspective missing its required ``system`` is located at its table's header."""
    issue = only_issue('version = 1\n\n[perspectives.legal]\ntitle = "Legal"\n')
    assert (issue.path, issue.line) == ("$.perspectives.legal.system", 3)


def test_infinity_is_rejected() -> None:
    """``inf`` is not a budget: numbers must be finite."""
    issue = only_issue("version = 1\n[limits]\nmax_usd = inf\n")
    assert (issue.path, issue.line, issue.message) == ("$.limits.max_usd", 3, "must be a finite number")


# -- stage 1: syntax -----------------------------------------------------------------------------


def test_invalid_toml_reports_its_line() -> None:
    """Invalid TOML is one issue at the parser's line, without the parser's own position text."""
    issue = only_issue('version = 1\n\n[route\ntargets = ["glm-direct"]\n')
    assert issue.line == 3
    assert issue.path == "$"
    assert issue.message.startswith("invalid TOML: ")
    assert "(at line" not in issue.message
    assert str(issue).startswith("policy.toml:3: invalid TOML: ")


def test_invalid_toml_at_the_end_of_the_document_points_at_the_last_line() -> None:
    """TOML cut off at the end is located on the document's last line."""
    issue = only_issue("version = 1\n[route]\ntargets = [\n  'glm-direct',\n")
    assert issue.line == 4


# -- stage 3: meaning ----------------------------------------------------------------------------


def test_unknown_provider_name() -> None:
    """A route naming an unknown provider is located at the target, with the closest name suggested."""
    issue = only_issue('version = 1\n[route]\ntargets = ["aiceo-gateway", "glm-drect"]\n')
    assert (issue.path, issue.line) == ("$.route.targets[1]", 3)
    assert issue.message.startswith("unknown provider `glm-drect`")
    assert "did you mean `glm-direct`?" in issue.message


def test_unknown_provider_in_a_target_table() -> None:
    """An unknown provider inside a target table is located at its ``provider`` key."""
    issue = only_issue('version = 1\n[route]\ntargets = [{ provider = "nowhere" }]\n')
    assert issue.path == "$.route.targets[0].provider"


def test_a_provider_defined_in_the_policy_can_be_routed_to() -> None:
    """A provider the policy defines can be routed to, and needs no key unless it names one."""
    policy = decode(
        """\
        version = 1
        [providers.local-llama]
        kind = "openai"
        url = "http://127.0.0.1:11434/v1/chat/completions"
        model = "llama3.1"
        [route]
        targets = ["local-llama", "glm-direct"]
        """
    )
    assert policy.route.targets == ("local-llama", "glm-direct")
    assert policy.providers["local-llama"].kind is ProviderKind.OPENAI
    assert policy.providers["local-llama"].key_env is None


def test_url_that_is_not_http() -> None:
    """A provider URL that is not http(s) is located at its ``url`` key."""
    issue = only_issue('version = 1\n[providers.glm-direct]\nurl = "ftp://127.0.0.1/chat"\n')
    assert (issue.path, issue.line) == ("$.providers.glm-direct.url", 3)
    assert "not http:// or https://" in issue.message


def test_url_without_a_host() -> None:
    """A provider URL without a host is rejected."""
    issue = only_issue('version = 1\n[providers.glm-direct]\nurl = "http:///v1/chat"\n')
    assert "has no host" in issue.message


def test_a_new_provider_needs_kind_url_and_model() -> None:
    """A new provider missing ``kind``, ``url`` and ``model`` gets one issue for each, at its table."""
    found = issues('version = 1\n[providers.mine]\nkey_env = "MINE_KEY"\n')
    assert [(i.path, i.line) for i in found] == [("$.providers.mine", 2)] * 3
    assert ["`kind`" in found[0].message, "`url`" in found[1].message, "`model`" in found[2].message] == [
        True
    ] * 3


def test_a_built_in_can_be_overridden_partially() -> None:
    """Overriding one field of a built-in leaves the others unset (inherited)."""
    policy = decode('version = 1\n[providers.glm-direct]\nmodel = "glm-4.6"\n')
    assert policy.providers["glm-direct"].model == "glm-4.6"
    assert policy.providers["glm-direct"].url is None


@pytest.mark.parametrize("bad", ["1KEY", "MY-KEY", "sk-abc", "A KEY"])
def test_key_env_must_look_like_a_variable_name(bad: str) -> None:
    """``key_env`` must be a variable's name, and the value is never echoed (it may be a pasted key)."""
    issue = only_issue(f'version = 1\n[providers.glm-direct]\nkey_env = "{bad}"\n')
    assert (issue.path, issue.line) == ("$.providers.glm-direct.key_env", 3)
    assert bad not in issue.message  # the value may be a pasted key: never echo it


def test_target_table_needs_exactly_one_of_provider_and_targets() -> None:
    """A target table with neither or both of ``provider`` and ``targets`` is an issue, each located."""
    found = issues(
        """\
        version = 1
        [route]
        targets = [
            { weight = 2 },
            { provider = "glm-direct", targets = ["openai-direct"] },
        ]
        """
    )
    assert [(i.path, i.line) for i in found] == [("$.route.targets[0]", 4), ("$.route.targets[1]", 5)]
    assert all("exactly one of `provider` or `targets`" in i.message for i in found)


def test_strategy_on_a_provider_target_is_rejected() -> None:
    """A strategy only belongs to a nested route, not to a provider's target."""
    issue = only_issue('version = 1\n[route]\ntargets = [{ provider = "glm-direct", strategy = "hedged" }]\n')
    assert issue.path == "$.route.targets[0].strategy"


@pytest.mark.parametrize("kind", sorted(NON_ATTEMPT_KINDS))
def test_retry_on_rejects_kinds_an_attempt_cannot_end_in(kind: ErrorKind) -> None:
    """``retry.on`` rejects the kinds that describe a run or a skipped target, not how an attempt ends."""
    issue = only_issue(f'version = 1\n[retry]\non = ["connection", "{kind.value}"]\n')
    assert (issue.path, issue.line) == ("$.retry.on[1]", 3)
    assert f"`{kind.value}` is not how an attempt ends" in issue.message


def test_stop_on_rejects_them_too_and_must_not_overlap_on() -> None:
    """``retry.stop_on`` rejects the same kinds and any kind also listed in ``retry.on``."""
    found = issues('version = 1\n[retry]\nstop_on = ["deadline", "connection"]\n')
    assert [i.path for i in found] == ["$.retry.stop_on[0]", "$.retry.stop_on[1]"]
    assert "in both retry.on and retry.stop_on" in found[1].message


def test_backoff_max_below_initial() -> None:
    """A back-off cap below the initial back-off is located at the cap."""
    issue = only_issue("version = 1\n[retry]\nbackoff_initial_s = 2\nbackoff_max_s = 1\n")
    assert (issue.path, issue.line) == ("$.retry.backoff_max_s", 4)


def test_unknown_duplicate_and_too_few_perspectives() -> None:
    """Unknown and repeated perspectives, and a minimum above those listed, are each reported."""
    found = issues(
        """\
        version = 1
        [analysis]
        perspectives = ["security", "securty", "security"]
        min_perspectives = 4
        """
    )
    assert [i.path for i in found] == [
        "$.analysis.perspectives[1]",
        "$.analysis.perspectives[2]",
        "$.analysis.min_perspectives",
    ]
    assert "did you mean `security`?" in found[0].message
    assert "listed twice" in found[1].message


def test_perspectives_beyond_the_eight_can_be_defined() -> None:
    """A perspective defined under ``[perspectives]`` can be asked beside the eight."""
    policy = decode(
        """\
        version = 1
        [analysis]
        perspectives = ["security", "legal"]
        [perspectives.legal]
        title = "Legal"
        system = "You are a lawyer."
        focus = ["liability", "licensing"]
        """
    )
    assert policy.analysis.perspectives == ("security", "legal")
    assert policy.perspectives["legal"].focus == ("liability", "licensing")


def test_unsupported_version() -> None:
    """A version other than 1 is refused at its line."""
    issue = only_issue("version = 2\n")
    assert (issue.path, issue.line) == ("$.version", 1)


def test_all_semantic_issues_are_reported_together_in_document_order() -> None:
    """Every meaning issue of a policy is reported at once, in the order of the document."""
    found = issues(
        """\
        version = 3
        [providers.x]
        url = "file:///tmp/x"
        [route]
        targets = ["nope", { targets = ["glm-direct", "nada"] }]
        [retry]
        on = ["budget"]
        """
    )
    assert [i.path for i in found] == [
        "$.version",
        "$.providers.x",
        "$.providers.x",
        "$.providers.x.url",
        "$.route.targets[0]",
        "$.route.targets[1].targets[1]",
        "$.retry.on[0]",
    ]


# -- every mistake at once ----------------------------------------------------------------------


def test_three_mistakes_of_stage_two_are_three_issues_sorted_by_line() -> None:
    """A bad value, an unknown key and a wrong type, written out of the schema's order: three
    issues in one answer, sorted by line."""
    found = issues(
        """\
        version = 1
        [retry]
        max_attempts = "3"
        [limits]
        deadlin_s = 30
        [route]
        strategy = "fastes"
        """
    )
    assert [(i.line, i.path) for i in found] == [
        (3, "$.retry.max_attempts"),
        (5, "$.limits.deadlin_s"),
        (7, "$.route.strategy"),
    ]


def test_meaning_issues_of_other_sections_come_with_the_type_issues() -> None:
    """An unknown key in [limits] and an unknown provider in [route]: both at once, in order."""
    found = issues(
        """\
        version = 1
        [route]
        targets = ["glm-direct", "nope"]
        [limits]
        deadlin_s = 30
        """
    )
    assert [(i.line, i.path) for i in found] == [(3, "$.route.targets[1]"), (5, "$.limits.deadlin_s")]


def test_no_meaning_issue_a_rejected_value_could_have_caused() -> None:
    """A provider table of the wrong type is one issue: the route naming that provider is not
    also reported as naming an unknown one; a misspelt cap is not also a budget "without caps"."""
    found = issues('version = 1\nproviders.x = 5\n[route]\ntargets = ["x"]\n')
    assert [i.path for i in found] == ["$.providers.x"]
    found = issues("version = 1\n[budget.providers.glm-direct]\ndaily = 1\n")
    assert [i.path for i in found] == ["$.budget.providers.glm-direct.daily"]


def test_an_unknown_section_stops_at_the_shape() -> None:
    """A misspelt section (which section was meant is unknown): only the shape's issues."""
    found = issues('version = 1\n[limts]\ndeadline_s = 3\n[route]\ntargets = ["nope"]\n')
    assert [i.path for i in found] == ["$.limts"]


# -- nested routes -------------------------------------------------------------------------------


def test_nested_routes_to_depth_three() -> None:
    """Routes nested three deep decode with each level's strategy and overrides."""
    policy = decode(
        """\
        version = 1
        [route]
        strategy = "hedged"
        hedge_after_s = 1.5
        targets = [
            "aiceo-gateway",
            { strategy = "fastest", attempt_timeout_s = 5, targets = [
                "glm-direct",
                { strategy = "weighted", targets = [
                    { provider = "openai-direct", weight = 3 },
                    { strategy = "sequential", max_attempts = 1, targets = ["anthropic-direct"] },
                ] },
            ] },
        ]
        """
    )
    assert policy.route.strategy is Strategy.HEDGED
    level1 = policy.route.targets[1]
    assert isinstance(level1, TargetTable) and level1.targets is not None
    assert (level1.strategy, level1.attempt_timeout_s) == (Strategy.FASTEST, 5.0)
    level2 = level1.targets[1]
    assert isinstance(level2, TargetTable) and level2.targets is not None
    assert level2.strategy is Strategy.WEIGHTED
    assert level2.targets[0] == TargetTable(provider="openai-direct", weight=3.0)
    level3 = level2.targets[1]
    assert isinstance(level3, TargetTable)
    assert level3 == TargetTable(strategy=Strategy.SEQUENTIAL, max_attempts=1, targets=("anthropic-direct",))


def test_an_error_at_depth_three_is_located() -> None:
    """A typo three routes deep is located by its full path and line."""
    issue = only_issue(
        """\
        version = 1
        [route]
        targets = [
            { targets = [
                { targets = [
                    "glm-direct",
                    { provider = "openai-direct", wieght = 2 },
                ] },
            ] },
        ]
        """
    )
    assert issue.path == "$.route.targets[0].targets[0].targets[1].wieght"
    assert issue.line == 7
    assert "did you mean `weight`?" in issue.message


def test_targets_written_as_an_array_of_tables() -> None:
    """Targets written as ``[[route.targets]]`` are located like inline ones."""
    text = """\
        version = 1
        [[route.targets]]
        provider = "glm-direct"
        [[route.targets]]
        provider = "openai-direct"
        atempt_timeout_s = 3
        """
    issue = only_issue(text)
    assert (issue.path, issue.line) == ("$.route.targets[1].atempt_timeout_s", 6)


# -- name and default route ----------------------------------------------------------------------


def test_name_defaults_to_the_file_stem() -> None:
    """A policy without a name takes its file's stem; a written name wins."""
    result = decode_policy("version = 1\n", "/some/dir/cost-first.toml", BUILTIN_NAMES)
    assert result.unwrap().name == "cost-first"
    assert decode('version = 1\nname = "mine"\n').name == "mine"


def test_without_route_targets_the_default_targets_are_used() -> None:
    """Without ``route.targets`` the default targets (the seed's primary and fallback) are the route."""
    assert decode("version = 1\n").route.targets == ("aiceo-gateway",)
    policy = decode(
        'version = 1\n[route]\nstrategy = "fastest"\n', default_targets=("glm-direct", "openai-direct")
    )
    assert policy.route.targets == ("glm-direct", "openai-direct")
    assert policy.route.strategy is Strategy.FASTEST


def test_an_unknown_default_target_is_reported_as_such() -> None:
    """An unknown default target is reported as coming from the default route, not the file."""
    issue = only_issue_with("version = 1\n", default_targets=("glm-drect",))
    assert issue.path == "$.route.targets[0]"
    assert "the default route" in issue.message


def only_issue_with(text: str, **kwargs: Any) -> PolicyIssue:
    found = issues(text, **kwargs)
    assert len(found) == 1
    return found[0]


def test_issue_string_forms() -> None:
    """An issue prints as ``file[:line]: [$.path: ]message``, leaving out what it lacks."""
    assert str(PolicyIssue(file="p.toml", line=4, path="$.a", message="m")) == "p.toml:4: $.a: m"
    assert str(PolicyIssue(file="p.toml", line=None, path="$.a", message="m")) == "p.toml: $.a: m"
    assert str(PolicyIssue(file="p.toml", line=2, path="$", message="m")) == "p.toml:2: m"
    assert str(PolicyIssue(file="p.toml", line=None, path="$", message="m")) == "p.toml: m"


# -- never raises --------------------------------------------------------------------------------

_VOCABULARY = [
    "version",
    "name",
    "providers",
    "route",
    "limits",
    "retry",
    "breaker",
    "health",
    "analysis",
    "perspectives",
    "strategy",
    "targets",
    "provider",
    "weight",
    "deadline_s",
    "max_usd",
    "on",
    "url",
    "kind",
    "model",
    "key_env",
    "glm-direct",
    "x.y",
    "with space",
]
_keys = st.sampled_from(_VOCABULARY) | st.text(min_size=1, max_size=6)
_scalars = (
    st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.booleans()
    | st.sampled_from(["glm-direct", "fastest", "p95", "connection", "budget", "http://127.0.0.1/x", "ftp://h"])
    | st.text(max_size=8)
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_keys, _values, max_size=6), st.booleans())
def test_decoding_random_toml_never_raises(data: dict[str, Any], with_version: bool) -> None:
    """Whatever the document, the answer is a value: a Policy or issues with sane lines."""
    if with_version:
        data = {"version": 1, **data}
    text = tomli_w.dumps(data)
    result = decode_policy(text, "random.toml", BUILTIN_NAMES)
    if isinstance(result, Failure):
        found = result.failure()
        assert found
        last_line = max(1, text.count("\n"))
        for issue in found:
            assert issue.line is None or 1 <= issue.line <= last_line
            assert issue.path.startswith("$")
    else:
        assert isinstance(result.unwrap(), Policy)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_decoding_arbitrary_text_never_raises(text: str) -> None:
    """Any text at all decodes to a policy or to issues, never an exception."""
    result = decode_policy(text, "text.toml", BUILTIN_NAMES)
    assert isinstance(result, Success | Failure)


def test_strings_in_provider_tables_are_never_echoed() -> None:
    """A key pasted where a number belongs must not reach the terminal or a CI log."""
    issue = only_issue('version = 1\n[providers.glm-direct]\ninput_usd_per_mtok = "sk-not-a-price"\n')
    assert issue.path == "$.providers.glm-direct.input_usd_per_mtok"
    assert "sk-not-a-price" not in str(issue)
    assert issue.message == "expected a number, got a string"
