"""``rmgr --verbose``: every HTTP request and response and every routing decision traced on
stderr, and no key ever in it: not in a request header, not where a provider echoes one back (a
response header, a cookie, the answer), not in a URL's query."""

from __future__ import annotations

import json
import re
import subprocess
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rmcli import trace
from rmcli.hooks import Hooks, fan_out
from rmcli.output import add_secret
from rmcore.attempts import AttemptRecord
from rmcore.errors import ErrorKind, ProviderError
from rmcore.events import Backoff, FailedOver, SkippedTarget, StartAttempt, TargetSkipped
from rmcore.providers import builtin_providers
from tests.cli.helpers import Cli, SandboxProcess, closed_url

SANDBOX_KEY = "sandbox-key-"
"""How every sandbox key starts: none may be printed."""


def traced(done: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.startswith("TRACE: ")]


def assert_no_key(done: subprocess.CompletedProcess[str], *keys: str) -> None:
    for key in keys:
        assert key not in done.stdout, key
        assert key not in done.stderr, key


def test_ask_traces_requests_responses_and_the_fail_over(cli: Cli, sandbox: SandboxProcess) -> None:
    """The primary is down: the trace shows each attempt started and how it ended, the back-off
    and the fail-over, the fallback's request (method, URL, headers with the credential
    redacted) and its response (status, time, headers). The answer alone is on stdout."""
    user = cli.with_env(sandbox.env, AICEO_GATEWAY_URL=closed_url())
    done = user.run("--verbose", "ask", "hello")
    assert done.returncode == 0, done.stderr
    lines = traced(done)
    text = "\n".join(lines)
    assert "TRACE: attempt 1 on aiceo-gateway (glm-4.7) started: timeout 30 s (timeout)" in text
    assert re.search(
        r"TRACE: attempt on aiceo-gateway ended connection after \d+ ms.*: connection refused", text
    )
    assert re.search(r"TRACE: back-off: aiceo-gateway again in \d\.\d\d s", text)
    refused = r"connection \(connection refused to 127\.0\.0\.1:\d+ "
    assert re.search(rf"TRACE: fail-over from aiceo-gateway to glm-direct: {refused}", text)
    assert "> x-api-key: <redacted>" in text
    post = re.search(r"TRACE: #(\d+) > POST (http://127\.0\.0\.1:\d+/api/paas/v4/chat/completions)", text)
    assert post is not None and post.group(2) == sandbox.url("glm-direct")
    number = post.group(1)
    assert f"TRACE: #{number} > authorization: <redacted>" in lines
    assert f"TRACE: #{number} > accept: text/event-stream" in lines
    assert re.search(rf"TRACE: #{number} < 200 OK in \d+\.\d ms \(POST {re.escape(post.group(2))}\)", text)
    assert f"TRACE: #{number} < content-type: text/event-stream; charset=utf-8" in lines
    assert re.search(r"TRACE: attempt on glm-direct ended ok HTTP 200 after \d+ ms, \d+/\d+ tokens", text)
    assert "TRACE" not in done.stdout and "glm-direct, a simulated provider" in done.stdout
    assert_no_key(done, SANDBOX_KEY)


def test_the_option_goes_before_or_after_the_command_and_is_off_by_default(
    cli: Cli, sandbox: SandboxProcess
) -> None:
    """``-v`` after the command traces too (credential headers redacted, stdout still the JSON answer);
    without it nothing is traced."""
    user = cli.with_env(sandbox.env)
    after = user.run("ask", "hi", "--provider", "anthropic-direct", "-v", "--json")
    assert after.returncode == 0, after.stderr
    lines = traced(after)
    assert any(line.endswith("> x-api-key: <redacted>") for line in lines)
    assert any(line.endswith("> anthropic-version: 2023-06-01") for line in lines)
    assert json.loads(after.stdout)["provider"] == "anthropic-direct"
    quiet = user.run("ask", "hi", "--provider", "anthropic-direct", "--json")
    assert quiet.returncode == 0 and traced(quiet) == [] and "TRACE" not in quiet.stderr
    assert_no_key(after, SANDBOX_KEY)


