"""The provider's minimum wait before a retry: ``retry-after-ms`` and ``Retry-After`` headers.

HTTP-dates are parsed here rather than with ``email.utils``, which would pull ``socket`` and
``random`` into the pure core. The three forms of RFC 9110 §5.6.7 are accepted: IMF-fixdate
(``Sun, 06 Nov 1994 08:49:37 GMT``), the obsolete RFC 850 form (``Sunday, 06-Nov-94 08:49:37 GMT``)
and ANSI C's asctime (``Sun Nov  6 08:49:37 1994``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime

__all__ = ["parse_http_date", "parse_retry_after"]

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_MONTH = r"(?P<month>[A-Za-z]{3})"
_TIME = r"(?P<hour>\d{2}):(?P<minute>\d{2}):(?P<second>\d{2})"
_HTTP_DATES = (
    re.compile(
        rf"(?:[A-Za-z]{{3}},\s*)?(?P<day>\d{{1,2}})\s+{_MONTH}\s+(?P<year>\d{{4}})\s+{_TIME}\s+(?:GMT|UTC)",
        re.ASCII,
    ),
    re.compile(rf"[A-Za-z]+,\s*(?P<day>\d{{2}})-{_MONTH}-(?P<year>\d{{2}})\s+{_TIME}\s+GMT", re.ASCII),
    re.compile(rf"[A-Za-z]{{3}}\s+{_MONTH}\s+(?P<day>\d{{1,2}})\s+{_TIME}\s+(?P<year>\d{{4}})", re.ASCII),
)
_DELTA_SECONDS = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)", re.ASCII)


def parse_http_date(text: str) -> float | None:
    """``text`` as Unix seconds, when it is an HTTP-date (any of the three forms); else ``None``."""
    for pattern in _HTTP_DATES:
        match = pattern.fullmatch(text.strip())
        if match is None:
            continue
        month = match["month"].lower()
        if month not in _MONTHS:
            return None
        year = int(match["year"])
        if len(match["year"]) == 2:
            year += 2000 if year < 70 else 1900
        try:
            when = datetime(
                year,
                _MONTHS.index(month) + 1,
                int(match["day"]),
                int(match["hour"]),
                int(match["minute"]),
                min(int(match["second"]), 59),  # a leap second waits as long as :59
                tzinfo=UTC,
            )
        except ValueError:
            return None
        return when.timestamp()
    return None


def _seconds(text: str) -> float | None:
    text = text.strip()
    if not _DELTA_SECONDS.fullmatch(text):
        return None
    value = float(text)
    return max(value, 0.0) if math.isfinite(value) else None


def parse_retry_after(headers: Mapping[str, str], now: float) -> float | None:
    """The provider's minimum wait in seconds, or ``None`` when it gave none (or gave garbage).

    ``retry-after-ms`` (milliseconds, may be fractional) wins over ``retry-after``, which is
    delta-seconds (an integer, or a decimal as some providers send) or an HTTP-date taken
    relative to ``now`` (Unix seconds). A wait in the past is 0. Header names are lower-case."""
    millis = headers.get("retry-after-ms")
    if millis is not None and (value := _seconds(millis)) is not None:
        return value / 1000.0
    raw = headers.get("retry-after")
    if raw is None:
        return None
    if (value := _seconds(raw)) is not None:
        return value
    when = parse_http_date(raw)
    return None if when is None else max(when - now, 0.0)
