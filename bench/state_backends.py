"""What the Redis state store adds to a routed call, against SQLite (target: under 1 ms on loopback).

    python bench/state_backends.py [--runs 5] [--calls 300]          the figures, as a table
    python bench/state_backends.py BACKEND --upstream JSON --calls N  one measurement (a worker)

A worker, in a fresh interpreter, routes ``--calls`` non-streamed completions one after another
through one ``rmcli.api.Client`` (which opens the state as ``rmgr`` does, with
``rmcli.state.open_state``: ``RECURSIVEMANAGER_STATE`` unset, or set to a Redis URL) against the
local server, with everything the state does for a call: the circuit breaker asked and told, the
provider's concurrency slot taken and given back, the call's worst case reserved against a daily
budget and a request quota and then settled, the attempt recorded when sent and settled when it
ends. It prints the median time per call. A redis-server (Debian's ``redis-server``, found on
PATH) is started on a free loopback port without persistence for the Redis workers; without it
the Redis rows are skipped.

A Redis worker also reports, per call, the commands the server ran (``INFO commandstats``,
those run inside scripts included: the server's work) and the round trips the client made
(requests sent, each a command, a script or a pipeline, counted over ``ROUND_TRIP_CALLS`` more
calls: what a busy machine makes expensive, since each one waits for the server to be
scheduled), and the PING round trip of the machine.

``bench(runs, calls)`` is the benchmark ``run.py`` calls (``--only state``): the two backends
run in turn in each round (rounds interleaved), and the figure is the per-call difference,
Redis minus SQLite, of each round's medians.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from harness import Row, emit, median, run_worker, skipped_row, table
from upstream import Upstream

PROVIDER = "glm-direct"
PROMPT = "Should we move the nightly batch jobs to a queue?"
MAX_TOKENS = 256
WARM_UP_CALLS = 20
ROUND_TRIP_CALLS = 50
TARGET_MS = 1.0

POLICY = f"""\
version = 1
name = "bench-state"

[route]
targets = ["{PROVIDER}"]

[retry]
max_attempts = 1

[providers.{PROVIDER}]
max_concurrency = 8
requests_per_window = 100000000
quota_window_s = 3600

[budget]
daily_usd = 1000000
"""


async def _calls(info: dict[str, Any], state: str | None, calls: int) -> dict[str, Any]:
    from rmcli import api
    from rmcli.state import STATE_VARIABLE

    with tempfile.TemporaryDirectory() as home:
        env = {**info["env"], "RECURSIVEMANAGER_HOME": home}
        if state is not None:
            env[STATE_VARIABLE] = state
        async with api.Client(POLICY, env=env) as client:

            async def call() -> float:
                started = time.perf_counter()
                outcome = await client.ask(PROMPT, max_tokens=MAX_TOKENS, stream=False)
                if outcome.completion is None:
                    raise RuntimeError(f"routed call failed: {outcome.error}")
                return (time.perf_counter() - started) * 1000.0

            for _ in range(WARM_UP_CALLS):
                await call()
            commands_before = _redis_commands(state)
            times = [await call() for _ in range(calls)]
            commands = _redis_commands(state) - commands_before
            round_trips = 0.0
            if state is not None:
                with _counting_round_trips() as sent:
                    for _ in range(ROUND_TRIP_CALLS):
                        await call()
                round_trips = sent[0] / ROUND_TRIP_CALLS
        async with api.records(env=env) as records:
            reserved = sum(w.reserved for w in await records.caps.usage(time.time()))
    if reserved:
        raise RuntimeError(f"{reserved} left reserved after the calls")
    result: dict[str, Any] = {
        "calls": calls,
        "median_ms": statistics.median(times),
        "mean_ms": statistics.fmean(times),
    }
    if state is not None:
        result["commands_per_call"] = commands / calls
        result["round_trips_per_call"] = round_trips
        result["ping_ms"] = _ping_ms(state)
    return result


def _redis_commands(url: str | None) -> int:
    """How many commands the Redis server has run so far (0 without one)."""
    if url is None:
        return 0
    import redis

    with redis.Redis.from_url(url) as client:
        stats = client.info("commandstats")
    return sum(int(entry["calls"]) for name, entry in stats.items() if name != "cmdstat_info")


@contextmanager
def _counting_round_trips() -> Iterator[list[int]]:
    """``[n]``: how many requests Redis connections of this process send meanwhile (each
    command, script or pipeline is sent whole and waits for its answers: one round trip). The
    state speaks to Redis through the asyncio client, so its connection class is the one counted."""
    from redis.asyncio.connection import AbstractConnection

    sent = [0]
    send = AbstractConnection.send_packed_command

    async def counted(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
        sent[0] += 1
        await send(self, command, check_health)

    AbstractConnection.send_packed_command = counted  # type: ignore[method-assign]
    try:
        yield sent
    finally:
        AbstractConnection.send_packed_command = send  # type: ignore[method-assign]


def _ping_ms(url: str) -> float:
    """The median round trip of a PING to the server: what one command costs at least."""
    import redis

    with redis.Redis.from_url(url) as client:
        client.ping()
        times = []
        for _ in range(500):
            started = time.perf_counter()
            client.ping()
            times.append((time.perf_counter() - started) * 1000.0)
    return statistics.median(times)


def measure(info: dict[str, Any], state: str | None, calls: int) -> dict[str, Any]:
    """One worker's measurement in this process: ``state`` None for SQLite, else a Redis URL."""
    import anyio

    return anyio.run(_calls, info, state, calls)


