"""A policy in plain words (``rmgr policy explain``): what will be tried, in what order, for how
long and for how much, so that a person can check the file says what they meant.

The words for each strategy are :mod:`rmcore.conduct`'s; every number is the policy's own (its
defaults filled in by the schema)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from rmcore.capabilities import in_words
from rmcore.conduct import STRATEGIES, Order
from rmcore.errors import ErrorKind
from rmcore.policy.resolve import all_route_providers, route_providers
from rmcore.policy.schema import DEFAULT_STRATEGY, DEFAULT_WEIGHT, HedgeAfter, Policy, Strategy, Target
from rmcore.providers import ProviderSpec
from rmcore.quota import DEFAULT_QUOTA_WINDOW_S, window_words

__all__ = ["explain"]

_INDENT = "   "


def explain(policy: Policy, providers: Mapping[str, ProviderSpec]) -> str:
    """The resolved route (nested routes indented), retries, timeouts, deadline, budget, caps over
    time and quotas, breaker, health check and analysis settings of ``policy``, described in
    sentences. A policy with ``[routes.NAME]`` shows every route by name (``default`` first, then
    the others in file order), each with the perspectives and the synthesis that go by it.

    ``providers`` are the resolved providers (:func:`~rmcore.policy.resolve.resolve_providers`);
    a target whose provider cannot be used as configured is flagged with the reason."""
    title = f'Policy "{policy.name}"' if policy.name else "Policy"
    route = policy.route
    top = _Settings(
        attempt_timeout_s=policy.limits.attempt_timeout_s,
        first_token_timeout_s=policy.limits.first_token_timeout_s,
        idle_timeout_s=policy.limits.idle_timeout_s,
        max_attempts=policy.retry.max_attempts,
    )
    writer = _RouteWriter(providers, top)
    writer.lines.append(title + (f": {policy.description}" if policy.description else ""))
    writer.lines.append("")
    if not policy.routes:
        how = _strategy(route.strategy, route.hedge_after_s)
        writer.lines.append(f"Route ({route.strategy.value}): {how}.")
        writer.targets(route.targets, route.strategy, route.hedge_after_s, top, prefix="")
        writer.lines.append("")
    else:  # every route by name, default first, each with who goes by it
        for name in policy.route_names():
            named = policy.named_route(name)
            assert named is not None  # a name of route_names()
            head = f'Route "{name}" ({named.strategy.value}), {_users(policy, name)}'
            writer.lines.append(f"{head}: {_strategy(named.strategy, named.hedge_after_s)}.")
            writer.targets(named.targets, named.strategy, named.hedge_after_s, top, prefix="")
            writer.lines.append("")
    writer.lines.extend(_paragraphs(policy, providers))
    return "\n".join(writer.lines) + "\n"


@dataclass(frozen=True, kw_only=True)
class _Settings:
    """The per-target settings in force at one level of the route (inherited downwards)."""

    attempt_timeout_s: float
    first_token_timeout_s: float
    idle_timeout_s: float
    max_attempts: int

    def below(self, target: Target) -> _Settings:
        if isinstance(target, str):
            return self
        return _Settings(
            attempt_timeout_s=_pick(target.attempt_timeout_s, self.attempt_timeout_s),
            first_token_timeout_s=_pick(target.first_token_timeout_s, self.first_token_timeout_s),
            idle_timeout_s=_pick(target.idle_timeout_s, self.idle_timeout_s),
            max_attempts=target.max_attempts if target.max_attempts is not None else self.max_attempts,
        )


def _pick(value: float | None, inherited: float) -> float:
    return inherited if value is None else value


class _RouteWriter:
    """Writes a route's targets as numbered lines (1., 2.1., ...), one level of indent per nesting."""

    def __init__(self, providers: Mapping[str, ProviderSpec], top: _Settings) -> None:
        self.providers = providers
        self.top = top
        self.lines: list[str] = []

    def targets(
        self,
        targets: tuple[Target, ...],
        strategy: Strategy,
        hedge_after_s: HedgeAfter,
        inherited: _Settings,
        *,
        prefix: str,
    ) -> None:
        indent = _INDENT * (prefix.count(".") + 1)
        weights = [_weight(t) for t in targets]
        for position, target in enumerate(targets, start=1):
            number = f"{prefix}{position}."
            settings = inherited.below(target)
            weight = ""
            if STRATEGIES[strategy].order is Order.WEIGHT:
                share = 100 * weights[position - 1] / sum(weights)
                weight = f" [weight {weights[position - 1]:g}, {share:.0f}% to go first]"
            if not isinstance(target, str) and target.targets is not None:
                nested = target.strategy or DEFAULT_STRATEGY
                hedge = hedge_after_s if target.hedge_after_s is None else target.hedge_after_s
                how = _strategy(nested, hedge)
                self.lines.append(f"{indent}{number} a nested route ({nested.value}){weight}: {how}:")
                self.targets(target.targets, nested, hedge, settings, prefix=number)
                continue
            name = target if isinstance(target, str) else target.provider or "?"
            attempts = _attempts(settings, self.top)
            self.lines.append(f"{indent}{number} {_provider(name, self.providers)}{weight}; {attempts}.")
            spec = self.providers.get(name)
            if spec is None:
                self.lines.append(f"{indent}{_INDENT}! no provider of that name is configured")
            elif spec.problems:
                self.lines.append(f"{indent}{_INDENT}! not usable as configured: {'; '.join(spec.problems)}")


