"""Health checks as values (``rmcore.health``): the request that asks whether a provider is up,
and how its reply is read."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rmcore.health import build_health_request, read_health_reply
from rmcore.providers import ProviderKind, ProviderSpec
from tests.core.helpers import spec

AICEO = spec("gw", kind=ProviderKind.AICEO, url="http://127.0.0.1:4000/api/glm/submit")
OPENAI = spec("oa", kind=ProviderKind.OPENAI, url="http://127.0.0.1:9001/v1/chat/completions")
ANTHROPIC = spec("an", kind=ProviderKind.ANTHROPIC, url="http://127.0.0.1:9002/v1/messages")


def headers(provider: ProviderSpec, key: str | None) -> dict[str, str]:
    request = build_health_request(provider, key)
    assert request.method == "GET"
    assert request.body == b""
    return dict(request.headers)


def test_the_gateway_is_asked_its_status_with_its_own_key_header() -> None:
    """The AICEO gateway: GET ``/status`` beside ``/submit``, the key in ``X-API-Key``."""
    request = build_health_request(AICEO, "gw-key")
    assert request.url == "http://127.0.0.1:4000/api/glm/status"
    assert dict(request.headers) == {"Accept": "application/json", "X-API-Key": "gw-key"}


def test_openai_kinds_are_asked_for_their_models_with_a_bearer_token() -> None:
    """OpenAI-compatible providers: GET ``/models`` with ``Authorization: Bearer``."""
    request = build_health_request(OPENAI, "sk-1")
    assert request.url == "http://127.0.0.1:9001/v1/models"
    assert dict(request.headers) == {"Accept": "application/json", "Authorization": "Bearer sk-1"}


def test_anthropic_is_asked_for_its_models_with_its_version_and_key_headers() -> None:
    """Anthropic: GET ``/models`` with ``anthropic-version`` and ``x-api-key``."""
    request = build_health_request(ANTHROPIC, "ak-1")
    assert request.url == "http://127.0.0.1:9002/v1/models"
    assert dict(request.headers) == {
        "Accept": "application/json",
        "anthropic-version": "2023-06-01",
        "x-api-key": "ak-1",
    }


@pytest.mark.parametrize("provider", [AICEO, OPENAI, ANTHROPIC], ids=lambda p: p.kind.value)
@pytest.mark.parametrize("key", [None, ""])
def test_without_a_key_no_credential_is_sent(provider: ProviderSpec, key: str | None) -> None:
    """No key (or an empty one) sends no credential header at all."""
    sent = {name.lower() for name in headers(provider, key)}
    assert not sent & {"authorization", "x-api-key"}


@pytest.mark.parametrize("provider", [AICEO, OPENAI, ANTHROPIC], ids=lambda p: p.kind.value)
def test_the_key_never_shows_in_the_redacted_headers(provider: ProviderSpec) -> None:
    """The health request's key is hidden like any other request's."""
    request = build_health_request(provider, "very-secret-key")
    assert "very-secret-key" not in repr(request.redacted_headers())


@pytest.mark.parametrize("provider", [AICEO, OPENAI, ANTHROPIC], ids=lambda p: p.kind.value)
@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_key_is_unhealthy_auth(provider: ProviderSpec, status: int) -> None:
    """401 and 403 say ``auth``: bad credentials are unhealthy, unlike the seed's check."""
    assert read_health_reply(provider, status, b"") == "auth"


@pytest.mark.parametrize("provider", [AICEO, OPENAI, ANTHROPIC], ids=lambda p: p.kind.value)
@pytest.mark.parametrize("status", [301, 404, 429, 500, 503])
def test_any_other_status_outside_2xx_names_the_status(provider: ProviderSpec, status: int) -> None:
    """Any other non-2xx reply is unhealthy with ``HTTP <code>``."""
    assert read_health_reply(provider, status, b'{"healthy": true}') == f"HTTP {status}"


@pytest.mark.parametrize("provider", [OPENAI, ANTHROPIC], ids=lambda p: p.kind.value)
def test_a_2xx_from_a_direct_provider_is_healthy_whatever_its_body(provider: ProviderSpec) -> None:
    """For the OpenAI and Anthropic kinds the model list answering at all is health."""
    assert read_health_reply(provider, 200, b"not even json") is None


@pytest.mark.parametrize(
    "body",
    [b'{"status": "operational", "queue": 3}', b'{"healthy": true}', b'{"healthy": true, "status": "x"}'],
)
def test_both_documented_gateway_status_bodies_are_healthy(body: bytes) -> None:
    """The gateway's ``{status: "operational"}`` and ``{healthy: true}`` both mean up."""
    assert read_health_reply(AICEO, 200, body) is None


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<html>down</html>", "status body is not JSON"),
        (b"[1, 2]", "status body is not a JSON object"),
        (b'{"status": "degraded"}', "status: degraded"),
        (b'{"healthy": false}', "status body says unhealthy"),
        (b'{"healthy": "true"}', "status body says unhealthy"),
        (b"{}", "status body says unhealthy"),
    ],
)
def test_a_gateway_status_body_that_is_not_healthy_says_why(body: bytes, reason: str) -> None:
    """A 200 from the gateway is healthy only when its body says so; otherwise the reason is given."""
    assert read_health_reply(AICEO, 200, body) == reason


def test_a_long_gateway_status_is_cut_to_80_characters() -> None:
    """A status text is quoted, but never more than 80 characters of it."""
    reason = read_health_reply(AICEO, 200, json.dumps({"status": "x" * 500}).encode())
    assert reason == "status: " + "x" * 80


@given(st.binary(max_size=200), st.integers(min_value=100, max_value=599))
def test_reading_any_reply_never_raises(body: bytes, status: int) -> None:
    """Whatever status and bytes arrive, the answer is healthy or a short reason."""
    for provider in (AICEO, OPENAI, ANTHROPIC):
        reason = read_health_reply(provider, status, body)
        assert reason is None or 0 < len(reason) <= 100
        if not 200 <= status < 300:
            assert reason is not None
