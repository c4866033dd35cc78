"""Monitoring: track provider usage. Every attempt is recorded in the state store; read it back.

python examples/usage_tracking.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import anyio

from rmcli import api
from rmcli.sandbox import Sandbox
from rmcore.usage import summarize


async def main() -> None:
    async with Sandbox(modes={"aiceo-gateway": "ratelimit:0.1"}) as sandbox:
        env = {**sandbox.env(), "AI_PROVIDER": "aiceo-gateway", "AI_FALLBACK_PROVIDER": "glm-direct"}
        with tempfile.TemporaryDirectory() as home:
            for i in range(3):
                await api.ask(f"Question {i}: should we ship on Fridays?", env=env, state_home=Path(home))
            async with api.records(env=env, state_home=Path(home)) as state:
                usage = summarize(await state.attempts.since(0))
    print("Provider Usage Statistics:")
    for u in usage:
        print(
            f"  {u.provider:<16} requests={u.requests} failures={u.failures} "
            f"p50={u.p50_ms or 0:.0f}ms cost=${u.cost_usd:.6f}"
        )


if __name__ == "__main__":
    anyio.run(main)
