"""What the caller asks for and the HTTP request it becomes (``rmcore.requests``)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rmcore.requests import ChatRequest, HttpRequest

SECRET_HEADERS = ["Authorization", "x-api-key", "API-Key", "Proxy-Authorization"]


def test_a_request_streams_up_to_1024_tokens_by_default() -> None:
    """Only the prompt is required: no system text, 1024 tokens, the provider's temperature,
    streamed, from ``ask``."""
    request = ChatRequest(prompt="p")
    assert (request.system, request.max_tokens, request.temperature) == (None, 1024, None)
    assert request.stream is True
    assert request.source_id == "ask"


def test_a_temperature_of_zero_is_kept_as_zero() -> None:
    """0.0 is a temperature, not "unset": it is kept, never replaced by the default."""
    assert ChatRequest(prompt="p", temperature=0.0).temperature == 0.0


def test_an_http_request_has_an_empty_body_by_default() -> None:
    """A GET (a health check) carries no body."""
    assert HttpRequest(method="GET", url="http://127.0.0.1:9/", headers=()).body == b""


@pytest.mark.parametrize("name", SECRET_HEADERS)
def test_credentials_are_redacted_whatever_the_header_case(name: str) -> None:
    """Authorization, x-api-key, api-key and proxy-authorization show as ``<redacted>``."""
    request = HttpRequest(method="POST", url="http://h/", headers=((name, "sk-secret"),))
    assert request.redacted_headers() == ((name, "<redacted>"),)


def test_other_headers_are_shown_as_they_are_and_in_order() -> None:
    """Redaction replaces only credential values; names, order and other values are kept."""
    headers = (("Content-Type", "application/json"), ("Authorization", "Bearer k"), ("Accept", "*/*"))
    request = HttpRequest(method="POST", url="http://h/", headers=headers)
    assert request.redacted_headers() == (
        ("Content-Type", "application/json"),
        ("Authorization", "<redacted>"),
        ("Accept", "*/*"),
    )
    assert request.headers == headers


@given(
    st.lists(
        st.tuples(st.sampled_from([*SECRET_HEADERS, "Accept", "X-Trace"]), st.text(min_size=8, max_size=30)),
        max_size=6,
    )
)
def test_no_credential_value_survives_redaction(headers: list[tuple[str, str]]) -> None:
    """Whatever the headers, every credential's value is replaced and every other one kept."""
    redacted = HttpRequest(method="POST", url="http://h/", headers=tuple(headers)).redacted_headers()
    assert [name for name, _ in redacted] == [name for name, _ in headers]
    for (name, value), (_, shown) in zip(headers, redacted, strict=True):
        assert shown == ("<redacted>" if name in SECRET_HEADERS else value)
