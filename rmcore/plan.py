"""A run plan: a policy resolved against its providers, in the form the engine executes.

The policy file is what people write; the plan is what the engine needs: a tree of routes whose
leaves are providers with their effective limits (inherited settings already applied), the retry
rules, the breaker rules and the run's limits. Keeping the two apart lets the engine and its
simulator be tested without any policy file.

A plan built by hand (in tests, or by an embedding program) starts from the policy's defaults:
every default below is read from the schema's, never written twice.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from returns.result import Failure, Result, Success

from rmcore.base import Base
from rmcore.capabilities import Capability, in_words, missing, needs
from rmcore.errors import ErrorKind
from rmcore.policy.schema import (
    DEFAULT_HEDGE_AFTER_S,
    DEFAULT_ROUTE,
    DEFAULT_STRATEGY,
    DEFAULT_WEIGHT,
    Breaker,
    Budget,
    HedgeAfter,
    Limits,
    Policy,
    Retry,
    Strategy,
    Target,
    TargetTable,
)
from rmcore.problems import Problem, ProblemKind, collect
from rmcore.providers import ProviderSpec
from rmcore.quota import Cap, policy_caps
from rmcore.requests import ChatRequest

__all__ = [
    "BreakerRules",
    "RetryRules",
    "RoutePlan",
    "RunLimits",
    "RunPlan",
    "TargetPlan",
    "build_plan",
    "first_leaf",
    "leaves",
    "probe_timeout_s",
    "unsupported",
]


_LIMITS, _RETRY, _BREAKER = Limits(), Retry(), Breaker()
"""The schema's defaults, read once."""


class TargetPlan(Base, frozen=True):
    """One provider of a route, with the limits that apply to its attempts."""

    provider: ProviderSpec
    attempt_timeout_s: float = _LIMITS.attempt_timeout_s
    first_token_timeout_s: float = _LIMITS.first_token_timeout_s
    idle_timeout_s: float = _LIMITS.idle_timeout_s
    max_attempts: int = _RETRY.max_attempts
    weight: float = DEFAULT_WEIGHT


class RoutePlan(Base, frozen=True):
    """A nested route: its strategy and its targets (providers or routes of their own)."""

    strategy: Strategy = DEFAULT_STRATEGY
    targets: tuple[TargetPlan | RoutePlan, ...] = ()
    hedge_after_s: float = DEFAULT_HEDGE_AFTER_S
    weight: float = DEFAULT_WEIGHT


class RetryRules(Base, frozen=True):
    """Which failures are retried on the same target, which end the run, and how long to wait.

    ``budget_ratio`` and ``budget_floor`` bound the retries of a whole run: at most
    ``budget_floor + budget_ratio * first attempts`` retries, so a failing provider is never
    hammered however many targets and attempts the policy allows.
    """

    on: frozenset[ErrorKind] = frozenset(_RETRY.on)
    stop_on: frozenset[ErrorKind] = frozenset(_RETRY.stop_on)
    backoff_initial_s: float = _RETRY.backoff_initial_s
    backoff_max_s: float = _RETRY.backoff_max_s
    budget_ratio: float = 0.2
    budget_floor: int = 3


class BreakerRules(Base, frozen=True):
    """Circuit breakers: on or off, and their thresholds (``[breaker]``)."""

    enabled: bool = False
    failure_threshold: int = _BREAKER.failure_threshold
    cooldown_s: float = _BREAKER.cooldown_s


class RunLimits(Base, frozen=True):
    """Limits of a whole run, fail-overs included."""

    deadline_s: float = _LIMITS.deadline_s
    max_usd: float = _LIMITS.max_usd


class RunPlan(Base, frozen=True):
    """Everything the engine needs to route one request: the top route's strategy and targets,
    and the run-wide rules.

    ``caps`` and ``on_state_unavailable`` are for the shell, not the engine: before it sends an
    attempt it reserves the attempt's worst case against the caps in scope
    (:func:`rmcore.quota.charges_for`) in the shared state, and answers ``AttemptRefused`` when a
    cap is full, or when the state cannot be reached and the policy says ``"fail_closed"``.
    """

    targets: tuple[TargetPlan | RoutePlan, ...]
    strategy: Strategy = DEFAULT_STRATEGY
    hedge_after_s: float = DEFAULT_HEDGE_AFTER_S
    limits: RunLimits = RunLimits()
    retry: RetryRules = RetryRules()
    breaker: BreakerRules = BreakerRules()
    check_before_use: bool = False
    caps: tuple[Cap, ...] = ()
    on_state_unavailable: str = Budget().on_state_unavailable
    route_name: str = DEFAULT_ROUTE
    """The name of the policy's route this plan runs (``default``: ``[route]``), for messages."""

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


