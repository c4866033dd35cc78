"""Failures are classified by body code first, then by status; Retry-After in every form."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rmcore.errors import ErrorKind, ProviderError
from rmcore.providers import ProviderKind
from rmcore.wire import classify_failure, parse_retry_after
from rmcore.wire.classify import MESSAGE_LIMIT, stream_error

NOW = 1_700_000_000.0
OPENAI, ANTHROPIC, AICEO = ProviderKind.OPENAI, ProviderKind.ANTHROPIC, ProviderKind.AICEO


def body(obj: object) -> bytes:
    return json.dumps(obj).encode()


def openai_error(message: str, type_: str | None = None, code: str | None = None) -> bytes:
    return body({"error": {"message": message, "type": type_, "param": None, "code": code}})


def anthropic_error(type_: str, message: str) -> bytes:
    return body({"type": "error", "error": {"type": type_, "message": message}})


def kind(provider: ProviderKind, status: int, payload: bytes = b"") -> ErrorKind:
    return classify_failure(provider, status, {}, payload, NOW).kind


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (429, ErrorKind.RATE_LIMITED),
        (500, ErrorKind.SERVER_ERROR),
        (502, ErrorKind.SERVER_ERROR),
        (504, ErrorKind.SERVER_ERROR),
        (599, ErrorKind.SERVER_ERROR),
        (503, ErrorKind.OVERLOADED),
        (529, ErrorKind.OVERLOADED),
        (401, ErrorKind.AUTH),
        (403, ErrorKind.AUTH),
        (400, ErrorKind.BAD_REQUEST),
        (404, ErrorKind.BAD_REQUEST),
        (422, ErrorKind.BAD_REQUEST),
        (408, ErrorKind.TIMEOUT),
        (413, ErrorKind.CONTEXT_LENGTH),
        (302, ErrorKind.MALFORMED_RESPONSE),
        (0, ErrorKind.MALFORMED_RESPONSE),
    ],
)
def test_status_decides_when_the_body_says_nothing_specific(status: int, expected: ErrorKind) -> None:
    """When the body names no specific error, the status alone decides the kind (429 rate limited, 503 and
    529 overloaded, other 5xx server error, ...)."""
    for provider in (OPENAI, ANTHROPIC):
        assert kind(provider, status) is expected
        assert kind(provider, status, b"<html>Bad Gateway</html>") is expected
        assert kind(provider, status, openai_error("something went wrong")) is expected


@pytest.mark.parametrize(
    ("status", "payload", "expected"),
    [
        (
            400,
            openai_error(
                "This model's maximum context length is 8192 tokens.",
                "invalid_request_error",
                "context_length_exceeded",
            ),
            ErrorKind.CONTEXT_LENGTH,
        ),
        (
            400,
            openai_error("Your request was rejected.", "invalid_request_error", "content_policy_violation"),
            ErrorKind.CONTENT_FILTER,
        ),
        (400, openai_error("filtered", None, "content_filter"), ErrorKind.CONTENT_FILTER),
        (
            429,
            openai_error("Rate limit reached for tokens per min (TPM)", "tokens", "rate_limit_exceeded"),
            ErrorKind.RATE_LIMITED,
        ),
        (
            429,
            openai_error("You exceeded your current quota.", "insufficient_quota", "insufficient_quota"),
            ErrorKind.RATE_LIMITED,
        ),
        # The code wins over a status that says less.
        (500, openai_error("too long", None, "context_length_exceeded"), ErrorKind.CONTEXT_LENGTH),
    ],
)
def test_openai_error_codes_win_over_the_status(status: int, payload: bytes, expected: ErrorKind) -> None:
    """An OpenAI error code (context length, content policy, rate limit, quota) decides the kind, whatever
    the status."""
    assert kind(OPENAI, status, payload) is expected


@pytest.mark.parametrize(
    ("status", "type_", "message", "expected"),
    [
        (529, "overloaded_error", "Overloaded", ErrorKind.OVERLOADED),
        (500, "overloaded_error", "Overloaded", ErrorKind.OVERLOADED),
        (
            429,
            "rate_limit_error",
            "Number of request tokens has exceeded your rate limit",
            ErrorKind.RATE_LIMITED,
        ),
        (401, "authentication_error", "invalid x-api-key", ErrorKind.AUTH),
        (403, "permission_error", "Your API key does not have permission", ErrorKind.AUTH),
        (
            400,
            "invalid_request_error",
            "prompt is too long: 210000 tokens > 200000 maximum",
            ErrorKind.CONTEXT_LENGTH,
        ),
        (
            400,
            "invalid_request_error",
            "input length and `max_tokens` exceed context limit: 198000 + 8192 > 200000",
            ErrorKind.CONTEXT_LENGTH,
        ),
        (400, "invalid_request_error", "max_tokens: Field required", ErrorKind.BAD_REQUEST),
        (
            413,
            "request_too_large",
            "Request exceeds the maximum allowed number of bytes.",
            ErrorKind.CONTEXT_LENGTH,
        ),
        (404, "not_found_error", "model: claude-x", ErrorKind.BAD_REQUEST),
        (500, "api_error", "Internal server error", ErrorKind.SERVER_ERROR),
    ],
)
def test_anthropic_error_types(status: int, type_: str, message: str, expected: ErrorKind) -> None:
    """Anthropic's error types, with their messages where the type is generic, decide the kind."""
    assert kind(ANTHROPIC, status, anthropic_error(type_, message)) is expected


