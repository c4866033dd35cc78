"""The record of one attempt (``rmcore.attempts``): every request sent is accounted as one."""

from __future__ import annotations

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from rmcore.attempts import AttemptRecord
from rmcore.completion import Usage
from rmcore.errors import ErrorKind

OUTCOMES = st.sampled_from(["ok", *(kind.value for kind in ErrorKind)])
RECORDS = st.builds(
    AttemptRecord,
    provider=st.text(min_size=1, max_size=20),
    model=st.text(max_size=20),
    outcome=OUTCOMES,
    status=st.none() | st.integers(min_value=100, max_value=599),
    latency_ms=st.floats(min_value=0, max_value=1e7),
    started_at_ms=st.integers(min_value=0, max_value=2**45),
    usage=st.builds(
        Usage,
        input_tokens=st.integers(min_value=0, max_value=10**7),
        output_tokens=st.integers(min_value=0, max_value=10**7),
        estimated=st.booleans(),
    ),
    cost_usd=st.floats(min_value=0, max_value=100),
    message=st.none() | st.text(max_size=60),
)


def test_a_record_without_a_reply_costs_nothing_and_used_nothing() -> None:
    """Only provider, model and outcome are required: no status, no latency, no tokens, $0."""
    record = AttemptRecord(provider="a", model="m", outcome="connection")
    assert (record.status, record.latency_ms, record.started_at_ms) == (None, 0.0, 0)
    assert record.usage == Usage()
    assert record.cost_usd == 0.0
    assert record.message is None


def test_an_error_kind_is_its_outcome_string() -> None:
    """An ``ErrorKind`` given as outcome is the same outcome as its value, in memory and in JSON."""
    record = AttemptRecord(provider="a", model="m", outcome=ErrorKind.RATE_LIMITED)
    assert record.outcome == "rate_limited"
    assert msgspec.json.decode(msgspec.json.encode(record))["outcome"] == "rate_limited"


@given(RECORDS)
def test_any_record_round_trips_through_json(record: AttemptRecord) -> None:
    """A record written as JSON (as the stores keep them) reads back equal, usage included."""
    assert msgspec.json.decode(msgspec.json.encode(record), type=AttemptRecord) == record
