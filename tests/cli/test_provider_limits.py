"""A provider's max_concurrency caps the requests it gets at once across every route of a process."""

from __future__ import annotations

import time

import anyio
import httpx
import msgspec
import pytest

from rmcli.runner import ProviderLimits, route
from rmcli.sandbox import Sandbox
from rmcore.plan import RunPlan, TargetPlan
from rmcore.providers import builtin_providers
from rmcore.requests import ChatRequest

pytestmark = pytest.mark.anyio


async def elapsed_for_four(limit: int | None) -> float:
    async with Sandbox(modes={"glm-direct": "slow:0.25"}) as box:
        env = box.env()
        spec = msgspec.structs.replace(builtin_providers(env)["glm-direct"], max_concurrency=limit)
        plan = RunPlan(targets=(TargetPlan(provider=spec),))
        shared = ProviderLimits()
        started = time.monotonic()
        async with httpx.AsyncClient(timeout=None) as client:

            async def one(i: int) -> None:
                outcome = await route(
                    plan,
                    ChatRequest(prompt=f"q{i}"),
                    client=client,
                    keys=lambda s: env["GLM_API_KEY"],
                    limits=shared,
                )
                assert outcome.ok

            async with anyio.create_task_group() as tg:
                for i in range(4):
                    tg.start_soon(one, i)
        return time.monotonic() - started


async def test_a_limit_of_one_serialises_concurrent_routes() -> None:
    """Four routes, one slot: the provider sees them one after another (4 x 0.25 s)."""
    assert await elapsed_for_four(1) >= 1.0


async def test_without_a_limit_concurrent_routes_overlap() -> None:
    assert await elapsed_for_four(None) < 0.9


def test_the_aiceo_gateway_allows_eight_at_once_by_default() -> None:
    assert builtin_providers({})["aiceo-gateway"].max_concurrency == 8
