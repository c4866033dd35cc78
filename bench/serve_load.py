"""The gateway under load: ``rmgr serve`` against LiteLLM's proxy, sustained requests/s at 64 at once.

    python bench/serve_load.py [--runs 3] [--seconds 10] [--concurrency 64] [--generator auto]
    python bench/serve_load.py generate --url URL --seconds S --concurrency C --body JSON [--header K:V]

The first form prints a table; ``run.py`` runs the same as its ``serve`` rows. Three servers
answer the same non-streamed chat request, one after the other, round by round:

- the sandbox itself (``bench/upstream.py``, one provider called directly): the ceiling, since
  both gateways forward to it;
- ``rmgr serve`` (one worker, ``--no-auth`` on 127.0.0.1, a policy of one provider, the sandbox's
  ``openai-direct``, every attempt recorded in a fresh SQLite state);
- LiteLLM's proxy (``litellm --config CONFIG``, one worker, one ``openai/`` model whose
  ``api_base`` is the same sandbox provider; no master key, as ``--no-auth``).

A load generator in a process of its own keeps ``--concurrency`` keep-alive connections busy for
``--seconds``: ``wrk`` when it is on PATH (C, one thread, a POST body from a Lua script; it takes
the least CPU from the two cores the servers share), else the second form above, an aiohttp
client (``--generator aiohttp`` forces it). The figures are completed requests per second, each
gateway's as a ratio of LiteLLM's (issue 18's target: at least 3×), and the peak resident memory
of the ``rmgr serve`` worker over the whole run (``VmHWM`` of ``/proc/PID/status``; target under
150 MB), LiteLLM's beside it. A response other than 200 is counted and fails the row.

LiteLLM's proxy needs ``litellm[proxy]``, best in a venv of its own (``python3 -m venv
/work/litellm-venv && /work/litellm-venv/bin/pip install 'litellm[proxy]'``): it is found through
``LITELLM_PROXY`` (the path of its ``litellm`` executable), else ``litellm`` on PATH, and its rows
are skipped, with a message, when it is absent or does not start. It runs with the local price
list, no telemetry, no database and no ``.env`` (a folder of its own): ``strace -f -e connect``
shows it contacting 127.0.0.1 only. Nothing in this benchmark contacts anything but 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from harness import (
    LITELLM_ENV,
    Row,
    child_env,
    emit,
    litellm_proxy,
    median,
    rmgr_argv,
    run_worker,
    skipped_row,
    table,
)
from upstream import Upstream

PROVIDER = "openai-direct"
BODY: dict[str, Any] = {
    "model": "default",
    "messages": [{"role": "user", "content": "Is a monorepo right for two people?"}],
}
POLICY = f'version = 1\n[route]\ntargets = ["{PROVIDER}"]\n[breaker]\nfailure_threshold = 1000\n'
RSS_TARGET_MB = 150.0
LITELLM_START_S = 180.0
"""How long LiteLLM's proxy may take to answer its health check (it imports for 5–15 s)."""


