"""The whole chat request from the command line, against the sandbox: ``rmgr ask --request``
(tools, a conversation, sampling settings; a tool call back in JSON and on the terminal),
``rmgr chat`` (a line a turn, the whole conversation sent each time, kept for later), and
``rmgr ask --continue``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal

from rmcli.sandbox import Sandbox
from tests.cli.helpers import Cli, write_policy

ONE_OPENAI = 'version = 1\n[route]\ntargets = ["openai-direct"]\n'
ONE_ANTHROPIC = 'version = 1\n[route]\ntargets = ["anthropic-direct"]\n'
OPENAI_THEN_ANTHROPIC = 'version = 1\n[route]\ntargets = ["openai-direct", "anthropic-direct"]\n'
GATEWAY_THEN_OPENAI = 'version = 1\n[route]\ntargets = ["aiceo-gateway", "openai-direct"]\n'
GATEWAY_ONLY = 'version = 1\n[route]\ntargets = ["aiceo-gateway"]\n'
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
REQUEST: dict[str, Any] = {
    "model": "gpt-4o",
    "messages": [
        {"role": "system", "content": "You are a weather bot."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! Ask me about the weather."},
        {"role": "user", "content": "What is the weather in Paris?"},
    ],
    "tools": [WEATHER],
    "tool_choice": "auto",
    "stop": ["END"],
    "top_p": 0.9,
    "seed": 7,
}


@pytest.fixture(scope="module")
def running() -> Iterator[tuple[BlockingPortal, Sandbox]]:
    with start_blocking_portal(backend="asyncio") as portal:
        sandbox = Sandbox()
        with portal.wrap_async_context_manager(sandbox):
            yield portal, sandbox


@pytest.fixture
def box(running: tuple[BlockingPortal, Sandbox]) -> tuple[BlockingPortal, Sandbox]:
    portal, sandbox = running
    portal.call(sandbox.clear_log)
    for name in ("openai-direct", "anthropic-direct", "aiceo-gateway"):
        portal.call(sandbox.set_mode, name, "ok")
    return running


@pytest.fixture
def user(cli: Cli, box: tuple[BlockingPortal, Sandbox]) -> Cli:
    return cli.with_env(box[1].env())


def bodies(box: tuple[BlockingPortal, Sandbox], name: str) -> list[Any]:
    portal, sandbox = box
    return [r.body for r in portal.call(sandbox.requests, name)]


def request_file(folder: Path, request: dict[str, Any] = REQUEST) -> str:
    path = folder / "request.json"
    path.write_text(json.dumps(request), encoding="utf-8")
    return str(path)


def test_a_whole_request_reaches_openai_as_given_and_its_tool_call_comes_back(
    user: Cli, box: tuple[BlockingPortal, Sandbox]
) -> None:
    policy = write_policy(user.home, "one-openai.toml", ONE_OPENAI)
    code, document = user.json("ask", "--request", request_file(user.home), "--policy", str(policy), "--json")
    assert code == 0, document
    ((call),) = document["toolCalls"]
    assert (call["name"], json.loads(call["arguments"])) == ("get_weather", {"city": "Paris"})
    assert call["id"] and document["finishReason"] == "tool_calls"
    (sent,) = bodies(box, "openai-direct")
    assert sent["messages"] == REQUEST["messages"] and sent["tools"] == REQUEST["tools"]
    assert (sent["tool_choice"], sent["stop"], sent["top_p"], sent["seed"]) == ("auto", ["END"], 0.9, 7)
    assert sent["stream"] is True  # assembled from a stream


def test_on_a_terminal_less_stdout_a_tool_call_is_printed_readably(user: Cli) -> None:
    policy = write_policy(user.home, "one-openai.toml", ONE_OPENAI)
    done = user.run("ask", "--request", request_file(user.home), "--policy", str(policy))
    assert done.returncode == 0, done.stderr
    assert 'get_weather({"city": "Paris"})' in done.stdout


def test_fail_over_carries_the_conversation_and_tools_to_anthropic(
    user: Cli, box: tuple[BlockingPortal, Sandbox]
) -> None:
    """OpenAI answers 500: Anthropic gets the system text on top, the three turns, the tool with
    its input_schema, and the tool call comes back in the same shape."""
    portal, sandbox = box
    portal.call(sandbox.set_mode, "openai-direct", "status:500")
    policy = write_policy(user.home, "failover.toml", OPENAI_THEN_ANTHROPIC)
    code, document = user.json("ask", "--request", request_file(user.home), "--policy", str(policy), "--json")
    assert code == 0 and document["provider"] == "anthropic-direct", document
    assert document["toolCalls"][0]["name"] == "get_weather" and document["finishReason"] == "tool_calls"
    (sent,) = bodies(box, "anthropic-direct")
    assert sent["system"] == "You are a weather bot."
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
    assert sent["tools"][0]["input_schema"] == WEATHER["function"]["parameters"]
    assert (sent["tool_choice"], sent["stop_sequences"], sent["top_p"]) == ({"type": "auto"}, ["END"], 0.9)


def test_a_tools_request_skips_a_gateway_that_cannot_carry_tools(
    user: Cli, box: tuple[BlockingPortal, Sandbox]
) -> None:
    policy = write_policy(user.home, "gw.toml", GATEWAY_THEN_OPENAI)
    done = user.run("ask", "--request", request_file(user.home), "--policy", str(policy))
    assert done.returncode == 0, done.stderr
    assert "aiceo-gateway" in done.stderr and "cannot carry tools" in done.stderr
    assert bodies(box, "aiceo-gateway") == [] and len(bodies(box, "openai-direct")) == 1

    alone = write_policy(user.home, "gw-only.toml", GATEWAY_ONLY)
    done = user.run("ask", "--request", request_file(user.home), "--policy", str(alone))
    assert done.returncode == 2 and "needs tools" in done.stderr and "aiceo-gateway" in done.stderr
    assert bodies(box, "aiceo-gateway") == []


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ("{not json", "--request"),
        ('{"messages": [{"role": "user", "content": 3}]}', "$.messages[0].content"),
        ('{"messages": [], "logprobs": true}', "$.logprobs"),
    ],
)
def test_a_bad_request_file_says_where_and_sends_nothing(
    user: Cli, box: tuple[BlockingPortal, Sandbox], body: str, said: str
) -> None:
    policy = write_policy(user.home, "one-openai.toml", ONE_OPENAI)
    done = user.run("ask", "--request", "-", "--policy", str(policy), stdin=body)
    assert done.returncode == 2 and said in done.stderr, done.stderr
    assert bodies(box, "openai-direct") == []


def test_chat_sends_the_whole_conversation_at_every_turn(
    user: Cli, box: tuple[BlockingPortal, Sandbox]
) -> None:
    policy = write_policy(user.home, "one-openai.toml", ONE_OPENAI)
    done = user.run("chat", "--policy", str(policy), stdin="My name is Ada.\nWhat is my name?\n")
    assert done.returncode == 0, done.stderr
    first, second = bodies(box, "openai-direct")
    assert [m["role"] for m in first["messages"]] == ["user"]
    assert [m["role"] for m in second["messages"]] == ["user", "assistant", "user"]
    assert second["messages"][0]["content"] == "My name is Ada."
    assert second["messages"][1]["content"] and second["messages"][2]["content"] == "What is my name?"


def test_ask_continue_takes_up_the_last_conversation(user: Cli, box: tuple[BlockingPortal, Sandbox]) -> None:
    policy = write_policy(user.home, "one-openai.toml", ONE_OPENAI)
    refused = user.run("ask", "-c", "anything?", "--policy", str(policy))
    assert refused.returncode == 2 and "no conversation to continue" in refused.stderr
    assert user.run("chat", "--policy", str(policy), "--system", "Be brief.", stdin="Hello\n").returncode == 0
    done = user.run("ask", "--continue", "And then?", "--policy", str(policy))
    assert done.returncode == 0, done.stderr
    last = bodies(box, "openai-direct")[-1]
    assert [m["role"] for m in last["messages"]] == ["system", "user", "assistant", "user"]
    assert last["messages"][-1]["content"] == "And then?"


def test_a_failed_turn_is_not_kept(user: Cli, box: tuple[BlockingPortal, Sandbox]) -> None:
    """Every route fails on the second line: the exit code says so, and the third line is sent
    after the first turn only."""
    portal, sandbox = box
    policy = write_policy(user.home, "one-openai.toml", ONE_OPENAI + "[retry]\nmax_attempts = 1\n")
    assert user.run("chat", "--policy", str(policy), stdin="one\n").returncode == 0
    portal.call(sandbox.set_mode, "openai-direct", "status:400")
    assert user.run("ask", "-c", "two", "--policy", str(policy)).returncode == 1
    portal.call(sandbox.set_mode, "openai-direct", "ok")
    assert user.run("ask", "-c", "three", "--policy", str(policy)).returncode == 0
    last = bodies(box, "openai-direct")[-1]
    assert [m["content"] for m in last["messages"] if m["role"] == "user"] == ["one", "three"]


def test_verbose_says_what_a_format_cannot_carry(user: Cli) -> None:
    """Anthropic has no seed: --verbose says it was not sent, and the answer comes all the same."""
    policy = write_policy(user.home, "one-anthropic.toml", ONE_ANTHROPIC)
    done = user.run("--verbose", "ask", "--request", request_file(user.home), "--policy", str(policy))
    assert done.returncode == 0, done.stderr
    assert "anthropic-direct: seed 7 not sent" in done.stderr
