"""The fail-over engine: a pure state machine that decides, the shell does.

The shell feeds the engine events (an attempt succeeded or failed, time passed, a health check
answered) and performs the actions it answers with (start an attempt with these timeouts, wait
until a moment, check a provider's health, finish). The engine never reads a clock, never sleeps
and never draws a random number of its own: every event carries the moment it happened (any
monotonic clock, in seconds), and backoff jitter comes from a generator seeded by the caller. So
the same engine runs over real HTTP in the shell, on a virtual clock in ``rmcore.simulate``, and
under hypothesis in the tests.

The conduct it implements (DESIGN §4, the ``sequential`` strategy):

- targets are tried in order; each target gets up to ``max_attempts`` attempts;
- a failure whose kind is in ``retry.on`` is retried on the same target after a full-jitter
  backoff, never sooner than the provider's Retry-After; a kind in ``retry.stop_on`` ends the run
  with the provider's reason; any other kind fails over to the next target at once;
- no attempt is started, and no wait is begun, that would end past the run's deadline: every
  attempt's timeout is capped by the time left, and a retry whose wait would cross the deadline
  fails over instead;
- no attempt is started whose worst-case cost (prompt estimate plus ``max_tokens`` at the
  provider's prices) exceeds what is left of the budget; the real cost is settled when it ends;
- with ``check_before_use``, each target's health is checked once before its first attempt and
  an unhealthy target is skipped.
"""

from __future__ import annotations

import enum
import random

from rmcore.attempts import AttemptRecord
from rmcore.backoff import backoff_s
from rmcore.base import Base
from rmcore.completion import Completion, Usage
from rmcore.errors import ErrorKind, ProviderError
from rmcore.plan import RunPlan, TargetPlan
from rmcore.pricing import cost_usd, worst_case_usd
from rmcore.providers import ProviderSpec
from rmcore.requests import ChatRequest

__all__ = [
    "Action",
    "AttemptFailed",
    "AttemptSucceeded",
    "CheckHealth",
    "Engine",
    "Event",
    "FailedOver",
    "Finish",
    "HealthObserved",
    "RunOutcome",
    "SkippedTarget",
    "StartAttempt",
    "TargetSkipped",
    "TimePassed",
    "Wait",
]

# Budget comparisons tolerate float rounding of a few sums of prices.
_USD_EPSILON = 1e-12


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


class TimePassed(Base, frozen=True):
    """The clock reads ``at``: sent after a ``Wait`` ends."""

    at: float


class HealthObserved(Base, frozen=True):
    """The answer to a ``CheckHealth``: healthy or not, and why not."""

    provider: str
    at: float
    healthy: bool
    reason: str | None = None


Event = AttemptSucceeded | AttemptFailed | TimePassed | HealthObserved


# --- actions: what the shell must do ------------------------------------------------------------


class StartAttempt(Base, frozen=True):
    """Send the request to ``provider`` now.

    The shell must end the attempt after ``timeout_s`` at the latest and report it as
    ``timeout_kind`` (``timeout``, or ``deadline`` when the run's deadline is what binds); while
    streaming, it must also end it as ``first_token_timeout`` when no text arrived within
    ``first_token_timeout_s``, and as ``stream_stalled`` after ``idle_timeout_s`` of silence.
    """

    attempt_id: int
    provider: ProviderSpec
    attempt_no: int
    timeout_s: float
    timeout_kind: ErrorKind
    first_token_timeout_s: float
    idle_timeout_s: float


class Wait(Base, frozen=True):
    """Do nothing until moment ``until``, then send ``TimePassed``."""

    until: float
    reason: str


class CheckHealth(Base, frozen=True):
    """Check ``provider``'s health, then send ``HealthObserved``."""

    provider: ProviderSpec


class FailedOver(Base, frozen=True):
    """A notice, not a task: the run left ``from_provider`` for ``to_provider`` because of ``error``."""

    from_provider: str
    to_provider: str
    error: ProviderError
    primary: bool


class SkippedTarget(Base, frozen=True):
    """A target that was passed over without sending it a request, and why."""

    provider: str
    kind: ErrorKind
    message: str


class TargetSkipped(Base, frozen=True):
    """A notice, not a task: ``skipped`` was passed over unsent (budget, health, circuit)."""

    skipped: SkippedTarget


class RunOutcome(Base, frozen=True):
    """How a run ended: the answer (or the reason there is none) and everything it cost.

    ``cost_usd`` is the sum of the attempts' costs, failed ones included.
    """

    completion: Completion | None
    provider: str | None
    model: str | None
    error: ProviderError | None
    attempts: tuple[AttemptRecord, ...]
    skipped: tuple[SkippedTarget, ...]
    cost_usd: float
    fallback_used: bool

    @property
    def ok(self) -> bool:
        """True when the run produced an answer."""
        return self.completion is not None


class Finish(Base, frozen=True):
    """The run is over; nothing more will be asked of the shell."""

    outcome: RunOutcome


Action = StartAttempt | Wait | CheckHealth | FailedOver | TargetSkipped | Finish


