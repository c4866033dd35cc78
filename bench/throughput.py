"""Throughput and CPU of routed completions: the Python API against bare httpx and LiteLLM.

    python bench/throughput.py CONTENDER --upstream JSON [--calls 2000] [--concurrency 32]

is one measurement in a fresh interpreter (``run.py`` starts it): CONTENDER makes ``--calls``
non-streamed chat completions against the local server, ``--concurrency`` at a time, after one
warm-up call per connection, and prints the wall time and the process CPU time they took.

Contenders, all with the same request, the same server and one connection pool each:
- ``bare``: ``httpx.AsyncClient.post`` to the primary, the JSON parsed; the pool limits of the
  HTTP clients ``rmcli.api`` makes; nothing routed, nothing recorded.
- ``routed``: ``rmcli.api.Client`` with a two-target policy (the primary, then one fallback):
  the policy decoded once, the state (``rmcli.state``, SQLite) open, every attempt recorded when
  sent and settled when it ends, circuit breakers on.
- ``routed-unrecorded``: the same with ``record=False`` (no state, no breakers).
- ``litellm``: ``litellm.Router.acompletion`` with the same two deployments (``openai/`` models
  with ``api_base`` on 127.0.0.1) and the primary's fallback to the second.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from harness import LITELLM_ENV, Row, emit, litellm_missing, median, run_worker, skipped_row
from upstream import Upstream

PRIMARY = "glm-direct"
FALLBACK = "openai-direct"
PROMPT = "Should we adopt a message queue for our background jobs?"
MAX_TOKENS = 256

POLICY = f"""\
version = 1
[route]
targets = ["{PRIMARY}", "{FALLBACK}"]
[retry]
max_attempts = 1
"""

Call = Callable[[], Coroutine[Any, Any, None]]


async def _drive(call: Call, calls: int, concurrency: int) -> dict[str, float]:
    import anyio

    async with anyio.create_task_group() as tg:  # one warm-up call per connection
        for _ in range(concurrency):
            tg.start_soon(call)
    left = calls

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await call()

    cpu, wall = time.process_time(), time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(worker)
    return {"calls": calls, "wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}


async def _bare(info: dict[str, Any], calls: int, concurrency: int) -> dict[str, float]:
    import httpx

    url, key = info["urls"][PRIMARY], info["keys"][PRIMARY]
    payload = {
        "model": "glm-4.7",
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": MAX_TOKENS,
    }
    headers = {"authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=32)
    async with httpx.AsyncClient(timeout=None, limits=limits) as client:

        async def call() -> None:
            response = await client.post(url, json=payload, headers=headers)
            response.raise_for_status()
            if not response.json()["choices"][0]["message"]["content"]:
                raise RuntimeError("empty answer")

        return await _drive(call, calls, concurrency)


async def _routed(info: dict[str, Any], calls: int, concurrency: int, record: bool) -> dict[str, float]:
    from rmcli import api

    with tempfile.TemporaryDirectory() as home:
        async with api.Client(POLICY, env=info["env"], state_home=Path(home), record=record) as client:

            async def call() -> None:
                outcome = await client.ask(PROMPT, max_tokens=MAX_TOKENS, stream=False)
                if outcome.completion is None or outcome.provider != PRIMARY:
                    raise RuntimeError(f"routed call failed: {outcome.error}")

            return await _drive(call, calls, concurrency)


async def _litellm(info: dict[str, Any], calls: int, concurrency: int) -> dict[str, float]:
    os.environ.update(LITELLM_ENV)
    import litellm
    from litellm.router import Router

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    deployments = [
        {
            "model_name": name,
            "litellm_params": {
                "model": f"openai/{model}",
                "api_base": info["baseUrls"][provider],
                "api_key": info["keys"][provider],
            },
        }
        for name, provider, model in (("primary", PRIMARY, "glm-4.7"), ("fallback", FALLBACK, "gpt-4o"))
    ]
    router = Router(model_list=deployments, fallbacks=[{"primary": ["fallback"]}])
    messages = [{"role": "user", "content": PROMPT}]

    async def call() -> None:
        response = await router.acompletion(model="primary", messages=messages, max_tokens=MAX_TOKENS)
        if not response.choices[0].message.content:
            raise RuntimeError("empty answer")

    return await _drive(call, calls, concurrency)


def measure(info: dict[str, Any], contender: str, calls: int, concurrency: int) -> dict[str, float]:
    """One contender's run in this process."""
    import anyio

    match contender:
        case "bare":
            return anyio.run(_bare, info, calls, concurrency)
        case "routed":
            return anyio.run(_routed, info, calls, concurrency, True)
        case "routed-unrecorded":
            return anyio.run(_routed, info, calls, concurrency, False)
        case "litellm":
            return anyio.run(_litellm, info, calls, concurrency)
    raise ValueError(f"unknown contender {contender!r}")


