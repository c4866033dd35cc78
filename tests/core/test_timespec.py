"""``--since`` values: durations back from now, ISO 8601 moments, ``all``, and clear refusals."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from returns.result import Failure, Success

from rmcore.problems import ProblemKind
from rmcore.timespec import parse_since

NOW_MS = 1_717_243_200_000  # 2024-06-01T12:00:00Z


def epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp()) * 1000


@pytest.mark.parametrize(
    ("text", "back_ms"),
    [
        ("90s", 90_000),
        ("30m", 30 * 60_000),
        ("24h", 24 * 3_600_000),
        ("7d", 7 * 86_400_000),
        ("2w", 14 * 86_400_000),
        ("0m", 0),
        (" 24H ", 24 * 3_600_000),
        ("15 m", 15 * 60_000),
    ],
)
def test_durations_count_back_from_now(text: str, back_ms: int) -> None:
    """A duration in seconds, minutes, hours, days or weeks counts back from now, in any case and spacing."""
    assert parse_since(text, NOW_MS) == Success(NOW_MS - back_ms)


@pytest.mark.parametrize("text", ["all", "ALL", " All "])
def test_all_is_the_beginning(text: str) -> None:
    """``all`` is the beginning of time."""
    assert parse_since(text, NOW_MS) == Success(0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01", datetime(2024, 5, 1, tzinfo=UTC)),
        ("2024-05-01T12:30:00", datetime(2024, 5, 1, 12, 30, tzinfo=UTC)),
        ("2024-05-01 12:30", datetime(2024, 5, 1, 12, 30, tzinfo=UTC)),
        ("2024-05-01T12:30:00Z", datetime(2024, 5, 1, 12, 30, tzinfo=UTC)),
        ("2024-05-01T14:30:00+02:00", datetime(2024, 5, 1, 12, 30, tzinfo=UTC)),
    ],
)
def test_iso_dates_and_times_naive_means_utc(text: str, expected: datetime) -> None:
    """ISO dates and times are read, naive ones as UTC, offsets applied."""
    assert parse_since(text, NOW_MS) == Success(epoch_ms(expected))


def test_milliseconds_of_an_iso_time_are_kept() -> None:
    """Fractions of a second in an ISO time are kept to the millisecond."""
    assert parse_since("1970-01-01T00:00:01.250", NOW_MS) == Success(1_250)


def test_starts_before_the_epoch_are_clamped_to_zero() -> None:
    """A start before 1970, by date or by duration, is the epoch."""
    assert parse_since("1969-12-31", NOW_MS) == Success(0)
    assert parse_since("999999999w", NOW_MS) == Success(0)


@pytest.mark.parametrize("text", ["", "yesterday", "5y", "1.5h", "-5m", "m", "5 minutes", "2024-13-01",
                                  "9" * 20 + "s"])
def test_other_text_is_refused_with_the_accepted_forms(text: str) -> None:
    """Anything else is an ``unreadable_time`` problem quoting the text and listing the accepted forms."""
    result = parse_since(text, NOW_MS)
    assert isinstance(result, Failure)
    assert result.failure().kind is ProblemKind.UNREADABLE_TIME
    message = result.failure().message
    assert repr(text) in message
    for form in ("30m", "24h", "7d", "2024-05-01", "all"):
        assert form in message


def test_a_bare_number_asks_for_a_unit() -> None:
    """A number without a unit is refused with a hint to add one."""
    result = parse_since("30", NOW_MS)
    assert isinstance(result, Failure)
    assert "needs a unit" in result.failure().message
    assert "30m" in result.failure().message


@given(st.integers(0, 10**9), st.sampled_from([("s", 1_000), ("m", 60_000), ("h", 3_600_000),
                                                ("d", 86_400_000), ("w", 604_800_000)]))
def test_any_duration_is_now_minus_amount_times_unit(amount: int, unit: tuple[str, int]) -> None:
    """Any duration is now minus amount times unit, never before the epoch."""
    letter, unit_ms = unit
    assert parse_since(f"{amount}{letter}", NOW_MS) == Success(max(0, NOW_MS - amount * unit_ms))


@given(st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1)))
def test_any_naive_iso_datetime_round_trips(moment: datetime) -> None:
    """Any naive ISO date-time reads as that moment in UTC."""
    expected = (moment.replace(tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds()
    result = parse_since(moment.isoformat(), NOW_MS)
    assert isinstance(result, Success)
    assert abs(result.unwrap() - expected * 1000) < 1
