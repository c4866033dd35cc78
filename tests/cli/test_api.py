"""The embedding API (``rmcli.api``) in-process: against an in-process sandbox, and once with an
``httpx.MockTransport`` so that no socket is opened at all. What a run left in the state is read
back through ``rmcli.api.records``, as ``rmgr usage`` and ``rmgr history`` read it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest

import rmcli
import rmcli.api
from rmcli.api import Client, ConfigError, analyze, ask, compare, create, health
from rmcli.sandbox import Sandbox
from rmcli.state import State
from rmcore import decode_policy
from rmcore.providers import BUILTIN_NAMES

pytestmark = pytest.mark.anyio

GLM_ONLY = """\
version = 1
[route]
targets = ["glm-direct"]
[retry]
max_attempts = 1
"""

FAILING_OVER = """\
version = 1
[route]
targets = ["aiceo-gateway", "anthropic-direct"]
[retry]
max_attempts = 1
"""

TWO_PERSPECTIVES = """\
version = 1
[route]
targets = ["glm-direct"]
[analysis]
perspectives = ["security", "financial"]
min_perspectives = 1
"""


@pytest.fixture
async def box() -> AsyncIterator[Sandbox]:
    """An in-process sandbox, every provider up, streaming without delay."""
    async with Sandbox(stream_delay_s=0.0) as sandbox:
        yield sandbox


async def attempts(home: Path) -> list[str]:
    """The providers of the attempts recorded in the state in ``home``, oldest first."""
    async with rmcli.api.records(env={}, state_home=home) as state:
        return [row.provider for row in await state.attempts.since(0)]


async def history_questions(home: Path) -> list[tuple[str, str]]:
    """The (agent, question) of every analysis saved in the state in ``home``, newest first."""
    async with rmcli.api.records(env={}, state_home=home) as state:
        return [(e.agent_id, e.question) for e in await state.history.list(None)]


async def test_ask_takes_the_policy_as_toml_text_and_records_the_attempt(
    box: Sandbox, tmp_path: Path
) -> None:
    """A policy given as TOML text routes the call; the attempt is recorded in the state."""
    outcome = await ask("Is a queue better than cron?", policy=GLM_ONLY, env=box.env(), state_home=tmp_path)
    assert outcome.completion is not None and outcome.provider == "glm-direct"
    assert "glm-direct" in outcome.completion.content
    assert await attempts(tmp_path) == ["glm-direct"]


async def test_ask_takes_a_policy_path_or_struct_and_fails_over(box: Sandbox, tmp_path: Path) -> None:
    """A policy path (as ``Path`` or ``str``) or a decoded ``Policy`` all route alike, failing over
    past a provider answering 500; ``record=False`` leaves no state behind."""
    box.set_mode("aiceo-gateway", "status:500")
    path = tmp_path / "policy.toml"
    path.write_text(FAILING_OVER, encoding="utf-8")
    struct = decode_policy(FAILING_OVER, "inline", BUILTIN_NAMES).unwrap()
    for policy in (path, str(path), struct):
        outcome = await ask("Hello?", policy=policy, env=box.env(), state_home=tmp_path, record=False)
        assert outcome.provider == "anthropic-direct"
        assert [a.provider for a in outcome.attempts] == ["aiceo-gateway", "anthropic-direct"]
    assert [p.name for p in tmp_path.iterdir()] == ["policy.toml"]  # record=False: no store


async def test_ask_provider_and_fallback_replace_the_route(box: Sandbox, tmp_path: Path) -> None:
    """``provider`` and ``fallback`` replace the route: a down provider fails over to the fallback,
    whose attempt is recorded last."""
    box.set_mode("openai-direct", "down")
    outcome = await ask(
        "Hello?", provider="openai-direct", fallback="glm-direct", env=box.env(), state_home=tmp_path
    )
    assert outcome.provider == "glm-direct"
    assert outcome.fallback_used
    assert (await attempts(tmp_path))[-1] == "glm-direct"


async def test_bad_input_is_a_config_error(box: Sandbox, tmp_path: Path) -> None:
    """An empty prompt, a missing policy file, an unknown provider, a missing key, a bad route and
    an unknown provider name for ``create`` each raise ``ConfigError``."""
    env = box.env()
    with pytest.raises(ConfigError, match="empty"):
        await ask("  ", env=env, state_home=tmp_path)
    with pytest.raises(ConfigError, match="no such policy file"):
        await ask("Hi", policy=str(tmp_path / "missing.toml"), env=env, state_home=tmp_path)
    with pytest.raises(ConfigError, match="unknown provider 'nobody'"):
        await ask("Hi", provider="nobody", env=env, state_home=tmp_path)
    with pytest.raises(ConfigError, match="needs an API key"):
        await ask("Hi", policy=GLM_ONLY, env={"GLM_API_URL": box.url("glm-direct")}, state_home=tmp_path)
    with pytest.raises(ConfigError, match="route"):
        await ask("Hi", policy="version = 1\n[route]\nnonsense = 1\n", env=env, state_home=tmp_path)
    with pytest.raises(ConfigError, match="unknown provider"):
        create("nobody", env=env)


async def test_ask_through_a_mock_transport_opens_no_socket(tmp_path: Path) -> None:
    """With an ``httpx.MockTransport`` the request (streamed, with its key) and the health check go
    to the handler alone, and the streamed answer is read back whole."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.method == "GET":
            return httpx.Response(200, json={"object": "list", "data": [{"id": "m-1"}]})
        body = json.loads(request.content)
        if body.get("stream"):
            chunks = [
                {"model": "m-1", "choices": [{"index": 0, "delta": {"content": "Mocked "}}]},
                {"model": "m-1", "choices": [{"index": 0, "delta": {"content": "answer."}}]},
                {
                    "model": "m-1",
                    "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 2},
                },
            ]
            text = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
            return httpx.Response(200, headers={"content-type": "text/event-stream"}, text=text)
        return httpx.Response(
            200,
            json={
                "model": "m-1",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "Mocked answer."},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 5, "completion_tokens": 2},
            },
        )

    env = {
        "AI_PROVIDER": "openai-direct",
        "OPENAI_API_URL": "http://127.0.0.1:9/v1/chat/completions",
        "OPENAI_API_KEY": "mock-key",
    }
    outcome = await ask("Hi", env=env, transport=httpx.MockTransport(handler), record=False)
    assert outcome.completion is not None
    assert outcome.completion.content == "Mocked answer."
    assert outcome.completion.usage.output_tokens == 2
    assert len(seen) == 1 and seen[0].headers["authorization"] == "Bearer mock-key"
    assert json.loads(seen[0].content)["messages"][-1]["content"] == "Hi"

    report = await create("openai-direct", env=env, transport=httpx.MockTransport(handler)).health_check()
    assert report.healthy and report.provider == "openai-direct"
    assert seen[-1].url.path == "/v1/models"


