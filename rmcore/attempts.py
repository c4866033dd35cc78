"""The record of one attempt: every request sent, however it ended, is accounted as one of these."""

from __future__ import annotations

from typing import NamedTuple

from rmcore.base import Base
from rmcore.completion import Usage

__all__ = ["AttemptRecord", "Origin"]


class Origin(NamedTuple):
    """Where an attempt comes from, as it is recorded: its run, the command, and the analysis
    perspective it answers (None outside an analysis)."""

    run_id: str
    command: str
    perspective: str | None = None


class AttemptRecord(Base, frozen=True):
    """One request to one provider and how it ended.

    ``outcome`` is ``"ok"`` or an ``ErrorKind`` value. ``started_at_ms`` is wall-clock time
    (milliseconds since the Unix epoch); ``latency_ms`` is from sending the request to its end.
    ``cost_usd`` is what the attempt cost at the provider's prices (zero when nothing was billed
    or the provider reported no usage and no text arrived).
    """

    provider: str
    model: str
    outcome: str
    status: int | None = None
    latency_ms: float = 0.0
    started_at_ms: int = 0
    usage: Usage = Usage()
    cost_usd: float = 0.0
    message: str | None = None
