"""How long to wait before retrying the same target: full jitter under a doubling cap, with the
provider's Retry-After as a floor (``rmcore.backoff``)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rmcore.backoff import backoff_s

RETRY_NOS = st.integers(min_value=1, max_value=200)
SECONDS = st.floats(min_value=0.0, max_value=3_600.0)
JITTERS = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)


def cap(retry_no: int, initial_s: float, max_s: float) -> float:
    """The documented cap of retry ``retry_no``: ``min(max_s, initial_s * 2 ** (retry_no - 1))``."""
    return min(max_s, initial_s * 2.0 ** (retry_no - 1))


def test_the_wait_is_the_jitter_times_the_doubling_cap() -> None:
    """Retry n waits jitter × initial × 2^(n-1): 0.5 s, then 1 s, then 2 s at full jitter 0.5."""
    waits = [backoff_s(n, initial_s=1.0, max_s=60.0, jitter=0.5) for n in (1, 2, 3, 4)]
    assert waits == [0.5, 1.0, 2.0, 4.0]


def test_the_cap_stops_doubling_at_max_s() -> None:
    """Past ``max_s`` the cap no longer grows: the tenth retry waits at most ``max_s``."""
    assert backoff_s(10, initial_s=0.5, max_s=8.0, jitter=0.5) == 4.0
    assert backoff_s(10, initial_s=0.5, max_s=8.0, jitter=0.0) == 0.0


def test_a_jitter_of_zero_retries_at_once() -> None:
    """Full jitter draws from zero: a draw of 0 means no wait at all."""
    assert backoff_s(3, initial_s=2.0, max_s=30.0, jitter=0.0) == 0.0


def test_a_retry_after_longer_than_the_backoff_sets_the_minimum_wait() -> None:
    """A Retry-After longer than the backoff is the wait, exactly."""
    assert backoff_s(1, initial_s=0.5, max_s=8.0, jitter=0.9, retry_after_s=7.0) == 7.0


def test_a_retry_after_shorter_than_the_backoff_does_not_cut_it_short() -> None:
    """A Retry-After shorter than the drawn backoff leaves the backoff as it is."""
    assert backoff_s(4, initial_s=1.0, max_s=60.0, jitter=0.5, retry_after_s=1.0) == 4.0


def test_a_retry_after_beyond_max_s_is_still_honoured() -> None:
    """``max_s`` caps the jitter, never the provider's own minimum wait."""
    assert backoff_s(2, initial_s=0.5, max_s=8.0, jitter=0.3, retry_after_s=120.0) == 120.0


@pytest.mark.parametrize("retry_no", [61, 1_000, 10**9])
def test_a_huge_retry_number_neither_overflows_nor_exceeds_the_cap(retry_no: int) -> None:
    """The exponent is bounded: any retry number gives a finite wait within ``max_s``."""
    wait = backoff_s(retry_no, initial_s=0.5, max_s=8.0, jitter=0.999)
    assert math.isfinite(wait)
    assert 0.0 <= wait <= 8.0


@given(RETRY_NOS, SECONDS, SECONDS, JITTERS)
def test_full_jitter_stays_within_zero_and_the_cap(
    retry_no: int, initial_s: float, max_s: float, jitter: float
) -> None:
    """Without a Retry-After the wait lies in [0, min(max_s, initial_s × 2^(n-1))]."""
    wait = backoff_s(retry_no, initial_s=initial_s, max_s=max_s, jitter=jitter)
    assert 0.0 <= wait <= cap(retry_no, initial_s, max_s)


@given(RETRY_NOS, SECONDS, SECONDS, JITTERS, SECONDS)
def test_the_wait_is_never_below_a_retry_after(
    retry_no: int, initial_s: float, max_s: float, jitter: float, retry_after_s: float
) -> None:
    """With a Retry-After the wait is the larger of it and the jittered backoff: never less."""
    wait = backoff_s(retry_no, initial_s=initial_s, max_s=max_s, jitter=jitter, retry_after_s=retry_after_s)
    plain = backoff_s(retry_no, initial_s=initial_s, max_s=max_s, jitter=jitter)
    assert wait >= retry_after_s
    assert wait == max(plain, retry_after_s)


@given(RETRY_NOS, SECONDS, SECONDS, JITTERS, JITTERS)
def test_a_larger_draw_never_waits_less(
    retry_no: int, initial_s: float, max_s: float, j1: float, j2: float
) -> None:
    """The wait grows with the jitter draw: the caller's randomness is used linearly."""
    low, high = sorted((j1, j2))
    assert backoff_s(retry_no, initial_s=initial_s, max_s=max_s, jitter=low) <= backoff_s(
        retry_no, initial_s=initial_s, max_s=max_s, jitter=high
    )


@given(st.integers(min_value=1, max_value=100), SECONDS, SECONDS, JITTERS)
def test_later_retries_never_wait_less_for_the_same_draw(
    retry_no: int, initial_s: float, max_s: float, jitter: float
) -> None:
    """The cap only grows from one retry to the next, so the same draw never waits less later."""
    first = backoff_s(retry_no, initial_s=initial_s, max_s=max_s, jitter=jitter)
    later = backoff_s(retry_no + 1, initial_s=initial_s, max_s=max_s, jitter=jitter)
    assert later >= first
