"""``rmgr serve``'s named client keys and figures: ``[serve.keys.NAME] rpm`` and
``max_usd_per_day`` answered with 429 and ``Retry-After`` (counted in the shared state, so every
worker sees the same use), ``GET /metrics`` in Prometheus's text format, and the access log."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import openai
import pytest

from rmcli import api
from rmcli.serve.keys import ClientKey, ClientKeysError, parse_keys
from rmcli.serve.metrics import Counts, render
from rmcore.attempts import AttemptRecord
from rmcore.chat_request import decode_openai_chat
from rmcore.completion import Usage
from rmcore.pricing import worst_case_usd
from rmcore.providers import builtin_providers
from rmcore.quota import client_caps
from tests.cli.helpers import Cli, closed_url, write_policy
from tests.cli.state_backends import Backend
from tests.cli.test_serve import HELLO, Served, serving

CAPPED, BUSY, FREE = "sk-capped-5e1f0a", "sk-busy-9c2d7b", "sk-free-4a8e6c"
UPSTREAM = {"OPENAI_API_URL": closed_url("/v1/chat/completions"), "OPENAI_API_KEY": "sk-upstream-0000"}
"""A provider that is never reached (the tests of set-up and of the door send nothing)."""
BODY: Any = {"model": "default", "messages": HELLO, "max_tokens": 200}


def _policy(usd_per_day: float) -> str:
    return f"""version = 1
[route]
targets = ["openai-direct"]
[retry]
max_attempts = 1
[serve.keys.capped]
max_usd_per_day = {usd_per_day!r}
[serve.keys.busy]
rpm = 3
"""


def _worst_case_usd() -> float:
    """What one request of ``BODY`` reserves at openai-direct (its worst case)."""
    request = decode_openai_chat(httpx.Request("POST", "/", json=BODY).read()).unwrap().request
    return worst_case_usd(request, builtin_providers({})["openai-direct"])


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A gateway whose key ``capped`` can afford one request a day and ``busy`` three a minute."""
    keys = (ClientKey(CAPPED.encode(), "capped"), ClientKey(BUSY.encode(), "busy"), ClientKey(FREE.encode()))
    with serving(tmp_path_factory.mktemp("limits"), _policy(_worst_case_usd() * 1.1), keys) as box:
        yield box


def _post(box: Served, key: str) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"}
    return httpx.post(f"{box.url}/v1/chat/completions", json=BODY, headers=headers, timeout=10)


def _clear_of_a_minute_boundary() -> None:
    """Wait, if need be, so that the next few requests fall in one rpm window."""
    left = 60.0 - time.time() % 60.0
    if left < 3.0:
        time.sleep(left + 0.05)


def test_a_key_past_its_rpm_gets_429_with_retry_after_and_nothing_is_sent(limited: Served) -> None:
    _clear_of_a_minute_boundary()
    limited.portal.call(limited.sandbox.clear_log)
    replies = [_post(limited, BUSY) for _ in range(4)]
    assert [r.status_code for r in replies] == [200, 200, 200, 429]
    refused = replies[3]
    error = refused.json()["error"]
    assert error["type"] == "rate_limit_error" and error["code"] == "rate_limit_exceeded"
    assert "client key busy sent its 3 requests of this minute" in error["message"]
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert len(limited.bodies("openai-direct")) == 3
    # Another key is not held back by busy's count.
    assert _post(limited, FREE).status_code == 200


def test_a_key_past_its_daily_budget_gets_429_and_sends_nothing_more(limited: Served) -> None:
    """The day's budget holds one request's worst case and a tenth: the first goes, the second's
    worst case does not fit (nothing is sent), and the door refuses the rest while the spend stands."""
    limited.portal.call(limited.sandbox.clear_log)
    first = _post(limited, CAPPED)
    assert first.status_code == 200, first.text
    second = _post(limited, CAPPED)
    assert second.status_code == 429, second.text
    assert "client key capped" in second.json()["error"]["message"]
    assert int(second.headers["retry-after"]) >= 1
    assert len(limited.bodies("openai-direct")) == 1
    # The Anthropic API gets the refusal in its own shape.
    reply = httpx.post(
        f"{limited.url}/v1/messages",
        json={"model": "default", "max_tokens": 200, "messages": HELLO},
        headers={"x-api-key": CAPPED},
        timeout=10,
    )
    assert reply.status_code == 429 and reply.json()["type"] == "error"
    assert len(limited.bodies("openai-direct")) == 1


def test_a_streamed_request_past_the_budget_is_429_too(limited: Served) -> None:
    client = openai.OpenAI(base_url=f"{limited.url}/v1", api_key=CAPPED, max_retries=0, timeout=10)
    _post(limited, CAPPED)  # whatever the order of the tests, the day's budget is spent now
    with pytest.raises(openai.RateLimitError):
        list(client.chat.completions.create(model="default", messages=HELLO, max_tokens=200, stream=True))


