"""Hooks: what a caller of ``rmcli.api`` wants to hear while a run goes on.

A ``Hooks`` value holds plain callables, each optional; a command builds one for its terminal
(progress, fail-over notices, streamed text), ``--verbose`` builds another for its trace, and
``fan_out`` joins them into one that calls each in turn. Nothing subclasses anything: a hook is a
function, and a missing hook costs one ``is None`` test.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rmcore.attempts import AttemptRecord
from rmcore.events import Backoff, FailedOver, StartAttempt, TargetSkipped
from rmcore.perspectives import Perspective
from rmcore.report import PerspectiveResult

__all__ = ["Hooks", "fan_out"]


@dataclass(frozen=True, slots=True)
class Hooks:
    """Callables the run calls as things happen; leave out what you do not need.

    ``attempt_started`` gets the engine's ``StartAttempt`` before its request leaves;
    ``attempt_ended`` every attempt's record once it is stored (cancelled ones included);
    ``failed_over``, ``backing_off`` (with the seconds of the wait) and ``skipped`` the engine's
    notices; ``text`` each piece of an answer streamed by an attempt that runs alone;
    ``state_unavailable`` one line when a shared state cannot be reached and the run goes on
    with this host's; ``perspective_started`` / ``perspective_finished`` (with how many are done
    and of how many) frame each perspective of an analysis, and ``synthesis_started`` says its
    synthesis is asked; ``adjusted`` says what an attempt's format cannot carry of the request as
    given and how it is sent instead (``rmcore.wire.adjustments``). Hooks are called from the
    run's tasks and must not block.
    """

    attempt_started: Callable[[StartAttempt], None] | None = None
    attempt_ended: Callable[[AttemptRecord], None] | None = None
    failed_over: Callable[[FailedOver], None] | None = None
    backing_off: Callable[[Backoff, float], None] | None = None
    skipped: Callable[[TargetSkipped], None] | None = None
    text: Callable[[str], None] | None = None
    state_unavailable: Callable[[str], None] | None = None
    perspective_started: Callable[[Perspective], None] | None = None
    perspective_finished: Callable[[PerspectiveResult, int, int], None] | None = None
    synthesis_started: Callable[[], None] | None = None
    adjusted: Callable[[StartAttempt, tuple[str, ...]], None] | None = None


_NAMES = tuple(f.name for f in dataclasses.fields(Hooks))
_NONE = Hooks()


def _chain(functions: list[Callable[..., None]]) -> Callable[..., None]:
    def call_each(*args: Any) -> None:
        for function in functions:
            function(*args)

    return call_each


def fan_out(*hooks: Hooks | None) -> Hooks:
    """One ``Hooks`` that calls, for each event, the hooks of every one given, in order."""
    given = [h for h in hooks if h is not None]
    if len(given) <= 1:  # every routed call fans out its caller's hooks: most often none
        return given[0] if given else _NONE
    joined: dict[str, Callable[..., None] | None] = {}
    for name in _NAMES:
        found = [f for h in given if (f := getattr(h, name)) is not None]
        joined[name] = None if not found else found[0] if len(found) == 1 else _chain(found)
    return Hooks(**joined)
