"""Provider descriptions (``rmcore.providers``): the four built-ins read from an environment
mapping, URL checks and the health endpoints."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rmcore.providers import BUILTIN_NAMES, ProviderKind, builtin_providers, check_url, health_url
from tests.core.helpers import spec

URL_VARIABLES = {
    "glm-direct": "GLM_API_URL",
    "anthropic-direct": "ANTHROPIC_API_URL",
    "openai-direct": "OPENAI_API_URL",
}


def test_the_four_builtins_in_the_seed_s_order() -> None:
    """The built-ins are the gateway, GLM, Anthropic and OpenAI, in that order, marked built-in."""
    providers = builtin_providers({})
    assert tuple(providers) == BUILTIN_NAMES
    assert all(p.builtin for p in providers.values())
    assert [p.kind for p in providers.values()] == [
        ProviderKind.AICEO,
        ProviderKind.OPENAI,
        ProviderKind.ANTHROPIC,
        ProviderKind.OPENAI,
    ]


def test_only_the_local_gateway_has_a_default_url() -> None:
    """With no environment the gateway is at the seed's localhost URL and usable; no direct
    provider defaults to a vendor's host: each is unusable, naming the variable to set."""
    providers = builtin_providers({})
    gateway = providers["aiceo-gateway"]
    assert gateway.url == "http://localhost:4000/api/glm/submit"
    assert gateway.problems == ()
    for name, variable in URL_VARIABLES.items():
        assert providers[name].url == ""
        assert len(providers[name].problems) == 1
        assert providers[name].problems[0].startswith(f"{variable} is not set")


def test_the_environment_sets_urls_and_models() -> None:
    """``*_API_URL`` and ``*_MODEL`` variables configure the providers, trimmed of spaces."""
    env = {"OPENAI_API_URL": "  https://llm.example.test/v1/chat/completions ", "OPENAI_MODEL": "gpt-test"}
    openai = builtin_providers(env)["openai-direct"]
    assert openai.url == "https://llm.example.test/v1/chat/completions"
    assert openai.model == "gpt-test"
    assert openai.problems == ()


def test_a_blank_variable_counts_as_unset() -> None:
    """A variable holding only spaces is not set: the default applies, or the problem is reported."""
    providers = builtin_providers({"GLM_API_URL": "   ", "AICEO_GATEWAY_MODEL": " "})
    assert providers["glm-direct"].problems[0].startswith("GLM_API_URL is not set")
    assert providers["aiceo-gateway"].model == "glm-4.7"


def test_a_bad_url_is_a_problem_naming_its_variable() -> None:
    """A URL that is not http(s) makes the provider unusable, with the variable and the reason."""
    [problem] = builtin_providers({"ANTHROPIC_API_URL": "ftp://h/x"})["anthropic-direct"].problems
    assert problem == "ANTHROPIC_API_URL: URL 'ftp://h/x' is not http:// or https://"


def test_the_process_environment_is_never_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the mapping passed in counts: the process's own variables change nothing."""
    monkeypatch.setenv("GLM_API_URL", "http://127.0.0.1:1/v1/chat/completions")
    monkeypatch.setenv("GLM_MODEL", "from-the-process")
    assert os.environ["GLM_MODEL"] == "from-the-process"
    glm = builtin_providers({})["glm-direct"]
    assert glm.url == ""
    assert glm.model == "glm-4.7"


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=16, max_size=40).map("sk-".__add__))
def test_a_key_in_the_environment_never_enters_a_provider(key: str) -> None:
    """Providers name their key's variable, never hold the key itself."""
    env = {
        variable: key
        for variable in ("AICEO_GATEWAY_API_KEY", "GLM_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_API_KEY")
    }
    for provider in builtin_providers(env).values():
        assert key not in msgspec.json.encode(provider).decode()
        assert provider.key_env is not None and provider.key_env.endswith("_API_KEY")


def test_only_the_gateway_has_a_concurrency_limit_and_a_quota_by_default() -> None:
    """The gateway serves about 8 at once and 2400 requests per 5 hours; the others are unlimited."""
    providers = builtin_providers({})
    gateway = providers["aiceo-gateway"]
    assert (gateway.max_concurrency, gateway.requests_per_window, gateway.quota_window_s) == (
        8,
        2400,
        18_000.0,
    )
    for name in URL_VARIABLES:
        assert providers[name].max_concurrency is None
        assert providers[name].requests_per_window is None
        assert providers[name].tokens_per_window is None


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8080/v1", "https://llm.example.test/v1/messages", "http://[::1]:9/x", "http://h"],
)
def test_absolute_http_urls_are_endpoints(url: str) -> None:
    """An absolute http:// or https:// URL with a host is accepted."""
    assert check_url(url) is None


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://h/x", "is not http:// or https://"),
        ("localhost:4000/api", "is not http:// or https://"),
        ("http:///v1", "has no host"),
        ("http://h:99999/", "is not a valid URL"),
        ("http://[::1/", "is not a valid URL"),
    ],
)
def test_other_urls_are_refused_with_the_reason(url: str, why: str) -> None:
    """A wrong scheme, no host, a port beyond 65535 or a malformed URL is refused, saying which."""
    problem = check_url(url)
    assert problem is not None and why in problem and repr(url) in problem


@pytest.mark.parametrize(
    ("kind", "url", "expected"),
    [
        (ProviderKind.AICEO, "http://127.0.0.1:4000/api/glm/submit", "http://127.0.0.1:4000/api/glm/status"),
        (ProviderKind.AICEO, "http://127.0.0.1:4000/api/glm/submit/", "http://127.0.0.1:4000/api/glm/status"),
        (ProviderKind.AICEO, "http://127.0.0.1:4000/gateway", "http://127.0.0.1:4000/gateway/status"),
        (ProviderKind.OPENAI, "http://127.0.0.1:9/v1/chat/completions?x=1", "http://127.0.0.1:9/v1/models"),
        (ProviderKind.OPENAI, "http://127.0.0.1:9/v1/complete", "http://127.0.0.1:9/v1/models"),
        (
            ProviderKind.ANTHROPIC,
            "https://llm.example.test/v1/messages",
            "https://llm.example.test/v1/models",
        ),
    ],
)
def test_the_health_endpoint_sits_beside_the_chat_endpoint(
    kind: ProviderKind, url: str, expected: str
) -> None:
    """The gateway's ``/status`` replaces ``/submit``; the others' ``/models`` replaces the chat path."""
    assert health_url(spec("p", kind=kind, url=url)) == expected


@given(st.sampled_from(list(ProviderKind)), st.from_regex(r"/[a-z]{1,8}(/[a-z]{1,8}){0,3}", fullmatch=True))
def test_the_health_endpoint_keeps_scheme_and_host_and_drops_the_query(kind: ProviderKind, path: str) -> None:
    """Whatever the path, the health check goes to the same origin, without query or fragment."""
    checked = urlsplit(health_url(spec("p", kind=kind, url=f"https://llm.example.test:8443{path}?k=v#f")))
    assert (checked.scheme, checked.netloc) == ("https", "llm.example.test:8443")
    assert (checked.query, checked.fragment) == ("", "")