def test_metrics_are_prometheus_text_with_rmgr_counters(limited: Served) -> None:
    assert httpx.get(f"{limited.url}/metrics").status_code == 401
    limited.mode("openai-direct", "status:500")
    try:
        assert _post(limited, FREE).status_code == 502
    finally:
        limited.mode("openai-direct", "ok")
    assert _post(limited, FREE).status_code == 200
    reply = httpx.get(f"{limited.url}/metrics", headers={"authorization": f"Bearer {FREE}"})
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = reply.text
    samples = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    for status in (200, 502):
        requests = f'rmgr_requests_total{{endpoint="/v1/chat/completions",model="default",status="{status}"}}'
        assert float(samples[requests]) >= 1
    assert float(samples['rmgr_attempts_total{provider="openai-direct",outcome="ok"}']) >= 1
    assert float(samples['rmgr_attempt_failures_total{provider="openai-direct",kind="server_error"}']) >= 1
    assert float(samples['rmgr_attempt_duration_seconds_count{provider="openai-direct"}']) >= 2
    assert float(samples['rmgr_attempt_duration_seconds_bucket{provider="openai-direct",le="+Inf"}']) >= 2
    assert float(samples['rmgr_tokens_total{provider="openai-direct",direction="output"}']) > 0
    assert float(samples['rmgr_cost_usd_total{provider="openai-direct"}']) > 0
    assert samples['rmgr_circuit_state{provider="openai-direct",state="closed"}'] == "1"
    assert samples['rmgr_requests_in_flight'] == "1"  # this scrape
    for line in text.splitlines():
        assert line.startswith(("# HELP rmgr_", "# TYPE rmgr_", "rmgr_")), line


def test_the_access_log_names_the_key_never_shows_it(
    limited: Served, capfd: pytest.CaptureFixture[str]
) -> None:
    _clear_of_a_minute_boundary()
    assert _post(limited, FREE).status_code == 200
    time.sleep(0.05)
    logged = capfd.readouterr().err
    line = next(line for line in logged.splitlines() if '"POST /v1/chat/completions" 200' in line)
    assert "model=default key=- provider=openai-direct attempts=1 cost_usd=" in line
    assert FREE not in logged and "Is a monorepo" not in logged  # no content without --log-content


def test_the_keys_limits_are_shared_by_every_client_of_the_state(store_backend: Backend) -> None:
    """Two workers (two ``api.Client``s on one state: a SQLite file, or Redis for several hosts)
    count one key's requests together."""
    home = store_backend.home
    home.mkdir(parents=True, exist_ok=True)
    path = write_policy(home, "p.toml", _policy(1.0))
    env = {"RECURSIVEMANAGER_HOME": str(home), **store_backend.env, **UPSTREAM}

    async def admit_six() -> list[bool]:
        async with api.Client(path, env=env) as one, api.Client(path, env=env) as two:
            caps = client_caps(one.setup.policy, "busy")
            return [await client.admit(caps) is None for client in (one, two, one, two, one, two)]

    _clear_of_a_minute_boundary()
    assert anyio.run(admit_six) == [True, True, True, False, False, False]


def test_client_keys_are_read_with_their_names() -> None:
    keys = parse_keys({"RMGR_SERVE_KEYS": " sk-plain-1234 , ci = sk-ci-5678 ,,"})
    assert keys == (ClientKey(b"sk-plain-1234"), ClientKey(b"sk-ci-5678", "ci"))
    assert "sk-ci" not in repr(keys)
    for bad, said in (("a b=sk-1", "item 1"), ("ci=", "empty"), ("ci=sk-1,ci=sk-2", "two keys")):
        with pytest.raises(ClientKeysError, match=said):
            parse_keys({"RMGR_SERVE_KEYS": bad})


def test_serve_refuses_a_limit_on_a_key_it_does_not_have(cli: Cli, tmp_path: Path) -> None:
    policy = write_policy(tmp_path, "p.toml", _policy(1.0))
    only_capped = {"RMGR_SERVE_KEYS": "capped=sk-capped-0001", **UPSTREAM}
    done = cli.run("serve", "--policy", str(policy), env=only_capped)
    assert done.returncode == 2
    assert "busy" in done.stderr and "NAME=KEY" in done.stderr
    bad = cli.run("serve", "--policy", str(policy), env={"RMGR_SERVE_KEYS": "capped=,busy=sk-1", **UPSTREAM})
    assert bad.returncode == 2 and "RMGR_SERVE_KEYS, item 1" in bad.stderr


def test_counts_of_several_workers_add_up(tmp_path: Path) -> None:
    record = AttemptRecord(
        provider="glm-direct", model="m", outcome="ok", status=200, latency_ms=120.0,
        started_at_ms=0, usage=Usage(input_tokens=10, output_tokens=5), cost_usd=0.25,
    )
    one, two = Counts(tmp_path, name="one"), Counts(tmp_path, name="two")
    for counts in (one, two):
        counts.request_started()
        counts.attempt_ended(record)
        counts.request_ended("/v1/messages", "default", 200, 0.2)
        counts.write()
    total = two.all_workers()
    text = render(total, [], ["glm-direct"]).decode()
    assert 'rmgr_requests_total{endpoint="/v1/messages",model="default",status="200"} 2' in text
    assert 'rmgr_cost_usd_total{provider="glm-direct"} 0.5' in text
    assert 'rmgr_tokens_total{provider="glm-direct",direction="input"} 20' in text
    assert 'rmgr_attempt_duration_seconds_bucket{provider="glm-direct",le="0.1"} 0' in text
    assert 'rmgr_attempt_duration_seconds_bucket{provider="glm-direct",le="0.25"} 2' in text
    assert "rmgr_requests_in_flight 0" in text

