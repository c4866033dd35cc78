"""Budgets and quotas over time windows: which window a moment is in, what a request charges, and
the one rule every store applies to refuse a reservation."""

from __future__ import annotations

import datetime as dt
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rmcore.completion import Usage
from rmcore.policy import resolve_providers
from rmcore.pricing import cost_usd, estimate_prompt_tokens, worst_case_usd
from rmcore.providers import ProviderKind, ProviderSpec, builtin_providers
from rmcore.quota import (
    DEFAULT_QUOTA_WINDOW_S,
    Cap,
    Charge,
    Period,
    Resource,
    attempt_charges,
    attempt_settlement,
    charges_for,
    client_admission,
    client_caps,
    client_refusal_message,
    policy_caps,
    refuse,
    settled_amounts,
    window_of,
)
from rmcore.requests import ChatRequest
from tests.core.helpers import policy_of

UTC = dt.UTC
DAY_S = 86_400.0
MOMENTS = st.floats(min_value=0.0, max_value=4_102_444_800.0)  # 1970 to 2100
"""Unix seconds from the epoch to 2100-01-01."""


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    return dt.datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()


def utc_date(now_s: float) -> dt.date:
    return dt.datetime.fromtimestamp(now_s, tz=UTC).date()


def midnight(day: dt.date) -> float:
    return dt.datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


# --- window_of ------------------------------------------------------------------------------------


@settings(max_examples=300)
@given(MOMENTS)
def test_a_day_window_is_the_utc_calendar_day_holding_the_moment(now_s: float) -> None:
    """A daily window is the UTC calendar day holding the moment, named by its date, resetting at the next
    midnight."""
    name, resets_at = window_of(Period.DAY, None, now_s)
    start = midnight(dt.date.fromisoformat(name))
    assert start <= now_s < resets_at
    assert resets_at - start == DAY_S
    assert name == utc_date(math.floor(now_s)).isoformat()  # whole seconds: fromtimestamp rounds


@settings(max_examples=300)
@given(MOMENTS)
def test_a_month_window_is_the_utc_calendar_month_holding_the_moment(now_s: float) -> None:
    """A monthly window is the UTC calendar month holding the moment, resetting on the first of the next."""
    name, resets_at = window_of(Period.MONTH, None, now_s)
    year, month = map(int, name.split("-"))
    start = at(year, month, 1)
    assert start <= now_s < resets_at
    following = dt.datetime.fromtimestamp(resets_at, tz=UTC)
    assert (following.day, following.hour, following.minute, following.second) == (1, 0, 0, 0)
    assert (following.year, following.month) == ((year + 1, 1) if month == 12 else (year, month + 1))


@settings(max_examples=300)
@given(MOMENTS, st.one_of(st.integers(1, 10_000_000).map(float), st.floats(1.0, 1e6)))
def test_a_fixed_window_starts_at_a_multiple_of_its_length(now_s: float, window_s: float) -> None:
    """A fixed window starts at a multiple of its length since the epoch and is named by its start."""
    name, resets_at = window_of(Period.WINDOW, window_s, now_s)
    start = resets_at - window_s
    assert start <= now_s < resets_at
    assert name == str(int(start))
    assert math.isclose(start / window_s, round(start / window_s), abs_tol=1e-6)


@given(st.integers(0, 40_000), st.integers(1, 100_000))
def test_a_moment_on_a_fixed_boundary_belongs_to_the_window_starting_there(k: int, size: int) -> None:
    """A moment exactly on a boundary belongs to the window that starts there, the moment before to the
    previous one."""
    boundary = float(k * size)
    assert window_of(Period.WINDOW, size, boundary) == (str(k * size), boundary + size)
    before = math.nextafter(boundary, -math.inf)
    if before >= 0:
        assert window_of(Period.WINDOW, size, before)[1] == boundary


