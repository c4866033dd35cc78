"""The environment the shell runs in: variables (the real ones over ``.env``) and the state folder."""

from __future__ import annotations

import os
from pathlib import Path

from rmcli.output import add_secret

__all__ = ["api_key", "key_problem", "load_environment", "state_home"]


def load_environment(cwd: Path | None = None) -> dict[str, str]:
    """The process environment over the ``.env`` file of ``cwd`` (the real environment wins)."""
    merged: dict[str, str] = {}
    dotenv_path = (cwd or Path.cwd()) / ".env"
    if dotenv_path.is_file():
        from dotenv import dotenv_values

        merged.update({k: v for k, v in dotenv_values(dotenv_path).items() if v is not None})
    merged.update(os.environ)
    return merged


def state_home(env: dict[str, str]) -> Path:
    """``$RECURSIVEMANAGER_HOME``, or ``~/.recursivemanager``."""
    configured = env.get("RECURSIVEMANAGER_HOME", "").strip()
    return Path(configured).expanduser() if configured else Path.home() / ".recursivemanager"


def api_key(env: dict[str, str], key_env: str | None) -> str | None:
    """The key held by variable ``key_env``, or None when it is unset or empty.

    Every key read here is remembered as a secret that no output of the process may show
    (``rmcli.output.redact``): reading a key through this function is what makes that true."""
    if not key_env:
        return None
    value = env.get(key_env, "").strip()
    if value:
        add_secret(value)
    return value or None


def key_problem(env: dict[str, str], key_env: str | None) -> str | None:
    """Why the key in variable ``key_env`` cannot be sent in an HTTP header, or None when it can
    (or is unset). The message names the variable, never the value: a key with a space, a control
    or a non-ASCII character (a stray paste, a line break) would otherwise fail deep in the HTTP
    stack, in an error that quotes the header and so the key."""
    key = api_key(env, key_env)
    if key is None or all("!" <= c <= "~" for c in key):
        return None
    return (
        f"{key_env} holds a character no API key has (a space, a line break, a control or a "
        "non-ASCII character); check its value (not shown here)"
    )
