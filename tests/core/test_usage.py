"""Usage statistics: percentiles, per-provider summaries and the JSON rows of ``rmgr usage``."""

from __future__ import annotations

import math

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rmcore.usage import AttemptRow, ProviderUsage, observed_p95_s, percentile, summarize, to_json_rows

latencies = st.floats(min_value=0.0, max_value=1e7, allow_nan=False, allow_infinity=False)
quantiles = st.floats(min_value=0.0, max_value=1.0)


def row(
    provider: str,
    *,
    outcome: str = "ok",
    latency_ms: float = 100.0,
    input_tokens: int = 10,
    output_tokens: int = 20,
    cost_usd: float = 0.001,
) -> AttemptRow:
    return AttemptRow(
        provider=provider,
        model="m",
        outcome=outcome,
        status=200 if outcome == "ok" else 500,
        latency_ms=latency_ms,
        started_at_ms=0,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost_usd=cost_usd,
        run_id="r",
    )


rows = st.builds(
    row,
    st.sampled_from(["aiceo-gateway", "glm-direct", "anthropic-direct", "openai-direct"]),
    outcome=st.sampled_from(["ok", "ok", "timeout", "rate_limited", "server_error", "cancelled"]),
    latency_ms=latencies,
    input_tokens=st.integers(0, 100_000),
    output_tokens=st.integers(0, 100_000),
    cost_usd=st.floats(min_value=0.0, max_value=10.0),
)


# --- percentile ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([1.0, 2.0, 3.0, 4.0], 0.5, 2.5),
        ([4.0, 1.0, 3.0, 2.0], 0.5, 2.5),
        ([1.0, 2.0, 3.0, 4.0], 0.0, 1.0),
        ([1.0, 2.0, 3.0, 4.0], 1.0, 4.0),
        ([10.0, 20.0, 30.0], 0.5, 20.0),
        ([0.0, 100.0], 0.95, 95.0),
        ([float(v) for v in range(1, 101)], 0.95, 95.05),
        ([7.0], 0.95, 7.0),
    ],
)
def test_percentile_interpolates_linearly_between_closest_ranks(
    values: list[float], q: float, expected: float
) -> None:
    """Percentiles interpolate linearly between the closest ranks, whatever the order of the values."""
    assert percentile(values, q) == pytest.approx(expected)


def test_percentile_of_nothing_is_none() -> None:
    """No values have no percentile."""
    assert percentile([], 0.5) is None


@pytest.mark.parametrize("q", [-0.01, 1.01, 50.0, math.nan])
def test_percentile_rejects_q_outside_zero_to_one(q: float) -> None:
    """A quantile outside [0, 1], or NaN, is refused."""
    with pytest.raises(ValueError, match="between 0 and 1"):
        percentile([1.0], q)


@given(st.lists(latencies, min_size=1), quantiles)
def test_percentile_lies_between_minimum_and_maximum(values: list[float], q: float) -> None:
    """Any percentile lies between the smallest and largest value."""
    result = percentile(values, q)
    assert result is not None
    assert min(values) <= result <= max(values)


@given(st.lists(latencies, min_size=1), quantiles, quantiles)
def test_percentile_never_decreases_with_q(values: list[float], q1: float, q2: float) -> None:
    """A higher quantile never gives a lower value."""
    low, high = sorted((q1, q2))
    low_value, high_value = percentile(values, low), percentile(values, high)
    assert low_value is not None and high_value is not None
    assert low_value <= high_value


@given(st.lists(latencies, min_size=1))
def test_percentile_ends_are_minimum_and_maximum(values: list[float]) -> None:
    """The 0th and 100th percentiles are the minimum and the maximum."""
    assert percentile(values, 0.0) == min(values)
    assert percentile(values, 1.0) == max(values)


# --- summarize ----------------------------------------------------------------------------------


def test_summary_counts_failures_and_sorts_by_provider() -> None:
    """The summary counts requests and failures, latency percentiles, tokens and cost per provider, sorted
    by name."""
    summary = summarize(
        [
            row("openai-direct", latency_ms=300.0),
            row("glm-direct", latency_ms=100.0, cost_usd=0.5),
            row("glm-direct", outcome="timeout", latency_ms=30_000.0, input_tokens=0, output_tokens=0,
                cost_usd=0.0),
            row("glm-direct", outcome="server_error", latency_ms=200.0),
            row("glm-direct", latency_ms=120.0),
        ]
    )
    assert summary == [
        ProviderUsage(
            provider="glm-direct",
            requests=4,
            failures=2,
            failure_rate=0.5,
            p50_ms=160.0,
            p95_ms=pytest.approx(25_530.0),  # type: ignore[arg-type]
            input_tokens=30,
            output_tokens=60,
            cost_usd=pytest.approx(0.502),  # type: ignore[arg-type]
        ),
        ProviderUsage(
            provider="openai-direct",
            requests=1,
            failures=0,
            failure_rate=0.0,
            p50_ms=300.0,
            p95_ms=300.0,
            input_tokens=10,
            output_tokens=20,
            cost_usd=0.001,
        ),
    ]