def _run(upstream: Upstream, contender: str, calls: int, concurrency: int) -> dict[str, float]:
    args = [contender, "--upstream", upstream.json_arg(), "--calls", str(calls)]
    return run_worker("throughput.py", [*args, "--concurrency", str(concurrency)])


def bench(runs: int, calls: int, concurrency: int, sequential_calls: int) -> list[Row]:
    """Throughput at ``concurrency``, and CPU per call above bare httpx at that concurrency and
    one call at a time; every contender once per round, rounds interleaved."""
    missing = litellm_missing()
    contenders = ["bare", "routed", "routed-unrecorded"] + ([] if missing else ["litellm"])
    rate: dict[str, list[float]] = {c: [] for c in contenders}
    cpu_ms: dict[str, list[float]] = {c: [] for c in contenders}
    seq_cpu_ms: dict[str, list[float]] = {"bare": [], "routed": []}
    with Upstream() as upstream:
        for _ in range(runs):
            for contender in contenders:
                result = _run(upstream, contender, calls, concurrency)
                rate[contender].append(result["calls"] / result["wall_s"])
                cpu_ms[contender].append(result["cpu_s"] / result["calls"] * 1000)
            for contender in seq_cpu_ms:
                result = _run(upstream, contender, sequential_calls, 1)
                seq_cpu_ms[contender].append(result["cpu_s"] / result["calls"] * 1000)
    at = f"{calls:,} calls at concurrency {concurrency}"
    bare = Row(name=f"bare httpx.AsyncClient ({at})", unit="calls/s", samples=rate["bare"], decimals=0)
    routed = Row(
        name="routed via rmcli.api.Client",
        unit="calls/s",
        samples=rate["routed"],
        baseline_name="bare httpx",
        baseline=rate["bare"],
        ratio=median(rate["routed"]) / median(rate["bare"]),
        ratio_label="of bare",
        target="≥ 0.90× bare httpx",
        check=lambda r: (r.ratio or 0.0) >= 0.90,
        decimals=0,
        note="attempts recorded in the state, circuit breakers on, non-streamed",
    )
    unrecorded = Row(
        name="routed via rmcli.api.Client(record=False)",
        unit="calls/s",
        samples=rate["routed-unrecorded"],
        baseline_name="bare httpx",
        baseline=rate["bare"],
        ratio=median(rate["routed-unrecorded"]) / median(rate["bare"]),
        ratio_label="of bare",
        decimals=0,
    )
    rows = [bare, routed, unrecorded]
    if missing:
        rows.append(skipped_row("routed vs LiteLLM Router.acompletion", missing, "≥ 3× LiteLLM"))
    else:
        rows.append(
            Row(
                name="routed vs LiteLLM Router.acompletion (1 fallback)",
                unit="calls/s",
                samples=rate["routed"],
                baseline_name="LiteLLM",
                baseline=rate["litellm"],
                ratio=median(rate["routed"]) / median(rate["litellm"]),
                ratio_label="of LiteLLM",
                target="≥ 3× LiteLLM",
                check=lambda r: (r.ratio or 0.0) >= 3.0,
                decimals=0,
            )
        )
    rows.append(_cpu_row(f"CPU per routed call above bare httpx (concurrency {concurrency})", cpu_ms))
    rows.append(
        _cpu_row(f"CPU per routed call above bare httpx (one at a time, {sequential_calls:,})", seq_cpu_ms)
    )
    if not missing:
        rows.append(
            Row(
                name="CPU per LiteLLM call",
                unit="ms",
                samples=cpu_ms["litellm"],
                baseline_name="bare httpx",
                baseline=cpu_ms["bare"],
                ratio=median(cpu_ms["litellm"]) / median(cpu_ms["bare"]),
                ratio_label="of bare",
                decimals=3,
            )
        )
    return rows


def _cpu_row(name: str, cpu_ms: dict[str, list[float]]) -> Row:
    added = [routed - bare for routed, bare in zip(cpu_ms["routed"], cpu_ms["bare"], strict=True)]
    return Row(
        name=name,
        unit="ms",
        samples=added,
        baseline_name="bare httpx, CPU per call",
        baseline=cpu_ms["bare"],
        target="< 0.3 ms",
        check=lambda r: (r.value or 0.0) < 0.3,
        decimals=3,
        note="process CPU time / calls, routed minus bare, paired by round",
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("contender", choices=["bare", "routed", "routed-unrecorded", "litellm"])
    parser.add_argument("--upstream", required=True, help="the JSON line bench/upstream.py printed")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args(argv)
    emit(measure(json.loads(args.upstream), args.contender, args.calls, args.concurrency))


if __name__ == "__main__":
    main()
