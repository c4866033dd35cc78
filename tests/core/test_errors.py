"""The vocabulary of failure (``rmcore.errors``): the error kinds of the contract, and provider
failures as values."""

from __future__ import annotations

import msgspec
import pytest

from rmcore.errors import ATTEMPT_KINDS, ErrorKind, ProviderError

UNSENT = {
    ErrorKind.BUDGET,
    ErrorKind.QUOTA,
    ErrorKind.CIRCUIT_OPEN,
    ErrorKind.UNHEALTHY,
    ErrorKind.UNSUPPORTED,
}

CONTRACT = {
    "connection",
    "timeout",
    "first_token_timeout",
    "stream_stalled",
    "stream_truncated",
    "rate_limited",
    "server_error",
    "overloaded",
    "auth",
    "bad_request",
    "context_length",
    "content_filter",
    "malformed_response",
    "budget",
    "quota",
    "deadline",
    "circuit_open",
    "unhealthy",
    "cancelled",
    "unsupported",
}
"""The kinds of DESIGN §4, as they appear in JSON ``outcome`` and in ``retry.on``."""


def test_the_kinds_are_exactly_the_contract() -> None:
    """No kind is added or lost without the contract changing."""
    assert {kind.value for kind in ErrorKind} == CONTRACT


@pytest.mark.parametrize("kind", list(ErrorKind))
def test_each_kind_is_its_lower_case_name_and_reads_back(kind: ErrorKind) -> None:
    """A kind's value is its snake-case name, and the value read from JSON is that kind."""
    assert kind.value == kind.name.lower()
    assert str(kind) == kind.value
    assert ErrorKind(kind.value) is kind


def test_attempt_kinds_leave_out_exactly_the_targets_skipped_unsent() -> None:
    """A request actually sent can end in every kind but budget, quota, circuit_open, unhealthy
    and unsupported, which describe targets passed over without a request."""
    assert frozenset(ErrorKind) - ATTEMPT_KINDS == UNSENT


def test_a_sent_request_can_end_at_the_deadline_or_cancelled() -> None:
    """The deadline and a lost race end requests that were sent: they are attempt kinds."""
    assert {ErrorKind.DEADLINE, ErrorKind.CANCELLED} <= ATTEMPT_KINDS


def test_a_failure_without_a_reply_has_no_status_and_no_retry_after() -> None:
    """Only kind and message are required; status and Retry-After are for received replies."""
    error = ProviderError(kind=ErrorKind.CONNECTION, message="refused")
    assert error.status is None
    assert error.retry_after_s is None


def test_a_failure_round_trips_through_json_with_its_kind_as_a_string() -> None:
    """A failure is written with its kind's value and reads back equal."""
    error = ProviderError(
        kind=ErrorKind.RATE_LIMITED, message="HTTP 429: slow down", status=429, retry_after_s=2.5
    )
    encoded = msgspec.json.encode(error)
    assert msgspec.json.decode(encoded)["kind"] == "rate_limited"
    assert msgspec.json.decode(encoded, type=ProviderError) == error


def test_an_unknown_kind_does_not_decode() -> None:
    """A kind outside the vocabulary is refused, not kept as a string."""
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"kind": "exploded", "message": "?"}', type=ProviderError)
