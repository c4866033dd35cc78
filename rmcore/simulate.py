"""The engine on a virtual clock, against simulated providers.

``simulate`` drives ``rmcore.engine.Engine`` exactly as the shell does, but instead of sending
HTTP requests it looks up what each simulated provider does (answer after some seconds, fail
with some error kind, hang) and advances a virtual clock. It enforces the attempt timeouts the
engine hands out the way the shell does, so the decision trace it returns is what a real run
would do against providers that behave like that. ``rmgr policy simulate`` prints the trace;
the property tests check the engine's invariants on it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rmcore.base import Base
from rmcore.completion import Completion, Usage
from rmcore.engine import (
    Action,
    AttemptFailed,
    AttemptSucceeded,
    CheckHealth,
    Engine,
    Event,
    FailedOver,
    Finish,
    HealthObserved,
    RunOutcome,
    StartAttempt,
    TargetSkipped,
    TimePassed,
    Wait,
)
from rmcore.errors import ErrorKind, ProviderError
from rmcore.plan import RunPlan
from rmcore.pricing import estimate_prompt_tokens
from rmcore.requests import ChatRequest

__all__ = ["SimProvider", "SimReply", "SimStep", "Simulation", "describe", "simulate"]

_STEP_LIMIT = 100_000


class SimReply(Base, frozen=True):
    """What a simulated provider does with one request.

    It answers (``kind`` None) or fails with ``kind`` after ``latency_s`` seconds; ``latency_s``
    of None means it never answers (the attempt ends on its timeout). ``output_tokens`` of None
    means the reply uses all of ``max_tokens``.
    """

    latency_s: float | None = 0.5
    kind: ErrorKind | None = None
    status: int | None = None
    retry_after_s: float | None = None
    output_tokens: int | None = None


class SimProvider(Base, frozen=True):
    """A simulated provider: its replies in order (the last repeats forever) and its health."""

    replies: tuple[SimReply, ...] = (SimReply(),)
    healthy: bool = True


class SimStep(Base, frozen=True):
    """One entry of the decision trace: at virtual moment ``at``, the engine asked for ``action``
    or was told ``event``."""

    at: float
    action: Action | None = None
    event: Event | None = None


class Simulation(Base, frozen=True):
    """The whole simulated run: its outcome, every step, and how long it took."""

    outcome: RunOutcome
    steps: tuple[SimStep, ...]
    elapsed_s: float
    calls: Mapping[str, int]


def _reply_event(action: StartAttempt, reply: SimReply, request: ChatRequest, now: float) -> Event:
    """What the shell would observe from ``reply`` under ``action``'s timeouts."""
    provider = action.provider
    if reply.latency_s is None or reply.latency_s >= action.timeout_s:
        kind = action.timeout_kind
        return AttemptFailed(
            attempt_id=action.attempt_id,
            at=now + action.timeout_s,
            error=ProviderError(kind=kind, message=f"no answer within {action.timeout_s:g} s"),
        )
    at = now + reply.latency_s
    if reply.kind is not None:
        return AttemptFailed(
            attempt_id=action.attempt_id,
            at=at,
            error=ProviderError(
                kind=reply.kind,
                message=f"simulated {reply.kind.value}",
                status=reply.status,
                retry_after_s=reply.retry_after_s,
            ),
        )
    out = request.max_tokens if reply.output_tokens is None else min(reply.output_tokens, request.max_tokens)
    usage = Usage(input_tokens=estimate_prompt_tokens(request), output_tokens=out)
    return AttemptSucceeded(
        attempt_id=action.attempt_id,
        at=at,
        completion=Completion(
            content=f"simulated answer from {provider.name}", model=provider.model, usage=usage
        ),
        status=reply.status or 200,
    )


def simulate(
    plan: RunPlan,
    request: ChatRequest,
    providers: Mapping[str, SimProvider],
    *,
    seed: int = 0,
    spent_usd: float = 0.0,
) -> Simulation:
    """Run ``plan`` for ``request`` against ``providers`` (a provider not listed always answers
    after half a second) on a virtual clock starting at 0."""
    engine = Engine(plan, request, seed=seed, spent_usd=spent_usd)
    calls: dict[str, int] = {}
    steps: list[SimStep] = []
    now = 0.0
    pending: list[Action] = list(engine.start(now))
    while pending:
        if len(steps) > _STEP_LIMIT:
            raise RuntimeError("the simulation did not end")
        action = pending.pop(0)
        steps.append(SimStep(at=now, action=action))
        event: Event | None = None
        match action:
            case Finish(outcome=outcome):
                return Simulation(outcome=outcome, steps=tuple(steps), elapsed_s=now, calls=calls)
            case FailedOver() | TargetSkipped():
                continue
            case Wait(until=until):
                now = max(now, until)
                event = TimePassed(at=now)
            case CheckHealth(provider=spec):
                sim = providers.get(spec.name, SimProvider())
                event = HealthObserved(
                    provider=spec.name,
                    at=now,
                    healthy=sim.healthy,
                    reason=None if sim.healthy else "unreachable",
                )
            case StartAttempt(provider=spec):
                sim = providers.get(spec.name, SimProvider())
                n = calls.get(spec.name, 0)
                calls[spec.name] = n + 1
                reply = sim.replies[min(n, len(sim.replies) - 1)]
                event = _reply_event(action, reply, request, now)
                now = event.at
        assert event is not None
        steps.append(SimStep(at=now, event=event))
        pending.extend(engine.handle(event))
    raise RuntimeError("the engine stopped without finishing")


def describe(steps: Sequence[SimStep]) -> list[str]:
    """The trace as lines a person can follow: ``[  1.250s] what happened``."""
    lines: list[str] = []
    for step in steps:
        text = _describe_step(step)
        if text:
            lines.append(f"[{step.at:8.3f}s] {text}")
    return lines


def _describe_step(step: SimStep) -> str | None:
    match step.action:
        case StartAttempt(provider=p, attempt_no=n, timeout_s=t, timeout_kind=k):
            limit = "the deadline" if k is ErrorKind.DEADLINE else "the attempt timeout"
            return f"call {p.name} (attempt {n}), giving up after {t:g} s ({limit})"
        case Wait(until=until, reason=reason):
            return f"wait until {until:.3f}s: {reason}"
        case CheckHealth(provider=p):
            return f"check the health of {p.name}"
        case FailedOver(from_provider=a, to_provider=b, error=e):
            return f"leave {a} ({e.kind.value}) for {b}"
        case TargetSkipped(skipped=s):
            return f"skip {s.provider} ({s.kind.value}): {s.message}"
        case Finish(outcome=o):
            skipped = "".join(f"; skipped {s.provider}: {s.message}" for s in o.skipped)
            if o.ok:
                return f"answered by {o.provider}, cost ${o.cost_usd:.6f}{skipped}"
            assert o.error is not None
            return f"failed: {o.error.kind.value}: {o.error.message}, cost ${o.cost_usd:.6f}"
    match step.event:
        case AttemptSucceeded():
            return "  answer received"
        case AttemptFailed(error=e):
            extra = f", Retry-After {e.retry_after_s:g} s" if e.retry_after_s is not None else ""
            return f"  failed: {e.kind.value}{extra}"
        case HealthObserved(provider=name, healthy=h, reason=r):
            return f"  {name} is {'healthy' if h else 'unhealthy: ' + (r or '?')}"
    return None
