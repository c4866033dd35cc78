"""Drive the engine over real HTTP: perform its actions, feed it what happened, record every attempt.

Attempts that may overlap (races, hedges) and health checks run as tasks of one anyio task
group, so they really run at once; a cancelled attempt's task is cancelled at once, which closes
its connection. An attempt that runs alone, the usual case, is awaited in the run's own task and
no task group is made (``_Run``). The loop waits for the next event or for the engine's next
wake-up, whichever comes first.

With a ``QuotaBook`` (the state store), each attempt first takes its provider's slot (its
``max_concurrency``, counted across every process sharing the state, behind this process's own
limiter) and reserves its worst case against the plan's caps, both in one call to the store
(``begin_attempt``: one round trip to a shared state); while every slot is busy it asks again
after short pauses, out of the attempt's timeout. When the slot or the reservation cannot be had
it sends nothing and the engine is told ``AttemptRefused``. When the attempt ends, one call
(``end_attempt``) settles its reservation with what it really used (the prompt's estimate when
it was cut off) and gives its slot back, whatever happened. A shared state that cannot be
reached refuses paid attempts, or, when the policy says ``on_state_unavailable = "fail_open"``,
counts them in this host's own state instead.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from functools import partial
from typing import Final, NamedTuple, Protocol

import anyio
import anyio.lowlevel
import httpx
import msgspec
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from rmcli.health import HEALTH_TIMEOUT_S, check_health
from rmcli.output import err
from rmcli.store import AttemptClaim, Slot, SlotBusy, StoreError, StoreUnavailable
from rmcli.transport import AttemptEvent, TextSink, perform_attempt
from rmcore.attempts import AttemptRecord
from rmcore.budget import Ledger
from rmcore.completion import Usage
from rmcore.engine import (
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
from rmcore.errors import ErrorKind
from rmcore.plan import RunPlan, leaves
from rmcore.pricing import estimate_prompt_tokens
from rmcore.providers import ProviderSpec
from rmcore.quota import Charge, Refusal, Resource, attempt_charges, attempt_settlement
from rmcore.requests import ChatRequest

__all__ = [
    "LEASE_MARGIN_S",
    "SLOT_LEASE_S",
    "SLOT_RENEW_S",
    "CircuitAnswer",
    "CircuitBook",
    "Observer",
    "ProviderLimits",
    "QuotaBook",
    "route",
]

LEASE_MARGIN_S: Final = 30.0
"""How long a reservation outlives its attempt's timeout before the store reclaims it (from a
process that died holding it): room for settling late and for hosts' clocks that disagree by a
few seconds."""

SLOT_LEASE_S: Final = 5.0
"""A provider slot's lease, renewed every ``SLOT_RENEW_S`` while its request runs: a process that
dies holding slots (killed, its host lost) keeps them from the others for at most this long.
Hosts' clocks must agree to well within it (NTP does)."""

SLOT_RENEW_S: Final = 1.5
"""How often a slot held by a running request is renewed."""

_SLOT_POLL_S: Final = (0.005, 0.01, 0.02, 0.05)
"""The pauses between asks for a busy provider slot: short at first, then every 50 ms."""


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
        """A target was passed over without a request (budget, quota, health, circuit)."""

    def state_unavailable(self, message: str) -> None:
        """The shared state cannot be reached and the policy fails open: the run goes on, its
        caps counted in this host's own state. Unlike the other hooks this one is not silent by
        default (a run that spends beyond the fleet's view must not go unannounced): it prints
        ``WARNING: message`` on stderr."""
        err(f"WARNING: {message}")


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


class QuotaBook(Protocol):
    """Where budgets, quotas and concurrency slots are kept (the state store), shared by every
    process using it. Every method but ``fallback`` may raise ``StoreUnavailable``."""

    def begin_attempt(self, claim: AttemptClaim, now: float) -> Refusal | SlotBusy | None:
        """Take the claim's slot and reserve its charges at once (``Store.begin_attempt``)."""
        ...

    def end_attempt(self, claim: AttemptClaim, used: Sequence[Charge] | None, now: float) -> None:
        """Settle (or, ``used`` None, release) the claim's reservation and give its slot back at
        once (``Store.end_attempt``)."""
        ...

    def acquire_slot(self, name: str, limit: int, holder: str, now: float, lease_s: float) -> bool:
        """Take, or renew, one of ``limit`` slots of ``name`` (``Store.acquire_slot``)."""
        ...

    def fallback(self) -> tuple[QuotaBook, bool]:
        """The book of this host's own state, for while this one cannot be reached, and whether
        it is the first time it is asked for in this outage."""
        ...


