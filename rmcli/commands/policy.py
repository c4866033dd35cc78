"""``rmgr policy validate|explain``: check and describe policy files without sending a request.

These commands are safe on policy files from untrusted pull requests: they read no API key and
open no connection.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from returns.result import Failure, Success

from rmcli.config import ConfigError, load_policy, read_policy_file
from rmcli.environment import load_environment
from rmcli.output import emit_json, err
from rmcore.policy import PolicyIssue, decode_policy, resolve_providers
from rmcore.policy import explain as explain_policy
from rmcore.providers import BUILTIN_NAMES, builtin_providers

__all__ = ["explain", "validate"]


def _issue_json(issue: PolicyIssue) -> dict[str, Any]:
    return {"line": issue.line, "path": issue.path, "message": issue.message, "text": str(issue)}


def validate(*files: Path, json: bool = False) -> int:
    """Check policy files: every key, type and value, and every provider they name.

    Exit code 0 when all are valid, 1 when any is invalid, 2 when a file cannot be read (or none
    was given). Errors read ``FILE:LINE: $.path: message``.

    Parameters
    ----------
    files
        The policy files (TOML).
    json
        Print ``[{file, valid, name, errors: [{line, path, message, text}]}]``.
    """
    if not files:
        raise ConfigError("give at least one policy file: rmgr policy validate FILE...")
    results: list[dict[str, Any]] = []
    unreadable = invalid = False
    for path in files:
        try:
            text = read_policy_file(path)
        except ConfigError as exc:
            unreadable = True
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
        match decode_policy(text, str(path), BUILTIN_NAMES):
            case Success(policy):
                results.append({"file": str(path), "valid": True, "name": policy.name, "errors": []})
                if not json:
                    print(
                        f"{path}: valid ({policy.name}: {policy.route.strategy.value}, "
                        f"{len(policy.route.targets)} target(s))"
                    )
            case Failure(issues):
                invalid = True
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
    return 2 if unreadable else 1 if invalid else 0


def explain(file: Path, /) -> int:
    """Describe a policy in plain words: the resolved route, limits, retries and budget.

    Parameters
    ----------
    file
        The policy file (TOML).
    """
    env = load_environment()
    policy = load_policy(file, env)
    print(explain_policy(policy, resolve_providers(policy, builtin_providers(env))))
    return 0
