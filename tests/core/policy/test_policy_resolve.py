"""Resolving a policy's providers: built-ins with overrides merged, new providers added."""

from __future__ import annotations

from rmcore.policy import (
    Policy,
    ProviderOverride,
    Route,
    TargetTable,
    resolve_providers,
    route_providers,
)
from rmcore.providers import ProviderKind, builtin_providers
from tests.core.helpers import policy_of

LOCAL_URL = "http://127.0.0.1:11434/v1/chat/completions"
ENV = {"GLM_API_URL": "http://127.0.0.1:9001/v1/chat/completions", "GLM_API_KEY": "unused"}


def test_without_overrides_the_builtins_are_returned_unchanged() -> None:
    """A policy that overrides nothing resolves to the built-ins as they are."""
    builtins = builtin_providers(ENV)
    assert resolve_providers(Policy(version=1), builtins) == builtins


def test_a_builtin_override_changes_only_the_fields_it_sets() -> None:
    """Overriding some fields of a built-in keeps every other field, its key variable and built-in mark."""
    builtins = builtin_providers(ENV)
    policy = policy_of('version = 1\n[providers.glm-direct]\nmodel = "glm-4.6"\ninput_usd_per_mtok = 0.25\n')
    glm = resolve_providers(policy, builtins)["glm-direct"]
    assert glm.model == "glm-4.6"
    assert glm.input_usd_per_mtok == 0.25
    assert glm.output_usd_per_mtok == builtins["glm-direct"].output_usd_per_mtok
    assert glm.url == builtins["glm-direct"].url
    assert glm.key_env == "GLM_API_KEY"
    assert glm.builtin is True


def test_a_policy_url_replaces_the_environments_and_its_problems() -> None:
    """A URL in the policy replaces the environment's, and with it the problem of an unset variable."""
    builtins = builtin_providers({})
    assert builtins["openai-direct"].problems  # OPENAI_API_URL is not set
    policy = policy_of(f'version = 1\n[providers.openai-direct]\nurl = "{LOCAL_URL}"\n')
    openai = resolve_providers(policy, builtins)["openai-direct"]
    assert openai.url == LOCAL_URL
    assert openai.problems == ()


def test_a_bad_url_is_a_problem_of_the_provider() -> None:
    """A bad URL given by the policy makes the provider unusable, saying why, rather than raising."""
    policy = Policy(version=1, providers={"glm-direct": ProviderOverride(url="ftp://127.0.0.1/x")})
    glm = resolve_providers(policy, builtin_providers(ENV))["glm-direct"]
    assert len(glm.problems) == 1 and "not http:// or https://" in glm.problems[0]


def test_a_new_provider_without_key_env_needs_no_key() -> None:
    """A new provider without ``key_env`` needs no key, is free unless priced, and is not built in."""
    policy = policy_of(
        f'version = 1\n[providers.local]\nkind = "openai"\nurl = "{LOCAL_URL}"\nmodel = "llama3.1"\n'
    )
    local = resolve_providers(policy, builtin_providers(ENV))["local"]
    assert (local.name, local.kind, local.model) == ("local", ProviderKind.OPENAI, "llama3.1")
    assert local.url == LOCAL_URL
    assert local.key_env is None and local.key_required is False
    assert (local.input_usd_per_mtok, local.output_usd_per_mtok) == (0.0, 0.0)
    assert local.builtin is False and local.problems == ()


def test_a_new_provider_with_key_env_requires_it() -> None:
    """A new provider with ``key_env`` requires that key and keeps its prices."""
    policy = policy_of(
        "version = 1\n[providers.vllm]\n"
        f'kind = "openai"\nurl = "{LOCAL_URL}"\nmodel = "m"\nkey_env = "VLLM_KEY"\noutput_usd_per_mtok = 2\n'
    )
    vllm = resolve_providers(policy, builtin_providers(ENV))["vllm"]
    assert (vllm.key_env, vllm.key_required, vllm.output_usd_per_mtok) == ("VLLM_KEY", True, 2.0)


def test_an_incomplete_new_provider_built_in_code_is_flagged_not_raised() -> None:
    """A policy built in code skips the decoder's checks; resolution reports what is missing."""
    policy = Policy(version=1, providers={"half": ProviderOverride(kind=ProviderKind.ANTHROPIC)})
    half = resolve_providers(policy, builtin_providers(ENV))["half"]
    assert half.kind is ProviderKind.ANTHROPIC
    assert half.problems == ("the policy gives no `url`", "the policy gives no `model`")


def test_route_providers_in_order_once_each_nested_included() -> None:
    """``route_providers`` lists every provider of the route, nested ones included, in order, once each."""
    route = Route(
        targets=(
            "glm-direct",
            TargetTable(
                targets=(
                    TargetTable(provider="openai-direct"),
                    TargetTable(targets=("glm-direct", "anthropic-direct")),
                )
            ),
            "aiceo-gateway",
            "openai-direct",
        )
    )
    assert route_providers(Policy(version=1, route=route)) == [
        "glm-direct",
        "openai-direct",
        "anthropic-direct",
        "aiceo-gateway",
    ]