def _users(policy: Policy, route: str) -> str:
    """Who goes by ``route``: the perspectives it asks and the synthesis, in words."""
    analysis = policy.analysis
    ids = list(dict.fromkeys([*analysis.perspectives, *analysis.routes]))
    users = [p for p in ids if analysis.route_for(p) == route]
    if analysis.synthesis and analysis.synthesis_route == route:
        users.append("the synthesis")
    if not users:
        return f"for no perspective (rmgr ask --route {route})"
    return "for " + (users[0] if len(users) == 1 else f"{', '.join(users[:-1])} and {users[-1]}")


def _synthesis(policy: Policy) -> str:
    """The sentence that says whether a synthesis follows the perspectives, and by which route."""
    analysis = policy.analysis
    if not analysis.synthesis:
        return (
            " No synthesis (synthesis = false): the report lists their recommendations and where"
            " they agree."
        )
    by = "the route above" if not policy.routes else f'route "{analysis.synthesis_route}"'
    return f" Then one more request, the synthesis, weighs their answers into a decision, by {by}."


def _weight(target: Target) -> float:
    if isinstance(target, str) or target.weight is None:
        return DEFAULT_WEIGHT
    return target.weight


def _provider(name: str, providers: Mapping[str, ProviderSpec]) -> str:
    spec = providers.get(name)
    if spec is None:
        return name
    where = f" at {spec.url}" if spec.url else ", no URL"
    if spec.input_usd_per_mtok == 0 and spec.output_usd_per_mtok == 0:
        price = "free"
    else:
        price = f"{_usd(spec.input_usd_per_mtok)}/{_usd(spec.output_usd_per_mtok)} per M tokens in/out"
    key = "" if spec.key_required else ", no key needed"
    return f"{name}: {spec.model or 'no model'}{where}, {price}{key}{_carries(spec)}"


def _carries(spec: ProviderSpec) -> str:
    """What the provider carries beyond text, said only when it is not everything by its kind's
    default: ``text only`` (the AICEO gateway), or what the policy's ``supports`` lists."""
    if not spec.carries:
        return ", text only"
    if spec.supports is None:
        return ""
    return f", carries {in_words(spec.carries)}"


def _attempts(settings: _Settings, top: _Settings) -> str:
    if settings.max_attempts == 1:
        text = f"1 attempt of at most {_s(settings.attempt_timeout_s)}"
    else:
        text = f"up to {settings.max_attempts} attempts of at most {_s(settings.attempt_timeout_s)} each"
    extra = []
    if settings.first_token_timeout_s != top.first_token_timeout_s:
        extra.append(f"first token within {_s(settings.first_token_timeout_s)}")
    if settings.idle_timeout_s != top.idle_timeout_s:
        extra.append(f"silent for at most {_s(settings.idle_timeout_s)}")
    return text + (f" (streaming: {', '.join(extra)})" if extra else "")


def _strategy(strategy: Strategy, hedge_after_s: HedgeAfter) -> str:
    """The strategy in words (:data:`rmcore.conduct.STRATEGIES`), its hedging delay filled in."""
    wait = "its observed p95 latency" if hedge_after_s == "p95" else _s(float(hedge_after_s))
    return STRATEGIES[strategy].words.format(wait=wait)


