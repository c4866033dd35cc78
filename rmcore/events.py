"""What passes between the engine and the shell: events in, actions out, and how a run ended.

Events are what the shell observed (an attempt ended, time passed, a health check or a circuit
breaker answered); actions are what the engine asks of it (start or cancel an attempt, check,
ask, finish) and notices it may show (a fail-over, a backoff, a skipped target). All are frozen
values, so a run's whole conversation can be recorded, replayed and printed (``rmgr policy
simulate``).
"""

from __future__ import annotations

from rmcore.attempts import AttemptRecord
from rmcore.base import Base
from rmcore.completion import Completion, Usage
from rmcore.errors import ErrorKind, ProviderError
from rmcore.providers import ProviderSpec

__all__ = [
    "Action",
    "AdmitCircuit",
    "AttemptFailed",
    "AttemptHeld",
    "AttemptRefused",
    "AttemptSucceeded",
    "Backoff",
    "CancelAttempt",
    "CheckHealth",
    "CircuitAnswered",
    "Event",
    "FailedOver",
    "Finish",
    "HealthObserved",
    "ProviderAnswer",
    "RunOutcome",
    "SkippedTarget",
    "StartAttempt",
    "TargetSkipped",
    "TimePassed",
]


# --- events: what the shell observed ------------------------------------------------------------


class AttemptSucceeded(Base, frozen=True):
    """Attempt ``attempt_id`` produced a whole, valid answer at moment ``at``."""

    attempt_id: int
    at: float
    completion: Completion
    status: int | None = 200


class AttemptFailed(Base, frozen=True):
    """Attempt ``attempt_id`` ended without an answer at moment ``at``.

    ``usage`` is what the provider consumed anyway, when known (a stream cut half-way was
    billed): it is accounted in the run's cost.
    """

    attempt_id: int
    at: float
    error: ProviderError
    usage: Usage | None = None


class AttemptRefused(Base, frozen=True):
    """Attempt ``attempt_id`` was never sent: the shell could not reserve its share of a cap.

    A budget cap (``kind`` ``budget``) or a provider's quota (``quota``) of ``[budget]`` /
    ``[providers.NAME]`` is used up for its window, or the shared state that keeps the caps
    cannot be reached and the policy fails closed (``budget``). ``message`` says which and until
    when. The engine records no attempt for it and skips the target, as for an open circuit.
    """

    attempt_id: int
    at: float
    kind: ErrorKind
    message: str


class AttemptHeld(Base, frozen=True):
    """Attempt ``attempt_id`` is held back before its request is sent (``held``: the shell waits
    for one of the provider's concurrency slots), or is let go (``held=False``: its request is
    being handed to the HTTP transport now).

    An attempt cancelled while held never left the process, so it is no attempt: the engine
    records nothing for it and releases its budget reservation (as for ``AttemptRefused``, but
    its target is not skipped: it lost a race or a hedge, or the run ended). A shell that never
    holds attempts back never sends this event, and every started attempt counts as sent. The
    shell must feed it at once (not queued behind other events), so that the engine never takes
    a request that left for one that did not, or the other way round.
    """

    attempt_id: int
    at: float
    held: bool = True


class TimePassed(Base, frozen=True):
    """The clock reads ``at``: sent when ``next_wakeup()`` has come."""

    at: float


class HealthObserved(Base, frozen=True):
    """The answer to ``CheckHealth``: healthy or not, and why not."""

    provider: str
    at: float
    healthy: bool
    reason: str | None = None


class CircuitAnswered(Base, frozen=True):
    """The answer to ``AdmitCircuit``: ``allowed``, ``probe`` (this run is the one half-open
    probe) or ``refused`` (open; ``retry_in_s`` until it will be probed)."""

    provider: str
    at: float
    decision: str
    retry_in_s: float | None = None


Event = (
    AttemptSucceeded
    | AttemptFailed
    | AttemptRefused
    | AttemptHeld
    | TimePassed
    | HealthObserved
    | CircuitAnswered
)


# --- actions: what the shell must do ------------------------------------------------------------


class StartAttempt(Base, frozen=True):
    """Send the request to ``provider`` now.

    The shell must end the attempt after ``timeout_s`` at the latest and report it as
    ``timeout_kind`` (``timeout``, or ``deadline`` when the run's deadline is what binds); while
    streaming, it must also end it as ``first_token_timeout`` when no text arrived within
    ``first_token_timeout_s``, and as ``stream_stalled`` after ``idle_timeout_s`` of silence.
    ``exclusive`` is false when other attempts may run at the same time (races, hedges): the
    shell must then not stream this attempt's text to the user. When the plan has ``caps``, the
    shell first reserves the attempt's share of them (:func:`rmcore.quota.attempt_charges`); if
    it cannot, it sends nothing and answers ``AttemptRefused``.
    """

    attempt_id: int
    provider: ProviderSpec
    attempt_no: int
    timeout_s: float
    timeout_kind: ErrorKind
    first_token_timeout_s: float
    idle_timeout_s: float
    exclusive: bool = True


class CancelAttempt(Base, frozen=True):
    """Abandon attempt ``attempt_id`` at once (close its connection); it is already recorded as
    ``reason`` and no event for it is expected any more."""

    attempt_id: int
    reason: ErrorKind


class CheckHealth(Base, frozen=True):
    """Check ``provider``'s health, then send ``HealthObserved``."""

    provider: ProviderSpec


class AdmitCircuit(Base, frozen=True):
    """Ask ``provider``'s circuit breaker whether a request may go, then send ``CircuitAnswered``."""

    provider: ProviderSpec


class FailedOver(Base, frozen=True):
    """A notice: the run left ``from_provider`` for ``to_provider`` because of ``error``."""

    from_provider: str
    to_provider: str
    error: ProviderError
    primary: bool


class Backoff(Base, frozen=True):
    """A notice: ``provider`` failed and is retried at moment ``until``."""

    provider: str
    until: float
    reason: str


class SkippedTarget(Base, frozen=True):
    """A target that was passed over without sending it a request, and why."""

    provider: str
    kind: ErrorKind
    message: str


class TargetSkipped(Base, frozen=True):
    """A notice: ``skipped`` was passed over unsent (budget, quota, health, circuit, retry budget)."""

    skipped: SkippedTarget


class ProviderAnswer(Base, frozen=True):
    """One provider's whole answer."""

    provider: str
    model: str
    completion: Completion


class RunOutcome(Base, frozen=True):
    """How a run ended: the answer (or the reason there is none) and everything it cost.

    ``answers`` holds every answer received (one, except for ``compare`` routes);
    ``completion`` is the winning one. ``cost_usd`` is the sum of the attempts' costs, failed
    and cancelled ones included.
    """

    completion: Completion | None
    provider: str | None
    model: str | None
    error: ProviderError | None
    attempts: tuple[AttemptRecord, ...]
    skipped: tuple[SkippedTarget, ...]
    cost_usd: float
    fallback_used: bool
    answers: tuple[ProviderAnswer, ...] = ()

    @property
    def ok(self) -> bool:
        """True when the run produced an answer."""
        return self.completion is not None


class Finish(Base, frozen=True):
    """The run is over; the shell must cancel whatever still runs and expect nothing more."""

    outcome: RunOutcome


Action = (
    StartAttempt | CancelAttempt | CheckHealth | AdmitCircuit | FailedOver | Backoff | TargetSkipped | Finish
)
