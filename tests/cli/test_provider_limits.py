"""A provider's max_concurrency caps the requests it gets at once across every route of a process."""

from __future__ import annotations

import time

import anyio
import httpx
import msgspec
import pytest

from rmcli.runner import ProviderLimits, Routing, route
from rmcli.sandbox import Sandbox
from rmcore.plan import RunPlan, TargetPlan
from rmcore.providers import builtin_providers
from rmcore.requests import ChatRequest

pytestmark = pytest.mark.anyio


async def four_at_once(limit: int | None) -> tuple[float, list[float]]:
    """Four routes at once to glm-direct (0.25 s an answer) with ``max_concurrency`` ``limit``:
    the seconds they took together, and each attempt's latency in ms."""
    latencies: list[float] = []
    async with Sandbox(modes={"glm-direct": "slow:0.25"}) as box:
        env = box.env()
        spec = msgspec.structs.replace(builtin_providers(env)["glm-direct"], max_concurrency=limit)
        plan = RunPlan(targets=(TargetPlan(provider=spec),))
        shared = ProviderLimits()
        started = time.monotonic()
        async with httpx.AsyncClient(timeout=None) as client:

            async def one(i: int) -> None:
                routing = Routing(client, lambda s: env["GLM_API_KEY"], limits=shared)
                outcome = await route(plan, ChatRequest.ask(f"q{i}"), routing)
                assert outcome.ok
                latencies.extend(a.latency_ms for a in outcome.attempts)

            async with anyio.create_task_group() as tg:
                for i in range(4):
                    tg.start_soon(one, i)
        return time.monotonic() - started, latencies


async def test_a_limit_of_one_serialises_concurrent_routes() -> None:
    """Four routes, one slot: the provider sees them one after another (4 x 0.25 s). Each
    attempt's latency counts from when its request left, not the time it queued for the slot
    (the last one waited 0.75 s for it)."""
    elapsed, latencies = await four_at_once(1)
    assert elapsed >= 1.0
    assert len(latencies) == 4 and all(250 <= ms < 600 for ms in latencies), latencies


async def test_without_a_limit_concurrent_routes_overlap() -> None:
    """Four routes, no limit: the provider gets them at once (well under 4 x 0.25 s)."""
    elapsed, _ = await four_at_once(None)
    assert elapsed < 0.9


def test_the_aiceo_gateway_allows_eight_at_once_by_default() -> None:
    """The built-in aiceo-gateway has ``max_concurrency`` 8."""
    assert builtin_providers({})["aiceo-gateway"].max_concurrency == 8
