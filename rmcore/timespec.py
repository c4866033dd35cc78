"""Start times as people write them (``--since 24h``), turned into epoch milliseconds.

Pure: the current time is an argument, so every answer can be checked without a clock.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from returns.result import Failure, Result, Success

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


def parse_since(text: str, now_ms: int) -> Result[int, str]:
    """The start of the period ``text`` names, in milliseconds since the Unix epoch.

    ``text`` is a duration back from ``now_ms`` (a whole number and one of ``s m h d w``:
    ``90s``, ``30m``, ``24h``, ``7d``, ``2w``), an ISO 8601 date or date and time (naive values
    are UTC; a date alone is its midnight, UTC), or ``all`` (from the beginning, 0). Case and
    surrounding spaces do not matter. Starts before the epoch are clamped to 0, which selects
    the same rows. On anything else, a ``Failure`` with a message that lists the accepted forms.
    """
    cleaned = text.strip()
    lowered = cleaned.lower()
    if lowered == "all":
        return Success(0)
    duration = _DURATION.fullmatch(lowered)
    if duration is not None:
        amount, unit = duration.groups()
        return Success(max(0, now_ms - int(amount) * _UNIT_MS[unit]))
    if re.fullmatch(r"[0-9]+", cleaned):
        return Failure(
            f"cannot read {text!r} as a start time: a number needs a unit "
            f"({cleaned}m, {cleaned}h, {cleaned}d...). Accepted: {ACCEPTED_FORMS}."
        )
    try:
        moment = datetime.fromisoformat(cleaned)
    except ValueError:
        return Failure(f"cannot read {text!r} as a start time. Accepted: {ACCEPTED_FORMS}.")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return Success(max(0, (moment - _EPOCH) // timedelta(milliseconds=1)))
