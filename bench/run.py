"""Every benchmark of recursive-manager, side by side with bare aiohttp and LiteLLM, in one table.

    python bench/run.py [--quick] [--json] [--runs N] [--only NAME ...]

Each figure is the median of N runs (min–max shown) with its baseline measured in the same run,
the ratio between them, the target and whether it is met. A fast local OpenAI-compatible server
(the project's sandbox, ``bench/upstream.py``) is started on 127.0.0.1 for the benchmarks that
call one; nothing else is contacted. The LiteLLM comparisons need ``pip install -e '.[bench]'``
and are skipped, with a message, without it; so is the gateway's, which needs LiteLLM's proxy
(``litellm[proxy]``, best in a venv of its own, found through ``LITELLM_PROXY`` or PATH).
``--quick`` runs fewer and shorter rounds (for a smoke check, not for figures); ``--json``
prints the rows and the machine as JSON instead. The exit status is 1 when a target is missed,
else 0. Figures from a machine busy with other work
are noisy: the load average before and after is printed with the machine.

Benchmarks (``--only``): startup, throughput, streaming, failover, analysis, engine, state, serve.
``throughput`` and ``streaming`` compare routed calls with bare aiohttp, the baseline, measured
in the same run (``bench/throughput.py``). ``state`` is the cost of the Redis state store per
routed call against SQLite (``bench/state_backends.py``); it starts a redis-server of its own on
127.0.0.1 and is skipped, with a message, when ``redis-server`` is not on PATH. ``serve`` is
what ``rmgr serve`` adds to a request, sequentially (``bench/serve_overhead.py``), and the
gateway under load against LiteLLM's proxy (``bench/serve_load.py``; wrk when it is on PATH,
else an aiohttp load generator).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence

import analysis
import failover
import serve_load
import serve_overhead
import startup
import state_backends
import throughput
from harness import Row, machine, table

BENCHMARKS = ("startup", "throughput", "streaming", "failover", "analysis", "engine", "state", "serve")


def plan(quick: bool, runs: int | None) -> dict[str, Callable[[], list[Row]]]:
    """What each benchmark runs, sized for ``--quick`` or for figures."""
    n = runs or (2 if quick else 5)
    return {
        "startup": lambda: startup.bench(runs=max(n, 3) * (1 if quick else 2), litellm_runs=min(n, 3)),
        # One at a time, 1,000 calls for figures: the figure is the routing's steady cost, and
        # fewer calls read higher (0.32 ms over bare at 300 calls, 0.27 ms at 1,000 and at 3,000,
        # on 2026-11-26; 20 more warm-up calls did not change the 300-call figure).
        "throughput": lambda: throughput.bench(
            runs=n, calls=500 if quick else 2000, concurrency=32, sequential_calls=300 if quick else 1000
        ),
        "streaming": lambda: throughput.stream_bench(
            runs=n, calls=500 if quick else 2000, concurrency=32, sequential_calls=200 if quick else 500
        ),
        "failover": lambda: failover.bench(runs=n, calls=50 if quick else 300),
        "analysis": lambda: analysis.bench(runs=n, rss_runs=min(n, 3)),
        "engine": lambda: startup.engine_bench(runs=n, seconds=0.3 if quick else 1.0),
        "state": lambda: state_backends.bench(runs=n, calls=100 if quick else 300),
        "serve": lambda: [
            *serve_overhead.bench(runs=n, requests=200 if quick else 1000),
            *serve_load.bench(runs=n, seconds=3.0 if quick else 10.0, concurrency=64),
        ],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer, shorter runs: a smoke check")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--runs", type=int, default=None, help="runs per figure (default 5; 2 with --quick)")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS))
    args = parser.parse_args(argv)
    if args.runs is not None and args.runs < 1:
        parser.error("--runs must be at least 1")
    before = machine()
    started = time.perf_counter()
    rows: list[Row] = []
    for name, run in plan(args.quick, args.runs).items():
        if name in args.only:
            if not args.json:
                print(f"running {name} ...", file=sys.stderr, flush=True)
            rows.extend(run())
    info = {**before, "loadAfter": machine()["load"], "seconds": round(time.perf_counter() - started, 1)}
    command = "python bench/run.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.json:
        print(
            json.dumps(
                {"command": command.strip(), "machine": info, "rows": [r.to_json() for r in rows]}, indent=2
            )
        )
    else:
        print(table(rows))
        print()
        print(f"command: {command.strip()}")
        print(f"machine: {_describe(info)}")
    missed = [r for r in rows if r.met is False]
    return 1 if missed else 0


def _describe(info: dict[str, object]) -> str:
    versions = info.get("versions") or {}
    assert isinstance(versions, dict)
    libs = ", ".join(f"{k} {v}" for k, v in versions.items() if v)
    load = info.get("load")
    load_text = f"load {load[0]:.2f} before" if isinstance(load, list) else ""
    after = info.get("loadAfter")
    if isinstance(after, list):
        load_text += f", {after[0]:.2f} after"
    return (
        f"{info.get('cpu')}, {info.get('cores')} cores, {info.get('system')}, Python {info.get('python')}; "
        f"{libs}; {load_text}; {info.get('seconds')} s"
    )


if __name__ == "__main__":
    raise SystemExit(main())