@pytest.mark.parametrize(
    ("now_s", "period", "expected"),
    [
        (at(2026, 11, 25, 15), Period.DAY, ("2026-11-25", at(2026, 11, 26))),
        (at(2026, 11, 26), Period.DAY, ("2026-11-26", at(2026, 11, 27))),
        (math.nextafter(at(2026, 11, 26), 0), Period.DAY, ("2026-11-25", at(2026, 11, 26))),
        (at(2026, 12, 31, 23, 59, 59), Period.DAY, ("2026-12-31", at(2027, 1, 1))),
        (at(2026, 12, 31, 23, 59, 59), Period.MONTH, ("2026-12", at(2027, 1, 1))),
        (at(2027, 1, 1), Period.MONTH, ("2027-01", at(2027, 2, 1))),
        (at(2028, 2, 28, 12), Period.DAY, ("2028-02-28", at(2028, 2, 29))),
        (at(2028, 2, 29, 23), Period.DAY, ("2028-02-29", at(2028, 3, 1))),
        (at(2028, 2, 10), Period.MONTH, ("2028-02", at(2028, 3, 1))),
        (at(2027, 2, 28, 23), Period.DAY, ("2027-02-28", at(2027, 3, 1))),
        (at(2100, 2, 28, 1), Period.DAY, ("2100-02-28", at(2100, 3, 1))),  # 2100 is not a leap year
        (0.0, Period.MONTH, ("1970-01", at(1970, 2, 1))),
        (at(2026, 11, 25, 15), Period.WINDOW, ("1795608000", at(2026, 11, 25, 17))),
    ],
)
def test_calendar_windows_by_example(now_s: float, period: Period, expected: tuple[str, float]) -> None:
    """Windows at month and year ends, leap days (2100 is no leap year) and the epoch, by example."""
    window_s = 18_000.0 if period is Period.WINDOW else None
    assert window_of(period, window_s, now_s) == expected


@pytest.mark.parametrize("window_s", [None, 0.0, -5.0])
def test_a_fixed_window_needs_a_positive_length(window_s: float | None) -> None:
    """A fixed window without a positive length is refused."""
    with pytest.raises(ValueError, match="window_s"):
        window_of(Period.WINDOW, window_s, 100.0)


# --- charges_for ----------------------------------------------------------------------------------

SCOPES = ("policy:p", "policy:q", "provider:a", "provider:b", "provider:c", "client:k", "client-requests:k")


@st.composite
def caps(draw: st.DrawFn) -> list[Cap]:
    found: list[Cap] = []
    for index in range(draw(st.integers(0, 8))):
        scope = draw(st.sampled_from(SCOPES))
        resource = draw(st.sampled_from(list(Resource)))
        period = draw(st.sampled_from(list(Period)))
        found.append(
            Cap(
                key=f"{scope}:{resource.value}:{index}",
                scope=scope,
                resource=resource,
                limit=draw(st.floats(0.0, 1e6)),
                period=period,
                window_s=float(draw(st.integers(1, 100_000))) if period is Period.WINDOW else None,
            )
        )
    return found


@given(
    caps(),
    st.sampled_from(["a", "b", "c", "d"]),
    st.floats(0.0, 10.0),
    st.integers(0, 100_000),
    MOMENTS,
)
def test_charges_for_picks_exactly_the_caps_in_scope(
    all_caps: list[Cap], provider: str, worst_usd: float, worst_tokens: int, now_s: float
) -> None:
    """A request is charged against the policy's caps, its client key's and its own provider's, in
    order, each for a non-zero amount in its window; never against a key's requests per minute."""
    charges = charges_for(all_caps, provider, worst_usd, worst_tokens, now_s)
    amount = {Resource.USD: worst_usd, Resource.REQUESTS: 1.0, Resource.TOKENS: float(worst_tokens)}
    in_scope = [
        cap
        for cap in all_caps
        if cap.scope.startswith(("policy:", "client:")) or cap.scope == f"provider:{provider}"
    ]
    assert [c.cap_key for c in charges] == [cap.key for cap in in_scope if amount[cap.resource] > 0]
    by_key = {cap.key: cap for cap in all_caps}
    for charge in charges:
        cap = by_key[charge.cap_key]
        assert charge.resource is cap.resource and charge.limit == cap.limit
        assert charge.amount == amount[cap.resource] > 0
        assert (charge.window, charge.resets_at) == window_of(cap.period, cap.window_s, now_s)


