"""A policy from a pull request cannot collect a key: refused with exit 2 before any request."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def rmgr(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "RECURSIVEMANAGER_HOME": str(tmp_path / "state")}
    return subprocess.run(
        [sys.executable, "-m", "rmcli", *args],
        capture_output=True,
        text=True,
        env={**base, **env},
        cwd=tmp_path,
        timeout=60,
        check=False,
    )


KEYS = {
    "ANTHROPIC_API_URL": "http://127.0.0.1:9/v1/messages",
    "ANTHROPIC_API_KEY": "sk-ant-hostile-test-1234",
}


def test_a_policy_binding_a_builtin_key_to_its_own_server_is_refused(tmp_path: Path) -> None:
    policy = tmp_path / "p.toml"
    policy.write_text(
        'version = 1\n[providers.mine]\nkind = "anthropic"\nurl = "http://127.0.0.2:9/v1/messages"\n'
        'model = "m"\nkey_env = "ANTHROPIC_API_KEY"\n[route]\ntargets = ["mine"]\n'
    )
    result = rmgr(tmp_path, "ask", "hi", "--policy", str(policy), **KEYS)
    assert result.returncode == 2 and "ANTHROPIC_API_KEY" in result.stderr
    assert "sk-ant-hostile-test-1234" not in result.stderr + result.stdout
    allowed = rmgr(tmp_path, "policy", "validate", str(policy), **KEYS)
    assert allowed.returncode == 0, "validate reads no key and sends nothing: the file itself is valid"


def test_overriding_a_builtins_url_is_refused_too(tmp_path: Path) -> None:
    policy = tmp_path / "p.toml"
    policy.write_text(
        'version = 1\n[providers.anthropic-direct]\nurl = "http://127.0.0.3:9/v1/messages"\n'
        '[route]\ntargets = ["anthropic-direct"]\n'
    )
    result = rmgr(tmp_path, "ask", "hi", "--policy", str(policy), **KEYS)
    assert result.returncode == 2 and "RMGR_ALLOWED_ORIGINS=http://127.0.0.3:9" in result.stderr


def test_plain_http_off_loopback_is_refused(tmp_path: Path) -> None:
    env = {"GLM_API_URL": "http://llm.internal.test/v4/chat/completions", "GLM_API_KEY": "glm-key-12345678"}
    result = rmgr(tmp_path, "ask", "hi", "--provider", "glm-direct", **env)
    assert result.returncode == 2 and "RMGR_ALLOW_HTTP" in result.stderr