def test_a_context_message_does_not_turn_a_rate_limit_or_server_error_into_context_length() -> None:
    """Words about the context window make a 400 ``context_length`` but leave a 429 or a 500 as they are."""
    payload = openai_error("Request too large: exceeds the context window of tokens per minute")
    assert kind(OPENAI, 429, payload) is ErrorKind.RATE_LIMITED
    assert kind(OPENAI, 500, payload) is ErrorKind.SERVER_ERROR
    assert kind(OPENAI, 400, payload) is ErrorKind.CONTEXT_LENGTH


def test_openai_compatible_flat_error_bodies_are_read() -> None:
    """Flat error bodies of OpenAI-compatible servers (vLLM's, FastAPI's ``detail``) are read too."""
    vllm = body(
        {
            "object": "error",
            "message": "This model's maximum context length is 4096 tokens.",
            "type": "BadRequestError",
            "param": None,
            "code": 400,
        }
    )
    assert kind(OPENAI, 400, vllm) is ErrorKind.CONTEXT_LENGTH
    error = classify_failure(OPENAI, 422, {}, body({"detail": "field required"}), NOW)
    assert error.kind is ErrorKind.BAD_REQUEST
    assert error.message == "HTTP 422: field required"


def test_glm_numeric_codes() -> None:
    """GLM's numeric error codes map to content filter, context length and rate limit."""
    assert (
        kind(OPENAI, 400, body({"error": {"code": "1301", "message": "unsafe"}})) is ErrorKind.CONTENT_FILTER
    )
    assert (
        kind(OPENAI, 400, body({"error": {"code": "1261", "message": "Prompt 超长"}}))
        is ErrorKind.CONTEXT_LENGTH
    )
    assert kind(OPENAI, 400, body({"error": {"code": 1302, "message": "并发"}})) is ErrorKind.RATE_LIMITED


def test_message_is_status_and_provider_text_on_one_line() -> None:
    """The message is ``HTTP <status>: <provider's text>`` with the text's whitespace folded onto one line."""
    error = classify_failure(OPENAI, 429, {}, openai_error("Slow\n  down", None, "rate_limit_exceeded"), NOW)
    assert error == ProviderError(kind=ErrorKind.RATE_LIMITED, message="HTTP 429: Slow down", status=429)


def test_message_falls_back_to_the_code_then_the_reason_phrase() -> None:
    """Without a provider message the error code is quoted, else the status's reason phrase, else a fixed
    text."""
    assert classify_failure(OPENAI, 400, {}, body({"error": {"code": "x_y"}}), NOW).message == "HTTP 400: x_y"
    assert classify_failure(OPENAI, 503, {}, b"", NOW).message == "HTTP 503: Service Unavailable"
    assert classify_failure(OPENAI, 599, {}, b"  ", NOW).message == "HTTP 599: no error message"


def test_a_provider_text_that_only_repeats_the_status_is_not_quoted() -> None:
    """``HTTP 503``, not ``HTTP 503: HTTP 503.``, when the body's message says nothing more."""
    assert classify_failure(OPENAI, 503, {}, openai_error("HTTP 503.", None, None), NOW).message == "HTTP 503"
    assert classify_failure(OPENAI, 503, {}, openai_error("HTTP 503 again", None, None), NOW).message == (
        "HTTP 503: HTTP 503 again"
    )


