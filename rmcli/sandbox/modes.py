"""Fault modes of the sandbox providers: what each one does, and how it is written.

A mode is written as ``NAME`` or ``NAME:ARGUMENT`` (``ok``, ``down``, ``slow:1.5``, ``status:529``,
``ratelimit:3``, ``endless:0.5``, ...), the same on the command line (``rmgr sandbox --fail
glm-direct=down``), in ``Sandbox(modes=...)`` and in the control API (``PUT /mode/NAME``).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

__all__ = ["MODES_HELP", "Mode", "ModeKind", "parse_mode"]


class ModeKind(enum.StrEnum):
    """The kinds of behaviour a sandbox provider can be switched to."""

    OK = "ok"
    DOWN = "down"
    HANG = "hang"
    SLOW = "slow"
    STATUS = "status"
    RATELIMIT = "ratelimit"
    RESET = "reset"
    TRUNCATE = "truncate"
    STALL = "stall"
    GARBAGE = "garbage"
    HUGE = "huge"
    ENDLESS = "endless"


MODES_HELP = """\
Fault modes of a sandbox provider (NAME or NAME:ARGUMENT):
  ok            answer normally
  down          refuse connections (nothing listens on the port; back to ok re-listens on the same port)
  hang          read the request, never answer
  slow:S        wait S seconds, then answer normally
  status:CODE   answer HTTP CODE (400-599) with the provider's own error body
  ratelimit:S   answer 429 with a Retry-After: S header and the provider's rate-limit body
  reset         read the request, then reset the TCP connection before any byte of the answer
  truncate      cut the answer in the middle: a stream loses its end and terminating event,
                a plain body is shorter than its Content-Length
  stall         send the headers and the first event (or first bytes), then go silent
  garbage       answer 200 with content-type application/json and a body that is not JSON
  huge          answer 200 with a well-formed reply of 1 GiB, made as it is sent (never held in
                memory): a JSON body, with its Content-Length, whose text goes on and on; a
                streamed request gets ordinary text events for 1 GiB, then a proper end
  endless[:S]   answer 200 and never finish: text events forever for a streamed request, a JSON
                body (chunked) that never closes otherwise; as fast as the client reads, or one
                event every S seconds
Health, status and model-list endpoints follow the mode too, except that truncate, stall,
garbage, huge and endless answer them normally."""
"""What the modes do, for ``--help`` texts and error messages."""

_NEEDS_SECONDS = (ModeKind.SLOW, ModeKind.RATELIMIT)
_MAY_TAKE_SECONDS = (ModeKind.ENDLESS,)


@dataclass(frozen=True, slots=True)
class Mode:
    """One provider's behaviour: a kind, with its seconds (slow, ratelimit, and endless when given
    one) or status code (status)."""

    kind: ModeKind
    seconds: float | None = None
    status: int | None = None

    def __str__(self) -> str:
        if self.kind is ModeKind.STATUS:
            return f"status:{self.status}"
        if self.kind in _NEEDS_SECONDS or (self.kind in _MAY_TAKE_SECONDS and self.seconds is not None):
            return f"{self.kind}:{format_seconds(self.seconds or 0.0)}"
        return str(self.kind)


OK = Mode(ModeKind.OK)


def format_seconds(seconds: float) -> str:
    """``3`` for 3.0, ``0.25`` for 0.25: the shortest text that reads back as the same number."""
    return str(int(seconds)) if float(seconds).is_integer() else repr(float(seconds))


def _bad(text: str, why: str) -> ValueError:
    return ValueError(f"bad sandbox mode {text!r}: {why}\n{MODES_HELP}")


def _parse_seconds(text: str, kind: ModeKind, argument: str) -> float:
    try:
        seconds = float(argument)
    except ValueError:
        raise _bad(text, f"{kind} needs a number of seconds, as in {kind}:2") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise _bad(text, "the seconds must be a finite number, 0 or more")
    return seconds


def parse_mode(text: str) -> Mode:
    """Read a mode written as ``NAME`` or ``NAME:ARGUMENT``; raise ``ValueError`` saying what is wrong.

    >>> parse_mode("slow:1.5")
    Mode(kind=<ModeKind.SLOW: 'slow'>, seconds=1.5, status=None)
    """
    cleaned = text.strip().lower()
    name, colon, argument = cleaned.partition(":")
    try:
        kind = ModeKind(name)
    except ValueError:
        known = ", ".join(k.value for k in ModeKind)
        raise _bad(text, f"unknown mode {name!r} (known: {known})") from None
    if kind in _NEEDS_SECONDS:
        if not colon:
            raise _bad(text, f"{kind} needs a number of seconds, as in {kind}:2")
        return Mode(kind, seconds=_parse_seconds(text, kind, argument))
    if kind in _MAY_TAKE_SECONDS and colon:
        return Mode(kind, seconds=_parse_seconds(text, kind, argument))
    if kind is ModeKind.STATUS:
        if not argument.isdigit() or not 400 <= int(argument) <= 599:
            raise _bad(text, "status needs an HTTP error code from 400 to 599, as in status:529")
        return Mode(kind, status=int(argument))
    if colon:
        raise _bad(text, f"{kind} takes no argument")
    return Mode(kind)
