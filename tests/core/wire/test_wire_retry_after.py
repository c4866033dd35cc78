"""The provider's minimum wait (``rmcore.wire.retry_after``): ``retry-after-ms``, and
``Retry-After`` as delta-seconds or an HTTP-date in any of RFC 9110's three forms.

The classifier's own tests (``test_wire_classify.py``) check a few of these forms through
``classify_failure``; this is the module's home."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rmcore.wire.retry_after import parse_http_date, parse_retry_after
from tests.core.helpers import NOW

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

MOMENTS = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(2069, 12, 31, 23, 59, 59), timezones=st.just(UTC)
).map(lambda d: d.replace(microsecond=0))


def imf_fixdate(when: datetime) -> str:
    """``Sun, 06 Nov 1994 08:49:37 GMT``"""
    return (
        f"{_DAYS[when.weekday()]}, {when.day:02d} {_MONTHS[when.month - 1]} {when.year} {when:%H:%M:%S} GMT"
    )


def rfc850_date(when: datetime) -> str:
    """``Sunday, 06-Nov-94 08:49:37 GMT``"""
    return (
        f"{_WEEKDAYS[when.weekday()]}, {when.day:02d}-{_MONTHS[when.month - 1]}-{when.year % 100:02d} "
        f"{when:%H:%M:%S} GMT"
    )


def asctime_date(when: datetime) -> str:
    """``Sun Nov  6 08:49:37 1994``"""
    return f"{_DAYS[when.weekday()]} {_MONTHS[when.month - 1]} {when.day:2d} {when:%H:%M:%S} {when.year}"


FORMS = [imf_fixdate, rfc850_date, asctime_date]


def test_delta_seconds_are_the_wait() -> None:
    """``Retry-After: 120`` asks for two minutes; a decimal, as some providers send, is kept."""
    assert parse_retry_after({"retry-after": "120"}, NOW) == 120.0
    assert parse_retry_after({"retry-after": "2.5"}, NOW) == 2.5
    assert parse_retry_after({"retry-after": ".5"}, NOW) == 0.5


def test_retry_after_ms_is_in_milliseconds_and_wins_over_retry_after() -> None:
    """``retry-after-ms: 250`` is a quarter second, whatever ``retry-after`` says."""
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "30"}, NOW) == 0.25


def test_garbage_milliseconds_fall_back_to_retry_after() -> None:
    """An unreadable ``retry-after-ms`` is ignored, not taken for "no wait"."""
    assert parse_retry_after({"retry-after-ms": "later", "retry-after": "3"}, NOW) == 3.0


def test_no_header_is_no_wait() -> None:
    """Without either header the provider set no minimum: ``None``."""
    assert parse_retry_after({"content-type": "application/json"}, NOW) is None


@pytest.mark.parametrize("value", ["-5", "-0.5", "-1000000"])
def test_a_negative_delta_is_never_a_negative_wait(value: str) -> None:
    """A negative delta-seconds (invalid in RFC 9110) asks for no wait: 0, never less."""
    assert parse_retry_after({"retry-after": value}, NOW) == 0.0
    assert parse_retry_after({"retry-after-ms": value}, NOW) == 0.0


@pytest.mark.parametrize(
    "garbage",
    ["soon", "5 seconds", "1e3", "+-3", "3.2.1", "Sun, 06 Nov 1994", "Sun, 06 Nov 1994 08:49:37 PST"],
)
def test_garbage_is_no_wait(garbage: str) -> None:
    """A value that is neither delta-seconds nor an HTTP-date is ignored: ``None``."""
    assert parse_retry_after({"retry-after": garbage}, NOW) is None


@pytest.mark.parametrize("value", ["\u0661\u0662", "\uff11\uff12", "Sun, \uff10\uff16 Nov 1994 08:49:37 GMT"])
def test_digits_other_than_ascii_are_garbage(value: str) -> None:
    """Only ASCII digits write a wait: "١٢" (Arabic-Indic) or fullwidth "１２" are garbage."""
    assert parse_retry_after({"retry-after": value}, 0.0) is None


def test_an_absurdly_long_number_is_ignored_rather_than_infinite() -> None:
    """Four hundred nines overflow a float: that is no wait at all, never an infinite one."""
    assert parse_retry_after({"retry-after": "9" * 400}, NOW) is None
    assert parse_retry_after({"retry-after-ms": "9" * 400}, NOW) is None


def test_an_http_date_in_the_past_asks_for_no_wait() -> None:
    """A date already gone is a wait of 0."""
    assert parse_retry_after({"retry-after": "Sun, 06 Nov 1994 08:49:37 GMT"}, NOW) == 0.0


def test_a_leap_second_waits_as_long_as_the_second_before() -> None:
    """``:60`` is read as ``:59`` rather than refused."""
    leap = parse_http_date("Sat, 31 Dec 2016 23:59:60 GMT")
    assert leap == datetime(2016, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    "impossible",
    ["Mon, 30 Feb 2015 10:00:00 GMT", "Mon, 10 Feb 2015 24:00:00 GMT", "Mon, 10 Abc 2015 10:00:00 GMT"],
)
def test_impossible_dates_are_not_dates(impossible: str) -> None:
    """A 30th of February, an hour 24 or an unknown month is no HTTP-date: ``None``."""
    assert parse_http_date(impossible) is None


@pytest.mark.parametrize("two_digits", [("69", 2069), ("70", 1970), ("94", 1994), ("00", 2000)])
def test_rfc850_two_digit_years_pivot_at_1970(two_digits: tuple[str, int]) -> None:
    """RFC 850's two-digit years: below 70 is this century, from 70 the last."""
    text, year = two_digits
    assert (
        parse_http_date(f"Tuesday, 01-Jan-{text} 00:00:00 GMT")
        == datetime(year, 1, 1, tzinfo=UTC).timestamp()
    )


