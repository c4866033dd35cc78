"""Budgets and quotas over time windows: the caps a policy sets, and what one request charges them.

A *cap* limits one resource (dollars, requests or tokens) over one kind of window (a UTC day, a
UTC month, or a fixed window of N seconds aligned to the Unix epoch), for the whole policy or for
one provider. Before a request starts, the shell *reserves* its worst case against every cap that
applies, atomically in the shared store (SQLite on one machine, Redis for a fleet); when the
request ends, the reservation is *settled* with the real usage, or *released*. A reservation
carries a lease: if its host dies, the store forgets it when the lease runs out.

Everything here is pure: time is an argument (Unix seconds), and the stores only add and compare
the numbers these functions give them.
"""

from __future__ import annotations

import datetime as dt
import enum
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import msgspec

from rmcore.base import Base
from rmcore.completion import Usage
from rmcore.pricing import cost_usd, estimate_prompt_tokens
from rmcore.providers import ProviderSpec
from rmcore.requests import ChatRequest

if TYPE_CHECKING:
    from rmcore.policy.schema import Policy

__all__ = [
    "DEFAULT_QUOTA_WINDOW_S",
    "Cap",
    "CapUsage",
    "Charge",
    "Period",
    "Refusal",
    "Resource",
    "attempt_charges",
    "attempt_settlement",
    "charges_for",
    "client_admission",
    "client_caps",
    "client_refusal_message",
    "describe_amount",
    "format_moment",
    "policy_caps",
    "refuse",
    "settled_amounts",
    "window_of",
    "window_words",
]


class Resource(enum.StrEnum):
    """What a cap counts."""

    USD = "usd"
    REQUESTS = "requests"
    TOKENS = "tokens"


class Period(enum.StrEnum):
    """The window a cap counts over: a UTC calendar day or month, or fixed ``window_s`` windows."""

    DAY = "day"
    MONTH = "month"
    WINDOW = "window"


class Cap(Base, frozen=True):
    """One limit: at most ``limit`` of ``resource`` per ``period`` for ``scope``.

    ``scope`` is ``"policy:NAME"`` for a cap on everything a policy spends, or
    ``"provider:NAME"`` for one provider. ``key`` names the cap in the store and in messages,
    e.g. ``"policy:cost-first:usd:day"``; two policies with the same name share their caps.
    ``window_s`` is set only for ``Period.WINDOW``.
    """

    key: str
    scope: str
    resource: Resource
    limit: float
    period: Period
    window_s: float | None = None


class Charge(Base, frozen=True):
    """What one request reserves against one cap in one window.

    ``window`` names the window (``"2026-11-25"``, ``"2026-11"``, or the window's start in
    epoch seconds); ``resets_at`` is when it ends (Unix seconds). ``amount`` is the worst case
    reserved; ``limit`` is the cap's.
    """

    cap_key: str
    resource: Resource
    window: str
    resets_at: float
    amount: float
    limit: float


class Refusal(Base, frozen=True):
    """A reservation refused: which cap, how much of it is used (settled plus reserved), and
    when its window resets. ``message`` says it in words, for the user."""

    cap_key: str
    resource: Resource
    limit: float
    used: float
    requested: float
    resets_at: float
    message: str


class CapUsage(Base, frozen=True):
    """A cap's current window as a store reports it (``rmgr usage``): settled use and what live
    reservations hold."""

    cap_key: str
    resource: Resource
    window: str
    resets_at: float
    limit: float
    used: float
    reserved: float


DEFAULT_QUOTA_WINDOW_S = 3600.0
"""The quota window of a provider that sets a quota without ``quota_window_s``."""

_DAY_S = 86_400
_EPOCH = dt.date(1970, 1, 1)
_TOLERANCE = 1e-9
"""Rounding slack when comparing use with a limit: sums of float dollars must not refuse a request
that fits exactly."""


