"""``rmgr init [DIR]``: starter files for a new project, a commented ``.env`` template and a
``policy.toml`` that validates; an existing file is never overwritten."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import cyclopts

from rmcli.errors import ConfigError

__all__ = ["ENV_TEMPLATE", "POLICY_TEMPLATE", "init"]

ENV_TEMPLATE = """\
# rmgr's environment: the seed's variables. rmgr reads this file from the folder it runs in;
# a variable set in the real environment wins over this file. Fill in the keys of the
# providers you use (an empty key counts as not set). Never commit this file: it holds keys.

# --- Routing without --policy ------------------------------------------------------------------
# The provider asked first, then the one asked when it fails.
AI_PROVIDER=aiceo-gateway
AI_FALLBACK_PROVIDER=glm-direct

# --- AICEO gateway (kind aiceo) ----------------------------------------------------------------
AICEO_GATEWAY_URL=http://localhost:4000/api/glm/submit
AICEO_GATEWAY_API_KEY=
# The backend and priority the gateway is asked for, and the model it reports.
AICEO_GATEWAY_PROVIDER=glm
AICEO_GATEWAY_MODEL=glm-4.7
AICEO_GATEWAY_PRIORITY=high

# --- GLM directly (kind openai) ----------------------------------------------------------------
# The direct providers have no default URL (rmgr sends nothing to a host you did not name):
# uncomment the URL of each one you use. URLs are full endpoints, used exactly as given: an
# OpenAI-kind URL ends in /chat/completions, an Anthropic-kind one in /messages.
GLM_API_KEY=
# GLM_API_URL=https://open.bigmodel.cn/api/paas/v4/chat/completions
GLM_MODEL=glm-4.7

# --- Anthropic directly (kind anthropic) -------------------------------------------------------
ANTHROPIC_API_KEY=
# ANTHROPIC_API_URL=https://api.anthropic.com/v1/messages
ANTHROPIC_MODEL=claude-sonnet-4-5

# --- OpenAI directly (kind openai) -------------------------------------------------------------
OPENAI_API_KEY=
# OPENAI_API_URL=https://api.openai.com/v1/chat/completions
OPENAI_MODEL=gpt-4-turbo

# --- Analysis ----------------------------------------------------------------------------------
# How long a cached perspective answer is reused, in milliseconds (1 hour).
ANALYSIS_CACHE_TTL_MS=3600000

# --- State (optional) --------------------------------------------------------------------------
# Where attempts, cache, history and circuits are kept (default ~/.recursivemanager), or
# redis://HOST:PORT/DB to share them across machines.
# RECURSIVEMANAGER_HOME=
# RECURSIVEMANAGER_STATE=
"""
"""The ``.env`` that ``rmgr init`` writes: every variable of the seed, the keys left empty."""

POLICY_TEMPLATE = """\
# A starter policy: the seed's fail-over, made per request. Every key but `version` has a
# default; an unknown key is an error, so a typo never goes unnoticed.
#
# Check it:   rmgr policy validate policy.toml
# Read it:    rmgr policy explain policy.toml
# Try it:     rmgr policy simulate policy.toml --down aiceo-gateway
# Use it:     rmgr ask --policy policy.toml "Should we adopt gRPC?"
# Others:     rmgr policy list (bundled policies, used by name: --policy cost-first)

version = 1                         # the policy format; always 1
name = "starter"                    # shown in reports; the file's stem when left out
description = "The AICEO gateway, then GLM directly when it fails."

[route]
# sequential: the next target only when the previous one failed for good. Others: fastest,
# hedged, cheapest, weighted, compare. Targets are provider names (rmgr providers lists them).
strategy = "sequential"
targets = ["aiceo-gateway", "glm-direct"]

[limits]
attempt_timeout_s = 30              # one attempt, request sent to last byte
first_token_timeout_s = 15          # streaming: request sent to first token
idle_timeout_s = 20                 # streaming: longest silence between chunks
deadline_s = 120                    # the whole run, fail-overs and back-off waits included
max_usd = 0.50                      # the whole run's budget, checked before each request

[retry]
max_attempts = 2                    # per target, the first included
backoff_initial_s = 0.5             # the first back-off; it doubles, with full jitter
backoff_max_s = 8.0                 # the longest back-off; Retry-After sets the minimum wait
on = ["rate_limited", "server_error", "connection"]   # error kinds retried on the same target

[breaker]
failure_threshold = 3               # failures in a row that open a provider's circuit
cooldown_s = 30                     # then one probe decides (rmgr circuits shows them)

[health]
check_before_use = false            # a health check before each target costs a round trip

[analysis]
# The perspectives rmgr analyze asks (all eight when left out).
perspectives = ["security", "architecture", "simplicity", "financial"]
"""
"""The ``policy.toml`` that ``rmgr init`` writes: valid as it is, every key explained."""

FILES: tuple[tuple[str, str, int], ...] = (
    (".env", ENV_TEMPLATE, 0o600),
    ("policy.toml", POLICY_TEMPLATE, 0o644),
)
"""What ``init`` writes: name, text, and mode (``.env`` is for your eyes only: it will hold keys)."""


def _write_new(path: Path, text: str, mode: int) -> bool:
    """Write ``text`` to ``path`` with ``mode`` unless the path exists; whether it was written.

    ``O_EXCL`` makes "never overwrite" hold even against a file that appears meanwhile, and the
    mode is set at creation, so a ``.env`` is never readable by others, not even for a moment."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        return False
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror} — check the folder's permissions") from None
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    os.chmod(path, mode)  # the umask may have taken bits away from ``mode``
    return True


def init(folder: Annotated[Path, cyclopts.Parameter(name="DIR")] = Path("."), /) -> int:
    """Write a starter .env and policy.toml; never overwrites.

    The .env template lists the seed's variables with every key left empty (mode 0600) and the
    direct providers' URLs to uncomment; the policy routes to the AICEO gateway, then GLM, and
    passes rmgr policy validate as it is, every key commented. A file that already exists is
    kept as it is, and said so. DIR is created when missing. Exit code 0, or 2 when DIR cannot
    be created or written.

    Example: rmgr init my-project

    Parameters
    ----------
    folder
        Where to write the files.
    """
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{folder} is not a folder — give a folder to write .env and policy.toml in")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create {folder}: {exc.strerror} — give a folder you can write") from None
    wrote: list[Path] = []
    for name, text, mode in FILES:
        path = folder / name
        if _write_new(path, text, mode):
            wrote.append(path)
            print(f"wrote {path}")
        else:
            print(f"kept {path} (it exists; not overwritten)")
    if not wrote:
        print("Nothing changed.")
        return 0
    env_path, policy_path = (folder / name for name, _, _ in FILES)
    print(f"Next: fill in the keys in {env_path} (rmgr reads it from the folder it runs in);")
    print(f"then check the policy: rmgr policy validate {policy_path}")
    return 0
