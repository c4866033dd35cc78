"""Drive the engine over real HTTP: perform its actions, feed it what happened, account every attempt.

Attempts that may overlap (races, hedges) and health checks run as tasks of one anyio task
group, so they really run at once; a cancelled attempt's task is cancelled at once, which closes
its connection. An attempt that runs alone, the usual case, is awaited in the run's own task and
no task group is made (``_Run``). The loop waits for the next event or for the engine's next
wake-up, whichever comes first.

Every attempt is accounted, whatever ends the run. An attempt is recorded in the state the
moment before its request leaves (``Attempts.sent``: as it would stand if nothing more were
heard of it, ``cancelled`` with the prompt's estimated cost), and settled when it ends. A run
cancelled from outside (Ctrl-C, SIGTERM, a caller that gives up) settles its attempts in flight
as ``cancelled`` before it lets the cancellation through; a process killed outright leaves the
first record, so the provider's bill and ``rmgr usage`` still agree.

With a state, each attempt first takes its provider's slot (its ``max_concurrency``, counted
across every process sharing the state, behind this process's own limiter) and reserves its
worst case against the plan's caps, both in one call (``Caps.begin``); while every slot is busy
it asks again after short pauses, out of the attempt's timeout. When the slot or the
reservation cannot be had it sends nothing and the engine is told ``AttemptRefused``. When the
attempt ends, one call (``Caps.end``) settles its reservation with what it really used and gives
its slot back, whatever happened. A shared state that cannot be reached refuses paid attempts,
or, when the policy says ``on_state_unavailable = "fail_open"``, counts them in this host's own
state instead.

Routes that share a budget (a ``Ledger``: the perspectives of one analysis) wait for each other.
An engine whose next attempt does not fit the budget now, but would once attempts running
elsewhere settle, says so (``Engine.waiting_for_budget``) instead of skipping its target. Its run
then also awaits the ledger's signal (``_BudgetSignal``, one ``anyio.Event`` per ledger, kept
here, fired whenever a run sharing it settles an attempt) and feeds the engine ``TimePassed``
when it fires, so the engine looks for room again; the deadline ends the wait as always.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Final, NamedTuple

import anyio
import anyio.lowlevel
import httpx
import msgspec
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from rmcli.errors import ConfigError
from rmcli.health import HEALTH_TIMEOUT_S, check_health
from rmcli.hooks import Hooks
from rmcli.output import err
from rmcli.state import AttemptClaim, Caps, Origin, Slot, SlotBusy, State, StoreError, StoreUnavailable
from rmcli.transport import AttemptEvent, perform_attempt
from rmcore.attempts import AttemptRecord
from rmcore.breaker import CircuitState
from rmcore.budget import Ledger
from rmcore.completion import Usage
from rmcore.engine import Engine
from rmcore.errors import ErrorKind
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
    RunOutcome,
    StartAttempt,
    TargetSkipped,
    TimePassed,
)
from rmcore.plan import RunPlan, probe_timeout_s, unsupported
from rmcore.pricing import cost_usd
from rmcore.providers import ProviderSpec
from rmcore.quota import Charge, Refusal, Resource, attempt_charges, attempt_settlement
from rmcore.requests import ChatRequest
from rmcore.wire import adjustments

__all__ = ["LEASE_MARGIN_S", "SLOT_LEASE_S", "SLOT_RENEW_S", "ProviderLimits", "Routing", "route"]

LEASE_MARGIN_S: Final = 30.0
"""How long a reservation outlives its attempt's timeout before the state reclaims it (from a
process that died holding it): room for settling late and for hosts' clocks that disagree."""

SLOT_LEASE_S: Final = 5.0
"""A provider slot's lease, renewed every ``SLOT_RENEW_S`` while its request runs: a process that
dies holding slots keeps them from the others for at most this long."""

SLOT_RENEW_S: Final = 1.5
"""How often a slot held by a running request is renewed."""

SETTLE_TIMEOUT_S: Final = 2.0
"""The longest a cancelled run waits to settle its attempts in flight in the state."""

