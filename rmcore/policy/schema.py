"""The policy file's schema (DESIGN §4), as frozen msgspec structs.

Type-level constraints (positive timeouts, non-negative prices, at least one target, known enum
values) live here as ``msgspec.Meta`` annotations, so that decoding rejects them with the value's
path. Rules that span several fields or need outside knowledge (known provider names, URL shape,
retry kinds that make sense) live in :mod:`rmcore.policy.decode`.

Every default of a policy key lives here and nowhere else: the plan, explain and decode read
them from here. The defaults that are conduct (``retry.on``, ``retry.stop_on``) are taken from
:mod:`rmcore.conduct`'s table, and ``Strategy`` is defined there with its traits (re-exported
here).

Sequences are tuples, so a decoded policy is immutable all the way down (dicts excepted: msgspec
decodes tables into plain dicts; treat them as read-only).
"""

from __future__ import annotations

from typing import Annotated, Literal, TypeAlias

import msgspec

from rmcore.base import Base
from rmcore.capabilities import Capability
from rmcore.conduct import CONFIGURABLE_KINDS, DEFAULT_RETRY_ON, DEFAULT_STOP_ON, Strategy
from rmcore.errors import ErrorKind
from rmcore.providers import ProviderKind

__all__ = [
    "BUILTIN_PERSPECTIVES",
    "DEFAULT_HEDGE_AFTER_S",
    "DEFAULT_PRIMARY",
    "DEFAULT_ROUTE",
    "DEFAULT_STRATEGY",
    "DEFAULT_WEIGHT",
    "NON_ATTEMPT_KINDS",
    "Analysis",
    "Breaker",
    "Budget",
    "ClientKeyLimits",
    "Health",
    "HedgeAfter",
    "Limits",
    "OnStateUnavailable",
    "PerspectiveDef",
    "Policy",
    "ProviderBudget",
    "ProviderOverride",
    "Retry",
    "Route",
    "Serve",
    "Strategy",
    "Target",
    "TargetTable",
    "default_policy",
]

PositiveFloat: TypeAlias = Annotated[float, msgspec.Meta(gt=0)]
NonNegativeFloat: TypeAlias = Annotated[float, msgspec.Meta(ge=0)]
PositiveInt: TypeAlias = Annotated[int, msgspec.Meta(ge=1)]
NonNegativeInt: TypeAlias = Annotated[int, msgspec.Meta(ge=0)]
WindowSeconds: TypeAlias = Annotated[float, msgspec.Meta(ge=1)]
NonEmptyStr: TypeAlias = Annotated[str, msgspec.Meta(min_length=1)]

HedgeAfter: TypeAlias = PositiveFloat | Literal["p95"]
"""Seconds to wait before hedging, or ``"p95"``: the target's observed 95th-percentile latency."""

BUILTIN_PERSPECTIVES: tuple[str, ...] = (
    "security",
    "architecture",
    "simplicity",
    "financial",
    "marketing",
    "ux",
    "growth",
    "emotional",
)
"""The eight perspective ids of the seed, in their fixed order."""

DEFAULT_PRIMARY = "aiceo-gateway"
"""The seed's default primary provider (``AI_PROVIDER``'s default)."""

NON_ATTEMPT_KINDS: frozenset[ErrorKind] = frozenset(ErrorKind) - CONFIGURABLE_KINDS
"""Kinds that describe the run or a skipped target rather than how an attempt ended: retrying on
them (or stopping on them) is meaningless, so ``retry.on`` and ``retry.stop_on`` reject them
(:data:`rmcore.conduct.CONFIGURABLE_KINDS` are the others)."""

DEFAULT_STRATEGY = Strategy.SEQUENTIAL
"""The strategy of a route (top or nested) that names none."""

DEFAULT_HEDGE_AFTER_S = 2.0
"""``hedge_after_s`` when the policy gives none, and when ``"p95"`` has nothing observed yet."""