async def test_analyze_saves_the_history_only_when_asked(box: Sandbox, tmp_path: Path) -> None:
    """``analyze`` saves the run in its agent's history; with ``persist_history=False`` it does not
    (and reuses the cached answer); an unknown perspective is a ``ConfigError``."""
    run = await analyze(
        "Should we adopt a queue?",
        policy=TWO_PERSPECTIVES,
        agent_id="team-a",
        env=box.env(),
        state_home=tmp_path,
    )
    assert run.status == "ok" and [r.id for r in run.results] == ["security", "financial"]
    assert run.overall is not None and run.to_json()["perspectives"]
    again = await analyze(
        "Should we adopt a queue?",
        policy=TWO_PERSPECTIVES,
        perspectives=["security"],
        persist_history=False,
        env=box.env(),
        state_home=tmp_path,
    )
    assert [r.id for r in again.results] == ["security"] and again.results[0].cached
    assert await history_questions(tmp_path) == [("team-a", "Should we adopt a queue?")]
    with pytest.raises(ConfigError, match="perspectives"):
        await analyze(
            "Q?", policy=TWO_PERSPECTIVES, perspectives=["astrology"], env=box.env(), state_home=tmp_path
        )


async def test_compare_runs_each_provider_alone(box: Sandbox, tmp_path: Path) -> None:
    """``compare`` runs the analysis on each provider alone, in the order given, a failing one
    included as ``failed``; nothing is saved in the history."""
    box.set_mode("openai-direct", "status:500")
    runs = await compare(
        "Should we adopt a queue?",
        providers=["glm-direct", "openai-direct"],
        policy=TWO_PERSPECTIVES.replace("[retry]", "") + "[retry]\nmax_attempts = 1\n",
        env=box.env(),
        state_home=tmp_path,
    )
    assert list(runs) == ["glm-direct", "openai-direct"]
    assert runs["glm-direct"].status == "ok"
    assert {r.provider for r in runs["glm-direct"].results} == {"glm-direct"}
    assert runs["openai-direct"].status == "failed"
    assert await history_questions(tmp_path) == []