class _Phase(enum.Enum):
    IDLE = "idle"
    ATTEMPTING = "attempting"
    WAITING = "waiting"
    CHECKING = "checking"
    DONE = "done"


class Engine:
    """Sequential fail-over for one request. Call ``start`` once, then ``handle`` each event
    until an action is ``Finish``."""

    def __init__(
        self,
        plan: RunPlan,
        request: ChatRequest,
        *,
        seed: int,
        epoch_s: float = 0.0,
        spent_usd: float = 0.0,
    ) -> None:
        """``epoch_s`` is the wall-clock time (Unix seconds) of the moment passed to ``start``:
        it dates the attempt records. ``spent_usd`` is what was spent of ``plan.limits.max_usd``
        before this run (a budget shared by several requests)."""
        if not plan.targets:
            raise ValueError("a run plan needs at least one target")
        self._plan = plan
        self._request = request
        self._rng = random.Random(seed)
        self._epoch_s = epoch_s
        self._spent = spent_usd
        self._phase = _Phase.IDLE
        self._start_at = 0.0
        self._deadline = 0.0
        self._index = 0
        self._tries = 0
        self._next_id = 0
        self._attempt: tuple[int, TargetPlan, float] | None = None
        self._health: dict[str, HealthObserved] = {}
        self._attempts: list[AttemptRecord] = []
        self._skipped: list[SkippedTarget] = []
        self._last_error: ProviderError | None = None
        self._notices: list[Action] = []

    # -- public --------------------------------------------------------------------------------

    @property
    def deadline(self) -> float:
        """The moment the run must be over by."""
        return self._deadline

    @property
    def attempts(self) -> tuple[AttemptRecord, ...]:
        """Every attempt that has ended so far, in order."""
        return tuple(self._attempts)

    @property
    def spent_usd(self) -> float:
        """What the run has cost so far (settled attempts)."""
        return sum(a.cost_usd for a in self._attempts)

    def start(self, now: float) -> list[Action]:
        """Begin the run at moment ``now``."""
        if self._phase is not _Phase.IDLE or self._next_id:
            raise RuntimeError("the run has already started")
        self._start_at = now
        self._deadline = now + self._plan.limits.deadline_s
        return self._advance(now)

    def handle(self, event: Event) -> list[Action]:
        """Take one observation and answer with what to do next."""
        match event:
            case AttemptSucceeded():
                return self._succeeded(event)
            case AttemptFailed():
                return self._failed(event)
            case TimePassed(at=at):
                if self._phase is not _Phase.WAITING:
                    raise RuntimeError("TimePassed without a Wait")
                self._phase = _Phase.IDLE
                return self._advance(at)
            case HealthObserved():
                if self._phase is not _Phase.CHECKING:
                    raise RuntimeError("HealthObserved without a CheckHealth")
                self._health[event.provider] = event
                self._phase = _Phase.IDLE
                return self._advance(event.at)

    # -- transitions ---------------------------------------------------------------------------

    def _advance(self, now: float) -> list[Action]:
        """Start the next attempt on the current target, or move along the route, or finish;
        notices of targets skipped on the way come first."""
        actions = self._next_step(now)
        notices, self._notices = self._notices, []
        return notices + actions

    def _next_step(self, now: float) -> list[Action]:
        targets = self._plan.targets
        while self._index < len(targets):
            target = targets[self._index]
            name = target.provider.name
            if now >= self._deadline:
                return self._finish_failure(self._deadline_error())
            if self._plan.check_before_use and self._tries == 0:
                seen = self._health.get(name)
                if seen is None:
                    self._phase = _Phase.CHECKING
                    return [CheckHealth(provider=target.provider)]
                if not seen.healthy:
                    self._skip(
                        name, ErrorKind.UNHEALTHY, f"health check failed: {seen.reason or 'unhealthy'}"
                    )
                    continue
            worst = worst_case_usd(self._request, target.provider)
            left = self._plan.limits.max_usd - self._spent - self.spent_usd
            if worst > left + _USD_EPSILON:
                self._skip(
                    name,
                    ErrorKind.BUDGET,
                    f"worst case ${worst:.6f} exceeds the ${max(left, 0.0):.6f} left of the "
                    f"${self._plan.limits.max_usd:.6f} budget",
                )
                continue
            return [self._start_attempt(target, now)]
        return self._finish_failure(self._exhausted_error())

    def _start_attempt(self, target: TargetPlan, now: float) -> StartAttempt:
        self._tries += 1
        self._next_id += 1
        self._attempt = (self._next_id, target, now)
        self._phase = _Phase.ATTEMPTING
        left = self._deadline - now
        timeout, kind = (
            (target.attempt_timeout_s, ErrorKind.TIMEOUT)
            if target.attempt_timeout_s < left
            else (left, ErrorKind.DEADLINE)
        )
        return StartAttempt(
            attempt_id=self._next_id,
            provider=target.provider,
            attempt_no=self._tries,
            timeout_s=timeout,
            timeout_kind=kind,
            first_token_timeout_s=min(target.first_token_timeout_s, timeout),
            idle_timeout_s=min(target.idle_timeout_s, timeout),
        )

    def _take_attempt(self, attempt_id: int) -> tuple[TargetPlan, float]:
        if self._phase is not _Phase.ATTEMPTING or self._attempt is None:
            raise RuntimeError("an attempt ended while none was running")
        expected, target, started = self._attempt
        if attempt_id != expected:
            raise RuntimeError(f"attempt {attempt_id} is not the running attempt {expected}")
        self._attempt = None
        self._phase = _Phase.IDLE
        return target, started

    def _record(
        self,
        target: TargetPlan,
        started: float,
        at: float,
        outcome: str,
        usage: Usage,
        status: int | None,
        message: str | None,
        model: str | None = None,
    ) -> None:
        self._attempts.append(
            AttemptRecord(
                provider=target.provider.name,
                model=model or target.provider.model,
                outcome=outcome,
                status=status,
                latency_ms=max(at - started, 0.0) * 1000.0,
                started_at_ms=round((self._epoch_s + started - self._start_at) * 1000.0),
                usage=usage,
                cost_usd=cost_usd(usage, target.provider),
                message=message,
            )
        )

    def _succeeded(self, event: AttemptSucceeded) -> list[Action]:
        target, started = self._take_attempt(event.attempt_id)
        c = event.completion
        self._record(target, started, event.at, "ok", c.usage, event.status, None, c.model)
        self._phase = _Phase.DONE
        return [
            Finish(
                outcome=self._outcome(completion=c, provider=target.provider.name, model=c.model, error=None)
            )
        ]

    def _failed(self, event: AttemptFailed) -> list[Action]:
        target, started = self._take_attempt(event.attempt_id)
        error = event.error
        self._record(
            target, started, event.at, error.kind.value, event.usage or Usage(), error.status, error.message
        )
        self._last_error = error
        retry = self._plan.retry
        if error.kind in retry.stop_on:
            return self._finish_failure(error)
        if error.kind is ErrorKind.DEADLINE or event.at >= self._deadline:
            return self._finish_failure(self._deadline_error())
        if error.kind in retry.on and self._tries < target.max_attempts:
            wait = backoff_s(
                self._tries,
                initial_s=retry.backoff_initial_s,
                max_s=retry.backoff_max_s,
                jitter=self._rng.random(),
                retry_after_s=error.retry_after_s,
            )
            until = event.at + wait
            if until < self._deadline:
                self._phase = _Phase.WAITING
                return [
                    Wait(
                        until=until,
                        reason=(
                            f"{target.provider.name} failed ({error.kind.value}); attempt "
                            f"{self._tries + 1} of {target.max_attempts}"
                        ),
                    )
                ]
        return self._fail_over(target, error, event.at)

    def _fail_over(self, target: TargetPlan, error: ProviderError, now: float) -> list[Action]:
        self._index += 1
        self._tries = 0
        actions: list[Action] = []
        if self._index < len(self._plan.targets):
            actions.append(
                FailedOver(
                    from_provider=target.provider.name,
                    to_provider=self._plan.targets[self._index].provider.name,
                    error=error,
                    primary=self._index == 1,
                )
            )
        return actions + self._advance(now)

    def _skip(self, name: str, kind: ErrorKind, message: str) -> None:
        skipped = SkippedTarget(provider=name, kind=kind, message=message)
        self._skipped.append(skipped)
        self._notices.append(TargetSkipped(skipped=skipped))
        self._index += 1
        self._tries = 0

    # -- endings -------------------------------------------------------------------------------

    def _deadline_error(self) -> ProviderError:
        return ProviderError(
            kind=ErrorKind.DEADLINE,
            message=f"the run's deadline of {self._plan.limits.deadline_s:g} s was reached",
        )

    def _exhausted_error(self) -> ProviderError:
        if self._last_error is not None and not self._skipped:
            return self._last_error
        reasons = [f"{a.provider}: {a.outcome}" for a in self._attempts]
        reasons += [f"{s.provider}: {s.kind.value} ({s.message})" for s in self._skipped]
        kind = self._last_error.kind if self._last_error is not None else self._skipped[-1].kind
        return ProviderError(kind=kind, message="every target failed: " + "; ".join(reasons))

    def _finish_failure(self, error: ProviderError) -> list[Action]:
        self._phase = _Phase.DONE
        return [Finish(outcome=self._outcome(completion=None, provider=None, model=None, error=error))]

    def _outcome(
        self,
        *,
        completion: Completion | None,
        provider: str | None,
        model: str | None,
        error: ProviderError | None,
    ) -> RunOutcome:
        first = self._plan.targets[0].provider.name
        return RunOutcome(
            completion=completion,
            provider=provider,
            model=model,
            error=error,
            attempts=tuple(self._attempts),
            skipped=tuple(self._skipped),
            cost_usd=self.spent_usd,
            fallback_used=provider is not None and provider != first,
        )
