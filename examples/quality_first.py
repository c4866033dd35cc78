"""Failover strategy 3, quality first with a timeout: the premium provider, GLM if it is slow.

    python examples/quality_first.py

As policies/quality-first.toml, with a 1 s attempt timeout so the example is quick.
"""

from __future__ import annotations

import anyio

from rmcli import api
from rmcli.sandbox import Sandbox

POLICY = """
version = 1
[route]
targets = [{ provider = "anthropic-direct", attempt_timeout_s = 1, max_attempts = 1 }, "glm-direct"]
"""


async def main() -> None:
    async with Sandbox(modes={"anthropic-direct": "hang"}) as sandbox:
        outcome = await api.ask(
            "Should we implement serverless architecture?", policy=POLICY, env=sandbox.env(), record=False
        )
    first = outcome.attempts[0]
    print(f"anthropic-direct: {first.outcome} after {first.latency_ms / 1000:.1f} s")
    print(f"answered by {outcome.provider} (fallback used: {outcome.fallback_used})")


if __name__ == "__main__":
    anyio.run(main)
