"""The fail-over engine: a pure state machine that decides, the shell does.

The shell feeds the engine events (an attempt succeeded or failed, time passed, a health check or
a circuit breaker answered) and performs the actions it answers with (start an attempt with these
timeouts, cancel one, check a provider's health, ask its circuit breaker, finish). The engine
never reads a clock, never sleeps and never draws a random number of its own: every event carries
the moment it happened (any monotonic clock, in seconds), jitter and weighted choices come from a
generator seeded by the caller, and when it needs to be woken it says so through
``next_wakeup()``. So the same engine runs over real HTTP in the shell, on a virtual clock in
``rmcore.simulate``, and under hypothesis in the tests.

A route is a tree. Its leaves are providers (``_TargetRun``: retries, backoff, budget, breaker
and health checks for one provider); its inner nodes are strategies that only decide which child
runs when. What each strategy is (one child at a time or all at once, in what order, whether
every answer is kept) and what each error kind calls for (retry, fail over, stop, count against
the breaker) are facts of :mod:`rmcore.conduct`'s tables; this module is the mechanism:

- ``Concurrency.ONE`` (``_Ordered``: sequential, cheapest, weighted): one child at a time, in the
  strategy's ``Order`` (as written, by worst-case cost, or a weighted random draw); the next
  child when one fails for good;
- ``Concurrency.ALL`` (``_Race``: fastest, compare): every child at once; the first answer wins
  and the others are cancelled, unless the strategy keeps every answer (compare);
- ``Concurrency.HEDGED`` (``_Hedged``): the first child; the next also starts when the running
  ones have not answered within ``hedge_after_s`` (or at once when one fails); the first answer
  wins.

Rules that hold for the whole run, whatever the strategy (DESIGN §4):

- a failure whose kind is in ``retry.on`` is retried on the same target after a full-jitter
  backoff, never sooner than the provider's Retry-After, and only while the run's retry budget
  (a share of its first attempts) lasts; a kind in ``retry.stop_on`` ends the run;
- no attempt runs and no wait is begun past the run's deadline: attempt timeouts are capped by
  the time left, and at the deadline every running attempt is cancelled;
- no attempt starts whose worst-case cost (prompt estimate plus ``max_tokens`` at the provider's
  prices), added to what was spent and what running attempts may still cost, exceeds the budget;
- a target whose attempt does not fit the budget *now*, but would once the attempts running
  beside it (this run's own, in a race or a hedge, or other runs' sharing its ``Ledger``: the
  perspectives of an analysis) settled, waits for room instead of being skipped: worst cases are
  far above what attempts usually cost. It holds nothing while it waits (``waiting_for_budget``)
  and looks again whenever the ledger's ``version`` has moved: at once when this run settled an
  attempt, and on the next event otherwise, so the shell feeds ``TimePassed`` when another run
  sharing the ledger settled one. It is skipped with ``budget`` only when it could not fit even
  if every running attempt settled at no cost (``Ledger.left_at_best``), and the deadline ends
  the wait like any other. A run with nothing running beside it therefore skips at once, as a
  single ``ask`` always did. A race (fastest, compare) starts what fits and holds the rest until
  room is made or the race is decided; a hedge is not started while every running target of its
  route waits for room, and its delay restarts when one of them gets its request out;
- an attempt the shell could not reserve a cap's share for (``AttemptRefused``: a daily or
  monthly budget or a provider's quota is used up, or the shared state is down and the policy
  fails closed) was never sent: it is not recorded, and its target is skipped like one whose
  circuit is open;
- a target that cannot carry what the request needs (tools, images, a JSON answer:
  ``rmcore.capabilities``) is skipped with ``unsupported`` before anything else is asked of it,
  and nothing is sent to it;
- a provider whose circuit is open is skipped without a request; a half-open one gets one probe;
  once an attempt of a provider failed in a way that counts against it, its breaker is asked
  again before another target of that provider (it may appear several times in a tree) starts.
"""

from __future__ import annotations

import abc
import enum
import math
import random
import weakref
from collections.abc import Callable

from rmcore.attempts import AttemptRecord
from rmcore.backoff import backoff_s
from rmcore.budget import Ledger
from rmcore.capabilities import in_words, missing, needs
from rmcore.completion import Usage
from rmcore.conduct import CONDUCT, STRATEGIES, Concurrency, Order
from rmcore.errors import ErrorKind, ProviderError
from rmcore.events import (
    Action,
    AdmitCircuit,
    AttemptFailed,
    AttemptHeld,
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
    ProviderAnswer,
    RunOutcome,
    SkippedTarget,
    StartAttempt,
    TargetSkipped,
    TimePassed,
)
from rmcore.plan import RoutePlan, RunPlan, TargetPlan, first_leaf
from rmcore.pricing import cost_usd, estimate_prompt_tokens
from rmcore.requests import ChatRequest