class CircuitAnswer(NamedTuple):
    """A breaker's answer: the ``decision`` (``allowed``, ``probe``, ``refused``); when refused,
    ``retry_in_s``, the seconds until the circuit will be probed; for a probe, ``probe``, which
    ``CircuitBook.release_probe`` needs to hand it back should it never be sent."""

    decision: str
    retry_in_s: float | None = None
    probe: float | None = None


class CircuitBook(Protocol):
    """Where circuit breakers live (the state store): shared by every process using it."""

    def admit(self, provider: str, cooldown_s: float, probe_timeout_s: float) -> CircuitAnswer:
        """May a request go to ``provider`` now?"""
        ...

    def record(self, provider: str, outcome: str, failure_threshold: int) -> None:
        """How an attempt on ``provider`` ended."""
        ...

    def release_probe(self, provider: str, probe: float) -> None:
        """The probe ``admit`` gave (``CircuitAnswer.probe``) was never sent: hand it back, so
        that the next asker probes instead of every asker waiting for it to time out."""
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
    quotas: QuotaBook | None = None,
) -> RunOutcome:
    """Route ``request`` by ``plan`` and return how it ended. Never raises for a provider's fault.

    ``on_text`` receives the answer's text as it streams, for attempts that run alone (never
    those of a race or a hedge). Without ``circuits`` every breaker is closed. ``ledger`` is a
    budget shared with other routes running at the same time; ``limits`` caps how many requests
    each provider gets at once across them (its ``max_concurrency``). ``quotas`` keeps the
    plan's caps over time and each provider's ``max_concurrency`` across processes; without it
    neither is enforced beyond this process.
    """
    engine = Engine(
        plan,
        request,
        seed=random.getrandbits(63) if seed is None else seed,
        epoch_s=time.time(),
        spent_usd=spent_usd,
        ledger=ledger,
    )
    run = _Run(
        engine,
        client=client,
        keys=keys,
        watch=observer or Observer(),
        on_text=on_text,
        circuits=circuits,
        clock=clock,
        slots=limits if limits is not None else ProviderLimits(),
        quotas=quotas,
    )
    return await run.run()


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
        self,
        engine: Engine,
        *,
        client: httpx.AsyncClient,
        keys: Callable[[ProviderSpec], str | None],
        watch: Observer,
        on_text: TextSink | None,
        circuits: CircuitBook | None,
        clock: Callable[[], float],
        slots: ProviderLimits,
        quotas: QuotaBook | None,
    ) -> None:
        self.engine = engine
        self.plan = engine.plan
        self.request = engine.request
        self.client = client
        self.keys = keys
        self.watch = watch
        self.on_text = on_text
        self.circuits = circuits if circuits is not None and self.plan.breaker.enabled else None
        self.clock = clock
        self.slots = slots
        self.quotas = quotas
        self.probe_timeout_s = max((t.attempt_timeout_s for t in leaves(self.plan)), default=30.0)
        self.actions: deque[Action] = deque()
        self.scopes: dict[int, anyio.CancelScope] = {}
        self.recorded = 0
        self.announced = False
        self.tasks = 0  # attempts and health checks running as tasks of the task group
        self.group: TaskGroup | None = None
        self.send: MemoryObjectSendStream[Event] | None = None
        self.probes: dict[str, float] = {}  # probes this run was given and has not yet sent
        self.providers: dict[int, str] = {}  # the provider of each attempt started

    async def run(self) -> RunOutcome:
        """Route the request to its end."""
        self.actions.extend(self.engine.start(self.clock()))
        try:
            return await self.drive()
        except _NeedsTasks:
            pass
        send, receive = anyio.create_memory_object_stream[Event](max_buffer_size=math.inf)
        self.send = send
        async with anyio.create_task_group() as self.group, send, receive:
            return await self.drive(receive)
        raise AssertionError("unreachable")  # pragma: no cover

    async def drive(self, receive: MemoryObjectReceiveStream[Event] | None = None) -> RunOutcome:
        """Work through the engine's actions, waiting for events (from ``receive``, the task
        group's) or for the engine's next wake-up in between, until it finishes. Without a task
        group it raises ``_NeedsTasks`` at the first action that needs one, leaving that action
        first in line."""
        engine, actions = self.engine, self.actions
        while True:
            while actions:
                action = actions.popleft()
                match action:
                    case Finish(outcome=outcome):
                        for scope in self.scopes.values():
                            scope.cancel()
                        self.flush_records()
                        if self.group is not None and self.tasks:
                            self.group.cancel_scope.cancel()
                        return outcome
                    case StartAttempt():
                        await self.start(action)
                    case CancelAttempt(attempt_id=attempt_id):
                        if attempt_id in self.scopes:
                            self.scopes.pop(attempt_id).cancel()
                    case CheckHealth(provider=spec):
                        self.spawn(action, partial(self.health, spec))
                    case AdmitCircuit(provider=spec):
                        actions.extend(engine.handle(self.admit(spec)))
                    case FailedOver():
                        self.watch.failed_over(action)
                    case TargetSkipped():
                        self.watch.skipped(action)
                    case Backoff(until=until):
                        self.watch.backing_off(action, max(until - self.clock(), 0.0))
                self.flush_records()
            wake = engine.next_wakeup()
            event: Event | None = None
            with anyio.move_on_after(max((wake or math.inf) - self.clock(), 0.0)):
                if receive is None:
                    await anyio.sleep_forever()  # nothing runs: only time moves the engine
                else:
                    event = await receive.receive()
            if event is not None:
                self.observe(event)
            elif wake is not None and self.clock() >= wake:
                # Only once the moment has really come: a Retry-After is never cut short.
                actions.extend(engine.handle(TimePassed(at=self.clock())))

    async def start(self, action: StartAttempt) -> None:
        engine = self.engine
        alone = action.exclusive and not self.actions and not self.tasks
        # Alone, and nothing but the deadline can need the engine before it ends (the engine
        # caps its timeout at the time left): it runs here, not as a task.
        inline = alone and engine.next_wakeup() == engine.deadline
        if not inline and self.group is None:
            self.actions.appendleft(action)
            raise _NeedsTasks
        self.watch.attempt_started(action)
        scope = self.scopes[action.attempt_id] = anyio.CancelScope()
        self.providers[action.attempt_id] = action.provider.name
        if action.provider.max_concurrency is not None:
            # It may wait for a slot: until it is let go, a cancellation sends nothing, and the
            # engine records no attempt for it.
            engine.handle(AttemptHeld(attempt_id=action.attempt_id, at=self.clock()))
        if not inline:
            self.spawn(action, partial(self.attempt_task, action, scope))
            return
        ended = await self.attempt(action, scope)
        if ended is not None:
            self.observe(ended)

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

    def flush_records(self) -> None:
        attempts = self.engine.attempts
        if len(attempts) == self.recorded:
            return
        for record in attempts[self.recorded :]:
            if self.circuits is not None:
                self.circuits.record(record.provider, record.outcome, self.plan.breaker.failure_threshold)
            self.watch.attempt_recorded(record)
        self.recorded = len(attempts)

    def announce(self, message: str) -> None:
        if not self.announced:
            self.announced = True
            self.watch.state_unavailable(message)

    async def send_now(self, action: StartAttempt, key: str | None, sink: TextSink | None) -> AttemptEvent:
        if action.provider.max_concurrency is not None:
            # Given up while it waited for a slot (the engine already forgot it): stop here,
            # before anything leaves, even if its wait ended in the same instant.
            await anyio.lowlevel.checkpoint_if_cancelled()
            # Fed at once, not queued: from here on the request leaves the process.
            self.engine.handle(AttemptHeld(attempt_id=action.attempt_id, at=self.clock(), held=False))
        self.probes.pop(action.provider.name, None)  # a probe on its way is the breaker's to judge
        return await perform_attempt(self.client, action, self.request, key, self.clock, sink)

    async def attempt(self, action: StartAttempt, scope: anyio.CancelScope) -> Event | None:
        """Perform ``action``: how it ended, or None when it was cancelled."""
        with scope:
            key = self.keys(action.provider)
            sink = self.on_text if action.exclusive else None
            async with self.slots.slot(action.provider):
                quotas = self.quotas
                if quotas is None or (not self.plan.caps and action.provider.max_concurrency is None):
                    event: Event = await self.send_now(action, key, sink)
                else:
                    guarded = _Guarded(self.plan, self.request, action, quotas, self.clock, self.announce)
                    event = await guarded.run(lambda sent: self.send_now(sent, key, sink))
            if isinstance(event, AttemptFailed) and key and key in event.error.message:
                # A provider may quote the key it was sent ("Incorrect API key provided: ...").
                error = msgspec.structs.replace(
                    event.error, message=event.error.message.replace(key, "<redacted>")
                )
                event = msgspec.structs.replace(event, error=error)
            return event
        self.release_probe(action.provider.name)  # cancelled: if it was never sent, hand it back
        return None

    async def attempt_task(self, action: StartAttempt, scope: anyio.CancelScope) -> None:
        event = await self.attempt(action, scope)
        if event is not None and self.send is not None:
            await self.send.send(event)

    async def health(self, spec: ProviderSpec) -> None:
        budget = min(HEALTH_TIMEOUT_S, max(self.engine.deadline - self.clock(), 0.0))
        report = await check_health(self.client, spec, self.keys(spec), budget, self.clock)
        if self.send is not None:
            await self.send.send(
                HealthObserved(
                    provider=spec.name, at=self.clock(), healthy=report.healthy, reason=report.reason
                )
            )

    def observe(self, event: Event) -> None:
        if isinstance(event, AttemptSucceeded | AttemptFailed | AttemptRefused):
            self.scopes.pop(event.attempt_id, None)
        if isinstance(event, AttemptRefused):  # nothing was sent
            self.release_probe(self.providers.get(event.attempt_id, ""))
        self.actions.extend(self.engine.handle(event))
        # Before any action: the breakers must know how the attempt ended before the engine's
        # next AdmitCircuit is answered.
        self.flush_records()

    def admit(self, spec: ProviderSpec) -> CircuitAnswered:
        answer = (
            self.circuits.admit(spec.name, self.plan.breaker.cooldown_s, self.probe_timeout_s)
            if self.circuits is not None
            else CircuitAnswer("allowed")
        )
        if answer.probe is not None:
            self.probes[spec.name] = answer.probe
        return CircuitAnswered(
            provider=spec.name, at=self.clock(), decision=answer.decision, retry_in_s=answer.retry_in_s
        )

    def release_probe(self, provider: str) -> None:
        """Hand back the probe this run was given for ``provider`` if it has not been sent; a
        store that cannot take it back lets it time out instead."""
        probe = self.probes.pop(provider, None)
        if probe is not None and self.circuits is not None:
            with contextlib.suppress(StoreError):
                self.circuits.release_probe(provider, probe)


