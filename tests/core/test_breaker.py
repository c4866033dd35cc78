"""Circuit breakers: the transitions one by one, then invariants over any sequence of operations."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rmcore.breaker import (
    BREAKING_KINDS,
    Admission,
    CircuitState,
    admit,
    is_breaking,
    record,
    release_probe,
)
from rmcore.errors import ErrorKind

COOLDOWN_S = 30.0
PROBE_TIMEOUT_S = 60.0


def admit_at(state: CircuitState, now: float) -> Admission:
    return admit(state, now, cooldown_s=COOLDOWN_S, probe_timeout_s=PROBE_TIMEOUT_S)


def fail(state: CircuitState, now: float, kind: str = "server_error", threshold: int = 3) -> CircuitState:
    return record(state, kind, now, failure_threshold=threshold)


def opened(at: float = 100.0, failures: int = 3) -> CircuitState:
    return CircuitState(provider="p", state="open", consecutive_failures=failures, opened_at=at)


# --- which failures count ----------------------------------------------------------------------


def test_breaking_kinds_are_exactly_the_provider_failures() -> None:
    """The kinds that count against a circuit are exactly those that say the provider is broken."""
    assert {kind.value for kind in BREAKING_KINDS} == {
        "connection",
        "timeout",
        "first_token_timeout",
        "stream_stalled",
        "stream_truncated",
        "server_error",
        "overloaded",
        "rate_limited",
        "malformed_response",
        "auth",
        "unhealthy",
    }


@pytest.mark.parametrize(
    "kind",
    [
        "bad_request",
        "context_length",
        "content_filter",
        "cancelled",
        "budget",
        "deadline",
        "circuit_open",
        "unsupported",
    ],
)
def test_request_and_run_failures_do_not_count(kind: str) -> None:
    """Failures of the request or of the run (bad request, context length, content filter, cancelled,
    budget, deadline, open circuit) do not count."""
    assert not is_breaking(kind)


def test_ok_is_not_breaking_and_unknown_outcomes_are_refused() -> None:
    """``ok`` is not a failure, and an outcome that is no kind is refused rather than guessed."""
    assert not is_breaking("ok")
    with pytest.raises(ValueError):
        is_breaking("server-error")
    with pytest.raises(ValueError):
        record(CircuitState(provider="p"), "oops", 0.0, failure_threshold=3)


# --- closed --------------------------------------------------------------------------------------


def test_a_new_circuit_is_closed_and_allows() -> None:
    """A provider never seen has a closed circuit that lets requests through."""
    state = CircuitState(provider="p")
    admission = admit_at(state, 0.0)
    assert admission == Admission(decision="allowed", state=state)
    assert admission.admitted


def test_threshold_consecutive_breaking_failures_open_the_circuit() -> None:
    """``failure_threshold`` breaking failures in a row open the circuit at the last one's moment."""
    state = CircuitState(provider="p")
    state = fail(state, 1.0, "connection")
    state = fail(state, 2.0, "timeout")
    assert state == CircuitState(provider="p", consecutive_failures=2)
    state = fail(state, 3.0, "auth")
    assert state == CircuitState(provider="p", state="open", consecutive_failures=3, opened_at=3.0)


def test_a_success_resets_the_count() -> None:
    """A success resets the count of consecutive failures."""
    state = fail(fail(CircuitState(provider="p"), 1.0), 2.0)
    state = record(state, "ok", 3.0, failure_threshold=3)
    assert state == CircuitState(provider="p")
    assert fail(fail(state, 4.0), 5.0).state == "closed"


def test_non_breaking_failures_leave_the_count_unchanged() -> None:
    """Failures that do not count neither add to nor reset the count."""
    state = fail(fail(CircuitState(provider="p"), 1.0), 2.0)
    for kind in ("bad_request", "context_length", "content_filter", "cancelled", "deadline"):
        assert record(state, kind, 3.0, failure_threshold=3) == state
    assert fail(state, 4.0).state == "open"


def test_a_threshold_below_one_is_refused() -> None:
    """A failure threshold below 1 is refused."""
    with pytest.raises(ValueError, match="at least 1"):
        record(CircuitState(provider="p"), "timeout", 0.0, failure_threshold=0)