_SLOT_POLL_S: Final = (0.005, 0.01, 0.02, 0.05)
"""The pauses between asks for a busy provider slot: short at first, then every 50 ms."""

_NO_HOOKS: Final = Hooks()


class _BudgetSignal:
    """Tells the routes sharing a ``Ledger`` that one of them settled an attempt (room may have
    been made): ``event`` is set, then replaced by a fresh one for the next settlement."""

    def __init__(self) -> None:
        self.event = anyio.Event()

    def fire(self) -> None:
        event, self.event = self.event, anyio.Event()
        event.set()


_BUDGET_SIGNALS: weakref.WeakKeyDictionary[Ledger, _BudgetSignal] = weakref.WeakKeyDictionary()
"""The signal of each ledger some route has waited on; a ledger nobody waited on has none (and
its settlements cost no more than a look-up)."""


def _budget_signal(ledger: Ledger) -> _BudgetSignal:
    signal = _BUDGET_SIGNALS.get(ledger)
    if signal is None:
        signal = _BUDGET_SIGNALS[ledger] = _BudgetSignal()
    return signal


class ProviderLimits:
    """One ``anyio.CapacityLimiter`` per provider with a ``max_concurrency``, shared by every
    route of a process that uses the same instance."""

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


def _new_key() -> str:
    """A fresh random id of 32 hex digits, for a run or an attempt: unique is all it must be (no
    secret hangs on it), so the process's random generator serves, without a system call."""
    return f"{random.getrandbits(128):032x}"


@dataclass(eq=False)
class Routing:
    """What the routes of one caller share: the HTTP client, the keys, the state (None: nothing is
    recorded and every breaker is closed), each provider's concurrency limit, the hooks, and the
    ``run_id`` and ``command`` the attempts are recorded under.

    It also remembers which circuits its latest admission found closed with no failures: a
    success on one of those is not written (it would change nothing, yet cost a write, or a round
    trip to a shared state, on every call). The success is taken to have happened at that
    admission, so a failure another process recorded since stays counted: the conservative side.
    """

    client: httpx.AsyncClient
    keys: Callable[[ProviderSpec], str | None]
    state: State | None = None
    hooks: Hooks = _NO_HOOKS
    run_id: str = field(default_factory=_new_key)
    command: str = "ask"
    limits: ProviderLimits = field(default_factory=ProviderLimits)
    clean: set[str] = field(default_factory=set)
    fell_back: bool = False

    def state_unavailable(self, message: str) -> None:
        """Say once per outage that the shared state is down and the run counts on this host."""
        if not self.fell_back:
            self.fell_back = True
            warn = self.hooks.state_unavailable
            (warn or (lambda m: err(f"WARNING: {m}")))(message)


async def route(
    plan: RunPlan,
    request: ChatRequest,
    routing: Routing,
    *,
    clock: Callable[[], float] = time.monotonic,
    seed: int | None = None,
    spent_usd: float = 0.0,
    ledger: Ledger | None = None,
    perspective: str | None = None,
) -> RunOutcome:
    """Route ``request`` by ``plan`` and return how it ended. Never raises for a provider's fault;
    a cancellation from outside is let through once the attempts in flight are settled.

    ``routing.hooks.text`` receives the answer's text as it streams, for attempts that run alone
    (never those of a race or a hedge). ``ledger`` is a budget shared with other routes running at
    the same time (the perspectives of an analysis); ``perspective`` is recorded with each attempt
    (the analysis perspective this run answers).

    A request that no target of ``plan`` can carry (it needs tools, images or a JSON answer, and
    every target's format lacks one: :func:`rmcore.plan.unsupported`) is bad input, not a
    provider's fault: ``ConfigError`` before anything is sent or recorded. Every run goes through
    here, so every entry (ask, chat, the analysis) is checked the same way."""
    problem = unsupported(plan, request)
    if problem is not None:
        raise ConfigError(problem.message)
    engine = Engine(
        plan,
        request,
        seed=random.getrandbits(63) if seed is None else seed,
        epoch_s=time.time(),
        spent_usd=spent_usd,
        ledger=ledger,
    )
    return await _Run(engine, routing, clock, perspective).run()


