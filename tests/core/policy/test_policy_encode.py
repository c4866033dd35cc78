"""A policy written back to TOML decodes to the same policy."""

from __future__ import annotations

from pathlib import Path

import pytest
from returns.result import Success

from rmcore.policy import decode_policy, encode_policy
from rmcore.providers import BUILTIN_NAMES

POLICIES = sorted((Path(__file__).resolve().parents[3] / "policies").glob("*.toml"))


@pytest.mark.parametrize("path", POLICIES, ids=[p.stem for p in POLICIES])
def test_every_shipped_policy_round_trips(path: Path) -> None:
    """Each shipped policy encodes to TOML that decodes back to the same policy."""
    policy = decode_policy(path.read_text(), str(path), BUILTIN_NAMES).unwrap()
    again = decode_policy(encode_policy(policy), "again.toml", BUILTIN_NAMES)
    assert again == Success(policy)


def test_an_unset_optional_key_is_left_out() -> None:
    """Keys the policy leaves unset are not written; those it sets are."""
    text = 'version = 1\n[route]\ntargets = [{ provider = "glm-direct", max_attempts = 3 }]\n'
    encoded = encode_policy(decode_policy(text, "p.toml", BUILTIN_NAMES).unwrap())
    assert "max_attempts = 3" in encoded and "attempt_timeout_s" not in encoded.split("[limits]")[0]
