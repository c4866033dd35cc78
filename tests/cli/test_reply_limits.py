"""Hostile model output: a huge or endless reply is cut off at the documented limit with a clear
error and without memory blow-up, and streamed text never controls the terminal or shows a key.

Three levels: the sandbox's ``huge`` and ``endless`` modes themselves (well-formed, made lazily);
the transport against bodies no sandbox sends (a gzip bomb, an announced 1 GiB, a runaway error
body); and ``rmgr ask`` end to end in a child process whose peak memory is measured.
"""

from __future__ import annotations

import gzip
import json
import os
import pty
import select
import subprocess
import sys
import threading
import time
import tracemalloc
import uuid
import zlib
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from returns.result import Success

from rmcli.output import LiveText, add_secret
from rmcli.sandbox import HUGE_BYTES, Mode, ModeKind, Outcome, Sandbox, parse_mode
from rmcli.transport import MAX_BODY_BYTES, MAX_ERROR_BODY_BYTES, perform_attempt
from rmcore import wire
from rmcore.errors import ErrorKind
from rmcore.events import AttemptFailed, AttemptSucceeded, StartAttempt
from rmcore.providers import ProviderSpec, builtin_providers
from rmcore.requests import ChatRequest
from tests.cli.helpers import RMGR, SandboxProcess, clean_env, sandbox_process, write_policy

MIB = 1024 * 1024

# -- the sandbox's modes -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected", "shown"),
    [
        ("huge", Mode(ModeKind.HUGE), "huge"),
        ("endless", Mode(ModeKind.ENDLESS), "endless"),
        ("endless:0.5", Mode(ModeKind.ENDLESS, seconds=0.5), "endless:0.5"),
    ],
)
def test_huge_and_endless_are_written_like_the_other_modes(text: str, expected: Mode, shown: str) -> None:
    """``huge`` and ``endless[:SECONDS]`` parse and print like the other modes, and bad arguments are
    refused with a message."""
    assert parse_mode(text) == expected
    assert str(expected) == shown
    with pytest.raises(ValueError, match="huge takes no argument"):
        parse_mode("huge:3")
    with pytest.raises(ValueError, match="0 or more"):
        parse_mode("endless:-1")


def test_the_sandbox_help_lists_the_new_modes(tmp_path: Path) -> None:
    """``rmgr sandbox --help`` names them, as it names the others."""
    done = subprocess.run(
        [*RMGR, "sandbox", "--help"], capture_output=True, text=True, env=clean_env(tmp_path), check=False
    )
    assert done.returncode == 0
    assert "huge" in done.stdout and "endless" in done.stdout


def _chat(box: Sandbox, name: str, stream: bool) -> tuple[dict[str, Any], dict[str, str]]:
    """A valid chat request body for sandbox provider ``name`` and its headers."""
    messages = [{"role": "user", "content": "Say something long."}]
    if name == "aiceo-gateway":
        return {"messages": messages}, {"x-api-key": box.key(name)}
    if name == "anthropic-direct":
        body = {"model": "claude-sonnet-4-5", "max_tokens": 50, "messages": messages, "stream": stream}
        return body, {"x-api-key": box.key(name), "anthropic-version": "2023-06-01"}
    return {"model": "m", "messages": messages, "stream": stream}, {
        "authorization": f"Bearer {box.key(name)}"
    }


def _request(stream: bool) -> ChatRequest:
    return ChatRequest.ask("Say something long.", max_tokens=50, stream=stream)


