"""The engine driven over real loopback HTTP against the sandbox: one test per fault mode, each
stating the conduct it checks."""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator

import anyio
import httpx
import msgspec
import pytest

from rmcli.hooks import Hooks
from rmcli.runner import Routing, route
from rmcli.sandbox import Sandbox
from rmcore.attempts import AttemptRecord
from rmcore.budget import Ledger
from rmcore.errors import ErrorKind
from rmcore.events import RunOutcome, StartAttempt
from rmcore.plan import RetryRules, RunLimits, RunPlan, TargetPlan
from rmcore.policy.schema import Strategy
from rmcore.pricing import worst_case_usd
from rmcore.providers import ProviderSpec, builtin_providers
from rmcore.requests import ChatRequest

pytestmark = pytest.mark.anyio

REQUEST = ChatRequest.ask("Should we migrate to Kubernetes?", system="You are terse.", max_tokens=200)


@pytest.fixture
async def box() -> AsyncIterator[Sandbox]:
    async with Sandbox() as sandbox:
        yield sandbox


def specs(box: Sandbox) -> dict[str, ProviderSpec]:
    return builtin_providers(box.env())


def target(box: Sandbox, name: str, **limits: float | int) -> TargetPlan:
    return TargetPlan(provider=specs(box)[name], **limits)  # type: ignore[arg-type]


async def run(
    box: Sandbox,
    *targets: TargetPlan,
    retry: RetryRules | None = None,
    deadline_s: float = 30.0,
    max_usd: float = 1.0,
    request: ChatRequest = REQUEST,
    check_before_use: bool = False,
) -> RunOutcome:
    plan = RunPlan(
        targets=targets,
        limits=RunLimits(deadline_s=deadline_s, max_usd=max_usd),
        retry=retry or RetryRules(backoff_initial_s=0.05, backoff_max_s=0.2),
        check_before_use=check_before_use,
    )
    keys = {spec.key_env: box.env()[spec.key_env] for spec in specs(box).values() if spec.key_env}
    async with httpx.AsyncClient(timeout=None) as client:
        routing = Routing(client, lambda s: keys.get(s.key_env or ""))
        return await route(plan, request, routing, seed=7)


def outcomes(outcome: RunOutcome) -> list[tuple[str, str]]:
    return [(a.provider, a.outcome) for a in outcome.attempts]


@pytest.mark.parametrize("name", ["aiceo-gateway", "glm-direct", "anthropic-direct", "openai-direct"])
async def test_every_provider_answers_in_its_own_format(box: Sandbox, name: str) -> None:
    """Streaming (OpenAI kind, Anthropic) and whole-body (AICEO) answers parse, with usage."""
    outcome = await run(box, target(box, name))
    assert outcome.ok and outcome.provider == name
    assert outcome.completion is not None and name in outcome.completion.content
    assert outcome.completion.usage.output_tokens > 0 and not outcome.completion.usage.estimated
    assert outcome.cost_usd > 0


async def test_requests_carry_the_reference_headers_and_bodies(box: Sandbox) -> None:
    """Anthropic: x-api-key, anthropic-version, top-level system, max_tokens. AICEO: X-API-Key,
    priority, source, sourceId. OpenAI kind: Bearer key, system message, usage in the stream."""
    for name in ("anthropic-direct", "aiceo-gateway", "glm-direct"):
        assert (await run(box, target(box, name))).ok
    [anthropic] = box.requests("anthropic-direct")
    assert anthropic.headers["x-api-key"] == "<redacted>"
    assert anthropic.headers["anthropic-version"] == "2023-06-01"
    assert anthropic.body["system"] == "You are terse."
    assert anthropic.body["max_tokens"] == 200
    assert anthropic.body["messages"] == [{"role": "user", "content": REQUEST.prompt}]
    [aiceo] = box.requests("aiceo-gateway")
    assert aiceo.headers["x-api-key"] == "<redacted>"
    assert aiceo.body["priority"] == "high" and aiceo.body["source"] == "recursivemanager"
    assert aiceo.body["provider"] == "glm" and aiceo.body["maxTokens"] == 200
    assert aiceo.body["sourceId"] == "ask"
    [glm] = box.requests("glm-direct")
    assert glm.headers["authorization"] == "<redacted>"
    assert glm.body["messages"][0] == {"role": "system", "content": "You are terse."}
    assert glm.body["stream"] is True and glm.body["stream_options"] == {"include_usage": True}