def _paragraphs(policy: Policy, providers: Mapping[str, ProviderSpec]) -> list[str]:
    retry, limits = policy.retry, policy.limits
    if retry.on:
        retried = (
            f"Retries: an attempt that ends in {_kinds(retry.on)} is retried on the same target (the"
            " attempt counts above include the first), after a back-off of"
            f" {retry.backoff_initial_s:g}–{_s(retry.backoff_max_s)} (full jitter, never less than the"
            " Retry-After the provider asks for); any other failure moves on to the next target at once."
        )
    else:
        retried = "Retries: none; any failure moves on to the next target at once."
    if retry.stop_on:
        retried += (
            f" An attempt that ends in {_kinds(retry.stop_on)} ends the whole run at once, with the"
            " provider's reason."
        )
    health = (
        "Health check: before a target is used, a quick health check; an unhealthy one is skipped."
        if policy.health.check_before_use
        else "Health check: off; targets are used without checking them first."
    )
    analysis = policy.analysis
    count = len(analysis.perspectives)
    return [
        retried,
        f"Timeouts: an attempt may take {_s(limits.attempt_timeout_s)} from sending the request to the last"
        f" byte; when streaming, the first token must come within {_s(limits.first_token_timeout_s)} and the"
        f" stream may not go silent for more than {_s(limits.idle_timeout_s)}.",
        f"Deadline: the whole run, fail-overs and back-off waits included, ends after"
        f" {_s(limits.deadline_s)}; nothing waits or runs past it.",
        f"Budget: {_usd(limits.max_usd)} for the whole run. Before each request its worst case (the prompt's"
        " estimate plus max_tokens at the provider's prices) is compared with what is left: a request"
        " that could exceed it is not sent." + _perspectives_at_once(policy, providers),
        _caps(policy, providers),
        f"Circuit breaker: {policy.breaker.failure_threshold} consecutive failures open a provider's circuit"
        f" for {_s(policy.breaker.cooldown_s)}; then one probe decides whether it closes. A target whose"
        " circuit is open is skipped.",
        health,
        f"Analysis: {count} perspective{'s' if count != 1 else ''} ({', '.join(analysis.perspectives)}),"
        f" at most {analysis.max_concurrency} at a time; it fails unless at least"
        f" {analysis.min_perspectives} succeed{'s' if analysis.min_perspectives == 1 else ''}."
        + _synthesis(policy),
        *_client_keys(policy),
    ]


def _client_keys(policy: Policy) -> list[str]:
    """``[serve.keys.NAME]``: what ``rmgr serve`` lets each named client key spend and send."""
    limits = []
    for name, key in policy.serve.keys.items():
        parts = [f"{_usd(key.max_usd_per_day)} per UTC day"] if key.max_usd_per_day is not None else []
        if key.rpm is not None:
            parts.append(f"{key.rpm} request{'s' if key.rpm != 1 else ''} per minute")
        limits.append(f"{name} at most {' and '.join(parts)}")
    if not limits:
        return []
    return [
        f"Client keys of rmgr serve: {'; '.join(limits)}. They are counted across every worker and"
        " host that shares the state; a request past either limit gets 429 with Retry-After, and"
        " nothing is sent for it."
    ]


def _caps(policy: Policy, providers: Mapping[str, ProviderSpec]) -> str:
    """The ``[budget]`` caps and the route's provider quotas, and what happens when one is full."""
    budget = policy.budget
    spends: list[str] = []
    own = _per_period(budget.daily_usd, budget.monthly_usd)
    if own:
        spends.append(f'{own} for everything policy "{policy.name or "default"}" spends')
    for name, caps in budget.providers.items():
        if text := _per_period(caps.daily_usd, caps.monthly_usd):
            spends.append(f"{text} for what {name} is paid, by any policy that sets it")
    quotas: list[str] = []
    for name in all_route_providers(policy):
        spec = providers.get(name)
        if spec is None or not (spec.requests_per_window or spec.tokens_per_window):
            continue
        amounts = [
            f"{limit} {noun}"
            for limit, noun in ((spec.requests_per_window, "requests"), (spec.tokens_per_window, "tokens"))
            if limit
        ]
        window_s = spec.quota_window_s or DEFAULT_QUOTA_WINDOW_S
        quotas.append(
            f"{name} takes at most {' and '.join(amounts)} per {window_words(window_s)} window"
            f" ({window_s:g} s)"
        )
    if not spends and not quotas:
        return "Caps over time: none; only the run's own budget limits spending."
    parts = []
    if spends:
        parts.append(f"Caps over time: at most {'; '.join(spends)}.")
    if quotas:
        lead = "Quotas" if spends else "Caps over time: no dollar caps. Quotas"
        parts.append(f"{lead}: {'; '.join(quotas)}, windows aligned to the Unix epoch.")
    parts.append(
        "They are counted across every rmgr process that shares the state (RECURSIVEMANAGER_STATE):"
        " before each request its worst case is reserved against every cap in scope, and a target"
        " whose cap it could break is skipped (budget or quota) until the window resets."
    )
    if budget.on_state_unavailable == "fail_open":
        parts.append(
            "If the shared state cannot be reached, runs go on under local limits only, counted by"
            " this process alone (fail_open)."
        )
    else:
        parts.append("If the shared state cannot be reached, no paid request starts (fail_closed).")
    return " ".join(parts)


