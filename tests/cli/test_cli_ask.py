"""``rmgr ask`` end to end, as a user runs it: a real process, real loopback HTTP, SQLite for real.

The issue's "done when": with the primary (aiceo-gateway) refusing connections and glm-direct as
the fallback, ``rmgr ask "hello" --json`` answers from glm-direct, says so on stderr the way the
seed does, and accounts for every attempt.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest

from tests.cli.helpers import RMGR, Cli, SandboxProcess, closed_url, script

PRIMARY_FAILED = "WARNING: Primary provider (aiceo-gateway) failed: "
TRYING_FALLBACK = "INFO: Attempting fallback provider: glm-direct"


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def fallback_cli(cli: Cli, sandbox: SandboxProcess) -> Cli:
    """The issue's set-up: the primary's port is closed, the fallback is the sandbox's glm-direct."""
    return cli.with_env(
        sandbox.env,
        AI_PROVIDER="aiceo-gateway",
        AICEO_GATEWAY_URL=closed_url(),
        AI_FALLBACK_PROVIDER="glm-direct",
    )


def check_documented_shape(result: dict[str, Any]) -> None:
    """The fields DESIGN §3 documents for ``rmgr ask --json`` are there with their types (more
    fields are allowed)."""
    assert isinstance(result["content"], str)
    assert isinstance(result["provider"], str)
    assert isinstance(result["model"], str)
    assert isinstance(result["usage"]["inputTokens"], int)
    assert isinstance(result["usage"]["outputTokens"], int)
    assert is_number(result["costUsd"])
    assert is_number(result["latencyMs"])
    assert result["latencyMs"] >= 0
    assert isinstance(result["fallbackUsed"], bool)
    assert isinstance(result["attempts"], list)
    for attempt in result["attempts"]:
        assert isinstance(attempt["provider"], str)
        assert isinstance(attempt["model"], str)
        assert isinstance(attempt["outcome"], str)
        assert attempt["status"] is None or isinstance(attempt["status"], int)
        assert is_number(attempt["latencyMs"])
        assert isinstance(attempt["startedAtMs"], int)


def test_primary_refused_answer_comes_from_the_fallback(cli: Cli, sandbox: SandboxProcess) -> None:
    """The issue's "done when": exit 0, the answer from glm-direct, fallbackUsed, the refused
    primary as the first attempt (outcome connection), and the seed's two lines on stderr."""
    before_ms = int(time.time() * 1000)
    done = fallback_cli(cli, sandbox).run("ask", "hello", "--json")
    after_ms = int(time.time() * 1000)

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    check_documented_shape(result)
    assert result["provider"] == "glm-direct"
    assert result["model"] == "glm-4.7"
    assert result["content"].startswith("This is glm-direct")
    assert '"hello"' in result["content"]
    assert result["fallbackUsed"] is True
    assert result["usage"]["outputTokens"] > 0
    assert result["costUsd"] > 0

    first, last = result["attempts"][0], result["attempts"][-1]
    assert (first["provider"], first["outcome"], first["status"]) == ("aiceo-gateway", "connection", None)
    assert (last["provider"], last["outcome"], last["status"]) == ("glm-direct", "ok", 200)
    assert {a["provider"] for a in result["attempts"][:-1]} == {"aiceo-gateway"}
    for attempt in result["attempts"]:
        assert before_ms - 1000 <= attempt["startedAtMs"] <= after_ms + 1000
    started = [a["startedAtMs"] for a in result["attempts"]]
    assert started == sorted(started)

    errors = done.stderr.splitlines()
    warning = next(i for i, line in enumerate(errors) if line.startswith(PRIMARY_FAILED))
    assert "connection refused" in errors[warning]
    assert errors[warning + 1] == TRYING_FALLBACK
    assert "Traceback" not in done.stderr


def test_text_mode_prints_the_answer_on_stdout(cli: Cli, sandbox: SandboxProcess) -> None:
    """Without --json stdout holds the answer and nothing else; the notices are on stderr."""
    user = fallback_cli(cli, sandbox)
    code, result = user.json("ask", "hello", "--json")
    assert code == 0
    done = user.run("ask", "hello")
    assert done.returncode == 0, done.stderr
    assert done.stdout == result["content"] + "\n"
    assert TRYING_FALLBACK in done.stderr.splitlines()
    assert "INFO: answered by glm-direct" in done.stderr


def test_usage_afterwards_counts_both_providers(cli: Cli, sandbox: SandboxProcess) -> None:
    """Every attempt of the fail-over is in the state database: ``rmgr usage --json`` shows the
    primary's failures and the fallback's answers, tokens and cost."""
    user = fallback_cli(cli, sandbox)
    results = [user.json("ask", f"question {n}", "--json")[1] for n in range(2)]
    attempts = [a for r in results for a in r["attempts"]]

    code, rows = user.json("usage", "--json")
    assert code == 0
    by_provider = {row["provider"]: row for row in rows}
    assert set(by_provider) == {"aiceo-gateway", "glm-direct"}
    primary, fallback = by_provider["aiceo-gateway"], by_provider["glm-direct"]
    primary_attempts = sum(a["provider"] == "aiceo-gateway" for a in attempts)
    assert primary["requests"] == primary["failures"] == primary_attempts >= 2
    assert primary["failureRate"] == 1.0
    assert (primary["inputTokens"], primary["outputTokens"], primary["costUsd"]) == (0, 0, 0)
    assert (fallback["requests"], fallback["failures"], fallback["failureRate"]) == (2, 0, 0)
    assert fallback["inputTokens"] == sum(r["usage"]["inputTokens"] for r in results)
    assert fallback["outputTokens"] == sum(r["usage"]["outputTokens"] for r in results)
    assert fallback["costUsd"] == pytest.approx(sum(r["costUsd"] for r in results))
    for row in rows:
        assert row["p50Ms"] <= row["p95Ms"]

    table = user.run("usage")
    assert table.returncode == 0
    assert "aiceo-gateway" in table.stdout and "glm-direct" in table.stdout
    assert "100.0%" in table.stdout


