"""Where a provider's requests go, in words: addresses, URLs shown without credentials, the
setting a URL came from, and the full endpoint a base URL probably meant (``rmcore.wire.endpoint``)."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from returns.result import Failure

from rmcore import decode_policy
from rmcore.errors import ErrorKind
from rmcore.policy.resolve import resolve_providers
from rmcore.providers import BUILTIN_NAMES, ProviderKind, ProviderSpec, builtin_providers
from rmcore.wire import parse_response
from rmcore.wire.endpoint import (
    ENDPOINT_PATHS,
    address,
    likely_endpoint,
    shown_url,
    url_setting,
    wrong_endpoint,
)

NOT_FOUND = b'{"error": {"message": "Invalid URL (POST /v1)", "type": "invalid_request_error"}}'


def spec(kind: ProviderKind, url: str, url_from: str = "OPENAI_API_URL") -> ProviderSpec:
    return ProviderSpec(name="p", kind=kind, url=url, model="m", url_from=url_from)


@pytest.mark.parametrize(
    ("kind", "url", "likely"),
    [
        (ProviderKind.OPENAI, "http://h:8/v1", "http://h:8/v1/chat/completions"),
        (ProviderKind.OPENAI, "http://h:8/v1/", "http://h:8/v1/chat/completions"),
        (ProviderKind.OPENAI, "http://h:8", "http://h:8/v1/chat/completions"),
        (
            ProviderKind.OPENAI,
            "https://open.bigmodel.cn/api/paas/v4",
            "https://open.bigmodel.cn/api/paas/v4/chat/completions",
        ),
        (ProviderKind.OPENAI, "http://h/v1/chat", "http://h/v1/chat/completions"),
        (ProviderKind.OPENAI, "http://h/v1/completions", "http://h/v1/chat/completions"),
        (ProviderKind.OPENAI, "http://h/v1/models", "http://h/v1/chat/completions"),
        (
            ProviderKind.OPENAI,
            "http://h/openai?api-version=2024",
            "http://h/openai/chat/completions?api-version=2024",
        ),
        (ProviderKind.ANTHROPIC, "http://h/v1", "http://h/v1/messages"),
        (ProviderKind.ANTHROPIC, "http://h", "http://h/v1/messages"),
        (ProviderKind.ANTHROPIC, "http://h/v1/models", "http://h/v1/messages"),
        (ProviderKind.AICEO, "http://h:4000", "http://h:4000/api/glm/submit"),
        (ProviderKind.AICEO, "http://h:4000/api", "http://h:4000/api/glm/submit"),
        (ProviderKind.AICEO, "http://h:4000/api/glm", "http://h:4000/api/glm/submit"),
        (ProviderKind.AICEO, "http://h:4000/api/glm/status", "http://h:4000/api/glm/submit"),
    ],
)
def test_a_base_url_gets_the_endpoint_it_probably_meant(kind: ProviderKind, url: str, likely: str) -> None:
    """A URL short of its kind's endpoint path is completed the way the vendors lay out their
    APIs: OpenAI kind (GLM included) ``/chat/completions``, Anthropic ``/messages`` (under
    ``/v1`` when there is no path), the AICEO gateway ``/api/glm/submit``; a sibling endpoint
    (``/models``, ``/status``) is replaced, and a query is kept."""
    assert likely_endpoint(spec(kind, url)) == likely


@given(
    kind=st.sampled_from(list(ProviderKind)),
    base=st.lists(st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True), max_size=4),
    slash=st.booleans(),
)
def test_a_full_endpoint_is_never_corrected(kind: ProviderKind, base: list[str], slash: bool) -> None:
    """Whatever comes before it, a URL that ends in its kind's endpoint path (with or without a
    trailing slash) has no likely endpoint, and a 404 from it keeps the provider's own words."""
    path = "".join(f"/{part}" for part in base) + ENDPOINT_PATHS[kind] + ("/" if slash else "")
    provider = spec(kind, f"http://127.0.0.1:9{path}")
    assert likely_endpoint(provider) is None
    assert wrong_endpoint(provider, 404) is None


@given(
    kind=st.sampled_from(list(ProviderKind)),
    base=st.lists(st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True), max_size=4),
)
def test_a_likely_endpoint_is_a_full_endpoint_on_the_same_server(kind: ProviderKind, base: list[str]) -> None:
    """Any likely endpoint is on the same scheme, host and port, ends in the kind's endpoint
    path, and is not corrected again."""
    url = "http://127.0.0.1:9" + "".join(f"/{part}" for part in base)
    likely = likely_endpoint(spec(kind, url))
    if likely is None:
        assert url.endswith(ENDPOINT_PATHS[kind])
        return
    assert likely.startswith("http://127.0.0.1:9/")
    assert likely.endswith(ENDPOINT_PATHS[kind])
    assert likely_endpoint(spec(kind, likely)) is None


