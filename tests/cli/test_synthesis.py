"""The synthesis of an analysis end to end, as a user runs it: perspectives sent by their named
routes, then one anonymised request to the chair's route, its decision reported first, its cost
counted; ``--no-synthesis`` skips it; a chair that fails leaves the perspectives and exits 3.

The sandbox runs in this test process, so that each test reads what every provider received.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal

from rmcli.sandbox import Sandbox
from tests.cli.helpers import Cli, write_policy

QUESTION = "Should we move billing to event sourcing?"
PANEL = """\
version = 1
[route]
targets = ["glm-direct"]
[routes.deep]
targets = ["anthropic-direct", "glm-direct"]
[routes.chair]
targets = ["openai-direct"]
[analysis]
synthesis_route = "chair"
[analysis.routes]
security = "deep"
[limits]
max_usd = 1.0
"""
PROVIDER_NAMES = ("glm-direct", "anthropic-direct", "openai-direct", "aiceo-gateway")


@pytest.fixture(scope="module")
def running() -> Iterator[tuple[BlockingPortal, Sandbox]]:
    with start_blocking_portal(backend="asyncio") as portal:
        sandbox = Sandbox({"aiceo-gateway": "down"})
        with portal.wrap_async_context_manager(sandbox):
            yield portal, sandbox


@pytest.fixture
def box(running: tuple[BlockingPortal, Sandbox]) -> tuple[BlockingPortal, Sandbox]:
    portal, sandbox = running
    portal.call(sandbox.clear_log)
    for name in ("glm-direct", "anthropic-direct", "openai-direct"):
        portal.call(sandbox.set_mode, name, "ok")
    return running


@pytest.fixture
def user(cli: Cli, box: tuple[BlockingPortal, Sandbox]) -> Cli:
    return cli.with_env(box[1].env(), AI_PROVIDER="glm-direct")


def bodies(box: tuple[BlockingPortal, Sandbox], name: str) -> list[Any]:
    portal, sandbox = box
    return [r.body for r in portal.call(sandbox.requests, name)]


def test_perspectives_go_by_their_routes_then_one_anonymous_request_decides(
    user: Cli, box: tuple[BlockingPortal, Sandbox]
) -> None:
    """security by the deep route (anthropic-direct), the seven others by the default
    (glm-direct); then exactly one request to the chair (openai-direct), sent after the last
    perspective answered, holding the question and every answer and no provider name; the JSON's
    synthesis has a decision and its cost, and the run's costUsd counts it."""
    policy = write_policy(user.home, "panel.toml", PANEL)
    code, document = user.json("run", "--policy", str(policy), QUESTION, "--format", "json", "--no-cache")
    assert code == 0
    by = {p["id"]: p["metadata"]["provider"] for p in document["perspectives"]}
    assert by.pop("security") == "anthropic-direct" and set(by.values()) == {"glm-direct"} and len(by) == 7
    (chair,) = bodies(box, "openai-direct")
    sent = json.dumps(chair)
    prompt = chair["messages"][-1]["content"]
    assert QUESTION in prompt
    for p in document["perspectives"]:
        withheld = p["analysis"]
        for name in PROVIDER_NAMES:
            withheld = withheld.replace(name, "[name withheld]")
        assert f'perspective="{p["perspective"]}"' in prompt and withheld in prompt
    for name in PROVIDER_NAMES:
        assert name not in sent, name
    synthesis = document["synthesis"]
    assert synthesis["decision"] in ("go", "no-go", "conditional", "unclear")
    assert synthesis["recommendation"] and synthesis["provider"] == "openai-direct"
    assert synthesis["costUsd"] > 0 and synthesis["error"] is None
    spent = sum(p["metadata"]["costUsd"] for p in document["perspectives"])
    assert document["costUsd"] == pytest.approx(spent + synthesis["costUsd"], rel=1e-4)
    attempts = document["attempts"]
    last_answer = max(a["startedAtMs"] + a["latencyMs"] for a in attempts if a["provider"] != "openai-direct")
    (asked,) = [a for a in attempts if a["provider"] == "openai-direct"]
    assert asked["startedAtMs"] >= last_answer - 1


