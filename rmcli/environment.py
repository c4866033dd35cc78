"""The environment the shell runs in: variables (the real ones over ``.env``) and the state folder."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from rmcli.errors import ConfigError
from rmcli.output import add_secret

__all__ = ["api_key", "key_problem", "load_environment", "state_home"]


_OURS = re.compile(r"(AICEO_|GLM_|ANTHROPIC_|OPENAI_|AI_|RMGR_|RECURSIVEMANAGER_|ANALYSIS_)")
"""The prefixes of the variables the shell reads (a policy's ``key_env`` ones are checked when
their key is read)."""


def load_environment(cwd: Path | None = None) -> dict[str, str]:
    """The process environment over the ``.env`` file of ``cwd`` (the real environment wins).

    A ``.env`` line, or one of our variables, that is not UTF-8 is a ``ConfigError`` naming the
    line or the variable (never its value): read on, it would crash deep in the HTTP stack."""
    merged: dict[str, str] = {}
    dotenv_path = (cwd or Path.cwd()) / ".env"
    if dotenv_path.is_file():
        from dotenv import dotenv_values

        _check_dotenv(dotenv_path)
        merged.update({k: v for k, v in dotenv_values(dotenv_path).items() if v is not None})
    for name, value in os.environ.items():
        if _OURS.match(name) and not _is_utf8(value):
            raise ConfigError(f"the environment variable {name} is not valid UTF-8; set it again in UTF-8")
    merged.update(os.environ)
    return merged


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_dotenv(path: Path) -> None:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror})") from None
    for number, line in enumerate(raw.splitlines(), start=1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(
                f"{path} line {number} is not valid UTF-8; save the file as UTF-8 (values are not shown)"
            ) from None


def state_home(env: Mapping[str, str]) -> Path:
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
