"""The runner under the state's limits: each attempt takes its provider's slot across
processes, reserves its worst case against the plan's caps, and settles what it really used; a
full cap or an unreachable state sends nothing. Routes run in this process over real loopback
HTTP against the sandbox, on each state backend in turn (SQLite, Redis), with the ``State`` that
``rmcli.state.open_state`` opens."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import msgspec
import pytest

from rmcli import runner
from rmcli.hooks import Hooks
from rmcli.notices import SKIP_KINDS
from rmcli.runner import ProviderLimits, Routing, route
from rmcli.sandbox import Sandbox
from rmcli.state import (
    STATE_VARIABLE,
    AttemptClaim,
    Origin,
    Slot,
    SlotBusy,
    State,
    StoreUnavailable,
    open_state,
)
from rmcli.state.sqlite import open_sqlite
from rmcore.attempts import AttemptRecord
from rmcore.breaker import CircuitState
from rmcore.errors import ErrorKind
from rmcore.events import RunOutcome
from rmcore.plan import BreakerRules, RetryRules, RunLimits, RunPlan, TargetPlan
from rmcore.policy.schema import Strategy
from rmcore.pricing import estimate_prompt_tokens
from rmcore.providers import ProviderSpec, builtin_providers
from rmcore.quota import Cap, CapUsage, Charge, Period, Refusal, Resource, charges_for
from rmcore.requests import ChatRequest
from tests.cli.helpers import closed_port
from tests.cli.state.backends import Backend

pytestmark = pytest.mark.anyio

REQUEST = ChatRequest.ask("Should we shard the orders database now?", max_tokens=100)
WORST_USD = 1.0
"""glm-direct's worst case for ``REQUEST`` at the prices ``glm`` gives it: 100 tokens at $0.01."""
NO_HOOKS = Hooks()


@pytest.fixture
async def box() -> AsyncIterator[Sandbox]:
    async with Sandbox() as sandbox:
        yield sandbox


@pytest.fixture
async def state(store_backend: Backend) -> AsyncIterator[State]:
    """A state of each backend in turn (SQLite, then Redis), closed after the test."""
    async with store_backend.open() as opened:
        yield opened


def spec(box: Sandbox, name: str, **changes: object) -> ProviderSpec:
    """A sandbox provider; glm-direct costs $0.01 per answer token and nothing per prompt token."""
    base = builtin_providers(box.env())[name]
    if name == "glm-direct":
        base = msgspec.structs.replace(base, input_usd_per_mtok=0.0, output_usd_per_mtok=10_000.0)
    return msgspec.structs.replace(base, **changes)


def cap(scope: str, resource: Resource, limit: float) -> Cap:
    """A cap over the UTC day (dollars) or over a fixed hour (requests, tokens)."""
    period = Period.DAY if resource is Resource.USD else Period.WINDOW
    return Cap(
        key=f"{scope}:{resource.value}",
        scope=scope,
        resource=resource,
        limit=limit,
        period=period,
        window_s=None if period is Period.DAY else 3600.0,
    )


def target(box: Sandbox, name: str, *, timeout_s: float = 30.0, **changes: object) -> TargetPlan:
    """One attempt at sandbox provider ``name`` (``spec`` with ``changes``)."""
    return TargetPlan(provider=spec(box, name, **changes), max_attempts=1, attempt_timeout_s=timeout_s)


def plan(*targets: TargetPlan, caps: Sequence[Cap] = (), **fields: object) -> RunPlan:
    return RunPlan(
        targets=targets,
        caps=tuple(caps),
        retry=RetryRules(backoff_initial_s=0.05, backoff_max_s=0.1),
        limits=RunLimits(max_usd=100.0),
        **fields,  # type: ignore[arg-type]
    )


