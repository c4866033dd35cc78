"""Circuit breakers in words and in JSON, as ``rmgr circuits`` and ``rmgr health`` show them.

A stored circuit knows when it opened, not when it will let a probe through: that is its
``opened_at`` plus the ``[breaker] cooldown_s`` of the policy that refuses it, which each run
reads from its own policy. So every "open until" here is computed with the cooldown of the policy
the command was given (``--policy``, or the default policy's 30 s), and says so where it shows.
Times for people are local clock times (``14:03:12``, with the date when it is not today); times
in JSON are ISO 8601 in UTC, as elsewhere in ``rmgr``.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from rmcore.breaker import CircuitState

__all__ = [
    "circuit_json",
    "describe",
    "duration",
    "failures_text",
    "health_note",
    "is_clean",
    "local_moment",
    "probe_at",
]


def is_clean(circuit: CircuitState) -> bool:
    """Closed with no failure counted: what a provider never recorded is, and what a reset leaves."""
    return circuit == CircuitState(provider=circuit.provider)


def probe_at(circuit: CircuitState, cooldown_s: float) -> float | None:
    """When an open circuit lets its probe through (epoch seconds), by ``cooldown_s``; None unless open."""
    if circuit.state != "open" or circuit.opened_at is None:
        return None
    return circuit.opened_at + cooldown_s


def local_moment(at_s: float, now_s: float) -> str:
    """``at_s`` on the local clock: ``14:03:12`` today, ``2026-03-01 14:03:12`` on another day."""
    moment, today = time.localtime(at_s), time.localtime(now_s)
    same_day = moment[:3] == today[:3]
    return time.strftime("%H:%M:%S" if same_day else "%Y-%m-%d %H:%M:%S", moment)


def duration(seconds: float) -> str:
    """A span a person reads at a glance: ``25 s``, ``4 min``, ``2 h 5 min``, ``3 d 1 h``."""
    whole = max(round(seconds), 0)
    days, rest = divmod(whole, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min" if whole >= 120 else f"{whole} s"
    return f"{secs} s"


def _failures(circuit: CircuitState) -> str:
    n = circuit.consecutive_failures
    return f"{n} failure{'' if n == 1 else 's'} in a row"


def describe(circuit: CircuitState, cooldown_s: float, now: float) -> str:
    """The circuit in words: ``closed``, ``open until 14:03:12 (in 25 s)``, ``open, probe due
    since 14:03:12`` (the next request probes it), or ``half-open: probe sent 14:03:12 (4 s ago)``."""
    if circuit.state == "half_open" and circuit.probe_started_at is not None:
        sent = circuit.probe_started_at
        return f"half-open: probe sent {local_moment(sent, now)} ({duration(now - sent)} ago)"
    at = probe_at(circuit, cooldown_s)
    if at is None:
        return "closed"
    if at > now:
        return f"open until {local_moment(at, now)} (in {duration(at - now)})"
    return f"open, probe due since {local_moment(at, now)}"


def health_note(circuit: CircuitState, cooldown_s: float, now: float, *, healthy: bool) -> str | None:
    """What ``rmgr health`` adds to a provider's reason about its circuit, None when it is closed:
    ``circuit open until 14:03:12 (in 25 s; 2 failures in a row)``. A provider that answers while
    its circuit still refuses requests is shown how to use it at once."""
    if circuit.state == "closed":
        return None
    at = probe_at(circuit, cooldown_s)
    if at is not None and at <= now:
        return f"circuit open ({_failures(circuit)}): the next request probes it"
    words = describe(circuit, cooldown_s, now)
    note = f"circuit {words[:-1]}; {_failures(circuit)})"
    return f"{note}; rmgr circuits reset {circuit.provider} to use it now" if healthy else note


def _iso(at_s: float | None) -> str | None:
    if at_s is None:
        return None
    moment = dt.datetime.fromtimestamp(at_s, tz=dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def circuit_json(circuit: CircuitState, cooldown_s: float, now: float) -> dict[str, Any]:
    """One row of ``rmgr circuits --json``: ``{provider, state, consecutiveFailures, openedAt,
    probeAt, probeInS, probeStartedAt, cooldownS}``; ``probeAt`` is when an open circuit lets its
    probe through by ``cooldownS`` (``probeInS`` 0 once that has passed), times ISO 8601 UTC."""
    at = probe_at(circuit, cooldown_s)
    return {
        "provider": circuit.provider,
        "state": circuit.state,
        "consecutiveFailures": circuit.consecutive_failures,
        "openedAt": _iso(circuit.opened_at),
        "probeAt": _iso(at),
        "probeInS": None if at is None else round(max(at - now, 0.0), 1),
        "probeStartedAt": _iso(circuit.probe_started_at),
        "cooldownS": cooldown_s,
    }


def failures_text(circuit: CircuitState, threshold: int) -> str:
    """The consecutive failures counted, against the threshold that opens the circuit: ``1 of 3``;
    past it (requests already under way when it opened failed too), ``8 (opens at 3)``."""
    failures = circuit.consecutive_failures
    return f"{failures} of {threshold}" if failures <= threshold else f"{failures} (opens at {threshold})"