def free_port() -> int:
    """A loopback port nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_ready(url: str, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    """Wait until ``url`` answers 200, or raise when the process ends or time runs out."""
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode} before it answered {url}")
        try:
            with opener.open(url, timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"did not answer {url} within {timeout_s:.0f} s")


def peak_rss_mb(pid: int) -> float:
    """The peak resident memory (``VmHWM``) of ``pid``'s worker: the process itself, or when it
    has children (a supervisor), the descendant with the most resident memory."""

    def descendants(parent: int) -> list[int]:
        found: list[int] = []
        for task in Path(f"/proc/{parent}/task").iterdir():
            for child in (task / "children").read_text().split():
                found += [int(child), *descendants(int(child))]
        return found

    def field(process: int, name: str) -> float:
        for line in Path(f"/proc/{process}/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1]) / 1024
        return 0.0

    worker = max(descendants(pid) or [pid], key=lambda p: field(p, "VmRSS"))
    return field(worker, "VmHWM")


class Server:
    """One server under load: where to send the request, and the process to measure."""

    def __init__(
        self, name: str, url: str, headers: Mapping[str, str], process: subprocess.Popen[bytes] | None
    ) -> None:
        self.name, self.url, self.headers, self.process = name, url, dict(headers), process


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def start_rmgr(stack: ExitStack, upstream: Upstream) -> Server:
    """``rmgr serve`` with one worker, no key, the one-provider policy, a fresh state folder."""
    home = stack.enter_context(tempfile.TemporaryDirectory())
    Path(home, "policy.toml").write_text(POLICY, encoding="utf-8")
    port = free_port()
    env = child_env({**upstream.env(), "RECURSIVEMANAGER_HOME": home})
    env.pop("RMGR_SERVE_KEYS", None)
    env.pop("RECURSIVEMANAGER_STATE", None)  # the SQLite state in ``home``, never a shared one
    argv = [*rmgr_argv(), "serve", "--no-auth", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--workers", "1", "--policy", "policy.toml"]
    process = subprocess.Popen(argv, cwd=home, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stack.callback(_stop, process)
    _wait_ready(f"http://127.0.0.1:{port}/health", process, 60)
    return Server("rmgr serve", f"http://127.0.0.1:{port}/v1/chat/completions", {}, process)


def start_litellm(stack: ExitStack, upstream: Upstream, executable: str) -> Server:
    """LiteLLM's proxy, one worker, one ``openai/`` model on the same sandbox provider."""
    folder = stack.enter_context(tempfile.TemporaryDirectory())
    config = Path(folder, "config.yaml")
    config.write_text(
        "model_list:\n"
        "  - model_name: default\n"
        "    litellm_params:\n"
        "      model: openai/gpt-4o\n"
        f"      api_base: {upstream.info['baseUrls'][PROVIDER]}\n"
        f"      api_key: {upstream.info['keys'][PROVIDER]}\n"
        "litellm_settings:\n"
        "  telemetry: false\n",
        encoding="utf-8",
    )
    port = free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "DATABASE_URL", "LITELLM_MASTER_KEY") and not key.endswith("_PROXY")
    }
    env.update(LITELLM_ENV)
    # The proxy refuses to start without a master key; rmgr serve runs with --no-auth, so this
    # runs without one too (both on 127.0.0.1), neither spending anything on keys.
    env["LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY"] = "true"
    env["NO_PROXY"] = "127.0.0.1,localhost"
    argv = [executable, "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--num_workers", "1", "--telemetry", "False"]
    log = Path(folder, "litellm.log")
    with log.open("wb") as out:
        process = subprocess.Popen(argv, cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT)
    stack.callback(_stop, process)
    try:
        _wait_ready(f"http://127.0.0.1:{port}/health/liveliness", process, LITELLM_START_S)
    except RuntimeError as exc:
        tail = log.read_text(encoding="utf-8", errors="replace")[-1500:]
        raise RuntimeError(f"LiteLLM's proxy {exc}:\n{tail}") from None
    return Server("LiteLLM proxy", f"http://127.0.0.1:{port}/v1/chat/completions", {}, process)


def direct(upstream: Upstream) -> Server:
    """The sandbox provider itself (its process is the upstream's, not measured for memory)."""
    key = upstream.info["keys"][PROVIDER]
    return Server(
        "sandbox, directly", upstream.info["urls"][PROVIDER], {"authorization": f"Bearer {key}"}, None
    )


def _ms(text: str) -> float:
    """A wrk duration (``812.5us``, ``3.2ms``, ``1.05s``, ``2m``) in milliseconds."""
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[match.group(2)]
    return float(match.group(1)) * scale


