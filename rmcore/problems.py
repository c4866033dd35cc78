"""Failures of the core's steps, as values: a kind and a message fit for a person.

Core functions that can fail return a ``returns.result.Result`` whose failure is a frozen struct,
never a bare string and never an exception. A provider's failure is a
:class:`rmcore.errors.ProviderError` (its kind an ``ErrorKind``); every other step (reading a
policy, resolving and checking its providers, planning its route, choosing perspectives, reading
a start time) fails with a :class:`Problem`. ``str(problem)`` is its message alone, so that a
shell printing ``f"{failure}"`` shows the words it always showed.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import TypeVar

from returns.pipeline import is_successful
from returns.result import Result, Success

from rmcore.base import Base

__all__ = ["PolicyIssue", "Problem", "ProblemKind", "collect"]

T = TypeVar("T")
E = TypeVar("E")


class ProblemKind(enum.StrEnum):
    """Why a step of the core could not produce its value."""

    INVALID_POLICY = "invalid_policy"
    """The policy text is not TOML, or not a valid policy (``issues`` says where and why)."""
    UNKNOWN_PROVIDER = "unknown_provider"
    """A route names a provider that is neither built in nor defined by the policy."""
    UNUSABLE_PROVIDER = "unusable_provider"
    """A provider the route needs is configured so that it cannot be called (no URL, ...)."""
    UNTRUSTED_PROVIDER = "untrusted_provider"
    """A provider would send a key where its owner did not point it, or talk plain http."""
    UNKNOWN_ROUTE = "unknown_route"
    """A route name that is neither ``default`` (``[route]``) nor one of the policy's ``[routes.NAME]``."""
    UNKNOWN_PERSPECTIVE = "unknown_perspective"
    """A perspective id that is neither one of the eight nor defined by the policy."""
    NO_PERSPECTIVE = "no_perspective"
    """No perspective was selected."""
    UNREADABLE_TIME = "unreadable_time"
    """A start time (``--since``) in none of the accepted forms."""
    INVALID_REQUEST = "invalid_request"
    """A chat request (OpenAI-shaped JSON) that cannot be read: ``subject`` is its ``$.path``."""
    UNSUPPORTED_REQUEST = "unsupported_request"
    """The request needs what no target of its route can carry (tools, images, a JSON answer)."""


class PolicyIssue(Base, frozen=True):
    """One reason a policy file is not valid: where (file, line, path) and why."""

    file: str
    line: int | None
    path: str
    """``$`` for the whole document, else e.g. ``$.limits.deadline_s`` or ``$.route.targets[1]``."""
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.message}" if self.path == "$" else f"{where}: {self.path}: {self.message}"


class Problem(Base, frozen=True):
    """A step of the core failed: what kind of failure, and a message that says what to fix.

    ``subject`` is what the problem is about when it is about one thing (a provider's name, a
    perspective's id, the text that could not be read), so that a shell can word it its own way.
    """

    kind: ProblemKind
    message: str
    subject: str = ""
    issues: tuple[PolicyIssue, ...] = ()
    """For ``invalid_policy``: every issue found, in document order."""

    def __str__(self) -> str:
        return self.message


def collect(results: Iterable[Result[T, E]]) -> Result[tuple[T, ...], E]:
    """Every value of ``results``, in order, or the first failure (the rest are not looked at).

    ``returns.iterables.Fold.collect`` does the same, but it is typed through higher kinds that
    mypy follows only with the returns plugin; this is that fold, one ``Result.do`` per item.
    """
    collected: Result[tuple[T, ...], E] = Success(())
    for result in results:
        collected = Result.do((*done, value) for done in collected for value in result)
        if not is_successful(collected):
            break
    return collected
