"""Seed scenario 1, automatic fail-over: the primary provider is down, the fallback answers.

    python examples/automatic_failover.py

Starts the sandbox (local simulated providers) with aiceo-gateway down and asks one question by
the default route, AI_PROVIDER then AI_FALLBACK_PROVIDER.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import anyio

from rmcli import api
from rmcli.sandbox import Sandbox


async def main() -> None:
    async with Sandbox(modes={"aiceo-gateway": "down"}) as sandbox:
        env = {**sandbox.env(), "AI_PROVIDER": "aiceo-gateway", "AI_FALLBACK_PROVIDER": "glm-direct"}
        with tempfile.TemporaryDirectory() as home:
            outcome = await api.ask(
                "Should we implement A/B testing for our features?", env=env, state_home=Path(home)
            )
    for a in outcome.attempts:
        print(f"{a.provider:<16} {a.outcome:<12} {a.latency_ms:8.1f} ms  ${a.cost_usd:.6f}")
    used = outcome.fallback_used
    print(f"answered by {outcome.provider} (fallback used: {used}), cost ${outcome.cost_usd:.6f}")


if __name__ == "__main__":
    anyio.run(main)