def run_wrk(server: Server, seconds: float, concurrency: int) -> dict[str, float]:
    """``wrk`` on ``server``: one thread, ``concurrency`` connections, the POST body from Lua."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False, encoding="utf-8") as script:
        script.write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n')
        for name, value in server.headers.items():
            script.write(f"wrk.headers[{json.dumps(name)}] = {json.dumps(value)}\n")
        script.write(f"wrk.body = {json.dumps(json.dumps(BODY))}\n")
    try:
        argv = ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--timeout", "60s"]
        argv += ["--latency", "-s", script.name, server.url]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 120, check=False)
    finally:
        os.unlink(script.name)
    out = done.stdout
    if done.returncode != 0 or "requests in" not in out:
        raise RuntimeError(f"wrk failed (exit {done.returncode}):\n{out}\n{done.stderr}")
    total = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    assert total is not None
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.MULTILINE))
    return {
        "requests": int(total.group(1)),
        "wall_s": _ms(total.group(2) + total.group(3)) / 1000,
        "failed": (int(bad.group(1)) if bad else 0) + (sum(map(int, errors.groups())) if errors else 0),
        "p50_ms": _ms(percentiles["50"]),
        "p99_ms": _ms(percentiles["99"]),
    }


def run_aiohttp(server: Server, seconds: float, concurrency: int) -> dict[str, float]:
    """The aiohttp load generator (``generate``) on ``server``, in a process of its own."""
    args = ["generate", "--url", server.url, "--seconds", str(seconds), "--concurrency", str(concurrency)]
    args += ["--body", json.dumps(BODY)]
    for name, value in server.headers.items():
        args += ["--header", f"{name}:{value}"]
    return run_worker("serve_load.py", args, timeout_s=seconds + 120)


async def _generate(
    url: str, seconds: float, concurrency: int, body: bytes, headers: dict[str, str]
) -> dict[str, float]:
    import aiohttp

    headers = {"content-type": "application/json", **headers}
    connector = aiohttp.TCPConnector(limit=concurrency)
    latencies: list[float] = []
    failed = 0
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        started = time.perf_counter()
        deadline = started + seconds

        async def worker() -> None:
            nonlocal failed
            while (begun := time.perf_counter()) < deadline:
                try:
                    async with session.post(url, data=body, headers=headers) as reply:
                        await reply.read()
                        ok = reply.status == 200
                except aiohttp.ClientError:
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - begun)
                else:
                    failed += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": len(latencies) + failed,
        "wall_s": wall,
        "failed": failed,
        "p50_ms": median(latencies) * 1000 if latencies else 0.0,
        "p99_ms": latencies[round(0.99 * (len(latencies) - 1))] * 1000 if latencies else 0.0,
    }


def generator_name(choice: str) -> str:
    """The load generator ``choice`` (auto, wrk, aiohttp) means on this machine."""
    if choice == "auto":
        return "wrk" if shutil.which("wrk") else "aiohttp"
    if choice == "wrk" and not shutil.which("wrk"):
        raise RuntimeError("wrk is not on PATH (apt-get install -y wrk), use --generator aiohttp")
    return choice


def bench(runs: int, seconds: float, concurrency: int = 64, generator: str = "auto") -> list[Row]:
    """Requests/s of the sandbox, ``rmgr serve`` and LiteLLM's proxy under the same load, rounds
    interleaved, and the peak memory of each gateway's worker."""
    tool = generator_name(generator)
    load = run_wrk if tool == "wrk" else run_aiohttp
    executable = litellm_proxy()
    why_not: str | None = (
        None
        if executable
        else (
            "LiteLLM's proxy not found: set LITELLM_PROXY to the litellm executable of a "
            "litellm[proxy] install, or put litellm on PATH"
        )
    )
    rate: dict[str, list[float]] = {}
    failed: dict[str, int] = {}
    p99: dict[str, list[float]] = {}
    rss: dict[str, float] = {}
    with ExitStack() as stack:
        upstream = stack.enter_context(Upstream())
        servers = [direct(upstream), start_rmgr(stack, upstream)]
        if executable:
            try:
                servers.append(start_litellm(stack, upstream, executable))
            except RuntimeError as exc:
                why_not = str(exc).splitlines()[0]
                print(exc, file=sys.stderr)
        for server in servers:  # warm up: connections, caches, the proxy's lazy imports
            load(server, min(seconds, 2.0), concurrency)
            rate[server.name], p99[server.name], failed[server.name] = [], [], 0
        for _ in range(runs):
            for server in servers:
                result = load(server, seconds, concurrency)
                rate[server.name].append((result["requests"] - result["failed"]) / result["wall_s"])
                p99[server.name].append(result["p99_ms"])
                failed[server.name] += int(result["failed"])
        for server in servers:
            if server.process is not None:
                rss[server.name] = peak_rss_mb(server.process.pid)
    at = f"concurrency {concurrency}, {seconds:g} s a run, load by {tool}"
    rmgr, sandbox = rate["rmgr serve"], rate["sandbox, directly"]
    rows = [
        Row(
            name=f"gateway load: the sandbox called directly ({at})",
            unit="req/s",
            samples=sandbox,
            decimals=0,
            note="the ceiling: both gateways forward every request to this server",
        ),
        Row(
            name="gateway load: rmgr serve, 1 worker",
            unit="req/s",
            samples=rmgr,
            baseline_name="the sandbox directly",
            baseline=sandbox,
            ratio=median(rmgr) / median(sandbox),
            ratio_label="of direct",
            decimals=0,
            note=(
                f"non-streamed POST /v1/chat/completions, attempts recorded (SQLite); p99 latency "
                f"{median(p99['rmgr serve']):.1f} ms; responses other than 200: {failed['rmgr serve']}"
            ),
            check=(lambda r: failed["rmgr serve"] == 0),
            target="every response 200",
        ),
    ]
    if why_not is not None:
        rows.append(skipped_row("gateway load: rmgr serve vs LiteLLM's proxy", why_not, "≥ 3× LiteLLM"))
    else:
        litellm = rate["LiteLLM proxy"]
        rows.append(
            Row(
                name="gateway load: rmgr serve vs LiteLLM's proxy (1 worker)",
                unit="req/s",
                samples=rmgr,
                baseline_name="LiteLLM proxy",
                baseline=litellm,
                ratio=median(rmgr) / median(litellm),
                ratio_label="of LiteLLM",
                target="≥ 3× LiteLLM",
                check=lambda r: (r.ratio or 0.0) >= 3.0,
                decimals=0,
                note=(
                    f"LiteLLM p99 latency {median(p99['LiteLLM proxy']):.1f} ms; responses other than 200: "
                    f"{failed['LiteLLM proxy']}"
                ),
            )
        )
    rows.append(
        Row(
            name="gateway load: peak RSS of the rmgr serve worker",
            unit="MB",
            samples=[rss["rmgr serve"]],
            baseline_name=None if why_not is not None else "LiteLLM proxy's worker",
            baseline=None if why_not is not None else [rss["LiteLLM proxy"]],
            target=f"< {RSS_TARGET_MB:g} MB",
            check=lambda r: (r.value or 0.0) < RSS_TARGET_MB,
            note="VmHWM of /proc/PID/status after every run: the peak over start-up, warm-up and load",
        )
    )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["generate"]:
        parser = argparse.ArgumentParser(
            prog="serve_load.py generate", description="the aiohttp load generator"
        )
        parser.add_argument("--url", required=True)
        parser.add_argument("--seconds", type=float, required=True)
        parser.add_argument("--concurrency", type=int, required=True)
        parser.add_argument("--body", required=True, help="the JSON body to POST")
        parser.add_argument("--header", action="append", default=[], help="NAME:VALUE")
        args = parser.parse_args(arguments[1:])
        headers = dict(item.split(":", 1) for item in args.header)
        emit(asyncio.run(_generate(args.url, args.seconds, args.concurrency, args.body.encode(), headers)))
        return 0
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--generator", choices=["auto", "wrk", "aiohttp"], default="auto")
    args = parser.parse_args(arguments)
    rows = bench(args.runs, args.seconds, args.concurrency, args.generator)
    print(table(rows))
    return 1 if any(row.met is False for row in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