def first_leaf(node: RunPlan | RoutePlan | TargetPlan) -> TargetPlan:
    """The first provider target under ``node``: ``next(leaves(node))`` without a generator per
    level, for what every run asks once."""
    while not isinstance(node, TargetPlan):
        node = node.targets[0]
    return node


def probe_timeout_s(node: RunPlan | RoutePlan | TargetPlan) -> float:
    """How long a probe of an open circuit may take under ``node`` (``rmcore.breaker.admit``): its
    longest attempt timeout. Asked before every attempt, so the tree is walked without a
    generator per level."""
    longest: float | None = None
    stack: list[RunPlan | RoutePlan | TargetPlan] = [node]
    while stack:
        here = stack.pop()
        if isinstance(here, TargetPlan):
            longest = here.attempt_timeout_s if longest is None else max(longest, here.attempt_timeout_s)
        else:
            stack.extend(here.targets)
    return 30.0 if longest is None else longest


def unsupported(plan: RunPlan, request: ChatRequest) -> Problem | None:
    """Why no target of ``plan`` can carry ``request``, or None when one can (or it needs
    nothing beyond text). The engine skips each target that cannot carry it (``unsupported``);
    when that is every target, the run must not start: the shell checks this first and says which
    feature and which targets (``this request needs tools; no target of route default can carry
    it (aiceo-gateway: text only)``)."""
    needed = needs(request)
    if not needed:
        return None
    specs = {t.provider.name: t.provider for t in leaves(plan)}
    if any(not missing(needed, spec.carries) for spec in specs.values()):
        return None
    reasons = [f"{name}: {_lacks(spec, needed)}" for name, spec in specs.items()]
    what = in_words(needed)
    it = "it" if len(needed) == 1 else "them"
    return Problem(
        kind=ProblemKind.UNSUPPORTED_REQUEST,
        message=(
            f"this request needs {what}; no target of route {plan.route_name} can carry {it}"
            f" ({'; '.join(reasons)})"
        ),
        subject=what,
    )


def _lacks(spec: ProviderSpec, needed: frozenset[Capability]) -> str:
    """What ``spec`` lacks of ``needed``, in words: ``text only`` when it carries nothing."""
    return "text only" if not spec.carries else f"cannot carry {in_words(missing(needed, spec.carries))}"


def build_plan(
    policy: Policy,
    providers: Mapping[str, ProviderSpec],
    *,
    observed_p95_s: Mapping[str, float] | None = None,
    breakers: bool = True,
    route: str = DEFAULT_ROUTE,
) -> Result[RunPlan, Problem]:
    """The plan that runs ``policy``'s route called ``route`` (``default``: ``[route]``; else a
    ``[routes.NAME]``) with ``providers`` (the resolved built-ins and the policy's own). Every
    route shares the policy's ``[limits]``, ``[retry]``, ``[breaker]``, ``[health]`` and
    ``[budget]``; a route name the policy lacks is a ``Failure`` (``unknown_route``).

    Each target's limits are its own, else the enclosing route's, else ``[limits]`` / ``[retry]``.
    ``hedge_after_s = "p95"`` becomes the first target's observed 95th-percentile latency from
    ``observed_p95_s`` (seconds by provider name), or the schema's default when nothing was
    observed yet. ``breakers`` turns the circuit breakers on (the shell does when it has a state
    store). The plan's ``caps`` are the policy's ``[budget]`` caps and its route's provider quotas
    (:func:`rmcore.quota.policy_caps`). A target naming a provider that ``providers`` lacks is a
    ``Failure`` (``unknown_provider``).
    """
    chosen = policy.named_route(route)
    if chosen is None:
        return Failure(
            Problem(
                kind=ProblemKind.UNKNOWN_ROUTE,
                message=f'no route named "{route}"; routes: {", ".join(policy.route_names())}',
                subject=route,
            )
        )
    planner = _Planner(policy, providers, observed_p95_s or {}, route=route)
    return planner.targets(chosen.targets, TargetTable()).map(
        lambda targets: planner.plan(targets, breakers=breakers)
    )