@given(MOMENTS, st.sampled_from(FORMS))
def test_every_form_of_an_http_date_reads_back_the_same_moment(when: datetime, form: object) -> None:
    """A moment written in any of the three HTTP-date forms parses to that moment."""
    assert callable(form)
    assert parse_http_date(form(when)) == when.timestamp()


@given(MOMENTS, st.sampled_from(FORMS), st.floats(min_value=0.0, max_value=3.2e9))
def test_an_http_date_waits_until_that_moment(when: datetime, form: object, now: float) -> None:
    """An HTTP-date is a wait of (date − now), or 0 once the date has passed."""
    assert callable(form)
    wait = parse_retry_after({"retry-after": form(when)}, now)
    assert wait == max(when.timestamp() - now, 0.0)


@given(st.integers(min_value=0, max_value=10**12))
def test_any_delta_seconds_is_read_exactly(seconds: int) -> None:
    """Any non-negative integer of seconds is that many seconds."""
    assert parse_retry_after({"retry-after": str(seconds)}, NOW) == float(seconds)


@given(st.integers(min_value=0, max_value=10**9), st.integers(min_value=0, max_value=10**6))
def test_milliseconds_win_whatever_retry_after_says(millis: int, seconds: int) -> None:
    """A readable ``retry-after-ms`` is the wait, in thousandths of a second."""
    headers = {"retry-after-ms": str(millis), "retry-after": str(seconds)}
    assert parse_retry_after(headers, NOW) == millis / 1000.0


@given(st.text(alphabet=st.characters(blacklist_categories=("Nd",)), max_size=40))
def test_text_without_a_digit_is_never_a_wait(text: str) -> None:
    """Every wait is written with digits: a value with none is garbage and gives ``None``."""
    assert parse_retry_after({"retry-after": text}, NOW) is None
    assert parse_retry_after({"retry-after-ms": text}, NOW) is None


@given(st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2069, 1, 1)), st.integers(1, 86_400))
def test_a_later_date_never_waits_less(start: datetime, later_by_s: int) -> None:
    """Of two dates, the later asks for at least as long a wait."""
    first = start.replace(tzinfo=UTC, microsecond=0)
    second = first + timedelta(seconds=later_by_s)
    now = first.timestamp() - 10
    assert parse_retry_after({"retry-after": imf_fixdate(second)}, now) >= parse_retry_after(  # type: ignore[operator]
        {"retry-after": imf_fixdate(first)}, now
    )