@pytest.mark.parametrize(
    "command",
    [RMGR, (str(script("rmgr")),), (str(script("recursive-manager")),)],
    ids=["python -m rmcli", "rmgr", "recursive-manager"],
)
def test_every_entry_point_runs_the_same_command(
    cli: Cli, sandbox: SandboxProcess, command: tuple[str, ...]
) -> None:
    """``python -m rmcli``, ``rmgr`` and ``recursive-manager`` are the same program."""
    done = fallback_cli(cli, sandbox).run("ask", "hello", "--json", command=command)
    assert done.returncode == 0, done.stderr
    assert '"provider":"glm-direct"' in done.stdout
    assert '"fallbackUsed":true' in done.stdout


def test_every_route_down_exits_1(cli: Cli, sandbox: SandboxProcess) -> None:
    """Both providers refuse connections: exit 1, nothing on stdout, the error on stderr."""
    user = fallback_cli(cli, sandbox).with_env(GLM_API_URL=closed_url("/api/paas/v4/chat/completions"))
    done = user.run("ask", "hello")
    assert done.returncode == 1
    assert done.stdout == ""
    assert PRIMARY_FAILED in done.stderr
    assert done.stderr.splitlines()[-1].startswith("error: connection: ")
    assert "Traceback" not in done.stderr


def test_every_route_down_json_gives_the_error_kind(cli: Cli, sandbox: SandboxProcess) -> None:
    """``--json`` on failure: exit 1, ``error.kind``, no content, every attempt accounted."""
    user = fallback_cli(cli, sandbox).with_env(GLM_API_URL=closed_url("/api/paas/v4/chat/completions"))
    code, result = user.json("ask", "hello", "--json")
    assert code == 1
    assert result["error"]["kind"] == "connection"
    assert isinstance(result["error"]["message"], str) and result["error"]["message"]
    assert result["content"] is None
    assert result["provider"] is None
    assert result["fallbackUsed"] is False
    assert {a["provider"] for a in result["attempts"]} == {"aiceo-gateway", "glm-direct"}
    assert {a["outcome"] for a in result["attempts"]} == {"connection"}


def test_options_reach_the_provider(cli: Cli, sandbox: SandboxProcess) -> None:
    """--provider, --system, --max-tokens and --temperature do what they say: the request the
    provider receives carries them (temperature 0 is sent as 0), and a cut answer is warned of."""
    prompt = f"options test {uuid.uuid4().hex}"
    user = cli.with_env(sandbox.env)
    done = user.run(
        "ask", prompt, "--provider", "openai-direct", "--system", "Be brief.",
        "--max-tokens", "7", "--temperature", "0", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["provider"], result["fallbackUsed"], len(result["attempts"])) == (
        "openai-direct",
        False,
        1,
    )
    assert 0 < result["usage"]["outputTokens"] <= 7
    assert "max_tokens (7)" in done.stderr

    received = [r for r in sandbox.log("openai-direct") if prompt in str(r["body"])]
    assert len(received) == 1
    body = received[0]["body"]
    assert body["max_tokens"] == 7
    assert body["temperature"] == 0
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert body["messages"][-1]["content"] == prompt
    assert received[0]["headers"]["authorization"] == "<redacted>"


def test_demo_fails_over_without_keys_and_leaves_the_state_folder_alone(cli: Cli) -> None:
    """``rmgr demo``: no keys, no sandbox to start; the primary is down, glm-direct answers, and
    the attempts go to a temporary state folder, not the user's."""
    code, result = cli.json("demo", "--ask", "--format", "json")
    assert code == 0
    check_documented_shape(result)
    assert (result["provider"], result["fallbackUsed"]) == ("glm-direct", True)
    assert result["attempts"][0]["outcome"] == "connection"
    assert not (cli.home / "state.db").exists()


def test_demo_analyses_from_eight_perspectives_through_the_fallback(cli: Cli) -> None:
    """``rmgr demo``: the whole analysis, every perspective served by glm-direct, a number for
    the overall confidence, nothing written to the user's state folder."""
    code, result = cli.json("demo", "--format", "json")
    assert code == 0 and result["status"] == "ok"
    assert [p["id"] for p in result["perspectives"]] == [
        "security",
        "architecture",
        "simplicity",
        "financial",
        "marketing",
        "ux",
        "growth",
        "emotional",
    ]
    assert {p["metadata"]["provider"] for p in result["perspectives"]} == {"glm-direct"}
    assert isinstance(result["overallConfidence"], float)
    assert not (cli.home / "state.db").exists()
