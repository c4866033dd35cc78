"""Errors that say where and what to do (issue 15, part 5), as a user meets them in ``rmgr ask``:
a refused connection names the port and the variable, a base URL where the full endpoint is
needed shows the endpoint it probably meant, https to a plain-HTTP port fails fast with a TLS
hint, and a missing key is reported before anything is sent.

The failures are real: a closed loopback port, the sandbox's plain-HTTP providers, a listening
socket that never answers, one whose queue of connections is full.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from rmcli.api import analyze, ask
from rmcli.connection_errors import TLS_HANDSHAKE_TIMEOUT_S
from rmcore.errors import ErrorKind
from tests.cli.helpers import KEY_VARIABLES, URL_VARIABLES, Cli, SandboxProcess, closed_port

ENDPOINT_SUFFIXES = {
    "aiceo-gateway": "/submit",
    "glm-direct": "/chat/completions",
    "anthropic-direct": "/messages",
    "openai-direct": "/chat/completions",
}
"""What each built-in's full endpoint ends with, past its base URL."""


def only(cli: Cli, sandbox: SandboxProcess, name: str, **env: str) -> Cli:
    """``rmgr`` with the sandbox's variables, routed to provider ``name`` alone (no fallback)."""
    return cli.with_env(sandbox.env, AI_PROVIDER=name, AI_FALLBACK_PROVIDER="", **env)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def json_error(done_stdout: str) -> dict[str, str]:
    [line] = done_stdout.splitlines()
    error: dict[str, str] = json.loads(line)["error"]
    return error


def no_key_shown(sandbox: SandboxProcess, *texts: str) -> None:
    for key in (sandbox.env[name] for name in KEY_VARIABLES):
        assert all(key not in text for text in texts)


def test_a_refused_connection_names_the_port_and_the_variable(cli: Cli, sandbox: SandboxProcess) -> None:
    """``OPENAI_API_URL`` on a closed port: the error line and ``--json``'s ``error.message``
    say the connection was refused to ``127.0.0.1:PORT``, show the variable with its URL and
    ask whether the server runs, on one line and without the key."""
    port = closed_port()
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    user = only(cli, sandbox, "openai-direct", OPENAI_API_URL=url)
    expected = f"connection refused to 127.0.0.1:{port} (OPENAI_API_URL={url}) — is the server running?"

    done = user.run("ask", "hi")
    assert done.returncode == 1, done.stderr
    assert error_lines(done.stderr) == [f"error: connection: {expected}"]

    as_json = user.run("ask", "hi", "--json")
    assert as_json.returncode == 1, as_json.stderr
    assert json_error(as_json.stdout) == {"kind": "connection", "message": expected}
    no_key_shown(sandbox, done.stdout, done.stderr, as_json.stdout, as_json.stderr)


@pytest.mark.parametrize("name", list(URL_VARIABLES))
def test_a_base_url_says_the_url_must_be_the_full_endpoint(
    cli: Cli, sandbox: SandboxProcess, name: str
) -> None:
    """Each built-in (both OpenAI kinds, Anthropic, the AICEO gateway) given its base URL, which
    the sandbox answers with a 404: the error names the variable and that URL, says the URL must
    be the full endpoint and shows the sandbox's real endpoint; the ``--verbose`` trace says the
    same of the attempt."""
    endpoint = sandbox.url(name)
    base = endpoint.removesuffix(ENDPOINT_SUFFIXES[name])
    variable = URL_VARIABLES[name]
    expected = f"HTTP 404 from {variable}={base}: the URL must be the full endpoint; did you mean {endpoint}?"
    user = only(cli, sandbox, name, **{variable: base})

    done = user.run("ask", "hi", "--json")
    assert done.returncode == 1, done.stderr
    assert json_error(done.stdout) == {"kind": "bad_request", "message": expected}
    assert error_lines(done.stderr) == [f"error: bad_request: {expected}"]

    traced = user.run("--verbose", "ask", "hi")
    assert traced.returncode == 1, traced.stderr
    assert any(
        line.startswith(f"TRACE: attempt on {name} ended bad_request") and line.endswith(expected)
        for line in traced.stderr.splitlines()
    ), traced.stderr
    no_key_shown(sandbox, done.stdout, done.stderr, traced.stderr)


def test_https_to_the_plain_http_sandbox_fails_fast_with_a_tls_hint(
    cli: Cli, sandbox: SandboxProcess
) -> None:
    """An https URL on the sandbox's plain-HTTP port: ``rmgr ask`` fails in under 5 s, every
    attempt saying the server at ``127.0.0.1:PORT`` does not speak TLS and to use http://."""
    plain = sandbox.url("openai-direct")
    url = plain.replace("http://", "https://", 1)
    port = plain.split(":")[2].split("/")[0]
    user = only(cli, sandbox, "openai-direct", OPENAI_API_URL=url)

    started = time.monotonic()
    done = user.run("ask", "hi", "--json")
    elapsed = time.monotonic() - started

    assert done.returncode == 1, done.stderr
    assert elapsed < 5.0
    expected = (
        f"the server at 127.0.0.1:{port} does not speak TLS (OPENAI_API_URL={url}) — use http:// instead?"
    )
    assert json_error(done.stdout) == {"kind": "connection", "message": expected}
    attempts = json.loads(done.stdout)["attempts"]
    assert attempts and all(a["message"] == expected for a in attempts)