def test_a_free_request_charges_no_dollar_cap_but_still_counts_as_a_request() -> None:
    """A free request charges no dollar cap but still counts against a request quota."""
    dollars = Cap(
        key="policy:p:usd:day", scope="policy:p", resource=Resource.USD, limit=5.0, period=Period.DAY
    )
    requests = Cap(
        key="provider:a:requests:60s",
        scope="provider:a",
        resource=Resource.REQUESTS,
        limit=10,
        period=Period.WINDOW,
        window_s=60.0,
    )
    [charge] = charges_for([dollars, requests], "a", 0.0, 100, 1_000.0)
    assert charge.cap_key == requests.key and charge.amount == 1.0 and charge.window == "960"


def test_settled_amounts_replace_the_worst_case_with_the_real_use() -> None:
    """Settling replaces each worst case by the real cost or tokens, a request staying one request."""
    charges = [
        Charge(cap_key="d", resource=Resource.USD, window="2026-11-25", resets_at=1.0, amount=0.5, limit=5),
        Charge(cap_key="r", resource=Resource.REQUESTS, window="0", resets_at=1.0, amount=1, limit=5),
        Charge(cap_key="t", resource=Resource.TOKENS, window="0", resets_at=1.0, amount=900, limit=5000),
    ]
    settled = settled_amounts(charges, 0.125, 321)
    assert [c.amount for c in settled] == [0.125, 1, 321]
    assert [(c.cap_key, c.window, c.resets_at, c.limit) for c in settled] == [
        (c.cap_key, c.window, c.resets_at, c.limit) for c in charges
    ]


def test_an_attempt_charges_the_same_worst_case_the_engine_holds() -> None:
    """An attempt's charges are the worst case the engine reserves, and settle to its real usage."""
    provider = ProviderSpec(
        name="a",
        kind=ProviderKind.OPENAI,
        url="http://127.0.0.1:9/v1/chat/completions",
        model="m",
        input_usd_per_mtok=2.0,
        output_usd_per_mtok=4.0,
    )
    request = ChatRequest.ask("Is the budget safe?", max_tokens=500)
    all_caps = [
        Cap(key="policy:p:usd:day", scope="policy:p", resource=Resource.USD, limit=5.0, period=Period.DAY),
        Cap(
            key="provider:a:tokens:3600s",
            scope="provider:a",
            resource=Resource.TOKENS,
            limit=1e6,
            period=Period.WINDOW,
            window_s=3600.0,
        ),
    ]
    usd, tokens = attempt_charges(all_caps, provider, request, at(2026, 11, 25))
    assert usd.amount == worst_case_usd(request, provider)
    assert tokens.amount == estimate_prompt_tokens(request) + 500
    used = Usage(input_tokens=20, output_tokens=30)
    real_usd, real_tokens = attempt_settlement((usd, tokens), used, provider)
    assert real_usd.amount == cost_usd(used, provider) and real_tokens.amount == 50


# --- refuse ---------------------------------------------------------------------------------------


