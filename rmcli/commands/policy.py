"""``rmgr policy list|show|validate|explain|simulate``: the bundled policies, and showing,
checking, describing and simulating policy files without sending a request.

These commands are safe on policy files from untrusted pull requests: they read no API key and
open no connection. Wherever a FILE is taken, a bundled policy's name works too (a file of that
name in the current directory comes first).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import cyclopts
import msgspec
from returns.result import Failure, Success

from rmcli.config import ConfigError, load_policy, policy_text
from rmcli.environment import load_environment
from rmcli.output import emit_json, err
from rmcore.policy import PolicyIssue, decode_policy, resolve_providers
from rmcore.policy import explain as explain_policy
from rmcore.providers import BUILTIN_NAMES, builtin_providers

__all__ = ["explain", "list_", "show", "simulate", "validate"]

_NAME_GAP = 2
"""Spaces between a policy's name and its description in ``policy list``."""


def _issue_json(issue: PolicyIssue) -> dict[str, Any]:
    return {"line": issue.line, "path": issue.path, "message": issue.message, "text": str(issue)}


def list_(*, json: bool = False) -> int:
    """List the bundled policies, each with its description.

    Use one by name wherever a policy is taken (a file of that name in the current folder comes
    first). Exit code 0.

    Example: rmgr run --policy cost-first "Should we adopt gRPC?"

    Parameters
    ----------
    json
        Print ``[{name, file, description}]``.
    """
    import shutil
    import textwrap

    from rmcli.bundled import bundled_policies

    policies = bundled_policies()
    if json:
        emit_json([{"name": p.name, "file": p.file, "description": p.description()} for p in policies])
        return 0
    width = max(40, shutil.get_terminal_size((80, 24)).columns)
    indent = max(len(p.name) for p in policies) + _NAME_GAP
    for policy in policies:
        lines = textwrap.wrap(policy.description(), width=width - indent) or [""]
        print(policy.name.ljust(indent) + lines[0])
        for line in lines[1:]:
            print(" " * indent + line)
    print()
    hint = (
        "Use one: rmgr run --policy NAME QUESTION. Read one: rmgr policy explain NAME. "
        "Start your own from one: rmgr policy show NAME > policy.toml."
    )
    print("\n".join(textwrap.wrap(hint, width=width)))
    return 0


def validate(*files: Path, json: bool = False) -> int:
    """Check policy files; every error as FILE:LINE: $.path.

    Every key, type and value, and every provider they name. Every mistake of every file is
    reported in one run, as FILE:LINE: $.path: message, sorted by line. No key is read and no
    request sent. Exit code 0 when all are valid, 2 when any is invalid or cannot be read (or
    none was given).

    Example: rmgr policy validate policy.toml cost-first

    Parameters
    ----------
    files
        The policy files (TOML), or bundled policies' names.
    json
        Print ``[{file, valid, name, errors: [{line, path, message, text}]}]``.
    """
    if not files:
        raise ConfigError("give at least one policy file: rmgr policy validate FILE...")
    results: list[dict[str, Any]] = []
    failed = False
    for path in files:
        try:
            text, source = policy_text(path)
        except ConfigError as exc:
            failed = True
            results.append(
                {
                    "file": str(path),
                    "valid": False,
                    "name": None,
                    "errors": [{"line": None, "path": "$", "message": str(exc), "text": str(exc)}],
                }
            )
            if not json:
                err(str(exc))
            continue
        match decode_policy(text, source, BUILTIN_NAMES):
            case Success(policy):
                results.append({"file": str(path), "valid": True, "name": policy.name, "errors": []})
                if not json:
                    routes = f"; routes: {', '.join(policy.route_names())}" if policy.routes else ""
                    print(
                        f"{path}: valid ({policy.name}: {policy.route.strategy.value}, "
                        f"{len(policy.route.targets)} target(s){routes})"
                    )
            case Failure(issues):
                failed = True
                results.append(
                    {
                        "file": str(path),
                        "valid": False,
                        "name": None,
                        "errors": [_issue_json(i) for i in issues],
                    }
                )
                if not json:
                    for issue in issues:
                        err(str(issue))
    if json:
        emit_json(results)
    return 2 if failed else 0


def show(file: Path, /) -> int:
    """Print a policy's TOML, to copy a bundled one and edit it.

    The text as it is, comments included: ``rmgr policy show cost-first > policy.toml`` starts
    a policy of your own from a bundled one. Exit code 0, 2 when there is no such file or
    bundled policy.

    Example: rmgr policy show cost-first > policy.toml

    Parameters
    ----------
    file
        The policy file (TOML), or a bundled policy's name.
    """
    text, _ = policy_text(file)
    print(text, end="" if text.endswith("\n") else "\n")
    return 0


def explain(file: Path, /) -> int:
    """Describe a policy's route, limits and budget in words.

    The route as resolved (each target's provider, model and URL), the limits, retries,
    breaker and budget. No key is read and no request sent. Exit code 0, 2 for a policy that
    is invalid or cannot be read.

    Example: rmgr policy explain sequential-failover

    Parameters
    ----------
    file
        The policy file (TOML), or a bundled policy's name.
    """
    env = load_environment()
    policy = load_policy(file, env)
    print(explain_policy(policy, resolve_providers(policy, builtin_providers(env))))
    return 0


def _pairs(option: str, items: list[str] | None) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise ConfigError(f"{option} {item!r}: write NAME=VALUE")
        pairs[name] = value
    return pairs


