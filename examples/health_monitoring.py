"""Seed scenario 5, health-check monitoring: every provider checked at once.

    python examples/health_monitoring.py

One provider is down and one has a wrong key, to show the reasons (unlike the original, a 401 is
unhealthy).
"""

from __future__ import annotations

import anyio

from rmcli import api
from rmcli.sandbox import Sandbox


async def main() -> None:
    async with Sandbox(modes={"openai-direct": "down"}) as sandbox:
        env = {**sandbox.env(), "ANTHROPIC_API_KEY": "a-wrong-key-for-the-demo"}
        reports = await api.health(env=env)
    print("Provider Health Status:")
    for r in reports:
        time = "N/A" if r.response_time_ms is None else f"{r.response_time_ms:.0f}ms"
        mark = "✓" if r.healthy else "✗"
        print(f"  {r.provider:<16} {mark} {time:<8} {r.reason or ''}")


if __name__ == "__main__":
    anyio.run(main)