def test_the_text_report_opens_with_the_decision(user: Cli) -> None:
    """The text report shows the decision before the table, and no keyword summary under it."""
    done = user.run("analyze", QUESTION, "--perspectives", "security,ux", "--no-cache")
    assert done.returncode == 0, done.stderr
    decision = done.stdout.index("Decision: ")
    assert decision < done.stdout.index("Finding")  # the table's heading
    assert "\nSummary\n" not in done.stdout


def test_a_perspective_answered_by_its_own_routes_first_target_is_no_fallback(
    user: Cli, box: tuple[BlockingPortal, Sandbox]
) -> None:
    """security goes by ``deep`` (anthropic-direct first), the others by ``default`` (glm-direct):
    neither served as a fallback. With anthropic-direct down, glm-direct answers security as the
    fallback of ``deep``."""
    policy = write_policy(user.home, "panel.toml", PANEL)
    done = user.run("run", "--policy", str(policy), QUESTION, "--perspectives", "security,ux", "--no-cache")
    assert done.returncode == 0, done.stderr
    assert "Provider: anthropic-direct, glm-direct\n" in done.stdout.replace("│", "").replace("  ", "")

    portal, sandbox = box
    portal.call(sandbox.set_mode, "anthropic-direct", "down")
    done = user.run("run", "--policy", str(policy), QUESTION, "--perspectives", "security,ux", "--no-cache")
    assert done.returncode == 0, done.stderr
    assert "Provider: glm-direct (fallback)" in done.stdout


def test_no_synthesis_sends_no_synthesis_request(user: Cli, box: tuple[BlockingPortal, Sandbox]) -> None:
    """``--no-synthesis``: the perspectives only; the JSON's synthesis is null."""
    policy = write_policy(user.home, "panel.toml", PANEL)
    code, document = user.json(
        "run", "--policy", str(policy), QUESTION, "--format", "json", "--no-synthesis", "--no-cache"
    )
    assert code == 0 and document["synthesis"] is None
    assert bodies(box, "openai-direct") == []


def test_a_failing_chair_keeps_the_perspectives_and_exits_3(
    user: Cli, box: tuple[BlockingPortal, Sandbox]
) -> None:
    """The chair's provider answers 500: exit 3 (partial), all eight perspectives kept, the
    synthesis's error in the JSON and on the text report, the keyword summary standing in."""
    portal, sandbox = box
    portal.call(sandbox.set_mode, "openai-direct", "status:500")
    policy = write_policy(user.home, "panel.toml", PANEL)
    code, document = user.json("run", "--policy", str(policy), QUESTION, "--format", "json", "--no-cache")
    assert code == 3 and document["status"] == "partial"
    assert all(p["error"] is None for p in document["perspectives"]) and len(document["perspectives"]) == 8
    assert document["synthesis"]["error"]["kind"] == "server_error"
    assert document["synthesis"]["decision"] is None
    text = user.run("run", "--policy", str(policy), QUESTION)
    assert text.returncode == 3
    assert "Synthesis failed (server_error)" in text.stdout and "\nSummary\n" in text.stdout


def test_a_second_run_takes_the_synthesis_from_the_cache(
    user: Cli, box: tuple[BlockingPortal, Sandbox]
) -> None:
    """The same answers again (all from the cache): the decision comes from the cache too,
    costing nothing and sending nothing."""
    policy = write_policy(user.home, "panel.toml", PANEL)
    args = ("run", "--policy", str(policy), QUESTION, "--format", "json")
    first = user.json(*args)[1]["synthesis"]
    second = user.json(*args)[1]["synthesis"]
    assert len(bodies(box, "openai-direct")) == 1
    assert second["cached"] and second["costUsd"] == 0
    assert (second["decision"], second["recommendation"]) == (first["decision"], first["recommendation"])
