"""`rmgr policy simulate`: the engine on a virtual clock, a trace a person can follow, no request sent."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

POLICIES = Path(__file__).resolve().parents[2] / "policies"


def simulate(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "RECURSIVEMANAGER_HOME": str(tmp_path / "state")}
    return subprocess.run(
        [sys.executable, "-m", "rmcli", "policy", "simulate", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )


def test_a_down_primary_is_left_for_the_fallback(tmp_path: Path) -> None:
    result = simulate(
        str(POLICIES / "sequential-failover.toml"), "--down", "aiceo-gateway", tmp_path=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "leave aiceo-gateway (connection) for glm-direct" in result.stdout
    assert "answered by glm-direct" in result.stdout
    assert not (tmp_path / "state").exists(), "simulate must not touch the state store"


def test_retry_after_shows_in_the_trace_and_is_waited_for(tmp_path: Path) -> None:
    result = simulate(
        str(POLICIES / "sequential-failover.toml"), "--rate-limit", "aiceo-gateway=3", tmp_path=tmp_path
    )
    assert "Retry-After 3 s" in result.stdout
    lines = [line for line in result.stdout.splitlines() if "call aiceo-gateway (attempt 2)" in line]
    assert lines and float(lines[0].split("s]")[0].strip("[ ")) >= 3.0


def test_every_provider_failing_exits_1(tmp_path: Path) -> None:
    args = [str(POLICIES / "quality-first.toml")]
    for name in ("anthropic-direct", "glm-direct"):
        args += ["--status", f"{name}=500"]
    result = simulate(*args, tmp_path=tmp_path)
    assert result.returncode == 1 and "no answer" in result.stdout


def test_bad_options_exit_2(tmp_path: Path) -> None:
    policy = str(POLICIES / "sequential-failover.toml")
    for bad in (
        ["--down", "nobody"],
        ["--slow", "glm-direct"],
        ["--slow", "glm-direct=soon"],
        ["--status", "glm-direct=999"],
    ):
        result = simulate(policy, *bad, tmp_path=tmp_path)
        assert result.returncode == 2, bad
        assert "error:" in result.stderr and "Traceback" not in result.stderr