@asynccontextmanager
async def routing(
    box: Sandbox, state: State | None, *, limits: ProviderLimits | None = None, hooks: Hooks = NO_HOOKS
) -> AsyncIterator[Routing]:
    """What the routes of one caller share: a client, the sandbox's keys, ``state`` and ``hooks``,
    and ``limits`` (this process's own limiters: a fresh set unless given)."""
    env = box.env()
    async with httpx.AsyncClient(timeout=None) as client:
        yield Routing(
            client,
            lambda s: env.get(s.key_env or ""),
            state=state,
            hooks=hooks,
            limits=limits or ProviderLimits(),
        )


async def routed(
    box: Sandbox,
    run_plan: RunPlan,
    state: State | None,
    *,
    limits: ProviderLimits | None = None,
    hooks: Hooks = NO_HOOKS,
) -> RunOutcome:
    """``REQUEST`` routed by ``run_plan`` on ``state``, with a routing of its own."""
    async with routing(box, state, limits=limits, hooks=hooks) as shared:
        return await route(run_plan, REQUEST, shared, seed=3)


async def window(state: State, key: str) -> CapUsage:
    """The current window of cap ``key`` (there must be one)."""
    [found] = [w for w in await state.caps.usage(time.time()) if w.cap_key == key]
    return found


async def slot_free(state: State, name: str = "provider:glm-direct", lease_s: float = 5.0) -> bool:
    """Whether another process could take the only slot of ``name`` now (it takes it if so)."""
    return await state.caps.renew(Slot(name=name, limit=1, lease_s=lease_s), "another process", time.time())


async def stored(state: State) -> list[tuple[str, str]]:
    """The attempts the state holds, as (provider, outcome), oldest first."""
    return [(row.provider, row.outcome) for row in await state.attempts.since(0)]


