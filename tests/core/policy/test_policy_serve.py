"""``[serve.keys.NAME]`` in a policy: the limits of ``rmgr serve``'s named client keys, decoded,
checked at their line, written back, and explained in words."""

from __future__ import annotations

from rmcore.policy import encode_policy, explain, resolve_providers
from rmcore.policy.schema import ClientKeyLimits
from rmcore.providers import builtin_providers
from tests.core.helpers import policy_issues as issues
from tests.core.helpers import policy_of as decode

KEYS = """\
version = 1
[serve.keys.ci]
max_usd_per_day = 0.5
rpm = 30
[serve.keys.nightly]
rpm = 1
"""


def test_client_key_limits_decode_and_survive_a_round_trip() -> None:
    policy = decode(KEYS)
    assert policy.serve.keys == {
        "ci": ClientKeyLimits(max_usd_per_day=0.5, rpm=30),
        "nightly": ClientKeyLimits(rpm=1),
    }
    assert decode(encode_policy(policy)).serve == policy.serve


def test_bad_client_key_limits_are_reported_at_their_line() -> None:
    found = issues('version = 1\n[serve.keys."a b"]\nrpm = 3\n[serve.keys.empty]\n')
    assert [(i.line, i.path) for i in found] == [(2, '$.serve.keys."a b"'), (4, "$.serve.keys.empty")]
    assert "not a key name" in found[0].message and "sets no limit" in found[1].message
    [zero] = issues("version = 1\n[serve.keys.ci]\nrpm = 0\n")
    assert zero.line == 3 and ">= 1" in zero.message
    [typo] = issues("version = 1\n[serve.keys.ci]\nrpn = 3\n")
    assert typo.line == 3 and "rpn" in typo.message


def test_explain_says_what_each_client_key_may_spend_and_send() -> None:
    policy = decode(KEYS)
    text = explain(policy, resolve_providers(policy, builtin_providers({})))
    assert (
        "Client keys of rmgr serve: ci at most $0.50 per UTC day and 30 requests per minute; nightly at"
        " most 1 request per minute." in " ".join(text.split())
    )
    assert "Client keys" not in explain(decode("version = 1\n"), builtin_providers({}))
