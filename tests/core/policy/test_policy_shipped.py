"""The policies shipped in ``policies/`` decode, explain, and say what their comments claim."""

from __future__ import annotations

from pathlib import Path

import pytest

from rmcore.policy import (
    Policy,
    Strategy,
    TargetTable,
    decode_policy,
    explain,
    resolve_providers,
    route_providers,
)
from rmcore.providers import BUILTIN_NAMES, builtin_providers

POLICIES = Path(__file__).resolve().parents[3] / "policies"


def load(name: str) -> Policy:
    path = POLICIES / name
    return decode_policy(path.read_text(encoding="utf-8"), str(path), BUILTIN_NAMES).unwrap()


def test_the_policies_folder_is_found() -> None:
    """The shipped ``policies/`` folder is found from the tests."""
    assert {"sequential-failover.toml", "quality-first.toml"} <= {p.name for p in POLICIES.glob("*.toml")}


@pytest.mark.parametrize("path", sorted(POLICIES.glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_policy_decodes_and_explains(path: Path) -> None:
    """Each shipped policy is valid, named after its file, and its explanation names every provider it
    routes to."""
    result = decode_policy(path.read_text(encoding="utf-8"), str(path), BUILTIN_NAMES)
    policy = result.unwrap()
    assert policy.name == path.stem
    text = explain(policy, resolve_providers(policy, builtin_providers({})))
    for provider in route_providers(policy):
        assert provider in text


def test_sequential_failover_keeps_the_seeds_order() -> None:
    """``sequential-failover`` routes the four built-ins in the seed's order, without health checks."""
    policy = load("sequential-failover.toml")
    assert policy.route.strategy is Strategy.SEQUENTIAL
    assert policy.route.targets == ("aiceo-gateway", "glm-direct", "anthropic-direct", "openai-direct")
    assert policy.health.check_before_use is False


def test_quality_first_asks_anthropic_with_a_short_timeout_then_glm() -> None:
    """``quality-first`` asks Anthropic first with a timeout shorter than the default, then GLM."""
    policy = load("quality-first.toml")
    first, second = policy.route.targets
    assert isinstance(first, TargetTable)
    assert first.provider == "anthropic-direct"
    assert first.attempt_timeout_s is not None and first.attempt_timeout_s <= 10
    assert first.attempt_timeout_s < policy.limits.attempt_timeout_s
    assert second == "glm-direct"
