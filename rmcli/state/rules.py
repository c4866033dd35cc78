"""What the SQLite and the Redis backends do alike, written once: the checks of what they are asked
to store, how an attempt is laid out, and the breaker's rules around each backend's one primitive
for circuits (``_change``: a decision applied to one stored circuit atomically)."""

from __future__ import annotations

import abc
import functools
import math
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, TypeAlias, TypeVar

import msgspec

from rmcli.state import base
from rmcli.state.base import HISTORY_ID_MIN_PREFIX, AttemptClaim, CacheStats, Slot, SlotBusy, StoreError
from rmcore import breaker
from rmcore.attempts import AttemptRecord
from rmcore.breaker import Admission, CircuitState
from rmcore.quota import Refusal
from rmcore.usage import AttemptRow

MAX_MESSAGE_CHARS: Final = 2000
"""Attempt messages are cut to this many characters."""
PRUNE_AFTER_S: Final = 86_400.0
"""How long after a cap window ends its settled use is kept: a day, so that hosts whose clocks run
a little behind still count the whole window."""
NEW_ID_TRIES: Final = 8
"""Random history ids drawn before giving up on finding a free one."""
ATTEMPT_FIELDS: Final = (
    "run_id", "command", "provider", "model", "outcome", "status", "latency_ms", "started_at_ms",
    "input_tokens", "output_tokens", "usage_estimated", "cost_usd", "message", "perspective",
)
"""How an attempt is stored: the SQLite columns, and the JSON array in Redis, in this order."""
HISTORY_FIELDS: Final = ("id", "agent_id", "question", "status", "overall_confidence", "created_ms")

_T = TypeVar("_T")
Decide: TypeAlias = Callable[[CircuitState], tuple[_T, CircuitState]]
"""A decision on a circuit: its answer, and the circuit's new state."""


def new_history_id() -> str:
    """A fresh history id: 12 random lowercase hex digits (tests replace it to choose ids)."""
    return uuid.uuid4().hex[:12]


def id_prefix(reference: str) -> str | None:
    """The lowercase hex prefix ``reference`` stands for, None when it is too short or not hex."""
    prefix = reference.strip().lower()
    return prefix if len(prefix) >= HISTORY_ID_MIN_PREFIX and set(prefix) <= set("0123456789abcdef") else None


def check(*, ttl_ms: int = 0, limit: int | None = None, confidence: float | None = None) -> None:
    """Refuse (``ValueError``) a negative cache TTL or listing limit, a confidence outside 0.0 to 1.0."""
    if ttl_ms < 0:
        raise ValueError(f"the cache TTL must not be negative, not {ttl_ms} ms")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must not be negative, not {limit}")
    if confidence is not None and not 0.0 <= confidence <= 1.0:
        raise ValueError(f"overall confidence must be within 0.0 to 1.0 or None, not {confidence!r}")


def attempt_values(origin: base.Origin, record: AttemptRecord) -> tuple[object, ...]:
    """The stored form of an attempt, field by field as ``ATTEMPT_FIELDS``; no key is ever in it."""
    message, usage = None if record.message is None else record.message[:MAX_MESSAGE_CHARS], record.usage
    return (
        origin.run_id, origin.command, record.provider, record.model, record.outcome, record.status,
        float(record.latency_ms), int(record.started_at_ms), usage.input_tokens, usage.output_tokens,
        int(usage.estimated), float(record.cost_usd), message, origin.perspective,
    )


def attempt_row(values: Sequence[object], corrupt: Callable[[str], StoreError]) -> AttemptRow:
    """An attempt read back, from its stored fields (``ATTEMPT_FIELDS``; before schema 7, no perspective)."""
    values = (*values, None) if len(values) == len(ATTEMPT_FIELDS) - 1 else values
    if len(values) != len(ATTEMPT_FIELDS):
        raise corrupt(f"an attempt has {len(values)} fields, not {len(ATTEMPT_FIELDS)}")
    stored = dict(zip(ATTEMPT_FIELDS, values, strict=True))
    data = {name: stored[name] for name in AttemptRow.__struct_fields__}
    return convert(data, AttemptRow, "an attempt", corrupt)