class _NeedsTasks(Exception):
    """Raised inside ``_Run.drive`` without a task group when an action needs one."""


class _Run:
    """One run of ``route``: performs the engine's actions and feeds it what happened.

    It starts without a task group and runs an attempt that goes alone (nothing else running,
    nothing but the deadline to wake the engine for) right in its own task: for the common
    one-provider-at-a-time run, a task group, its tasks and their messages cost more CPU than
    the rest of routing a call. The first action that needs work at the same time (a race, a
    hedge, a health check) opens the task group, and the run goes on inside it.
    """

    def __init__(
        self, engine: Engine, routing: Routing, clock: Callable[[], float], perspective: str | None = None
    ) -> None:
        self.engine = engine
        self.origin = Origin(routing.run_id, routing.command, perspective)
        self.plan = engine.plan
        self.request = engine.request
        self.routing = routing
        self.hooks = routing.hooks
        self.state = routing.state
        self.breakers = self.state is not None and self.plan.breaker.enabled
        self.clock = clock
        self.actions: deque[Action] = deque()
        self.scopes: dict[int, anyio.CancelScope] = {}
        self.recorded = 0
        self.tasks = 0  # attempts and health checks running as tasks of the task group
        self.group: TaskGroup | None = None
        self.send: MemoryObjectSendStream[Event] | None = None
        self.probes: dict[str, float] = {}  # probes this run was given and has not yet sent
        self.providers: dict[int, str] = {}  # the provider of each attempt started
        self.in_flight: dict[int, tuple[str, AttemptRecord, float]] = {}  # sent, not yet settled
        self.watcher: anyio.CancelScope | None = None  # the task awaiting the ledger's signal

    async def run(self) -> RunOutcome:
        """Route the request to its end."""
        self.actions.extend(self.engine.start(self.clock()))
        try:
            try:
                return await self.drive()
            except _NeedsTasks:
                pass
            send, receive = anyio.create_memory_object_stream[Event](max_buffer_size=math.inf)
            self.send = send
            async with anyio.create_task_group() as self.group, send, receive:
                return await self.drive(receive)
            raise AssertionError("unreachable")  # pragma: no cover
        finally:
            if not self.engine.finished:
                # Cancelled from outside: what its attempts hold in a shared budget is let go,
                # so that the routes waiting for room do not wait for it.
                version = self.engine.ledger.version
                self.engine.abandon()
                self.budget_moved(version)
            if self.in_flight:
                await self.settle_interrupted()

    def feed(self, event: Event) -> list[Action]:
        """``engine.handle(event)``, then, if it settled an attempt of a shared budget, the
        ledger's signal to the routes waiting for room.

        The attempts the engine gives up are cancelled here, at once, not when their
        ``CancelAttempt`` comes up in the queue: in between the run may await (the store), and an
        attempt given up while still held (the engine forgets it: nothing was sent) must not
        reach its provider meanwhile, or its request would leave for a run that no longer
        counts it."""
        version = self.engine.ledger.version
        actions = self.engine.handle(event)
        self.budget_moved(version)
        for action in actions:
            if isinstance(action, CancelAttempt):
                if (scope := self.scopes.pop(action.attempt_id, None)) is not None:
                    scope.cancel()
            elif isinstance(action, Finish):
                for scope in self.scopes.values():
                    scope.cancel()
        return actions

    def budget_moved(self, version: int) -> None:
        """Fire the ledger's signal if it moved since ``version`` and some route waits on it."""
        ledger = self.engine.ledger
        if ledger.version != version and (signal := _BUDGET_SIGNALS.get(ledger)) is not None:
            signal.fire()

    async def drive(self, receive: MemoryObjectReceiveStream[Event] | None = None) -> RunOutcome:
        """Work through the engine's actions, waiting for events (from ``receive``, the task
        group's) or for the engine's next wake-up in between, until it finishes. Without a task
        group it raises ``_NeedsTasks`` at the first action that needs one, leaving that action
        first in line."""
        engine, actions, hooks = self.engine, self.actions, self.hooks
        while True:
            while actions:
                action = actions.popleft()
                match action:
                    case Finish(outcome=outcome):  # its attempts were cancelled by ``feed``
                        if self.watcher is not None:
                            self.watcher.cancel()
                        await self.flush_records()
                        if self.group is not None and self.tasks:
                            self.group.cancel_scope.cancel()
                        return outcome
                    case StartAttempt():
                        await self.start(action)
                    case CancelAttempt():
                        pass  # enacted by ``feed`` the moment the engine decided
                    case CheckHealth(provider=spec):
                        self.spawn(action, partial(self.health, spec))
                    case AdmitCircuit(provider=spec):
                        actions.extend(self.feed(await self.admit(spec)))
                    case FailedOver():
                        if hooks.failed_over is not None:
                            hooks.failed_over(action)
                    case TargetSkipped():
                        if hooks.skipped is not None:
                            hooks.skipped(action)
                    case Backoff(until=until):
                        if hooks.backing_off is not None:
                            hooks.backing_off(action, max(until - self.clock(), 0.0))
                if engine.attempt_count != self.recorded:
                    await self.flush_records()
            wake = engine.next_wakeup()
            room: anyio.Event | None = None
            if engine.waiting_for_budget:
                if engine.ledger.version != engine.budget_version:
                    # Another route settled since the engine last looked: it looks again now.
                    actions.extend(self.feed(TimePassed(at=self.clock())))
                    continue
                room = _budget_signal(engine.ledger).event
                if receive is not None and self.watcher is None:
                    self.watch(room)
            event: Event | None = None
            freed = False
            with anyio.move_on_after(max((wake or math.inf) - self.clock(), 0.0)):
                if receive is not None:
                    event = await receive.receive()
                elif room is not None:
                    await room.wait()  # nothing of this run runs: another route must make room
                    freed = True
                else:
                    await anyio.sleep_forever()  # nothing runs: only time moves the engine
            if event is not None:
                await self.observe(event)
            elif freed or (wake is not None and self.clock() >= wake):
                # Only once the moment has really come: a Retry-After is never cut short.
                actions.extend(self.feed(TimePassed(at=self.clock())))

    async def start(self, action: StartAttempt) -> None:
        engine = self.engine
        alone = action.exclusive and not self.actions and not self.tasks
        # Alone, and nothing but the deadline can need the engine before it ends (the engine
        # caps its timeout at the time left): it runs here, not as a task.
        inline = alone and engine.next_wakeup() == engine.deadline
        if not inline and self.group is None:
            self.actions.appendleft(action)
            raise _NeedsTasks
        if self.hooks.attempt_started is not None:
            self.hooks.attempt_started(action)
        if self.hooks.adjusted is not None and (notes := adjustments(action.provider, engine.request)):
            self.hooks.adjusted(action, notes)
        self.providers[action.attempt_id] = action.provider.name
        # Held until its request leaves: cancelled before that, it sent nothing and is no attempt.
        engine.handle(AttemptHeld(attempt_id=action.attempt_id, at=self.clock()))
        if not inline:
            scope = self.scopes[action.attempt_id] = anyio.CancelScope()
            self.spawn(action, partial(self.attempt_task, action, scope))
            return
        # Inline, no scope of its own: nothing can cancel it but the caller (whose cancellation
        # goes through), since the run awaits it and hears of no other event meanwhile.
        await self.observe(await self.perform(action))

    def watch(self, room: anyio.Event) -> None:
        """Await ``room`` (the ledger's signal) in a task of the group, then send the engine
        ``TimePassed`` through the group's stream, where this run waits for its own events."""
        assert self.group is not None
        scope = self.watcher = anyio.CancelScope()

        async def watching() -> None:
            with scope:
                await room.wait()
                self.watcher = None
                if self.send is not None:
                    with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
                        self.send.send_nowait(TimePassed(at=self.clock()))

        self.group.start_soon(watching)

    def spawn(self, action: Action, work: Callable[[], Awaitable[None]]) -> None:
        if self.group is None:
            self.actions.appendleft(action)
            raise _NeedsTasks
        self.tasks += 1
        self.group.start_soon(self.counted, work)

    async def counted(self, work: Callable[[], Awaitable[None]]) -> None:
        try:
            await work()
        finally:
            self.tasks -= 1

    async def flush_records(self) -> None:
        """Settle, in the state and the breakers, every attempt the engine recorded since last
        time, then tell the hooks."""
        engine = self.engine
        if engine.attempt_count == self.recorded:  # the usual case: no copy of the records made
            return
        attempts, ids = engine.attempts, engine.attempt_ids
        for attempt_id, record in zip(ids[self.recorded :], attempts[self.recorded :], strict=True):
            self.recorded += 1
            sent = self.in_flight.pop(attempt_id, None)
            state = self.state
            if state is not None:
                key = sent[0] if sent is not None else _new_key()
                await state.attempts.settle(key, self.origin, record)
                if self.breakers:
                    await self.record_circuit(state, record)
            if self.hooks.attempt_ended is not None:
                self.hooks.attempt_ended(record)

    async def record_circuit(self, state: State, record: AttemptRecord) -> None:
        clean = self.routing.clean
        if record.outcome == "ok" and record.provider in clean:
            return
        clean.discard(record.provider)
        await state.circuits.record(
            record.provider, record.outcome, time.time(), self.plan.breaker.failure_threshold
        )

    async def settle_interrupted(self) -> None:
        """The run was cancelled from outside with requests in flight: settle each as
        ``cancelled`` (its prompt may be billed), shielded from the cancellation, within
        ``SETTLE_TIMEOUT_S``."""
        in_flight, self.in_flight = self.in_flight, {}
        now = self.clock()
        with anyio.CancelScope(shield=True), anyio.move_on_after(SETTLE_TIMEOUT_S):
            for key, sent, started in in_flight.values():
                record = msgspec.structs.replace(
                    sent, latency_ms=max(now - started, 0.0) * 1000.0, message="the run was interrupted"
                )
                if self.state is not None:
                    with contextlib.suppress(StoreError):
                        await self.state.attempts.settle(key, self.origin, record)
                if self.hooks.attempt_ended is not None:
                    self.hooks.attempt_ended(record)

    async def send_now(self, action: StartAttempt, key: str | None) -> AttemptEvent:
        now = self.clock()
        state = self.state
        try:
            if state is None or getattr(type(state.attempts), "cancel_safe", False):
                # The record's write is the only wait: a cancellation comes through it.
                await self.record_sent(action, now)
            else:  # the write finishes, then a cancellation that came meanwhile is heard
                with anyio.CancelScope(shield=True):
                    await self.record_sent(action, now)
                await anyio.lowlevel.checkpoint_if_cancelled()
        except anyio.get_cancelled_exc_class():
            await self.withdraw(action)  # given up while it was recorded: it never leaves
            raise
        # Fed at once, not queued: from here on the request leaves the process.
        self.engine.handle(AttemptHeld(attempt_id=action.attempt_id, at=now, held=False))
        self.probes.pop(action.provider.name, None)  # a probe on its way is the breaker's to judge
        sink = self.hooks.text if action.exclusive else None
        return await perform_attempt(self.routing.client, action, self.request, key, self.clock, sink)

    async def record_sent(self, action: StartAttempt, now: float) -> None:
        """Record the attempt as it leaves: ``cancelled`` at the prompt's estimated cost, what it
        stays if the process dies before it ends."""
        spec = action.provider
        usage = Usage(input_tokens=self.engine.prompt_tokens, estimated=True)
        sent = AttemptRecord(
            provider=spec.name,
            model=spec.model,
            outcome=ErrorKind.CANCELLED.value,
            started_at_ms=self.engine.wall_clock_ms(now),
            usage=usage,
            cost_usd=cost_usd(usage, spec),
            message="no end was recorded (the process stopped)",
        )
        key = _new_key()
        self.in_flight[action.attempt_id] = (key, sent, now)  # before the write: withdrawn if it is cut
        if self.state is not None:
            try:
                await self.state.attempts.sent(key, self.origin, sent)
            except Exception:
                del self.in_flight[action.attempt_id]  # not recorded: the store said why
                raise

    async def withdraw(self, action: StartAttempt) -> None:
        """Take back the record of an attempt given up (a race lost, the deadline, the caller gone)
        while ``record_sent`` wrote it: its request never left, so it is no attempt, in the store
        as in the run's outcome. Should the store fail, the record stays: counted, never lost."""
        key, _, _ = self.in_flight.pop(action.attempt_id)
        if self.state is not None:
            with anyio.CancelScope(shield=True), contextlib.suppress(StoreError):
                await self.state.attempts.withdraw(key)

    async def perform(self, action: StartAttempt) -> Event:
        """Perform ``action`` (within its provider's slot and the state's limits): how it ended."""
        spec = action.provider
        key = self.routing.keys(spec)
        state = self.state
        if spec.max_concurrency is None:  # no slot to take
            event = await self.send_guarded(action, key, state)
        else:
            async with self.routing.limits.slot(spec):
                # Given up while it waited for the slot (the engine already forgot it): stop
                # here, before anything is recorded, even if its wait ended in the same instant.
                await anyio.lowlevel.checkpoint_if_cancelled()
                event = await self.send_guarded(action, key, state)
        if isinstance(event, AttemptFailed) and key and key in event.error.message:
            # A provider may quote the key it was sent ("Incorrect API key provided: ...").
            redacted = event.error.message.replace(key, "<redacted>")
            error = msgspec.structs.replace(event.error, message=redacted)
            event = msgspec.structs.replace(event, error=error)
        return event

    async def send_guarded(self, action: StartAttempt, key: str | None, state: State | None) -> Event:
        """``send_now``, under the state's caps and shared slot when the attempt has any."""
        if state is None or (not self.plan.caps and action.provider.max_concurrency is None):
            return await self.send_now(action, key)
        guarded = _Guarded(self.engine, action, state, self.routing, self.clock)
        return await guarded.run(lambda sent: self.send_now(sent, key))

    async def attempt_task(self, action: StartAttempt, scope: anyio.CancelScope) -> None:
        """Perform ``action`` as a task of the group, cancelled with ``scope`` (a lost race, a
        cancelled hedge); how it ended goes to the run through the group's stream."""
        event: Event | None = None
        with scope:
            await anyio.lowlevel.checkpoint_if_cancelled()  # given up before it began: nothing to do
            event = await self.perform(action)
        if event is None:
            await self.release_probe(action.provider.name)  # cancelled: if never sent, hand it back
        elif self.send is not None:
            await self.send.send(event)

    async def health(self, spec: ProviderSpec) -> None:
        budget = min(HEALTH_TIMEOUT_S, max(self.engine.deadline - self.clock(), 0.0))
        report = await check_health(self.routing.client, spec, self.routing.keys(spec), budget, self.clock)
        if self.send is not None:
            await self.send.send(
                HealthObserved(
                    provider=spec.name, at=self.clock(), healthy=report.healthy, reason=report.reason
                )
            )

    async def observe(self, event: Event) -> None:
        if isinstance(event, AttemptSucceeded | AttemptFailed | AttemptRefused):
            self.scopes.pop(event.attempt_id, None)
        if isinstance(event, AttemptRefused):  # nothing was sent
            await self.release_probe(self.providers.get(event.attempt_id, ""))
        self.actions.extend(self.feed(event))
        # Before any action: the breakers must know how the attempt ended before the engine's
        # next AdmitCircuit is answered.
        if self.engine.attempt_count != self.recorded:
            await self.flush_records()

    async def admit(self, spec: ProviderSpec) -> CircuitAnswered:
        if self.state is None or not self.breakers:
            return CircuitAnswered(provider=spec.name, at=self.clock(), decision="allowed")
        now = time.time()
        admission = await self.state.circuits.admit(
            spec.name, now, self.plan.breaker.cooldown_s, probe_timeout_s(self.plan)
        )
        clean = self.routing.clean
        if admission.decision == "allowed" and admission.state == CircuitState(provider=spec.name):
            clean.add(spec.name)
        else:
            clean.discard(spec.name)
        if admission.decision == "probe" and admission.state.probe_started_at is not None:
            self.probes[spec.name] = admission.state.probe_started_at
        retry_in = None if admission.retry_at is None else max(admission.retry_at - now, 0.0)
        return CircuitAnswered(
            provider=spec.name, at=self.clock(), decision=admission.decision, retry_in_s=retry_in
        )

    async def release_probe(self, provider: str) -> None:
        """Hand back the probe this run was given for ``provider`` if it has not been sent; a
        state that cannot take it back lets it time out instead."""
        probe = self.probes.pop(provider, None)
        if probe is not None and self.state is not None:
            with anyio.CancelScope(shield=True), contextlib.suppress(StoreError):
                await self.state.circuits.release_probe(provider, probe, time.time())