# --- open, half-open and the probe ---------------------------------------------------------------


def test_an_open_circuit_refuses_until_the_cooldown_has_passed() -> None:
    """An open circuit refuses every request until its cooldown has passed, saying when that is."""
    state = opened(at=100.0)
    for now in (100.0, 110.0, 129.999):
        admission = admit_at(state, now)
        assert admission == Admission(decision="refused", state=state, retry_at=130.0)
        assert not admission.admitted


def test_after_the_cooldown_the_first_caller_is_the_probe_and_the_next_is_refused() -> None:
    """Once cooled down, the first caller becomes the one half-open probe; the others are refused until it
    times out."""
    probe = admit_at(opened(at=100.0), 130.0)
    assert probe.decision == "probe"
    assert probe.admitted
    assert probe.state == CircuitState(
        provider="p", state="half_open", consecutive_failures=3, opened_at=100.0, probe_started_at=130.0
    )
    second = admit_at(probe.state, 131.0)
    assert second == Admission(decision="refused", state=probe.state, retry_at=190.0)


def test_a_successful_probe_closes_the_circuit() -> None:
    """A probe that succeeds closes the circuit."""
    probe = admit_at(opened(), 200.0)
    assert record(probe.state, "ok", 201.0, failure_threshold=3) == CircuitState(provider="p")


def test_a_failed_probe_reopens_the_circuit_for_a_new_cooldown() -> None:
    """A probe that fails opens the circuit again for a whole new cooldown, whatever the threshold."""
    probe = admit_at(opened(at=100.0), 200.0)
    reopened = fail(probe.state, 205.0, "overloaded", threshold=10)
    assert reopened == CircuitState(provider="p", state="open", consecutive_failures=4, opened_at=205.0)
    assert admit_at(reopened, 234.0).retry_at == 235.0
    assert admit_at(reopened, 235.0).decision == "probe"


def test_a_probe_without_a_verdict_keeps_the_slot_until_it_times_out() -> None:
    """A probe that ends cancelled gives no verdict; nobody else probes until the probe timeout."""
    probe = admit_at(opened(), 200.0)
    after = record(probe.state, "cancelled", 201.0, failure_threshold=3)
    assert after == probe.state
    assert admit_at(after, 259.9).decision == "refused"
    retaken = admit_at(after, 260.0)
    assert retaken.decision == "probe"
    assert retaken.state.probe_started_at == 260.0


def test_a_probe_never_sent_is_handed_back_and_the_next_caller_probes_at_once() -> None:
    """A probe given up before it was sent is handed back: the next caller probes at once."""
    probe = admit_at(opened(at=100.0), 200.0)
    released = release_probe(probe.state, 200.0)
    assert released == opened(at=100.0)
    taken = admit_at(released, 200.5)
    assert taken.decision == "probe"
    assert taken.state.probe_started_at == 200.5


def test_only_the_probe_released_is_handed_back() -> None:
    """A release that comes late (its probe timed out and another caller holds a newer one, or
    a verdict already came) changes nothing: it never lets a second probe in."""
    first = admit_at(opened(), 200.0)
    second = admit_at(first.state, 260.0)
    assert second.decision == "probe"
    assert release_probe(second.state, 200.0) == second.state
    assert admit_at(release_probe(second.state, 200.0), 261.0).decision == "refused"
    closed = record(first.state, "ok", 201.0, failure_threshold=3)
    assert release_probe(closed, 200.0) == closed
    reopened = fail(first.state, 201.0)
    assert release_probe(reopened, 200.0) == reopened


def test_a_late_failure_does_not_restart_the_cooldown() -> None:
    """A failure recorded while the circuit is already open counts but does not restart the cooldown."""
    state = fail(opened(at=100.0), 120.0)
    assert state == opened(at=100.0, failures=4)
    assert admit_at(state, 130.0).decision == "probe"


