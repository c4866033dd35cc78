"""``[budget]`` caps over time and provider quotas in a policy: decoding (with located errors),
provider resolution, the plan's caps, writing back to TOML, and the explanation in words."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from returns.result import Success

from rmcore.plan import build_plan
from rmcore.policy import (
    Budget,
    ProviderBudget,
    decode_policy,
    encode_policy,
    explain,
    resolve_providers,
)
from rmcore.providers import BUILTIN_NAMES, builtin_providers
from rmcore.quota import Period, Resource
from tests.core.helpers import policy_issues as issues
from tests.core.helpers import policy_of as decode

FULL = """\
version = 1
name = "fleet"
[route]
targets = ["aiceo-gateway", "anthropic-direct"]

[budget]
daily_usd = 5.0
monthly_usd = 100.0
on_state_unavailable = "fail_open"

[budget.providers.anthropic-direct]
daily_usd = 1.0
monthly_usd = 20.0

[providers.aiceo-gateway]
requests_per_window = 1200
tokens_per_window = 2000000
quota_window_s = 18000
max_concurrency = 8
"""


def test_every_budget_and_quota_key_decodes() -> None:
    """Every key of ``[budget]``, ``[budget.providers.NAME]`` and a provider's quota decodes to its value."""
    policy = decode(FULL)
    assert policy.budget == Budget(
        daily_usd=5.0,
        monthly_usd=100.0,
        on_state_unavailable="fail_open",
        providers={"anthropic-direct": ProviderBudget(daily_usd=1.0, monthly_usd=20.0)},
    )
    gateway = policy.providers["aiceo-gateway"]
    assert (gateway.requests_per_window, gateway.tokens_per_window, gateway.quota_window_s) == (
        1200,
        2_000_000,
        18_000.0,
    )


def test_without_a_budget_table_nothing_is_capped_and_the_state_fails_closed() -> None:
    """A policy without ``[budget]`` sets no cap over time and fails closed when the state is down."""
    budget = decode("version = 1\n").budget
    assert budget == Budget() and budget.daily_usd is None and budget.monthly_usd is None
    assert budget.on_state_unavailable == "fail_closed" and budget.providers == {}


@pytest.mark.parametrize(
    ("text", "line", "path", "message"),
    [
        ("[budget]\ndaily_usd = -1\n", 3, "$.budget.daily_usd", "must be >= 0, got -1"),
        ('[budget]\nmonthly_usd = "lots"\n', 3, "$.budget.monthly_usd", "expected a number, got 'lots'"),
        (
            '[budget]\non_state_unavailable = "fail-open"\n',
            3,
            "$.budget.on_state_unavailable",
            "invalid value 'fail-open': expected one of fail_closed, fail_open; did you mean `fail_open`?",
        ),
        (
            "[budget]\ndayly_usd = 5\n",
            3,
            "$.budget.dayly_usd",
            "unknown key `dayly_usd`; did you mean `daily_usd`?",
        ),
        (
            "[budget.providers.glm-direct]\ndaily = 1\n",
            3,
            "$.budget.providers.glm-direct.daily",
            "unknown key `daily`; did you mean `daily_usd`?",
        ),
        (
            "[budget.providers.glm-direct]\nmonthly_usd = -3\n",
            3,
            "$.budget.providers.glm-direct.monthly_usd",
            "must be >= 0, got -3",
        ),
        (
            "[providers.aiceo-gateway]\nrequests_per_window = -1\n",
            3,
            "$.providers.aiceo-gateway.requests_per_window",
            "must be >= 0, got -1",
        ),
        (
            "[providers.aiceo-gateway]\ntokens_per_window = 1.5\n",
            3,
            "$.providers.aiceo-gateway.tokens_per_window",
            "expected an integer, got 1.5",
        ),
        (
            "[providers.aiceo-gateway]\nquota_window_s = 0.5\n",
            3,
            "$.providers.aiceo-gateway.quota_window_s",
            "must be >= 1, got 0.5",
        ),
    ],
)
def test_wrong_budget_and_quota_values_are_located(text: str, line: int, path: str, message: str) -> None:
    """A wrong budget or quota value is one issue, at its line and path, saying what was expected."""
    [issue] = issues("version = 1\n" + text)
    assert (issue.line, issue.path, issue.message) == (line, path, message)


