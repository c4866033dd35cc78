"""The lines that tell a person on stderr what the routing does, in the seed's words."""

from __future__ import annotations

from rmcli.output import err
from rmcore.errors import ATTEMPT_KINDS, ErrorKind
from rmcore.events import Backoff, FailedOver, TargetSkipped

__all__ = ["SKIP_KINDS", "announce_backoff", "announce_failed_over", "announce_skipped"]

SKIP_KINDS: frozenset[ErrorKind] = frozenset(ErrorKind) - ATTEMPT_KINDS
"""Kinds of a target passed over unsent (an open circuit, a failed health check, a budget or a
quota that is full): its "Skipped provider" line says it all."""


def announce_failed_over(notice: FailedOver) -> None:
    """``WARNING: Primary provider (X) failed: why`` / ``INFO: Attempting fallback provider: Y``."""
    if notice.error.kind in SKIP_KINDS:
        return
    if notice.primary:
        err(f"WARNING: Primary provider ({notice.from_provider}) failed: {notice.error.message}")
        err(f"INFO: Attempting fallback provider: {notice.to_provider}")
    else:
        err(f"WARNING: Provider {notice.from_provider} failed: {notice.error.message}")
        err(f"INFO: Attempting next provider: {notice.to_provider}")


def announce_skipped(notice: TargetSkipped) -> None:
    """``WARNING: Skipped provider X: kind (why)``."""
    s = notice.skipped
    err(f"WARNING: Skipped provider {s.provider}: {s.kind.value} ({s.message})")


def announce_backoff(notice: Backoff, seconds: float) -> None:
    """``INFO: X failed (kind); attempt 2 of 3 in 0.42 s``."""
    err(f"INFO: {notice.reason} in {seconds:.2f} s")