async def test_temperature_zero_is_sent_as_zero(box: Sandbox) -> None:
    """A temperature of 0 is sent as 0, not left out as if unset."""
    request = ChatRequest.ask("x", temperature=0.0)
    assert (await run(box, target(box, "openai-direct"), request=request)).ok
    [sent] = box.requests("openai-direct")
    assert sent.body["temperature"] == 0


async def test_down_is_a_connection_failure_and_fails_over(box: Sandbox) -> None:
    """Connection refused is retried (max_attempts), then the next target answers."""
    box.set_mode("aiceo-gateway", "down")
    outcome = await run(box, target(box, "aiceo-gateway"), target(box, "glm-direct"))
    assert outcome.provider == "glm-direct" and outcome.fallback_used
    assert outcomes(outcome) == [
        ("aiceo-gateway", "connection"),
        ("aiceo-gateway", "connection"),
        ("glm-direct", "ok"),
    ]
    assert outcome.attempts[0].message.startswith("connection refused to 127.0.0.1:")


async def test_reset_before_headers_is_a_connection_failure(box: Sandbox) -> None:
    """A connection reset before the response headers is a ``connection`` failure, and the next target
    answers."""
    box.set_mode("openai-direct", "reset")
    outcome = await run(box, target(box, "openai-direct", max_attempts=1), target(box, "glm-direct"))
    assert outcomes(outcome)[0] == ("openai-direct", "connection") and outcome.provider == "glm-direct"


async def test_ratelimit_retry_after_is_honoured(box: Sandbox) -> None:
    """A 429 with Retry-After: 2 is retried on the same target no sooner than 2 s later."""
    box.set_mode("glm-direct", "ratelimit:2")
    outcome = await run(box, target(box, "glm-direct"), target(box, "openai-direct"))
    first, second, third = outcome.attempts
    assert (first.outcome, second.outcome, third.outcome) == ("rate_limited", "rate_limited", "ok")
    assert second.started_at_ms - (first.started_at_ms + first.latency_ms) >= 2000 - 1
    sent = box.requests("glm-direct")
    assert len(sent) == 2


async def test_silent_provider_is_abandoned_after_one_attempt_timeout(box: Sandbox) -> None:
    """A provider that never answers is left after one attempt timeout; the next target answers."""
    box.set_mode("anthropic-direct", "hang")
    started = time.monotonic()
    outcome = await run(
        box,
        target(box, "anthropic-direct", attempt_timeout_s=0.5, first_token_timeout_s=5.0),
        target(box, "glm-direct"),
    )
    assert time.monotonic() - started < 2.0
    assert outcomes(outcome) == [("anthropic-direct", "timeout"), ("glm-direct", "ok")]


async def test_first_token_timeout_on_a_hanging_stream(box: Sandbox) -> None:
    """A stream that sends its headers but no token within ``first_token_timeout_s`` fails as
    ``first_token_timeout``."""
    box.set_mode("openai-direct", "hang")
    outcome = await run(
        box, target(box, "openai-direct", first_token_timeout_s=0.3), target(box, "glm-direct")
    )
    assert outcomes(outcome)[0] == ("openai-direct", "first_token_timeout")


async def test_truncated_stream_is_never_a_success(box: Sandbox) -> None:
    """A stream cut before its terminating event fails as stream_truncated, on every kind."""
    for name in ("glm-direct", "anthropic-direct", "aiceo-gateway"):
        box.set_mode(name, "truncate")
        outcome = await run(box, target(box, name))
        assert not outcome.ok, name
        assert outcome.error is not None and outcome.error.kind is ErrorKind.STREAM_TRUNCATED, name
        assert outcome.attempts[0].usage.estimated and outcome.cost_usd > 0, "a cut stream is still billed"


