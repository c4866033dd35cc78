"""The analysis in-process: ``run_analysis`` and ``rmgr analyze``'s flow (``rmcli.api.Client``
then the command's report) against an in-process sandbox whose answers each test writes, so
that what a model says (every confidence form, no confidence, terminal escapes, a failure for
some perspectives only) is exactly known.

Each test states the behaviour it checks; stdout and stderr are read with ``capsys``.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from rmcli import api
from rmcli.analysis import AnalysisRun, run_analysis
from rmcli.analysis_view import LiveProgress
from rmcli.api import _perspectives
from rmcli.commands.analyze import _analysis
from rmcli.config import ConfigError, RouteSetup, load_route
from rmcli.environment import api_key
from rmcli.hooks import Hooks
from rmcli.runner import Routing
from rmcli.sandbox import Sandbox
from rmcli.sandbox.replies import last_user_text
from rmcore.confidence import overall_confidence
from rmcore.perspectives import BUILTIN, Perspective

pytestmark = pytest.mark.anyio

QUESTION = "Should we move our nightly batch jobs to a queue?"

FAST_POLICY = """\
version = 1
[route]
targets = ["glm-direct"]
[retry]
max_attempts = 2
backoff_initial_s = 0.01
backoff_max_s = 0.02
[breaker]
failure_threshold = 100
"""
"""glm-direct alone, a retry after a hundredth of a second, and a breaker that stays closed so
that failing perspectives cannot stop the others."""

_TITLE = re.compile(r"from the (.+?) perspective")


class Script:
    """What the sandbox answers, by perspective title: a text, or a failure (the provider answers
    500); perspectives not named get ``default``."""

    def __init__(self) -> None:
        self.answers: dict[str, str] = {}
        self.failing: set[str] = set()
        self.default = '{"findings": "Fine.", "recommendation": "Proceed.", "confidence": 0.5}'

    def reply(self, provider: str, request: dict[str, Any]) -> str:
        found = _TITLE.search(last_user_text(request))
        title = found.group(1) if found else ""
        if title in self.failing:
            raise RuntimeError(f"{title} is scripted to fail")
        return self.answers.get(title, self.default)


@pytest.fixture
def script() -> Script:
    """What this test's sandbox answers (every perspective the default JSON answer until set)."""
    return Script()


@pytest.fixture
async def box(script: Script) -> AsyncIterator[Sandbox]:
    """An in-process sandbox answering from ``script``."""
    async with Sandbox(reply=script.reply) as sandbox:
        yield sandbox


def environment(box: Sandbox, tmp_path: Path) -> dict[str, str]:
    return {**box.env(), "RECURSIVEMANAGER_HOME": str(tmp_path / "state")}


def setup_for(env: dict[str, str], tmp_path: Path, policy: str = FAST_POLICY) -> RouteSetup:
    path = tmp_path / "policy.toml"
    path.write_text(policy, encoding="utf-8")
    return load_route(env, policy_path=path)


def chosen(*ids: str) -> list[Perspective]:
    return [BUILTIN[i] for i in ids]


async def execute(
    env: dict[str, str],
    setup: RouteSetup,
    perspectives: list[Perspective],
    fmt: str = "json",
    *,
    cache: bool = True,
) -> int:
    """``rmgr analyze --no-synthesis`` as the command runs it: a ``Client`` with the live
    progress's hooks, then the report in ``fmt``; the exit code. (These tests count the
    perspectives' requests; tests/cli/test_synthesis.py tests the synthesis.)"""
    client = api.Client(setup.policy, env=env, hooks=LiveProgress(live=False).hooks(), command="analyze")
    options = {
        "perspectives": [p.id for p in perspectives],
        "agent_id": "tests",
        "persist_history": True,
        "use_cache": cache,
        "synthesis": False,
    }
    return await _analysis(client, QUESTION, options, fmt)  # type: ignore[arg-type]


async def analyse(
    env: dict[str, str],
    setup: RouteSetup,
    perspectives: list[Perspective],
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    hooks: Hooks | None = None,
    **options: Any,
) -> AnalysisRun:
    """``run_analysis`` itself, on the state ``env`` chooses and an HTTP client of its own; without
    the synthesis unless ``options`` ask for it (these tests count the perspectives' requests;
    tests/cli/test_synthesis.py tests the synthesis)."""
    options.setdefault("synthesize", False)
    async with api.records(env=env) as state, httpx.AsyncClient(timeout=None, transport=transport) as client:
        routing = Routing(
            client=client,
            keys=lambda spec: api_key(env, spec.key_env),
            state=state,
            hooks=hooks or Hooks(),
            command="analyze",
        )
        return await run_analysis(QUESTION, perspectives, setup, routing, **options)


