"""The engine on a virtual clock, against simulated providers.

``simulate`` drives ``rmcore.engine.Engine`` exactly as the shell does, but instead of sending
HTTP requests it looks up what each simulated provider does (answer after some seconds, fail
with some error kind, hang) and advances a virtual clock. It runs attempts concurrently where the
route does (races, hedges), enforces the attempt timeouts the engine hands out the way the shell
does, and keeps circuit breakers in memory with the same rules as the shell's store. So the
decision trace it returns is what a real run would do against providers that behave like that.
``rmgr policy simulate`` prints the trace; the property tests check the engine's invariants on it.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence

from rmcore.base import Base
from rmcore.breaker import CircuitState, admit, record
from rmcore.completion import Completion, Usage
from rmcore.engine import Engine
from rmcore.errors import ErrorKind, ProviderError
from rmcore.events import (
    Action,
    AdmitCircuit,
    AttemptFailed,
    AttemptRefused,
    AttemptSucceeded,
    Backoff,
    CancelAttempt,
    CheckHealth,
    CircuitAnswered,
    Event,
    FailedOver,
    Finish,
    HealthObserved,
    RunOutcome,
    StartAttempt,
    TargetSkipped,
    TimePassed,
)
from rmcore.plan import RunPlan, probe_timeout_s
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
    """The whole simulated run: its outcome, every step, how long it took, how many requests
    each provider received, and the circuit breakers afterwards."""

    outcome: RunOutcome
    steps: tuple[SimStep, ...]
    elapsed_s: float
    calls: Mapping[str, int]
    circuits: Mapping[str, CircuitState]


def _reply_event(action: StartAttempt, reply: SimReply, request: ChatRequest, now: float) -> Event:
    """What the shell would observe from ``reply`` under ``action``'s timeouts."""
    provider = action.provider
    if reply.latency_s is None or reply.latency_s >= action.timeout_s:
        return AttemptFailed(
            attempt_id=action.attempt_id,
            at=now + action.timeout_s,
            error=ProviderError(kind=action.timeout_kind, message=f"no answer within {action.timeout_s:g} s"),
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
    circuits: Mapping[str, CircuitState] | None = None,
    start_s: float = 0.0,
    calls_before: Mapping[str, int] | None = None,
) -> Simulation:
    """Run ``plan`` for ``request`` against ``providers`` (a provider not listed always answers
    after half a second) on a virtual clock starting at ``start_s``.

    ``circuits`` are the breakers' states before the run (all closed when absent); the result
    carries them after. ``calls_before`` counts earlier requests per provider, so that a sequence
    of runs walks through each provider's replies (a provider that fails three times, then heals).
    """
    engine = Engine(plan, request, seed=seed, spent_usd=spent_usd, epoch_s=start_s)
    book = dict(circuits or {})
    calls: dict[str, int] = {}
    served = dict(calls_before or {})
    steps: list[SimStep] = []
    inflight: list[tuple[float, int, Event]] = []  # (at, attempt id, event): a heap
    cancelled: set[int] = set()
    now = start_s
    pending: list[Action] = list(engine.start(now))
    probe_timeout = probe_timeout_s(plan)
    while True:
        if len(steps) > _STEP_LIMIT:
            raise RuntimeError("the simulation did not end")
        while pending:
            action = pending.pop(0)
            steps.append(SimStep(at=now, action=action))
            event: Event | None = None
            match action:
                case Finish(outcome=outcome):
                    return Simulation(
                        outcome=outcome,
                        steps=tuple(steps),
                        elapsed_s=now - start_s,
                        calls=calls,
                        circuits=book,
                    )
                case FailedOver() | TargetSkipped() | Backoff():
                    continue
                case CancelAttempt(attempt_id=attempt_id):
                    cancelled.add(attempt_id)
                    continue
                case CheckHealth(provider=spec):
                    sim = providers.get(spec.name, SimProvider())
                    event = HealthObserved(
                        provider=spec.name,
                        at=now,
                        healthy=sim.healthy,
                        reason=None if sim.healthy else "unreachable",
                    )
                case AdmitCircuit(provider=spec):
                    state = book.get(spec.name, CircuitState(provider=spec.name))
                    admission = admit(
                        state, now, cooldown_s=plan.breaker.cooldown_s, probe_timeout_s=probe_timeout
                    )
                    book[spec.name] = admission.state
                    event = CircuitAnswered(
                        provider=spec.name,
                        at=now,
                        decision=admission.decision,
                        retry_in_s=None if admission.retry_at is None else max(admission.retry_at - now, 0.0),
                    )
                case StartAttempt(provider=spec):
                    sim = providers.get(spec.name, SimProvider())
                    n = served.get(spec.name, 0)
                    served[spec.name] = n + 1
                    calls[spec.name] = calls.get(spec.name, 0) + 1
                    reply = sim.replies[min(n, len(sim.replies) - 1)]
                    ended = _reply_event(action, reply, request, now)
                    heapq.heappush(inflight, (ended.at, action.attempt_id, ended))
                    continue
            assert event is not None
            steps.append(SimStep(at=now, event=event))
            pending.extend(engine.handle(event))
        while inflight and inflight[0][1] in cancelled:
            heapq.heappop(inflight)
        wake = engine.next_wakeup()
        if inflight and (wake is None or inflight[0][0] <= wake):
            at, attempt_id, ended = heapq.heappop(inflight)
            now = max(now, at)
            steps.append(SimStep(at=now, event=ended))
            provider = _provider_of(steps, attempt_id)
            if plan.breaker.enabled and provider is not None:
                outcome_kind = ended.error.kind.value if isinstance(ended, AttemptFailed) else "ok"
                state = book.get(provider, CircuitState(provider=provider))
                book[provider] = record(
                    state, outcome_kind, now, failure_threshold=plan.breaker.failure_threshold
                )
            pending.extend(engine.handle(ended))
        elif wake is not None:
            now = max(now, wake)
            tick = TimePassed(at=now)
            steps.append(SimStep(at=now, event=tick))
            pending.extend(engine.handle(tick))
        else:
            raise RuntimeError("the engine stopped without finishing")