async def test_health_and_the_provider_factory(box: Sandbox, tmp_path: Path) -> None:
    """``health`` reports every provider (a down one unreachable) in the order asked; ``create``
    binds one provider whose health check, completion and analysis go to it alone."""
    box.set_mode("glm-direct", "down")
    env = {**box.env(), "RECURSIVEMANAGER_HOME": str(tmp_path)}
    reports = await health(env=env, timeout_s=2.0)
    by_name = {r.provider: r for r in reports}
    assert set(by_name) == set(BUILTIN_NAMES)
    assert by_name["glm-direct"].healthy is False and by_name["glm-direct"].reason == "unreachable"
    assert by_name["anthropic-direct"].healthy
    assert [r.provider for r in await health(["openai-direct", "glm-direct"], env=env)] == [
        "openai-direct",
        "glm-direct",
    ]
    with pytest.raises(ConfigError, match="unknown provider"):
        await health(["nobody"], env=env)

    provider = create("anthropic-direct", env=env)
    assert provider.name == "anthropic-direct" and provider.spec.url == box.url("anthropic-direct")
    assert (await provider.health_check()).healthy
    outcome = await provider.complete("Hello?", max_tokens=64)
    assert outcome.provider == "anthropic-direct"
    run = await provider.analyze("Q?", perspectives=["security"], persist_history=False)
    assert {r.provider for r in run.results} == {"anthropic-direct"}


def test_the_package_itself_stays_light() -> None:
    """``import rmcli`` is the version only; the API is ``rmcli.api``."""
    assert rmcli.__all__ == ["__version__"] and rmcli.__version__