def _number(option: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{option}: {text!r} is not a number of seconds") from None
    if not value >= 0 or value == float("inf"):
        raise ConfigError(f"{option}: {text!r} must be a finite number of seconds >= 0")
    return value


def simulate(
    file: Path,
    /,
    *,
    down: Annotated[list[str] | None, cyclopts.Parameter(name="--down")] = None,
    hang: Annotated[list[str] | None, cyclopts.Parameter(name="--hang")] = None,
    slow: Annotated[list[str] | None, cyclopts.Parameter(name="--slow")] = None,
    rate_limit: Annotated[list[str] | None, cyclopts.Parameter(name="--rate-limit")] = None,
    status: Annotated[list[str] | None, cyclopts.Parameter(name="--status")] = None,
    price: Annotated[list[str] | None, cyclopts.Parameter(name="--price")] = None,
    max_tokens: int = 1024,
    prompt: str = "Should we migrate to Kubernetes?",
    seed: int = 0,
) -> int:
    """Run a policy against simulated providers; print the trace.

    The policy's engine runs on a virtual clock; the decision trace says which target when,
    why it was left, total time and cost. No request is sent and no key is read. Providers not
    mentioned answer after 0.5 s. Exit code 0 when the run answered, 1 when it failed, 2 for
    bad input.

    Example: rmgr policy simulate cost-first --down glm-direct

    Parameters
    ----------
    file
        The policy file (TOML), or a bundled policy's name.
    down
        NAME: the provider refuses connections (each of these options repeats).
    hang
        NAME: the provider never answers.
    slow
        NAME=SECONDS: the provider answers after SECONDS.
    rate_limit
        NAME=SECONDS: the provider answers 429 with Retry-After SECONDS.
    status
        NAME=CODE: the provider answers HTTP CODE.
    price
        NAME=IN/OUT: the provider's prices in USD per million input / output tokens.
    max_tokens
        The request's max_tokens (bounds the worst-case cost).
    prompt
        The request's prompt (its length counts in the cost estimate).
    seed
        Seed of the backoff jitter.
    """
    from rmcore.errors import ErrorKind
    from rmcore.plan import RunPlan, build_plan, leaves
    from rmcore.pricing import worst_case_usd
    from rmcore.requests import ChatRequest
    from rmcore.simulate import SimProvider, SimReply, describe
    from rmcore.simulate import simulate as run_simulation
    from rmcore.wire import classify_failure

    env = load_environment()
    policy = load_policy(file, env)
    providers = resolve_providers(policy, builtin_providers(env))
    sims: dict[str, SimProvider] = {}

    def known(option: str, name: str) -> str:
        if name not in providers:
            raise ConfigError(f"{option} {name!r}: unknown provider; known: {', '.join(sorted(providers))}")
        return name

    for name in down or []:
        sims[known("--down", name)] = SimProvider(
            replies=(SimReply(latency_s=0.001, kind=ErrorKind.CONNECTION),), healthy=False
        )
    for name in hang or []:
        sims[known("--hang", name)] = SimProvider(replies=(SimReply(latency_s=None),))
    for name, value in _pairs("--slow", slow).items():
        sims[known("--slow", name)] = SimProvider(replies=(SimReply(latency_s=_number("--slow", value)),))
    for name, value in _pairs("--rate-limit", rate_limit).items():
        seconds = _number("--rate-limit", value)
        sims[known("--rate-limit", name)] = SimProvider(
            replies=(
                SimReply(latency_s=0.05, kind=ErrorKind.RATE_LIMITED, status=429, retry_after_s=seconds),
            )
        )
    for name, value in _pairs("--status", status).items():
        if not value.isdigit() or not 100 <= int(value) <= 599:
            raise ConfigError(f"--status {name}={value}: CODE must be an HTTP status, 100 to 599")
        spec = providers[known("--status", name)]
        error = classify_failure(spec.kind, int(value), {}, b"", 0.0)
        kind = None if 200 <= int(value) < 300 else error.kind
        sims[name] = SimProvider(replies=(SimReply(latency_s=0.05, kind=kind, status=int(value)),))
    for name, value in _pairs("--price", price).items():
        spec = providers[known("--price", name)]
        text_in, sep, text_out = value.partition("/")
        if not sep:
            raise ConfigError(f"--price {name}={value}: write IN/OUT, e.g. --price {name}=3/15")
        providers[name] = msgspec.structs.replace(
            spec,
            input_usd_per_mtok=_number("--price", text_in),
            output_usd_per_mtok=_number("--price", text_out),
        )
    # One simulated run: the breakers start closed and are left out of the trace.
    match build_plan(policy, providers, breakers=False):
        case Success(RunPlan() as plan):
            pass
        case Failure(problem):
            raise ConfigError(f"{file}: {problem}")
    request = ChatRequest.ask(prompt, max_tokens=max_tokens)
    result = run_simulation(plan, request, sims, seed=seed)
    print(f"Simulating {policy.name} ({policy.route.strategy.value}); every time is virtual.")
    worst = max((worst_case_usd(request, t.provider) for t in leaves(plan)), default=0.0)
    print(
        f"Worst case of one attempt at the dearest target: ${worst:.6f} "
        f"(prompt estimate + {max_tokens} tokens)."
    )
    for line in describe(result.steps):
        print(line)
    outcome = result.outcome
    print(
        f"Total: {result.elapsed_s:.3f} s, {len(outcome.attempts)} attempt(s), cost ${outcome.cost_usd:.6f} "
        f"of the ${plan.limits.max_usd:g} budget; "
        + (f"answered by {outcome.provider}" if outcome.ok else "no answer")
    )
    return 0 if outcome.ok else 1
