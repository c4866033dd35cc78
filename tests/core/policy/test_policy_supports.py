"""``[providers.NAME] supports``: what a provider carries beyond text, declared by a policy.

Decoded like every other key (an unknown capability is an issue at its own line and path, with a
suggestion), resolved over the provider's kind, written back by ``encode_policy``, and said by
``policy explain`` only when it matters (the gateway's text only, or what a policy declared)."""

from __future__ import annotations

from rmcore.capabilities import ALL_CAPABILITIES, Capability
from rmcore.policy import encode_policy, explain, resolve_providers
from rmcore.providers import ProviderKind, builtin_providers
from tests.core.helpers import policy_issues, policy_of

ENV = {"OPENAI_API_URL": "http://127.0.0.1:9003/v1/chat/completions"}


def test_supports_overrides_what_a_builtins_kind_carries() -> None:
    """The gateway declared to carry tools carries tools; openai-direct declared text only (``[]``)
    carries nothing; the providers it does not name keep their kind's."""
    policy = policy_of(
        """\
        version = 1
        [providers.aiceo-gateway]
        supports = ["tools"]
        [providers.openai-direct]
        supports = []
        """
    )
    assert policy.providers["aiceo-gateway"].supports == (Capability.TOOLS,)
    resolved = resolve_providers(policy, builtin_providers(ENV))
    assert resolved["aiceo-gateway"].carries == {Capability.TOOLS}
    assert resolved["openai-direct"].carries == frozenset()
    assert resolved["anthropic-direct"].carries == ALL_CAPABILITIES
    assert resolved["anthropic-direct"].supports is None


def test_a_new_provider_carries_what_its_kind_does_unless_it_says() -> None:
    """A new provider of kind aiceo carries nothing, of kind openai everything, and one that says
    ``supports`` carries exactly that."""
    policy = policy_of(
        """\
        version = 1
        [providers.gw2]
        kind = "aiceo"
        url = "http://127.0.0.1:4001/api/glm/submit"
        model = "glm-4.7"
        [providers.local]
        kind = "openai"
        url = "http://127.0.0.1:11434/v1/chat/completions"
        model = "llama3.1"
        [providers.vision]
        kind = "openai"
        url = "http://127.0.0.1:11435/v1/chat/completions"
        model = "llava"
        supports = ["images", "json_schema"]
        """
    )
    resolved = resolve_providers(policy, builtin_providers({}))
    assert resolved["gw2"].carries == frozenset()
    assert resolved["local"].carries == ALL_CAPABILITIES
    assert resolved["vision"].carries == {Capability.IMAGES, Capability.JSON_SCHEMA}


def test_a_builtin_whose_kind_changes_carries_what_its_new_kind_does() -> None:
    """``kind`` changed without ``supports``: the new kind's capabilities, not the old one's."""
    policy = policy_of(
        """\
        version = 1
        [providers.openai-direct]
        kind = "aiceo"
        """
    )
    resolved = resolve_providers(policy, builtin_providers(ENV))
    assert resolved["openai-direct"].kind is ProviderKind.AICEO
    assert resolved["openai-direct"].carries == frozenset()


def test_an_unknown_capability_is_an_issue_at_its_line_and_index() -> None:
    """``$.providers.NAME.supports[1]``, at the line of the value, naming the choices and the
    closest one."""
    [issue] = policy_issues(
        """\
        version = 1
        [providers.aiceo-gateway]
        supports = [
          "tools",
          "imgaes",
        ]
        """
    )
    assert issue.line == 5
    assert issue.path == "$.providers.aiceo-gateway.supports[1]"
    assert issue.message == (
        "invalid value 'imgaes': expected one of tools, images, json_schema; did you mean `images`?"
    )


def test_supports_must_be_an_array_without_repeats() -> None:
    """A string instead of an array, and a capability listed twice, are issues at their paths."""
    [issue] = policy_issues('version = 1\n[providers.aiceo-gateway]\nsupports = "tools"\n')
    assert (issue.line, issue.path, issue.message) == (
        3,
        "$.providers.aiceo-gateway.supports",
        "expected an array, got a string",
    )
    [twice] = policy_issues('version = 1\n[providers.glm-direct]\nsupports = ["tools", "images", "tools"]\n')
    assert (twice.path, twice.message) == ("$.providers.glm-direct.supports[2]", "`tools` is listed twice")


def test_supports_is_written_back_and_reads_the_same() -> None:
    """``encode_policy`` writes ``supports`` as an array that decodes to the same policy."""
    policy = policy_of('version = 1\n[providers.aiceo-gateway]\nsupports = ["tools", "json_schema"]\n')
    text = encode_policy(policy)
    assert 'supports = [\n    "tools",\n    "json_schema",\n]' in text
    assert policy_of(text) == policy


def explained(text: str) -> str:
    policy = policy_of(text, "p.toml")
    return explain(policy, resolve_providers(policy, builtin_providers(ENV)))


def test_explain_says_the_gateway_is_text_only_and_nothing_of_the_others() -> None:
    """Without ``supports``: the gateway's line says ``text only``; openai-direct's says nothing
    of capabilities (it carries everything, as its kind does)."""
    text = explained('version = 1\n[route]\ntargets = ["aiceo-gateway", "openai-direct"]\n')
    [gateway] = [line for line in text.splitlines() if "1. aiceo-gateway" in line]
    [openai] = [line for line in text.splitlines() if "2. openai-direct" in line]
    assert ", text only" in gateway
    assert "carries" not in openai and "text only" not in openai


def test_explain_says_what_a_policy_declared() -> None:
    """A provider whose ``supports`` the policy sets is said to carry exactly those."""
    text = explained(
        """\
        version = 1
        [providers.openai-direct]
        supports = ["json_schema", "tools"]
        [route]
        targets = ["openai-direct"]
        """
    )
    [line] = [line for line in text.splitlines() if "1. openai-direct" in line]
    assert ", carries tools, json_schema;" in line
