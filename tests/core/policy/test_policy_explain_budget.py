"""``rmgr policy explain`` says how many perspectives of an analysis the budget lets run at once:
each holds its worst case until it settles, and those that do not fit wait for room."""

from __future__ import annotations

from rmcore.policy import explain, resolve_providers
from rmcore.providers import builtin_providers
from tests.core.helpers import policy_of

ENV = {
    "GLM_API_URL": "http://127.0.0.1:9001/v1/chat/completions",
    "OPENAI_API_URL": "http://127.0.0.1:9003/v1/chat/completions",
}


def budget_line(text: str) -> str:
    policy = policy_of(text, "p.toml")
    explained = explain(policy, resolve_providers(policy, builtin_providers(ENV)))
    [line] = [line for line in explained.splitlines() if line.startswith("Budget:")]
    return line


def test_the_number_of_perspectives_that_fit_at_once_at_the_dearest_provider() -> None:
    """$0.10 holds two worst cases at openai-direct's prices ($10/$30 per M tokens, about
    $0.038 for 1024 tokens of answer): two perspectives at a time there, the others wait."""
    line = budget_line(
        """\
        version = 1
        [route]
        strategy = "cheapest"
        targets = ["glm-direct", "openai-direct"]
        [limits]
        max_usd = 0.10
        """
    )
    assert (
        "a perspective's request costs at most $0.000893 at glm-direct and $0.0384 at openai-direct" in line
    )
    assert "so 8 can run at once at glm-direct's prices and 2 at openai-direct's" in line
    assert "the others wait for running ones to settle" in line


def test_a_budget_that_holds_every_perspective_says_so() -> None:
    """Room for all eight at once even at the dearest provider: no one waits."""
    line = budget_line(
        """\
        version = 1
        [route]
        targets = ["glm-direct", "openai-direct"]
        [limits]
        max_usd = 1.0
        """
    )
    assert line.endswith("so all 8 can run at once.")
    assert "wait" not in line


def test_a_racing_route_counts_every_racer_of_a_perspective() -> None:
    """fastest starts every target of a perspective at once: their worst cases add up."""
    line = budget_line(
        """\
        version = 1
        [route]
        strategy = "fastest"
        targets = ["glm-direct", "openai-direct"]
        [limits]
        max_usd = 0.25
        """
    )
    assert "6 at openai-direct's and 6 with all the route's targets racing ($0.0392 a perspective)" in line


def test_the_perspectives_of_the_policy_are_counted() -> None:
    """Three perspectives, room for two: two at a time, the third waits."""
    line = budget_line(
        """\
        version = 1
        [route]
        targets = ["openai-direct"]
        [limits]
        max_usd = 0.08
        [analysis]
        perspectives = ["security", "financial", "ux"]
        """
    )
    assert "so 2 can run at once at openai-direct's prices; the others wait" in line
