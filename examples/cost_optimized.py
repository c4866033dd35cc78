"""Seed scenario 3, cost-optimised selection within a budget: the cheapest provider that fits.

    python examples/cost_optimized.py

Unlike the seed's version, the budget is checked *before* each request (worst case: the prompt's
estimate plus max_tokens at the provider's prices), never after the money is spent.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import anyio

from rmcli import api
from rmcli.sandbox import Sandbox

POLICY = """
version = 1
name = "cheapest-within-ten-cents"
[route]
strategy = "cheapest"
targets = ["openai-direct", "anthropic-direct", "glm-direct"]
[limits]
max_usd = 0.10
"""


async def main() -> None:
    async with Sandbox() as sandbox:
        with tempfile.TemporaryDirectory() as home:
            env = {**sandbox.env(), "RECURSIVEMANAGER_HOME": str(Path(home))}
            result = await api.analyze(
                "Should we add dark mode to our app?", policy=POLICY, env=env, persist_history=False
            )
    providers = sorted({r.provider for r in result.results if r.provider})
    print(f"status={result.status} providers={providers} cost=${result.cost_usd:.6f} (budget $0.10)")
    assert result.cost_usd <= 0.10


if __name__ == "__main__":
    anyio.run(main)