@pytest.mark.anyio
@pytest.mark.parametrize("name", ["aiceo-gateway", "glm-direct", "anthropic-direct", "openai-direct"])
async def test_huge_is_a_well_formed_answer_of_exactly_its_length(name: str) -> None:
    """Shortened to 1 MiB so that it can be read whole: the body is exactly that long, announced
    in its Content-Length, and the product's own parser reads it as a valid answer of that size
    (a streamed one as a complete stream)."""
    async with Sandbox({name: "huge"}, huge_bytes=MIB) as box, httpx.AsyncClient() as client:
        spec = builtin_providers(box.env())[name]
        for stream in (False, True) if name != "aiceo-gateway" else (False,):
            body, headers = _chat(box, name, stream)
            reply = await client.post(box.url(name), json=body, headers=headers)
            assert reply.status_code == 200
            if not stream:
                assert reply.headers["content-length"] == str(MIB) == str(len(reply.content))
                parsed = wire.parse_response(spec, 200, dict(reply.headers), reply.content, time.time())
            else:
                assert reply.headers["content-type"].startswith("text/event-stream")
                parser = wire.stream_parser(spec, _request(True))
                parser.feed(reply.content)
                parsed = parser.finish()
            assert isinstance(parsed, Success), parsed
            text = parsed.unwrap().content
            assert set(text.split()[:-1]) == {"and", "more"}
            # A stream's events wrap their text: it holds less text for its size than a body.
            assert len(text) > (MIB // 4 if stream else MIB * 9 // 10)
            assert MIB <= len(reply.content) < MIB + 16 * 1024
        assert {r.outcome for r in box.requests(name)} == {Outcome.HUGE}


@pytest.mark.anyio
async def test_huge_announces_a_gibibyte_by_default() -> None:
    """Unshortened, ``huge`` announces 1 GiB in its Content-Length and starts a well-formed body."""
    async with Sandbox({"glm-direct": "huge"}) as box, httpx.AsyncClient() as client:
        body, headers = _chat(box, "glm-direct", False)
        async with client.stream("POST", box.url("glm-direct"), json=body, headers=headers) as reply:
            assert int(reply.headers["content-length"]) == HUGE_BYTES == 1 << 30
            first = await reply.aiter_raw().__anext__()
        assert first.startswith(b'{"id":"chatcmpl-sandbox-')


@pytest.mark.anyio
@pytest.mark.parametrize("name", ["aiceo-gateway", "glm-direct", "anthropic-direct"])
async def test_endless_keeps_going_as_a_valid_reply_that_never_ends(name: str) -> None:
    """4 MiB read (far more than any answer), every event valid, and still no end: a stream's
    parser is neither done nor in error; a whole body is still an unterminated JSON string."""
    async with Sandbox({name: "endless"}) as box, httpx.AsyncClient() as client:
        spec = builtin_providers(box.env())[name]
        stream = name != "aiceo-gateway"
        body, headers = _chat(box, name, stream)
        parser = wire.stream_parser(spec, _request(stream))
        received = deltas = 0
        head = b""
        async with client.stream("POST", box.url(name), json=body, headers=headers) as reply:
            assert reply.headers.get("content-length") is None
            async for piece in reply.aiter_raw():
                received += len(piece)
                if len(head) < 200:
                    head += piece[:200]
                if stream:
                    deltas += len(parser.feed(piece))
                    assert parser.error is None and not parser.done
                if received > 4 * MIB:
                    break
        assert received > 4 * MIB
        if stream:
            assert deltas > 500
        else:
            assert head.startswith(b'{"success":true,"response":{"content":"and more')
        assert [r.outcome for r in box.requests(name)] == [Outcome.ENDLESS]


@pytest.mark.anyio
async def test_endless_with_seconds_drips_one_event_at_a_time() -> None:
    """``endless:0.05`` sends an event every 0.05 s: six pieces take at least 0.2 s."""
    async with Sandbox({"glm-direct": "endless:0.05"}) as box, httpx.AsyncClient() as client:
        body, headers = _chat(box, "glm-direct", True)
        started = time.monotonic()
        pieces = 0
        async with client.stream("POST", box.url("glm-direct"), json=body, headers=headers) as reply:
            async for _ in reply.aiter_raw():
                pieces += 1
                if pieces == 6:
                    break
        assert 0.2 <= time.monotonic() - started < 2.0


# -- the transport against bodies no sandbox sends ---------------------------------------------------


def _spec(kind: str = "glm-direct") -> ProviderSpec:
    env = {"GLM_API_URL": "http://127.0.0.1:9/v1/chat/completions", "GLM_API_KEY": "k" * 12}
    return builtin_providers(env)[kind]


def _action(spec: ProviderSpec) -> StartAttempt:
    return StartAttempt(
        attempt_id=1,
        provider=spec,
        attempt_no=1,
        timeout_s=10.0,
        timeout_kind=ErrorKind.TIMEOUT,
        first_token_timeout_s=10.0,
        idle_timeout_s=10.0,
    )


async def _attempt(handler: Any, *, stream: bool = False) -> AttemptSucceeded | AttemptFailed:
    spec = _spec()
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        return await perform_attempt(
            client, _action(spec), ChatRequest.ask("hi", stream=stream), "k" * 12, time.monotonic
        )


def _openai_body(text: str) -> bytes:
    return json.dumps(
        {
            "id": "x",
            "object": "chat.completion",
            "model": "glm-4.7",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1},
        }
    ).encode()


async def _streamed(*chunks: bytes) -> AsyncIterator[bytes]:
    """A body that arrives as a stream, as over a socket (a ``bytes`` body would be read, and
    decoded by httpx, when the mock response is made)."""
    for data in chunks:
        yield data