def test_inconsistent_states_are_refused() -> None:
    """States that cannot happen (open without a moment, a probe while open, negative counts, unknown
    phases) are refused."""
    with pytest.raises(ValueError):
        CircuitState(provider="p", state="open")
    with pytest.raises(ValueError):
        CircuitState(provider="p", opened_at=1.0)
    with pytest.raises(ValueError):
        CircuitState(provider="p", state="half_open", opened_at=1.0)
    with pytest.raises(ValueError):
        CircuitState(provider="p", state="open", opened_at=1.0, probe_started_at=2.0)
    with pytest.raises(ValueError):
        CircuitState(provider="p", consecutive_failures=-1)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"provider": "p", "state": "ajar"}, CircuitState)


# --- invariants over any sequence -----------------------------------------------------------------

OUTCOMES = ["ok", *sorted(kind.value for kind in ErrorKind)]
steps = st.one_of(
    st.integers(min_value=0, max_value=40).map(float),
    st.floats(min_value=0.0, max_value=40.0, allow_nan=False),
)
operations = st.lists(
    st.tuples(st.sampled_from(["admit", "record", "release"]), st.sampled_from(OUTCOMES), steps),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(
    ops=operations,
    threshold=st.integers(min_value=1, max_value=4),
    cooldown_s=st.integers(min_value=0, max_value=30).map(float),
    probe_timeout_s=st.integers(min_value=1, max_value=60).map(float),
)
def test_invariants_over_any_sequence(
    ops: list[tuple[str, str, float]], threshold: int, cooldown_s: float, probe_timeout_s: float
) -> None:
    """With non-decreasing times: closed always allows; an open circuit refuses before its
    cooldown ends and admits a probe after it; at most one probe is admitted until an outcome is
    recorded or the probe times out, and a timed-out probe is replaced; the count is the number
    of breaking failures since the last success, and reaching the threshold always leaves the
    circuit open; a failed probe reopens it; a success always closes it; a probe handed back
    reopens the circuit as it was, and the next admission probes again."""
    state = CircuitState(provider="p")
    now = 0.0
    probe_since: float | None = None
    breaking_since_ok = 0
    for op, outcome, step in ops:
        now += step
        if op == "admit":
            admission = admit(state, now, cooldown_s=cooldown_s, probe_timeout_s=probe_timeout_s)
            assert admission.state.consecutive_failures == state.consecutive_failures
            if state.state == "closed":
                assert admission == Admission(decision="allowed", state=state)
            if state.state == "open" and state.opened_at is not None:
                if now < state.opened_at + cooldown_s:
                    assert admission == Admission(
                        decision="refused", state=state, retry_at=state.opened_at + cooldown_s
                    )
                else:
                    assert admission.decision == "probe"
            if (
                state.state == "half_open"
                and probe_since is not None
                and now >= probe_since + probe_timeout_s
            ):
                assert admission.decision == "probe"
            if admission.decision == "probe":
                assert probe_since is None or now >= probe_since + probe_timeout_s
                assert admission.state.state == "half_open"
                assert admission.state.probe_started_at == now
                probe_since = now
            elif admission.decision == "refused":
                assert admission.state == state
                assert admission.retry_at is not None and admission.retry_at > now
            else:
                assert probe_since is None
            state = admission.state
        elif op == "release":
            # The last probe admitted (if any) was never sent; a release of one that has already
            # had its verdict changes nothing.
            before = state
            state = release_probe(state, now if probe_since is None else probe_since)
            if probe_since is not None:
                assert state.state == "open" and state.opened_at == before.opened_at
                probe_since = None
            else:
                assert state == before
        else:
            before = state
            state = record(state, outcome, now, failure_threshold=threshold)
            if outcome == "ok":
                assert state == CircuitState(provider="p")
                breaking_since_ok = 0
                probe_since = None
            elif is_breaking(outcome):
                breaking_since_ok += 1
                probe_since = None
                if breaking_since_ok >= threshold:
                    assert state.state == "open"
                if before.state == "half_open":
                    assert state.state == "open"
                if before.state != "open" and state.state == "open":
                    assert state.opened_at == now
                if before.state == "open":
                    assert state.opened_at == before.opened_at
            else:
                assert state == before
        assert state.consecutive_failures == breaking_since_ok
        assert (state.state == "half_open") == (probe_since is not None)