def test_health_and_analyze_are_traced(cli: Cli, sandbox: SandboxProcess) -> None:
    """health: each check's GET; analyze: each perspective's exchanges and decisions, labelled
    with the perspective."""
    user = cli.with_env(sandbox.env)
    health = user.run("-v", "health", "openai-direct", "anthropic-direct")
    assert health.returncode == 0, health.stderr
    text = "\n".join(traced(health))
    assert re.search(r"#\d+ > GET http://127\.0\.0\.1:\d+/v1/models", text)
    assert "> authorization: <redacted>" in text and "> x-api-key: <redacted>" in text
    assert len(re.findall(r"#\d+ < 200 OK in", text)) == 2
    analysis = user.run(
        "-v",
        "analyze",
        "Should we ship?",
        "--perspectives",
        "security,ux",
        "--no-cache",
        "--provider",
        "glm-direct",
    )
    assert analysis.returncode == 0, analysis.stderr
    lines = traced(analysis)
    for perspective in ("security", "ux"):
        mine = [line for line in lines if line.startswith(f"TRACE: [{perspective}] ")]
        assert any(" > POST http://127.0.0.1:" in line for line in mine), perspective
        assert any(" > authorization: <redacted>" in line for line in mine), perspective
        assert any(" < 200 OK in " in line for line in mine), perspective
        assert any("attempt on glm-direct ended ok" in line for line in mine), perspective
    assert_no_key(health, SANDBOX_KEY)
    assert_no_key(analysis, SANDBOX_KEY)


class _EchoingProvider(BaseHTTPRequestHandler):
    """Answers with the key it was sent everywhere it can: in response headers (one named for
    it, a cookie, an innocently named one) and in the answer's text."""

    def _echo(self, body: dict[str, object]) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        key = (self.headers.get("authorization") or "").removeprefix("Bearer ")
        if "content" in json.dumps(body):
            body["choices"] = [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": f"You sent {key}."},
                    "finish_reason": "stop",
                }
            ]
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.send_header("x-echo-key", key)
        self.send_header("set-cookie", f"session={key}; HttpOnly")
        self.send_header("x-debug", f"request authorised with {key}")
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        self._echo({"id": "x", "object": "chat.completion", "model": "glm-4.7", "choices": "content"})

    def do_GET(self) -> None:
        self._echo({"object": "list", "data": [{"id": "glm-4.7", "object": "model"}]})

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def echoing_provider() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoingProvider)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_a_key_the_provider_echoes_never_reaches_the_trace(cli: Cli, echoing_provider: str) -> None:
    """The key travels (the provider answers with it in three headers and in the text) and the
    trace shows every one of those headers, by name, as <redacted>; a token in the URL's query is
    redacted too. No output holds the key or the token."""
    key = f"sk-test-ECHOED-{uuid.uuid4().hex}"
    token = f"tok-{uuid.uuid4().hex}"
    url = f"{echoing_provider}/v1/chat/completions?api_key={token}&region=eu"
    user = cli.with_env(GLM_API_URL=url, GLM_API_KEY=key, AI_PROVIDER="glm-direct")
    runs = [
        user.run("--verbose", "ask", "hello"),
        user.run("--verbose", "ask", "hello", "--json"),
        user.run("--verbose", "health", "glm-direct"),
    ]
    for done in runs:
        assert done.returncode == 0, done.stderr
        lines = traced(done)
        for header in ("authorization", "x-echo-key", "set-cookie", "x-debug"):
            arrow = ">" if header == "authorization" else "<"
            assert any(line.endswith(f"{arrow} {header}: <redacted>") for line in lines), (header, lines)
        assert_no_key(done, key, token, "ECHOED")
    asked = "\n".join(traced(runs[0]))
    assert re.search(
        r"> POST http://127\.0\.0\.1:\d+/v1/chat/completions\?api_key=<redacted>&region=eu", asked
    )
    assert "You sent <redacted>." in runs[0].stdout
    assert json.loads(runs[1].stdout)["content"] == "You sent <redacted>."


def test_help_documents_the_option(cli: Cli) -> None:
    """``--help`` of rmgr and of ask, analyze and health names ``--verbose`` / ``-v``; rmgr's
    describes what it traces."""
    for args in (("--help",), ("ask", "--help"), ("analyze", "--help"), ("health", "--help")):
        done = cli.run(*args)
        assert done.returncode == 0
        assert "--verbose" in done.stdout and "-v" in done.stdout, args
    top = " ".join(cli.run("--help").stdout.split())
    assert "trace on stderr every HTTP request" in top