def test_long_provider_messages_are_cut() -> None:
    """A provider message longer than the limit is cut and ends with an ellipsis."""
    error = classify_failure(ANTHROPIC, 400, {}, anthropic_error("invalid_request_error", "x" * 5000), NOW)
    text = error.message.removeprefix("HTTP 400: ")
    assert len(text) == MESSAGE_LIMIT
    assert text.endswith("…")


def test_headers_never_reach_the_message() -> None:
    """No header, credentials included, is ever quoted in the message."""
    headers = {"authorization": "Bearer sk-secret-123", "x-api-key": "sk-secret-123", "retry-after": "3"}
    error = classify_failure(OPENAI, 401, headers, b"", NOW)
    assert "sk-secret" not in error.message
    assert error.kind is ErrorKind.AUTH


@pytest.mark.parametrize("status", [429, 503, 529, 500, 400])
def test_retry_after_is_read_on_any_status(status: int) -> None:
    """A Retry-After is kept whatever the status; without one there is none."""
    assert classify_failure(ANTHROPIC, status, {"retry-after": "7"}, b"", NOW).retry_after_s == 7.0
    assert classify_failure(ANTHROPIC, status, {}, b"", NOW).retry_after_s is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Quota exceeded: 2400 requests per 5 hours", ErrorKind.RATE_LIMITED),
        ("rate limit hit", ErrorKind.RATE_LIMITED),
        ("Request timeout after 120000ms", ErrorKind.TIMEOUT),
        ("upstream timed out", ErrorKind.TIMEOUT),
        ("GLM overloaded", ErrorKind.OVERLOADED),
        ("Queue full", ErrorKind.OVERLOADED),
        ("prompt is too long for the model", ErrorKind.CONTEXT_LENGTH),
        ("Something broke", ErrorKind.SERVER_ERROR),
    ],
)
def test_aiceo_failure_text_decides_its_kind(text: str, expected: ErrorKind) -> None:
    """The gateway's error text decides the kind of its failures, and refines a 500 but no other status."""
    payload = body({"success": False, "error": text, "metadata": {"requestId": "r1"}})
    error = classify_failure(AICEO, 200, {}, payload, NOW)
    assert error.kind is expected
    assert error.status == 200
    assert text in error.message
    # A 500 says no more than "server error": the text refines it. Other statuses stand.
    assert kind(AICEO, 500, payload) is expected
    assert kind(AICEO, 401, payload) is (ErrorKind.CONTEXT_LENGTH if "too long" in text else ErrorKind.AUTH)


def test_aiceo_429_is_rate_limited_with_its_retry_after() -> None:
    """A gateway 429 is ``rate_limited`` with its Retry-After and the gateway's text."""
    error = classify_failure(AICEO, 429, {"retry-after": "120"}, body({"success": False, "error": "x"}), NOW)
    assert (error.kind, error.retry_after_s, error.message) == (ErrorKind.RATE_LIMITED, 120.0, "HTTP 429: x")


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
            ErrorKind.OVERLOADED,
        ),
        ({"type": "error", "error": {"type": "api_error", "message": "boom"}}, ErrorKind.SERVER_ERROR),
        (
            {"type": "error", "error": {"type": "invalid_request_error", "message": "bad"}},
            ErrorKind.BAD_REQUEST,
        ),
        ({"error": {"message": "m", "type": "server_error", "code": None}}, ErrorKind.SERVER_ERROR),
        ({"error": {"message": "m", "type": "x", "code": "rate_limit_exceeded"}}, ErrorKind.RATE_LIMITED),
        ({"error": {"message": "?"}}, ErrorKind.SERVER_ERROR),
        ("not an object", ErrorKind.SERVER_ERROR),
    ],
)
def test_in_stream_errors_are_classified_by_their_body(obj: object, expected: ErrorKind) -> None:
    """Errors sent inside a stream are classified by their body, with status 200 and a ``stream error:``
    message."""
    error = stream_error(obj)
    assert error.kind is expected
    assert error.status == 200
    assert error.message.startswith("stream error: ")


# Retry-After