def window_of(period: Period, window_s: float | None, now_s: float) -> tuple[str, float]:
    """The window that holds the moment ``now_s`` (Unix seconds), as ``(name, resets_at)``.

    A window starts at or before ``now_s`` and resets strictly after it, so a moment exactly on a
    boundary belongs to the window that starts there. ``Period.DAY`` is the UTC calendar day
    (``"2026-11-25"``), resetting at the next UTC midnight; ``Period.MONTH`` the UTC calendar
    month (``"2026-11"``), resetting on the 1st of the next month at 00:00 UTC;
    ``Period.WINDOW`` a fixed window of ``window_s`` seconds aligned to the Unix epoch, named by its
    start in whole seconds. Raises ``ValueError`` for a ``WINDOW`` without a positive ``window_s``.
    """
    if period is Period.WINDOW:
        if window_s is None or not window_s > 0:
            raise ValueError(f"a fixed window needs a positive window_s, not {window_s!r}")
        start = _start_of(now_s, window_s)
        return str(int(start)), start + window_s
    day = _EPOCH + dt.timedelta(days=int(_start_of(now_s, _DAY_S) // _DAY_S))
    if period is Period.DAY:
        return day.isoformat(), _epoch_s(day + dt.timedelta(days=1))
    following = dt.date(day.year + 1, 1, 1) if day.month == 12 else dt.date(day.year, day.month + 1, 1)
    return f"{day.year:04d}-{day.month:02d}", _epoch_s(following)


def charges_for(
    caps: Sequence[Cap], provider: str, worst_usd: float, worst_tokens: int, now_s: float
) -> tuple[Charge, ...]:
    """What one request to ``provider`` reserves: a charge against every cap in scope.

    In scope are the caps of the whole policy (scope ``"policy:..."``), of the gateway's client key
    the run serves (scope ``"client:NAME"``: the caller passes only that key's) and those of
    ``provider`` (scope ``"provider:NAME"``); each is charged in the window that holds ``now_s``.
    The amount is the request's worst case: ``worst_usd`` for dollars, ``worst_tokens`` for tokens, and 1 for
    requests. A charge of nothing (a dollar cap and a free provider) is left out: it can neither
    break a cap nor add to one, so a request with no charges needs no store at all.
    """
    amounts = {Resource.USD: worst_usd, Resource.REQUESTS: 1.0, Resource.TOKENS: float(worst_tokens)}
    charges: list[Charge] = []
    for cap in caps:
        if not (cap.scope.startswith(("policy:", "client:")) or cap.scope == f"provider:{provider}"):
            continue
        amount = amounts[cap.resource]
        if amount <= 0:
            continue
        window, resets_at = window_of(cap.period, cap.window_s, now_s)
        charges.append(
            Charge(
                cap_key=cap.key,
                resource=cap.resource,
                window=window,
                resets_at=resets_at,
                amount=amount,
                limit=cap.limit,
            )
        )
    return tuple(charges)


def attempt_charges(
    caps: Sequence[Cap],
    provider: ProviderSpec,
    request: ChatRequest,
    now_s: float,
    prompt_tokens: int | None = None,
) -> tuple[Charge, ...]:
    """What an attempt of ``request`` at ``provider`` reserves at wall-clock moment ``now_s``:
    :func:`charges_for` with the request's worst case (the prompt's estimate plus ``max_tokens``,
    at the provider's prices), the same worst case the engine holds against the run's budget.
    ``prompt_tokens`` is that estimate when the caller has it already (the engine's)."""
    prompt = estimate_prompt_tokens(request) if prompt_tokens is None else prompt_tokens
    worst = Usage(input_tokens=prompt, output_tokens=request.max_tokens)
    return charges_for(caps, provider.name, cost_usd(worst, provider), prompt + request.max_tokens, now_s)


def attempt_settlement(charges: Sequence[Charge], usage: Usage, provider: ProviderSpec) -> tuple[Charge, ...]:
    """``charges`` with what the attempt really used (``usage`` at ``provider``'s prices), for
    settling its reservation: :func:`settled_amounts` of its cost and its tokens in and out."""
    return settled_amounts(charges, cost_usd(usage, provider), usage.input_tokens + usage.output_tokens)


def settled_amounts(charges: Sequence[Charge], cost_usd: float, tokens: int) -> tuple[Charge, ...]:
    """``charges`` with the request's real use in place of its worst case, for settling.

    Dollars become ``cost_usd`` and tokens ``tokens``; a request charge stays 1, since the request
    was sent whatever came back.
    """
    real = {Resource.USD: cost_usd, Resource.TOKENS: float(tokens)}
    return tuple(
        msgspec.structs.replace(charge, amount=real.get(charge.resource, charge.amount)) for charge in charges
    )


def refuse(charges: Sequence[Charge], used: Mapping[tuple[str, str], float]) -> Refusal | None:
    """Whether a reservation of ``charges`` must be refused, and why: the one rule every store applies.

    ``used[(cap_key, window)]`` is what the cap's window holds now, settled use plus live
    reservations (absent means nothing). The first charge that would take its cap past its limit
    gives the :class:`Refusal`; ``None`` means the reservation fits every cap. A charge of nothing
    never breaks a cap, even one already over its limit (a free request spends none of a budget).
    """
    for charge in charges:
        held = used.get((charge.cap_key, charge.window), 0.0)
        if charge.amount > 0 and held + charge.amount > charge.limit + _TOLERANCE:
            return Refusal(
                cap_key=charge.cap_key,
                resource=charge.resource,
                limit=charge.limit,
                used=held,
                requested=charge.amount,
                resets_at=charge.resets_at,
                message=_refusal_message(charge, held),
            )
    return None


def policy_caps(
    policy: Policy, providers: Mapping[str, ProviderSpec], route: str = "default"
) -> tuple[Cap, ...]:
    """Every cap that applies to runs of ``policy`` by its route called ``route`` (``default``:
    ``[route]``): its ``[budget]`` dollar caps, then the quotas of the providers that route names
    (``providers`` are the resolved ones).

    Keys say what is counted where, and are what the stores share: ``policy:NAME:usd:day`` and
    ``:month`` for the policy's own spending (two policies of the same name share them),
    ``provider:NAME:usd:day`` / ``:month`` for a provider's spending, and
    ``provider:NAME:requests:18000s`` / ``provider:NAME:tokens:3600s`` for its quotas (the window
    length is part of the key, so policies that disagree about it never mix their counts).
    """
    from rmcore.policy.resolve import route_providers  # a cycle at import time otherwise

    budget = policy.budget
    caps: list[Cap] = []
    name = policy.name or "default"
    for period, usd in ((Period.DAY, budget.daily_usd), (Period.MONTH, budget.monthly_usd)):
        if usd is not None:
            caps.append(_dollar_cap(f"policy:{name}", usd, period))
    for provider, own in budget.providers.items():
        for period, usd in ((Period.DAY, own.daily_usd), (Period.MONTH, own.monthly_usd)):
            if usd is not None:
                caps.append(_dollar_cap(f"provider:{provider}", usd, period))
    for provider in route_providers(policy, route):
        spec = providers.get(provider)
        if spec is None:
            continue
        window_s = spec.quota_window_s or DEFAULT_QUOTA_WINDOW_S
        for resource, limit in (
            (Resource.REQUESTS, spec.requests_per_window),
            (Resource.TOKENS, spec.tokens_per_window),
        ):
            if limit is not None:
                caps.append(
                    Cap(
                        key=f"provider:{provider}:{resource.value}:{_seconds(window_s)}s",
                        scope=f"provider:{provider}",
                        resource=resource,
                        limit=float(limit),
                        period=Period.WINDOW,
                        window_s=window_s,
                    )
                )
    return tuple(caps)


CLIENT_RPM_WINDOW_S = 60.0
"""The window of a client key's ``rpm``: a minute, aligned to the Unix epoch."""
_PROBE_USD = 1e-6
"""What ``client_admission`` asks of a client's dollar cap: anything at all left of the day's."""


def client_caps(policy: Policy, name: str) -> tuple[Cap, ...]:
    """The caps ``[serve.keys.NAME]`` sets on the gateway's client key ``name`` (none when it sets
    none): ``client:NAME:usd:day``, charged by every attempt of the key's requests like the
    policy's own budget (scope ``client:NAME``), and ``client:NAME:requests:60s``, charged once per
    request at the door by :func:`client_admission` (scope ``client-requests:NAME``, which no
    attempt charges: a retry or a fail-over is not another request of the client's)."""
    limits = policy.serve.keys.get(name)
    if limits is None:
        return ()
    caps: list[Cap] = []
    if limits.max_usd_per_day is not None:
        caps.append(_dollar_cap(f"client:{name}", limits.max_usd_per_day, Period.DAY))
    if limits.rpm is not None:
        caps.append(
            Cap(
                key=f"client:{name}:requests:{_seconds(CLIENT_RPM_WINDOW_S)}s",
                scope=f"client-requests:{name}",
                resource=Resource.REQUESTS,
                limit=float(limits.rpm),
                period=Period.WINDOW,
                window_s=CLIENT_RPM_WINDOW_S,
            )
        )
    return tuple(caps)


def client_admission(caps: Sequence[Cap], now_s: float) -> tuple[tuple[Charge, ...], tuple[Charge, ...]]:
    """What a request of a client key with ``caps`` (:func:`client_caps`) reserves at the door at
    ``now_s``, and what that reservation settles as once admitted: one request of its ``rpm``
    (kept), and a millionth of a dollar of its day's budget (given back: it only asks whether any
    of the budget is left, so that a client whose day is spent is refused before its request is
    read further). Refused by :func:`refuse`, the reservation's ``Refusal`` says which and when it
    resets."""
    asked: list[Charge] = []
    for cap in caps:
        amount = 1.0 if cap.resource is Resource.REQUESTS else _PROBE_USD
        window, resets_at = window_of(cap.period, cap.window_s, now_s)
        asked.append(
            Charge(
                cap_key=cap.key, resource=cap.resource, window=window, resets_at=resets_at,
                amount=amount, limit=cap.limit,
            )
        )
    return tuple(asked), settled_amounts(asked, 0.0, 0)


def client_refusal_message(name: str, refusal: Refusal) -> str:
    """Why a request of the client key ``name`` was refused by its caps, for the client: its
    ``rpm`` spent in this minute, or its day's budget."""
    if refusal.resource is Resource.REQUESTS:
        return (
            f"client key {name} sent its {round(refusal.limit)} requests of this minute (rpm); "
            f"the next minute starts at {format_moment(refusal.resets_at)}"
        )
    spent = describe_amount(Resource.USD, refusal.used)
    return (
        f"client key {name} has spent its daily budget ({spent} of "
        f"{describe_amount(Resource.USD, refusal.limit)}); it resets at {format_moment(refusal.resets_at)}"
    )


def _seconds(window_s: float) -> str:
    return str(int(window_s)) if float(window_s).is_integer() else repr(float(window_s))


def _dollar_cap(scope: str, usd: float, period: Period) -> Cap:
    key = f"{scope}:usd:{period.value}"
    return Cap(key=key, scope=scope, resource=Resource.USD, limit=usd, period=period)


def describe_amount(resource: Resource, amount: float) -> str:
    """An amount of ``resource`` in words: ``"$4.98"``, ``"2400 requests"``, ``"1500 tokens"``."""
    if resource is Resource.USD:
        return f"${amount:.2f}" if amount >= 0.01 or amount == 0 else f"${amount:.6f}"
    whole = round(amount)
    noun = "request" if resource is Resource.REQUESTS else "token"
    return f"{whole} {noun}" + ("" if whole == 1 else "s")


def format_moment(at_s: float) -> str:
    """A moment (Unix seconds) as ``"2026-11-26 00:00 UTC"``, with seconds only when it has some."""
    moment = dt.datetime.fromtimestamp(at_s, tz=dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC" if moment.second else "%Y-%m-%d %H:%M UTC")


def _start_of(now_s: float, size_s: float) -> float:
    """The start of the ``size_s``-second window holding ``now_s``, safe from float rounding."""
    start = float(math.floor(now_s / size_s) * size_s)
    if start > now_s:
        start -= size_s
    elif start + size_s <= now_s:
        start += size_s
    return start


def _epoch_s(day: dt.date) -> float:
    return float((day - _EPOCH).days * _DAY_S)


def _refusal_message(charge: Charge, held: float) -> str:
    what = {
        Resource.USD: "budget",
        Resource.REQUESTS: "request quota",
        Resource.TOKENS: "token quota",
    }[charge.resource]
    if charge.resource is Resource.USD:
        used = f"{describe_amount(charge.resource, held)} of {describe_amount(charge.resource, charge.limit)}"
        wants = f"this request's worst case of {describe_amount(charge.resource, charge.amount)}"
    else:
        used = f"{round(held)} of {describe_amount(charge.resource, charge.limit)}"
        wants = (
            "this request"
            if charge.resource is Resource.REQUESTS
            else f"this request's worst case of {describe_amount(charge.resource, charge.amount)}"
        )
    return (
        f"the {_period_word(charge)}{what} {charge.cap_key} ({used} used) cannot take {wants}; "
        f"it resets at {format_moment(charge.resets_at)}"
    )


def _period_word(charge: Charge) -> str:
    """"daily", "monthly" or "5-hour", read from the window's name as ``window_of`` writes it."""
    if len(charge.window) == 10 and charge.window[4] == "-":
        return "daily "
    if len(charge.window) == 7 and charge.window[4] == "-":
        return "monthly "
    if charge.window.isdigit():
        return window_words(charge.resets_at - int(charge.window)) + " "
    return ""


def window_words(window_s: float) -> str:
    """A fixed window's length as an adjective: ``"5-hour"``, ``"30-minute"``, ``"90-second"``."""
    whole = round(window_s)
    if whole != window_s:
        return f"{window_s:g}-second"
    for unit_s, unit in ((86_400, "day"), (3_600, "hour"), (60, "minute")):
        if whole % unit_s == 0:
            return f"{whole // unit_s}-{unit}"
    return f"{whole}-second"