class _Guarded:
    """One attempt under the state's limits: take the provider's slot and reserve the attempt's
    worst case (one call), send, then settle and give the slot back (one call), whatever happens."""

    def __init__(
        self, engine: Engine, action: StartAttempt, state: State, routing: Routing, clock: Callable[[], float]
    ) -> None:
        self.plan = engine.plan
        self.request = engine.request
        self.prompt_tokens = engine.prompt_tokens  # the estimate, made once per request
        self.action = action
        self.caps: Caps = state.caps
        self.local_caps = state.local_caps
        self.routing = routing
        self.clock = clock
        self.provider = action.provider
        self.holder = _new_key()
        self.held: _Held | None = None
        self.waited = False
        self.sent = False

    async def run(self, send: Callable[[StartAttempt], Awaitable[AttemptEvent]]) -> Event:
        """Send the attempt with ``send`` once it may go; its event, or ``AttemptRefused`` when it
        may not. Time spent waiting for a busy slot comes out of the attempt's timeout."""
        started = self.clock()
        event: AttemptEvent | None = None
        try:
            refused = await self._begin(started)
            if refused is not None:
                return refused
            sent = self.action
            if self.waited:
                left = sent.timeout_s - (self.clock() - started)
                sent = msgspec.structs.replace(sent, timeout_s=max(left, 0.0))
            await anyio.lowlevel.checkpoint_if_cancelled()
            self.sent = True
            held = self.held
            if held is None or held.claim.slot is None:
                event = await send(sent)
                return event
            async with anyio.create_task_group() as renewing:
                renewing.start_soon(self._keep_slot, held.caps, held.claim.slot)
                answered = await send(sent)
                renewing.cancel_scope.cancel()
            event = answered
            return event
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(SETTLE_TIMEOUT_S):
                await self._end(event)

    def _claim(self) -> AttemptClaim:
        """The slot and the worst case to hold, the charges in the cap windows of now."""
        limit = self.provider.max_concurrency
        return AttemptClaim(
            holder=self.holder,
            lease_s=self.action.timeout_s + LEASE_MARGIN_S,
            slot=None
            if limit is None
            else Slot(name=f"provider:{self.provider.name}", limit=limit, lease_s=SLOT_LEASE_S),
            charges=self._charges() if self.plan.caps else (),
        )

    def _charges(self) -> tuple[Charge, ...]:
        """The worst case to reserve in the cap windows of now."""
        return attempt_charges(self.plan.caps, self.provider, self.request, time.time(), self.prompt_tokens)

    async def _begin(self, started: float) -> AttemptRefused | None:
        """Take the slot and reserve, asking again after a pause while every slot is busy (for
        at most the attempt's timeout); refused when the caps or the state say no."""
        caps = self.caps
        for pause in _pauses():
            claim = self._claim()  # after any wait: in the windows of now
            try:
                answer = await caps.begin(claim, time.time())
            except StoreUnavailable as exc:
                fallback = self._fall_back(exc)
                if (claim.charges and not self._fails_open()) or fallback is None:
                    return self._refused(ErrorKind.BUDGET, _fail_closed_message(exc))
                caps = fallback
                continue
            if answer is None:
                self.held = _Held(caps, claim)
                return None
            if isinstance(answer, Refusal):
                kind = ErrorKind.BUDGET if answer.resource is Resource.USD else ErrorKind.QUOTA
                return self._refused(kind, answer.message)
            assert isinstance(answer, SlotBusy)
            if self.clock() - started + pause >= self.action.timeout_s:
                return self._refused(
                    ErrorKind.QUOTA,
                    f"all {self.provider.max_concurrency} request slots of {self.provider.name} (its "
                    "max_concurrency) stayed busy across every process sharing the state for "
                    f"{self.action.timeout_s:.3g} s",
                )
            self.waited = True
            await anyio.sleep(pause)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _keep_slot(self, caps: Caps, slot: Slot) -> None:
        """Renew the slot's lease while the request runs; a renewal the state cannot take is
        left to the next one."""
        while True:
            await anyio.sleep(SLOT_RENEW_S)
            with contextlib.suppress(StoreError):
                await caps.renew(slot, self.holder, time.time())

    async def _end(self, event: AttemptEvent | None) -> None:
        """Settle the reservation with what the attempt used (its answer's usage, a failure's,
        or, cut off with no event, the prompt's estimate, since the prompt may have been billed)
        and give the slot back. Given up before it was sent, the reservation is released."""
        held, self.held = self.held, None
        if held is None:
            return
        used = self._used(event, held.claim.charges) if self.sent else None
        try:
            await held.caps.end(held.claim, used, time.time())
        except StoreUnavailable as exc:
            # The shared state went away while the request ran: the spend is kept on this host,
            # and the shared reservation and slot end with their leases.
            fallback = self._fall_back(exc)
            if used and fallback is not None:
                with contextlib.suppress(StoreError):
                    await fallback.end(msgspec.structs.replace(held.claim, slot=None), used, time.time())
        except StoreError:
            pass  # the leases end them; the run's own accounts stand

    def _used(self, event: AttemptEvent | None, charges: Sequence[Charge]) -> tuple[Charge, ...]:
        if isinstance(event, AttemptSucceeded):
            usage = event.completion.usage
        elif isinstance(event, AttemptFailed):
            usage = event.usage or Usage()
        else:
            usage = Usage(input_tokens=self.prompt_tokens, estimated=True)
        return attempt_settlement(charges, usage, self.provider)

    def _fails_open(self) -> bool:
        return self.plan.on_state_unavailable == "fail_open"

    def _fall_back(self, exc: StoreUnavailable) -> Caps | None:
        """This host's caps while the shared state is down (None when there are none), said once."""
        if self.local_caps is not None and self._fails_open():
            self.routing.state_unavailable(
                f"{exc.message}; the policy fails open, so {self.provider.name}'s caps and "
                "concurrency are counted on this host only until it is back"
            )
        return self.local_caps

    def _refused(self, kind: ErrorKind, message: str) -> AttemptRefused:
        return AttemptRefused(attempt_id=self.action.attempt_id, at=self.clock(), kind=kind, message=message)


class _Held(NamedTuple):
    """What an attempt holds while it runs, and in which caps (the shared state's, or this
    host's when it fell back)."""

    caps: Caps
    claim: AttemptClaim


def _fail_closed_message(exc: StoreUnavailable) -> str:
    return (
        f"{exc.message}; the policy fails closed, so no paid request starts "
        '(set [budget] on_state_unavailable = "fail_open" to use local limits)'
    )


def _pauses() -> Iterator[float]:
    yield from _SLOT_POLL_S
    while True:
        yield _SLOT_POLL_S[-1]
