"""A whole reply read as a pipeline (``rmcore.wire.reply``): accepted, decoded, not withheld.

Each step returns a ``Result``; the formats' own tests check the pipelines they build from them."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from returns.result import Failure, Success

from rmcore.errors import ErrorKind, ProviderError
from rmcore.providers import ProviderKind
from rmcore.wire.classify import classify_failure
from rmcore.wire.reply import Reply, accepted, classified, decoded, not_withheld
from tests.core.helpers import NOW


class Answer(msgspec.Struct, frozen=True):
    """A format's reply shape."""

    text: str


def reply(status: int, body: bytes = b"", **headers: str) -> Reply:
    return Reply(kind=ProviderKind.OPENAI, status=status, headers=headers, body=body, now=NOW)


def not_an_answer(status: int) -> ProviderError:
    return ProviderError(kind=ErrorKind.MALFORMED_RESPONSE, message="not an answer", status=status)


@given(st.integers(min_value=200, max_value=299))
def test_a_2xx_reply_is_accepted_as_it_is(status: int) -> None:
    """Any 2xx status goes on to the next step, the reply unchanged."""
    ok = reply(status, b"{}")
    assert accepted(ok) == Success(ok)


@given(st.integers(min_value=0, max_value=999).filter(lambda s: not 200 <= s < 300))
def test_any_other_status_is_the_failure_it_describes(status: int) -> None:
    """A status outside 2xx is the classified failure, exactly as ``classify_failure`` says."""
    failed = reply(status, b'{"error": {"message": "no"}}', **{"retry-after": "3"})
    assert accepted(failed) == Failure(
        classify_failure(ProviderKind.OPENAI, status, failed.headers, failed.body, NOW)
    )
    assert accepted(failed) == Failure(classified(failed))


def test_a_body_of_the_shape_is_decoded() -> None:
    """A body holding the format's shape is that value."""
    assert decoded(Answer, not_an_answer)(reply(200, b'{"text": "hi"}')) == Success(Answer(text="hi"))


def test_an_error_body_in_place_of_an_answer_is_classified() -> None:
    """An error report sent with 200 is classified like a failed status, not called malformed."""
    result = decoded(Answer, not_an_answer)(
        reply(200, b'{"error": {"code": "rate_limit_exceeded", "message": "x"}}')
    )
    assert isinstance(result, Failure)
    assert result.failure().kind is ErrorKind.RATE_LIMITED


@pytest.mark.parametrize("body", [b"", b"nope", b"[]", b'{"text": 3}'])
def test_any_other_body_is_the_format_s_own_failure(body: bytes) -> None:
    """A body that is neither the shape nor an error report is the failure the format gives."""
    assert decoded(Answer, not_an_answer)(reply(200, body)) == Failure(not_an_answer(200))


@pytest.mark.parametrize("reason", ["content_filter", "CONTENT_FILTER", "refusal", "sensitive"])
def test_a_content_filter_finish_withholds_the_answer(reason: str) -> None:
    """A content-filter finish reason, in any case, is ``content_filter`` even with text."""
    result = not_withheld("partial text", reason, refused=False, status=200)
    assert isinstance(result, Failure)
    assert (result.failure().kind, result.failure().status) == (ErrorKind.CONTENT_FILTER, 200)


def test_a_refusal_without_text_withholds_the_answer() -> None:
    """A refusal in place of any text is ``content_filter``; beside text it is not."""
    assert isinstance(not_withheld("", "stop", refused=True), Failure)
    assert not_withheld("the answer", "stop", refused=True) == Success("the answer")


@given(st.text(), st.none() | st.sampled_from(["stop", "length", "end_turn", "max_tokens", "tool_use"]))
def test_an_answer_given_is_kept_as_it_is(content: str, finish_reason: str | None) -> None:
    """Without a refusal or a content-filter reason, the content goes through unchanged, even empty."""
    assert not_withheld(content, finish_reason, refused=False) == Success(content)