def _provider_of(steps: Sequence[SimStep], attempt_id: int) -> str | None:
    for step in reversed(steps):
        if isinstance(step.action, StartAttempt) and step.action.attempt_id == attempt_id:
            return step.action.provider.name
    return None


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
        case Backoff(until=until, reason=reason):
            return f"{reason} at {until:.3f}s"
        case CancelAttempt(attempt_id=i, reason=r):
            return f"cancel attempt {i} ({'lost the race' if r is ErrorKind.CANCELLED else r.value})"
        case CheckHealth(provider=p):
            return f"check the health of {p.name}"
        case AdmitCircuit(provider=p):
            return f"ask the circuit breaker of {p.name}"
        case FailedOver(from_provider=a, to_provider=b, error=e):
            return f"leave {a} ({e.kind.value}) for {b}"
        case TargetSkipped(skipped=s):
            return f"skip {s.provider} ({s.kind.value}): {s.message}"
        case Finish(outcome=o):
            if o.ok:
                extra = f", {len(o.answers)} answers" if len(o.answers) > 1 else ""
                return f"answered by {o.provider}{extra}, cost ${o.cost_usd:.6f}"
            assert o.error is not None
            return f"failed: {o.error.kind.value}: {o.error.message}, cost ${o.cost_usd:.6f}"
    match step.event:
        case AttemptSucceeded(attempt_id=i):
            return f"  attempt {i}: answer received"
        case AttemptFailed(attempt_id=i, error=e):
            extra = f", Retry-After {e.retry_after_s:g} s" if e.retry_after_s is not None else ""
            return f"  attempt {i}: failed: {e.kind.value}{extra}"
        case AttemptRefused(attempt_id=i, kind=k, message=why):
            return f"  attempt {i}: not sent ({k.value}): {why}"
        case HealthObserved(provider=name, healthy=h, reason=why):
            return f"  {name} is {'healthy' if h else 'unhealthy: ' + (why or '?')}"
        case CircuitAnswered(provider=name, decision=d):
            return f"  {name}'s circuit: {d}"
    return None