def by_id(document: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["id"]: p for p in document["perspectives"]}


async def test_each_confidence_form_parses_to_its_number(
    box: Sandbox, script: Script, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Served over HTTP by the sandbox, every form a model writes its confidence in is read as the
    right number; an answer without one is ``null`` (flagged, never a default), still counts as
    answered, and the overall confidence is computed from the others alone."""
    script.answers = {
        "Security": "Findings: tokens never leave the server.\nConfidence: 0.8",
        "Architecture": "The queue decouples producers.\n\n**Confidence:** 0.85",
        "Simplicity": "One more moving part.\nConfidence: 85%",
        "Financial": "It pays back in a quarter; I have a confidence of 0.9/1.0 in that.",
        "Marketing": 'Here it is:\n```json\n{"findings": "No customer sees it.", "recommendation": '
        '"Proceed.", "confidence": 0.75, "reasoning": "Internal change."}\n```',
        "User Experience": "Users will not notice anything either way.",
    }
    env = environment(box, tmp_path)
    ids = ("security", "architecture", "simplicity", "financial", "marketing", "ux")

    code = await execute(env, setup_for(env, tmp_path), chosen(*ids))

    document = json.loads(capsys.readouterr().out)
    assert code == 0
    assert document["status"] == "ok"
    found = {i: p["confidence"] for i, p in by_id(document).items()}
    expected = {
        "security": 0.8,
        "architecture": 0.85,
        "simplicity": 0.85,
        "financial": 0.9,
        "marketing": 0.75,
        "ux": None,
    }
    assert found == pytest.approx(expected)
    ux = by_id(document)["ux"]
    assert ux["error"] is None
    assert "no_confidence" in ux["flags"]
    assert ux["analysis"] == "Users will not notice anything either way."
    assert by_id(document)["marketing"]["recommendation"] == "Proceed."
    known = [v for v in expected.values() if v is not None]
    assert document["overallConfidence"] == pytest.approx(overall_confidence(known))
    assert document["overallConfidence"] < sum(known) / len(known)  # the spread lowers it
    assert len(box.requests("glm-direct")) == len(ids)


async def test_no_confidence_reads_as_unknown_in_text(
    box: Sandbox, script: Script, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The text report shows a missing confidence as "unknown" and says why; it never prints a
    number that was not stated."""
    script.answers = {"Security": "Looks fine.\nConfidence: 0.7", "User Experience": "Nobody will notice."}
    env = environment(box, tmp_path)

    code = await execute(env, setup_for(env, tmp_path), chosen("security", "ux"), "text")

    out = capsys.readouterr().out
    assert code == 0
    assert "Overall Confidence: 0.70" in out
    assert re.search(r"User Experience\s*│\s*unknown\s*│", out)
    assert "(the answer stated no confidence: it is reported as unknown)" in out


async def test_a_provider_failing_for_some_perspectives_makes_a_partial_report(
    box: Sandbox, script: Script, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Growth and Emotional Intelligence get a 500 on every attempt: the report is ``partial``,
    exit 3, stderr names both, each carries its error, and the overall confidence is over the six
    that answered. A second run asks again only those two (the others come from the cache)."""
    script.failing = {"Growth", "Emotional Intelligence"}
    env = environment(box, tmp_path)
    setup = setup_for(env, tmp_path)
    everything = _perspectives(setup, None)

    code = await execute(env, setup, everything)

    captured = capsys.readouterr()
    document = json.loads(captured.out)
    assert code == 3
    assert document["status"] == "partial"
    assert "WARNING: 2 of 8 perspectives failed: growth (server_error), emotional (server_error)" in (
        captured.err
    )
    results = by_id(document)
    for failed in ("growth", "emotional"):
        assert results[failed]["error"]["kind"] == "server_error"
        assert results[failed]["analysis"] is None
        assert results[failed]["confidence"] is None
    answered = [p for p in document["perspectives"] if p["error"] is None]
    assert len(answered) == 6
    assert document["overallConfidence"] == pytest.approx(0.5)
    assert "6 of 8 perspectives answered." in document["summary"]
    # 6 answers, and 2 attempts (the first and one retry) for each failing perspective.
    assert len(box.requests("glm-direct")) == 6 + 2 * 2

    box.clear_log()
    script.failing = set()
    code = await execute(env, setup, everything)

    document = json.loads(capsys.readouterr().out)
    assert code == 0
    assert document["status"] == "ok"
    assert len(box.requests("glm-direct")) == 2
    cached = {p["id"] for p in document["perspectives"] if p["metadata"]["cached"]}
    assert cached == {p.id for p in everything} - {"growth", "emotional"}


async def test_fewer_answers_than_min_perspectives_fail_the_run(
    box: Sandbox, script: Script, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With ``[analysis] min_perspectives = 2`` and only one of three perspectives answering, the
    analysis is ``failed`` (exit 1) and stderr says why; it is still saved in the history."""
    script.failing = {"Growth", "User Experience"}
    env = environment(box, tmp_path)
    setup = setup_for(env, tmp_path, FAST_POLICY + "[analysis]\nmin_perspectives = 2\n")

    code = await execute(env, setup, chosen("security", "ux", "growth"))

    captured = capsys.readouterr()
    assert code == 1
    assert json.loads(captured.out)["status"] == "failed"
    assert "error: the analysis failed: fewer than 2 perspective(s) answered" in captured.err
    async with api.records(env=env) as state:
        assert [e.status for e in await state.history.list("tests")] == ["failed"]


async def test_min_perspectives_above_those_chosen_is_a_configuration_error(
    box: Sandbox, tmp_path: Path
) -> None:
    """Asking for fewer perspectives than the policy requires could never succeed: it is refused
    before anything is sent."""
    env = environment(box, tmp_path)
    setup = setup_for(env, tmp_path, FAST_POLICY + "[analysis]\nmin_perspectives = 3\n")

    with pytest.raises(ConfigError, match="min_perspectives is 3"):
        _perspectives(setup, ["security", "ux"])
    assert box.requests("glm-direct") == []


async def test_no_answer_at_all_fails_the_run(
    box: Sandbox, script: Script, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """When every perspective fails, the status is ``failed`` (exit 1) and the overall confidence
    is unknown, not zero."""
    script.failing = {"Security", "User Experience"}
    env = environment(box, tmp_path)

    code = await execute(env, setup_for(env, tmp_path), chosen("security", "ux"))

    document = json.loads(capsys.readouterr().out)
    assert code == 1
    assert document["status"] == "failed"
    assert document["overallConfidence"] is None


async def test_terminal_escapes_in_answers_are_shown_escaped(
    box: Sandbox, script: Script, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A model that writes escape sequences cannot recolour or rewrite the terminal: in text and
    in Markdown they are shown as visible ``\\x1b`` text; JSON keeps the exact answer."""
    script.answers = {"Security": "\x1b[31mRED ALERT\x1b[0m everything is fine.\x1b[2J\nConfidence: 0.6"}
    env = environment(box, tmp_path)
    setup = setup_for(env, tmp_path)

    assert await execute(env, setup, chosen("security"), "text") == 0
    text = capsys.readouterr().out
    assert await execute(env, setup, chosen("security"), "markdown") == 0
    markdown = capsys.readouterr().out
    assert await execute(env, setup, chosen("security"), "json") == 0
    document = json.loads(capsys.readouterr().out)

    for out in (text, markdown):
        assert "\x1b" not in out
        assert "\\x1b[31mRED ALERT\\x1b[0m" in out
        assert "\\x1b[2J" in out
    assert document["perspectives"][0]["analysis"].startswith("\x1b[31mRED ALERT\x1b[0m")


class _FailingPrimary(httpx.AsyncBaseTransport):
    """glm-direct answers 500 with an error message full of escape sequences; every other URL is
    sent on to the sandbox over real HTTP."""

    def __init__(self, primary_url: str) -> None:
        self.primary_url = primary_url
        self.real = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if str(request.url) == self.primary_url:
            body = {"error": {"message": "\x1b[2J\x1b[Hcleared your screen", "type": "server_error"}}
            return httpx.Response(500, json=body)
        return await self.real.handle_async_request(request)

    async def aclose(self) -> None:
        await self.real.aclose()


async def test_fail_over_notices_show_provider_messages_escaped(
    box: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The seed's fail-over lines quote the provider's error message: its escape sequences are
    shown escaped on stderr too, and the notice is printed once for all perspectives."""
    env = environment(box, tmp_path)
    policy = FAST_POLICY.replace('targets = ["glm-direct"]', 'targets = ["glm-direct", "openai-direct"]')
    setup = setup_for(env, tmp_path, policy)
    perspectives = chosen("security", "ux")

    run = await analyse(
        env,
        setup,
        perspectives,
        transport=_FailingPrimary(box.url("glm-direct")),
        hooks=LiveProgress(live=False).hooks(),
    )

    err = capsys.readouterr().err
    assert run.status == "ok"
    assert {r.provider for r in run.results} == {"openai-direct"}
    assert "\x1b" not in err
    warning = "WARNING: Primary provider (glm-direct) failed: HTTP 500: \\x1b[2J\\x1b[Hcleared your screen"
    assert err.count(warning) == 1
    assert err.count("INFO: Attempting fallback provider: openai-direct") == 1


async def test_markdown_table_escapes_pipes(
    box: Sandbox, script: Script, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A finding with ``|`` in it stays in its cell of the Markdown table."""
    script.answers = {
        "Security": '{"findings": "Use A | B tokens.", "recommendation": "Proceed.", "confidence": 0.7}'
    }
    env = environment(box, tmp_path)

    assert await execute(env, setup_for(env, tmp_path), chosen("security", "ux"), "markdown") == 0

    out = capsys.readouterr().out
    assert out.startswith("# Multi-perspective analysis\n")
    rows = [line for line in out.splitlines() if line.startswith("| Security |")]
    assert rows == ["| Security | 0.70 | glm-direct (glm-4.7) | Use A \\| B tokens. |"]
    assert "| User Experience | 0.50 | glm-direct (glm-4.7) | Fine. |" in out


async def test_cached_answers_send_nothing_and_cost_nothing(
    box: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A second identical run is served from the cache: no request, every perspective marked
    cached with zero cost and zero tokens (what it cost in this run), no attempt; the text report
    says so."""
    env = environment(box, tmp_path)
    setup = setup_for(env, tmp_path)
    perspectives = chosen("security", "ux")
    first = await analyse(env, setup, perspectives)
    assert len(box.requests("glm-direct")) == 2
    box.clear_log()

    assert await execute(env, setup, perspectives) == 0
    document = json.loads(capsys.readouterr().out)
    assert await execute(env, setup, perspectives, "text") == 0
    text = capsys.readouterr().out

    assert box.requests("glm-direct") == []
    assert not any(r.cached for r in first.results)
    for p in document["perspectives"]:
        assert p["metadata"]["cached"] is True
        assert p["metadata"]["provider"] == "glm-direct"
        assert p["metadata"]["costUsd"] == 0.0
        assert p["metadata"]["usage"] == {"inputTokens": 0, "outputTokens": 0}
    assert document["usage"] == {"inputTokens": 0, "outputTokens": 0, "costUsd": 0.0}
    assert document["attempts"] == []
    assert document["overallConfidence"] == first.overall
    assert "2 from the cache" in text
    assert text.count("glm-direct (cached)") == 2
    async with api.records(env=env) as state:
        stats = await state.cache.stats(0, 10**15)
    assert (stats.entries, stats.hits, stats.misses) == (2, 4, 2)


async def test_no_cache_asks_again_and_stores_nothing(box: Sandbox, tmp_path: Path) -> None:
    """``use_cache=False`` neither reads nor writes the cache."""
    env = environment(box, tmp_path)
    setup = setup_for(env, tmp_path)

    await analyse(env, setup, chosen("security"), use_cache=False)
    await analyse(env, setup, chosen("security"), use_cache=False)

    assert len(box.requests("glm-direct")) == 2
    async with api.records(env=env) as state:
        stats = await state.cache.stats(0, 10**15)
    assert (stats.entries, stats.hits, stats.misses) == (0, 0, 0)


async def test_a_ttl_of_zero_turns_the_cache_off(box: Sandbox, tmp_path: Path) -> None:
    """``ANALYSIS_CACHE_TTL_MS=0`` means no cache: every run asks, and nothing is stored."""
    env = environment(box, tmp_path)
    setup = setup_for(env, tmp_path)

    for _ in range(2):
        await analyse(env, setup, chosen("security"), cache_ttl_ms=0)

    assert len(box.requests("glm-direct")) == 2
    async with api.records(env=env) as state:
        assert (await state.cache.stats(0, 10**15)).entries == 0


async def test_cache_scopes_keep_providers_answers_apart(box: Sandbox, tmp_path: Path) -> None:
    """An answer cached under one scope (``rmgr compare``'s provider) is not served under another,
    so that one provider's answer is never reported as another's; within a scope it is."""
    env = environment(box, tmp_path)
    setup = setup_for(env, tmp_path)
    perspectives = chosen("security")

    await analyse(env, setup, perspectives, cache_scope="compare:glm-direct")
    other = await analyse(env, setup, perspectives, cache_scope="compare:openai-direct")
    again = await analyse(env, setup, perspectives, cache_scope="compare:glm-direct")
    unscoped = await analyse(env, setup, perspectives)

    assert not other.results[0].cached
    assert again.results[0].cached
    assert not unscoped.results[0].cached
    assert len(box.requests("glm-direct")) == 3
