"""Capability-aware routing over real loopback HTTP against the sandbox, through the front door
(``rmcli.api.Client.chat``) and ``rmgr ask --request``: a tools request is never sent to the AICEO
gateway (text only). On a route gateway → openai-direct the gateway receives nothing and
openai-direct answers; on the gateway alone the run does not start (``ConfigError``, exit 2 at the
command line) and nothing is sent or recorded anywhere."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from rmcli.api import Client, records
from rmcli.errors import ConfigError
from rmcli.sandbox import Sandbox
from rmcore.errors import ErrorKind
from rmcore.events import RunOutcome
from rmcore.requests import ChatRequest, Message, Tool, ToolChoice
from tests.cli.helpers import Cli, sandbox_process, write_policy

POLICY = """\
version = 1
[route]
targets = ["aiceo-gateway", "openai-direct"]
[routes.gateway-only]
targets = ["aiceo-gateway"]
"""

WEATHER = Tool(
    name="get_weather",
    description="The current weather in a city",
    parameters=msgspec.Raw(b'{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}'),
)
TOOLS_REQUEST = ChatRequest(
    messages=(
        Message(role="system", content="You answer weather questions."),
        Message(role="user", content="What is the weather in Paris?"),
    ),
    tools=(WEATHER,),
    tool_choice=ToolChoice(mode="auto"),
    max_tokens=200,
)


@pytest.fixture
async def box() -> AsyncIterator[Sandbox]:
    """The four sandbox providers, every one ``ok``, streaming without pauses."""
    async with Sandbox(stream_delay_s=0.0) as sandbox:
        yield sandbox


async def chat(box: Sandbox, home: Path, request: ChatRequest, route: str | None = None) -> RunOutcome:
    """``request`` through the front door (``Client.chat``) under the policy above, its state in
    ``home``."""
    async with Client(POLICY, env=box.env(), state_home=home) as client:
        return await client.chat(request, route=route)


async def recorded(home: Path) -> list[str]:
    """The providers of the attempts recorded in the state in ``home``."""
    async with records(env={}, state_home=home) as state:
        return [row.provider for row in await state.attempts.since(0)]


@pytest.mark.anyio
async def test_a_tools_request_skips_the_gateway_and_openai_direct_answers(
    box: Sandbox, tmp_path: Path
) -> None:
    """The gateway is skipped unsent (``unsupported``: ``cannot carry tools``), its request log
    stays empty, and the answer is openai-direct's, whose request carries the tool."""
    outcome = await chat(box, tmp_path, TOOLS_REQUEST)
    assert outcome.error is None, outcome.error
    assert outcome.provider == "openai-direct"
    assert [(s.provider, s.kind, s.message) for s in outcome.skipped] == [
        ("aiceo-gateway", ErrorKind.UNSUPPORTED, "cannot carry tools")
    ]
    assert [(a.provider, a.outcome) for a in outcome.attempts] == [("openai-direct", "ok")]
    assert box.requests("aiceo-gateway") == []
    [sent] = box.requests("openai-direct")
    assert sent.body["tools"][0]["function"]["name"] == "get_weather"
    assert await recorded(tmp_path) == ["openai-direct"]


@pytest.mark.anyio
async def test_a_text_request_still_goes_to_the_gateway(box: Sandbox, tmp_path: Path) -> None:
    """The same route with a text request: the gateway answers, as before."""
    outcome = await chat(box, tmp_path, ChatRequest.ask("Is a queue better than cron?", max_tokens=200))
    assert outcome.provider == "aiceo-gateway" and outcome.skipped == ()
    assert len(box.requests("aiceo-gateway")) == 1


@pytest.mark.anyio
async def test_a_tools_request_on_the_gateway_alone_does_not_start(box: Sandbox, tmp_path: Path) -> None:
    """No target of the route can carry tools: ``ConfigError`` naming the feature, the route and
    the gateway, before anything is sent to any provider."""
    with pytest.raises(ConfigError) as raised:
        await chat(box, tmp_path, TOOLS_REQUEST, route="gateway-only")
    assert str(raised.value) == (
        "this request needs tools; no target of route gateway-only can carry it (aiceo-gateway: text only)"
    )
    assert all(box.requests(name) == [] for name in box.names)
    assert await recorded(tmp_path) == []


REQUEST_JSON = {
    "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ],
}


def test_rmgr_ask_exits_2_naming_tools_when_only_the_gateway_is_routed(cli: Cli) -> None:
    """``rmgr ask --request`` with a tools request on the gateway alone: exit 2, the message on
    stderr, nothing sent to any provider; on gateway → openai-direct: exit 0, the skip said, the
    gateway still sent nothing."""
    with sandbox_process() as box:
        run = cli.with_env(box.env)
        (cli.home / "req.json").write_text(json.dumps(REQUEST_JSON), encoding="utf-8")
        write_policy(cli.home, "p.toml", POLICY)
        done = run.run("ask", "--request", "req.json", "--policy", "p.toml", "--route", "gateway-only")
        assert done.returncode == 2, done.stderr
        said = "this request needs tools; no target of route gateway-only can carry it"
        assert f"{said} (aiceo-gateway: text only)" in done.stderr
        assert all(box.log(name) == [] for name in ("aiceo-gateway", "openai-direct"))
        done = run.run("ask", "--request", "req.json", "--policy", "p.toml", "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["provider"] == "openai-direct"
        assert "Skipped provider aiceo-gateway: unsupported (cannot carry tools)" in done.stderr
        assert box.log("aiceo-gateway") == [] and len(box.log("openai-direct")) == 1
