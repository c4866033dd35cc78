"""Fail-over cost: how much longer a call takes when its primary refuses connections.

    python bench/failover.py --upstream JSON [--calls 300]

is one measurement in a fresh interpreter (``run.py`` starts it). Two ``rmcli.api.Client``s
call the same local provider one call at a time, alternately: ``direct`` routes to it alone;
``failover`` routes first to a primary whose port refuses connections (bound on 127.0.0.1,
never listening), then to it. Every fail-over call must fail on the primary with
``connection`` and be answered by the fallback. It prints each call's latency.

The policy retries nothing on the same target (``max_attempts = 1``: a retry would wait its
back-off, which is policy, not cost) and keeps the breaker closed (a huge
``failure_threshold``), so that every call really tries the dead primary; an open breaker
would skip it without a connection attempt, cheaper still.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness import Row, emit, median, run_worker
from upstream import Upstream, closed_port

FALLBACK = "glm-direct"
PRIMARY = "openai-direct"
PROMPT = "Is a queue better than cron here?"


def _policy(targets: Sequence[str]) -> str:
    names = ", ".join(f'"{t}"' for t in targets)
    return (
        f"version = 1\n[route]\ntargets = [{names}]\n[retry]\nmax_attempts = 1\n"
        "[breaker]\nfailure_threshold = 1000000000\n"
    )


async def _measure(info: dict[str, Any], calls: int) -> dict[str, list[float]]:
    from rmcli import api

    dead = closed_port()
    port = dead.getsockname()[1]
    env = {**info["env"], "OPENAI_API_URL": f"http://127.0.0.1:{port}/v1/chat/completions"}
    latencies: dict[str, list[float]] = {"direct": [], "failover": []}
    try:
        with tempfile.TemporaryDirectory() as home:
            direct = api.Client(_policy([FALLBACK]), env=env, state_home=Path(home))
            failover = api.Client(_policy([PRIMARY, FALLBACK]), env=env, state_home=Path(home))
            async with direct, failover:
                for call in range(calls + 10):
                    for name, client in (("direct", direct), ("failover", failover)):
                        started = time.perf_counter()
                        outcome = await client.ask(PROMPT, stream=False)
                        elapsed_ms = (time.perf_counter() - started) * 1000
                        kinds = [a.outcome for a in outcome.attempts]
                        expected = ["ok"] if name == "direct" else ["connection", "ok"]
                        if outcome.provider != FALLBACK or kinds != expected:
                            raise RuntimeError(f"{name}: unexpected attempts {kinds} ({outcome.error})")
                        if call >= 10:  # the first calls warm the pool and the caches
                            latencies[name].append(elapsed_ms)
    finally:
        dead.close()
    return latencies


def bench(runs: int, calls: int) -> list[Row]:
    """The median added latency of a fail-over over a refused primary, per run."""
    added: list[float] = []
    direct: list[float] = []
    with Upstream() as upstream:
        for _ in range(runs):
            result = run_worker("failover.py", ["--upstream", upstream.json_arg(), "--calls", str(calls)])
            direct.append(median(result["direct"]))
            added.append(median(result["failover"]) - median(result["direct"]))
    return [
        Row(
            name=f"fail-over cost: primary refuses connections ({calls} calls a run)",
            unit="ms",
            samples=added,
            baseline_name="calling the fallback directly",
            baseline=direct,
            target="< 2 ms added, median",
            check=lambda r: (r.value or 0.0) < 2.0,
            decimals=2,
            note="median latency of the fail-over calls minus that of the direct calls, "
            "alternating, one at a time, through rmcli.api.Client",
        )
    ]


def main(argv: Sequence[str] | None = None) -> None:
    import anyio

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--upstream", required=True, help="the JSON line bench/upstream.py printed")
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args(argv)
    emit(anyio.run(_measure, json.loads(args.upstream), args.calls))


if __name__ == "__main__":
    main()