def _gzip_bomb(size: int) -> Iterator[bytes]:
    """``size`` bytes of a JSON answer's text, gzip-compressed as it is made (about 1000 to 1)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    yield packer.compress(b'{"choices":[{"message":{"content":"')
    block = b" " * MIB
    for _ in range(size // MIB):
        out = packer.compress(block)
        if out:
            yield out
    yield packer.compress(b'"}}]}') + packer.flush()


@pytest.mark.anyio
async def test_a_gzip_bomb_is_cut_off_at_the_limit_without_expanding_in_memory() -> None:
    """64 MiB of text in about 64 KiB of gzip. httpx alone would inflate each network chunk whole;
    the transport inflates 1 MiB at a time and stops at 16 MiB: malformed_response, and the peak
    of Python allocations stays well under twice the limit."""
    compressed = b"".join(_gzip_bomb(64 * MIB))
    assert len(compressed) < MIB

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["accept-encoding"] == "gzip, deflate"
        return httpx.Response(
            200,
            headers={"content-type": "application/json", "content-encoding": "gzip"},
            content=_streamed(compressed),
        )

    tracemalloc.start()
    try:
        event = await _attempt(handler)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(event, AttemptFailed)
    assert event.error.kind is ErrorKind.MALFORMED_RESPONSE
    assert "larger than the 16 MiB limit" in event.error.message
    assert peak < 1.5 * MAX_BODY_BYTES, peak


@pytest.mark.anyio
@pytest.mark.parametrize("encoding", ["gzip", "deflate", "deflate-raw", "identity"])
async def test_an_ordinary_compressed_answer_still_decodes(encoding: str) -> None:
    """An answer compressed with gzip, zlib deflate, raw deflate or none decodes whole across chunks."""
    body = _openai_body("hello " * 1000)
    if encoding == "gzip":
        data = gzip.compress(body)
    elif encoding == "deflate":
        data = zlib.compress(body)
    elif encoding == "deflate-raw":
        packer = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
        data, encoding = packer.compress(body) + packer.flush(), "deflate"
    else:
        data = body

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            headers={"content-type": "application/json", "content-encoding": encoding},
            content=_streamed(data[:100], data[100:]),
        )

    event = await _attempt(handler)
    assert isinstance(event, AttemptSucceeded), event
    assert event.completion.content == "hello " * 1000


@pytest.mark.anyio
async def test_an_encoding_never_asked_for_is_malformed() -> None:
    """A successful answer in an encoding never asked for (br) is ``malformed_response`` naming the
    encoding."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-encoding": "br"}, content=_streamed(b"\x1b\x00"))

    event = await _attempt(handler)
    assert isinstance(event, AttemptFailed) and event.error.kind is ErrorKind.MALFORMED_RESPONSE
    assert "'br'" in event.error.message


@pytest.mark.anyio
async def test_an_error_reply_in_an_encoding_never_asked_for_is_still_classified_by_its_status() -> None:
    """An error reply in an encoding never asked for is still classified by its status (529 overloaded)."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(529, headers={"content-encoding": "br"}, content=_streamed(b"\x1b\x00"))

    event = await _attempt(handler)
    assert isinstance(event, AttemptFailed) and event.error.kind is ErrorKind.OVERLOADED


@pytest.mark.anyio
async def test_an_announced_gibibyte_is_refused_before_a_byte_of_it_is_read() -> None:
    """A Content-Length past the 16 MiB limit is refused as ``malformed_response`` without reading the
    body."""
    pulled: list[int] = []

    async def body() -> AsyncIterator[bytes]:
        pulled.append(1)
        yield b"{" * 1024
        raise AssertionError("the body must not be read")

    def handler(request: httpx.Request) -> httpx.Response:
        headers = {"content-type": "application/json", "content-length": str(1 << 30)}
        return httpx.Response(200, headers=headers, content=body())

    event = await _attempt(handler)
    assert isinstance(event, AttemptFailed) and event.error.kind is ErrorKind.MALFORMED_RESPONSE
    assert event.error.message == (
        f"reply of {1 << 30} bytes announced, larger than the 16 MiB limit; not read"
    )
    assert pulled == []


@pytest.mark.anyio
async def test_an_error_reply_with_a_runaway_body_is_still_classified_by_its_status() -> None:
    """A 503 whose body never ends: 1 MiB of it is read, and it is ``overloaded`` as any 503."""
    read = [0]

    async def body() -> AsyncIterator[bytes]:
        while True:
            read[0] += 64 * 1024
            yield b"x" * (64 * 1024)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, headers={"content-type": "text/plain"}, content=body())

    event = await _attempt(handler)
    assert isinstance(event, AttemptFailed) and event.error.kind is ErrorKind.OVERLOADED
    assert MAX_ERROR_BODY_BYTES <= read[0] <= MAX_ERROR_BODY_BYTES + 128 * 1024


@pytest.mark.anyio
async def test_a_cut_off_stream_is_charged_at_most_max_tokens() -> None:
    """An endless stream delivered 16 MiB of text; no provider bills past the request's
    max_tokens, so neither does the estimate of what the attempt cost."""

    async def body() -> AsyncIterator[bytes]:
        event = b'data: {"choices":[{"index":0,"delta":{"content":"' + b"word " * 2000 + b'"}}]}\n\n'
        while True:
            yield event

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body())

    event = await _attempt(handler, stream=True)
    assert isinstance(event, AttemptFailed) and event.error.kind is ErrorKind.MALFORMED_RESPONSE
    assert event.error.message == "stream larger than the 16 MiB limit; cut off there"
    assert event.usage is not None and event.usage.output_tokens == ChatRequest.ask("hi").max_tokens


# -- rmgr ask end to end, its memory measured ----------------------------------------------------------

_MEASURE = r"""
import contextlib, io, json, sys, time
from rmcli.app import main

