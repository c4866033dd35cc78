"""``rmgr serve`` against the sandbox, used by the official ``openai`` SDK as any client would:
answers plain and streamed, tool calls, the model list, keys, errors in OpenAI's shape, and the
conduct under faults (fail-over invisible before the first text, a cut stream never a success).

The gateway runs in this process (uvicorn in a thread, on a free loopback port) and the sandbox
in a blocking portal, so that the whole file takes a few seconds."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
import uvicorn
from anyio.from_thread import BlockingPortal, start_blocking_portal

from rmcli import api
from rmcli.sandbox import Sandbox
from rmcli.serve.app import Gateway, Settings
from rmcli.serve.keys import ClientKey
from rmcore.usage import AttemptRow
from tests.cli.helpers import RMGR, Cli, clean_env, closed_url, write_policy

KEY = "sk-client-only-7f3a9c"
"""The client's key: it must never reach a provider, a log or the state."""

POLICY = """version = 1
[route]
targets = ["openai-direct", "anthropic-direct"]
[routes.solo]
targets = ["openai-direct"]
[routes.gw]
targets = ["aiceo-gateway"]
[retry]
max_attempts = 1
[breaker]
failure_threshold = 1000
"""
WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
BAD_MESSAGES: Any = [{"role": "user", "content": 3}]
HELLO: list[Any] = [{"role": "user", "content": "Is a monorepo right for two people?"}]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Served:
    """The sandbox, and the gateway over it."""

    def __init__(self, portal: BlockingPortal, sandbox: Sandbox, home: Path, url: str) -> None:
        self.portal, self.sandbox, self.home, self.url = portal, sandbox, home, url

    def mode(self, name: str, mode: str) -> None:
        self.portal.call(self.sandbox.set_mode, name, mode)

    def bodies(self, name: str) -> list[Any]:
        return [r.body for r in self.portal.call(self.sandbox.requests, name)]

    def attempts(self) -> list[AttemptRow]:
        """Every attempt the gateway recorded in its state."""

        async def read() -> list[AttemptRow]:
            async with api.records(env={"RECURSIVEMANAGER_HOME": str(self.home)}) as state:
                return await state.attempts.since(0)

        return self.portal.call(read)

    def anthropic(self, key: str = KEY) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=self.url, api_key=key, max_retries=0, timeout=20)

    def auth(self, key: str = KEY) -> dict[str, str]:
        return {"authorization": f"Bearer {key}"}

    def client(self, key: str = KEY) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0, timeout=20)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    keys = (ClientKey(KEY.encode()), ClientKey(b"sk-other-3b1d", "other"))
    with serving(tmp_path_factory.mktemp("serve"), POLICY, keys) as box:
        yield box


@contextlib.contextmanager
def serving(home: Path, policy_text: str, keys: tuple[ClientKey, ...]) -> Iterator[Served]:
    """The sandbox, and a gateway over it with ``policy_text`` and ``keys``, state in ``home``."""
    policy = write_policy(home, "gateway.toml", policy_text)
    with start_blocking_portal(backend="asyncio") as portal:
        sandbox = Sandbox()
        with portal.wrap_async_context_manager(sandbox):
            env = {**sandbox.env(), "RECURSIVEMANAGER_HOME": str(home)}
            settings = Settings(policy=policy, keys=keys, env=env)
            port = _free_port()
            config = uvicorn.Config(
                Gateway(settings),
                host="127.0.0.1",
                port=port,
                http="httptools",
                lifespan="on",
                log_level="warning",
            )
            server = uvicorn.Server(config)
            thread = threading.Thread(target=server.run, daemon=True)
            thread.start()
            deadline = time.monotonic() + 10
            while not server.started:
                assert thread.is_alive() and time.monotonic() < deadline, "the gateway did not start"
                time.sleep(0.01)
            try:
                yield Served(portal, sandbox, home, f"http://127.0.0.1:{port}")
            finally:
                server.should_exit = True
                thread.join(10)


@pytest.fixture
def box(served: Served) -> Served:
    served.portal.call(served.sandbox.clear_log)
    for name in ("openai-direct", "anthropic-direct"):
        served.mode(name, "ok")
    return served


def test_health_needs_no_key_and_models_lists_the_routes(box: Served) -> None:
    assert httpx.get(f"{box.url}/health").json() == {"status": "ok"}
    models = box.client().models.list()
    assert [m.id for m in models.data] == ["default", "solo", "gw"]
    assert {m.owned_by for m in models.data} == {"rmgr"}


