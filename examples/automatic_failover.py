"""The seed's scenario 1, automatic fail-over, embedded in a program.

Starts the sandbox with the primary provider (aiceo-gateway) down, routes one question by the
default route (AI_PROVIDER, then AI_FALLBACK_PROVIDER) and prints who answered and every attempt.

    python examples/automatic_failover.py
"""

from __future__ import annotations

import anyio

from rmcli.config import load_route
from rmcli.environment import api_key
from rmcli.runner import route
from rmcli.sandbox import Sandbox
from rmcli.session import http_client
from rmcore.requests import ChatRequest


async def main() -> None:
    async with Sandbox(modes={"aiceo-gateway": "down"}) as sandbox:
        env = {**sandbox.env(), "AI_PROVIDER": "aiceo-gateway", "AI_FALLBACK_PROVIDER": "glm-direct"}
        setup = load_route(env)
        async with http_client() as client:
            outcome = await route(
                setup.plan,
                ChatRequest(prompt="Should we implement A/B testing for our features?"),
                client=client,
                keys=lambda spec: api_key(env, spec.key_env),
            )
    for a in outcome.attempts:
        print(f"{a.provider:<16} {a.outcome:<12} {a.latency_ms:8.1f} ms  ${a.cost_usd:.6f}")
    used = outcome.fallback_used
    print(f"answered by {outcome.provider} (fallback used: {used}), cost ${outcome.cost_usd:.6f}")


if __name__ == "__main__":
    anyio.run(main)