DEFAULT_WEIGHT = 1.0
"""A target's ``weight`` when it gives none."""

DEFAULT_ROUTE = "default"
"""The name of ``[route]``, reserved for it: ``[routes.NAME]`` tables name the others."""


class ProviderOverride(Base, frozen=True):
    """A ``[providers.NAME]`` table: a new provider, or fields that override a built-in's.

    Every field is optional here; a *new* provider must give ``kind``, ``url`` and ``model`` (checked
    by the decoder). ``key_env`` names the environment variable holding the key, never the key; a
    new provider without ``key_env`` needs no key (local servers).
    """

    kind: ProviderKind | None = None
    url: NonEmptyStr | None = None
    model: NonEmptyStr | None = None
    key_env: NonEmptyStr | None = None
    input_usd_per_mtok: NonNegativeFloat | None = None
    output_usd_per_mtok: NonNegativeFloat | None = None
    aiceo_provider: NonEmptyStr | None = None
    aiceo_priority: NonEmptyStr | None = None
    max_concurrency: PositiveInt | None = None
    """The most requests sent to this provider at once by one ``rmgr`` process."""
    requests_per_window: NonNegativeInt | None = None
    """The provider's request quota: at most this many requests per ``quota_window_s``, counted
    across every process that shares the state; 0 removes a built-in's quota."""
    tokens_per_window: NonNegativeInt | None = None
    """The provider's token quota per ``quota_window_s`` (prompt plus answer, a request's worst
    case reserved before it is sent); 0 removes a built-in's quota."""
    quota_window_s: WindowSeconds | None = None
    """The length of the quota windows, aligned to the Unix epoch (3600 s when a quota is set
    without it)."""
    supports: tuple[Capability, ...] | None = None
    """What the provider carries beyond text (``["tools", "images", "json_schema"]``; ``[]`` for
    text only), replacing what its kind carries: a request that needs more is never sent to it."""


class TargetTable(Base, frozen=True):
    """A route target written as a table: exactly one of ``provider`` or ``targets``.

    With ``provider`` it names one provider with per-target overrides. With ``targets`` it is a
    nested route (its own ``strategy`` and ``hedge_after_s``), to any depth; overrides given on a
    nested route apply to every target inside it that does not set its own. ``None`` means
    "inherit": from the enclosing nested route, else from ``[limits]`` / ``[retry]``; an unset
    ``weight`` is ``DEFAULT_WEIGHT`` (1); a nested route without ``strategy`` is
    ``DEFAULT_STRATEGY`` (sequential), and without
    ``hedge_after_s`` takes its enclosing route's.
    """

    provider: NonEmptyStr | None = None
    strategy: Strategy | None = None
    targets: Annotated[tuple[Target, ...], msgspec.Meta(min_length=1)] | None = None
    hedge_after_s: HedgeAfter | None = None
    attempt_timeout_s: PositiveFloat | None = None
    first_token_timeout_s: PositiveFloat | None = None
    idle_timeout_s: PositiveFloat | None = None
    weight: PositiveFloat | None = None
    max_attempts: PositiveInt | None = None


Target: TypeAlias = str | TargetTable
"""A provider's name, or a :class:`TargetTable`."""


class Route(Base, frozen=True):
    """``[route]``: the strategy and its targets (the top of a possibly nested route)."""

    strategy: Strategy = DEFAULT_STRATEGY
    targets: Annotated[tuple[Target, ...], msgspec.Meta(min_length=1)] = (DEFAULT_PRIMARY,)
    hedge_after_s: HedgeAfter = DEFAULT_HEDGE_AFTER_S