def test_the_refusal_says_which_cap_how_full_and_when_it_resets() -> None:
    """A refusal names the cap, how much of it is used, the request's worst case and when it resets;
    exactly full still fits."""
    now = at(2026, 11, 25, 15)
    cap = Cap(
        key="policy:cost-first:usd:day",
        scope="policy:cost-first",
        resource=Resource.USD,
        limit=5.0,
        period=Period.DAY,
    )
    charges = charges_for([cap], "glm-direct", 0.05, 1000, now)
    refusal = refuse(charges, {(cap.key, "2026-11-25"): 4.98})
    assert refusal is not None
    assert refusal.message == (
        "the daily budget policy:cost-first:usd:day ($4.98 of $5.00 used) cannot take this request's"
        " worst case of $0.05; it resets at 2026-11-26 00:00 UTC"
    )
    assert (refusal.cap_key, refusal.used, refusal.requested, refusal.limit) == (cap.key, 4.98, 0.05, 5.0)
    assert refusal.resets_at == at(2026, 11, 26)
    assert refuse(charges, {(cap.key, "2026-11-25"): 4.95}) is None, "exactly full is still allowed"
    assert refuse(charges, {(cap.key, "2026-11-24"): 5.0}) is None, "yesterday's use is not today's"


def test_quota_refusals_name_the_window_in_words() -> None:
    """Quota and monthly refusals name their window in words (5-hour, 1-hour, monthly) and its reset."""
    now = at(2026, 11, 25, 15)
    quota = Cap(
        key="provider:aiceo-gateway:requests:18000s",
        scope="provider:aiceo-gateway",
        resource=Resource.REQUESTS,
        limit=2400,
        period=Period.WINDOW,
        window_s=18_000.0,
    )
    tokens = Cap(
        key="provider:aiceo-gateway:tokens:3600s",
        scope="provider:aiceo-gateway",
        resource=Resource.TOKENS,
        limit=2_000_000,
        period=Period.WINDOW,
        window_s=3600.0,
    )
    monthly = Cap(
        key="policy:p:usd:month", scope="policy:p", resource=Resource.USD, limit=100.0, period=Period.MONTH
    )
    charges = charges_for([quota, tokens, monthly], "aiceo-gateway", 0.25, 4000, now)
    full = refuse(charges, {(quota.key, charges[0].window): 2400})
    assert full is not None and full.resource is Resource.REQUESTS
    assert full.message == (
        "the 5-hour request quota provider:aiceo-gateway:requests:18000s (2400 of 2400 requests used)"
        " cannot take this request; it resets at 2026-11-25 17:00 UTC"
    )
    almost = refuse(charges, {(tokens.key, charges[1].window): 1_999_000})
    assert almost is not None and almost.message == (
        "the 1-hour token quota provider:aiceo-gateway:tokens:3600s (1999000 of 2000000 tokens used)"
        " cannot take this request's worst case of 4000 tokens; it resets at 2026-11-25 16:00 UTC"
    )
    spent = refuse(charges, {(monthly.key, "2026-11"): 99.9})
    assert spent is not None and spent.message.startswith("the monthly budget policy:p:usd:month ($99.90")
    assert spent.message.endswith("it resets at 2026-12-01 00:00 UTC")


charge_lists = st.lists(
    st.builds(
        Charge,
        cap_key=st.sampled_from(["x", "y", "z"]),
        resource=st.sampled_from(list(Resource)),
        window=st.sampled_from(["w1", "w2"]),
        resets_at=st.just(100.0),
        amount=st.floats(0.0, 50.0),
        limit=st.floats(0.0, 100.0),
    ),
    max_size=5,
)
used_maps = st.dictionaries(
    st.tuples(st.sampled_from(["x", "y", "z"]), st.sampled_from(["w1", "w2"])), st.floats(0.0, 150.0)
)


@given(charge_lists, used_maps)
def test_refuse_admits_only_what_fits_and_names_the_first_cap_that_does_not(
    charges: list[Charge], used: dict[tuple[str, str], float]
) -> None:
    """``refuse`` admits a request only when every charge fits, else names the first that does not."""
    refusal = refuse(charges, used)
    fits = [
        c.amount == 0 or used.get((c.cap_key, c.window), 0.0) + c.amount <= c.limit + 1e-9 for c in charges
    ]
    if refusal is None:
        assert all(fits)
        return
    first = charges[fits.index(False)]
    assert (refusal.cap_key, refusal.requested, refusal.limit) == (first.cap_key, first.amount, first.limit)
    assert refusal.used == used.get((first.cap_key, first.window), 0.0)
    assert refusal.used + refusal.requested > refusal.limit