__all__ = ["Engine"]

# Budget comparisons tolerate float rounding of a few sums of prices.
_USD_EPSILON = 1e-12


# --- the route tree -----------------------------------------------------------------------------


class _Status(enum.Enum):
    IDLE = "idle"
    RUNNING = "running"
    OK = "ok"
    FAILED = "failed"
    CANCELLED = "cancelled"


class _Node(abc.ABC):
    """A node of the running route tree; its parent is told when it ends.

    A node holds its engine and its parent by weak reference: the engine owns the tree, top
    down, and the tree holds no cycle, so a finished run is freed by reference counting at once
    rather than left to the cyclic garbage collector (whose passes cost a routed call more than
    the engine's own work)."""

    def __init__(self, engine: Engine, parent: _Composite | None) -> None:
        self._engine = weakref.ref(engine)
        self._parent = None if parent is None else weakref.ref(parent)
        self.status = _Status.IDLE
        self.error: ProviderError | None = None
        self.failed_provider: str | None = None
        """The provider whose failure ``error`` is (for a route, the one it took its error from)."""
        self.wake_at: float | None = None

    @property
    def engine(self) -> Engine:
        """The engine running this node (it outlives its nodes: they are its)."""
        engine = self._engine()
        assert engine is not None
        return engine

    @property
    def parent(self) -> _Composite | None:
        """The route this node is a child of; None for the top one."""
        return None if self._parent is None else self._parent()

    @property
    def done(self) -> bool:
        return self.status in (_Status.OK, _Status.FAILED, _Status.CANCELLED)

    @abc.abstractmethod
    def first_provider(self) -> str:
        """The provider this node tries first (named in fail-over notices)."""

    @abc.abstractmethod
    def start(self, now: float) -> None:
        """Begin at moment ``now``."""

    @abc.abstractmethod
    def cancel(self, now: float) -> None:
        """Stop at once, cancelling whatever runs below."""

    @abc.abstractmethod
    def worst_case(self) -> float:
        """The least worst-case cost of a request through this node."""

    @abc.abstractmethod
    def budget_waiting(self) -> bool:
        """True when this node runs, yet nothing below it is under way but waits for room in
        the budget (no request in flight, no backoff, no check pending)."""

    def _end(self, status: _Status, now: float, error: ProviderError | None = None) -> None:
        self.status = status
        self.error = error
        if self.parent is not None:
            self.parent.child_ended(self, now)
        else:
            self.engine.root_ended(now)


class _TargetRun(_Node):
    """One provider: its attempts, retries and backoff, and the checks before each attempt."""

    def __init__(self, engine: Engine, parent: _Composite | None, target: TargetPlan) -> None:
        super().__init__(engine, parent)
        self.target = target
        self.name = target.provider.name
        self.failed_provider = self.name
        self.tries = 0
        self.attempt: int | None = None
        self.probe = False
        self.waits_for_budget = False
        """Its next attempt waits for room in the budget (``Engine.wait_for_budget``)."""
        self.waited_for_budget = False
        """It waited for room before the attempt it is about to start (or has started)."""
        self._worst: float | None = None

    def first_provider(self) -> str:
        return self.name

    def worst_case(self) -> float:
        if self._worst is None:  # the same for every attempt: the request and the price are fixed
            engine = self.engine
            worst = Usage(input_tokens=engine.prompt_tokens, output_tokens=engine.request.max_tokens)
            self._worst = cost_usd(worst, self.target.provider)
        return self._worst

    def budget_waiting(self) -> bool:
        return self.waits_for_budget and not self.done

    def start(self, now: float) -> None:
        self.status = _Status.RUNNING
        self.step(now)

    def step(self, now: float) -> None:
        """Take the next step towards an attempt: a check, a skip, or the attempt itself."""
        engine = self.engine
        if self.done:
            return
        if self.tries == 0:
            gate = engine.gate(self, now)
            if gate is not None:
                return
        worst = self.worst_case()
        left = engine.budget_left()
        if worst > left + _USD_EPSILON:
            if engine.room_may_come(worst):
                engine.wait_for_budget(self)
                return
            self.skip(
                ErrorKind.BUDGET,
                f"worst case ${worst:.6f} exceeds the ${max(left, 0.0):.6f} left of the "
                f"${engine.plan.limits.max_usd:.6f} budget",
                now,
            )
            return
        if self.tries >= 1 and not engine.take_retry():
            self.skip(ErrorKind.BUDGET, "the run's retry budget is spent", now, keep_error=True)
            return
        self.tries += 1
        self.attempt = engine.start_attempt(self, now)
        if self.waited_for_budget:
            self.waited_for_budget = False
            if self.parent is not None:
                self.parent.resumed(now)

    def skip(self, kind: ErrorKind, message: str, now: float, *, keep_error: bool = False) -> None:
        self.waits_for_budget = False
        self.engine.note_skip(SkippedTarget(provider=self.name, kind=kind, message=message))
        error = self.error if keep_error and self.error else ProviderError(kind=kind, message=message)
        self._end(_Status.FAILED, now, error)

    def attempt_ended(self, event: AttemptSucceeded | AttemptFailed) -> None:
        engine = self.engine
        self.attempt = None
        if isinstance(event, AttemptSucceeded):
            engine.answers.append(
                ProviderAnswer(provider=self.name, model=event.completion.model, completion=event.completion)
            )
            self._end(_Status.OK, event.at)
            return
        error = event.error
        self.error = error
        retry = engine.plan.retry
        if error.kind in retry.stop_on:
            engine.stop(error, event.at)
            return
        if error.kind in retry.on and self.tries < self.target.max_attempts and not self.probe:
            wait = backoff_s(
                self.tries,
                initial_s=retry.backoff_initial_s,
                max_s=retry.backoff_max_s,
                jitter=engine.rng.random(),
                retry_after_s=error.retry_after_s,
            )
            until = event.at + wait
            if until < engine.deadline:
                self.wake_at = until
                engine.emit(
                    Backoff(
                        provider=self.name,
                        until=until,
                        reason=(
                            f"{self.name} failed ({error.kind.value}); attempt "
                            f"{self.tries + 1} of {self.target.max_attempts}"
                        ),
                    )
                )
                return
        self._end(_Status.FAILED, event.at, error)

    def wake(self, now: float) -> None:
        if self.wake_at is not None and now >= self.wake_at:
            self.wake_at = None
            self.step(now)

    def cancel(self, now: float) -> None:
        if self.done:
            return
        self.wake_at = None
        self.waits_for_budget = False
        if self.attempt is not None:
            self.engine.cancel_attempt(self.attempt, now, ErrorKind.CANCELLED)
        self.status = _Status.CANCELLED