def test_the_sdk_gets_a_whole_answer_with_its_usage(box: Served) -> None:
    completion = box.client().chat.completions.create(model="default", messages=HELLO)
    choice = completion.choices[0]
    assert (
        choice.finish_reason == "stop"
        and choice.message.content
        and "openai-direct" in choice.message.content
    )
    assert completion.model == "default" and completion.object == "chat.completion"
    assert completion.usage is not None and completion.usage.total_tokens > 0
    (sent,) = box.bodies("openai-direct")
    assert sent["messages"] == HELLO and sent["model"] != "default"  # the provider's own model


def test_the_sdk_gets_a_streamed_answer_with_include_usage(box: Served) -> None:
    whole = box.client().chat.completions.create(model="solo", messages=HELLO).choices[0].message.content
    with box.client().chat.completions.stream(
        model="solo", messages=HELLO, stream_options={"include_usage": True}
    ) as stream:
        deltas = [e.delta for e in stream if e.type == "content.delta"]
        final = stream.get_final_completion()
    assert len(deltas) >= 3 and "".join(deltas) == whole
    assert (
        final.choices[0].finish_reason == "stop" and final.usage is not None and final.usage.total_tokens > 0
    )
    assert [r.stream for r in box.portal.call(box.sandbox.requests, "openai-direct")] == [False, True]


def test_a_tool_call_comes_back_in_openai_shape_plain_and_streamed(box: Served) -> None:
    asked: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    completion = box.client().chat.completions.create(model="default", messages=asked, tools=[WEATHER])
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.id
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", {"city": "Paris"})

    with box.client().chat.completions.stream(model="default", messages=asked, tools=[WEATHER]) as stream:
        final = stream.get_final_completion()
    streamed = final.choices[0]
    assert streamed.finish_reason == "tool_calls" and streamed.message.tool_calls
    assert streamed.message.tool_calls[0].function.name == "get_weather"


@pytest.mark.parametrize("key", [None, "sk-wrong"])
def test_a_missing_or_wrong_key_is_401_in_openai_shape(box: Served, key: str | None) -> None:
    headers = {} if key is None else {"authorization": f"Bearer {key}"}
    reply = httpx.post(f"{box.url}/v1/chat/completions", json={"messages": HELLO}, headers=headers)
    assert reply.status_code == 401
    assert reply.json()["error"]["code"] == "invalid_api_key" and reply.json()["error"]["message"]
    if key is not None:  # the SDK itself refuses to send no key
        with pytest.raises(openai.AuthenticationError):
            box.client(key).models.list()
    assert box.bodies("openai-direct") == []


def test_x_api_key_is_accepted_too(box: Served) -> None:
    reply = httpx.get(f"{box.url}/v1/models", headers={"x-api-key": "sk-other-3b1d"})
    assert reply.status_code == 200


