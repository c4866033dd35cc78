"""Usage statistics: what each provider was asked, how often it failed, how fast and how dear it was.

The shell reads recorded attempts from the state store as ``AttemptRow`` values; ``summarize``
turns them into one ``ProviderUsage`` per provider, and ``to_json_rows`` into the JSON rows of
``rmgr usage --json`` (DESIGN §3).

Choices, stated once:

- *requests* counts every recorded attempt, whatever its outcome; *cancelled* counts the attempts
  abandoned by us (a lost race or hedge, an interrupted run): the provider received them, but they
  are no verdict on it; *failures* counts the attempts whose outcome is neither ``"ok"`` nor
  ``"cancelled"``.
- Latency percentiles are taken over the attempts that ended by themselves, failed ones
  included: a timeout that made the caller wait 30 s is part of the latency the caller saw, and
  leaving it out would make a failing provider look fast. A cancelled attempt ended when we gave
  up on it, which says nothing of the provider's speed; when every attempt was cancelled the
  percentiles are unknown (None).
- Percentiles use linear interpolation between closest ranks (Hyndman & Fan type 7, the default
  of NumPy and of ``statistics.quantiles(method="inclusive")``), so p50 of an even count is the
  mean of the two middle values.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence

from rmcore.base import Base

_CANCELLED = "cancelled"

__all__ = ["AttemptRow", "ProviderUsage", "observed_p95_s", "percentile", "summarize", "to_json_rows"]


class AttemptRow(Base, frozen=True):
    """One recorded attempt as read back from the state store, flattened for statistics.

    ``outcome`` is ``"ok"`` or an error kind; ``started_at_ms`` is milliseconds since the Unix
    epoch; ``run_id`` groups the attempts of one ``rmgr`` run; ``perspective`` is the id of the
    analysis perspective that sent it (None outside an analysis, and for attempts recorded before
    schema 7).
    """

    provider: str
    model: str
    outcome: str
    status: int | None
    latency_ms: float
    started_at_ms: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    run_id: str
    perspective: str | None = None


class ProviderUsage(Base, frozen=True):
    """The usage of one provider over a period: counts, failure rate, latency, tokens and cost.

    ``failure_rate`` is ``failures / requests`` (0.0 to 1.0); ``p50_ms`` and ``p95_ms`` are
    latency percentiles over all attempts (see the module docstring).
    """

    provider: str
    requests: int
    failures: int
    failure_rate: float
    p50_ms: float | None
    p95_ms: float | None
    input_tokens: int
    output_tokens: int
    cost_usd: float
    cancelled: int = 0


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (``0.0 <= q <= 1.0``) of ``values``, or ``None`` when there are none.

    Linear interpolation between closest ranks: with the values sorted as ``x[0..n-1]``, the
    quantile sits at position ``h = (n - 1) * q`` and is ``x[floor(h)]`` moved towards
    ``x[floor(h) + 1]`` by the fraction ``h - floor(h)``. ``q = 0`` is the minimum, ``q = 1`` the
    maximum, and the result always lies between them. Raises ``ValueError`` for ``q`` outside
    ``[0, 1]`` (a programming error, not a data error).
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"percentile q must be between 0 and 1, got {q!r}")
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    fraction = position - low
    if fraction == 0.0:
        return float(ordered[low])
    below, above = float(ordered[low]), float(ordered[low + 1])
    # Clamped so that floating-point rounding can never step outside the two neighbours.
    return min(max(below + fraction * (above - below), below), above)


def summarize(rows: Iterable[AttemptRow]) -> list[ProviderUsage]:
    """One ``ProviderUsage`` per provider that appears in ``rows``, sorted by provider name."""
    by_provider: defaultdict[str, list[AttemptRow]] = defaultdict(list)
    for row in rows:
        by_provider[row.provider].append(row)
    return [_provider_usage(name, by_provider[name]) for name in sorted(by_provider)]


def _provider_usage(provider: str, rows: Sequence[AttemptRow]) -> ProviderUsage:
    latencies = [row.latency_ms for row in rows if row.outcome != _CANCELLED]
    cancelled = sum(1 for row in rows if row.outcome == _CANCELLED)
    failures = sum(1 for row in rows if row.outcome not in ("ok", _CANCELLED))
    return ProviderUsage(
        provider=provider,
        requests=len(rows),
        failures=failures,
        failure_rate=failures / len(rows),
        p50_ms=percentile(latencies, 0.50),
        p95_ms=percentile(latencies, 0.95),
        cancelled=cancelled,
        input_tokens=sum(row.input_tokens for row in rows),
        output_tokens=sum(row.output_tokens for row in rows),
        cost_usd=math.fsum(row.cost_usd for row in rows),
    )


def to_json_rows(usages: Sequence[ProviderUsage]) -> list[dict[str, str | int | float | None]]:
    """The rows of ``rmgr usage --json``, with the camelCase field names of DESIGN §3."""
    return [
        {
            "provider": usage.provider,
            "requests": usage.requests,
            "failures": usage.failures,
            "cancelled": usage.cancelled,
            "failureRate": usage.failure_rate,
            "p50Ms": usage.p50_ms,
            "p95Ms": usage.p95_ms,
            "inputTokens": usage.input_tokens,
            "outputTokens": usage.output_tokens,
            "costUsd": usage.cost_usd,
        }
        for usage in usages
    ]


def observed_p95_s(rows: Iterable[AttemptRow]) -> dict[str, float]:
    """Each provider's 95th-percentile latency in seconds over its successful attempts: how long
    a hedged route waits (``hedge_after_s = "p95"``) before it starts the next target."""
    latencies: dict[str, list[float]] = {}
    for row in rows:
        if row.outcome == "ok":
            latencies.setdefault(row.provider, []).append(row.latency_ms)
    result: dict[str, float] = {}
    for provider, values in latencies.items():
        p95 = percentile(values, 0.95)
        if p95 is not None:
            result[provider] = p95 / 1000.0
    return result