def peak_kb():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))

def run(args):
    try:
        main(args)
    except SystemExit as exit:
        return exit.code
    return 0

report, warm, args = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
with contextlib.redirect_stdout(io.StringIO()):
    warmed = run(warm)  # everything the hostile run needs, imported and used once
before = peak_kb()
started = time.monotonic()
code = run(args)
seconds = time.monotonic() - started
with open(report, "w") as out:
    json.dump({"warm": warmed, "code": code, "growth_kb": peak_kb() - before, "seconds": seconds}, out)
"""


def _peak_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))


@pytest.fixture(scope="module")
def hostile() -> Iterator[SandboxProcess]:
    """A sandbox of this module's own, whose modes the tests change (openai-direct stays ok: the
    warm-up provider)."""
    with sandbox_process() as running:
        yield running


POLICY = """
version = 1
name = "one-provider"
[route]
strategy = "sequential"
targets = ["{name}"]
[limits]
attempt_timeout_s = {timeout}
first_token_timeout_s = {timeout}
idle_timeout_s = {timeout}
deadline_s = 30
max_usd = 5.0
[retry]
max_attempts = 1
"""

CASES = [
    ("aiceo-gateway", "huge", "malformed_response", "reply of 1073741824 bytes announced"),
    ("aiceo-gateway", "endless", "malformed_response", "reply larger than the 16 MiB limit"),
    ("glm-direct", "huge", "malformed_response", "stream larger than the 16 MiB limit"),
    ("glm-direct", "endless", "malformed_response", "stream larger than the 16 MiB limit"),
    ("anthropic-direct", "huge", "malformed_response", "stream larger than the 16 MiB limit"),
    ("anthropic-direct", "endless", "malformed_response", "stream larger than the 16 MiB limit"),
    ("aiceo-gateway", "endless:0.02", "timeout", "no complete answer within 1 s"),
    ("glm-direct", "endless:0.02", "timeout", "no complete answer within 1 s"),
    ("anthropic-direct", "endless:0.02", "timeout", "no complete answer within 1 s"),
]


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak memory is read from /proc")
@pytest.mark.parametrize(("name", "mode", "kind", "message"), CASES)
def test_ask_cuts_a_runaway_reply_off_promptly_and_within_memory(
    hostile: SandboxProcess, tmp_path: Path, name: str, mode: str, kind: str, message: str
) -> None:
    """``rmgr ask`` against a provider that sends 1 GiB, or never stops: it fails with the
    documented kind and message (malformed_response at 16 MiB; the attempt timeout for a stream
    that drips forever under the limit), ends within seconds, and its peak RSS grows by well
    under twice the limit. The sandbox, which made the reply, stays small too: it never held it."""
    timeout = 1 if mode.startswith("endless:") else 20
    policy = write_policy(tmp_path, "one.toml", POLICY.format(name=name, timeout=timeout))
    sandbox_before = _peak_kb(hostile.process.pid)
    hostile.set_mode(name, mode)
    try:
        report = tmp_path / "report.json"
        warm = ["ask", "warm up", "--json", "--provider", "openai-direct"]
        args = ["ask", "tell me everything", "--json", "--policy", str(policy)]
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-c", _MEASURE, str(report), json.dumps(warm), json.dumps(args)],
            env=clean_env(tmp_path, hostile.env),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        wall = time.monotonic() - started
    finally:
        hostile.set_mode(name, "ok")
    assert done.returncode == 0, done.stderr
    measured = json.loads(report.read_text())
    assert measured["warm"] == 0 and measured["code"] == 1
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["error"]["kind"] == kind
    assert message in result["error"]["message"]
    assert [(a["provider"], a["outcome"]) for a in result["attempts"]] == [(name, kind)]
    assert f"error: {kind}: " in done.stderr
    if kind == "timeout":
        assert 0.9 < measured["seconds"] < 4.0
    else:
        assert measured["seconds"] < 5.0
    assert wall < 20.0
    assert measured["growth_kb"] * 1024 < 1.5 * MAX_BODY_BYTES, measured
    assert [r["outcome"] for r in hostile.log(name)][-1] == mode.partition(":")[0]
    assert (_peak_kb(hostile.process.pid) - sandbox_before) * 1024 < 32 * MIB


# -- streamed text on a terminal ---------------------------------------------------------------------


def test_live_text_neutralises_an_escape_sequence_split_across_deltas() -> None:
    """Terminal controls (ESC, BEL, CSI) split across streamed deltas are shown escaped, never sent raw."""
    live = LiveText()
    shown = "".join(live.feed(d) for d in ["red ", "\x1b", "[31m", "text\x1b]0;", "title\x07", "\x9b2J"])
    shown += live.flush()
    assert not any(c in shown for c in "\x1b\x07\x9b")
    assert shown == "red \\x1b[31mtext\\x1b]0;title\\x07\\x9b2J"


def test_live_text_hides_a_key_split_across_deltas_and_nothing_else() -> None:
    """A known key split across deltas is shown as <redacted>; text that only looks like its start is
    shown, and text that cannot start it is not held back."""
    key = f"sk-live-{uuid.uuid4().hex}"
    add_secret(key)
    live = LiveText()
    pieces = ["your key is ", key[:3], key[3:10], key[10:], " and sk-", "live is a prefix; bye"]
    shown = [live.feed(p) for p in pieces]
    shown.append(live.flush())
    assert "".join(shown) == "your key is <redacted> and sk-live is a prefix; bye"
    assert all(key[:10] not in s for s in shown)
    # What cannot start the key is shown at once, not held back.
    assert LiveText().feed("hello ") == "hello "


class _SplittingProvider(BaseHTTPRequestHandler):
    """Streams an OpenAI-style answer whose deltas split an escape sequence and the key it was
    sent (as a model echoing its prompt might)."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        key = (self.headers.get("authorization") or "").removeprefix("Bearer ")
        deltas = [
            "Hello ",
            "\x1b",
            "[2J\x1b]0;pwned",
            "\x07 your key: ",
            key[:5],
            key[5:],
            " bye",
            "\x9b",
            "31m",
        ]
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()
        for delta in deltas:
            chunk = {"choices": [{"index": 0, "delta": {"content": delta}, "finish_reason": None}]}
            self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            self.wfile.flush()
            time.sleep(0.01)
        done = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        self.wfile.write(b"data: " + json.dumps(done).encode() + b"\n\ndata: [DONE]\n\n")

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def splitting_provider() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SplittingProvider)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/chat/completions"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _read_all(fd: int, process: subprocess.Popen[bytes], limit_s: float) -> bytes:
    out = b""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                data = os.read(fd, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            out += data
        elif process.poll() is not None:
            break
    return out


def test_ask_streams_to_a_terminal_with_split_escapes_and_keys_neutralised(
    tmp_path: Path, splitting_provider: str
) -> None:
    """On a terminal (a pty) ``rmgr ask`` streams the text as it arrives; an escape sequence cut
    across deltas is shown as text, and the key, echoed in two deltas, is shown as <redacted>."""
    key = f"sk-test-SPLIT-{uuid.uuid4().hex}"
    env = clean_env(
        tmp_path, {"GLM_API_URL": splitting_provider, "GLM_API_KEY": key, "AI_PROVIDER": "glm-direct"}
    )
    leader, follower = pty.openpty()
    try:
        process = subprocess.Popen(
            [*RMGR, "ask", "echo my key"], env=env, cwd=tmp_path, stdout=follower, stderr=subprocess.PIPE
        )
        os.close(follower)
        screen = _read_all(leader, process, 20.0).decode("utf-8", "replace")
        assert process.wait(timeout=10) == 0
        assert process.stderr is not None
        errors = process.stderr.read().decode()
    finally:
        os.close(leader)
    assert "\x1b" not in screen and "\x07" not in screen and "\x9b" not in screen
    assert "Hello \\x1b[2J\\x1b]0;pwned\\x07 your key: <redacted> bye\\x9b31m" in screen
    assert key not in screen and key not in errors and key[:5] not in screen
    assert "answered by glm-direct" in errors
