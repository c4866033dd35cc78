"""``rmgr policy explain``: the route, limits and budget in words a person can follow."""

from __future__ import annotations

import pytest

from rmcore.policy import Policy, Strategy, explain, resolve_providers
from rmcore.providers import builtin_providers
from tests.core.helpers import policy_of

ENV = {
    "GLM_API_URL": "http://127.0.0.1:9001/v1/chat/completions",
    "ANTHROPIC_API_URL": "http://127.0.0.1:9002/v1/messages",
}


def explained(text: str, env: dict[str, str] = ENV) -> str:
    policy = policy_of(text, "p.toml")
    return explain(policy, resolve_providers(policy, builtin_providers(env)))


def test_sequential_route_limits_and_budget() -> None:
    """A sequential policy is explained with its targets in order, their limits, retries, deadline, budget,
    breaker and analysis settings."""
    text = explained(
        """\
        version = 1
        name = "cost-first"
        description = "Cheap first."
        [route]
        targets = ["aiceo-gateway", "glm-direct"]
        [limits]
        max_usd = 0.10
        deadline_s = 90
        """
    )
    assert text.startswith('Policy "cost-first": Cheap first.\n')
    assert "Route (sequential): the targets in order;" in text
    first = text.index("1. aiceo-gateway: glm-4.7 at http://localhost:4000/api/glm/submit, $0.50/$0.50")
    second = text.index("2. glm-direct: glm-4.7 at http://127.0.0.1:9001/v1/chat/completions")
    assert first < second
    assert "up to 2 attempts of at most 30 s each" in text
    assert "rate_limited, server_error or connection is retried on the same target" in text
    assert "0.5–8 s (full jitter, never less than the Retry-After" in text
    assert "content_filter ends the whole run at once" in text
    assert "ends after 90 s" in text
    assert "Budget: $0.10 for the whole run." in text
    assert "a request that could exceed it is not sent" in text
    assert "3 consecutive failures open a provider's circuit for 30 s" in text
    assert "Health check: off" in text
    assert "at most 8 at a time; it fails unless at least 1 succeeds" in text


def test_per_target_overrides_are_shown() -> None:
    """A target's own attempts and timeouts are shown on its line; the others show the defaults."""
    text = explained(
        """\
        version = 1
        [route]
        targets = [
            { provider="anthropic-direct", attempt_timeout_s=10, max_attempts=1, first_token_timeout_s=4 },
            "glm-direct",
        ]
        """
    )
    assert "1. anthropic-direct: claude-sonnet-4-5" in text
    assert "1 attempt of at most 10 s (streaming: first token within 4 s)." in text
    assert "2. glm-direct" in text and "up to 2 attempts of at most 30 s each." in text


def test_nested_routes_are_indented_and_inherit_overrides() -> None:
    """Nested routes are numbered and indented by depth, and show the limits they inherit."""
    text = explained(
        """\
        version = 1
        [route]
        strategy = "hedged"
        hedge_after_s = 1.5
        targets = ["aiceo-gateway", { strategy = "fastest", attempt_timeout_s = 5, targets = [
            "glm-direct",
            { targets = ["anthropic-direct", { provider = "openai-direct", idle_timeout_s = 2 }] },
        ] }]
        """
    )
    lines = text.splitlines()
    nested = next(line for line in lines if "2. a nested route (fastest)" in line)
    deeper = next(line for line in lines if "2.2. a nested route (sequential)" in line)
    deepest = next(line for line in lines if "2.2.2. openai-direct" in line)
    indents = [len(line) - len(line.lstrip()) for line in (nested, deeper, deepest)]
    assert indents[0] < indents[1] < indents[2]
    assert "not answered after 1.5 s the next one starts too" in text
    assert "at most 5 s each (streaming: silent for at most 2 s)" in deepest
    inherited = next(line for line in lines if "2.1. glm-direct" in line)
    assert "at most 5 s each." in inherited


@pytest.mark.parametrize(
    ("strategy", "phrase"),
    [
        (Strategy.SEQUENTIAL, "the next one only when the previous one has failed for good"),
        (Strategy.FASTEST, "all targets at once; the first complete answer wins and the others are"),
        (Strategy.HEDGED, "has not answered after 2 s the next one starts too"),
        (Strategy.CHEAPEST, "cheapest first"),
        (Strategy.WEIGHTED, "random order drawn by weight"),
        (Strategy.COMPARE, "every target, each answer kept side by side"),
    ],
)
def test_each_strategy_in_one_sentence(strategy: Strategy, phrase: str) -> None:
    """Each strategy is described by one sentence on the route's line."""
    text = explained(f'version = 1\n[route]\nstrategy = "{strategy.value}"\ntargets = ["glm-direct"]\n')
    route_line = next(line for line in text.splitlines() if line.startswith("Route ("))
    assert route_line.startswith(f"Route ({strategy.value}): ")
    assert phrase in route_line


def test_hedged_on_p95() -> None:
    """A hedge on ``p95`` is explained as waiting for the target's observed p95 latency."""
    text = explained('version = 1\n[route]\nstrategy = "hedged"\nhedge_after_s = "p95"\n')
    assert "after its observed p95 latency" in text


def test_weighted_shares() -> None:
    """Weighted targets show their weight and their chance to go first."""
    text = explained(
        'version = 1\n[route]\nstrategy = "weighted"\n'
        'targets = [{ provider = "glm-direct", weight = 3 }, "aiceo-gateway"]\n'
    )
    assert "[weight 3, 75% to go first]" in text
    assert "[weight 1, 25% to go first]" in text


def test_unusable_providers_are_flagged_with_the_reason() -> None:
    """A provider that cannot be called as configured is flagged with the reason."""
    text = explained('version = 1\n[route]\ntargets = ["openai-direct"]\n')
    assert "openai-direct: gpt-4-turbo, no URL" in text
    assert "! not usable as configured: OPENAI_API_URL is not set" in text


def test_a_provider_missing_from_the_mapping_is_flagged() -> None:
    """A route target with no configured provider is flagged rather than failing the explanation."""
    policy = Policy(version=1)
    assert "! no provider of that name is configured" in explain(policy, {})


def test_free_local_provider_without_key() -> None:
    """A local provider with no prices and no key is described as free and needing no key."""
    text = explained(
        """\
        version = 1
        [providers.local]
        kind = "openai"
        url = "http://127.0.0.1:11434/v1/chat/completions"
        model = "llama3.1"
        [route]
        targets = ["local"]
        """
    )
    assert "1. local: llama3.1 at http://127.0.0.1:11434/v1/chat/completions, free, no key needed;" in text


def test_health_check_on_and_no_retries() -> None:
    """A health check before use and an empty ``retry.on`` are both said in words."""
    text = explained("version = 1\n[health]\ncheck_before_use = true\n[retry]\non = []\nstop_on = []\n")
    assert "Health check: before a target is used" in text
    assert "Retries: none; any failure moves on to the next target at once." in text
    assert "ends the whole run at once" not in text