async def test_truncated_stream_fails_over_to_a_whole_answer(box: Sandbox) -> None:
    """A truncated stream fails as ``stream_truncated`` and the run fails over to the next target, which
    answers."""
    box.set_mode("openai-direct", "truncate")
    outcome = await run(box, target(box, "openai-direct"), target(box, "anthropic-direct"))
    assert outcomes(outcome) == [("openai-direct", "stream_truncated"), ("anthropic-direct", "ok")]


async def test_stalled_stream_is_abandoned_after_the_idle_timeout(box: Sandbox) -> None:
    """A stream that stops sending is left after ``idle_timeout_s`` (or the first-token timeout, if it
    stalled first) and the next target answers, well within 2 s."""
    box.set_mode("anthropic-direct", "stall")
    started = time.monotonic()
    outcome = await run(box, target(box, "anthropic-direct", idle_timeout_s=0.3), target(box, "glm-direct"))
    assert outcomes(outcome)[0][1] in ("stream_stalled", "first_token_timeout")
    assert outcome.provider == "glm-direct" and time.monotonic() - started < 2.0


async def test_persistent_503_is_tried_max_attempts_times_then_fails_over(box: Sandbox) -> None:
    """A provider that keeps answering 503 (retried on ``overloaded``) gets exactly ``max_attempts``
    requests, then the run fails over."""
    box.set_mode("openai-direct", "status:503")
    retry = RetryRules(on=frozenset({ErrorKind.OVERLOADED}), backoff_initial_s=0.01, backoff_max_s=0.05)
    outcome = await run(
        box, target(box, "openai-direct", max_attempts=3), target(box, "glm-direct"), retry=retry
    )
    assert len(box.requests("openai-direct")) == 3
    assert outcomes(outcome)[-1] == ("glm-direct", "ok")
    assert {o for _, o in outcomes(outcome)[:3]} == {"overloaded"}


@pytest.mark.parametrize(
    ("mode", "kind"),
    [
        ("status:401", "auth"),
        ("status:500", "server_error"),
        ("status:529", "overloaded"),
        ("status:400", "bad_request"),
        ("garbage", "malformed_response"),
    ],
)
async def test_http_failures_are_classified(box: Sandbox, mode: str, kind: str) -> None:
    """Each failing HTTP answer is classified as its error kind (401 auth, 500 server_error, 529
    overloaded, 400 bad_request, garbage malformed_response), then the run fails over."""
    box.set_mode("anthropic-direct", mode)
    outcome = await run(box, target(box, "anthropic-direct", max_attempts=1), target(box, "glm-direct"))
    assert outcomes(outcome) == [("anthropic-direct", kind), ("glm-direct", "ok")]


async def test_slow_provider_within_its_timeout_answers(box: Sandbox) -> None:
    """A provider slower than usual but within its timeout answers; the attempt's latency covers the wait."""
    box.set_mode("glm-direct", "slow:0.3")
    outcome = await run(box, target(box, "glm-direct"))
    assert outcome.ok and outcome.attempts[0].latency_ms >= 300


async def test_nothing_waits_past_the_deadline(box: Sandbox) -> None:
    """Every provider silent: the run ends at its deadline, not at the sum of attempt timeouts."""
    for name in box.names:
        box.set_mode(name, "hang")
    started = time.monotonic()
    outcome = await run(box, *(target(box, n, attempt_timeout_s=10) for n in box.names), deadline_s=0.8)
    elapsed = time.monotonic() - started
    assert 0.8 <= elapsed < 1.3
    assert outcome.error is not None and outcome.error.kind is ErrorKind.DEADLINE


async def test_retry_after_longer_than_the_deadline_is_not_waited_for(box: Sandbox) -> None:
    """A Retry-After of 30 s against a 5 s deadline is not waited for: the run moves on to the next target
    at once."""
    box.set_mode("glm-direct", "ratelimit:30")
    started = time.monotonic()
    outcome = await run(box, target(box, "glm-direct"), target(box, "openai-direct"), deadline_s=5)
    assert time.monotonic() - started < 2.0 and outcome.provider == "openai-direct"