class _Planner:
    """Turns a policy's route into plans, target by target: each step a ``Result``, so the first
    unknown provider, however deep in nested routes, is the plan's failure."""

    def __init__(
        self,
        policy: Policy,
        providers: Mapping[str, ProviderSpec],
        observed_p95_s: Mapping[str, float],
        *,
        route: str = DEFAULT_ROUTE,
    ) -> None:
        self.policy = policy
        self.providers = providers
        self.observed_p95_s = observed_p95_s
        self.route_name = route
        chosen = policy.named_route(route)
        assert chosen is not None  # build_plan checks the name first
        self.route = chosen

    def targets(
        self, items: tuple[Target, ...], inherited: TargetTable
    ) -> Result[tuple[TargetPlan | RoutePlan, ...], Problem]:
        """Every target of ``items`` planned, in order, or the first that cannot be."""
        return collect(self.target(item, inherited) for item in items)

    def target(self, item: Target, inherited: TargetTable) -> Result[TargetPlan | RoutePlan, Problem]:
        """One target: a provider with its limits, or a nested route with its own targets."""
        table = TargetTable(provider=item) if isinstance(item, str) else item
        merged = TargetTable(
            provider=table.provider,
            attempt_timeout_s=table.attempt_timeout_s or inherited.attempt_timeout_s,
            first_token_timeout_s=table.first_token_timeout_s or inherited.first_token_timeout_s,
            idle_timeout_s=table.idle_timeout_s or inherited.idle_timeout_s,
            max_attempts=table.max_attempts or inherited.max_attempts,
            hedge_after_s=table.hedge_after_s or inherited.hedge_after_s,
        )
        weight = table.weight or DEFAULT_WEIGHT
        if table.targets is not None:
            return self.targets(table.targets, merged).map(
                lambda inner: RoutePlan(
                    strategy=table.strategy or DEFAULT_STRATEGY,
                    targets=inner,
                    hedge_after_s=self.hedge(merged.hedge_after_s, inner),
                    weight=weight,
                )
            )
        assert table.provider is not None  # decode checks a table has a provider or targets
        limits, retry = self.policy.limits, self.policy.retry
        return self.provider(table.provider).map(
            lambda spec: TargetPlan(
                provider=spec,
                attempt_timeout_s=merged.attempt_timeout_s or limits.attempt_timeout_s,
                first_token_timeout_s=merged.first_token_timeout_s or limits.first_token_timeout_s,
                idle_timeout_s=merged.idle_timeout_s or limits.idle_timeout_s,
                max_attempts=merged.max_attempts or retry.max_attempts,
                weight=weight,
            )
        )

    def provider(self, name: str) -> Result[ProviderSpec, Problem]:
        """The provider called ``name``, or an ``unknown_provider`` problem."""
        spec = self.providers.get(name)
        if spec is None:
            return Failure(
                Problem(kind=ProblemKind.UNKNOWN_PROVIDER, message=f"unknown provider {name!r}", subject=name)
            )
        return Success(spec)

    def hedge(self, value: HedgeAfter | None, targets: tuple[TargetPlan | RoutePlan, ...]) -> float:
        """Seconds before a hedge: as written, inherited, or the first target's observed p95."""
        if value is None:
            value = self.route.hedge_after_s
        if value == "p95":
            first = next(leaves(RoutePlan(targets=targets)), None)
            seen = self.observed_p95_s.get(first.provider.name) if first else None
            return DEFAULT_HEDGE_AFTER_S if seen is None else seen
        assert isinstance(value, float | int)
        return float(value)

    def plan(self, targets: tuple[TargetPlan | RoutePlan, ...], *, breakers: bool) -> RunPlan:
        """The run plan over ``targets``, with the policy's run-wide rules."""
        policy = self.policy
        limits, retry = policy.limits, policy.retry
        return RunPlan(
            targets=targets,
            strategy=self.route.strategy,
            hedge_after_s=self.hedge(self.route.hedge_after_s, targets),
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
            caps=policy_caps(policy, self.providers, self.route_name),
            on_state_unavailable=policy.budget.on_state_unavailable,
            route_name=self.route_name,
        )