class _Redis:
    """A redis-server on a free loopback port that keeps nothing on disk."""

    def __init__(self, program: str) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.folder = tempfile.TemporaryDirectory()
        self.process = subprocess.Popen(
            [program, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            cwd=self.folder.name,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        give_up = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > give_up:
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        self.folder.cleanup()


def _run(upstream: Upstream, backend: str, url: str | None, calls: int) -> dict[str, Any]:
    args = [backend, "--upstream", upstream.json_arg(), "--calls", str(calls)]
    if url is not None:
        args += ["--redis", url]
    return run_worker("state_backends.py", args)


def bench(runs: int = 5, calls: int = 300) -> list[Row]:
    """Per routed call, one call at a time: SQLite's median time, Redis's, and the difference
    (Redis minus SQLite, paired by round; target under 1 ms). Skipped without redis-server."""
    name = f"Redis state vs SQLite, added time per routed call ({calls:,} calls one at a time)"
    program = shutil.which("redis-server")
    if program is None:
        return [skipped_row(name, "redis-server is not installed (apt-get install redis-server)", "< 1 ms")]
    per_call: dict[str, list[float]] = {"sqlite": [], "redis": []}
    commands: list[float] = []
    round_trips: list[float] = []
    ping_ms: list[float] = []
    redis = _Redis(program)
    try:
        with Upstream() as upstream:
            for _ in range(runs):
                per_call["sqlite"].append(float(_run(upstream, "sqlite", None, calls)["median_ms"]))
                measured = _run(upstream, "redis", redis.url, calls)
                per_call["redis"].append(float(measured["median_ms"]))
                commands.append(float(measured["commands_per_call"]))
                round_trips.append(float(measured["round_trips_per_call"]))
                ping_ms.append(float(measured["ping_ms"]))
    finally:
        redis.stop()
    added = [r - s for r, s in zip(per_call["redis"], per_call["sqlite"], strict=True)]
    note = "breaker, slot, budget and quota reservation, settlement, attempt sent and settled per call"
    return [
        Row(
            name="routed call with the SQLite state (median per call)",
            unit="ms",
            samples=per_call["sqlite"],
            decimals=3,
            note=note,
        ),
        Row(
            name="routed call with the Redis state (median per call)",
            unit="ms",
            samples=per_call["redis"],
            baseline_name="SQLite",
            baseline=per_call["sqlite"],
            ratio=median(per_call["redis"]) / median(per_call["sqlite"]),
            ratio_label="of SQLite",
            decimals=3,
            note="redis-server on 127.0.0.1, no persistence",
        ),
        Row(
            name=name,
            unit="ms",
            samples=added,
            baseline_name="SQLite, per call",
            baseline=per_call["sqlite"],
            target=f"< {TARGET_MS:g} ms",
            check=lambda r: (r.value if r.value is not None else float("inf")) < TARGET_MS,
            decimals=3,
            note="Redis median minus SQLite median, paired by round",
        ),
        Row(
            name="Redis round trips per routed call",
            unit="",
            samples=round_trips,
            decimals=1,
            note=f"requests sent (each a command, script or pipeline), over {ROUND_TRIP_CALLS} more calls",
        ),
        Row(
            name="Redis commands per routed call",
            unit="",
            samples=commands,
            decimals=1,
            note="INFO commandstats before and after the calls (those run inside scripts included)",
        ),
        Row(
            name="Redis PING round trip on this machine (what a command costs at least)",
            unit="ms",
            samples=ping_ms,
            decimals=3,
        ),
    ]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("backend", nargs="?", choices=["sqlite", "redis"], help="run one worker")
    parser.add_argument("--upstream", help="the JSON line bench/upstream.py printed (a worker's)")
    parser.add_argument("--redis", help="the Redis URL (a redis worker's)")
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)
    if args.backend is None:
        rows = bench(runs=args.runs, calls=args.calls)
        print(json.dumps([r.to_json() for r in rows], indent=2) if args.json else table(rows))
        return
    if args.upstream is None or (args.backend == "redis") != (args.redis is not None):
        parser.error("a worker needs --upstream, and --redis exactly when BACKEND is redis")
    emit(measure(json.loads(args.upstream), args.redis, args.calls))


if __name__ == "__main__":
    main()
