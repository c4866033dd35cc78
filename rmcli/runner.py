"""Drive the engine over real HTTP: perform its actions, feed it what happened, record every attempt."""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable

import anyio
import httpx
import msgspec

from rmcli.health import HEALTH_TIMEOUT_S, check_health
from rmcli.transport import TextSink, perform_attempt
from rmcore.attempts import AttemptRecord
from rmcore.engine import (
    Action,
    AttemptFailed,
    CheckHealth,
    Engine,
    FailedOver,
    Finish,
    HealthObserved,
    RunOutcome,
    StartAttempt,
    TargetSkipped,
    TimePassed,
    Wait,
)
from rmcore.plan import RunPlan
from rmcore.providers import ProviderSpec
from rmcore.requests import ChatRequest

__all__ = ["Observer", "route"]


class Observer:
    """Hooks the commands use to show progress; every method is optional to override."""

    def attempt_started(self, action: StartAttempt) -> None:
        """An attempt is about to be sent."""

    def failed_over(self, notice: FailedOver) -> None:
        """The run left one provider for the next."""

    def attempt_recorded(self, record: AttemptRecord) -> None:
        """An attempt ended (recorded in the store by the caller's hook)."""

    def waiting(self, wait: Wait, seconds: float) -> None:
        """The run is backing off before a retry."""

    def skipped(self, notice: TargetSkipped) -> None:
        """A target was passed over without a request (budget, health, circuit)."""


async def route(
    plan: RunPlan,
    request: ChatRequest,
    *,
    client: httpx.AsyncClient,
    keys: Callable[[ProviderSpec], str | None],
    observer: Observer | None = None,
    on_text: TextSink | None = None,
    clock: Callable[[], float] = time.monotonic,
    seed: int | None = None,
    spent_usd: float = 0.0,
) -> RunOutcome:
    """Route ``request`` by ``plan`` and return how it ended. Never raises for a provider's fault."""
    watch = observer or Observer()
    engine = Engine(
        plan,
        request,
        seed=random.getrandbits(63) if seed is None else seed,
        epoch_s=time.time(),
        spent_usd=spent_usd,
    )
    actions: deque[Action] = deque(engine.start(clock()))
    recorded = 0

    def flush_records() -> None:
        nonlocal recorded
        for record in engine.attempts[recorded:]:
            watch.attempt_recorded(record)
        recorded = len(engine.attempts)

    while actions:
        action = actions.popleft()
        match action:
            case Finish(outcome=outcome):
                flush_records()
                return outcome
            case FailedOver():
                watch.failed_over(action)
            case TargetSkipped():
                watch.skipped(action)
            case Wait(until=until):
                watch.waiting(action, max(until - clock(), 0.0))
                # Sleep until the moment has really come: a Retry-After is never cut short.
                while (left := until - clock()) > 0:
                    await anyio.sleep(left)
                actions.extend(engine.handle(TimePassed(at=clock())))
            case CheckHealth(provider=spec):
                budget = min(HEALTH_TIMEOUT_S, max(engine.deadline - clock(), 0.0))
                report = await check_health(client, spec, keys(spec), budget, clock)
                actions.extend(
                    engine.handle(
                        HealthObserved(
                            provider=spec.name, at=clock(), healthy=report.healthy, reason=report.reason
                        )
                    )
                )
            case StartAttempt(provider=spec):
                watch.attempt_started(action)
                key = keys(spec)
                event = await perform_attempt(client, action, request, key, clock, on_text)
                if isinstance(event, AttemptFailed) and key and key in event.error.message:
                    # A provider may quote the key it was sent ("Incorrect API key provided: ...").
                    error = msgspec.structs.replace(
                        event.error, message=event.error.message.replace(key, "<redacted>")
                    )
                    event = msgspec.structs.replace(event, error=error)
                actions.extend(engine.handle(event))
                flush_records()
    raise RuntimeError("the engine stopped without finishing")
