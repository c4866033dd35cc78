"""Figures as a person reads them: times, money, confidences, significant digits."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rmcli.figures import confidence, cost, duration, duration_s, price, significant


@pytest.mark.parametrize(
    ("ms", "shown"),
    [
        (None, "-"),
        (0.0, "<1 ms"),
        (0.4, "<1 ms"),
        (0.6, "1 ms"),
        (12.4, "12 ms"),
        (340.0, "340 ms"),
        (339.6, "340 ms"),
        (999.4, "999 ms"),
        (999.6, "1.0 s"),
        (1949.0, "1.9 s"),
        (2000.0, "2.0 s"),
        (12_345.6, "12.3 s"),
        (59_960.0, "1 min 00 s"),
        (125_000.0, "2 min 05 s"),
        (3_725_000.0, "1 h 02 min"),
        (float("nan"), "-"),
        (-5.0, "<1 ms"),
    ],
)
def test_duration_examples(ms: float | None, shown: str) -> None:
    """Milliseconds read as a person says them: whole ms below a second, tenths of seconds
    below a minute, minutes and hours beyond; never ``1000 ms`` or ``60.0 s``."""
    assert duration(ms) == shown


def test_duration_s_matches_duration() -> None:
    """Seconds and milliseconds of the same time read the same."""
    for seconds in (0.0123, 0.34, 2.0, 75.0):
        assert duration_s(seconds) == duration(seconds * 1000)


@given(st.floats(min_value=0, max_value=1e9, allow_nan=False))
def test_duration_is_short_and_has_a_unit(ms: float) -> None:
    """Any time is at most a dozen characters and ends in a unit: it never shows float noise."""
    shown = duration(ms)
    assert len(shown) <= 12
    assert shown.endswith((" ms", " s", " min"))


@pytest.mark.parametrize(
    ("usd", "shown"),
    [
        (None, "-"),
        (0.0, "$0"),
        (0.0012, "$0.0012"),
        (0.0012000000000000001, "$0.0012"),
        (0.0012345, "$0.0012"),
        (0.000543, "$0.00054"),
        (0.5, "$0.50"),
        (0.999, "$1.00"),
        (12.345, "$12.35"),
        (1234.5, "$1,234.50"),
        (1e-7, "<$0.000001"),
    ],
)
def test_cost_examples(usd: float | None, shown: str) -> None:
    """Dollars without float noise: cents from a dollar up, two significant digits below."""
    assert cost(usd) == shown


@given(st.floats(min_value=1e-6, max_value=1e6, allow_nan=False))
def test_cost_is_close_to_the_value(usd: float) -> None:
    """What ``cost`` shows is within 5% (two significant digits) or half a cent of the value."""
    shown = cost(usd)
    value = float(shown.removeprefix("$").replace(",", ""))
    assert abs(value - usd) <= max(0.05 * usd, 0.005)


def test_price_and_confidence() -> None:
    """Prices per million tokens show their digits; confidences two decimals or ``unknown``."""
    assert (price(0.15), price(3.0), price(0.0), price(0.1 + 0.2)) == ("$0.15", "$3", "$0", "$0.3")
    assert (confidence(0.8), confidence(None), confidence(0.6525000000000001)) == ("0.80", "unknown", "0.65")


def test_significant_examples() -> None:
    """Rounding to significant digits drops binary noise and keeps zero and non-finite values."""
    assert significant(0.6525000000000001, 6) == 0.6525
    assert significant(1234.5, 3) == 1230.0
    assert significant(0.000123456789, 3) == 0.000123
    assert significant(0.0, 3) == 0.0
    assert math.isinf(significant(math.inf, 3))


@given(
    st.floats(allow_nan=False, allow_infinity=False).filter(lambda v: v == 0 or 1e-300 < abs(v) < 1e300),
    st.integers(min_value=1, max_value=15),
)
def test_significant_is_within_half_a_unit_of_the_last_digit(value: float, digits: int) -> None:
    """``significant(v, d)`` differs from ``v`` by at most half a unit in the d-th digit, and
    has no more than ``d`` significant digits."""
    rounded = significant(value, digits)
    assert abs(rounded - value) <= 0.5 * 10 ** (-digits + 1) * abs(value) * (1 + 1e-9)
    if rounded != 0:
        # The shortest text that reads back as the float, as JSON writes it.
        mantissa = repr(abs(rounded)).split("e")[0].replace(".", "").strip("0")
        assert len(mantissa) <= digits
