"""The ``rmcore.policy`` package: one import for the schema, decoding, provider resolution,
encoding and explanation of policy files, each name the very object of its module."""

from __future__ import annotations

import importlib

import pytest
from returns.result import Success

import rmcore.policy as policy_package
from rmcore.policy import (
    Policy,
    decode_policy,
    encode_policy,
    explain,
    resolve_providers,
    route_providers,
)
from rmcore.providers import BUILTIN_NAMES, builtin_providers
from tests.core.helpers import policy_of

SUBMODULES = ("schema", "decode", "encode", "explain", "locate", "resolve")
WHOLE = ("decode", "encode", "explain", "resolve")
"""Modules whose every public name the package offers."""

ENV = {"GLM_API_URL": "http://127.0.0.1:9001/v1/chat/completions"}


def home_of(name: str) -> str:
    """The submodule that lists ``name`` in its ``__all__``."""
    for sub in SUBMODULES:
        if name in importlib.import_module(f"rmcore.policy.{sub}").__all__:
            return sub
    raise AssertionError(f"{name} is exported by no submodule of rmcore.policy")


@pytest.mark.parametrize("name", sorted(policy_package.__all__))
def test_every_name_is_its_module_s_own_object(name: str) -> None:
    """Each public name is re-exported, never copied: the same object as in its submodule."""
    module = importlib.import_module(f"rmcore.policy.{home_of(name)}")
    assert getattr(policy_package, name) is getattr(module, name)


@pytest.mark.parametrize("sub", WHOLE)
def test_the_whole_api_of_decoding_encoding_resolving_and_explaining_is_offered(sub: str) -> None:
    """Every public name of decode, encode, resolve and explain is importable from the package."""
    module = importlib.import_module(f"rmcore.policy.{sub}")
    assert set(module.__all__) <= set(policy_package.__all__)


def test_text_in_values_out_through_the_package_alone() -> None:
    """Text to policy, providers, explanation and back to text, with the package's names only."""
    text = """
        version = 1
        name = "pipeline"
        [route]
        strategy = "fastest"
        targets = ["aiceo-gateway", "glm-direct"]
        """
    policy = policy_of(text)
    assert isinstance(policy, Policy)
    providers = resolve_providers(policy, builtin_providers(ENV))
    assert route_providers(policy) == ["aiceo-gateway", "glm-direct"]
    words = explain(policy, providers)
    assert "aiceo-gateway" in words and "glm-direct" in words
    assert decode_policy(encode_policy(policy), "again.toml", BUILTIN_NAMES) == Success(policy)