class _Composite(_Node):
    """A strategy over children; subclasses say which child starts when."""

    def __init__(self, engine: Engine, parent: _Composite | None, route: RoutePlan) -> None:
        super().__init__(engine, parent)
        self.route = route
        self.children: list[_Node] = [engine.build(self, t) for t in route.targets]

    def first_provider(self) -> str:
        return self.children[0].first_provider()

    def worst_case(self) -> float:
        return min(child.worst_case() for child in self.children)

    def budget_waiting(self) -> bool:
        running = self.running()
        return bool(running) and all(c.budget_waiting() for c in running)

    def resumed(self, now: float) -> None:
        """A target below this node waited for room in the budget and has now started its
        attempt; the hedges above it restart their delay (``_Hedged``)."""
        if self.parent is not None:
            self.parent.resumed(now)

    def started(self) -> list[_Node]:
        return [c for c in self.children if c.status is not _Status.IDLE]

    def running(self) -> list[_Node]:
        return [c for c in self.children if c.status is _Status.RUNNING]

    def next_idle(self) -> _Node | None:
        return next((c for c in self.children if c.status is _Status.IDLE), None)

    def start(self, now: float) -> None:
        self.status = _Status.RUNNING
        self.begin(now)

    @abc.abstractmethod
    def begin(self, now: float) -> None:
        """Start the first child or children, by the strategy."""

    def child_ended(self, child: _Node, now: float) -> None:
        if self.done:
            return
        if child.status is _Status.OK and not self.keeps_all_answers():
            self.cancel_children(now)
            self._end(_Status.OK, now)
            return
        nxt = self.next_idle()
        if child.status is not _Status.OK and nxt is not None and not self.running():
            self.engine.failed_over(child, nxt)
            nxt.start(now)
            return
        if child.status is not _Status.OK and nxt is not None and self.starts_next_on_failure():
            self.engine.failed_over(child, nxt)
            nxt.start(now)
            return
        if self.running() or (nxt is not None and self.waits_for_more()):
            return
        self.finish_children(now, child)

    def keeps_all_answers(self) -> bool:
        return STRATEGIES[self.route.strategy].keeps_every_answer

    def starts_next_on_failure(self) -> bool:
        return False

    def waits_for_more(self) -> bool:
        return False

    def finish_children(self, now: float, last: _Node) -> None:
        self.wake_at = None
        if any(c.status is _Status.OK for c in self.children):
            self._end(_Status.OK, now)
        else:
            failed = [c for c in self.children if c.error is not None]
            # A target passed over because of what the request needs is not why the route failed:
            # the route's error is the last other one, when there is one.
            carried = [c for c in failed if c.error is not None and c.error.kind is not ErrorKind.UNSUPPORTED]
            source = (carried or failed)[-1] if failed else last
            self.failed_provider = source.failed_provider or source.first_provider()
            self._end(_Status.FAILED, now, source.error)

    def cancel_children(self, now: float) -> None:
        self.wake_at = None
        for child in self.children:
            child.cancel(now)

    def cancel(self, now: float) -> None:
        if self.done:
            return
        self.cancel_children(now)
        self.status = _Status.CANCELLED

    def wake(self, now: float) -> None:
        """Timer of this node (hedging); the default has none."""


