"""Start times as people write them (``--since 24h``), turned into epoch milliseconds.

Pure: the current time is an argument, so every answer can be checked without a clock.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from returns.result import Failure, Result, Success, safe

from rmcore.problems import Problem, ProblemKind

__all__ = ["ACCEPTED_FORMS", "parse_since"]

ACCEPTED_FORMS = (
    "a duration back from now (90s, 30m, 24h, 7d, 2w), "
    "an ISO 8601 date or date and time (2024-05-01, 2024-05-01T12:00:00Z; UTC when no offset is given), "
    "or 'all'"
)
"""The forms ``parse_since`` reads, in words, for help texts and error messages."""

_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_DURATION = re.compile(r"([0-9]{1,15})\s*([smhdw])")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_since(text: str, now_ms: int) -> Result[int, Problem]:
    """The start of the period ``text`` names, in milliseconds since the Unix epoch.

    ``text`` is a duration back from ``now_ms`` (a whole number and one of ``s m h d w``:
    ``90s``, ``30m``, ``24h``, ``7d``, ``2w``), an ISO 8601 date or date and time (naive values
    are UTC; a date alone is its midnight, UTC), or ``all`` (from the beginning, 0). Case and
    surrounding spaces do not matter. Starts before the epoch are clamped to 0, which selects
    the same rows. On anything else, an ``unreadable_time`` ``Failure`` whose message lists the
    accepted forms.

    Each form is one reading, tried in turn (``lash``: the next reading when one fails); the
    last reading's failure is the answer.
    """
    cleaned = text.strip()
    return (
        _everything(cleaned)
        .lash(lambda _: _duration(cleaned, now_ms))
        .lash(lambda _: _moment(text, cleaned))
        .map(lambda ms: max(0, ms))
    )


def _unreadable(text: str, hint: str = "") -> Problem:
    return Problem(
        kind=ProblemKind.UNREADABLE_TIME,
        message=f"cannot read {text!r} as a start time{hint}. Accepted: {ACCEPTED_FORMS}.",
        subject=text,
    )


def _everything(cleaned: str) -> Result[int, Problem]:
    """``all``: from the beginning."""
    return Success(0) if cleaned.lower() == "all" else Failure(_unreadable(cleaned))


def _duration(cleaned: str, now_ms: int) -> Result[int, Problem]:
    """``30m``: that long before ``now_ms``."""
    duration = _DURATION.fullmatch(cleaned.lower())
    if duration is None:
        return Failure(_unreadable(cleaned))
    amount, unit = duration.groups()
    return Success(now_ms - int(amount) * _UNIT_MS[unit])


def _moment(text: str, cleaned: str) -> Result[int, Problem]:
    """An ISO 8601 date or date and time (UTC unless it says otherwise); a bare number is
    refused with a hint, since it most likely lacks its unit."""
    if re.fullmatch(r"[0-9]+", cleaned):
        return Failure(
            _unreadable(
                text,
                f": a number needs a unit ({cleaned}m, {cleaned}h, {cleaned}d...)",
            )
        )
    return _iso(cleaned).alt(lambda _: _unreadable(text)).map(_epoch_ms)


@safe(exceptions=(ValueError,))
def _iso(cleaned: str) -> datetime:
    return datetime.fromisoformat(cleaned)


def _epoch_ms(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // timedelta(milliseconds=1)