def test_a_bad_body_is_400_with_the_path_at_fault(box: Served) -> None:
    headers = {"authorization": f"Bearer {KEY}"}
    reply = httpx.post(f"{box.url}/v1/chat/completions", content=b"{not json", headers=headers)
    assert reply.status_code == 400 and reply.json()["error"]["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as caught:
        box.client().chat.completions.create(
            model="default",
            messages=BAD_MESSAGES,
        )
    assert "$.messages[0].content" in caught.value.message
    assert box.bodies("openai-direct") == []


def test_an_unknown_model_is_404_naming_the_routes(box: Served) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        box.client().chat.completions.create(model="gpt-4o", messages=HELLO)
    assert caught.value.code == "model_not_found" and "default, solo, gw" in caught.value.message


def test_fail_over_is_invisible_plain_and_streamed(box: Served) -> None:
    box.mode("openai-direct", "status:500")
    client = box.client()
    completion = client.chat.completions.create(model="default", messages=HELLO)
    assert completion.choices[0].finish_reason == "stop"
    assert "anthropic-direct" in (completion.choices[0].message.content or "")
    with client.chat.completions.stream(model="default", messages=HELLO) as stream:
        text = "".join(e.delta for e in stream if e.type == "content.delta")
        final = stream.get_final_completion()
    assert "anthropic-direct" in text and final.choices[0].finish_reason == "stop"
    assert len(box.bodies("openai-direct")) == 2 and len(box.bodies("anthropic-direct")) == 2
    body = {"model": "default", "messages": HELLO, "stream": True}
    url = f"{box.url}/v1/chat/completions"
    with httpx.stream("POST", url, json=body, headers=box.auth(), timeout=10) as raw:
        assert raw.headers["x-rmgr-provider"] == "anthropic-direct" and raw.headers["x-rmgr-attempts"] == "2"
        assert raw.read().endswith(b"data: [DONE]\n\n")


def test_a_stream_cut_after_its_first_text_ends_in_an_error_not_stop(box: Served) -> None:
    box.mode("openai-direct", "truncate")
    reply = httpx.post(
        f"{box.url}/v1/chat/completions",
        json={"model": "solo", "messages": HELLO, "stream": True},
        headers={"authorization": f"Bearer {KEY}"},
        timeout=20,
    )
    assert reply.status_code == 200
    events = [line[6:] for line in reply.text.splitlines() if line.startswith("data: ")]
    assert json.loads(events[1])["choices"][0]["delta"]["content"]  # text went out first
    assert json.loads(events[-1])["error"]["code"] == "stream_truncated"
    chunks = [json.loads(e) for e in events[:-1]]
    assert "[DONE]" not in events and all(c["choices"][0]["finish_reason"] is None for c in chunks)
    with (
        pytest.raises(openai.APIError),
        box.client().chat.completions.stream(model="solo", messages=HELLO) as s,
    ):
        s.get_final_completion()


def test_a_stream_cut_after_its_first_text_is_not_continued_by_the_fallback(box: Served) -> None:
    """The default route could fall back to Anthropic, but text from OpenAI already went out:
    gluing another answer after it would corrupt it, so the stream ends with an error and the
    run is cancelled before the fallback answers."""
    box.mode("openai-direct", "truncate")
    with box.client().chat.completions.create(model="default", messages=HELLO, stream=True) as stream:
        seen: list[Any] = []
        with pytest.raises(openai.APIError):
            for event in stream:
                seen.append(event)
    assert seen and all(e.choices[0].finish_reason is None for e in seen)
    assert "anthropic-direct" not in "".join(e.choices[0].delta.content or "" for e in seen)


def test_every_route_failing_is_a_5xx_in_openai_shape(box: Served) -> None:
    box.mode("openai-direct", "status:500")
    with pytest.raises(openai.APIStatusError) as caught:
        box.client().chat.completions.create(model="solo", messages=HELLO)
    assert caught.value.status_code == 502 and caught.value.code == "server_error"
    box.mode("openai-direct", "status:503")
    with pytest.raises(openai.APIStatusError) as unavailable:
        box.client().chat.completions.create(model="solo", messages=HELLO, stream=True)
    assert unavailable.value.status_code == 503 and unavailable.value.code == "overloaded"


def test_the_clients_key_reaches_no_provider_and_no_state(box: Served) -> None:
    box.client().chat.completions.create(model="default", messages=HELLO)
    logged = box.portal.call(box.sandbox.requests, "openai-direct")
    assert logged and all(r.status == 200 for r in logged)  # the provider got its own key
    assert KEY not in json.dumps([r.to_json() for r in logged])
    stored = b"".join(p.read_bytes() for p in box.home.rglob("*") if p.is_file())
    assert KEY.encode() not in stored


def test_serve_refuses_to_start_without_keys(cli: Cli) -> None:
    done = cli.run("serve", "--port", "0")
    assert done.returncode == 2 and "RMGR_SERVE_KEYS" in done.stderr
    open_to_all = cli.run("serve", "--no-auth", "--host", "0.0.0.0", "--port", "0")
    assert open_to_all.returncode == 2 and "loopback" in open_to_all.stderr


def test_serve_with_a_damaged_state_exits_2_before_answering(cli: Cli) -> None:
    (cli.home / "state.db").write_bytes(b"this is not a SQLite database" * 100)
    env = {"RMGR_SERVE_KEYS": KEY, "AICEO_GATEWAY_API_KEY": "k", "AICEO_GATEWAY_URL": closed_url()}
    done = cli.run("serve", "--port", str(_free_port()), env=env)
    assert done.returncode == 2 and "could not start" in done.stderr, done.stderr


def test_a_request_no_target_can_carry_is_400_and_sends_nothing(box: Served) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        box.client().chat.completions.create(model="gw", messages=HELLO, tools=[WEATHER])
    assert "tools" in caught.value.message and "aiceo-gateway" in caught.value.message
    assert box.bodies("aiceo-gateway") == []


def test_a_body_over_32_mb_is_413(box: Served) -> None:
    headers = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
    reply = httpx.post(f"{box.url}/v1/chat/completions", content=b" " * (33 * 1024 * 1024), headers=headers)
    assert reply.status_code == 413 and reply.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_hangs_up_cancels_its_run(box: Served, stream: bool) -> None:
    """The provider takes 3 s; the client gives up after 0.3 s: the attempt is settled as
    cancelled at once, not left running (or counted as a failure)."""
    box.mode("openai-direct", "slow:3")
    before = len(box.attempts())
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{box.url}/v1/chat/completions",
            json={"model": "solo", "messages": HELLO, "stream": stream},
            headers={"authorization": f"Bearer {KEY}"},
            timeout=0.3,
        )
    deadline = time.monotonic() + 2
    while not [a for a in box.attempts()[before:] if a.latency_ms > 0]:  # settled, not just sent
        assert time.monotonic() < deadline, box.attempts()[before:]
        time.sleep(0.05)
    (settled,) = box.attempts()[before:]
    assert settled.outcome == "cancelled" and 200 < settled.latency_ms < 2000


