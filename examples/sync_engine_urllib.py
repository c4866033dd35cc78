"""The pure core driven by your own I/O: a synchronous loop over the standard library's urllib.

    python examples/sync_engine_urllib.py

The engine (rmcore) decides; this loop does: it sends each attempt with urllib.request, feeds back
what happened, sleeps when the engine asks for a backoff. No anyio, no httpx in the loop; only the
sandbox this example starts for itself (in a background thread) uses them.
"""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

from returns.result import Success

import rmcore

POLICY = """
version = 1
[route]
targets = ["aiceo-gateway", "glm-direct"]
[retry]
backoff_initial_s = 0.05
"""


def send(http: rmcore.HttpRequest, timeout_s: float) -> tuple[int, dict[str, str], bytes]:
    """One HTTP exchange with urllib: status, lower-cased headers, body (status 0: no response)."""
    request = urllib.request.Request(
        http.url, data=http.body or None, headers=dict(http.headers), method=http.method
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as reply:
            return reply.status, {k.lower(): v for k, v in reply.headers.items()}, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()
    except (urllib.error.URLError, OSError):
        return 0, {}, b""


def run(env: dict[str, str], prompt: str) -> rmcore.RunOutcome:
    """Route ``prompt`` by POLICY, one attempt at a time."""
    builtins = rmcore.builtin_providers(env)
    policy = rmcore.decode_policy(POLICY, "policy.toml", builtins).unwrap()
    plan = rmcore.build_plan(policy, rmcore.resolve_providers(policy, builtins), breakers=False).unwrap()
    request = rmcore.ChatRequest.ask(prompt, stream=False)
    engine = rmcore.Engine(plan, request, seed=42, epoch_s=time.time())
    actions = list(engine.start(time.monotonic()))
    while True:
        while actions:
            action = actions.pop(0)
            match action:
                case rmcore.Finish(outcome=outcome):
                    return outcome
                case rmcore.FailedOver(from_provider=a, to_provider=b, error=e):
                    print(f"  {a} failed ({e.kind.value}); trying {b}")
                case rmcore.StartAttempt(attempt_id=attempt, provider=spec, timeout_s=timeout):
                    http = rmcore.build_request(spec, request, env.get(spec.key_env or ""))
                    status, headers, body = send(http, timeout)
                    now = time.monotonic()
                    event: rmcore.Event
                    if status == 0:
                        error = rmcore.ProviderError(kind=rmcore.ErrorKind.CONNECTION, message="no response")
                        event = rmcore.AttemptFailed(attempt_id=attempt, at=now, error=error)
                    else:
                        result = rmcore.parse_response(spec, status, headers, body, time.time())
                        if isinstance(result, Success):
                            event = rmcore.AttemptSucceeded(
                                attempt_id=attempt, at=now, completion=result.unwrap(), status=status
                            )
                        else:
                            event = rmcore.AttemptFailed(attempt_id=attempt, at=now, error=result.failure())
                    actions += engine.handle(event)
        wake = engine.next_wakeup()  # a backoff ends, or the deadline: sleep until then
        if wake is not None:
            time.sleep(max(wake - time.monotonic(), 0.0))
        actions += engine.handle(rmcore.TimePassed(at=time.monotonic()))


@contextmanager
def sandbox_in_a_thread(modes: dict[str, str]) -> Iterator[dict[str, str]]:
    """The local simulated providers, on an event loop of their own; yields their environment."""
    from rmcli.sandbox import Sandbox

    ready: dict[str, str] = {}
    started, stop = threading.Event(), threading.Event()

    async def serve() -> None:
        async with Sandbox(modes=modes) as box:
            ready.update(box.env())
            started.set()
            while not stop.is_set():
                await asyncio.sleep(0.02)

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    started.wait(10)
    try:
        yield ready
    finally:
        stop.set()
        thread.join(10)


def main() -> None:
    with sandbox_in_a_thread({"aiceo-gateway": "down"}) as env:
        outcome = run(env, "Should we migrate to Kubernetes?")
    print(
        f"answered by {outcome.provider} after {len(outcome.attempts)} attempts, cost ${outcome.cost_usd:.6f}"
    )


if __name__ == "__main__":
    main()