def test_a_budget_for_an_unknown_provider_names_its_path_and_a_suggestion() -> None:
    """A budget for a provider that does not exist is located at its table, with the closest name
    suggested."""
    [issue] = issues(
        """\
        version = 1
        [budget]
        daily_usd = 5

        [budget.providers.antropic-direct]
        daily_usd = 1
        """
    )
    assert (issue.line, issue.path) == (5, "$.budget.providers.antropic-direct")
    assert issue.message == (
        "unknown provider `antropic-direct`: neither built in nor defined under [providers];"
        " did you mean `anthropic-direct`?"
    )


def test_a_budget_for_a_provider_the_policy_adds_is_accepted() -> None:
    """A provider defined in the policy's own ``[providers]`` can be given a budget."""
    policy = decode(
        """\
        version = 1
        [providers.local]
        kind = "openai"
        url = "http://127.0.0.1:8080/v1/chat/completions"
        model = "llama"
        [budget.providers.local]
        monthly_usd = 0
        """
    )
    assert policy.budget.providers["local"].monthly_usd == 0


def test_a_provider_budget_without_a_cap_is_an_error() -> None:
    """An empty ``[budget.providers.NAME]`` table is an error: it caps nothing."""
    [issue] = issues("version = 1\n[budget.providers.glm-direct]\n")
    assert (issue.line, issue.path) == (2, "$.budget.providers.glm-direct")
    assert "sets no cap" in issue.message


def test_a_quota_window_without_a_quota_is_an_error_but_not_for_the_gateway() -> None:
    """A quota window without a quota is an error, except for the gateway whose quota is built in (unless the
    policy removes it)."""
    [issue] = issues("version = 1\n[providers.glm-direct]\nquota_window_s = 60\n")
    assert (issue.line, issue.path) == (3, "$.providers.glm-direct.quota_window_s")
    assert "set `requests_per_window` or `tokens_per_window`" in issue.message
    gateway = decode("version = 1\n[providers.aiceo-gateway]\nquota_window_s = 60\n")
    assert gateway.providers["aiceo-gateway"].quota_window_s == 60
    [removed] = issues(
        "version = 1\n[providers.aiceo-gateway]\nrequests_per_window = 0\nquota_window_s = 60\n"
    )
    assert removed.path == "$.providers.aiceo-gateway.quota_window_s"


def test_quotas_resolve_onto_the_providers() -> None:
    """Quotas of the policy replace the built-in ones on the resolved providers; 0 removes a quota; a new
    provider keeps its own."""
    builtins = builtin_providers({})
    assert (builtins["aiceo-gateway"].requests_per_window, builtins["aiceo-gateway"].quota_window_s) == (
        2400,
        18000,
    )
    assert builtins["glm-direct"].requests_per_window is None
    resolved = resolve_providers(decode(FULL), builtins)["aiceo-gateway"]
    assert (resolved.requests_per_window, resolved.tokens_per_window, resolved.quota_window_s) == (
        1200,
        2_000_000,
        18_000.0,
    )
    off = decode("version = 1\n[providers.aiceo-gateway]\nrequests_per_window = 0\n")
    assert resolve_providers(off, builtins)["aiceo-gateway"].requests_per_window is None
    new = decode(
        """\
        version = 1
        [providers.local]
        kind = "openai"
        url = "http://127.0.0.1:8080/v1/chat/completions"
        model = "llama"
        tokens_per_window = 1000
        """
    )
    local = resolve_providers(new, builtins)["local"]
    assert (local.requests_per_window, local.tokens_per_window, local.quota_window_s) == (None, 1000, None)


def test_the_plan_carries_the_caps_and_what_to_do_when_the_state_is_down() -> None:
    """The plan holds every cap of the policy, budgets first then quotas, and its rule for an unreachable
    state."""
    policy = decode(FULL)
    plan = build_plan(policy, resolve_providers(policy, builtin_providers({}))).unwrap()
    assert plan.on_state_unavailable == "fail_open"
    assert [(c.key, c.resource, c.limit, c.period) for c in plan.caps] == [
        ("policy:fleet:usd:day", Resource.USD, 5.0, Period.DAY),
        ("policy:fleet:usd:month", Resource.USD, 100.0, Period.MONTH),
        ("provider:anthropic-direct:usd:day", Resource.USD, 1.0, Period.DAY),
        ("provider:anthropic-direct:usd:month", Resource.USD, 20.0, Period.MONTH),
        ("provider:aiceo-gateway:requests:18000s", Resource.REQUESTS, 1200.0, Period.WINDOW),
        ("provider:aiceo-gateway:tokens:18000s", Resource.TOKENS, 2_000_000.0, Period.WINDOW),
    ]
    default = decode('version = 1\n[route]\ntargets = ["glm-direct"]\n')
    bare = build_plan(default, resolve_providers(default, builtin_providers({}))).unwrap()
    assert bare.caps == () and bare.on_state_unavailable == "fail_closed"