def start_rmgr_serve(
    box: Served, folder: Path, *options: str, keys: str | None = None
) -> tuple[subprocess.Popen[str], str]:
    """``rmgr serve`` in a process of its own, as a person starts it, once ``/health`` answers."""
    port = _free_port()
    policy = write_policy(folder, "policy.toml", POLICY)
    env = clean_env(folder, {**box.sandbox.env(), **({"RMGR_SERVE_KEYS": keys} if keys else {})})
    command = [*RMGR, "serve", "--port", str(port), "--policy", str(policy), *options]
    server = subprocess.Popen(command, env=env, cwd=folder, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 15
    while True:
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            raise AssertionError(f"rmgr serve did not start: {server.communicate()[1]}")
        try:
            if httpx.get(f"{url}/health").status_code == 200:
                return server, url
        except httpx.TransportError:
            time.sleep(0.05)


def test_rmgr_serve_answers_without_a_key_on_loopback_and_stops_gracefully_on_sigterm(
    box: Served, tmp_path: Path
) -> None:
    """``rmgr serve --no-auth`` as a person starts it; SIGTERM during a request that takes
    two seconds (the issue's case): the request still gets its 200, then the process exits 0."""
    server, url = start_rmgr_serve(box, tmp_path, "--no-auth")
    try:
        box.mode("openai-direct", "slow:2")
        replies: list[httpx.Response] = []
        asking = threading.Thread(
            target=lambda: replies.append(
                httpx.post(
                    f"{url}/v1/chat/completions", json={"model": "solo", "messages": HELLO}, timeout=10
                )
            )
        )
        asking.start()
        time.sleep(0.4)
        server.send_signal(signal.SIGTERM)
        asking.join(10)
        assert replies and replies[0].status_code == 200, replies
        assert replies[0].json()["choices"][0]["finish_reason"] == "stop"
        headers = replies[0].headers
        assert headers["x-rmgr-provider"] == "openai-direct" and headers["x-rmgr-attempts"] == "1"
        assert 0 <= float(headers["x-rmgr-overhead-ms"]) < 500 and float(headers["x-rmgr-cost-usd"]) >= 0
        assert server.wait(10) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert server.stderr is not None
    assert "serving models default, solo, gw" in server.stderr.read()


def test_a_request_past_the_grace_period_gets_503_and_its_attempt_is_accounted(
    box: Served, tmp_path: Path
) -> None:
    """SIGTERM with ``--grace 0.5`` during a request its provider answers in 3 s: the client gets
    503 ``shutting_down`` in OpenAI's shape (not uvicorn's bare 500), the process exits 0, and the
    attempt is in the state as ``cancelled``."""
    server, url = start_rmgr_serve(box, tmp_path, "--no-auth", "--grace", "0.5")
    try:
        box.mode("openai-direct", "slow:3")
        replies: list[httpx.Response] = []
        body = {"model": "solo", "messages": HELLO}
        asking = threading.Thread(
            target=lambda: replies.append(httpx.post(f"{url}/v1/chat/completions", json=body, timeout=10))
        )
        asking.start()
        time.sleep(0.4)
        server.send_signal(signal.SIGTERM)
        asking.join(10)
        assert server.wait(10) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert replies and replies[0].status_code == 503, replies
    assert replies[0].json()["error"]["code"] == "shutting_down"
    assert server.stderr is not None and "Traceback" not in server.stderr.read()

    async def read() -> list[AttemptRow]:
        async with api.records(env={"RECURSIVEMANAGER_HOME": str(tmp_path)}) as state:
            return await state.attempts.since(0)

    [attempt] = box.portal.call(read)
    assert attempt.outcome == "cancelled" and attempt.cost_usd > 0


def test_the_anthropic_sdk_gets_a_message_plain_and_streamed(box: Served) -> None:
    client = box.anthropic()
    message = client.messages.create(model="solo", max_tokens=400, system="Be brief.", messages=HELLO)
    assert message.stop_reason == "end_turn" and message.model == "solo" and message.type == "message"
    block = message.content[0]
    assert block.type == "text" and "openai-direct" in block.text
    assert message.usage.output_tokens > 0 and message.usage.input_tokens > 0
    with client.messages.stream(model="solo", max_tokens=400, system="Be brief.", messages=HELLO) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) >= 3 and "".join(pieces) == block.text
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == message.usage.output_tokens
    first = box.bodies("openai-direct")[0]
    assert first["messages"][0] == {"role": "system", "content": "Be brief."}