def convert(data: Mapping[str, Any], kind: type[_T], what: str, corrupt: Callable[[str], StoreError]) -> _T:
    """``data`` as a ``kind``, or the backend's ``StoreError`` saying ``what`` is impossible."""
    try:
        return msgspec.convert(data, kind, strict=False)
    except msgspec.ValidationError as exc:
        raise corrupt(f"{what} is impossible: {exc}") from None


def cache_stats(
    entries: int, fresh: int, oldest: int | None, newest: int | None, size: int, hits: int, misses: int
) -> CacheStats:
    """``CacheStats`` from its counts (``hit_rate`` None before the first lookup)."""
    rate = hits / (hits + misses) if hits + misses else None
    return CacheStats(entries=entries, fresh_entries=fresh, hits=hits, misses=misses, hit_rate=rate,
                      oldest_ms=oldest, newest_ms=newest, bytes=size)


def history_stats(entries: Sequence[base.HistoryEntry]) -> base.HistoryStats:
    """The summary of ``entries``: counts per status, and confidence and dates over those known."""
    known = [entry.overall_confidence for entry in entries if entry.overall_confidence is not None]
    times = [entry.created_ms for entry in entries]
    return base.HistoryStats(
        total=len(entries), by_status=dict(sorted(Counter(entry.status for entry in entries).items())),
        with_confidence=len(known), average_confidence=math.fsum(known) / len(known) if known else None,
        min_confidence=min(known, default=None), max_confidence=max(known, default=None),
        first_ms=min(times, default=None), last_ms=max(times, default=None),
    )


class CircuitRules(abc.ABC):
    """``Circuits`` over a backend's ``_change``, saving one write: a success on a circuit this object
    last admitted closed and clean is not sent (it would change nothing, yet cost a round trip on
    every routed call). It counts as done at that admission, so a failure another process recorded
    since stays counted, the conservative side; any other outcome or admission forgets it."""

    def __init__(self) -> None:
        self._clean: set[str] = set()

    @abc.abstractmethod
    async def _change(self, provider: str, decide: Decide[_T], now: float) -> _T:
        """``decide``'s answer on ``provider``'s stored circuit (closed when none); the new state it
        gives is written, dated ``now``, only if it differs and the circuit still holds what it saw."""

    async def admit(self, provider: str, now: float, cooldown_s: float, probe_timeout_s: float) -> Admission:
        """``rmcore.breaker.admit`` on the stored circuit: of processes asking an open, cooled-down
        circuit at once, exactly one gets the probe."""
        def decide(current: CircuitState) -> tuple[Admission, CircuitState]:
            admission = breaker.admit(current, now, cooldown_s=cooldown_s, probe_timeout_s=probe_timeout_s)
            return admission, admission.state

        admission = await self._change(provider, decide, now)
        clean = admission.decision == "allowed" and admission.state == CircuitState(provider=provider)
        (self._clean.add if clean else self._clean.discard)(provider)
        return admission

    async def record(self, provider: str, outcome: str, now: float, failure_threshold: int) -> CircuitState:
        """``rmcore.breaker.record`` on the stored circuit: outcomes recorded at once all count. An
        unknown outcome raises ``ValueError`` and stores nothing."""
        breaker.is_breaking(outcome)
        if outcome == "ok" and provider in self._clean:
            return CircuitState(provider=provider)
        self._clean.discard(provider)
        threshold = failure_threshold
        change = functools.partial(breaker.record, outcome=outcome, now=now, failure_threshold=threshold)
        return await self._change(provider, lambda c: _same(change(c)), now)

    async def release_probe(self, provider: str, probe_started_at: float, now: float) -> CircuitState:
        """``rmcore.breaker.release_probe`` on the stored circuit."""
        self._clean.discard(provider)
        return await self._change(provider, lambda c: _same(breaker.release_probe(c, probe_started_at)), now)


def _same(state: CircuitState) -> tuple[CircuitState, CircuitState]:
    return state, state


class CapsRules(abc.ABC):
    """``Caps.renew`` as ``begin`` of a claim of the slot alone, for both backends."""

    @abc.abstractmethod
    async def begin(self, claim: AttemptClaim, now: float) -> Refusal | SlotBusy | None:
        """See ``Caps.begin``."""

    async def renew(self, slot: Slot, holder: str, now: float) -> bool:
        """Renew (or take) ``holder``'s slot; False when every slot is held by others."""
        return await self.begin(AttemptClaim(holder=holder, lease_s=slot.lease_s, slot=slot), now) is None
