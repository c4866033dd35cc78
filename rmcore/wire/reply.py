"""A whole HTTP reply read as a pipeline: accepted, decoded, not withheld, then an answer.

Every format reads a whole reply in the same steps, each a small function returning a
``Result[..., ProviderError]``, joined with ``Result.bind`` in the format's own ``parse_response``
(method calls rather than ``flow``: half the cost, on a path every reply takes):

1. :func:`accepted`: a 2xx status goes on; any other is the failure it describes
   (:func:`~rmcore.wire.classify.classify_failure`);
2. :func:`decoded`: the body as the format's reply shape; an error object in place of an answer
   is classified like a failed status, anything else is ``malformed_response``;
3. the format's own checks (an answer present, ...), then :func:`not_withheld`: an answer the
   provider withheld (a content-filter finish reason, a bare refusal) is ``content_filter``;
4. the ``Completion``.

The first step that fails is the reply's outcome.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

from returns.result import Failure, Result, Success

from rmcore.base import Base
from rmcore.errors import ProviderError
from rmcore.providers import ProviderKind
from rmcore.wire.classify import CONTENT_FILTER_REASONS, classify_failure, content_filter_error, is_error_body
from rmcore.wire.decode import decode_any, decode_as

__all__ = ["Reply", "accepted", "classified", "decoded", "not_withheld"]

T = TypeVar("T")


class Reply(Base, frozen=True):
    """One whole HTTP reply as the shell read it: the wire format it should be in, its status,
    its headers (lower-case names), its body, and ``now`` (Unix seconds, to date an HTTP-date
    Retry-After)."""

    kind: ProviderKind
    status: int
    headers: Mapping[str, str]
    body: bytes
    now: float


def classified(reply: Reply) -> ProviderError:
    """The failure ``reply`` describes (by its status and its error body)."""
    return classify_failure(reply.kind, reply.status, reply.headers, reply.body, reply.now)


def accepted(reply: Reply) -> Result[Reply, ProviderError]:
    """``reply`` itself when its status is 2xx; otherwise the failure it describes."""
    if 200 <= reply.status < 300:
        return Success(reply)
    return Failure(classified(reply))


def decoded(
    shape: type[T], not_shape: Callable[[int], ProviderError]
) -> Callable[[Reply], Result[T, ProviderError]]:
    """A step that reads a reply's body as ``shape``. A body that is an error report instead is
    classified; any other body is the failure ``not_shape(status)`` (``malformed_response``)."""

    def step(reply: Reply) -> Result[T, ProviderError]:
        value = decode_as(reply.body, shape)
        if value is not None:
            return Success(value)
        if is_error_body(decode_any(reply.body)):
            return Failure(classified(reply))
        return Failure(not_shape(reply.status))

    return step


def not_withheld(
    content: str, finish_reason: str | None, *, refused: bool, status: int = 200
) -> Result[str, ProviderError]:
    """``content`` when the provider gave it; ``content_filter`` when it withheld the answer: a
    finish (stop) reason of :data:`~rmcore.wire.classify.CONTENT_FILTER_REASONS`, or a refusal
    (``refused``) in place of any text."""
    if finish_reason is not None and finish_reason.lower() in CONTENT_FILTER_REASONS:
        return Failure(content_filter_error(finish_reason, status))
    if refused and not content:
        return Failure(content_filter_error("refusal", status))
    return Success(content)