class RecordingCircuits:
    """The state's circuits, remembering every outcome recorded through them."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.recorded: list[tuple[str, str]] = []

    async def record(self, provider: str, outcome: str, now: float, failure_threshold: int) -> CircuitState:
        self.recorded.append((provider, outcome))
        result: CircuitState = await self.inner.record(provider, outcome, now, failure_threshold)  # type: ignore[attr-defined]
        return result

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def with_parts(state: State, **parts: object) -> State:
    """``state`` with some of its concerns (or ``local_caps``) replaced."""
    concerns: dict[str, object] = {
        "attempts": state.attempts,
        "circuits": state.circuits,
        "caps": state.caps,
        "cache": state.cache,
        "history": state.history,
        "conversations": state.conversations,
        "local_caps": state.local_caps,
    }
    return State(**{**concerns, **parts}, where=state.where)  # type: ignore[arg-type]


# --- reserving and settling -----------------------------------------------------------------------


async def test_an_answered_attempt_settles_its_real_cost_and_leaves_no_reservation(
    box: Sandbox, state: State
) -> None:
    """The worst case ($1.00) is reserved while the request runs; the answer's real cost and one
    request are what stays in the windows afterwards."""
    caps = [cap("policy:t", Resource.USD, 5.0), cap("provider:glm-direct", Resource.REQUESTS, 10)]
    outcome = await routed(box, plan(target(box, "glm-direct"), caps=caps), state)
    assert outcome.ok and 0 < outcome.cost_usd < WORST_USD
    usd, requests = await window(state, "policy:t:usd"), await window(state, "provider:glm-direct:requests")
    assert usd.used == pytest.approx(outcome.cost_usd) and usd.reserved == 0.0
    assert (requests.used, requests.reserved) == (1.0, 0.0)


async def test_a_full_budget_sends_nothing_records_no_breaker_outcome_and_moves_on(
    box: Sandbox, state: State
) -> None:
    """glm-direct's worst case ($1.00) does not fit its $0.50 daily cap: it is skipped as
    ``budget`` with the cap's message, never contacted, its breaker told nothing and no attempt
    stored (no request was sent), and the next target answers, its success recorded."""
    now = time.time()
    for name in ("glm-direct", "anthropic-direct"):  # one failure each: a success is written
        await state.circuits.record(name, "server_error", now, 5)
    circuits = RecordingCircuits(state.circuits)
    caps = [cap("provider:glm-direct", Resource.USD, 0.5)]
    targets = (target(box, "glm-direct"), target(box, "anthropic-direct"))
    run_plan = plan(*targets, caps=caps, breaker=BreakerRules(enabled=True, failure_threshold=5))
    outcome = await routed(box, run_plan, with_parts(state, circuits=circuits))
    assert outcome.ok and outcome.provider == "anthropic-direct"
    assert box.requests("glm-direct") == []
    assert [(s.provider, s.kind) for s in outcome.skipped] == [("glm-direct", ErrorKind.BUDGET)]
    assert "daily budget provider:glm-direct:usd ($0.00 of $0.50 used)" in outcome.skipped[0].message
    assert "resets at" in outcome.skipped[0].message
    assert circuits.recorded == [("anthropic-direct", "ok")]
    failures = {c.provider: c.consecutive_failures for c in await state.circuits.all()}
    assert failures == {"glm-direct": 1, "anthropic-direct": 0}
    assert [a.provider for a in outcome.attempts] == ["anthropic-direct"]
    assert await stored(state) == [("anthropic-direct", "ok")]


async def test_a_refused_reservation_leaves_the_providers_slot_free(box: Sandbox, state: State) -> None:
    """The slot and the reservation are asked for in one call: when the cap refuses, the slot
    that call took is not kept from other processes."""
    caps = [cap("provider:glm-direct", Resource.USD, 0.5)]
    outcome = await routed(box, plan(target(box, "glm-direct", max_concurrency=1), caps=caps), state)
    assert [s.kind for s in outcome.skipped] == [ErrorKind.BUDGET]
    assert await slot_free(state)
    assert await state.caps.usage(time.time()) == []


async def test_a_probe_refused_by_a_quota_is_handed_back_for_the_next_run(box: Sandbox, state: State) -> None:
    """glm-direct's circuit is open and cooled down: the run is given the half-open probe, but
    the provider's request quota is used up, so nothing is sent. The probe is handed back at
    once: the circuit is open again, and the next run that may send is the probe, instead of
    every run being refused until the probe timeout (30 s here)."""
    now = time.time()
    for n in range(3):
        await state.circuits.record("glm-direct", "server_error", now - 120 + n, 3)
    caps = [cap("provider:glm-direct", Resource.REQUESTS, 1)]
    one_request = charges_for(caps, "glm-direct", 0.0, 0, now)
    used_up = AttemptClaim(holder="someone", lease_s=60.0, charges=one_request)
    assert await state.caps.begin(used_up, now) is None
    run_plan = plan(target(box, "glm-direct"), caps=caps, breaker=BreakerRules(enabled=True))
    refused = await routed(box, run_plan, state)
    assert [s.kind for s in refused.skipped] == [ErrorKind.QUOTA]
    assert box.requests("glm-direct") == []
    [circuit] = await state.circuits.all()
    assert circuit.state == "open"
    admitted = await state.circuits.admit("glm-direct", time.time(), 30.0, 30.0)
    assert admitted.decision == "probe"


async def test_a_used_up_request_quota_skips_the_provider_as_quota(box: Sandbox, state: State) -> None:
    """A quota of one request per hour: the first run is answered, the second skipped as
    ``quota`` saying which quota and when its window resets, with nothing sent."""
    caps = [cap("provider:glm-direct", Resource.REQUESTS, 1)]
    run_plan = plan(target(box, "glm-direct"), caps=caps)
    assert (await routed(box, run_plan, state)).ok
    second = await routed(box, run_plan, state)
    assert not second.ok and second.error is not None and second.error.kind is ErrorKind.QUOTA
    [skip] = second.skipped
    assert skip.kind is ErrorKind.QUOTA
    assert "1-hour request quota provider:glm-direct:requests (1 of 1 request used)" in skip.message
    assert "resets at" in skip.message
    assert len(box.requests("glm-direct")) == 1
    assert await stored(state) == [("glm-direct", "ok")]


async def test_a_failed_attempt_settles_one_request_and_no_tokens(box: Sandbox, state: State) -> None:
    """A 500 used a request of the quota but no tokens (the provider reported none)."""
    box.set_mode("glm-direct", "status:500")
    caps = [
        cap("provider:glm-direct", Resource.REQUESTS, 10),
        cap("provider:glm-direct", Resource.TOKENS, 10_000),
    ]
    outcome = await routed(box, plan(target(box, "glm-direct"), caps=caps), state)
    assert not outcome.ok
    requests = await window(state, "provider:glm-direct:requests")
    tokens = await window(state, "provider:glm-direct:tokens")
    assert (requests.used, tokens.used) == (1.0, 0.0)
    assert tokens.reserved == 0.0


async def test_a_cancelled_attempt_settles_its_prompt_and_gives_its_slot_back(
    box: Sandbox, state: State
) -> None:
    """A hedge: glm-direct is slow, anthropic-direct answers, glm-direct's attempt is cancelled.
    Its reservation is settled with the prompt's estimate (the prompt may have been billed), its
    slot (max_concurrency 1) is free again for another process, and it is stored as
    ``cancelled`` at the prompt's estimated cost, not as a failure."""
    box.set_mode("glm-direct", "slow:5")
    caps = [cap("provider:glm-direct", Resource.TOKENS, 10_000)]
    targets = (
        target(box, "glm-direct", max_concurrency=1),
        target(box, "anthropic-direct"),
    )
    run_plan = plan(*targets, caps=caps, strategy=Strategy.HEDGED, hedge_after_s=0.1)
    outcome = await routed(box, run_plan, state)
    assert outcome.provider == "anthropic-direct"
    assert sorted((a.provider, a.outcome) for a in outcome.attempts) == [
        ("anthropic-direct", "ok"),
        ("glm-direct", "cancelled"),
    ]
    tokens = await window(state, "provider:glm-direct:tokens")
    assert (tokens.used, tokens.reserved) == (float(estimate_prompt_tokens(REQUEST)), 0.0)
    assert await slot_free(state)
    rows = {row.provider: row for row in await state.attempts.since(0)}
    assert {name: row.outcome for name, row in rows.items()} == {
        "glm-direct": "cancelled",
        "anthropic-direct": "ok",
    }
    assert rows["glm-direct"].input_tokens == estimate_prompt_tokens(REQUEST)