class _Guarded:
    """One attempt under the shared state's limits: take the provider's slot and reserve the
    attempt's worst case (one call to the store), send, then settle and give the slot back (one
    call), whatever happens."""

    def __init__(
        self,
        plan: RunPlan,
        request: ChatRequest,
        action: StartAttempt,
        quotas: QuotaBook,
        clock: Callable[[], float],
        announce: Callable[[str], None],
    ) -> None:
        self.plan = plan
        self.request = request
        self.action = action
        self.book = quotas
        self.clock = clock
        self.announce = announce
        self.provider = action.provider
        self.holder = uuid.uuid4().hex
        self.held: _Held | None = None
        self.waited = False
        self.sent = False

    async def run(self, send: Callable[[StartAttempt], Awaitable[AttemptEvent]]) -> Event:
        """Send the attempt with ``send`` (which performs it) once it may go; its event, or
        ``AttemptRefused`` when it may not. Time spent waiting for a busy slot comes out of the
        attempt's timeout."""
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
            # Given up while it waited: release what it holds, nothing was sent.
            await anyio.lowlevel.checkpoint_if_cancelled()
            self.sent = True
            held = self.held
            if held is None or held.claim.slot is None:
                event = await send(sent)
                return event
            async with anyio.create_task_group() as renewing:
                renewing.start_soon(self._keep_slot, held.book, held.claim.slot)
                answered = await send(sent)
                renewing.cancel_scope.cancel()
            event = answered
            return event
        finally:
            with anyio.CancelScope(shield=True):
                self._end(event)

    # --- before: the provider's slot and the caps' reservation, in one call -----------------------

    def _claim(self) -> AttemptClaim:
        """The slot and the worst case to hold, the charges in the cap windows of now."""
        limit = self.provider.max_concurrency
        return AttemptClaim(
            holder=self.holder,
            lease_s=self.action.timeout_s + LEASE_MARGIN_S,
            slot=None if limit is None else Slot(name=self._slot_name(), limit=limit, lease_s=SLOT_LEASE_S),
            charges=attempt_charges(self.plan.caps, self.provider, self.request, time.time())
            if self.plan.caps
            else (),
        )

    async def _begin(self, started: float) -> AttemptRefused | None:
        """Take the slot and reserve, asking again after a pause while every slot is busy (for
        at most the attempt's timeout); refused when the caps or the state say no."""
        book = self.book
        for pause in _pauses():
            claim = self._claim()  # after any wait: in the windows of now
            try:
                answer = book.begin_attempt(claim, time.time())
            except StoreUnavailable as exc:
                if claim.charges and not self._fails_open():
                    return self._refused(ErrorKind.BUDGET, _fail_closed_message(exc))
                book = self._fall_back(exc)
                continue
            if answer is None:
                self.held = _Held(book, claim)
                return None
            if isinstance(answer, Refusal):
                kind = ErrorKind.BUDGET if answer.resource is Resource.USD else ErrorKind.QUOTA
                return self._refused(kind, answer.message)
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

    async def _keep_slot(self, book: QuotaBook, slot: Slot) -> None:
        """Renew the slot's lease while the request runs (asking again for a slot one holds
        renews it); a renewal the store cannot take is left to the next one."""
        while True:
            await anyio.sleep(SLOT_RENEW_S)
            with contextlib.suppress(StoreError):
                book.acquire_slot(slot.name, slot.limit, self.holder, time.time(), SLOT_LEASE_S)

    def _slot_name(self) -> str:
        return f"provider:{self.provider.name}"

    # --- after: settle and give the slot back, in one call -----------------------------------------

    def _end(self, event: Event | None) -> None:
        """Settle the reservation with what the attempt used: its answer's usage, a failure's
        (none when unknown), or, when it was cut off with no event (cancelled: a lost race, the
        deadline), the prompt's estimate, since the prompt may have been billed; and give the
        slot back. Given up before it was sent, the reservation is released instead."""
        held, self.held = self.held, None
        if held is None:
            return
        used = self._used(event, held.claim.charges) if self.sent else None
        try:
            held.book.end_attempt(held.claim, used, time.time())
        except StoreUnavailable as exc:
            # The shared state went away while the request ran: the spend is kept on this host,
            # and the shared reservation and slot end with their leases.
            if used:
                with contextlib.suppress(StoreError):
                    self._fall_back(exc).end_attempt(held.claim, used, time.time())
        except StoreError:
            pass  # the leases end them; the run's own accounts stand

    def _used(self, event: Event | None, charges: Sequence[Charge]) -> tuple[Charge, ...]:
        if isinstance(event, AttemptSucceeded):
            usage = event.completion.usage
        elif isinstance(event, AttemptFailed):
            usage = event.usage or Usage()
        else:
            usage = Usage(input_tokens=estimate_prompt_tokens(self.request), estimated=True)
        return attempt_settlement(charges, usage, self.provider)

    # --- helpers -----------------------------------------------------------------------------

    def _fails_open(self) -> bool:
        return self.plan.on_state_unavailable == "fail_open"

    def _fall_back(self, exc: StoreUnavailable) -> QuotaBook:
        book, first = self.book.fallback()
        if first and self._fails_open():
            self.announce(
                f"{exc.message}; the policy fails open, so {self.provider.name}'s caps and "
                "concurrency are counted on this host only until it is back"
            )
        return book

    def _refused(self, kind: ErrorKind, message: str) -> AttemptRefused:
        return AttemptRefused(attempt_id=self.action.attempt_id, at=self.clock(), kind=kind, message=message)


class _Held(NamedTuple):
    """What an attempt holds while it runs, and in which book (the shared state's, or this
    host's when it fell back)."""

    book: QuotaBook
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
