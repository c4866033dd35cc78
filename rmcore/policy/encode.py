"""Policies back to TOML: what a program that builds a ``Policy`` writes for people and CI to read."""

from __future__ import annotations

from typing import Any

import msgspec
import tomli_w

from rmcore.policy.schema import Policy

__all__ = ["encode_policy"]


def _without_nulls(value: Any) -> Any:
    """TOML has no null: an unset optional key is simply not written (it decodes back to None)."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_without_nulls(v) for v in value]
    return value


def encode_policy(policy: Policy) -> str:
    """``policy`` as TOML text that ``decode_policy`` reads back to an equal ``Policy``."""
    return tomli_w.dumps(_without_nulls(msgspec.to_builtins(policy)))