class SlowAttempts:
    """A state's ``Attempts`` that take longer over some providers' records: ``sent_s`` more
    seconds to write an attempt's record as it is sent, ``settled_s`` more to write its end."""

    def __init__(
        self, attempts: object, sent_s: dict[str, float], settled_s: dict[str, float] | None = None
    ) -> None:
        self._attempts: Any = attempts
        self._sent_s = sent_s
        self._settled_s = settled_s or {}

    async def sent(self, key: str, origin: Origin, record: AttemptRecord) -> None:
        await self._attempts.sent(key, origin, record)
        await anyio.sleep(self._sent_s.get(record.provider, 0.0))

    async def settle(self, key: str, origin: Origin, record: AttemptRecord) -> None:
        await self._attempts.settle(key, origin, record)
        await anyio.sleep(self._settled_s.get(record.provider, 0.0))

    def __getattr__(self, name: str) -> object:
        return getattr(self._attempts, name)


class CancelSafeSlowAttempts(SlowAttempts):
    """``SlowAttempts`` whose ``sent`` the runner may cancel (``cancel_safe``: no shield around
    it): the record is written before the wait, or with ``write_first`` False after it, so that a
    cancellation during the wait leaves it unwritten."""

    cancel_safe = True

    def __init__(self, attempts: object, sent_s: dict[str, float], *, write_first: bool) -> None:
        super().__init__(attempts, sent_s)
        self._write_first = write_first

    async def sent(self, key: str, origin: Origin, record: AttemptRecord) -> None:
        if self._write_first:
            await super().sent(key, origin, record)
            return
        await anyio.sleep(self._sent_s.get(record.provider, 0.0))
        await self._attempts.sent(key, origin, record)


