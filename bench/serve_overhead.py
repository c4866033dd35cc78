"""What ``rmgr serve`` adds to a call: sequential requests straight to the sandbox, then the same
through the gateway (one worker, no key, a one-provider route), each on a keep-alive connection.

    python bench/serve_overhead.py [--requests N] [--stream]

Prints p50 and p99 of each and of the difference (the issue's targets: p50 <= 2 ms, p99 <= 5 ms).
The sandbox and the gateway run in processes of their own; nothing else is contacted. ``bench``
measures the same as rows of ``run.py``'s ``serve`` group: several rounds, direct and gateway
alternating, each difference paired by round.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import httpx
from harness import ROOT, Row, child_env, median
from upstream import Upstream

BODY = {"model": "default", "messages": [{"role": "user", "content": "Is a monorepo right for two people?"}]}
POLICY = 'version = 1\n[route]\ntargets = ["openai-direct"]\n[breaker]\nfailure_threshold = 1000\n'


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


OWN: list[float] = []
"""The gateway's own account of its overhead per request (``x-rmgr-overhead-ms``, plain only)."""


def _timed(
    client: httpx.Client, url: str, body: dict[str, object], headers: dict[str, str], n: int
) -> list[float]:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        reply = client.post(url, json=body, headers=headers)
        reply.read()
        assert reply.status_code == 200, reply.text
        if "x-rmgr-overhead-ms" in reply.headers:
            OWN.append(float(reply.headers["x-rmgr-overhead-ms"]))
        times.append((time.perf_counter() - started) * 1000.0)
    return times


def _p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[round(q) - 1]


def _at_most(limit_ms: float) -> Callable[[Row], bool]:
    """A row's check: its median is at most ``limit_ms``."""
    return lambda row: (row.value or 0.0) <= limit_ms


def bench(runs: int, requests: int) -> list[Row]:
    """The gateway's added latency, sequential, plain and streamed: per round ``requests`` straight
    to the sandbox, then as many through ``rmgr serve`` (as ``serve_load.start_rmgr`` starts it),
    on keep-alive connections; the rows are the gateway's percentile minus the direct one's."""
    from serve_load import start_rmgr

    added: dict[str, list[float]] = {"p50": [], "p99": [], "stream p50": []}
    base: dict[str, list[float]] = {"p50": [], "p99": [], "stream p50": []}
    with ExitStack() as stack:
        upstream = stack.enter_context(Upstream())
        gateway = start_rmgr(stack, upstream).url
        direct_url = upstream.info["urls"]["openai-direct"]
        key = {"authorization": f"Bearer {upstream.info['keys']['openai-direct']}"}
        with httpx.Client(timeout=10) as client:
            for stream in (False, True):  # warm both
                body: dict[str, object] = {**BODY, "stream": stream}
                _timed(client, direct_url, body, key, 50)
                _timed(client, gateway, body, {}, 50)
            for _ in range(runs):
                for stream in (False, True):
                    body = {**BODY, "stream": stream}
                    direct = _timed(client, direct_url, body, key, requests)
                    served = _timed(client, gateway, body, {}, requests)
                    for q in (50, 99) if not stream else (50,):
                        name = f"stream p{q}" if stream else f"p{q}"
                        added[name].append(_p(served, q) - _p(direct, q))
                        base[name].append(_p(direct, q))
    n = f"{requests:,} sequential requests a run"
    rows = []
    for name, target in (("p50", 2.0), ("p99", 5.0), ("stream p50", None)):
        kind = "streamed" if name.startswith("stream") else "plain"
        rows.append(
            Row(
                name=f"gateway added latency, {kind}, {name.split()[-1]} ({n})",
                unit="ms",
                samples=added[name],
                baseline_name=f"the sandbox directly, {name.split()[-1]}",
                baseline=base[name],
                target="" if target is None else f"≤ {target:g} ms",
                check=None if target is None else _at_most(target),
                decimals=3,
                note=(
                    "rmgr serve's percentile minus the direct one's, paired by round; one keep-alive "
                    "httpx connection each, one worker, --no-auth, attempts recorded"
                    if name == "p50"
                    else ""
                ),
            )
        )
    if OWN:
        rows[0].note += f"; its own x-rmgr-overhead-ms header, median {median(OWN):.3f} ms"
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--stream", action="store_true")
    args = parser.parse_args()
    body = {**BODY, "stream": args.stream}
    with Upstream() as upstream, tempfile.TemporaryDirectory() as home:
        Path(home, "policy.toml").write_text(POLICY, encoding="utf-8")
        port = _free_port()
        env = child_env({**upstream.env(), "RECURSIVEMANAGER_HOME": home})
        env.pop("RMGR_SERVE_KEYS", None)
        argv = [
            sys.executable,
            "-m",
            "rmcli",
            "serve",
            "--no-auth",
            "--port",
            str(port),
            "--policy",
            "policy.toml",
        ]
        server = subprocess.Popen(
            argv, cwd=home, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            gateway = f"http://127.0.0.1:{port}"
            with httpx.Client(timeout=10) as client:
                for _ in range(200):
                    try:
                        client.get(f"{gateway}/health")
                        break
                    except httpx.TransportError:
                        time.sleep(0.05)
                direct_url = upstream.info["urls"]["openai-direct"]
                key = {"authorization": f"Bearer {upstream.info['keys']['openai-direct']}"}
                _timed(client, direct_url, body, key, 100)  # warm both
                _timed(client, f"{gateway}/v1/chat/completions", body, {}, 100)
                direct = _timed(client, direct_url, body, key, args.requests)
                served = _timed(client, f"{gateway}/v1/chat/completions", body, {}, args.requests)
        finally:
            server.terminate()
            server.wait(10)
    kind = "streamed" if args.stream else "plain"
    print(f"{args.requests} sequential {kind} requests, load average {os.getloadavg()[0]:.2f}")
    print(f"direct:  p50 {_p(direct, 50):.3f} ms  p99 {_p(direct, 99):.3f} ms")
    print(f"gateway: p50 {_p(served, 50):.3f} ms  p99 {_p(served, 99):.3f} ms")
    if OWN:
        own = OWN[100:]  # the warm-up's left out
        print(f"x-rmgr-overhead-ms (its own account): p50 {_p(own, 50):.3f} ms  p99 {_p(own, 99):.3f} ms")
    print(
        f"added:   p50 {_p(served, 50) - _p(direct, 50):.3f} ms  p99 {_p(served, 99) - _p(direct, 99):.3f} ms"
    )


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