def test_a_missing_key_is_reported_before_anything_is_sent(cli: Cli, sandbox: SandboxProcess) -> None:
    """``OPENAI_API_KEY`` unset: ``ask`` and ``analyze`` exit 2 naming the variable, ``health``
    reports it as the reason, and the sandbox's openai-direct received nothing at all."""
    user = only(cli, sandbox, "openai-direct", OPENAI_API_KEY="")
    before = len(sandbox.log("openai-direct"))

    for args in (("ask", "hi"), ("analyze", "hi", "--perspectives", "security")):
        done = user.run(*args)
        assert done.returncode == 2, done.stderr
        assert "OPENAI_API_KEY" in done.stderr and done.stderr.startswith("error: ")
    code, [report] = user.json("health", "openai-direct", "--json")
    assert code == 1
    assert report["healthy"] is False and "OPENAI_API_KEY is not set" in report["reason"]

    assert len(sandbox.log("openai-direct")) == before


# --- in-process: servers that never answer --------------------------------------------------------


def policy(url: str, *, attempt_timeout_s: float = 30.0) -> str:
    """One provider at ``url`` (needing no key), one attempt."""
    return f"""\
version = 1
[providers.quiet]
kind = "openai"
url = "{url}"
model = "m"
[route]
targets = ["quiet"]
[retry]
max_attempts = 1
[limits]
attempt_timeout_s = {attempt_timeout_s}
"""


@contextmanager
def silent_server() -> Iterator[int]:
    """A loopback port whose connections are taken (by the kernel) and never answered."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield server.getsockname()[1]


@contextmanager
def full_queue() -> Iterator[int]:
    """A loopback port whose queue of connections is full, so that a new connection is never
    made: the SYN goes unanswered, as on a host that drops packets."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port: int = server.getsockname()[1]
        fillers = []
        try:
            for _ in range(3):
                filler = socket.socket()
                filler.setblocking(False)
                with suppress(BlockingIOError):
                    filler.connect(("127.0.0.1", port))
                fillers.append(filler)
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.3).close()
            except TimeoutError:
                yield port
            else:
                pytest.skip("this kernel completes connections past a full queue")
        finally:
            for filler in fillers:
                filler.close()


@pytest.mark.anyio
async def test_https_to_a_silent_server_fails_within_the_handshake_limit(tmp_path: Path) -> None:
    """A server that takes the connection and says nothing (a plain-HTTP port waiting for a
    request line): the attempt ends as ``connection`` after the TLS handshake limit, well before
    its 30 s timeout, asking whether the server speaks TLS."""
    with silent_server() as port:
        url = f"https://127.0.0.1:{port}/v1/chat/completions"
        started = time.monotonic()
        outcome = await ask("hi", policy=policy(url), env={}, state_home=tmp_path, record=False)
        elapsed = time.monotonic() - started
    assert elapsed + 0.1 >= TLS_HANDSHAKE_TIMEOUT_S and elapsed < 5.0
    assert outcome.error is not None and outcome.error.kind is ErrorKind.CONNECTION
    assert outcome.error.message == (
        f"no TLS handshake from 127.0.0.1:{port} within 4 s (providers.quiet.url={url}) "
        "— does the server speak TLS? use http:// instead?"
    )


@pytest.mark.anyio
async def test_out_of_time_while_connecting_says_so(tmp_path: Path) -> None:
    """A connection that is never made: the attempt times out (kind ``timeout``, as before) and
    says it had no connection to ``127.0.0.1:PORT`` rather than no answer; so does an analysis."""
    with full_queue() as port:
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        expected = (
            f"no connection to 127.0.0.1:{port} within 1 s (providers.quiet.url={url}) "
            "— is the host reachable?"
        )
        outcome = await ask(
            "hi",
            policy=policy(url, attempt_timeout_s=1),
            env={},
            state_home=tmp_path,
            record=False,
            stream=False,
        )
        assert outcome.error is not None and outcome.error.kind is ErrorKind.TIMEOUT
        assert outcome.error.message == expected
        report = await analyze(
            "hi",
            policy=policy(url, attempt_timeout_s=1),
            perspectives=["security"],
            persist_history=False,
            use_cache=False,
            env={},
            state_home=tmp_path,
        )
    [perspective] = report.results
    assert (perspective.error_kind, perspective.error_message) == ("timeout", expected)