async def race_lost_by_glm_before_it_sent(box: Sandbox, state: State) -> None:
    """glm-direct races anthropic-direct, which answers and wins: glm-direct's request never
    leaves, so it is no attempt: not in the outcome, not in the store, never seen by the provider."""
    run_plan = plan(target(box, "glm-direct"), target(box, "anthropic-direct"), strategy=Strategy.FASTEST)
    outcome = await routed(box, run_plan, state)
    assert outcome.provider == "anthropic-direct"
    assert [(a.provider, a.outcome) for a in outcome.attempts] == [("anthropic-direct", "ok")]
    assert await stored(state) == [("anthropic-direct", "ok")]
    assert box.requests("glm-direct") == []


async def test_an_attempt_given_up_while_its_record_is_written_is_taken_back(
    box: Sandbox, state: State
) -> None:
    """A race: glm-direct's record takes 0.3 s to be written (a slow store) while anthropic-direct
    answers and wins. glm-direct's request never leaves, so it is no attempt: not in the outcome,
    not in the store (its record is withdrawn), never seen by the provider."""
    state.attempts = SlowAttempts(state.attempts, sent_s={"glm-direct": 0.3})  # type: ignore[assignment]
    await race_lost_by_glm_before_it_sent(box, state)


async def test_an_attempt_given_up_while_the_run_writes_the_winners_end_is_never_sent(
    box: Sandbox, state: State
) -> None:
    """A race where the run awaits the store between the engine's decision and its enactment:
    anthropic-direct answers at once and its end takes 0.6 s to be written, while glm-direct's
    record takes 0.3 s. The engine gives glm-direct up the moment anthropic-direct wins (it was
    still held: nothing sent); that decision must hold while the run writes the winner's end,
    so glm-direct's record, written meanwhile, is taken back and its request never leaves. (It
    used to leave: the soak found the request begun for a run that no longer counted it.)"""
    slow = SlowAttempts(state.attempts, sent_s={"glm-direct": 0.3}, settled_s={"anthropic-direct": 0.6})
    state.attempts = slow  # type: ignore[assignment]
    await race_lost_by_glm_before_it_sent(box, state)


@pytest.mark.parametrize("write_first", [True, False], ids=["written, then cut", "cut before written"])
async def test_an_attempt_given_up_while_a_cancel_safe_store_writes_its_record_is_taken_back(
    box: Sandbox, state: State, write_first: bool
) -> None:
    """The same race over a store whose ``sent`` may be cancelled (``cancel_safe``, as the SQLite
    store's is): no shield around glm-direct's record, so the give-up cuts its write short; it
    is withdrawn whether it was written already or not yet, and its request never leaves."""
    slow = CancelSafeSlowAttempts(state.attempts, {"glm-direct": 0.3}, write_first=write_first)
    state.attempts = slow  # type: ignore[assignment]
    await race_lost_by_glm_before_it_sent(box, state)


# --- concurrency slots across processes -------------------------------------------------------------


async def test_max_concurrency_holds_across_processes_sharing_the_state(box: Sandbox, state: State) -> None:
    """Two routes with limiters of their own (as two processes have) and one state: glm-direct
    (max_concurrency 1, 0.3 s an answer) is sent one request at a time."""
    box.set_mode("glm-direct", "slow:0.3")
    run_plan = plan(target(box, "glm-direct", max_concurrency=1))
    started = time.monotonic()
    outcomes: list[RunOutcome] = []

    async def one() -> None:
        outcomes.append(await routed(box, run_plan, state, limits=ProviderLimits()))

    async with anyio.create_task_group() as tg:
        tg.start_soon(one)
        tg.start_soon(one)
    assert all(o.ok for o in outcomes) and len(outcomes) == 2
    assert time.monotonic() - started >= 0.6
    assert await slot_free(state), "both slots given back"


