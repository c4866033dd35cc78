"""Throughput, CPU and latency of routed completions against the fastest bare clients Python has.

    python bench/throughput.py CONTENDER --upstream JSON [--calls 2000] [--concurrency 32]

is one measurement in a fresh interpreter (``run.py`` starts it): CONTENDER makes ``--calls``
chat completions against the local server, ``--concurrency`` at a time, after one warm-up call
per connection, and prints the wall time and the process CPU time they took, and the median and
99th percentile of each call's latency (and, streamed, of its time to the first token).

The baseline is **bare aiohttp**, the fastest well-kept HTTP client for Python (issue 19: bare
httpx, the former baseline, is slower than the routed path itself, so a ratio against it said
nothing). Contenders, all with the same request, the same server and one connection pool each:

- ``aiohttp``: ``aiohttp.ClientSession.post`` to the primary, the JSON parsed; nothing routed.
- ``h11``: a raw HTTP/1.1 client of about forty lines, h11 over asyncio streams, one keep-alive
  connection per call in flight: the floor of what Python does per request.
- ``httpx``: ``httpx.AsyncClient.post``, its own pool (the limits ``rmcli.api`` used to give).
- ``routed``: ``rmcli.api.Client`` with a two-target policy (the primary, then one fallback):
  the policy decoded once, the state (SQLite) open, every attempt recorded when sent and settled
  when it ends, circuit breakers on. ``--home`` is the state's folder, so that ``run.py`` can
  count afterwards, with ``rmgr usage``, that every call made was recorded.
- ``routed-unrecorded``: the same with ``record=False`` (no state, no breakers).
- ``litellm``: ``litellm.Router.acompletion`` with the same two deployments (``openai/`` models
  with ``api_base`` on 127.0.0.1) and the primary's fallback to the second; run by this
  interpreter when LiteLLM is installed here, else by the one of LiteLLM's proxy venv
  (``LITELLM_PROXY``, see ``serve_load.py``), else skipped.
- ``aiohttp-stream`` and ``routed-stream``: streamed calls (``"stream": true``, server-sent
  events, every event parsed), bare aiohttp and ``rmcli.api.Client.ask(stream=True)`` (the
  text reaches ``Hooks.text`` as it arrives); the first token is the first non-empty text.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Coroutine, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from harness import (
    LITELLM_ENV,
    Row,
    child_env,
    emit,
    litellm_missing,
    litellm_python,
    median,
    rmgr_argv,
    run_worker,
    skipped_row,
)
from upstream import Upstream

PRIMARY = "glm-direct"
FALLBACK = "openai-direct"
MODEL = "glm-4.7"
PROMPT = "Should we adopt a message queue for our background jobs?"
MAX_TOKENS = 256

POLICY = f"""\
version = 1
[route]
targets = ["{PRIMARY}", "{FALLBACK}"]
[retry]
max_attempts = 1
"""

CONTENDERS = (
    "aiohttp",
    "h11",
    "httpx",
    "routed",
    "routed-unrecorded",
    "litellm",
    "aiohttp-stream",
    "routed-stream",
)
RECORDED = frozenset({"routed", "routed-stream"})
"""The contenders that record their attempts, checked afterwards for calls lost."""

Call = Callable[[], Coroutine[Any, Any, float | None]]
"""One call; it returns the seconds from its start to the first token when it streams, else None."""


def _payload(stream: bool) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": MAX_TOKENS,
        "stream": stream,
    }


def _percentiles(values: list[float]) -> tuple[float, float]:
    """The median and the 99th percentile of ``values``, in milliseconds."""
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return median(ordered) * 1000, p99 * 1000


async def _drive(call: Call, calls: int, concurrency: int) -> dict[str, float]:
    """``calls`` calls, ``concurrency`` at a time, after one warm-up call per connection: wall
    time, process CPU time and the latency percentiles of the measured calls."""
    import anyio

    async with anyio.create_task_group() as tg:  # one warm-up call per connection
        for _ in range(concurrency):
            tg.start_soon(call)
    left = calls
    latencies: list[float] = []
    first_tokens: list[float] = []

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            started = time.perf_counter()
            first = await call()
            latencies.append(time.perf_counter() - started)
            if first is not None:
                first_tokens.append(first)

    cpu, wall = time.process_time(), time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(worker)
    wall_s, cpu_s = time.perf_counter() - wall, time.process_time() - cpu
    p50, p99 = _percentiles(latencies)
    result = {
        "calls": calls,
        "made": calls + concurrency,
        "wall_s": wall_s,
        "cpu_s": cpu_s,
        "p50_ms": p50,
        "p99_ms": p99,
    }
    if first_tokens:
        result["ttft_p50_ms"], result["ttft_p99_ms"] = _percentiles(first_tokens)
    return result


def _answer(body: bytes) -> None:
    """Parse a non-streamed reply as every bare contender does, and check it has an answer."""
    if not json.loads(body)["choices"][0]["message"]["content"]:
        raise RuntimeError("empty answer")


async def _aiohttp(info: dict[str, Any], calls: int, concurrency: int, stream: bool) -> dict[str, float]:
    import aiohttp

    url, key = info["urls"][PRIMARY], info["keys"][PRIMARY]
    headers = {"authorization": f"Bearer {key}"}
    payload = _payload(stream)
    connector = aiohttp.TCPConnector(limit=100)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=None)
    ) as session:

        async def plain() -> None:
            async with session.post(url, json=payload, headers=headers) as response:
                response.raise_for_status()
                _answer(await response.read())

        async def streamed() -> float:
            started = time.perf_counter()
            first: float | None = None
            finished = False
            async with session.post(url, json=payload, headers=headers) as response:
                response.raise_for_status()
                async for line in response.content:
                    if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
                        continue
                    choice = json.loads(line[6:])["choices"][0]
                    if first is None and choice["delta"].get("content"):
                        first = time.perf_counter() - started
                    finished = finished or choice.get("finish_reason") == "stop"
            if first is None or not finished:
                raise RuntimeError("the stream ended without an answer")
            return first

        return await _drive(streamed if stream else plain, calls, concurrency)


class H11Connection:
    """One keep-alive HTTP/1.1 connection: h11 frames and parses, asyncio streams carry the bytes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        import h11

        self.reader, self.writer, self.h11 = reader, writer, h11.Connection(h11.CLIENT)

    async def post(self, target: str, headers: list[tuple[bytes, bytes]], body: bytes) -> tuple[int, bytes]:
        """Send one request and read its whole reply: the status and the body."""
        import h11

        conn = self.h11
        request = h11.Request(method="POST", target=target, headers=headers)
        self.writer.write(conn.send(request) + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))
        status, chunks = 0, []
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await self.reader.read(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                chunks.append(event.data)
            elif isinstance(event, h11.EndOfMessage):
                conn.start_next_cycle()
                return status, b"".join(chunks)
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("the server closed the connection")


async def _h11(info: dict[str, Any], calls: int, concurrency: int) -> dict[str, float]:
    url = urlsplit(info["urls"][PRIMARY])
    host, port = url.hostname or "127.0.0.1", url.port or 80
    body = json.dumps(_payload(False)).encode()
    headers = [
        (b"host", f"{host}:{port}".encode()),
        (b"authorization", f"Bearer {info['keys'][PRIMARY]}".encode()),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    idle: list[H11Connection] = []

    async def call() -> None:
        connection = idle.pop() if idle else H11Connection(*await asyncio.open_connection(host, port))
        status, reply = await connection.post(url.path, headers, body)
        if status != 200:
            raise RuntimeError(f"status {status}")
        idle.append(connection)
        _answer(reply)

    try:
        return await _drive(call, calls, concurrency)
    finally:
        for connection in idle:
            connection.writer.close()


async def _httpx(info: dict[str, Any], calls: int, concurrency: int) -> dict[str, float]:
    import httpx

    url, key = info["urls"][PRIMARY], info["keys"][PRIMARY]
    payload = _payload(False)
    headers = {"authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=32)
    async with httpx.AsyncClient(timeout=None, limits=limits) as client:

        async def call() -> None:
            response = await client.post(url, json=payload, headers=headers)
            response.raise_for_status()
            _answer(response.content)

        return await _drive(call, calls, concurrency)


async def _routed(
    info: dict[str, Any], calls: int, concurrency: int, record: bool, stream: bool, home: str | None
) -> dict[str, float]:
    from rmcli import api
    from rmcli.hooks import Hooks

    with tempfile.TemporaryDirectory() as scratch:
        state_home = Path(home or scratch)
        async with api.Client(POLICY, env=info["env"], state_home=state_home, record=record) as client:

            async def plain() -> None:
                outcome = await client.ask(PROMPT, max_tokens=MAX_TOKENS, stream=False)
                if outcome.completion is None or outcome.provider != PRIMARY:
                    raise RuntimeError(f"routed call failed: {outcome.error}")

            async def streamed() -> float:
                started = time.perf_counter()
                first: list[float] = []

                def text(piece: str) -> None:
                    if piece and not first:
                        first.append(time.perf_counter() - started)

                outcome = await client.ask(PROMPT, max_tokens=MAX_TOKENS, stream=True, hooks=Hooks(text=text))
                if outcome.completion is None or outcome.provider != PRIMARY or not first:
                    raise RuntimeError(f"routed streamed call failed: {outcome.error}")
                return first[0]

            return await _drive(streamed if stream else plain, calls, concurrency)


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
        for name, provider, model in (("primary", PRIMARY, MODEL), ("fallback", FALLBACK, "gpt-4o"))
    ]
    router = Router(model_list=deployments, fallbacks=[{"primary": ["fallback"]}])
    messages = [{"role": "user", "content": PROMPT}]

    async def call() -> None:
        response = await router.acompletion(model="primary", messages=messages, max_tokens=MAX_TOKENS)
        if not response.choices[0].message.content:
            raise RuntimeError("empty answer")

    return await _drive(call, calls, concurrency)


def measure(
    info: dict[str, Any], contender: str, calls: int, concurrency: int, home: str | None = None
) -> dict[str, float]:
    """One contender's run in this process (on anyio's asyncio backend: aiohttp needs asyncio)."""
    import anyio

    match contender:
        case "aiohttp":
            return anyio.run(_aiohttp, info, calls, concurrency, False)
        case "aiohttp-stream":
            return anyio.run(_aiohttp, info, calls, concurrency, True)
        case "h11":
            return anyio.run(_h11, info, calls, concurrency)
        case "httpx":
            return anyio.run(_httpx, info, calls, concurrency)
        case "routed":
            return anyio.run(_routed, info, calls, concurrency, True, False, home)
        case "routed-stream":
            return anyio.run(_routed, info, calls, concurrency, True, True, home)
        case "routed-unrecorded":
            return anyio.run(_routed, info, calls, concurrency, False, False, home)
        case "litellm":
            return anyio.run(_litellm, info, calls, concurrency)
    raise ValueError(f"unknown contender {contender!r}")


def recorded_calls(home: str) -> dict[str, int]:
    """What ``rmgr usage`` counts in the state under ``home``, summed over providers: requests,
    failures and cancelled ones, read the way a user reads them (a process of its own)."""
    done = subprocess.run(
        [*rmgr_argv(), "usage", "--since", "all", "--format", "json"],
        env=child_env({"RECURSIVEMANAGER_HOME": home}),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"rmgr usage failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    groups: list[dict[str, Any]] = json.loads(done.stdout)
    return {
        field: sum(int(group.get(field) or 0) for group in groups)
        for field in ("requests", "failures", "cancelled")
    }


def run_contender(
    upstream: Upstream, contender: str, calls: int, concurrency: int, litellm_python: str | None = None
) -> dict[str, Any]:
    """One contender's run in a fresh interpreter, with ``server_cpu_s``, the CPU time the server
    spent meanwhile (warm-up included); for those that record, ``lost`` is the calls
    made (warm-up included) minus the successful requests ``rmgr usage`` counts afterwards (a
    failed or cancelled one is not counted as a call made), ``counted`` all it counts."""
    args = [contender, "--upstream", upstream.json_arg(), "--calls", str(calls)]
    args += ["--concurrency", str(concurrency)]
    server_cpu = upstream.cpu_s()
    if contender not in RECORDED:
        python = litellm_python if contender == "litellm" else None
        result = run_worker("throughput.py", args, env=LITELLM_ENV if python else None, python=python)
        result["server_cpu_s"] = upstream.cpu_s() - server_cpu
        return result
    with tempfile.TemporaryDirectory() as home:
        result = run_worker("throughput.py", [*args, "--home", home])
        result["server_cpu_s"] = upstream.cpu_s() - server_cpu
        usage = recorded_calls(home)
    ok = usage["requests"] - usage["failures"] - usage["cancelled"]
    result["counted"] = usage["requests"]
    result["lost"] = int(result["made"]) - ok
    return result


def _ratio_row(
    name: str, samples: list[float], base: list[float], *, target: float | None = None, note: str = ""
) -> Row:
    """A calls/s row as a ratio of bare aiohttp's, with an optional minimum ratio as its target."""
    return Row(
        name=name,
        unit="calls/s",
        samples=samples,
        baseline_name="bare aiohttp",
        baseline=base,
        ratio=median(samples) / median(base),
        ratio_label="of aiohttp",
        target="" if target is None else f"≥ {target:.2f}× bare aiohttp",
        check=None if target is None else (lambda r: (r.ratio or 0.0) >= target),
        decimals=0,
        note=note,
    )


def _lost_row(name: str, lost: list[float], counted: list[float], made: list[float]) -> Row:
    return Row(
        name=name,
        unit="calls",
        samples=lost,
        target="0 in every run",
        check=lambda r: all(value == 0 for value in r.samples),
        decimals=0,
        note=(
            "calls made (warm-up included) minus the successful requests `rmgr usage` counts in the run's "
            f"state afterwards; per run made {', '.join(f'{m:,.0f}' for m in made)}, "
            f"counted {', '.join(f'{c:,.0f}' for c in counted)}"
        ),
    )


def _server_row(name: str, server_ms: list[float], rate: list[float]) -> Row:
    """The sandbox's CPU per call while the baseline ran, and how busy that kept it: near one
    whole core, the server and not the client is what limited the baseline's calls/s."""
    busy = median(server_ms) * median(rate) / 1000
    return Row(
        name=name,
        unit="ms",
        samples=server_ms,
        decimals=3,
        note=(
            f"its process's CPU time over the calls (warm-up included); at bare aiohttp's rate it was "
            f"busy {busy:.0%} of one core (near 100 %: the server, not the client, limited the baseline)"
        ),
    )


def _difference(routed: list[float], bare: list[float]) -> list[float]:
    return [r - b for r, b in zip(routed, bare, strict=True)]


def aiohttp_missing() -> str | None:
    """Why the baseline cannot run here, or None when aiohttp is installed."""
    try:
        metadata.version("aiohttp")
    except metadata.PackageNotFoundError:
        return "aiohttp, the baseline, is not installed (pip install -e '.[bench]')"
    return None


def bench(runs: int, calls: int, concurrency: int, sequential_calls: int) -> list[Row]:
    """Non-streamed throughput at ``concurrency`` of every contender as a ratio of bare aiohttp's,
    CPU per call, and one call at a time the routed latency and CPU over bare aiohttp's; every
    contender once per round, each in a fresh process, rounds interleaved."""
    if (why := aiohttp_missing()) is not None:
        return [skipped_row("routed via rmcli.api.Client, attempts recorded", why, "≥ 0.35× bare aiohttp")]
    python = litellm_python()  # this interpreter, or the one of LiteLLM's proxy venv
    missing = litellm_missing() if python is None else None
    contenders = ["aiohttp", "h11", "httpx", "routed", "routed-unrecorded"]
    contenders += [] if missing else ["litellm"]
    rate: dict[str, list[float]] = {c: [] for c in contenders}
    cpu_ms: dict[str, list[float]] = {c: [] for c in contenders}
    server_ms: list[float] = []  # the sandbox's CPU per call during bare aiohttp's runs
    seq: dict[str, dict[str, list[float]]] = {c: {"p50": [], "cpu": []} for c in ("aiohttp", "routed")}
    lost: dict[str, list[float]] = {"lost": [], "counted": [], "made": []}
    with Upstream() as upstream:
        for _ in range(runs):
            for contender in contenders:
                result = run_contender(upstream, contender, calls, concurrency, python)
                rate[contender].append(result["calls"] / result["wall_s"])
                cpu_ms[contender].append(result["cpu_s"] / result["calls"] * 1000)
                if contender == "aiohttp":
                    server_ms.append(result["server_cpu_s"] / result["made"] * 1000)
                if "lost" in result:
                    for key in lost:
                        lost[key].append(result[key])
            for contender in seq:
                result = run_contender(upstream, contender, sequential_calls, 1)
                seq[contender]["p50"].append(result["p50_ms"])
                seq[contender]["cpu"].append(result["cpu_s"] / result["calls"] * 1000)
                if "lost" in result:
                    for key in lost:
                        lost[key].append(result[key])
    base = rate["aiohttp"]
    at = f"{calls:,} calls at concurrency {concurrency}"
    rows = [
        Row(name=f"bare aiohttp, the baseline ({at})", unit="calls/s", samples=base, decimals=0),
        _ratio_row("raw h11 client over asyncio streams (the floor)", rate["h11"], base),
        _ratio_row("bare httpx.AsyncClient, its own pool", rate["httpx"], base),
        _ratio_row(
            "routed via rmcli.api.Client, attempts recorded",
            rate["routed"],
            base,
            target=0.35,
            note="two targets, every attempt recorded in the SQLite state, circuit breakers on, non-streamed",
        ),
        _ratio_row("routed via rmcli.api.Client(record=False)", rate["routed-unrecorded"], base),
    ]
    if missing:
        rows.append(skipped_row("routed vs LiteLLM Router.acompletion", missing, "≥ 3× LiteLLM"))
    else:
        rows.append(_ratio_row("LiteLLM Router.acompletion (1 fallback)", rate["litellm"], base))
        rows.append(
            Row(
                name="routed vs LiteLLM Router.acompletion",
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
    rows.append(
        Row(
            name=f"CPU per routed call (concurrency {concurrency})",
            unit="ms",
            samples=cpu_ms["routed"],
            baseline_name="bare aiohttp",
            baseline=cpu_ms["aiohttp"],
            ratio=median(cpu_ms["routed"]) / median(cpu_ms["aiohttp"]),
            ratio_label="of aiohttp",
            target="≤ 0.2 ms",
            check=lambda r: (r.value or 0.0) <= 0.2,
            decimals=3,
            note="process CPU time (all threads) / calls",
        )
    )
    for contender, label in (("h11", "raw h11"), ("httpx", "bare httpx"), ("litellm", "LiteLLM")):
        if contender in cpu_ms:
            rows.append(
                Row(
                    name=f"CPU per call, {label} (concurrency {concurrency})",
                    unit="ms",
                    samples=cpu_ms[contender],
                    baseline_name="bare aiohttp",
                    baseline=cpu_ms["aiohttp"],
                    ratio=median(cpu_ms[contender]) / median(cpu_ms["aiohttp"]),
                    ratio_label="of aiohttp",
                    decimals=3,
                )
            )
    rows.append(_server_row("the server's CPU per call (during bare aiohttp's runs)", server_ms, base))
    one = f"one at a time, {sequential_calls:,} calls"
    rows.append(
        Row(
            name=f"routed latency over bare aiohttp, median ({one})",
            unit="ms",
            samples=_difference(seq["routed"]["p50"], seq["aiohttp"]["p50"]),
            baseline_name="bare aiohttp, median latency",
            baseline=seq["aiohttp"]["p50"],
            target="≤ 0.3 ms",
            check=lambda r: (r.value if r.value is not None else 1.0) <= 0.3,
            decimals=3,
            note="median latency of the routed calls minus that of bare aiohttp's, paired by round",
        )
    )
    rows.append(
        Row(
            name=f"CPU per routed call above bare aiohttp ({one})",
            unit="ms",
            samples=_difference(seq["routed"]["cpu"], seq["aiohttp"]["cpu"]),
            baseline_name="bare aiohttp, CPU per call",
            baseline=seq["aiohttp"]["cpu"],
            decimals=3,
            note="process CPU time / calls, routed minus bare aiohttp, paired by round",
        )
    )
    rows.append(
        _lost_row(
            "nothing lost: routed calls missing from rmgr usage", lost["lost"], lost["counted"], lost["made"]
        )
    )
    return rows


def stream_bench(runs: int, calls: int, concurrency: int, sequential_calls: int) -> list[Row]:
    """Streamed calls: calls/s at ``concurrency``, routed as a ratio of bare aiohttp's, and one
    call at a time the time to the first token and to the whole answer of each; rounds
    interleaved, each contender in a fresh process."""
    if (why := aiohttp_missing()) is not None:
        return [skipped_row("streamed: routed via rmcli.api.Client", why, "≥ 0.35× bare aiohttp")]
    contenders = ("aiohttp-stream", "routed-stream")
    rate: dict[str, list[float]] = {c: [] for c in contenders}
    cpu_ms: dict[str, list[float]] = {c: [] for c in contenders}
    ttft: dict[str, list[float]] = {c: [] for c in contenders}
    whole: dict[str, list[float]] = {c: [] for c in contenders}
    lost: dict[str, list[float]] = {"lost": [], "counted": [], "made": []}
    server_ms: list[float] = []  # the sandbox's CPU per call during bare aiohttp's runs
    with Upstream() as upstream:
        for _ in range(runs):
            for contender in contenders:
                for n, at_once in ((calls, concurrency), (sequential_calls, 1)):
                    result = run_contender(upstream, contender, n, at_once)
                    if at_once == 1:
                        ttft[contender].append(result["ttft_p50_ms"])
                        whole[contender].append(result["p50_ms"])
                    else:
                        rate[contender].append(result["calls"] / result["wall_s"])
                        cpu_ms[contender].append(result["cpu_s"] / result["calls"] * 1000)
                        if contender == "aiohttp-stream":
                            server_ms.append(result["server_cpu_s"] / result["made"] * 1000)
                    if "lost" in result:
                        for key in lost:
                            lost[key].append(result[key])
    base = rate["aiohttp-stream"]
    one = f"one at a time, {sequential_calls:,} calls"
    rows = [
        Row(
            name=f"streamed: bare aiohttp ({calls:,} calls at concurrency {concurrency})",
            unit="calls/s",
            samples=base,
            decimals=0,
        ),
        _ratio_row(
            "streamed: routed via rmcli.api.Client, attempts recorded",
            rate["routed-stream"],
            base,
            target=0.35,
            note="ask(stream=True), the text to Hooks.text as it arrives; bare aiohttp parses each event too",
        ),
        Row(
            name=f"streamed: CPU per routed call (concurrency {concurrency})",
            unit="ms",
            samples=cpu_ms["routed-stream"],
            baseline_name="bare aiohttp",
            baseline=cpu_ms["aiohttp-stream"],
            ratio=median(cpu_ms["routed-stream"]) / median(cpu_ms["aiohttp-stream"]),
            ratio_label="of aiohttp",
            decimals=3,
        ),
        _server_row("streamed: the server's CPU per call (during bare aiohttp's runs)", server_ms, base),
    ]
    for what, figures in (("first token", ttft), ("whole answer", whole)):
        routed, bare = figures["routed-stream"], figures["aiohttp-stream"]
        rows.append(
            Row(
                name=f"streamed: routed {what} over bare aiohttp, median ({one})",
                unit="ms",
                samples=_difference(routed, bare),
                baseline_name=f"bare aiohttp, {what}",
                baseline=bare,
                decimals=3,
                note=f"median time to the {what} of routed calls minus bare aiohttp's, paired by round",
            )
        )
    rows.append(
        _lost_row(
            "streamed: nothing lost (routed calls missing from rmgr usage)",
            lost["lost"],
            lost["counted"],
            lost["made"],
        )
    )
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("contender", choices=CONTENDERS)
    parser.add_argument("--upstream", required=True, help="the JSON line bench/upstream.py printed")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--home", default=None, help="the state's folder (routed; default: a temporary one)")
    args = parser.parse_args(argv)
    emit(measure(json.loads(args.upstream), args.contender, args.calls, args.concurrency, args.home))


if __name__ == "__main__":
    main()