# -- the pieces ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "shown"),
    [
        ("Authorization", "Bearer abc", "<redacted>"),
        ("x-api-key", "abc", "<redacted>"),
        ("Api-Key", "abc", "<redacted>"),
        ("Cookie", "a=b", "<redacted>"),
        ("set-cookie", "a=b", "<redacted>"),
        ("x-goog-api-key", "abc", "<redacted>"),
        ("x-auth-token", "abc", "<redacted>"),
        ("x-ratelimit-remaining-tokens", "9000", "9000"),
        ("anthropic-ratelimit-output-tokens-remaining", "40", "40"),
        ("content-type", "application/json", "application/json"),
        ("x-request-id", "req_1", "req_1"),
    ],
)
def test_redact_header_hides_credentials_by_name(name: str, value: str, shown: str) -> None:
    """Headers named like a credential are redacted; rate-limit headers counting tokens and ordinary
    headers are shown."""
    assert trace.redact_header(name, value) == shown


def test_redact_header_and_url_hide_a_known_key_wherever_it_is() -> None:
    """A known key is redacted in any header value and URL query; a URL's password and credential-named
    query parameters are redacted; a plain URL is unchanged."""
    key = f"sk-test-UNIT-{uuid.uuid4().hex}"
    add_secret(key)
    assert trace.redact_header("x-debug", f"you sent {key}") == "<redacted>"
    assert (
        trace.redact_url(f"http://127.0.0.1:1/v1?region=eu&q={key}")
        == "http://127.0.0.1:1/v1?region=eu&q=<redacted>"
    )
    assert trace.redact_url("http://u:hunter22@127.0.0.1:1/v1?token=t&x=1") == (
        "http://u:<redacted>@127.0.0.1:1/v1?token=<redacted>&x=1"
    )
    assert trace.redact_url("http://127.0.0.1:1/v1/chat") == "http://127.0.0.1:1/v1/chat"


def test_the_trace_hooks_trace_every_decision_beside_the_callers_own() -> None:
    """``Trace.hooks()`` fanned out with a caller's hooks: each routing decision (attempt started,
    back-off, fail-over, skip, attempt ended) is written as one trace line, and the caller's hook
    for it is called too, in the same order."""
    lines: list[str] = []
    seen: list[str] = []
    inner = Hooks(
        attempt_started=lambda action: seen.append("started"),
        attempt_ended=lambda record: seen.append("ended"),
        failed_over=lambda notice: seen.append("failed_over"),
        backing_off=lambda notice, seconds: seen.append("backing_off"),
        skipped=lambda notice: seen.append("skipped"),
    )
    spec = builtin_providers({"GLM_API_URL": "http://127.0.0.1:1/v1/chat/completions"})["glm-direct"]
    watch = fan_out(trace.Trace(lines.append).hooks(), inner)
    assert watch.attempt_started and watch.backing_off and watch.failed_over and watch.skipped
    assert watch.attempt_ended is not None
    watch.attempt_started(
        StartAttempt(
            attempt_id=1,
            provider=spec,
            attempt_no=2,
            timeout_s=30.0,
            timeout_kind=ErrorKind.DEADLINE,
            first_token_timeout_s=15.0,
            idle_timeout_s=20.0,
            exclusive=False,
        )
    )
    watch.backing_off(
        Backoff(provider="glm-direct", until=5.0, reason="glm-direct failed (rate_limited)"), 1.5
    )
    error = ProviderError(kind=ErrorKind.OVERLOADED, message="HTTP 529: Overloaded", status=529)
    watch.failed_over(
        FailedOver(from_provider="glm-direct", to_provider="openai-direct", error=error, primary=True)
    )
    watch.skipped(
        TargetSkipped(
            skipped=SkippedTarget(
                provider="openai-direct", kind=ErrorKind.CIRCUIT_OPEN, message="open for 20 s"
            )
        )
    )
    watch.attempt_ended(
        AttemptRecord(
            provider="glm-direct", model="glm-4.7", outcome="overloaded", status=529, latency_ms=12.0
        )
    )
    assert lines == [
        "TRACE: attempt 2 on glm-direct (glm-4.7) started, alongside others: timeout 30 s (deadline), "
        "first token 15 s, idle 20 s",
        "TRACE: back-off: glm-direct again in 1.50 s (glm-direct failed (rate_limited))",
        "TRACE: fail-over from glm-direct to openai-direct: overloaded (HTTP 529: Overloaded)",
        "TRACE: skip openai-direct without a request: circuit_open (open for 20 s)",
        "TRACE: attempt on glm-direct ended overloaded HTTP 529 after 12 ms, 0/0 tokens, $0.000000",
    ]
    assert seen == ["started", "backing_off", "failed_over", "skipped", "ended"]
