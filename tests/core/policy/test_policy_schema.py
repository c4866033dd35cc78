"""The schema's defaults and the default policy (DESIGN §4: every key but ``version`` has one)."""

from __future__ import annotations

import msgspec
import pytest

from rmcore.errors import ErrorKind
from rmcore.policy import (
    BUILTIN_PERSPECTIVES,
    NON_ATTEMPT_KINDS,
    Policy,
    Route,
    Strategy,
    TargetTable,
    default_policy,
)


def test_every_default() -> None:
    """A policy of only ``version = 1`` carries the documented default of every setting."""
    policy = msgspec.convert({"version": 1}, Policy)
    assert policy.name == ""
    assert policy.description == ""
    assert policy.providers == {}
    assert policy.perspectives == {}
    assert policy.route.strategy is Strategy.SEQUENTIAL
    assert policy.route.targets == ("aiceo-gateway",)
    assert policy.route.hedge_after_s == 2.0
    limits = policy.limits
    assert (limits.attempt_timeout_s, limits.first_token_timeout_s, limits.idle_timeout_s) == (30, 15, 20)
    assert (limits.deadline_s, limits.max_usd) == (120, 1.0)
    retry = policy.retry
    assert (retry.max_attempts, retry.backoff_initial_s, retry.backoff_max_s) == (2, 0.5, 8.0)
    assert retry.on == (ErrorKind.RATE_LIMITED, ErrorKind.SERVER_ERROR, ErrorKind.CONNECTION)
    assert retry.stop_on == (ErrorKind.CONTENT_FILTER,)
    assert (policy.breaker.failure_threshold, policy.breaker.cooldown_s) == (3, 30)
    assert policy.health.check_before_use is False
    assert policy.analysis.perspectives == (
        "security",
        "architecture",
        "simplicity",
        "financial",
        "marketing",
        "ux",
        "growth",
        "emotional",
    )
    assert policy.analysis.perspectives == BUILTIN_PERSPECTIVES
    assert (policy.analysis.max_concurrency, policy.analysis.min_perspectives) == (8, 1)


def test_defaults_are_fresh_per_policy() -> None:
    """Mutable defaults (the providers table) are not shared between policies."""
    first, second = Policy(version=1), Policy(version=1)
    assert first.providers is not second.providers


def test_policy_is_frozen() -> None:
    """A decoded policy cannot be changed."""
    policy = Policy(version=1)
    with pytest.raises(AttributeError):
        policy.name = "changed"  # type: ignore[misc]


def test_default_policy_is_primary_then_fallback() -> None:
    """The default policy routes the primary then the fallback in sequence, every other setting at its
    default."""
    policy = default_policy("aiceo-gateway", "glm-direct")
    assert policy.version == 1
    assert policy.route == Route(strategy=Strategy.SEQUENTIAL, targets=("aiceo-gateway", "glm-direct"))
    assert policy.limits == Policy(version=1).limits


@pytest.mark.parametrize("fallback", [None, "glm-direct"])
def test_default_policy_without_a_distinct_fallback_has_one_target(fallback: str | None) -> None:
    """No fallback, or a fallback equal to the primary, gives a one-target route."""
    assert default_policy("glm-direct", fallback).route.targets == ("glm-direct",)


def test_nested_target_tables_decode_to_any_depth() -> None:
    """Target tables nest inside each other to any depth."""
    data = {
        "version": 1,
        "route": {"targets": [{"targets": [{"targets": [{"targets": ["glm-direct"]}]}]}]},
    }
    policy = msgspec.convert(data, Policy)
    level = policy.route.targets[0]
    for _ in range(3):
        assert isinstance(level, TargetTable) and level.targets is not None
        level = level.targets[0]
    assert level == "glm-direct"


def test_non_attempt_kinds_are_the_run_level_kinds() -> None:
    """The kinds that cannot end an attempt are budget, quota, circuit_open, unhealthy,
    unsupported, deadline and cancelled."""
    assert {k.value for k in NON_ATTEMPT_KINDS} == {
        "budget",
        "quota",
        "circuit_open",
        "unhealthy",
        "unsupported",
        "deadline",
        "cancelled",
    }
