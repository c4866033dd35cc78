"""A run plan: a policy resolved against its providers, in the flat form the engine executes.

The policy file is what people write; the plan is what the engine needs: each target with its
provider and its effective limits, the retry rules and the run's limits. Keeping the two apart
lets the engine and its simulator be tested without any policy file.
"""

from __future__ import annotations

from collections.abc import Mapping

from returns.result import Failure, Result, Success

from rmcore.base import Base
from rmcore.errors import ErrorKind
from rmcore.policy.schema import Policy, Strategy, Target, TargetTable
from rmcore.providers import ProviderSpec

__all__ = ["RetryRules", "RunLimits", "RunPlan", "TargetPlan", "build_plan"]


class TargetPlan(Base, frozen=True):
    """One provider of a route, with the limits that apply to its attempts."""

    provider: ProviderSpec
    attempt_timeout_s: float = 30.0
    first_token_timeout_s: float = 15.0
    idle_timeout_s: float = 20.0
    max_attempts: int = 2


class RetryRules(Base, frozen=True):
    """Which failures are retried on the same target, which end the run, and how long to wait."""

    on: frozenset[ErrorKind] = frozenset(
        {ErrorKind.RATE_LIMITED, ErrorKind.SERVER_ERROR, ErrorKind.CONNECTION}
    )
    stop_on: frozenset[ErrorKind] = frozenset({ErrorKind.CONTENT_FILTER})
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 8.0


class RunLimits(Base, frozen=True):
    """Limits of a whole run, fail-overs included."""

    deadline_s: float = 120.0
    max_usd: float = 1.0


class RunPlan(Base, frozen=True):
    """Everything the engine needs to route one request (the ``sequential`` strategy)."""

    targets: tuple[TargetPlan, ...]
    limits: RunLimits = RunLimits()
    retry: RetryRules = RetryRules()
    check_before_use: bool = False


def _override(value: float | int | None, inherited: float | int) -> float | int:
    return inherited if value is None else value


def build_plan(policy: Policy, providers: Mapping[str, ProviderSpec]) -> Result[RunPlan, str]:
    """The plan that runs ``policy`` with ``providers`` (the resolved built-ins and the policy's own).

    Sequential routes, nested sequential routes included, flatten into one ordered list of targets,
    each with its limits inherited from the enclosing route and ``[limits]`` / ``[retry]`` unless it
    sets its own. Other strategies are refused with a message: this engine runs ``sequential``.
    """
    limits = policy.limits
    targets: list[TargetPlan] = []

    def walk(items: tuple[Target, ...], strategy: Strategy, inherited: TargetTable) -> str | None:
        if strategy is not Strategy.SEQUENTIAL:
            return (
                f"strategy {strategy.value!r} is not supported by this version's engine, "
                "which runs 'sequential' routes"
            )
        for item in items:
            table = TargetTable(provider=item) if isinstance(item, str) else item
            merged = TargetTable(
                provider=table.provider,
                attempt_timeout_s=table.attempt_timeout_s or inherited.attempt_timeout_s,
                first_token_timeout_s=table.first_token_timeout_s or inherited.first_token_timeout_s,
                idle_timeout_s=table.idle_timeout_s or inherited.idle_timeout_s,
                max_attempts=table.max_attempts or inherited.max_attempts,
            )
            if table.targets is not None:
                problem = walk(table.targets, table.strategy or Strategy.SEQUENTIAL, merged)
                if problem:
                    return problem
                continue
            assert table.provider is not None
            spec = providers.get(table.provider)
            if spec is None:
                return f"unknown provider {table.provider!r}"
            targets.append(
                TargetPlan(
                    provider=spec,
                    attempt_timeout_s=float(_override(merged.attempt_timeout_s, limits.attempt_timeout_s)),
                    first_token_timeout_s=float(
                        _override(merged.first_token_timeout_s, limits.first_token_timeout_s)
                    ),
                    idle_timeout_s=float(_override(merged.idle_timeout_s, limits.idle_timeout_s)),
                    max_attempts=int(_override(merged.max_attempts, policy.retry.max_attempts)),
                )
            )
        return None

    problem = walk(policy.route.targets, policy.route.strategy, TargetTable())
    if problem:
        return Failure(problem)
    retry = policy.retry
    return Success(
        RunPlan(
            targets=tuple(targets),
            limits=RunLimits(deadline_s=limits.deadline_s, max_usd=limits.max_usd),
            retry=RetryRules(
                on=frozenset(retry.on),
                stop_on=frozenset(retry.stop_on),
                backoff_initial_s=retry.backoff_initial_s,
                backoff_max_s=retry.backoff_max_s,
            ),
            check_before_use=policy.health.check_before_use,
        )
    )