@settings(max_examples=200)
@given(
    st.lists(st.tuples(st.sampled_from(["a", "b"]), st.floats(0.0, 3.0), st.integers(0, 3000)), max_size=40),
    st.floats(0.0, 10.0),
    st.integers(1, 10),
    st.integers(0, 20_000),
)
def test_a_store_that_asks_refuse_never_goes_past_a_limit(
    requests: list[tuple[str, float, int]], daily_usd: float, per_window: int, tokens_limit: int
) -> None:
    """A store keeping ``used`` as the sum of what it admitted never lets a cap exceed its limit,
    however the requests come."""
    all_caps = [
        Cap(
            key="policy:p:usd:day",
            scope="policy:p",
            resource=Resource.USD,
            limit=daily_usd,
            period=Period.DAY,
        ),
        Cap(
            key="provider:a:requests:60s",
            scope="provider:a",
            resource=Resource.REQUESTS,
            limit=float(per_window),
            period=Period.WINDOW,
            window_s=60.0,
        ),
        Cap(
            key="provider:b:tokens:60s",
            scope="provider:b",
            resource=Resource.TOKENS,
            limit=float(tokens_limit),
            period=Period.WINDOW,
            window_s=60.0,
        ),
    ]
    used: dict[tuple[str, str], float] = {}
    admitted = 0
    for provider, usd, tokens in requests:
        charges = charges_for(all_caps, provider, usd, tokens, 1_000.0)
        if refuse(charges, used) is None:
            admitted += 1
            for c in charges:
                used[(c.cap_key, c.window)] = used.get((c.cap_key, c.window), 0.0) + c.amount
    limits = {cap.key: cap.limit for cap in all_caps}
    for (key, _), total in used.items():
        assert total <= limits[key] + 1e-9 * (admitted + 1)


# --- policy_caps ----------------------------------------------------------------------------------


def caps_of(text: str) -> tuple[Cap, ...]:
    policy = policy_of(text, "budgeted.toml")
    return policy_caps(policy, resolve_providers(policy, builtin_providers({})))


def test_policy_caps_come_from_the_budget_table_and_the_route_s_quotas() -> None:
    """A policy's caps are its budgets, then the quotas of the providers its route names."""
    found = caps_of(
        """
version = 1
[route]
targets = ["aiceo-gateway", "glm-direct"]
[budget]
daily_usd = 5.0
monthly_usd = 100.0
[budget.providers.anthropic-direct]
daily_usd = 1.0
[providers.glm-direct]
tokens_per_window = 50000
"""
    )
    assert [(c.key, c.scope, c.resource, c.limit, c.period, c.window_s) for c in found] == [
        ("policy:budgeted:usd:day", "policy:budgeted", Resource.USD, 5.0, Period.DAY, None),
        ("policy:budgeted:usd:month", "policy:budgeted", Resource.USD, 100.0, Period.MONTH, None),
        (
            "provider:anthropic-direct:usd:day",
            "provider:anthropic-direct",
            Resource.USD,
            1.0,
            Period.DAY,
            None,
        ),
        (
            "provider:aiceo-gateway:requests:18000s",
            "provider:aiceo-gateway",
            Resource.REQUESTS,
            2400.0,
            Period.WINDOW,
            18000.0,
        ),
        (
            "provider:glm-direct:tokens:3600s",
            "provider:glm-direct",
            Resource.TOKENS,
            50000.0,
            Period.WINDOW,
            DEFAULT_QUOTA_WINDOW_S,
        ),
    ]


