"""How ``rmgr circuits`` and ``rmgr health`` put a circuit breaker in words and in JSON."""

from __future__ import annotations

import time

from rmcli.circuit_view import (
    circuit_json,
    describe,
    duration,
    failures_text,
    health_note,
    is_clean,
    local_moment,
)
from rmcore.breaker import CircuitState

NOW = 1_800_000_000.0
OPEN = CircuitState(provider="glm-direct", state="open", consecutive_failures=2, opened_at=NOW - 10)
PROBING = CircuitState(
    provider="glm-direct",
    state="half_open",
    consecutive_failures=3,
    opened_at=NOW - 60,
    probe_started_at=NOW - 4,
)


def clock(at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at))


def test_an_open_circuit_says_until_when_by_the_cooldown_given() -> None:
    """Open: until its opening plus the cooldown, on the local clock, and how long that is."""
    assert describe(OPEN, 30.0, NOW) == f"open until {clock(NOW + 20)} (in 20 s)"
    assert describe(OPEN, 600.0, NOW) == f"open until {clock(NOW + 590)} (in 9 min)"


def test_an_open_circuit_past_its_cooldown_is_due_a_probe() -> None:
    """Once the cooldown has passed, the next request probes it: said, with no reset advice."""
    assert describe(OPEN, 5.0, NOW) == f"open, probe due since {clock(NOW - 5)}"
    assert (
        health_note(OPEN, 5.0, NOW, healthy=True)
        == "circuit open (2 failures in a row): the next request probes it"
    )


def test_a_half_open_circuit_says_when_its_probe_left() -> None:
    """Half-open: the probe's local time and how long ago it was sent."""
    assert describe(PROBING, 30.0, NOW) == f"half-open: probe sent {clock(NOW - 4)} (4 s ago)"


def test_health_adds_reset_advice_only_when_the_provider_answers() -> None:
    """A provider that answers while its circuit refuses requests is told how to use it now; a
    failing one is not; a closed circuit adds nothing, even with failures counted."""
    failing = health_note(OPEN, 30.0, NOW, healthy=False)
    assert failing == f"circuit open until {clock(NOW + 20)} (in 20 s; 2 failures in a row)"
    assert (
        health_note(OPEN, 30.0, NOW, healthy=True)
        == f"{failing}; rmgr circuits reset glm-direct to use it now"
    )
    counted = CircuitState(provider="p", consecutive_failures=1)
    assert health_note(counted, 30.0, NOW, healthy=False) is None
    assert not is_clean(counted) and is_clean(CircuitState(provider="p"))


def test_json_rows_carry_iso_times_and_the_probe_time() -> None:
    """JSON: times ISO 8601 in UTC; ``probeAt`` the opening plus the cooldown; ``probeInS`` never
    negative; nulls for a closed circuit."""
    row = circuit_json(OPEN, 30.0, NOW)
    assert row == {
        "provider": "glm-direct",
        "state": "open",
        "consecutiveFailures": 2,
        "openedAt": "2027-01-15T07:59:50.000Z",
        "probeAt": "2027-01-15T08:00:20.000Z",
        "probeInS": 20.0,
        "probeStartedAt": None,
        "cooldownS": 30.0,
    }
    assert circuit_json(OPEN, 1.0, NOW)["probeInS"] == 0.0
    closed = circuit_json(CircuitState(provider="p"), 30.0, NOW)
    assert (closed["openedAt"], closed["probeAt"], closed["probeInS"]) == (None, None, None)


def test_times_on_another_day_carry_their_date_and_spans_read_at_a_glance() -> None:
    """A moment not today shows its date; spans are whole seconds up to two minutes, then
    minutes, hours and days."""
    assert local_moment(NOW, NOW) == clock(NOW)
    assert local_moment(NOW - 3 * 86_400, NOW) == time.strftime(
        "%Y-%m-%d %H:%M:%S", time.localtime(NOW - 3 * 86_400)
    )
    assert [duration(s) for s in (0.4, 59, 119, 120, 3_700, 90_000)] == [
        "0 s",
        "59 s",
        "119 s",
        "2 min",
        "1 h 1 min",
        "1 d 1 h",
    ]


def test_failures_past_the_threshold_do_not_read_as_a_fraction() -> None:
    """``2 of 3`` counts towards opening; ``8 (opens at 3)`` when requests already under way when
    it opened failed too (never ``8 of 3``)."""
    assert failures_text(OPEN, 3) == "2 of 3"
    assert failures_text(CircuitState(provider="p", consecutive_failures=8), 3) == "8 (opens at 3)"