def test_budget_and_quotas_round_trip_through_toml() -> None:
    """A policy with budgets and quotas encodes to TOML that decodes to the same policy."""
    policy = decode(FULL)
    again = decode_policy(encode_policy(policy), "again.toml", BUILTIN_NAMES)
    assert again == Success(policy)


caps = st.one_of(st.none(), st.floats(min_value=0, max_value=1e6, allow_nan=False))


@given(
    caps,
    caps,
    st.sampled_from(["fail_closed", "fail_open"]),
    st.dictionaries(st.sampled_from(BUILTIN_NAMES), st.tuples(caps, caps)).map(
        lambda d: {k: v for k, v in d.items() if v != (None, None)}
    ),
    st.one_of(st.none(), st.integers(0, 10**9)),
    st.one_of(st.none(), st.floats(min_value=1, max_value=1e7, allow_nan=False)),
)
def test_any_budget_round_trips(
    daily: float | None,
    monthly: float | None,
    mode: str,
    per_provider: dict[str, tuple[float | None, float | None]],
    requests: int | None,
    window_s: float | None,
) -> None:
    """Any combination of budget caps, state rule and gateway quota survives encoding and decoding."""
    budget_lines = [f"on_state_unavailable = {mode!r}".replace("'", '"')]
    budget_lines += [f"daily_usd = {daily!r}"] if daily is not None else []
    budget_lines += [f"monthly_usd = {monthly!r}"] if monthly is not None else []
    text = "version = 1\n[budget]\n" + "\n".join(budget_lines) + "\n"
    for name, (d, m) in per_provider.items():
        text += f"[budget.providers.{name}]\n"
        text += f"daily_usd = {d!r}\n" if d is not None else ""
        text += f"monthly_usd = {m!r}\n" if m is not None else ""
    gateway = [f"requests_per_window = {requests}"] if requests is not None else []
    gateway += [f"quota_window_s = {window_s!r}"] if window_s is not None and requests != 0 else []
    if gateway:
        text += "[providers.aiceo-gateway]\n" + "\n".join(gateway) + "\n"
    policy = decode(text)
    assert decode_policy(encode_policy(policy), "again.toml", BUILTIN_NAMES) == Success(policy)


def explained(text: str) -> str:
    policy = decode(text)
    return explain(policy, resolve_providers(policy, builtin_providers({})))


def test_explain_says_the_caps_quotas_and_the_state_rule_in_words() -> None:
    """``explain`` states each cap, each quota and what happens when the state is down, in sentences."""
    text = explained(FULL)
    assert (
        "Caps over time: at most $5.00 per UTC day and $100.00 per UTC calendar month for everything"
        ' policy "fleet" spends; $1.00 per UTC day and $20.00 per UTC calendar month for what'
        " anthropic-direct is paid"
    ) in text
    assert (
        "Quotas: aiceo-gateway takes at most 1200 requests and 2000000 tokens per 5-hour window (18000 s)"
    ) in text
    assert "a target whose cap it could break is skipped (budget or quota) until the window resets" in text
    assert "runs go on under local limits only" in text and "(fail_open)" in text


def test_explain_of_a_policy_without_caps_says_so() -> None:
    """Without caps, ``explain`` says that only the run's own budget limits spending."""
    text = explained('version = 1\n[route]\ntargets = ["glm-direct"]\n')
    assert "Caps over time: none; only the run's own budget limits spending." in text


def test_explain_mentions_the_gateways_own_quota_and_failing_closed() -> None:
    """Routing to the gateway, ``explain`` mentions its built-in quota and that runs fail closed."""
    text = explained('version = 1\n[route]\ntargets = ["aiceo-gateway"]\n')
    assert (
        "Caps over time: no dollar caps. Quotas: aiceo-gateway takes at most 2400 requests per 5-hour" in text
    )
    assert "no paid request starts (fail_closed)" in text
