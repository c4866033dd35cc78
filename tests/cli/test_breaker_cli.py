"""Circuit breakers across ``rmgr`` processes: separate ``rmgr ask`` runs share one state folder,
so a provider that keeps failing is skipped by the next process without a request, probed by
exactly one process after its cooldown, and trusted again once a probe succeeds.

Every run is a real process talking real loopback HTTP to a sandbox in another process; the
sandbox's request log is the witness of what reached the provider.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tests.cli.helpers import Cli, SandboxProcess, sandbox_process, write_policy

COOLDOWN_S = 2.0

BREAKER_POLICY = f"""\
version = 1
name = "breaker"

[route]
targets = ["glm-direct", "anthropic-direct"]

[retry]
max_attempts = 1

[breaker]
failure_threshold = 3
cooldown_s = {COOLDOWN_S}
"""

ALL_OPEN_POLICY = """\
version = 1

[route]
targets = ["glm-direct", "anthropic-direct"]

[retry]
max_attempts = 1

[breaker]
failure_threshold = 1
cooldown_s = 30
"""

FLAPPING_POLICY = f"""\
version = 1

[route]
targets = ["glm-direct", "anthropic-direct"]

[retry]
max_attempts = 1

[breaker]
failure_threshold = 2
cooldown_s = {COOLDOWN_S}
"""


class Asker:
    """``rmgr ask --policy FILE PROMPT --json`` in one state folder, against one sandbox."""

    def __init__(self, cli: Cli, box: SandboxProcess, policy: str) -> None:
        self.cli = cli.with_env(box.env)
        self.policy = write_policy(cli.home, "policy.toml", policy)

    def run(self) -> subprocess.CompletedProcess[str]:
        return self.cli.run("ask", "--policy", str(self.policy), "hello", "--json")

    def answer(self) -> tuple[dict[str, Any], str]:
        """One run that must succeed: its JSON result and its stderr."""
        done = self.run()
        assert done.returncode == 0, done.stderr
        result: dict[str, Any] = json.loads(done.stdout)
        return result, done.stderr


def attempted(result: dict[str, Any]) -> list[tuple[str, str]]:
    return [(a["provider"], a["outcome"]) for a in result["attempts"]]


def skipped(result: dict[str, Any]) -> list[tuple[str, str]]:
    return [(s["provider"], s["reason"]) for s in result["skipped"]]


def sleep_until(moment: float) -> None:
    time.sleep(max(moment - time.monotonic(), 0.0))


def test_failing_provider_is_skipped_then_probed_once_then_trusted_again(cli: Cli) -> None:
    """Three 500s open glm-direct's circuit; the next process answers from the fallback without
    a request to it and says why on stderr; after the cooldown, of four processes started at once
    exactly one sends it a request (the probe; it fails, so the circuit reopens); after the next
    cooldown a successful probe closes the circuit and the traffic goes back to it."""
    with sandbox_process("glm-direct=status:500") as box:
        asker = Asker(cli, box, BREAKER_POLICY)
        for _ in range(3):
            result, _ = asker.answer()
            assert attempted(result) == [("glm-direct", "server_error"), ("anthropic-direct", "ok")]
        opened = time.monotonic()
        assert len(box.log("glm-direct")) == 3

        result, stderr = asker.answer()
        assert result["provider"] == "anthropic-direct"
        assert attempted(result) == [("anthropic-direct", "ok")]
        assert skipped(result) == [("glm-direct", "circuit_open")]
        assert len(box.log("glm-direct")) == 3, "an open circuit must not send a request"
        assert re.search(r"Skipped provider glm-direct: circuit_open \(.*probed in \d+ s\)", stderr), stderr

        sleep_until(opened + COOLDOWN_S + 0.2)
        with ThreadPoolExecutor(max_workers=4) as pool:
            burst = list(pool.map(lambda _: asker.run(), range(4)))
        probed = time.monotonic()
        results = []
        for done in burst:
            assert done.returncode == 0, done.stderr
            results.append(json.loads(done.stdout))
        assert len(box.log("glm-direct")) == 4, "exactly one probe after the cooldown"
        assert sorted(attempted(r)[0] for r in results) == [
            ("anthropic-direct", "ok"),
            ("anthropic-direct", "ok"),
            ("anthropic-direct", "ok"),
            ("glm-direct", "server_error"),
        ]
        assert all(r["provider"] == "anthropic-direct" for r in results)

        box.set_mode("glm-direct", "ok")
        sleep_until(probed + COOLDOWN_S + 0.2)
        result, _ = asker.answer()
        assert attempted(result) == [("glm-direct", "ok")] and result["fallbackUsed"] is False
        result, stderr = asker.answer()
        assert attempted(result) == [("glm-direct", "ok")] and skipped(result) == []
        assert "Skipped" not in stderr
        assert len(box.log("glm-direct")) == 6


def test_every_circuit_open_fails_at_once_and_says_when_the_first_is_probed(cli: Cli) -> None:
    """Both targets fail once (threshold 1): the next run sends nothing, exits 1 straight away with
    ``circuit_open`` and names the wait until the first probe."""
    with sandbox_process("glm-direct=status:500", "anthropic-direct=status:503") as box:
        asker = Asker(cli, box, ALL_OPEN_POLICY)
        first = asker.run()
        assert first.returncode == 1
        assert attempted(json.loads(first.stdout)) == [
            ("glm-direct", "server_error"),
            ("anthropic-direct", "overloaded"),
        ]

        done = asker.run()
        assert done.returncode == 1
        result = json.loads(done.stdout)
        assert result["attempts"] == [] and result["content"] is None
        assert skipped(result) == [("glm-direct", "circuit_open"), ("anthropic-direct", "circuit_open")]
        assert result["error"]["kind"] == "circuit_open"
        match = re.search(r"the first will be probed in (\d+) s", result["error"]["message"])
        assert match and 25 <= int(match.group(1)) <= 30
        assert result["latencyMs"] < 500
        assert "error: circuit_open: every target's circuit is open" in done.stderr
        assert len(box.log("glm-direct")) == len(box.log("anthropic-direct")) == 1


def test_flapping_primary_is_spared_while_down_and_trusted_again_once_up(cli: Cli) -> None:
    """glm-direct answers 503 for the first 3.75 s, then recovers; ``rmgr ask`` runs every 0.75 s
    for 7.5 s (threshold 2, cooldown 2 s). While it is down every run is answered by the fallback
    and it receives no more requests than the threshold and one probe per cooldown; once up, the
    traffic is back on it within one cooldown (plus a run's interval) and stays there."""
    interval, runs, up_run = 0.75, 10, 5
    with sandbox_process("glm-direct=status:503") as box:
        asker = Asker(cli, box, FLAPPING_POLICY)
        start = time.monotonic()
        start_wall = time.time()
        up_wall = math.inf
        providers: list[str] = []
        for n in range(runs):
            sleep_until(start + n * interval)
            if n == up_run:
                box.set_mode("glm-direct", "ok")
                up_wall = time.time()
            result, _ = asker.answer()
            providers.append(result["provider"])

        down_requests = [r for r in box.log("glm-direct") if r["at"] < up_wall]
        assert all(r["status"] == 503 for r in down_requests)
        assert providers[:up_run] == ["anthropic-direct"] * up_run
        allowed = 2 + math.ceil((up_wall - start_wall) / COOLDOWN_S)
        assert 2 <= len(down_requests) <= allowed, "the threshold, then probes only"
        assert len(down_requests) < up_run, "the open circuit spared the failing provider"

        back = providers.index("glm-direct", up_run)
        assert (back - up_run) * interval <= COOLDOWN_S + interval
        assert providers[back:] == ["glm-direct"] * (runs - back)


def test_breaker_policy_files_are_valid(cli: Cli, tmp_path: Path) -> None:
    """The policies these tests run are valid as written (a typo would silently test defaults)."""
    paths = [
        write_policy(tmp_path, f"{name}.toml", text)
        for name, text in (("breaker", BREAKER_POLICY), ("open", ALL_OPEN_POLICY), ("flap", FLAPPING_POLICY))
    ]
    done = cli.run("policy", "validate", *(str(p) for p in paths))
    assert done.returncode == 0, done.stderr