class _Ordered(_Composite):
    """``Concurrency.ONE`` (sequential, cheapest, weighted): one child at a time, in the
    strategy's order, fixed at the start."""

    def begin(self, now: float) -> None:
        match STRATEGIES[self.route.strategy].order:
            case Order.COST:
                self.children.sort(key=lambda c: c.worst_case())
            case Order.WEIGHT:
                rng = self.engine.rng
                weights = [t.weight for t in self.route.targets]
                keyed = [(rng.random() ** (1.0 / w), i) for i, w in enumerate(weights)]
                order = [i for _, i in sorted(keyed, reverse=True)]
                self.children = [self.children[i] for i in order]
            case Order.WRITTEN:
                pass
        self.children[0].start(now)


class _Race(_Composite):
    """``Concurrency.ALL`` (fastest, compare): every child at once."""

    def begin(self, now: float) -> None:
        for child in self.children:
            if not self.done and child.status is _Status.IDLE:
                child.start(now)


class _Hedged(_Composite):
    """``Concurrency.HEDGED``: the first child; the next one too when the running ones are slow
    or fail."""

    def begin(self, now: float) -> None:
        self.children[0].start(now)
        self.arm(now)

    def arm(self, now: float) -> None:
        self.wake_at = now + self.route.hedge_after_s if self.next_idle() is not None else None

    def starts_next_on_failure(self) -> bool:
        return True

    def wake(self, now: float) -> None:
        if self.done or self.wake_at is None or now < self.wake_at:
            return
        nxt = self.next_idle()
        self.wake_at = None
        if self.budget_waiting():
            # Nothing of this route is in flight, only waiting for room in the budget: a hedge
            # would only wait beside it. The delay starts again when one gets its request out.
            return
        if nxt is not None:
            nxt.start(now)
            self.arm(now)

    def resumed(self, now: float) -> None:
        # The hedge delay counts from the latest request out, as it does for a target started
        # on time.
        if not self.done:
            self.arm(now)
        super().resumed(now)

    def child_ended(self, child: _Node, now: float) -> None:
        idle_before = self.next_idle()
        super().child_ended(child, now)
        # A failure that started the next child at once restarts the hedge delay: the child after
        # it is due hedge_after_s after that start, not on the timer armed for the failed one.
        if not self.done and (self.wake_at is None or self.next_idle() is not idle_before):
            self.arm(now)


_COMPOSITES: dict[Concurrency, Callable[[Engine, _Composite | None, RoutePlan], _Composite]] = {
    Concurrency.ONE: _Ordered,
    Concurrency.ALL: _Race,
    Concurrency.HEDGED: _Hedged,
}
"""The node class that runs each concurrency of :data:`rmcore.conduct.STRATEGIES`."""


# --- the engine ---------------------------------------------------------------------------------