async def test_client_checks_the_route_once_and_keeps_its_store_and_connection(
    box: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bad policy fails when the client is made; then calls reuse one state and one connection."""
    with pytest.raises(ConfigError, match="route"):
        Client("version = 1\n[route]\nnonsense = 1\n", env=box.env(), state_home=tmp_path)
    opened: list[Path] = []
    real_open = rmcli.api.open_state

    async def counting_open(env: dict[str, str], home: Path, **kw: object) -> State:
        opened.append(home)
        return await real_open(env, home, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(rmcli.api, "open_state", counting_open)
    async with Client(GLM_ONLY, env=box.env(), state_home=tmp_path) as client:
        assert client.policy.route.targets == ("glm-direct",)
        outcomes = [await client.ask(f"Question {n}?", stream=n % 2 == 0) for n in range(3)]
        run = await client.analyze("Should we adopt a queue?", perspectives=["security"])
    assert [o.provider for o in outcomes] == ["glm-direct"] * 3
    assert run.status == "ok"
    assert opened == [tmp_path]
    assert box.connections("glm-direct") == 1
    assert await attempts(tmp_path) == ["glm-direct"] * 5  # three asks, a perspective, the synthesis
    assert await history_questions(tmp_path) == [("default", "Should we adopt a queue?")]


async def test_calls_at_once_on_a_new_client_open_one_state(
    box: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Eight first calls at once on a new client (and ``compare``'s analyses, which run at once on
    one client) open the state once, not once per call: no connection is opened only to be
    dropped, and no two calls race to create the same database file."""
    opened: list[Path] = []
    real_open = rmcli.api.open_state

    async def counting_open(env: dict[str, str], home: Path, **kw: object) -> State:
        opened.append(home)
        await anyio.sleep(0.05)  # the others ask meanwhile
        return await real_open(env, home, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(rmcli.api, "open_state", counting_open)
    client = Client(GLM_ONLY, env=box.env(), state_home=tmp_path)
    async with client, anyio.create_task_group() as tg:
        for n in range(8):
            tg.start_soon(client.ask, f"Question {n}?")
    assert opened == [tmp_path]
    assert await attempts(tmp_path) == ["glm-direct"] * 8

    opened.clear()
    runs = await compare(
        "Should we adopt a queue?",
        providers=["glm-direct", "openai-direct"],
        policy=TWO_PERSPECTIVES,
        env=box.env(),
        state_home=tmp_path / "compare",
    )
    assert [r.status for r in runs.values()] == ["ok", "ok"]
    assert opened == [tmp_path / "compare"]


async def test_a_client_makes_one_http_client_for_all_its_calls(
    box: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Calls at once share one HTTP client (a connection each); calls later reuse its connections;
    after ``aclose`` it is closed, and a call opens a new one."""
    made: list[httpx.AsyncClient] = []
    real_new_client = rmcli.api._new_client

    def counting_new_client(transport: httpx.AsyncBaseTransport | None) -> httpx.AsyncClient:
        made.append(real_new_client(transport))
        return made[-1]

    monkeypatch.setattr(rmcli.api, "_new_client", counting_new_client)
    box.set_mode("glm-direct", "slow:0.2")
    client = Client(GLM_ONLY, env=box.env(), state_home=tmp_path, record=False)
    async with anyio.create_task_group() as tg:
        for n in range(8):
            tg.start_soon(client.ask, f"Question {n}?")
    assert len(made) == 1 and box.connections("glm-direct") == 8
    box.set_mode("glm-direct", "ok")
    for n in range(3):
        assert (await client.ask(f"Again {n}?")).provider == "glm-direct"
    assert len(made) == 1 and box.connections("glm-direct") == 8
    await client.aclose()
    assert all(c.is_closed for c in made)
    assert not (tmp_path / "state.db").exists()  # record=False: no store
    assert (await client.ask("After closing?")).provider == "glm-direct"  # opens again
    await client.aclose()


async def test_client_sends_a_plain_request_when_not_streaming(tmp_path: Path) -> None:
    """``stream=False`` sends a request without ``stream`` and reads the reply whole; an empty
    prompt is still refused by the client."""
    seen: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(
            200,
            json={
                "model": "m-1",
                "choices": [{"index": 0, "message": {"content": "Plain."}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1},
            },
        )

    env = {
        "AI_PROVIDER": "openai-direct",
        "OPENAI_API_URL": "http://127.0.0.1:9/v1/chat/completions",
        "OPENAI_API_KEY": "mock-key",
    }
    async with Client(env=env, transport=httpx.MockTransport(handler), state_home=tmp_path) as client:
        outcome = await client.ask("Hi", stream=False)
        with pytest.raises(ConfigError, match="empty"):
            await client.ask(" ")
    assert outcome.completion is not None and outcome.completion.content == "Plain."
    assert len(seen) == 1 and "stream" not in seen[0]


SILENT_FIRST = """\
version = 1
[route]
targets = [{ provider = "openai-direct", attempt_timeout_s = 0.4 }, "glm-direct"]
[retry]
max_attempts = 1
"""


@pytest.mark.parametrize("mode", ["hang", "stall"])
async def test_a_whole_reply_late_on_the_direct_way_is_a_timeout_and_its_connection_is_dropped(
    box: Sandbox, tmp_path: Path, mode: str
) -> None:
    """Non-streamed on the client's own transport, the attempt's timeout is kept by the
    connection's timer rather than a cancel scope: a provider silent before its head (hang) or
    in the middle of its body (stall) is left after attempt_timeout_s, the next target answers,
    and the late connection is not reused (the provider answering again, a new call is ok)."""
    box.set_mode("openai-direct", mode)
    async with Client(SILENT_FIRST, env=box.env(), state_home=tmp_path) as client:
        started = anyio.current_time()
        outcome = await client.ask("Hello?", stream=False)
        took = anyio.current_time() - started
        assert [(a.provider, a.outcome) for a in outcome.attempts] == [
            ("openai-direct", "timeout"),
            ("glm-direct", "ok"),
        ]
        assert 0.4 <= took < 1.5, took
        assert outcome.attempts[0].message is not None and "0.4 s" in outcome.attempts[0].message
        box.set_mode("openai-direct", "ok")
        again = await client.ask("Hello?", stream=False)
        assert again.provider == "openai-direct" and [a.outcome for a in again.attempts] == ["ok"]
    assert await attempts(tmp_path) == ["openai-direct", "glm-direct", "openai-direct"]
