"""Per-provider circuit breakers as values: when a provider may be asked, and what its outcomes do.

A circuit is *closed* (requests flow), *open* (the provider failed ``failure_threshold`` times in
a row, so it is passed over) or *half-open* (the cooldown has passed and exactly one request, the
probe, is let through to decide: success closes the circuit, a breaking failure reopens it).

The state is shared by every ``rmgr`` process through the state store, so its times are
wall-clock seconds since the Unix epoch, always passed in by the caller. The store applies
``admit`` and ``record`` inside one write transaction each, which is what makes "exactly one
probe" hold between processes.

Choices, stated once:

- Only failures that say the *provider* is broken count (the ``breaking`` column of
  :data:`rmcore.conduct.CONDUCT`, re-exported here as ``BREAKING_KINDS``). ``auth`` is one of
  them: a missing or wrong key fails every request to that provider, and opening its circuit
  saves a round trip per run until the key is fixed (after which the first probe closes it).
  ``unhealthy`` (the health check before use failed) is one too. Failures that are about the
  request or the run (``bad_request``, ``context_length``, ``content_filter``, ``cancelled``,
  ``budget``, ``deadline``) and ``circuit_open`` itself are not.
- A non-breaking outcome is no verdict on the provider and changes nothing: the failure count
  is neither raised nor reset, and a half-open circuit keeps its probe running. Only a verdict
  ("ok" or a breaking failure) or the probe timeout ends a probe; outcomes carry no mark of
  which request was the probe, so a late, unrelated outcome must not let a second probe in.
- A probe whose verdict never arrives (its process crashed or was killed, or it ended without
  a verdict) is given up after ``probe_timeout_s``; then the next caller becomes the probe.
- A breaking failure recorded while the circuit is already open (a request admitted before it
  opened, ending late) raises the count but does not restart the cooldown.
- A probe that is never sent (its attempt was refused by a quota or budget, or given up while it
  waited for a slot) is handed back with ``release_probe``: the circuit is open again with its
  cooldown already run, so the next caller becomes the probe at once instead of every caller
  waiting out the probe timeout.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from rmcore.base import Base
from rmcore.conduct import BREAKING_KINDS, conduct_of

__all__ = [
    "BREAKING_KINDS",
    "Admission",
    "CircuitPhase",
    "CircuitState",
    "Decision",
    "admit",
    "is_breaking",
    "record",
    "release_probe",
]

CircuitPhase = Literal["closed", "open", "half_open"]
"""Where a circuit is: requests flow, requests are refused, or one probe decides."""

Decision = Literal["allowed", "probe", "refused"]
"""What ``admit`` said: send the request, send it as the one probe, or pass the target over."""

_OK = "ok"


class CircuitState(Base, frozen=True):
    """One provider's circuit. ``CircuitState(provider=name)`` is a closed circuit with no failures.

    ``consecutive_failures`` counts breaking failures since the last success. ``opened_at`` is
    when the circuit last opened (None while closed). ``probe_started_at`` is when the current
    half-open probe was admitted (None unless half-open). Times are epoch seconds.
    """

    provider: str
    state: CircuitPhase = "closed"
    consecutive_failures: int = 0
    opened_at: float | None = None
    probe_started_at: float | None = None

    def __post_init__(self) -> None:
        """Refuse combinations no transition produces (e.g. from a hand-edited store): an open or
        half-open circuit has ``opened_at``; a half-open one, and only it, has ``probe_started_at``."""
        if self.state == "closed" and self.opened_at is not None:
            raise ValueError("a closed circuit has no opened_at")
        if self.state != "closed" and self.opened_at is None:
            raise ValueError(f"a {self.state} circuit needs opened_at")
        if (self.state == "half_open") != (self.probe_started_at is not None):
            raise ValueError("a half-open circuit, and only it, has probe_started_at")
        if self.consecutive_failures < 0:
            raise ValueError("consecutive_failures cannot be negative")


class Admission(Base, frozen=True):
    """The answer of ``admit``: the decision, and the circuit's new state, to be stored.

    ``retry_at`` is set when the request is refused: the earliest time (epoch seconds) at which
    ``admit`` will let a request through if no outcome is recorded meanwhile. For an open circuit
    that is the end of its cooldown; for a half-open one whose probe is running, the moment that
    probe would be given up.
    """

    decision: Decision
    state: CircuitState
    retry_at: float | None = None

    @property
    def admitted(self) -> bool:
        """True when the request may be sent (``allowed`` or ``probe``)."""
        return self.decision != "refused"


def is_breaking(outcome: str) -> bool:
    """Whether ``outcome`` (``"ok"`` or an ``ErrorKind`` value) counts against the provider.

    Raises ``ValueError`` for a string that is neither, so that a typo cannot pass silently.
    """
    row = conduct_of(outcome)
    return row is not None and row.breaking


def admit(state: CircuitState, now: float, *, cooldown_s: float, probe_timeout_s: float) -> Admission:
    """May a request be sent to ``state.provider`` at ``now``?

    Closed: allowed, state unchanged. Open: refused until ``opened_at + cooldown_s``; from then on
    the first caller is the probe and the circuit becomes half-open with ``probe_started_at=now``.
    Half-open: refused while the probe runs, until ``probe_started_at + probe_timeout_s`` (the
    probe is then taken to be lost); from then on the first caller is the new probe.
    """
    if state.state == "closed":
        return Admission(decision="allowed", state=state)
    if state.state == "open":
        assert state.opened_at is not None  # guaranteed by CircuitState.__post_init__
        probe_at = state.opened_at + cooldown_s
        if now < probe_at:
            return Admission(decision="refused", state=state, retry_at=probe_at)
        return _probe(state, now)
    assert state.probe_started_at is not None  # guaranteed by CircuitState.__post_init__
    given_up_at = state.probe_started_at + probe_timeout_s
    if now < given_up_at:
        return Admission(decision="refused", state=state, retry_at=given_up_at)
    return _probe(state, now)


def record(state: CircuitState, outcome: str, now: float, *, failure_threshold: int) -> CircuitState:
    """The circuit after a request to its provider ended in ``outcome`` (``"ok"`` or an
    ``ErrorKind`` value) at ``now``.

    ``"ok"`` closes the circuit and resets its count, whatever the state. A breaking failure
    raises the count; it opens a closed circuit once the count reaches ``failure_threshold``
    (``opened_at=now``), reopens a half-open one (its probe failed; ``opened_at=now``) and leaves
    an open one open with its cooldown unchanged. Any other failure returns ``state`` unchanged.
    Raises ``ValueError`` for an unknown outcome or a ``failure_threshold`` below 1.
    """
    if failure_threshold < 1:
        raise ValueError(f"failure_threshold must be at least 1, not {failure_threshold}")
    if outcome == _OK:
        return CircuitState(provider=state.provider)
    if not is_breaking(outcome):
        return state
    failures = state.consecutive_failures + 1
    if state.state == "open":
        return msgspec.structs.replace(state, consecutive_failures=failures)
    if state.state == "half_open" or failures >= failure_threshold:
        return CircuitState(
            provider=state.provider,
            state="open",
            consecutive_failures=failures,
            opened_at=now,
        )
    return msgspec.structs.replace(state, consecutive_failures=failures)


def release_probe(state: CircuitState, probe_started_at: float) -> CircuitState:
    """The circuit after the probe admitted at ``probe_started_at`` was never sent: open again,
    as it was before that admission (its count and ``opened_at`` kept, so its cooldown is over).

    Only that probe is handed back: when the circuit is not half-open with that very probe (its
    verdict came, or it timed out and another caller took a newer probe), ``state`` is returned
    unchanged, so that a late release can never let a second probe in.
    """
    if state.state != "half_open" or state.probe_started_at != probe_started_at:
        return state
    return msgspec.structs.replace(state, state="open", probe_started_at=None)


def _probe(state: CircuitState, now: float) -> Admission:
    return Admission(
        decision="probe",
        state=msgspec.structs.replace(state, state="half_open", probe_started_at=now),
    )