def test_the_anthropic_sdk_gets_a_tool_call(box: Served) -> None:
    tool: Any = {"name": "get_weather", "input_schema": WEATHER["function"]["parameters"]}
    asked: Any = [{"role": "user", "content": "What is the weather in Paris?"}]
    message = box.anthropic().messages.create(model="default", max_tokens=400, messages=asked, tools=[tool])
    assert message.stop_reason == "tool_use"
    (call,) = [b for b in message.content if b.type == "tool_use"]
    assert (call.name, call.input) == ("get_weather", {"city": "Paris"})
    with box.anthropic().messages.stream(model="default", max_tokens=400, messages=asked, tools=[tool]) as s:
        final = s.get_final_message()
    assert final.stop_reason == "tool_use" and [b.type for b in final.content] == ["tool_use"]
    streamed = final.content[0]
    assert streamed.type == "tool_use" and streamed.input == {"city": "Paris"}


def test_anthropic_errors_are_in_anthropic_shape(box: Served) -> None:
    with pytest.raises(anthropic.AuthenticationError) as refused:
        box.anthropic("sk-wrong").messages.create(model="solo", max_tokens=10, messages=HELLO)
    assert (
        isinstance(refused.value.body, dict) and refused.value.body["error"]["type"] == "authentication_error"
    )
    bad: Any = [{"role": "user", "content": 3}]
    with pytest.raises(anthropic.BadRequestError) as caught:
        box.anthropic().messages.create(model="solo", max_tokens=10, messages=bad)
    assert "$.messages[0].content" in caught.value.message
    with pytest.raises(anthropic.NotFoundError):
        box.anthropic().messages.create(model="claude-x", max_tokens=10, messages=HELLO)
    box.mode("openai-direct", "truncate")
    with (
        pytest.raises(anthropic.APIStatusError),
        box.anthropic().messages.stream(model="solo", max_tokens=400, messages=HELLO) as stream,
    ):
        stream.get_final_message()


def test_rmgr_serve_with_two_workers_answers_on_one_port(box: Served, tmp_path: Path) -> None:
    server, url = start_rmgr_serve(box, tmp_path, "--workers", "2", keys=f"{KEY},sk-second")
    try:
        for key in (KEY, "sk-second", KEY):
            reply = httpx.post(
                f"{url}/v1/chat/completions", json={"messages": HELLO}, headers={"x-api-key": key}, timeout=10
            )
            assert reply.status_code == 200 and reply.json()["choices"][0]["finish_reason"] == "stop"
        assert httpx.get(f"{url}/v1/models").status_code == 401
        server.send_signal(signal.SIGTERM)
        assert server.wait(15) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert server.stderr is not None
    log = server.stderr.read()
    assert log.count("Application startup complete") == 2 and KEY not in log


def test_the_gateway_reaches_runs_only_through_the_front_door() -> None:
    """Like every command, the gateway imports neither the runner nor a state backend."""
    from tests.cli.test_front_door import FORBIDDEN_IN_COMMANDS, RMCLI, _imports

    for module in sorted((RMCLI / "serve").glob("*.py")):
        bad = [
            n for n in _imports(module) if any(n == f or n.startswith(f + ".") for f in FORBIDDEN_IN_COMMANDS)
        ]
        assert not bad, f"{module.name} imports {bad}"