class Limits(Base, frozen=True):
    """``[limits]``: timeouts of one attempt and the whole run's deadline and budget."""

    attempt_timeout_s: PositiveFloat = 30.0
    """One attempt, request sent to last byte."""
    first_token_timeout_s: PositiveFloat = 15.0
    """Streaming: request sent to first token."""
    idle_timeout_s: PositiveFloat = 20.0
    """Streaming: the longest silence between two chunks."""
    deadline_s: PositiveFloat = 120.0
    """The whole run, fail-overs and back-off waits included."""
    max_usd: NonNegativeFloat = 1.0
    """The whole run's budget; no request is sent whose worst case could exceed what is left."""


class Retry(Base, frozen=True):
    """``[retry]``: retries on the same target, and the kinds that end the run at once."""

    max_attempts: PositiveInt = 2
    """Attempts per target, the first included."""
    backoff_initial_s: NonNegativeFloat = 0.5
    backoff_max_s: NonNegativeFloat = 8.0
    """Cap of the full-jitter back-off; a Retry-After from the provider sets the minimum wait."""
    on: tuple[ErrorKind, ...] = DEFAULT_RETRY_ON
    """Kinds retried on the same target; every other attempt kind fails over to the next target.
    The default is the ``retried`` column of :data:`rmcore.conduct.CONDUCT`."""
    stop_on: tuple[ErrorKind, ...] = DEFAULT_STOP_ON
    """Kinds that end the whole run at once, reporting the provider's reason (by default, the
    kinds whose conduct is ``Then.STOP``)."""


class Breaker(Base, frozen=True):
    """``[breaker]``: the per-provider circuit breaker."""

    failure_threshold: PositiveInt = 3
    """Consecutive failures that open a provider's circuit."""
    cooldown_s: NonNegativeFloat = 30.0
    """How long the circuit stays open; then one probe (half-open) decides."""


class Health(Base, frozen=True):
    """``[health]``: the seed's quick health check before each target."""

    check_before_use: bool = False


class Analysis(Base, frozen=True):
    """``[analysis]``: which perspectives an analysis asks, how many at once, by which routes, and
    whether a synthesis weighs their answers."""

    perspectives: Annotated[tuple[NonEmptyStr, ...], msgspec.Meta(min_length=1)] = BUILTIN_PERSPECTIVES
    max_concurrency: PositiveInt = 8
    min_perspectives: PositiveInt = 1
    """Perspectives that must succeed for the analysis not to count as failed."""
    routes: dict[str, NonEmptyStr] = msgspec.field(default_factory=dict)
    """``[analysis.routes]``: a perspective id → the name of the route that asks it (``security =
    "deep"``); a perspective not listed goes by the ``default`` route (``[route]``)."""
    synthesis: bool = True
    """Whether one more request, after the perspectives, weighs their answers into a decision."""
    synthesis_route: NonEmptyStr = DEFAULT_ROUTE
    """The route the synthesis goes by (a name of :meth:`Policy.route_names`)."""

    def route_for(self, perspective: str) -> str:
        """The name of the route that asks ``perspective`` (``default`` unless listed)."""
        return self.routes.get(perspective, DEFAULT_ROUTE)


OnStateUnavailable: TypeAlias = Literal["fail_closed", "fail_open"]
"""What a run does when the shared state that keeps the caps cannot be reached: start no paid
request (``fail_closed``), or go on with only this process's own limits (``fail_open``)."""


class ProviderBudget(Base, frozen=True):
    """``[budget.providers.NAME]``: dollar caps on one provider, shared by every policy that sets
    them (the provider's spending, not the policy's)."""

    daily_usd: NonNegativeFloat | None = None
    """At most this much spent on the provider per UTC day."""
    monthly_usd: NonNegativeFloat | None = None
    """At most this much spent on the provider per UTC calendar month."""


