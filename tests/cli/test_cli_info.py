"""``rmgr providers``, ``rmgr health`` and ``rmgr usage`` as a user runs them, against the sandbox.

Also the policy's ``[health] check_before_use``: an unhealthy primary is skipped without being
sent a chat request, as the sandbox's request log shows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.cli.helpers import (
    KEY_VARIABLES,
    URL_VARIABLES,
    Cli,
    SandboxProcess,
    closed_url,
    sandbox_process,
    write_policy,
)

NAMES = list(URL_VARIABLES)


def row_of(table: str, provider: str) -> str:
    """The one line of a rendered table that names ``provider``."""
    rows = [line for line in table.splitlines() if f" {provider} " in line]
    assert len(rows) == 1, table
    return rows[0]


# -- providers -------------------------------------------------------------------------------------


def test_providers_table_shows_whole_names_and_urls(cli: Cli, sandbox: SandboxProcess) -> None:
    """Piped to a file the table is not cut at 80 columns: every name and URL is whole."""
    done = cli.run("providers", env=sandbox.env)
    assert done.returncode == 0, done.stderr
    for name in NAMES:
        row = row_of(done.stdout, name)
        assert sandbox.url(name) in row
        assert f"set ({KEY_VARIABLES[NAMES.index(name)]})" in row
    assert "…" not in done.stdout


def test_providers_json(cli: Cli, sandbox: SandboxProcess) -> None:
    """--json: one entry per provider, with whether its key is set (never the key)."""
    env = {**sandbox.env, "OPENAI_API_KEY": ""}
    del env["ANTHROPIC_API_URL"]
    code, entries = cli.json("providers", "--json", env=env)
    assert code == 0
    by_name = {e["name"]: e for e in entries}
    assert list(by_name) == NAMES
    for entry in entries:
        assert isinstance(entry["kind"], str) and isinstance(entry["model"], str)
        assert isinstance(entry["keySet"], bool)
        assert isinstance(entry["problems"], list)
    assert by_name["glm-direct"]["url"] == sandbox.url("glm-direct")
    assert by_name["glm-direct"]["keyEnv"] == "GLM_API_KEY"
    assert by_name["glm-direct"]["keySet"] is True
    assert by_name["openai-direct"]["keySet"] is False
    assert by_name["anthropic-direct"]["url"] is None
    assert any("ANTHROPIC_API_URL" in p for p in by_name["anthropic-direct"]["problems"])
    assert (by_name["aiceo-gateway"]["kind"], by_name["anthropic-direct"]["kind"]) == ("aiceo", "anthropic")


def test_providers_with_a_policy_lists_its_providers(cli: Cli, sandbox: SandboxProcess) -> None:
    write_policy(
        cli.home,
        "local.toml",
        'version = 1\n[providers.local-llama]\nkind = "openai"\n'
        'url = "http://127.0.0.1:11434/v1/chat/completions"\nmodel = "llama3.1"\n',
    )
    code, entries = cli.json("providers", "--policy", "local.toml", "--json", env=sandbox.env)
    assert code == 0
    local = next(e for e in entries if e["name"] == "local-llama")
    assert (local["model"], local["keyRequired"], local["builtin"]) == ("llama3.1", False, False)


# -- health --------------------------------------------------------------------------------------


def check_health_shape(entry: dict[str, Any]) -> None:
    assert set(entry) >= {"provider", "healthy", "reason", "responseTimeMs"}
    assert isinstance(entry["healthy"], bool)
    if entry["healthy"]:
        assert entry["reason"] is None
        assert isinstance(entry["responseTimeMs"], int | float) and entry["responseTimeMs"] >= 0
    else:
        assert isinstance(entry["reason"], str) and entry["reason"]


def test_health_all_healthy_exits_0(cli: Cli, sandbox: SandboxProcess) -> None:
    done = cli.run("health", env=sandbox.env)
    assert done.returncode == 0, done.stderr
    for name in NAMES:
        assert "✓" in row_of(done.stdout, name)
    assert "✗" not in done.stdout

    code, entries = cli.json("health", "--json", env=sandbox.env)
    assert code == 0
    assert [e["provider"] for e in entries] == NAMES
    for entry in entries:
        check_health_shape(entry)
        assert entry["healthy"] is True


def test_health_says_why_a_provider_is_unhealthy(cli: Cli, sandbox: SandboxProcess) -> None:
    """A closed port is ``unreachable``; a key the provider refuses (401) is ``auth``, not
    healthy (the original counted a 401 as healthy); any unhealthy provider makes the exit code 1."""
    env = {**sandbox.env, "AICEO_GATEWAY_URL": closed_url(), "GLM_API_KEY": "wrong-key"}
    done = cli.run("health", env=env)
    assert done.returncode == 1
    aiceo, glm = row_of(done.stdout, "aiceo-gateway"), row_of(done.stdout, "glm-direct")
    assert "✗" in aiceo and "unreachable" in aiceo and "N/A" in aiceo
    assert "✗" in glm and "auth" in glm
    assert "✓" in row_of(done.stdout, "anthropic-direct")
    assert "✓" in row_of(done.stdout, "openai-direct")

    code, entries = cli.json("health", "--json", env=env)
    assert code == 1
    by_name = {e["provider"]: e for e in entries}
    for entry in entries:
        check_health_shape(entry)
    assert by_name["aiceo-gateway"] == {
        "provider": "aiceo-gateway",
        "healthy": False,
        "reason": "unreachable",
        "responseTimeMs": None,
    }
    assert (by_name["glm-direct"]["healthy"], by_name["glm-direct"]["reason"]) == (False, "auth")
    assert by_name["openai-direct"]["healthy"] is True


@pytest.mark.parametrize(("key", "code"), [("wrong-key", 1), (None, 0)])
def test_health_of_named_providers_only(
    cli: Cli, sandbox: SandboxProcess, key: str | None, code: int
) -> None:
    """``rmgr health NAME`` checks that provider only, and the exit code is about it alone."""
    env = {**sandbox.env, "GLM_API_KEY": "wrong-key"}
    if key is None:
        env["GLM_API_KEY"] = sandbox.key("glm-direct")
    env["AICEO_GATEWAY_URL"] = closed_url()
    got, entries = cli.json("health", "glm-direct", "--json", env=env)
    assert got == code
    assert [e["provider"] for e in entries] == ["glm-direct"]


def test_health_of_a_key_no_header_can_carry(cli: Cli, sandbox: SandboxProcess) -> None:
    """A key with a line break is reported as the variable's problem, never sent, never shown."""
    env = {**sandbox.env, "GLM_API_KEY": "abc\ndef-secret"}
    done = cli.run("health", "glm-direct", "--json", env=env)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "def-secret" not in done.stdout + done.stderr
    (entry,) = json.loads(done.stdout)
    assert entry["healthy"] is False
    assert "GLM_API_KEY" in entry["reason"]