async def test_budget_stops_requests_whose_worst_case_does_not_fit(box: Sandbox) -> None:
    """openai-direct at $30/M output with max_tokens 200 costs up to ~$0.006: a $0.001 budget skips it."""
    outcome = await run(box, target(box, "openai-direct"), target(box, "glm-direct"), max_usd=0.001)
    assert box.requests("openai-direct") == []
    assert outcome.provider == "glm-direct" and outcome.skipped[0].kind is ErrorKind.BUDGET
    assert outcome.cost_usd <= 0.001


async def test_health_check_before_use_skips_an_unhealthy_provider(box: Sandbox) -> None:
    """With ``check_before_use``, a provider whose health check fails gets only that check (no chat
    request) and is skipped as ``unhealthy``."""
    box.set_mode("aiceo-gateway", "status:503")
    outcome = await run(box, target(box, "aiceo-gateway"), target(box, "glm-direct"), check_before_use=True)
    assert outcome.provider == "glm-direct" and outcome.attempts[0].provider == "glm-direct"
    assert [r.path for r in box.requests("aiceo-gateway")] == ["/api/glm/status"]
    assert outcome.skipped[0].kind is ErrorKind.UNHEALTHY


async def test_a_cancelled_slow_attempt_is_seen_leaving_by_the_server(box: Sandbox) -> None:
    """The deadline cancels a slow attempt: its connection is closed at once, and the provider
    sees the client leave instead of answering later."""
    box.set_mode("glm-direct", "slow:3")
    started = time.monotonic()
    outcome = await run(box, target(box, "glm-direct", attempt_timeout_s=10), deadline_s=0.4)
    assert time.monotonic() - started < 1.0 and not outcome.ok
    await anyio.sleep(0.2)
    [logged] = box.requests("glm-direct")
    assert logged.outcome == "client_left"


# --- routes sharing a budget (the perspectives of an analysis) ------------------------------------


def priced(box: Sandbox, name: str, usd_per_mtok_in: float, usd_per_mtok_out: float) -> TargetPlan:
    """Provider ``name`` of the sandbox at the prices given, so that a test sets its worst cases."""
    spec = msgspec.structs.replace(
        specs(box)[name], input_usd_per_mtok=usd_per_mtok_in, output_usd_per_mtok=usd_per_mtok_out
    )
    return TargetPlan(provider=spec)


async def shared(
    box: Sandbox, plans: list[RunPlan], ledger: Ledger, hooks: Hooks | None = None
) -> list[RunOutcome]:
    """Route one request per plan at the same time, every route sharing ``ledger``."""
    keys = {spec.key_env: box.env()[spec.key_env] for spec in specs(box).values() if spec.key_env}
    outcomes: dict[int, RunOutcome] = {}
    async with httpx.AsyncClient(timeout=None) as client:
        routing = Routing(client, lambda s: keys.get(s.key_env or ""), hooks=hooks or Hooks())

        async def one(i: int, plan: RunPlan) -> None:
            outcomes[i] = await route(plan, REQUEST, routing, seed=i, ledger=ledger)

        async with anyio.create_task_group() as tg:
            for i, plan in enumerate(plans):
                tg.start_soon(one, i, plan)
    return [outcomes[i] for i in range(len(plans))]


async def test_routes_sharing_a_budget_wait_for_room_instead_of_failing(box: Sandbox) -> None:
    """Four routes to a slow provider share a budget that holds two worst cases: two run at a
    time, the others wait for them to settle (each costs far less than its worst case), and all
    four answer; never more than two requests in flight, never more spent than the budget."""
    box.set_mode("openai-direct", "slow:0.2")
    openai = target(box, "openai-direct")
    worst = worst_case_usd(REQUEST, openai.provider)
    ledger = Ledger(2.5 * worst)
    in_flight, most = 0, 0

    def started(_: StartAttempt) -> None:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)

    def ended(_: AttemptRecord) -> None:
        nonlocal in_flight
        in_flight -= 1

    plan = RunPlan(targets=(openai,), limits=RunLimits(deadline_s=10.0, max_usd=1.0))
    begun = time.monotonic()
    outcomes = await shared(box, [plan] * 4, ledger, Hooks(attempt_started=started, attempt_ended=ended))
    assert all(o.ok for o in outcomes), [o.error for o in outcomes]
    assert most == 2 and time.monotonic() - begun >= 0.4
    assert ledger.spent_usd <= ledger.max_usd and ledger.reserved_usd == 0.0
    assert math.isclose(ledger.spent_usd, sum(o.cost_usd for o in outcomes))


