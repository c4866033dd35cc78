"""What the core's tests share: a provider, a chat request, a completion, a plan, a policy from TOML.

The tests of ``rmcore`` build the same few values again and again; they are built here, the same
way everywhere, so that a test says only what is particular to it. Import them as
``from tests.core.helpers import ...`` (pytest runs with ``--import-mode=importlib`` and the
checkout as its root, as ``tests/cli/helpers.py`` is imported by the shell's tests).

Everything here is a plain value or a pure function: no I/O, no clock, like the core itself.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Any

from returns.result import Failure, Success

from rmcore.completion import Completion, Usage
from rmcore.errors import ErrorKind, ProviderError
from rmcore.events import AttemptSucceeded, StartAttempt
from rmcore.plan import RunLimits, RunPlan, TargetPlan
from rmcore.policy import Policy, PolicyIssue, decode_policy
from rmcore.policy.schema import Strategy
from rmcore.providers import BUILTIN_NAMES, ProviderKind, ProviderSpec
from rmcore.requests import ChatRequest

__all__ = [
    "NOW",
    "QUESTION",
    "REQUEST",
    "answer",
    "chat_request",
    "completion",
    "failure",
    "policy_issues",
    "policy_of",
    "run_plan",
    "spec",
    "split",
    "target",
]

NOW = 1_700_000_000.0
"""A wall-clock moment (Unix seconds, November 2023) for what is relative to "now"."""

QUESTION = "Should we migrate to Kubernetes?"
"""The question the tests ask, as the seed's examples do."""

REQUEST = ChatRequest.ask(QUESTION, max_tokens=100)
"""A small streamed request: the prompt above, at most 100 tokens of answer."""


def chat_request(prompt: str = QUESTION, **fields: Any) -> ChatRequest:
    """A ``ChatRequest`` for ``prompt`` (100 tokens of answer unless ``max_tokens`` is given)."""
    fields.setdefault("max_tokens", 100)
    return ChatRequest.ask(prompt, **fields)


def spec(
    name: str, price: float = 1.0, *, kind: ProviderKind = ProviderKind.OPENAI, **fields: Any
) -> ProviderSpec:
    """A provider ``name`` on a closed loopback port, charging ``price`` USD per million tokens
    in and out; ``fields`` override any other field of the spec."""
    values: dict[str, Any] = {
        "name": name,
        "kind": kind,
        "url": f"http://127.0.0.1:9/{name}",
        "model": f"{name}-model",
        "input_usd_per_mtok": price,
        "output_usd_per_mtok": price,
    }
    values.update(fields)
    return ProviderSpec(**values)


def target(name: str, price: float = 1.0, *, max_attempts: int = 2, weight: float = 1.0) -> TargetPlan:
    """A plan's leaf: provider ``name`` (see ``spec``) with default timeouts."""
    return TargetPlan(provider=spec(name, price), max_attempts=max_attempts, weight=weight)


def run_plan(
    *names: str,
    strategy: Strategy = Strategy.SEQUENTIAL,
    max_attempts: int = 2,
    **limits: float,
) -> RunPlan:
    """A flat plan over providers ``names`` in that order; ``limits`` are ``RunLimits`` fields."""
    return RunPlan(
        targets=tuple(target(n, max_attempts=max_attempts) for n in names),
        strategy=strategy,
        limits=RunLimits(**limits),
    )


def completion(
    content: str = "yes",
    model: str = "m",
    *,
    input_tokens: int = 10,
    output_tokens: int = 20,
    finish_reason: str | None = None,
) -> Completion:
    """A whole answer with the token counts given."""
    usage = Usage(input_tokens=input_tokens, output_tokens=output_tokens)
    return Completion(content=content, model=model, usage=usage, finish_reason=finish_reason)


def answer(start: StartAttempt, at: float, content: str | None = None) -> AttemptSucceeded:
    """The event: attempt ``start`` answered at ``at`` (10 tokens in, 20 out)."""
    text = f"from {start.provider.name}" if content is None else content
    return AttemptSucceeded(
        attempt_id=start.attempt_id, at=at, completion=completion(text, start.provider.model)
    )


def failure(kind: ErrorKind, retry_after_s: float | None = None, status: int | None = None) -> ProviderError:
    """A provider failure of ``kind``, its message the kind's name."""
    return ProviderError(kind=kind, message=kind.value, status=status, retry_after_s=retry_after_s)


def policy_of(text: str, source: str = "policy.toml", **kwargs: Any) -> Policy:
    """The policy written in ``text`` (dedented), which must be valid: a test fails with every
    issue otherwise. ``kwargs`` go to ``decode_policy`` (``default_targets``)."""
    match decode_policy(textwrap.dedent(text), source, BUILTIN_NAMES, **kwargs):
        case Success(policy):
            assert isinstance(policy, Policy)
            return policy
        case Failure(issues):
            raise AssertionError("the policy is not valid:\n" + "\n".join(map(str, issues)))
    raise AssertionError("decode_policy returned neither Success nor Failure")


def policy_issues(text: str, source: str = "policy.toml", **kwargs: Any) -> tuple[PolicyIssue, ...]:
    """Every issue of the policy written in ``text`` (dedented), which must be invalid."""
    match decode_policy(textwrap.dedent(text), source, BUILTIN_NAMES, **kwargs):
        case Failure(issues):
            return tuple(issues)
        case Success(policy):
            raise AssertionError(f"the policy was expected to be invalid, and decoded to {policy!r}")
    raise AssertionError("decode_policy returned neither Success nor Failure")


def split(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    """``data`` cut into chunks at the offsets ``cuts`` (any order, repeats and offsets past the
    end allowed); the chunks always join back into ``data``."""
    points = sorted({min(max(c, 0), len(data)) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
