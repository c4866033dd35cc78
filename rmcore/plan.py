"""A run plan: a policy resolved against its providers, in the form the engine executes.

The policy file is what people write; the plan is what the engine needs: a tree of routes whose
leaves are providers with their effective limits (inherited settings already applied), the retry
rules, the breaker rules and the run's limits. Keeping the two apart lets the engine and its
simulator be tested without any policy file.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from returns.result import Failure, Result, Success

from rmcore.base import Base
from rmcore.errors import ErrorKind
from rmcore.policy.schema import Policy, Strategy, Target, TargetTable
from rmcore.providers import ProviderSpec
from rmcore.quota import Cap, policy_caps

__all__ = [
    "BreakerRules",
    "RetryRules",
    "RoutePlan",
    "RunLimits",
    "RunPlan",
    "TargetPlan",
    "build_plan",
    "leaves",
]


class TargetPlan(Base, frozen=True):
    """One provider of a route, with the limits that apply to its attempts."""

    provider: ProviderSpec
    attempt_timeout_s: float = 30.0
    first_token_timeout_s: float = 15.0
    idle_timeout_s: float = 20.0
    max_attempts: int = 2
    weight: float = 1.0


class RoutePlan(Base, frozen=True):
    """A nested route: its strategy and its targets (providers or routes of their own)."""

    strategy: Strategy = Strategy.SEQUENTIAL
    targets: tuple[TargetPlan | RoutePlan, ...] = ()
    hedge_after_s: float = 2.0
    weight: float = 1.0


class RetryRules(Base, frozen=True):
    """Which failures are retried on the same target, which end the run, and how long to wait.

    ``budget_ratio`` and ``budget_floor`` bound the retries of a whole run: at most
    ``budget_floor + budget_ratio * first attempts`` retries, so a failing provider is never
    hammered however many targets and attempts the policy allows.
    """

    on: frozenset[ErrorKind] = frozenset(
        {ErrorKind.RATE_LIMITED, ErrorKind.SERVER_ERROR, ErrorKind.CONNECTION}
    )
    stop_on: frozenset[ErrorKind] = frozenset({ErrorKind.CONTENT_FILTER})
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 8.0
    budget_ratio: float = 0.2
    budget_floor: int = 3


class BreakerRules(Base, frozen=True):
    """Circuit breakers: on or off, and their thresholds (``[breaker]``)."""

    enabled: bool = False
    failure_threshold: int = 3
    cooldown_s: float = 30.0


class RunLimits(Base, frozen=True):
    """Limits of a whole run, fail-overs included."""

    deadline_s: float = 120.0
    max_usd: float = 1.0


class RunPlan(Base, frozen=True):
    """Everything the engine needs to route one request: the top route's strategy and targets,
    and the run-wide rules.

    ``caps`` and ``on_state_unavailable`` are for the shell, not the engine: before it sends an
    attempt it reserves the attempt's worst case against the caps in scope
    (:func:`rmcore.quota.charges_for`) in the shared state, and answers ``AttemptRefused`` when a
    cap is full, or when the state cannot be reached and the policy says ``"fail_closed"``.
    """

    targets: tuple[TargetPlan | RoutePlan, ...]
    strategy: Strategy = Strategy.SEQUENTIAL
    hedge_after_s: float = 2.0
    limits: RunLimits = RunLimits()
    retry: RetryRules = RetryRules()
    breaker: BreakerRules = BreakerRules()
    check_before_use: bool = False
    caps: tuple[Cap, ...] = ()
    on_state_unavailable: str = "fail_closed"

    @property
    def route(self) -> RoutePlan:
        """The top route as a ``RoutePlan``."""
        return RoutePlan(strategy=self.strategy, targets=self.targets, hedge_after_s=self.hedge_after_s)


def leaves(node: RunPlan | RoutePlan | TargetPlan) -> Iterator[TargetPlan]:
    """Every provider target under ``node``, depth first, in order."""
    if isinstance(node, TargetPlan):
        yield node
        return
    for target in node.targets:
        yield from leaves(target)


def build_plan(
    policy: Policy,
    providers: Mapping[str, ProviderSpec],
    *,
    observed_p95_s: Mapping[str, float] | None = None,
    breakers: bool = True,
) -> Result[RunPlan, str]:
    """The plan that runs ``policy`` with ``providers`` (the resolved built-ins and the policy's own).

    Each target's limits are its own, else the enclosing route's, else ``[limits]`` / ``[retry]``.
    ``hedge_after_s = "p95"`` becomes the first target's observed 95th-percentile latency from
    ``observed_p95_s`` (seconds by provider name), or 2 s when nothing was observed yet.
    ``breakers`` turns the circuit breakers on (the shell does when it has a state store).
    The plan's ``caps`` are the policy's ``[budget]`` caps and its route's provider quotas
    (:func:`rmcore.quota.policy_caps`).
    """
    limits = policy.limits
    p95 = observed_p95_s or {}

    def resolve(
        items: tuple[Target, ...], inherited: TargetTable
    ) -> tuple[TargetPlan | RoutePlan, ...] | str:
        built: list[TargetPlan | RoutePlan] = []
        for item in items:
            table = TargetTable(provider=item) if isinstance(item, str) else item
            merged = TargetTable(
                provider=table.provider,
                attempt_timeout_s=table.attempt_timeout_s or inherited.attempt_timeout_s,
                first_token_timeout_s=table.first_token_timeout_s or inherited.first_token_timeout_s,
                idle_timeout_s=table.idle_timeout_s or inherited.idle_timeout_s,
                max_attempts=table.max_attempts or inherited.max_attempts,
                hedge_after_s=table.hedge_after_s or inherited.hedge_after_s,
            )
            weight = table.weight or 1.0
            if table.targets is not None:
                inner = resolve(table.targets, merged)
                if isinstance(inner, str):
                    return inner
                built.append(
                    RoutePlan(
                        strategy=table.strategy or Strategy.SEQUENTIAL,
                        targets=inner,
                        hedge_after_s=hedge(merged.hedge_after_s, inner),
                        weight=weight,
                    )
                )
                continue
            assert table.provider is not None
            spec = providers.get(table.provider)
            if spec is None:
                return f"unknown provider {table.provider!r}"
            built.append(
                TargetPlan(
                    provider=spec,
                    attempt_timeout_s=merged.attempt_timeout_s or limits.attempt_timeout_s,
                    first_token_timeout_s=merged.first_token_timeout_s or limits.first_token_timeout_s,
                    idle_timeout_s=merged.idle_timeout_s or limits.idle_timeout_s,
                    max_attempts=merged.max_attempts or policy.retry.max_attempts,
                    weight=weight,
                )
            )
        return tuple(built)

    def hedge(value: float | str | None, targets: tuple[TargetPlan | RoutePlan, ...]) -> float:
        if value is None:
            value = policy.route.hedge_after_s
        if value == "p95":
            first = next(leaves(RoutePlan(targets=targets)), None)
            return p95.get(first.provider.name, 2.0) if first else 2.0
        assert isinstance(value, float | int)
        return float(value)

    targets = resolve(policy.route.targets, TargetTable())
    if isinstance(targets, str):
        return Failure(targets)
    retry = policy.retry
    return Success(
        RunPlan(
            targets=targets,
            strategy=policy.route.strategy,
            hedge_after_s=hedge(policy.route.hedge_after_s, targets),
            limits=RunLimits(deadline_s=limits.deadline_s, max_usd=limits.max_usd),
            retry=RetryRules(
                on=frozenset(retry.on),
                stop_on=frozenset(retry.stop_on),
                backoff_initial_s=retry.backoff_initial_s,
                backoff_max_s=retry.backoff_max_s,
            ),
            breaker=BreakerRules(
                enabled=breakers,
                failure_threshold=policy.breaker.failure_threshold,
                cooldown_s=policy.breaker.cooldown_s,
            ),
            check_before_use=policy.health.check_before_use,
            caps=policy_caps(policy, providers),
            on_state_unavailable=policy.budget.on_state_unavailable,
        )
    )