async def test_a_slot_busy_for_the_whole_timeout_is_refused_as_quota(box: Sandbox, state: State) -> None:
    """Another process holds glm-direct's only slot: after the attempt's timeout (0.3 s) of
    waiting the attempt is refused, unsent and unstored, saying the slots stayed busy."""
    assert await slot_free(state, lease_s=60.0)
    run_plan = plan(target(box, "glm-direct", timeout_s=0.3, max_concurrency=1))
    started = time.monotonic()
    outcome = await routed(box, run_plan, state)
    assert 0.25 <= time.monotonic() - started < 2.0
    [skip] = outcome.skipped
    assert skip.kind is ErrorKind.QUOTA and "request slots of glm-direct" in skip.message
    assert box.requests("glm-direct") == []
    assert await stored(state) == []


# --- the shared state unreachable -------------------------------------------------------------------


@asynccontextmanager
async def unreachable(home: Path, warnings: list[str] | None = None) -> AsyncIterator[State]:
    """A shared state nothing listens for, opened as the shell opens it, with ``home`` as this
    host's state folder; what it warns goes to ``warnings``."""
    env = {STATE_VARIABLE: f"redis://127.0.0.1:{closed_port()}/0"}
    lines = [] if warnings is None else warnings
    async with await open_state(env, home, warn=lines.append) as state:
        yield state


async def test_fail_closed_sends_no_paid_request_and_says_why(box: Sandbox, tmp_path: Path) -> None:
    """Redis unreachable and the policy fails closed (the default): the attempt is refused as
    ``budget`` with the documented message, nothing is sent, nothing is counted or stored on
    this host, and no fall-back is announced."""
    heard: list[str] = []
    async with unreachable(tmp_path / "home", heard) as state:
        run_plan = plan(target(box, "glm-direct"), caps=[cap("policy:t", Resource.USD, 5.0)])
        outcome = await routed(box, run_plan, state, hooks=Hooks(state_unavailable=heard.append))
    [skip] = outcome.skipped
    assert skip.kind is ErrorKind.BUDGET
    assert skip.message.startswith(f"the shared state ({state.where}) is unreachable: ")
    assert "the policy fails closed, so no paid request starts" in skip.message
    assert 'on_state_unavailable = "fail_open"' in skip.message
    assert box.requests("glm-direct") == []
    assert not (tmp_path / "home").exists()
    assert heard == []


async def test_fail_open_counts_on_this_host_and_warns_once(box: Sandbox, tmp_path: Path) -> None:
    """Redis unreachable and the policy fails open: the runs go on, their caps counted in this
    host's SQLite state (which then refuses what does not fit there), and the hooks hear of it
    once, not per attempt (the state itself warns once of the outage too); the attempt sent is
    stored on this host."""
    state_lines: list[str] = []
    heard: list[str] = []
    caps = [cap("policy:t", Resource.USD, 1.2)]
    run_plan = plan(target(box, "glm-direct"), caps=caps, on_state_unavailable="fail_open")
    async with (
        unreachable(tmp_path / "home", state_lines) as state,
        routing(box, state, hooks=Hooks(state_unavailable=heard.append)) as shared,
    ):
        first = await route(run_plan, REQUEST, shared, seed=3)
        second = await route(run_plan, REQUEST, shared, seed=3)
    assert first.ok and not second.ok
    assert (
        second.skipped[0].kind is ErrorKind.BUDGET
        and "daily budget policy:t:usd" in second.skipped[0].message
    )
    assert len(heard) == 1 and "the policy fails open" in heard[0]
    assert len(state_lines) == 1 and str(tmp_path / "home") in state_lines[0]
    async with open_sqlite(tmp_path / "home") as local:
        usd = await window(local, "policy:t:usd")
        assert await stored(local) == [("glm-direct", "ok")]
    assert usd.used == pytest.approx(first.cost_usd) and usd.reserved == 0.0
    assert len(box.requests("glm-direct")) == 1


