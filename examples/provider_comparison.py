"""Seed scenario 4, provider comparison: the same analysis on each provider, side by side.

    python examples/provider_comparison.py

One provider is down, to show that its failure is reported in its row, not raised.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import anyio

from rmcli import api
from rmcli.sandbox import Sandbox


async def main() -> None:
    async with Sandbox(modes={"openai-direct": "down"}) as sandbox:
        with tempfile.TemporaryDirectory() as home:
            env = {**sandbox.env(), "RECURSIVEMANAGER_HOME": str(Path(home))}
            results = await api.compare(
                "Should we migrate to Kubernetes?",
                providers=["aiceo-gateway", "anthropic-direct", "openai-direct"],
                env=env,
            )
    print("=== Provider Comparison ===")
    for name, run in results.items():
        by_id = {r.id: r for r in run.results}
        print(f"{name.upper()}")
        print(f"  Status: {run.status}  Overall Confidence: {run.overall}")
        print(f"  Execution Time: {run.execution_ms:.0f}ms  Cost: ${run.cost_usd:.6f}")
        print(f"  Security: {by_id['security'].confidence}  Architecture: {by_id['architecture'].confidence}")


if __name__ == "__main__":
    anyio.run(main)
