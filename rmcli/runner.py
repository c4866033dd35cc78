"""Drive the engine over real HTTP: perform its actions, feed it what happened, record every attempt.

Attempts and health checks run as tasks of one anyio task group, so races and hedges really run
at once; a cancelled attempt's task is cancelled at once, which closes its connection. The loop
waits for the next event or for the engine's next wake-up, whichever comes first.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

import anyio
import httpx
import msgspec

from rmcli.health import HEALTH_TIMEOUT_S, check_health
from rmcli.transport import TextSink, perform_attempt
from rmcore.attempts import AttemptRecord
from rmcore.budget import Ledger
from rmcore.engine import (
    Action,
    AdmitCircuit,
    AttemptFailed,
    AttemptSucceeded,
    Backoff,
    CancelAttempt,
    CheckHealth,
    CircuitAnswered,
    Engine,
    Event,
    FailedOver,
    Finish,
    HealthObserved,
    RunOutcome,
    StartAttempt,
    TargetSkipped,
    TimePassed,
)
from rmcore.plan import RunPlan, leaves
from rmcore.providers import ProviderSpec
from rmcore.requests import ChatRequest

__all__ = ["CircuitBook", "Observer", "ProviderLimits", "route"]


class Observer:
    """Hooks the commands use to show progress; every method is optional to override."""

    def attempt_started(self, action: StartAttempt) -> None:
        """An attempt is about to be sent."""

    def failed_over(self, notice: FailedOver) -> None:
        """The run left one provider for the next."""

    def attempt_recorded(self, record: AttemptRecord) -> None:
        """An attempt ended (or was cancelled)."""

    def backing_off(self, notice: Backoff, seconds: float) -> None:
        """A provider failed and will be retried after ``seconds``."""

    def skipped(self, notice: TargetSkipped) -> None:
        """A target was passed over without a request (budget, health, circuit)."""


class ProviderLimits:
    """One ``anyio.CapacityLimiter`` per provider with a ``max_concurrency``, shared by every
    route of a process that uses the same instance (the perspectives of one analysis)."""

    def __init__(self) -> None:
        self._limiters: dict[str, anyio.CapacityLimiter] = {}

    def slot(self, spec: ProviderSpec) -> anyio.CapacityLimiter | contextlib.nullcontext[None]:
        """What to hold while a request to ``spec`` is in flight."""
        if spec.max_concurrency is None:
            return contextlib.nullcontext()
        limiter = self._limiters.get(spec.name)
        if limiter is None:
            limiter = self._limiters[spec.name] = anyio.CapacityLimiter(spec.max_concurrency)
        return limiter


class CircuitBook(Protocol):
    """Where circuit breakers live (the state store): shared by every process using it."""

    def admit(self, provider: str, cooldown_s: float, probe_timeout_s: float) -> tuple[str, float | None]:
        """The decision (``allowed``, ``probe``, ``refused``) and, when refused, seconds until
        the circuit will be probed."""
        ...

    def record(self, provider: str, outcome: str, failure_threshold: int) -> None:
        """How an attempt on ``provider`` ended."""
        ...


async def route(
    plan: RunPlan,
    request: ChatRequest,
    *,
    client: httpx.AsyncClient,
    keys: Callable[[ProviderSpec], str | None],
    observer: Observer | None = None,
    on_text: TextSink | None = None,
    circuits: CircuitBook | None = None,
    clock: Callable[[], float] = time.monotonic,
    seed: int | None = None,
    spent_usd: float = 0.0,
    ledger: Ledger | None = None,
    limits: ProviderLimits | None = None,
) -> RunOutcome:
    """Route ``request`` by ``plan`` and return how it ended. Never raises for a provider's fault.

    ``on_text`` receives the answer's text as it streams, for attempts that run alone (never
    those of a race or a hedge). Without ``circuits`` every breaker is closed. ``ledger`` is a
    budget shared with other routes running at the same time; ``limits`` caps how many requests
    each provider gets at once across them (its ``max_concurrency``).
    """
    watch = observer or Observer()
    engine = Engine(
        plan,
        request,
        seed=random.getrandbits(63) if seed is None else seed,
        epoch_s=time.time(),
        spent_usd=spent_usd,
        ledger=ledger,
    )
    probe_timeout_s = max((t.attempt_timeout_s for t in leaves(plan)), default=30.0)
    send, receive = anyio.create_memory_object_stream[Event](max_buffer_size=math.inf)
    scopes: dict[int, anyio.CancelScope] = {}
    recorded = 0

    def flush_records() -> None:
        nonlocal recorded
        for record in engine.attempts[recorded:]:
            if circuits is not None and plan.breaker.enabled:
                circuits.record(record.provider, record.outcome, plan.breaker.failure_threshold)
            watch.attempt_recorded(record)
        recorded = len(engine.attempts)

    slots = limits if limits is not None else ProviderLimits()

    async def attempt(action: StartAttempt, scope: anyio.CancelScope) -> None:
        with scope:
            key = keys(action.provider)
            sink = on_text if action.exclusive else None
            async with slots.slot(action.provider):
                event = await perform_attempt(client, action, request, key, clock, sink)
            if isinstance(event, AttemptFailed) and key and key in event.error.message:
                # A provider may quote the key it was sent ("Incorrect API key provided: ...").
                error = msgspec.structs.replace(
                    event.error, message=event.error.message.replace(key, "<redacted>")
                )
                event = msgspec.structs.replace(event, error=error)
            await send.send(event)

    async def health(spec: ProviderSpec) -> None:
        budget = min(HEALTH_TIMEOUT_S, max(engine.deadline - clock(), 0.0))
        report = await check_health(client, spec, keys(spec), budget, clock)
        await send.send(
            HealthObserved(provider=spec.name, at=clock(), healthy=report.healthy, reason=report.reason)
        )

    def admit(spec: ProviderSpec) -> CircuitAnswered:
        decision, retry_in = (
            circuits.admit(spec.name, plan.breaker.cooldown_s, probe_timeout_s)
            if circuits
            else ("allowed", None)
        )
        return CircuitAnswered(provider=spec.name, at=clock(), decision=decision, retry_in_s=retry_in)

    async with anyio.create_task_group() as tg, send, receive:
        actions: deque[Action] = deque(engine.start(clock()))
        while True:
            while actions:
                action = actions.popleft()
                match action:
                    case Finish(outcome=outcome):
                        for scope in scopes.values():
                            scope.cancel()
                        flush_records()
                        tg.cancel_scope.cancel()
                        return outcome
                    case StartAttempt(attempt_id=attempt_id):
                        watch.attempt_started(action)
                        scopes[attempt_id] = anyio.CancelScope()
                        tg.start_soon(attempt, action, scopes[attempt_id])
                    case CancelAttempt(attempt_id=attempt_id):
                        if attempt_id in scopes:
                            scopes.pop(attempt_id).cancel()
                    case CheckHealth(provider=spec):
                        tg.start_soon(health, spec)
                    case AdmitCircuit(provider=spec):
                        actions.extend(engine.handle(admit(spec)))
                    case FailedOver():
                        watch.failed_over(action)
                    case TargetSkipped():
                        watch.skipped(action)
                    case Backoff(until=until):
                        watch.backing_off(action, max(until - clock(), 0.0))
                flush_records()
            wake = engine.next_wakeup()
            event: Event | None = None
            with anyio.move_on_after(max((wake or math.inf) - clock(), 0.0)):
                event = await receive.receive()
            if event is not None:
                if isinstance(event, AttemptSucceeded | AttemptFailed):
                    scopes.pop(event.attempt_id, None)
                actions.extend(engine.handle(event))
                # Before any action: the breakers must know how the attempt ended before the
                # engine's next AdmitCircuit is answered.
                flush_records()
            elif wake is not None and clock() >= wake:
                # Only once the moment has really come: a Retry-After is never cut short.
                actions.extend(engine.handle(TimePassed(at=clock())))
    raise AssertionError("unreachable")  # pragma: no cover
