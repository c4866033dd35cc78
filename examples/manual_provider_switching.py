"""Seed scenario 2, manual provider switching: pick the provider per analysis.

    python examples/manual_provider_switching.py

The gateway for everyday questions, Anthropic for a critical decision, OpenAI to compare.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import anyio

from rmcli import api
from rmcli.sandbox import Sandbox


async def main() -> None:
    async with Sandbox() as sandbox:
        with tempfile.TemporaryDirectory() as home:
            env = {**sandbox.env(), "RECURSIVEMANAGER_HOME": str(Path(home))}
            for name, question in [
                ("aiceo-gateway", "Question 1: should we adopt trunk-based development?"),
                ("anthropic-direct", "Critical decision: should we sunset the legacy API?"),
                ("openai-direct", "Compare results: should we sunset the legacy API?"),
            ]:
                provider = api.create(name, env=env)
                result = await provider.analyze(question, perspectives=["security", "architecture"])
                answered = {r.provider for r in result.results if r.error_kind is None}
                summary = f"status={result.status} overall={result.overall}"
                print(f"{name:<16} {summary} answered by {sorted(answered)}")


if __name__ == "__main__":
    anyio.run(main)