class Budget(Base, frozen=True):
    """``[budget]``: dollar caps over time, beyond the single run's ``limits.max_usd``.

    The caps are kept in the shared state (SQLite on one machine, Redis for a fleet): each
    request's worst case is reserved against every cap in scope before it is sent, and a request
    that could break one is not sent. ``daily_usd`` and ``monthly_usd`` cap everything the
    policy (by its name) spends per UTC day and month.
    """

    daily_usd: NonNegativeFloat | None = None
    monthly_usd: NonNegativeFloat | None = None
    on_state_unavailable: OnStateUnavailable = "fail_closed"
    providers: dict[str, ProviderBudget] = msgspec.field(default_factory=dict)


class ClientKeyLimits(Base, frozen=True):
    """``[serve.keys.NAME]``: what ``rmgr serve`` lets the client key NAME (``NAME=KEY`` in
    ``RMGR_SERVE_KEYS``) spend and send. Kept in the shared state, so every worker and host that
    shares it counts the same use; a client over either limit gets 429 with ``Retry-After``."""

    max_usd_per_day: NonNegativeFloat | None = None
    """At most this much spent on the key's requests per UTC day (each attempt's worst case is
    reserved before it is sent, like ``[budget]``)."""
    rpm: PositiveInt | None = None
    """At most this many requests per minute (windows of 60 s aligned to the Unix epoch)."""


class Serve(Base, frozen=True):
    """``[serve]``: settings of the gateway (``rmgr serve``)."""

    keys: dict[str, ClientKeyLimits] = msgspec.field(default_factory=dict)
    """``[serve.keys.NAME]``: limits per named client key."""


class PerspectiveDef(Base, frozen=True):
    """``[perspectives.ID]``: a perspective beyond the eight (or a replacement for one of them)."""

    title: NonEmptyStr
    """The display name, as ``perspective`` in results."""
    system: NonEmptyStr
    """The system prompt that makes the model an expert of the field."""
    focus: tuple[NonEmptyStr, ...] = ()
    """Focus areas the user prompt asks to cover."""


class Policy(Base, frozen=True):
    """A whole policy file. Only ``version`` is required; it must be 1."""

    version: int
    name: str = ""
    """The policy's name; the decoder sets the file's stem when the file gives none."""
    description: str = ""
    providers: dict[str, ProviderOverride] = msgspec.field(default_factory=dict)
    route: Route = msgspec.field(default_factory=Route)
    routes: dict[str, Route] = msgspec.field(default_factory=dict)
    """``[routes.NAME]``: more routes beside ``[route]`` (whose name is ``default``), in file order."""
    limits: Limits = msgspec.field(default_factory=Limits)
    retry: Retry = msgspec.field(default_factory=Retry)
    breaker: Breaker = msgspec.field(default_factory=Breaker)
    health: Health = msgspec.field(default_factory=Health)
    analysis: Analysis = msgspec.field(default_factory=Analysis)
    perspectives: dict[str, PerspectiveDef] = msgspec.field(default_factory=dict)
    budget: Budget = msgspec.field(default_factory=Budget)
    serve: Serve = msgspec.field(default_factory=Serve)

    def route_names(self) -> tuple[str, ...]:
        """Every route's name: ``default`` (``[route]``) first, then ``[routes.NAME]`` in file order."""
        return (DEFAULT_ROUTE, *(name for name in self.routes if name != DEFAULT_ROUTE))

    def named_route(self, name: str) -> Route | None:
        """The route called ``name`` (``default`` is ``[route]``), or ``None`` when there is none."""
        return self.route if name == DEFAULT_ROUTE else self.routes.get(name)


def default_policy(primary: str, fallback: str | None) -> Policy:
    """The policy used when no ``--policy`` is given: ``primary`` then ``fallback`` in sequence
    (the seed's ``AI_PROVIDER`` / ``AI_FALLBACK_PROVIDER``), every other setting at its default."""
    targets: tuple[Target, ...] = (
        (primary,) if fallback is None or fallback == primary else (primary, fallback)
    )
    return Policy(
        version=1,
        name="default",
        description="The primary provider, then the fallback provider.",
        route=Route(strategy=Strategy.SEQUENTIAL, targets=targets),
    )