def _per_period(daily_usd: float | None, monthly_usd: float | None) -> str:
    limits = [
        f"{_usd(usd)} per {period}"
        for usd, period in ((daily_usd, "UTC day"), (monthly_usd, "UTC calendar month"))
        if usd is not None
    ]
    return " and ".join(limits)


def _kinds(kinds: tuple[ErrorKind, ...]) -> str:
    names = [k.value for k in kinds]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def _s(seconds: float) -> str:
    return f"{seconds:g} s"


def _usd(amount: float) -> str:
    return f"${amount:.2f}" if round(amount, 2) == amount else f"${amount:g}"


def _perspectives_at_once(policy: Policy, providers: Mapping[str, ProviderSpec]) -> str:
    """How many perspectives of an analysis the budget lets run at once, at the prices of the
    cheapest and the dearest provider their routes name (and with every target of a racing route
    at once): each request reserves its worst case (the longest perspective prompt with a short
    question, plus the default max_tokens) until it settles, and the perspectives that do not fit
    wait for room (``rmcore.engine``)."""
    # Imported here: rmcore.perspectives imports rmcore.policy.schema, whose package imports this.
    from rmcore.conduct import Concurrency
    from rmcore.perspectives import perspective_request, select_perspectives
    from rmcore.pricing import worst_case_usd
    from rmcore.requests import DEFAULT_MAX_TOKENS

    analysis = policy.analysis
    chosen = select_perspectives(analysis.perspectives, policy.perspectives).value_or([])
    routes = sorted({analysis.route_for(p.id) for p in chosen})
    names = {name for route in routes for name in route_providers(policy, route) if name in providers}
    if not chosen or not names:
        return ""
    requests = [perspective_request(p, "", max_tokens=DEFAULT_MAX_TOKENS) for p in chosen]
    worst = {name: max(worst_case_usd(r, providers[name]) for r in requests) for name in names}
    cheapest = min(sorted(worst), key=lambda n: worst[n])
    dearest = max(sorted(worst), key=lambda n: worst[n])
    count = len(chosen)

    def at_once(usd: float) -> int:
        return count if usd <= 0 else min(count, math.floor(policy.limits.max_usd / usd + 1e-9))

    costs = f"{_usd_3(worst[cheapest])} at {cheapest}"
    runs = [f"{at_once(worst[cheapest])} can run at once at {cheapest}'s prices"]
    fits = [at_once(worst[cheapest])]
    if dearest != cheapest:
        costs += f" and {_usd_3(worst[dearest])} at {dearest}"
        runs.append(f"{at_once(worst[dearest])} at {dearest}'s")
        fits.append(at_once(worst[dearest]))
    for route in routes:
        chosen_route = policy.named_route(route)
        if chosen_route is None or STRATEGIES[chosen_route.strategy].concurrency is not Concurrency.ALL:
            continue
        racing = sum(worst[n] for n in route_providers(policy, route) if n in worst)
        label = "the route's" if not policy.routes else f'route "{route}"\'s'
        runs.append(f"{at_once(racing)} with all {label} targets racing ({_usd_3(racing)} a perspective)")
        fits.append(at_once(racing))
    if min(fits) >= count:
        return (
            f" In an analysis the perspectives share it: a perspective's request costs at most {costs}"
            f" (a short question, {DEFAULT_MAX_TOKENS} tokens of answer), so all {count} can run at once."
        )
    return (
        f" In an analysis the perspectives share it: a perspective's request costs at most {costs}"
        f" (a short question, {DEFAULT_MAX_TOKENS} tokens of answer), so {_and(runs)}; the others"
        " wait for running ones to settle (most cost far less than their worst case) instead of failing."
    )


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _usd_3(amount: float) -> str:
    return f"${amount:.3g}"
