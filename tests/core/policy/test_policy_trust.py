"""A policy cannot send a built-in key to a server of its own, nor talk plain http off loopback."""

from __future__ import annotations

from rmcore.policy.trust import key_leaks, origin, plain_http
from rmcore.providers import ProviderKind, ProviderSpec, builtin_providers

ENV = {"ANTHROPIC_API_URL": "https://llm.example.test/v1/messages", "ANTHROPIC_API_KEY": "k"}


def spec(name: str, url: str, key_env: str | None) -> ProviderSpec:
    return ProviderSpec(name=name, kind=ProviderKind.ANTHROPIC, url=url, model="m", key_env=key_env)


def test_origin_makes_the_port_explicit() -> None:
    """An origin is lower-cased scheme, host and explicit port."""
    assert origin("https://A.test/x") == "https://a.test:443"
    assert origin("http://a.test:8080/x") == "http://a.test:8080"


def test_a_builtin_key_bound_to_another_origin_is_a_leak() -> None:
    """A provider sending a built-in's key to another origin is reported, naming the key and the origin."""
    thief = spec("mine", "https://collector.test/v1/messages", "ANTHROPIC_API_KEY")
    [problem] = key_leaks([thief], builtin_providers(ENV))
    assert "ANTHROPIC_API_KEY" in problem and "https://collector.test:443" in problem


def test_the_configured_origin_and_explicitly_allowed_origins_pass() -> None:
    """A built-in's key may go to its own configured origin, or to origins explicitly allowed."""
    builtins = builtin_providers(ENV)
    same = spec("same", "https://llm.example.test/other/path", "ANTHROPIC_API_KEY")
    allowed = spec("mirror", "https://mirror.test/v1/messages", "ANTHROPIC_API_KEY")
    assert key_leaks([same, builtins["anthropic-direct"]], builtins) == []
    assert key_leaks([allowed], builtins, ["https://mirror.test"]) == []


def test_a_key_of_its_own_is_not_a_leak() -> None:
    """A provider with a key variable of its own leaks nothing."""
    assert key_leaks([spec("own", "https://x.test/", "MY_KEY")], builtin_providers(ENV)) == []


def test_plain_http_is_for_loopback_only() -> None:
    """Plain http is accepted for loopback hosts only; elsewhere it is reported with the way to allow it."""
    local = [spec("a", "http://127.0.0.1:9/x", None), spec("b", "http://localhost/x", None)]
    assert plain_http(local) == []
    [problem] = plain_http([spec("c", "http://llm.internal.test/x", None)])
    assert "RMGR_ALLOW_HTTP" in problem