def test_failed_attempts_count_in_latency() -> None:
    """A timeout is latency the caller waited through: it moves the percentiles."""
    fast_only = summarize([row("p", latency_ms=100.0)] * 19)
    with_timeout = summarize([row("p", latency_ms=100.0)] * 19 + [row("p", outcome="timeout",
                                                                       latency_ms=30_000.0)])
    assert fast_only[0].p95_ms == 100.0
    assert with_timeout[0].p95_ms > 100.0


def test_summary_of_nothing_is_empty() -> None:
    """No attempts summarise to no rows."""
    assert summarize([]) == []


@given(st.lists(rows))
def test_summary_totals_equal_sums_of_rows(attempts: list[AttemptRow]) -> None:
    """The summary's totals are the sums over the attempts, one row per provider."""
    summary = summarize(attempts)
    assert [usage.provider for usage in summary] == sorted({a.provider for a in attempts})
    assert sum(usage.requests for usage in summary) == len(attempts)
    assert sum(usage.failures for usage in summary) == sum(
        1 for a in attempts if a.outcome not in ("ok", "cancelled")
    )
    assert sum(usage.cancelled for usage in summary) == sum(1 for a in attempts if a.outcome == "cancelled")
    assert sum(usage.input_tokens for usage in summary) == sum(a.input_tokens for a in attempts)
    assert sum(usage.output_tokens for usage in summary) == sum(a.output_tokens for a in attempts)
    assert math.fsum(usage.cost_usd for usage in summary) == pytest.approx(
        math.fsum(a.cost_usd for a in attempts)
    )


@given(st.lists(rows, min_size=1))
def test_summary_rates_and_percentiles_are_sane(attempts: list[AttemptRow]) -> None:
    """Failure rates are failures over requests, and p50 ≤ p95 within the latencies of each
    provider's attempts that ended by themselves (unknown when every one was cancelled)."""
    for usage in summarize(attempts):
        mine = [a for a in attempts if a.provider == usage.provider]
        ended = [a.latency_ms for a in mine if a.outcome != "cancelled"]
        assert 0.0 <= usage.failure_rate <= 1.0
        assert usage.failure_rate == usage.failures / usage.requests
        assert usage.requests == len(mine)
        if not ended:
            assert usage.p50_ms is None and usage.p95_ms is None
        else:
            assert usage.p50_ms is not None and usage.p95_ms is not None
            assert min(ended) <= usage.p50_ms <= usage.p95_ms <= max(ended)


def test_cancelled_attempts_are_requests_but_never_failures() -> None:
    """A race loser or an interrupted request is counted as a request and as cancelled, never as
    a failure, and its latency (when we gave up) is left out of the percentiles."""
    [usage] = summarize(
        [
            row("glm-direct", latency_ms=100.0),
            row("glm-direct", outcome="cancelled", latency_ms=9000.0),
            row("glm-direct", outcome="timeout", latency_ms=300.0),
        ]
    )
    assert (usage.requests, usage.failures, usage.cancelled) == (3, 1, 1)
    assert usage.p95_ms is not None and usage.p95_ms <= 300.0


# --- JSON rows ---------------------------------------------------------------------------------


def test_json_rows_use_the_contract_field_names() -> None:
    """Rows are written with the contract's camelCase names and survive JSON."""
    [json_row] = to_json_rows(summarize([row("glm-direct", outcome="timeout", latency_ms=50.0)]))
    assert json_row == {
        "provider": "glm-direct",
        "requests": 1,
        "failures": 1,
        "cancelled": 0,
        "failureRate": 1.0,
        "p50Ms": 50.0,
        "p95Ms": 50.0,
        "inputTokens": 10,
        "outputTokens": 20,
        "costUsd": 0.001,
    }
    decoded = msgspec.json.decode(msgspec.json.encode([json_row]))
    assert decoded == [json_row]


def test_json_rows_keep_the_order() -> None:
    """JSON rows keep the summary's order."""
    summary = summarize([row("b"), row("a"), row("c")])
    assert [json_row["provider"] for json_row in to_json_rows(summary)] == ["a", "b", "c"]


def test_observed_p95_counts_only_successful_attempts_in_seconds() -> None:
    """A hedge waits for how long answers take: timeouts and failures do not stretch it."""
    rows = [row("a", latency_ms=float(ms)) for ms in range(1, 101)]
    rows += [row("a", outcome="timeout", latency_ms=30_000.0), row("b", outcome="connection")]
    observed = observed_p95_s(rows)
    assert observed.keys() == {"a"}
    assert observed["a"] == pytest.approx(0.09505)
