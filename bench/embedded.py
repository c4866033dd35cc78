"""What a program embedding ``rmcli.api.Client`` sees (issue 19's "30-line script"): 2,000 calls,
32 at once, through a ``Client`` with two targets and every attempt recorded, then the same
calls with bare aiohttp to the first target; calls per second and CPU per call of each.

    rmgr sandbox > s.env &   . ./s.env   python bench/embedded.py

It uses the providers the environment names (the sandbox's, above); the state goes to a
temporary folder.
"""

import asyncio
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from rmcli import api

POLICY = 'version = 1\n[route]\ntargets = ["glm-direct", "openai-direct"]\n[retry]\nmax_attempts = 1\n'
CALLS, AT_ONCE = 2000, 32
QUESTION = "Is a queue better than cron here?"


async def drive(call: Callable[[], Awaitable[object]]) -> tuple[float, float]:
    """Calls per second and CPU milliseconds per call of ``CALLS`` calls, ``AT_ONCE`` at a time."""
    gate = asyncio.Semaphore(AT_ONCE)

    async def one() -> None:
        async with gate:
            await call()

    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(one() for _ in range(CALLS)))
    return CALLS / (time.perf_counter() - wall), (time.process_time() - cpu) / CALLS * 1000


async def main() -> None:
    with tempfile.TemporaryDirectory() as home:
        async with api.Client(POLICY, state_home=Path(home)) as client:
            await client.ask("warm up", stream=False)
            rate, cpu = await drive(lambda: client.ask(QUESTION, stream=False))
            print(f"routed (rmcli.api.Client): {rate:,.0f} calls/s, {cpu:.3f} ms CPU a call")
    body = {"model": "glm-4", "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 1000}
    headers = {"authorization": f"Bearer {os.environ['GLM_API_KEY']}"}
    async with aiohttp.ClientSession(headers=headers) as session:

        async def bare() -> None:
            async with session.post(os.environ["GLM_API_URL"], json=body) as reply:
                await reply.json()

        rate, cpu = await drive(bare)
        print(f"bare aiohttp:              {rate:,.0f} calls/s, {cpu:.3f} ms CPU a call")


if __name__ == "__main__":
    asyncio.run(main())
