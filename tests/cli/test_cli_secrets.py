"""No API key is ever printed or stored: not by ``ask`` (text or JSON, answered or failed),
``health``, ``providers``, ``usage`` or ``policy``, not in the state database or its WAL.

Three runs: with the keys the sandbox accepts (so the keys really travel and answers come back),
with wrong marker keys (so every provider answers 401), and against a provider that quotes the
key it was sent in its error message, as some OpenAI-compatible servers do.
"""

from __future__ import annotations

import json
import subprocess
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.cli.helpers import KEY_VARIABLES, REPO, Cli, SandboxProcess, closed_url

SEQUENTIAL = str(REPO / "policies" / "sequential-failover.toml")

Run = tuple[tuple[str, ...], int, Mapping[str, str]]
"""A command line, the exit code it must end with, and variables of its own."""


def run_all(user: Cli, runs: Sequence[Run]) -> list[subprocess.CompletedProcess[str]]:
    results = []
    for args, code, env in runs:
        done = user.run(*args, env=env)
        assert done.returncode == code, (args, done.stderr)
        assert "Traceback" not in done.stderr
        results.append(done)
    return results


def assert_nowhere(
    secrets: Sequence[str], user: Cli, results: Sequence[subprocess.CompletedProcess[str]]
) -> None:
    """No secret in any output, nor in any byte of the state files."""
    for done in results:
        for secret in secrets:
            assert secret not in done.stdout, (done.args, secret)
            assert secret not in done.stderr, (done.args, secret)
    state = user.state_files
    assert any(p.name == "state.db" for p in state)
    for path in state:
        data = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in data, (path, secret)


def test_working_keys_are_sent_but_never_shown_or_stored(cli: Cli, sandbox: SandboxProcess) -> None:
    """Every provider is asked with its real (sandbox) key and answers; no output and no state
    file contains any of the keys."""
    user = cli.with_env(sandbox.env)
    keys = [sandbox.env[var] for var in KEY_VARIABLES]
    down = {"AICEO_GATEWAY_URL": closed_url()}
    runs: list[Run] = [
        (("ask", "hello"), 0, {}),
        (("ask", "hello", "--json"), 0, {}),
        (("ask", "hello", "--json"), 0, down),
        (("ask", "hello"), 0, down),
        (("ask", "hi", "--provider", "anthropic-direct", "--json"), 0, {}),
        (("ask", "hi", "--provider", "openai-direct", "--json"), 0, {}),
        (("health",), 0, {}),
        (("health", "--json"), 0, {}),
        (("providers",), 0, {}),
        (("providers", "--json"), 0, {}),
        (("usage",), 0, {}),
        (("usage", "--json"), 0, {}),
        (("policy", "explain", SEQUENTIAL), 0, {}),
        (("policy", "validate", "--json", SEQUENTIAL), 0, {}),
    ]
    results = run_all(user, runs)
    answered = {json.loads(r.stdout)["provider"] for r in results[:6] if r.stdout.startswith("{")}
    assert answered == {"aiceo-gateway", "glm-direct", "anthropic-direct", "openai-direct"}
    assert_nowhere(keys, user, results)


def test_refused_keys_are_never_shown_or_stored(cli: Cli, sandbox: SandboxProcess) -> None:
    """Every provider refuses the marker keys (401): the failures are reported and recorded, and
    no output and no state file contains a marker."""
    markers = {var: f"sk-test-SECRETMARKER-{n}-{uuid.uuid4().hex}" for n, var in enumerate(KEY_VARIABLES)}
    user = cli.with_env(sandbox.env, markers)
    runs: list[Run] = [
        (("ask", "hello"), 1, {}),
        (("ask", "hello", "--json"), 1, {}),
        (("ask", "hello", "--policy", SEQUENTIAL, "--json"), 1, {}),
        (("ask", "hello", "--policy", SEQUENTIAL), 1, {}),
        (("health",), 1, {}),
        (("health", "--json"), 1, {}),
        (("providers",), 0, {}),
        (("providers", "--json"), 0, {}),
        (("usage",), 0, {}),
        (("usage", "--json"), 0, {}),
        (("policy", "explain", SEQUENTIAL), 0, {}),
    ]
    results = run_all(user, runs)
    every = json.loads(results[2].stdout)
    assert [(a["provider"], a["outcome"]) for a in every["attempts"]] == [
        ("aiceo-gateway", "auth"),
        ("glm-direct", "auth"),
        ("anthropic-direct", "auth"),
        ("openai-direct", "auth"),
    ]
    assert {e["reason"] for e in json.loads(results[5].stdout)} == {"auth"}
    assert_nowhere([*markers.values(), "SECRETMARKER"], user, results)


class _QuotingProvider(BaseHTTPRequestHandler):
    """Answers everything with 401 and an OpenAI-style error that quotes the key it was sent."""

    def _refuse(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        key = (self.headers.get("authorization") or "").removeprefix("Bearer ")
        body = json.dumps(
            {
                "error": {
                    "message": f"Incorrect API key provided: {key}. You can find your key in your account.",
                    "type": "invalid_request_error",
                    "code": "invalid_api_key",
                }
            }
        ).encode()
        self.send_response(401)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = _refuse
    do_POST = _refuse

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test reads outputs, not this server's log."""


@pytest.fixture
def quoting_provider() -> Iterator[str]:
    """The chat URL of a local provider that quotes the key it was sent in its 401 message."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _QuotingProvider)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/chat/completions"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_a_key_quoted_back_by_the_provider_is_redacted(cli: Cli, quoting_provider: str) -> None:
    """The provider's message is kept (it says why), but the key in it is shown as <redacted>, in
    the terminal, in the JSON and in the state database."""
    key = f"sk-test-QUOTED-{uuid.uuid4().hex}"
    user = cli.with_env(GLM_API_URL=quoting_provider, GLM_API_KEY=key, AI_PROVIDER="glm-direct")
    runs: list[Run] = [
        (("ask", "hello", "--json"), 1, {}),
        (("ask", "hello"), 1, {}),
        (("health", "glm-direct", "--json"), 1, {}),
        (("usage", "--json"), 0, {}),
    ]
    results = run_all(user, runs)
    failed = json.loads(results[0].stdout)
    assert failed["error"]["kind"] == "auth"
    assert "Incorrect API key provided: <redacted>" in failed["error"]["message"]
    assert "Incorrect API key provided: <redacted>" in results[1].stderr
    assert_nowhere([key, "QUOTED"], user, results)