# -- usage ---------------------------------------------------------------------------------------


def test_usage_with_nothing_recorded(cli: Cli) -> None:
    code, rows = cli.json("usage", "--json")
    assert (code, rows) == (0, [])
    done = cli.run("usage", "--since", "7d")
    assert done.returncode == 0
    assert "No attempts recorded since 7d" in done.stdout


def test_usage_window_and_table(cli: Cli, sandbox: SandboxProcess) -> None:
    """An answer just recorded is inside ``--since 1m`` and ``all``; the table shows its row."""
    user = cli.with_env(sandbox.env)
    assert user.run("ask", "count me", "--provider", "anthropic-direct").returncode == 0
    for since in ("1m", "all", "2000-01-01"):
        code, rows = user.json("usage", "--since", since, "--json")
        assert code == 0
        assert [(r["provider"], r["requests"], r["failures"]) for r in rows] == [("anthropic-direct", 1, 0)]
        assert rows[0]["inputTokens"] > 0 and rows[0]["costUsd"] > 0
    row = row_of(user.run("usage").stdout, "anthropic-direct")
    assert "0.0%" in row


# -- the health check before use -----------------------------------------------------------------

CHECKED = """\
version = 1
[route]
targets = ["aiceo-gateway", "glm-direct"]
[retry]
max_attempts = 1
[health]
check_before_use = {check}
"""


def chat_requests(log: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in log if r["method"] == "POST"]


def test_check_before_use_skips_an_unhealthy_primary(tmp_path: Path) -> None:
    """With ``[health] check_before_use = true`` the primary (answering 503) is asked its status
    and skipped: it never receives a chat request; the answer comes from the fallback and the skip
    is said on stderr. Without the check the same primary is sent the chat request."""
    with sandbox_process("aiceo-gateway=status:503") as box:
        user = Cli(tmp_path, box.env)
        write_policy(user.home, "checked.toml", CHECKED.format(check="true"))
        write_policy(user.home, "unchecked.toml", CHECKED.format(check="false"))

        done = user.run("ask", "hello", "--policy", "checked.toml", "--json")
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        assert result["provider"] == "glm-direct"
        assert [a["provider"] for a in result["attempts"]] == ["glm-direct"]
        assert [(s["provider"], s["reason"]) for s in result["skipped"]] == [("aiceo-gateway", "unhealthy")]
        assert "Skipped provider aiceo-gateway: unhealthy" in done.stderr
        log = box.log("aiceo-gateway")
        assert log, "the primary's health was not checked"
        assert chat_requests(log) == []
        assert {(r["method"], r["path"]) for r in log} == {("GET", "/api/glm/status")}

        box.clear_logs()
        done = user.run("ask", "hello", "--policy", "unchecked.toml", "--json")
        assert done.returncode == 0, done.stderr
        sent = chat_requests(box.log("aiceo-gateway"))
        assert [(r["path"], r["status"]) for r in sent] == [("/api/glm/submit", 503)]