@pytest.mark.parametrize("status", [404, 405])
def test_a_404_from_a_base_url_says_it_must_be_the_full_endpoint(status: int) -> None:
    """A 404 (or 405) from ``http://host/v1`` names the setting and its URL, says the URL must
    be the full endpoint, and shows the likely one; the kind stays ``bad_request``."""
    provider = spec(ProviderKind.OPENAI, "http://127.0.0.1:9/v1")
    result = parse_response(provider, status, {}, NOT_FOUND, 0.0)
    assert isinstance(result, Failure)
    error = result.failure()
    assert error.kind is ErrorKind.BAD_REQUEST and error.status == status
    assert error.message == (
        f"HTTP {status} from OPENAI_API_URL=http://127.0.0.1:9/v1: the URL must be the full "
        "endpoint; did you mean http://127.0.0.1:9/v1/chat/completions?"
    )


@pytest.mark.parametrize("kind", list(ProviderKind))
def test_other_failures_keep_the_providers_words(kind: ProviderKind) -> None:
    """A 404 from a full endpoint (an unknown model, say) and any other status from a base URL
    are reported as before: the hint is only for a path the server has no endpoint at."""
    full = spec(kind, "http://127.0.0.1:9/api" + ENDPOINT_PATHS[kind])
    base = spec(kind, "http://127.0.0.1:9/api/v1")
    for provider, status in ((full, 404), (base, 400), (base, 500), (base, 401)):
        error = parse_response(provider, status, {}, NOT_FOUND, 0.0).failure()
        assert "full endpoint" not in error.message
        assert error.message.startswith(f"HTTP {status}: ")


def test_urls_are_shown_without_credentials() -> None:
    """A password and credential-like query values are hidden; other query values and the
    user name stay, so that the URL is still recognisable."""
    assert shown_url("https://me:s3cret@h/v1?api-version=1&api_key=s3cret&token=s3cret#frag") == (
        "https://me:<redacted>@h/v1?api-version=1&api_key=<redacted>&token=<redacted>"
    )
    hint = wrong_endpoint(spec(ProviderKind.OPENAI, "http://me:s3cret@127.0.0.1:9/v1?key=s3cret"), 404)
    assert hint is not None and "s3cret" not in hint


@pytest.mark.parametrize(
    ("url", "where"),
    [
        ("http://127.0.0.1:8080/v1", "127.0.0.1:8080"),
        ("https://example.test/v1", "example.test:443"),
        ("http://example.test/v1", "example.test:80"),
        ("http://[::1]:9/v1", "[::1]:9"),
    ],
)
def test_the_address_is_host_and_port(url: str, where: str) -> None:
    """The address names the host and the port, the scheme's default when the URL has none."""
    assert address(url) == where


def test_each_builtin_names_the_variable_its_url_came_from() -> None:
    """The built-ins' URLs come from their variables (DESIGN §2); a policy that sets a
    built-in's URL, or defines a provider, is named by its key instead."""
    env = {var: "http://127.0.0.1:9/x" for var in ("GLM_API_URL", "ANTHROPIC_API_URL", "OPENAI_API_URL")}
    builtins = builtin_providers(env)
    assert {name: builtins[name].url_from for name in BUILTIN_NAMES} == {
        "aiceo-gateway": "AICEO_GATEWAY_URL",
        "glm-direct": "GLM_API_URL",
        "anthropic-direct": "ANTHROPIC_API_URL",
        "openai-direct": "OPENAI_API_URL",
    }
    assert url_setting(builtins["glm-direct"]) == "GLM_API_URL=http://127.0.0.1:9/x"
    text = """\
version = 1
[providers.glm-direct]
url = "http://127.0.0.1:7/v1/chat/completions"
[providers.local]
kind = "openai"
url = "http://127.0.0.1:8/v1"
model = "m"
[route]
targets = ["glm-direct", "local", "openai-direct"]
"""
    policy = decode_policy(text, "p.toml", BUILTIN_NAMES).unwrap()
    resolved = resolve_providers(policy, builtins)
    assert (
        url_setting(resolved["glm-direct"])
        == "providers.glm-direct.url=http://127.0.0.1:7/v1/chat/completions"
    )
    assert url_setting(resolved["local"]) == "providers.local.url=http://127.0.0.1:8/v1"
    assert resolved["openai-direct"].url_from == "OPENAI_API_URL"
    assert url_setting(msgspec.structs.replace(resolved["local"], url_from="")) == (
        "providers.local.url=http://127.0.0.1:8/v1"
    )