class Vanishing:
    """Caps over ``caps`` whose state goes away once an attempt has begun: ending it fails as
    unreachable."""

    def __init__(self, caps: object) -> None:
        self.caps = caps

    async def begin(self, claim: AttemptClaim, now: float) -> Refusal | SlotBusy | None:
        answer: Refusal | SlotBusy | None = await self.caps.begin(claim, now)  # type: ignore[attr-defined]
        return answer

    async def end(self, claim: AttemptClaim, used: Sequence[Charge] | None, now: float) -> None:
        raise StoreUnavailable("redis://127.0.0.1:1/0", "Connection refused")

    def __getattr__(self, name: str) -> object:
        return getattr(self.caps, name)


async def test_a_state_lost_while_the_request_runs_keeps_the_spend_on_this_host(
    box: Sandbox, state: State, tmp_path: Path
) -> None:
    """The reservation was made, then the shared state went away: the answer stands, and its
    real cost is settled in this host's state rather than lost (the shared reservation ends
    with its lease)."""
    async with open_sqlite(tmp_path / "local") as local:
        vanishing = with_parts(state, caps=Vanishing(state.caps), local_caps=local.caps)
        run_plan = plan(target(box, "glm-direct"), caps=[cap("policy:t", Resource.USD, 5.0)])
        outcome = await routed(box, run_plan, vanishing)
        assert outcome.ok
        assert (await window(local, "policy:t:usd")).used == pytest.approx(outcome.cost_usd)
    assert (await window(state, "policy:t:usd")).reserved == WORST_USD


def test_quota_is_a_skip_kind() -> None:
    """A target skipped for its quota gets the "Skipped provider" line, not a fail-over warning."""
    assert {
        ErrorKind.QUOTA,
        ErrorKind.BUDGET,
        ErrorKind.CIRCUIT_OPEN,
        ErrorKind.UNHEALTHY,
        ErrorKind.UNSUPPORTED,
    } == SKIP_KINDS


async def test_a_short_slot_lease_is_renewed_while_its_request_runs(
    box: Sandbox, state: State, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Slot leases are short (so a process killed while holding slots keeps them from the others
    only briefly) and renewed while the request runs: a request twice as long as the lease keeps
    its slot to the end, then gives it back."""
    monkeypatch.setattr(runner, "SLOT_LEASE_S", 0.3)
    monkeypatch.setattr(runner, "SLOT_RENEW_S", 0.1)
    box.set_mode("glm-direct", "slow:0.8")
    run_plan = plan(target(box, "glm-direct", max_concurrency=1))
    seen: list[bool] = []

    async def meanwhile() -> None:
        await anyio.sleep(0.6)  # past the first lease: only a renewal keeps the slot
        seen.append(await slot_free(state, lease_s=0.3))

    async with anyio.create_task_group() as tg:
        tg.start_soon(meanwhile)
        outcome = await routed(box, run_plan, state)
    assert outcome.ok and seen == [False]
    assert await slot_free(state, lease_s=0.3)


async def test_a_race_lost_while_waiting_for_a_slot_stores_no_attempt(box: Sandbox, state: State) -> None:
    """glm-direct's only slot is held by another process; a race of glm-direct and
    anthropic-direct is won by anthropic-direct while glm-direct still waits: glm-direct's
    attempt never left the process, so it is neither stored nor charged."""
    assert await slot_free(state, lease_s=60.0)
    targets = (target(box, "glm-direct", max_concurrency=1), target(box, "anthropic-direct"))
    outcome = await routed(box, plan(*targets, strategy=Strategy.FASTEST), state)
    assert outcome.provider == "anthropic-direct"
    assert [(a.provider, a.outcome) for a in outcome.attempts] == [("anthropic-direct", "ok")]
    assert outcome.cost_usd == outcome.attempts[0].cost_usd
    assert box.requests("glm-direct") == []
    assert await stored(state) == [("anthropic-direct", "ok")]
