"""Figures as a person reads them: times (``2.0 s``, ``340 ms``), money (``$0.0012``),
confidences (``0.85``), and numbers rounded to a number of significant digits.

Every text view uses these, so that the same quantity looks the same everywhere and no view
shows float noise such as ``$0.0012000000000000001`` or ``1234.5678 ms``. Pure functions, no
imports beyond the standard library: cheap to import from any command.
"""

from __future__ import annotations

import math

__all__ = [
    "confidence",
    "cost",
    "duration",
    "duration_s",
    "price",
    "significant",
]

_MS_PER_S = 1000.0
_S_PER_MIN = 60
_S_PER_HOUR = 3600


def significant(value: float, digits: int) -> float:
    """``value`` rounded to ``digits`` significant digits (0, infinities and NaN unchanged).

    ``significant(0.6525000000000001, 6) == 0.6525``; ``significant(1234.5, 3) == 1230.0``.
    """
    if value == 0 or not math.isfinite(value):
        return value
    magnitude = math.floor(math.log10(abs(value)))
    return round(value, digits - 1 - magnitude)


def duration(ms: float | None) -> str:
    """A time in milliseconds as a person reads it: ``<1 ms``, ``12 ms``, ``340 ms``, ``2.0 s``,
    ``12.3 s``, ``2 min 05 s``, ``1 h 02 min``; ``-`` for None (not measured)."""
    if ms is None or not math.isfinite(ms):
        return "-"
    return duration_s(ms / _MS_PER_S)


def duration_s(seconds: float | None) -> str:
    """A time in seconds as a person reads it (see ``duration``)."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    seconds = max(seconds, 0.0)
    ms = seconds * _MS_PER_S
    if ms < 0.5:
        return "<1 ms"
    if round(ms) < _MS_PER_S:
        return f"{ms:.0f} ms"
    if round(seconds, 1) < _S_PER_MIN:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < _S_PER_HOUR:
        minutes, secs = divmod(whole, _S_PER_MIN)
        return f"{minutes} min {secs:02d} s"
    hours, rest = divmod(whole, _S_PER_HOUR)
    return f"{hours} h {rest // _S_PER_MIN:02d} min"


def cost(usd: float | None) -> str:
    """Dollars without float noise: ``$0``, ``$0.0012``, ``$0.00054``, ``$0.50``, ``$12.34``.

    A dollar or more shows cents; less shows two significant digits (at least two decimals),
    which is what tells two small costs apart; below a millionth of a dollar, ``<$0.000001``.
    ``-`` for None (not known).
    """
    if usd is None or not math.isfinite(usd):
        return "-"
    if usd == 0:
        return "$0"
    sign = "-" if usd < 0 else ""
    usd = abs(usd)
    if usd < 1e-6:
        return f"{sign}<$0.000001"
    if round(usd, 2) >= 1:
        return f"{sign}${usd:,.2f}"
    rounded = significant(usd, 2)
    decimals = max(2, 1 - math.floor(math.log10(rounded)))
    return f"{sign}${rounded:.{decimals}f}"


def price(usd_per_mtok: float) -> str:
    """A price per million tokens: ``$0.15``, ``$3``, ``$0`` (as many digits as it has, at most
    six significant)."""
    return f"${significant(usd_per_mtok, 6):g}"


def confidence(value: float | None) -> str:
    """A confidence between 0 and 1 with two decimals, or ``unknown`` when none was stated."""
    return "unknown" if value is None else f"{value:.2f}"