def test_retry_after_delta_seconds() -> None:
    """Retry-After in seconds, decimals and spaces allowed; a negative delay is no wait."""
    assert parse_retry_after({"retry-after": "120"}, NOW) == 120.0
    assert parse_retry_after({"retry-after": " 1.5 "}, NOW) == 1.5
    assert parse_retry_after({"retry-after": "0"}, NOW) == 0.0
    assert parse_retry_after({"retry-after": "-5"}, NOW) == 0.0


def test_retry_after_http_date_is_relative_to_now() -> None:
    """A Retry-After date is the time left until it, 0 once it has passed."""
    when = datetime.fromtimestamp(NOW + 30, tz=UTC)
    assert parse_retry_after({"retry-after": format_datetime(when, usegmt=True)}, NOW) == 30.0
    past = datetime.fromtimestamp(NOW - 30, tz=UTC)
    assert parse_retry_after({"retry-after": format_datetime(past, usegmt=True)}, NOW) == 0.0
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 1445412470.0) == 10.0


@pytest.mark.parametrize(
    "form",
    [
        "Sun, 06 Nov 1994 08:49:37 GMT",
        "Sunday, 06-Nov-94 08:49:37 GMT",
        "Sun Nov  6 08:49:37 1994",
        "sun, 06 nov 1994 08:49:37 GMT",
        "06 Nov 1994 08:49:37 UTC",
    ],
)
def test_retry_after_accepts_the_three_http_date_forms(form: str) -> None:
    """IMF-fixdate, RFC 850 and asctime dates are all read, month and day names in any case."""
    assert parse_retry_after({"retry-after": form}, 784111777.0 - 5) == 5.0


def test_retry_after_ms_wins() -> None:
    """``retry-after-ms`` wins over ``retry-after``; garbage milliseconds fall back to it."""
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}, NOW) == 1.5
    assert parse_retry_after({"retry-after-ms": "12.5"}, NOW) == 0.0125
    assert parse_retry_after({"retry-after-ms": "-3"}, NOW) == 0.0
    # Garbage milliseconds fall back to retry-after.
    assert parse_retry_after({"retry-after-ms": "soon", "retry-after": "9"}, NOW) == 9.0


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "soon",
        "nan",
        "inf",
        "1e5",
        "1_000",
        "12abc",
        "Wed, 99 Foo 2015",
        "0x10",
        "Sun, 31 Feb 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 25:49:37 GMT",
        "Sun, 06 Xyz 1994 08:49:37 GMT",
    ],
)
def test_retry_after_garbage_is_none(garbage: str) -> None:
    """Values that are neither seconds nor a real HTTP-date give no wait rather than a wrong one."""
    assert parse_retry_after({"retry-after": garbage}, NOW) is None
    assert parse_retry_after({"retry-after-ms": garbage}, NOW) is None


def test_no_retry_after_is_none() -> None:
    """Without the headers there is no minimum wait."""
    assert parse_retry_after({}, NOW) is None


@settings(max_examples=500, deadline=None)
@given(
    st.dictionaries(st.sampled_from(["retry-after", "retry-after-ms", "x"]), st.text(max_size=40)),
    st.floats(min_value=0, max_value=4e9),
)
def test_retry_after_never_raises_and_is_never_negative(headers: dict[str, str], now: float) -> None:
    """Any header values give a wait of zero or more, or none, never an exception."""
    value = parse_retry_after(headers, now)
    assert value is None or value >= 0.0


@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from(list(ProviderKind)),
    st.integers(min_value=-1000, max_value=100_000),
    st.dictionaries(st.text(max_size=20), st.text(max_size=40)),
    st.one_of(
        st.binary(max_size=300),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(
                    st.sampled_from(["error", "type", "code", "message", "detail", "success"]),
                    inner,
                    max_size=4,
                )
            ),
            max_leaves=12,
        ).map(lambda obj: json.dumps(obj).encode()),
    ),
)
def test_classify_failure_never_raises(
    provider: ProviderKind, status: int, headers: dict[str, str], payload: bytes
) -> None:
    """Any status, headers and body classify to a failure with that status and a bounded message."""
    error = classify_failure(provider, status, headers, payload, NOW)
    assert isinstance(error, ProviderError)
    assert error.status == status
    assert len(error.message) < MESSAGE_LIMIT + 60