async def test_a_racer_waiting_for_another_route_starts_when_that_route_settles(box: Sandbox) -> None:
    """Route A holds most of the budget on a slow provider; route B races a slow glm-direct
    against a fast openai-direct, and only glm fits beside A. B's openai racer waits, starts the
    moment A settles (its run waits on its own attempts and on the budget at once), and wins
    long before glm would answer."""
    box.set_mode("anthropic-direct", "slow:0.3")
    box.set_mode("glm-direct", "slow:2")
    dear = priced(box, "anthropic-direct", 10.0, 30.0)
    fast = priced(box, "openai-direct", 10.0, 30.0)
    cheap = priced(box, "glm-direct", 0.5, 0.5)
    worst, worst_glm = worst_case_usd(REQUEST, dear.provider), worst_case_usd(REQUEST, cheap.provider)
    ledger = Ledger(1.6 * worst + 1.1 * worst_glm)
    a = RunPlan(targets=(dear,), limits=RunLimits(deadline_s=10.0))
    b = RunPlan(targets=(cheap, fast), strategy=Strategy.FASTEST, limits=RunLimits(deadline_s=10.0))
    begun = time.monotonic()
    first, second = await shared(box, [a, b], ledger)
    assert first.ok and second.ok and second.provider == "openai-direct", second
    assert time.monotonic() - begun < 1.5
    assert ledger.reserved_usd == 0.0 and ledger.spent_usd <= ledger.max_usd


async def test_a_route_waiting_for_room_ends_at_its_deadline(box: Sandbox) -> None:
    """The route holding the budget outlasts the other's deadline: the waiting route ends with
    ``deadline`` at its deadline, having sent nothing."""
    box.set_mode("openai-direct", "slow:1")
    openai = target(box, "openai-direct")
    ledger = Ledger(1.5 * worst_case_usd(REQUEST, openai.provider))
    holder = RunPlan(targets=(openai,), limits=RunLimits(deadline_s=10.0))
    waiter = RunPlan(targets=(openai,), limits=RunLimits(deadline_s=0.3))
    begun = time.monotonic()
    held, waited = await shared(box, [holder, waiter], ledger)
    assert held.ok and waited.error is not None and waited.error.kind is ErrorKind.DEADLINE
    assert waited.attempts == () and "waited for room" in waited.error.message
    assert time.monotonic() - begun < 1.8


async def test_a_route_cancelled_from_outside_lets_go_of_its_share_of_the_budget(box: Sandbox) -> None:
    """A route given up by its caller mid-request releases what it reserved at once, so that a
    route waiting for room starts without waiting for the abandoned request's timeout."""
    box.set_mode("anthropic-direct", "slow:5")
    slow, quick = target(box, "anthropic-direct"), priced(box, "glm-direct", 3.0, 15.0)
    worst = max(worst_case_usd(REQUEST, slow.provider), worst_case_usd(REQUEST, quick.provider))
    ledger = Ledger(1.5 * worst)
    keys = {spec.key_env: box.env()[spec.key_env] for spec in specs(box).values() if spec.key_env}
    result: list[RunOutcome] = []
    async with httpx.AsyncClient(timeout=None) as client:
        routing = Routing(client, lambda s: keys.get(s.key_env or ""))

        async def abandoned() -> None:
            with anyio.move_on_after(0.3):
                await route(RunPlan(targets=(slow,)), REQUEST, routing, seed=1, ledger=ledger)

        async def waiting() -> None:
            await anyio.sleep(0.05)  # after the slow one has reserved its worst case
            result.append(await route(RunPlan(targets=(quick,)), REQUEST, routing, seed=2, ledger=ledger))

        begun = time.monotonic()
        async with anyio.create_task_group() as tg:
            tg.start_soon(abandoned)
            tg.start_soon(waiting)
    [outcome] = result
    assert outcome.ok and time.monotonic() - begun < 2.0
    assert ledger.reserved_usd == 0.0
