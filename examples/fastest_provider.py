"""Failover strategy 2, fastest provider wins: all at once, the losers cancelled (and accounted).

python examples/fastest_provider.py
"""

from __future__ import annotations

import time

import anyio

from rmcli import api
from rmcli.sandbox import Sandbox

POLICY = """
version = 1
[route]
strategy = "fastest"
targets = ["aiceo-gateway", "anthropic-direct", "openai-direct"]
"""


async def main() -> None:
    async with Sandbox(modes={"aiceo-gateway": "slow:3", "anthropic-direct": "slow:2"}) as sandbox:
        started = time.monotonic()
        outcome = await api.ask(
            "Should we add WebSocket support for real-time features?",
            policy=POLICY,
            env=sandbox.env(),
            record=False,
        )
    print(f"Fastest provider: {outcome.provider} in {time.monotonic() - started:.2f} s")
    for a in outcome.attempts:
        print(f"  {a.provider:<16} {a.outcome:<10} ${a.cost_usd:.6f}")


if __name__ == "__main__":
    anyio.run(main)