class Engine:
    """Routes one request by a plan. Call ``start`` once, then ``handle`` each event (and
    ``TimePassed`` whenever ``next_wakeup()`` comes) until an action is ``Finish``."""

    def __init__(
        self,
        plan: RunPlan,
        request: ChatRequest,
        *,
        seed: int,
        epoch_s: float = 0.0,
        spent_usd: float = 0.0,
        ledger: Ledger | None = None,
    ) -> None:
        """``epoch_s`` is the wall-clock time (Unix seconds) of the moment passed to ``start``:
        it dates the attempt records. ``spent_usd`` is what was spent of ``plan.limits.max_usd``
        before this run. ``ledger``, when given, is a budget shared with other runs going on at
        the same time (the perspectives of one analysis); it replaces ``plan.limits.max_usd``
        and ``spent_usd``."""
        if not plan.targets:
            raise ValueError("a run plan needs at least one target")
        self.plan = plan
        self.request = request
        self.prompt_tokens = estimate_prompt_tokens(request)
        """The prompt's estimated tokens (``rmcore.pricing``), what an attempt costs at least."""
        self.needs = needs(request)
        """What the request needs its providers to carry beyond text (``rmcore.capabilities``)."""
        self._seed = seed
        self._rng: random.Random | None = None
        self._epoch_s = epoch_s
        self.ledger = ledger if ledger is not None else Ledger(plan.limits.max_usd, spent_usd)
        self._ledger_id = object()
        """This run's part of the ledger's keys (with an attempt id). Not ``id(self)``: a run
        dropped while it held reservations is freed at once, and a new engine may get its address;
        this object lives as long as a key holds it, so no other run's key can equal it."""
        self._start_at = 0.0
        self.deadline = math.inf
        self._next_id = 0
        self._running: dict[int, tuple[_TargetRun, float, float]] = {}
        self._held: set[int] = set()
        self._attempts: list[AttemptRecord] = []
        self._attempt_ids: list[int] = []
        self._skipped: list[SkippedTarget] = []
        self.answers: list[ProviderAnswer] = []
        self._out: list[Action] = []
        self._health: dict[str, HealthObserved] = {}
        self._circuits: dict[str, CircuitAnswered] = {}
        self._waiting: dict[str, list[_TargetRun]] = {}
        self._budget_waiters: list[_TargetRun] = []
        self._budget_seen = self.ledger.version
        self._first_attempts = 0
        self._retries = 0
        self._finished = False
        self._root: _Node = self.build(None, plan.route)

    # -- public --------------------------------------------------------------------------------

    @property
    def rng(self) -> random.Random:
        """The run's random numbers (weighted draws, backoff jitter), from the seed given; made
        on first use, since most runs draw none."""
        if self._rng is None:
            self._rng = random.Random(self._seed)
        return self._rng

    @property
    def attempts(self) -> tuple[AttemptRecord, ...]:
        """Every attempt that has ended (or was cancelled) so far, in order."""
        return tuple(self._attempts)

    @property
    def attempt_count(self) -> int:
        """How many attempts have ended so far: ``len(attempts)`` without copying them, for a
        shell that looks after every event whether any ended."""
        return len(self._attempts)

    @property
    def attempt_ids(self) -> tuple[int, ...]:
        """The ``attempt_id`` of each of ``attempts``, in the same order: what the shell needs to
        match a record with the request it sent."""
        return tuple(self._attempt_ids)

    @property
    def spent_usd(self) -> float:
        """What the run has cost so far (settled attempts)."""
        return sum((a.cost_usd for a in self._attempts), 0.0)

    @property
    def finished(self) -> bool:
        """True once ``Finish`` was emitted."""
        return self._finished

    @property
    def waiting_for_budget(self) -> bool:
        """True while a target waits for room in the budget: its attempt would fit once attempts
        running now (this run's or, through a shared ledger, other runs') settle. The shell then
        feeds ``TimePassed`` as soon as the ledger's ``version`` differs from ``budget_version``
        (another run settled an attempt), besides the usual events and wake-ups."""
        return not self._finished and any(n.budget_waiting() for n in self._budget_waiters)

    @property
    def budget_version(self) -> int:
        """The ledger's ``version`` when the waiting targets last looked for room."""
        return self._budget_seen

    def start(self, now: float) -> list[Action]:
        """Begin the run at moment ``now``."""
        if self._next_id or self._root.status is not _Status.IDLE:
            raise RuntimeError("the run has already started")
        self._start_at = now
        self.deadline = now + self.plan.limits.deadline_s
        self._root.start(now)
        return self._flush()

    def next_wakeup(self) -> float | None:
        """When the engine must be sent ``TimePassed`` at the latest (backoff ends, hedges, the
        deadline), or None once the run is over."""
        if self._finished:
            return None
        soonest = self.deadline
        for node in self._nodes():
            if node.wake_at is not None and node.wake_at < soonest and not node.done:
                soonest = node.wake_at
        return soonest

    def handle(self, event: Event) -> list[Action]:
        """Take one observation and answer with what to do next. Events for attempts that were
        cancelled or for a run that is over are ignored."""
        if self._finished:
            return []
        if type(event) is AttemptHeld:  # twice an attempt: answered first, and without the rest
            attempt_id = event.attempt_id
            if event.held and attempt_id in self._running:
                self._held.add(attempt_id)
            elif attempt_id in self._held:
                self._held.discard(attempt_id)
                # Latency counts from the moment the request leaves, not from a wait in line.
                node, _, worst = self._running[attempt_id]
                self._running[attempt_id] = (node, event.at, worst)
            # The shell feeds it in passing and expects no action back.
            return self._flush()
        match event:  # the most frequent first: an attempt's end, then a circuit's answer
            case AttemptSucceeded() | AttemptFailed():
                self._attempt_ended(event)
            case CircuitAnswered():
                self._circuits[event.provider] = event
                for node in self._waiting.pop(f"circuit:{event.provider}", []):
                    node.step(event.at)
            case AttemptRefused():
                self._attempt_refused(event)
            case TimePassed(at=at):
                self._time_passed(at)
            case HealthObserved():
                self._health[event.provider] = event
                for node in self._waiting.pop(f"health:{event.provider}", []):
                    node.step(event.at)
        self._look_for_room(event.at)
        return self._flush()

    def abandon(self) -> None:
        """The shell gave the run up from outside (a cancellation) before ``Finish``: release
        what its running attempts hold in the ledger, so that runs sharing it do not wait for
        them. Each is charged the prompt's estimate (it may have been billed), one still held
        back nothing. The run is over: it takes no more events."""
        if self._finished:
            return
        prompt = Usage(input_tokens=self.prompt_tokens, estimated=True)
        for attempt_id, (node, _, _) in self._running.items():
            spent = 0.0 if attempt_id in self._held else cost_usd(prompt, node.target.provider)
            self.ledger.settle((self._ledger_id, attempt_id), spent)
        self._running.clear()
        self._held.clear()
        self._finished = True

    # -- used by the nodes ---------------------------------------------------------------------

    def build(self, parent: _Composite | None, target: TargetPlan | RoutePlan) -> _Node:
        if isinstance(target, TargetPlan):
            return _TargetRun(self, parent, target)
        return _COMPOSITES[STRATEGIES[target.strategy].concurrency](self, parent, target)

    def emit(self, action: Action) -> None:
        self._out.append(action)

    def gate(self, node: _TargetRun, now: float) -> object | None:
        """Before a target's first attempt: whether it can carry the request, then its circuit,
        then its health. None when it may go on; otherwise the node waits for an answer or has
        been skipped."""
        name = node.name
        lacking = missing(self.needs, node.target.provider.carries)
        if lacking:
            node.skip(ErrorKind.UNSUPPORTED, f"cannot carry {in_words(lacking)}", now)
            return node
        if self.plan.breaker.enabled:
            answer = self._circuits.get(name)
            if answer is None:
                return self._wait_for(f"circuit:{name}", node, AdmitCircuit(provider=node.target.provider))
            if answer.decision == "refused" or (answer.decision == "probe" and self._probe_taken(node)):
                when = (
                    f"; it will be probed in {answer.retry_in_s:.0f} s"
                    if answer.retry_in_s is not None
                    else ""
                )
                node.skip(ErrorKind.CIRCUIT_OPEN, f"the circuit is open{when}", now)
                return node
            node.probe = answer.decision == "probe"
        if self.plan.check_before_use:
            seen = self._health.get(name)
            if seen is None:
                return self._wait_for(f"health:{name}", node, CheckHealth(provider=node.target.provider))
            if not seen.healthy:
                node.skip(ErrorKind.UNHEALTHY, f"health check failed: {seen.reason or 'unhealthy'}", now)
                return node
        return None

    def _probe_taken(self, node: _TargetRun) -> bool:
        return any(
            n.probe and n is not node and n.name == node.name
            for n in self._nodes()
            if isinstance(n, _TargetRun)
        )

    def _wait_for(self, key: str, node: _TargetRun, ask: Action) -> object:
        waiters = self._waiting.setdefault(key, [])
        if not waiters:
            self.emit(ask)
        waiters.append(node)
        return ask

    def budget_left(self) -> float:
        return self.ledger.left()

    def room_may_come(self, worst: float) -> bool:
        """True when an attempt of worst case ``worst``, which does not fit now, would fit once
        the attempts running now settled: something is reserved, and the budget less what was
        spent can hold it."""
        ledger = self.ledger
        return ledger.reserved_usd > _USD_EPSILON and worst <= ledger.left_at_best() + _USD_EPSILON

    def wait_for_budget(self, node: _TargetRun) -> None:
        """``node`` waits for room in the budget; it is stepped again when the ledger moves."""
        if not any(n.budget_waiting() for n in self._budget_waiters):
            self._budget_seen = self.ledger.version
        node.waits_for_budget = True
        node.waited_for_budget = True
        self._budget_waiters.append(node)

    def _look_for_room(self, now: float) -> None:
        """Step the targets waiting for room again, first come first served, each time the
        ledger has moved since they last looked (a settlement on the way may move it again)."""
        while not self._finished and self._budget_seen != self.ledger.version:
            seen = self.ledger.version
            waiters, self._budget_waiters = self._budget_waiters, []
            for node in waiters:
                if node.budget_waiting() and not self._finished:
                    node.waits_for_budget = False
                    node.step(now)
            self._budget_seen = seen

    def take_retry(self) -> bool:
        retry = self.plan.retry
        if self._retries + 1 > retry.budget_floor + retry.budget_ratio * self._first_attempts:
            return False
        self._retries += 1
        return True

    def start_attempt(self, node: _TargetRun, now: float) -> int:
        self._next_id += 1
        if node.tries == 1:
            self._first_attempts += 1
        target = node.target
        left = self.deadline - now
        timeout, kind = (
            (target.attempt_timeout_s, ErrorKind.TIMEOUT)
            if target.attempt_timeout_s < left
            else (left, ErrorKind.DEADLINE)
        )
        self._running[self._next_id] = (node, now, node.worst_case())
        self.ledger.reserve((self._ledger_id, self._next_id), node.worst_case())
        self.emit(
            StartAttempt(
                attempt_id=self._next_id,
                provider=target.provider,
                attempt_no=node.tries,
                timeout_s=timeout,
                timeout_kind=kind,
                first_token_timeout_s=min(target.first_token_timeout_s, timeout),
                idle_timeout_s=min(target.idle_timeout_s, timeout),
                exclusive=_runs_alone(node),
            )
        )
        return self._next_id

    def cancel_attempt(self, attempt_id: int, now: float, reason: ErrorKind) -> None:
        """Record a running attempt as ``reason`` and tell the shell to abandon it. Its prompt
        may have been billed: the prompt's estimate is accounted. An attempt the shell still
        holds back (``AttemptHeld``) sent nothing: it is not recorded, and its budget share is
        released."""
        node, started, _ = self._running.pop(attempt_id)
        node.attempt = None
        if attempt_id in self._held:
            self._held.discard(attempt_id)
            self.ledger.settle((self._ledger_id, attempt_id), 0.0)
        else:
            usage = Usage(input_tokens=self.prompt_tokens, estimated=True)
            message = "lost the race" if reason is ErrorKind.CANCELLED else "the run's deadline was reached"
            self._record(attempt_id, node.target, started, now, reason.value, usage, None, message)
        self.emit(CancelAttempt(attempt_id=attempt_id, reason=reason))

    def note_skip(self, skipped: SkippedTarget) -> None:
        self._skipped.append(skipped)
        self.emit(TargetSkipped(skipped=skipped))

    def failed_over(self, child: _Node, nxt: _Node) -> None:
        error = child.error or ProviderError(kind=ErrorKind.CANCELLED, message="no answer")
        self.emit(
            FailedOver(
                from_provider=child.failed_provider or child.first_provider(),
                to_provider=nxt.first_provider(),
                error=error,
                primary=child.parent is self._root and child is self._root_children()[0],
            )
        )

    def stop(self, error: ProviderError, now: float) -> None:
        """End the run at once with ``error`` (a ``stop_on`` kind), cancelling everything."""
        self._root.cancel(now)
        self._finish(now, error)

    def root_ended(self, now: float) -> None:
        root = self._root
        if root.status is _Status.OK:
            self._finish(now, None)
        else:
            self._finish(now, self._exhausted_error(root.error))

    # -- internals -----------------------------------------------------------------------------

    def _root_children(self) -> list[_Node]:
        return self._root.children if isinstance(self._root, _Composite) else [self._root]

    def _nodes(self) -> list[_Node]:
        found: list[_Node] = []
        stack: list[_Node] = [self._root]
        while stack:
            node = stack.pop()
            found.append(node)
            if isinstance(node, _Composite):
                stack.extend(node.children)
        return found

    def _attempt_ended(self, event: AttemptSucceeded | AttemptFailed) -> None:
        running = self._running.pop(event.attempt_id, None)
        self._held.discard(event.attempt_id)
        if running is None:
            return
        node, started, _ = running
        node.attempt = None
        if isinstance(event, AttemptSucceeded):
            c = event.completion
            self._record(
                event.attempt_id, node.target, started, event.at, "ok", c.usage, event.status, None, c.model
            )
        else:
            e = event.error
            self._record(
                event.attempt_id,
                node.target,
                started,
                event.at,
                e.kind.value,
                event.usage or Usage(),
                e.status,
                e.message,
            )
            if CONDUCT[e.kind].breaking:
                # The circuit may have opened: another target of this provider asks its breaker
                # again rather than trust the answer given before this failure.
                self._circuits.pop(node.name, None)
        if event.at >= self.deadline and isinstance(event, AttemptFailed):
            self._time_passed(event.at)
            return
        node.attempt_ended(event)

    def _attempt_refused(self, event: AttemptRefused) -> None:
        """The shell sent nothing for the attempt: forget it as if it had never started (no
        record, its budget reservation released, the counts of the retry budget given back), and
        skip its target. A refused retry keeps the failure that asked for it as the target's
        error: that is why the target failed; the refusal is why it was not tried again."""
        running = self._running.pop(event.attempt_id, None)
        self._held.discard(event.attempt_id)
        if running is None:
            return
        node = running[0]
        node.attempt = None
        self.ledger.settle((self._ledger_id, event.attempt_id), 0.0)
        if node.tries == 1:
            self._first_attempts -= 1
        else:
            self._retries -= 1
        node.tries -= 1
        if event.at >= self.deadline:
            self._time_passed(event.at)
            return
        node.skip(event.kind, event.message, event.at, keep_error=node.error is not None)

    def _time_passed(self, now: float) -> None:
        if now >= self.deadline:
            # Said before the cancellations below release what the running attempts hold.
            error = self._deadline_error([n for n in self._budget_waiters if n.budget_waiting()])
            for attempt_id in list(self._running):
                self.cancel_attempt(attempt_id, now, ErrorKind.DEADLINE)
            self._root.cancel(now)
            # A compare route may hold answers by now: they are the run's result, not lost to
            # the target that was still running.
            self._finish(now, None if self.answers else error)
            return
        for node in self._nodes():
            if not self._finished and isinstance(node, _TargetRun | _Composite) and not node.done:
                node.wake(now)

    def wall_clock_ms(self, at: float) -> int:
        """The moment ``at`` (of the clock ``start`` was given) as milliseconds since the Unix
        epoch, as attempt records date it."""
        return round((self._epoch_s + at - self._start_at) * 1000.0)

    def _record(
        self,
        attempt_id: int,
        target: TargetPlan,
        started: float,
        at: float,
        outcome: str,
        usage: Usage,
        status: int | None,
        message: str | None,
        model: str | None = None,
    ) -> None:
        self._attempt_ids.append(attempt_id)
        self._attempts.append(
            AttemptRecord(
                provider=target.provider.name,
                model=model or target.provider.model,
                outcome=outcome,
                status=status,
                latency_ms=max(at - started, 0.0) * 1000.0,
                started_at_ms=self.wall_clock_ms(started),
                usage=usage,
                cost_usd=cost_usd(usage, target.provider),
                message=message,
            )
        )
        self.ledger.settle((self._ledger_id, attempt_id), self._attempts[-1].cost_usd)

    def _deadline_error(self, waited: list[_TargetRun] | None = None) -> ProviderError:
        message = f"the run's deadline of {self.plan.limits.deadline_s:g} s was reached"
        if waited:
            worst = min(n.worst_case() for n in waited)
            names = ", ".join(dict.fromkeys(n.name for n in waited))
            message += (
                f" while {names} waited for room in the ${self.ledger.max_usd:.6f} budget (worst case"
                f" ${worst:.6f}, ${max(self.ledger.left(), 0.0):.6f} left beside the attempts running)"
            )
        return ProviderError(kind=ErrorKind.DEADLINE, message=message)

    def _exhausted_error(self, last: ProviderError | None) -> ProviderError:
        sent = [a for a in self._attempts if a.outcome != "ok"]
        if self._skipped and all(s.kind is ErrorKind.CIRCUIT_OPEN for s in self._skipped) and not sent:
            names = ", ".join(s.provider for s in self._skipped)
            soonest = min(
                (c.retry_in_s for c in self._circuits.values() if c.retry_in_s is not None), default=None
            )
            when = f"; the first will be probed in {soonest:.0f} s" if soonest is not None else ""
            return ProviderError(
                kind=ErrorKind.CIRCUIT_OPEN, message=f"every target's circuit is open ({names}){when}"
            )
        if self._skipped and all(s.kind is ErrorKind.UNSUPPORTED for s in self._skipped) and not sent:
            names = "; ".join(f"{s.provider}: {s.message}" for s in self._skipped)
            return ProviderError(
                kind=ErrorKind.UNSUPPORTED, message=f"no target can carry {in_words(self.needs)} ({names})"
            )
        if last is not None and not self._skipped and len({a.provider for a in sent}) <= 1:
            return last
        reasons = [f"{a.provider}: {a.outcome}" for a in sent]
        reasons += [f"{s.provider}: {s.kind.value} ({s.message})" for s in self._skipped]
        kind = last.kind if last is not None else ErrorKind.CANCELLED
        return ProviderError(kind=kind, message="every target failed: " + "; ".join(reasons))

    def _finish(self, now: float, error: ProviderError | None) -> None:
        if self._finished:
            return
        for attempt_id in list(self._running):
            self.cancel_attempt(attempt_id, now, ErrorKind.CANCELLED)
        self._finished = True
        winner = self.answers[0] if self.answers and error is None else None
        first = first_leaf(self.plan).provider.name
        self.emit(
            Finish(
                outcome=RunOutcome(
                    completion=winner.completion if winner else None,
                    provider=winner.provider if winner else None,
                    model=winner.model if winner else None,
                    error=None if winner else error,
                    attempts=tuple(self._attempts),
                    skipped=tuple(self._skipped),
                    cost_usd=self.spent_usd,
                    fallback_used=winner is not None and winner.provider != first,
                    answers=tuple(self.answers) if winner else (),
                )
            )
        )

    def _flush(self) -> list[Action]:
        out, self._out = self._out, []
        return out


def _runs_alone(node: _Node) -> bool:
    """True when no other attempt can run beside ``node``'s: every route above it runs one
    target at a time (so its text may be streamed to the user as it arrives)."""
    parent = node.parent
    while parent is not None:
        if not STRATEGIES[parent.route.strategy].one_at_a_time:
            return False
        parent = parent.parent
    return True
