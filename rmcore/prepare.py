"""From policy text to a run plan, as one pipeline of ``Result``-returning steps.

The policy path of DESIGN §1: TOML text → decoded policy → resolved providers → checked route →
run plan. Each arrow is a small function below, and :func:`prepare_text` and :func:`prepare`
join them with ``returns``' ``flow`` and ``bind``: the first step that fails is the answer, as a
:class:`~rmcore.problems.Problem` (``invalid_policy``, ``unknown_provider``,
``unusable_provider``, ``untrusted_provider``).

What only the shell knows (whether each provider's key is in the environment, and which origins
and plain-http hosts the user allowed) comes in as arguments or as a step of the shell's own:
every step is public, so the shell can bind one more between :func:`check_providers` and
:func:`plan_route`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence

from returns.pipeline import flow
from returns.pointfree import bind
from returns.result import Failure, Result, Success

from rmcore.base import Base
from rmcore.plan import RunPlan, build_plan
from rmcore.policy.decode import decode_policy
from rmcore.policy.resolve import all_route_providers, resolve_providers
from rmcore.policy.schema import DEFAULT_PRIMARY, DEFAULT_ROUTE, Policy
from rmcore.policy.trust import key_leaks, plain_http
from rmcore.problems import PolicyIssue, Problem, ProblemKind, collect
from rmcore.providers import BUILTIN_NAMES, ProviderSpec

__all__ = [
    "STRICT",
    "PlannedRoute",
    "ResolvedRoute",
    "Trust",
    "check_providers",
    "check_trust",
    "decode",
    "plan_route",
    "prepare",
    "prepare_text",
    "resolve",
]


class ResolvedRoute(Base, frozen=True):
    """A decoded policy with every provider it can name made concrete (``providers``), and the
    built-ins they were resolved from (``builtins``, which say where each built-in key belongs)."""

    policy: Policy
    providers: dict[str, ProviderSpec]
    builtins: dict[str, ProviderSpec]

    def used(self) -> list[ProviderSpec]:
        """The providers the routes name (``[route]``, then each ``[routes.NAME]``) that are
        configured, in route order, once each."""
        return [self.providers[name] for name in all_route_providers(self.policy) if name in self.providers]


class PlannedRoute(Base, frozen=True):
    """A route ready to run: the policy, every provider it may use, and the engine's plan of its
    route called ``route``."""

    policy: Policy
    providers: dict[str, ProviderSpec]
    plan: RunPlan
    route: str = DEFAULT_ROUTE


class Trust(Base, frozen=True):
    """What the user allowed beyond the safe default: origins a built-in's key may be sent to
    (``RMGR_ALLOWED_ORIGINS``), and plain http to hosts that are not loopback (``RMGR_ALLOW_HTTP``)."""

    allowed_origins: tuple[str, ...] = ()
    allow_http: bool = False


STRICT = Trust()
"""Nothing allowed beyond the safe default."""


# --- the steps ----------------------------------------------------------------------------------


def decode(
    text: str,
    source: str,
    *,
    known: Collection[str] = BUILTIN_NAMES,
    default_targets: Sequence[str] = (DEFAULT_PRIMARY,),
) -> Result[Policy, Problem]:
    """The policy in ``text`` (read from ``source``), or an ``invalid_policy`` problem carrying
    every issue (:func:`~rmcore.policy.decode.decode_policy`)."""
    return decode_policy(text, source, known, default_targets=default_targets).alt(_invalid_policy)


def _invalid_policy(issues: tuple[PolicyIssue, ...]) -> Problem:
    return Problem(
        kind=ProblemKind.INVALID_POLICY,
        message="\n".join(str(issue) for issue in issues),
        subject=issues[0].file if issues else "",
        issues=issues,
    )


def resolve(builtins: Mapping[str, ProviderSpec]) -> Callable[[Policy], ResolvedRoute]:
    """The step that resolves a policy's providers over ``builtins`` (it cannot fail: a name the
    route uses but nothing defines is found by :func:`check_providers`)."""

    def step(policy: Policy) -> ResolvedRoute:
        return ResolvedRoute(
            policy=policy, providers=resolve_providers(policy, builtins), builtins=dict(builtins)
        )

    return step


def check_providers(route: ResolvedRoute) -> Result[ResolvedRoute, Problem]:
    """``route`` when every provider its routes name (``[route]`` and each ``[routes.NAME]``) is
    defined and usable as configured; else the first that is not (``unknown_provider``,
    ``unusable_provider``), in route order."""
    return collect(_usable(route.providers, name) for name in all_route_providers(route.policy)).map(
        lambda _: route
    )


def _usable(providers: Mapping[str, ProviderSpec], name: str) -> Result[ProviderSpec, Problem]:
    spec = providers.get(name)
    if spec is None:
        return Failure(
            Problem(
                kind=ProblemKind.UNKNOWN_PROVIDER,
                message=f"unknown provider {name!r}; known providers: {', '.join(sorted(providers))}",
                subject=name,
            )
        )
    if spec.problems:
        return Failure(
            Problem(
                kind=ProblemKind.UNUSABLE_PROVIDER,
                message=f"provider {name}: " + "; ".join(spec.problems),
                subject=name,
            )
        )
    return Success(spec)


def check_trust(trust: Trust = STRICT) -> Callable[[ResolvedRoute], Result[ResolvedRoute, Problem]]:
    """The step that refuses a route sending a built-in's key to a foreign origin, or talking
    plain http to a host that is not loopback, unless ``trust`` allows it
    (:mod:`rmcore.policy.trust`); every such provider is named, one per line."""

    def step(route: ResolvedRoute) -> Result[ResolvedRoute, Problem]:
        used = route.used()
        problems = key_leaks(used, route.builtins, trust.allowed_origins)
        if not trust.allow_http:
            problems += plain_http(used)
        if not problems:
            return Success(route)
        return Failure(Problem(kind=ProblemKind.UNTRUSTED_PROVIDER, message="\n".join(problems)))

    return step


def plan_route(
    *, observed_p95_s: Mapping[str, float] | None = None, breakers: bool = True, route: str = DEFAULT_ROUTE
) -> Callable[[ResolvedRoute], Result[PlannedRoute, Problem]]:
    """The step that builds the engine's plan of the route called ``route``
    (:func:`~rmcore.plan.build_plan`; ``unknown_route`` when the policy has none of that name)."""

    def step(resolved: ResolvedRoute) -> Result[PlannedRoute, Problem]:
        return build_plan(
            resolved.policy, resolved.providers, observed_p95_s=observed_p95_s, breakers=breakers, route=route
        ).map(
            lambda plan: PlannedRoute(
                policy=resolved.policy, providers=resolved.providers, plan=plan, route=route
            )
        )

    return step


# --- the pipelines ------------------------------------------------------------------------------


def prepare(
    policy: Policy,
    builtins: Mapping[str, ProviderSpec],
    *,
    trust: Trust = STRICT,
    observed_p95_s: Mapping[str, float] | None = None,
    breakers: bool = True,
    route: str = DEFAULT_ROUTE,
) -> Result[PlannedRoute, Problem]:
    """A decoded ``policy``, resolved over ``builtins``, checked (the providers of every route)
    and planned (its route called ``route``)."""
    return flow(
        policy,
        resolve(builtins),
        check_providers,
        bind(check_trust(trust)),
        bind(plan_route(observed_p95_s=observed_p95_s, breakers=breakers, route=route)),
    )


def prepare_text(
    text: str,
    source: str,
    builtins: Mapping[str, ProviderSpec],
    *,
    default_targets: Sequence[str] = (DEFAULT_PRIMARY,),
    trust: Trust = STRICT,
    observed_p95_s: Mapping[str, float] | None = None,
    breakers: bool = True,
    route: str = DEFAULT_ROUTE,
) -> Result[PlannedRoute, Problem]:
    """The policy ``text`` (read from ``source``) all the way to a run plan of its route called
    ``route``: decoded (the names of ``builtins`` are the known providers), then :func:`prepare`."""

    def prepared(policy: Policy) -> Result[PlannedRoute, Problem]:
        return prepare(
            policy, builtins, trust=trust, observed_p95_s=observed_p95_s, breakers=breakers, route=route
        )

    return flow(
        decode(text, source, known=tuple(builtins), default_targets=default_targets),
        bind(prepared),
    )
