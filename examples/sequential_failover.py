"""Failover strategy 1, sequential: the seed's order, each provider tried until one answers.

    python examples/sequential_failover.py

Uses policies/sequential-failover.toml; the gateway is down and GLM answers 503, so Anthropic answers.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import anyio

from rmcli import api
from rmcli.sandbox import Sandbox

POLICY = Path(__file__).resolve().parent.parent / "policies" / "sequential-failover.toml"


async def main() -> None:
    async with Sandbox(modes={"aiceo-gateway": "down", "glm-direct": "status:503"}) as sandbox:
        with tempfile.TemporaryDirectory() as home:
            outcome = await api.ask(
                "Should we implement OAuth 2.0 authentication?",
                policy=POLICY,
                env=sandbox.env(),
                state_home=Path(home),
            )
    for a in outcome.attempts:
        print(f"tried {a.provider}: {a.outcome}")
    print(f"answered by {outcome.provider}")


if __name__ == "__main__":
    anyio.run(main)
