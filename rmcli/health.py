"""Health checks over HTTP, many providers at once."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import anyio
import httpx

from rmcore.health import HealthReport, build_health_request, read_health_reply
from rmcore.providers import ProviderSpec

__all__ = ["check_health", "check_many"]

HEALTH_TIMEOUT_S = 5.0
_MAX_STATUS_BODY = 1024 * 1024


async def check_health(
    client: httpx.AsyncClient,
    spec: ProviderSpec,
    api_key: str | None,
    timeout_s: float = HEALTH_TIMEOUT_S,
    clock: Callable[[], float] = time.monotonic,
) -> HealthReport:
    """Ask ``spec`` whether it is up; never raises for a provider's fault."""
    if spec.problems:
        return HealthReport(
            provider=spec.name, healthy=False, reason="; ".join(spec.problems), response_time_ms=None
        )
    http = build_health_request(spec, api_key)
    started = clock()
    reason: str | None
    with anyio.move_on_after(timeout_s) as scope:
        try:
            async with client.stream(http.method, http.url, headers=list(http.headers)) as response:
                body = b""
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > _MAX_STATUS_BODY:
                        break
                reason = read_health_reply(spec, response.status_code, body)
        except (httpx.ConnectError, httpx.ConnectTimeout):
            reason = "unreachable"
        except httpx.TimeoutException:
            reason = "timeout"
        except httpx.HTTPError as exc:
            reason = f"unreachable ({type(exc).__name__})"
    elapsed_ms = (clock() - started) * 1000.0
    if scope.cancelled_caught:
        reason = "timeout"
    return HealthReport(
        provider=spec.name,
        healthy=reason is None,
        reason=reason,
        response_time_ms=None if reason in ("unreachable", "timeout") else elapsed_ms,
    )


async def check_many(
    client: httpx.AsyncClient,
    specs: Sequence[ProviderSpec],
    keys: Callable[[ProviderSpec], str | None],
    timeout_s: float = HEALTH_TIMEOUT_S,
) -> list[HealthReport]:
    """Check every provider of ``specs`` concurrently; reports come back in the same order."""
    reports: list[HealthReport | None] = [None] * len(specs)

    async def one(i: int, spec: ProviderSpec) -> None:
        reports[i] = await check_health(client, spec, keys(spec), timeout_s)

    async with anyio.create_task_group() as tg:
        for i, spec in enumerate(specs):
            tg.start_soon(one, i, spec)
    return [r for r in reports if r is not None]