def test_a_quota_of_zero_removes_the_gateway_s_built_in_quota() -> None:
    """A quota of 0 removes the gateway's own; a new window length makes a new key."""
    text = 'version = 1\n[route]\ntargets = ["aiceo-gateway"]\n'
    assert [c.key for c in caps_of(text)] == ["provider:aiceo-gateway:requests:18000s"]
    assert caps_of(text + "[providers.aiceo-gateway]\nrequests_per_window = 0\n") == ()
    [changed] = caps_of(text + "[providers.aiceo-gateway]\nrequests_per_window = 100\nquota_window_s = 60\n")
    assert (changed.key, changed.limit, changed.window_s) == (
        "provider:aiceo-gateway:requests:60s",
        100.0,
        60.0,
    )


def test_providers_outside_the_route_bring_no_quota() -> None:
    """Quotas of providers the route does not name are no caps of the policy."""
    assert caps_of('version = 1\n[route]\ntargets = ["glm-direct"]\n') == ()


# --- a gateway's client keys ---------------------------------------------------------------------

KEYS_POLICY = """
    version = 1
    [serve.keys.ci]
    max_usd_per_day = 2.5
    rpm = 30
    [serve.keys.night]
    rpm = 5
"""


def test_client_caps_are_a_daily_budget_and_requests_per_minute() -> None:
    policy = policy_of(KEYS_POLICY)
    usd, rpm = client_caps(policy, "ci")
    assert (usd.key, usd.scope, usd.limit, usd.period) == ("client:ci:usd:day", "client:ci", 2.5, Period.DAY)
    assert (rpm.key, rpm.scope, rpm.limit) == ("client:ci:requests:60s", "client-requests:ci", 30)
    assert rpm.window_s == 60
    assert [c.key for c in client_caps(policy, "night")] == ["client:night:requests:60s"]
    assert client_caps(policy, "nobody") == ()


@given(MOMENTS, st.floats(0.0, 1e4), st.integers(1, 10_000))
def test_the_door_counts_one_request_and_keeps_none_of_the_budget(now_s: float, usd: float, rpm: int) -> None:
    """Admission asks a request of the rpm and a sliver of the budget; it keeps the request only."""
    policy = policy_of(f"version = 1\n[serve.keys.k]\nmax_usd_per_day = {usd!r}\nrpm = {rpm}\n")
    asked, kept = client_admission(client_caps(policy, "k"), now_s)
    assert [(c.resource, c.amount > 0) for c in asked] == [(Resource.USD, True), (Resource.REQUESTS, True)]
    assert [c.amount for c in kept] == [0.0, 1.0]
    assert [(c.window, c.resets_at) for c in asked] == [(c.window, c.resets_at) for c in kept]
    assert all(c.resets_at > now_s for c in asked)
    # A budget with anything left lets the request in; a spent one does not.
    assert refuse(asked, {}) is None or usd < 1e-6
    spent = {(c.cap_key, c.window): c.limit for c in asked if c.resource is Resource.USD}
    assert refuse(asked, spent) is not None


def test_a_client_refusal_says_which_key_and_when_it_may_go_again() -> None:
    policy = policy_of(KEYS_POLICY)
    asked, _ = client_admission(client_caps(policy, "ci"), at(2026, 12, 6, 10, 30, 15))
    full = {(c.cap_key, c.window): c.limit for c in asked}
    refusal = refuse(asked, full)
    assert refusal is not None
    assert client_refusal_message("ci", refusal) == (
        "client key ci has spent its daily budget ($2.50 of $2.50); it resets at 2026-12-07 00:00 UTC"
    )
    refusal = refuse(asked[1:], full)
    assert refusal is not None
    assert client_refusal_message("ci", refusal) == (
        "client key ci sent its 30 requests of this minute (rpm); "
        "the next minute starts at 2026-12-06 10:31 UTC"
    )
