"""What the state tests share: the backends they run on, a redis-server they start, and worker
processes that act at the same moment.

``sqlite``: a state folder in the test's temporary folder. ``redis``: database 0 of a
redis-server that the session starts on a free loopback port, without persistence, flushed
before each test. States are opened as the shell opens them, with ``rmcli.state.open_state``, so
a worker process needs only the backend's ``spec`` (``RECURSIVEMANAGER_STATE``) and folder.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from rmcli.state import STATE_VARIABLE, State, open_state

REPO_ROOT = Path(__file__).resolve().parents[3]
BACKENDS = ("sqlite", "redis")


@dataclass(frozen=True)
class Backend:
    """One backend to test: ``spec`` is its ``RECURSIVEMANAGER_STATE``, ``home`` the state folder
    (the SQLite state, or the one behind Redis); ``warnings`` collects what the state warned."""

    name: str
    spec: str
    home: Path
    warnings: list[str] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return {STATE_VARIABLE: self.spec}

    @asynccontextmanager
    async def open(self, *, check: bool = False) -> AsyncIterator[State]:
        """A new state on this backend (another connection to the same data), closed after."""
        async with await open_state(self.env, self.home, warn=self.warnings.append, check=check) as state:
            yield state


def free_port() -> int:
    """A loopback port nothing listens on (bound, read, closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class RedisServer:
    """A redis-server on 127.0.0.1 that keeps nothing on disk; ``stop`` then ``start`` restarts it
    on the same port, ``stalled`` stops it with SIGSTOP for a while."""

    def __init__(self, folder: Path, port: int | None = None) -> None:
        self.folder = folder
        self.port = port if port is not None else free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def client(self, db: int = 0) -> redis.Redis:
        """A synchronous client, for setting data up and looking at it."""
        return redis.Redis(host="127.0.0.1", port=self.port, db=db, socket_timeout=2)

    def start(self) -> None:
        program = shutil.which("redis-server")
        if program is None:
            message = (
                "redis-server is not installed, so the Redis state cannot be tested (apt-get install it)"
            )
            if os.environ.get("CI"):
                pytest.fail(message + "; CI is set: the Redis backend must be tested", pytrace=False)
            pytest.skip(message)
        log = self.folder / f"redis-{self.port}.log"
        command = [
            program,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        with log.open("ab") as output:
            self.process = subprocess.Popen(
                [*command, "--dir", str(self.folder)], stdout=output, stderr=output
            )
        give_up = time.monotonic() + 10
        while True:
            try:
                with self.client() as client:
                    client.ping()
                return
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > give_up:
                    self.stop()
                    raise RuntimeError(
                        f"redis-server did not start:\n{log.read_text(errors='replace')}"
                    ) from None
                time.sleep(0.02)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGCONT)
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    @contextmanager
    def stalled(self) -> Iterator[None]:
        """The server stopped (SIGSTOP: connections are accepted, nothing answers), then resumed."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self.process.send_signal(signal.SIGCONT)

    def flush(self, db: int = 0) -> None:
        with self.client(db) as client:
            client.flushdb()


WAIT_FOR_GO = """
import sys, time
from pathlib import Path
import anyio
from rmcli.state import open_state

def wait_for_go() -> None:
    go, give_up = Path(sys.argv[1]), time.monotonic() + 30
    while not go.exists():
        if time.monotonic() > give_up:
            sys.exit("no start signal")
        time.sleep(0.002)

async def open_it():
    return await open_state({"RECURSIVEMANAGER_STATE": sys.argv[2]}, Path(sys.argv[3]), warn=sys.exit)
"""
"""Worker scripts start with this: ``wait_for_go()`` returns once the go file exists; ``open_it()``
opens the state of the backend whose spec and folder are the worker's second and third arguments."""


def run_workers(script: str, argv: Sequence[Sequence[str]], go: Path, timeout_s: float = 60) -> list[str]:
    """Start one ``python -c script`` per argument list (each gets ``go`` first), then create
    ``go``, so that they act at the same moment. Asserts that every worker succeeded quietly;
    their standard outputs."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(go), *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in argv
    ]
    go.touch()
    results = [worker.communicate(timeout=timeout_s) for worker in workers]
    failures = [
        f"worker {n} exited {worker.returncode}:\n{err}"
        for n, (worker, (_, err)) in enumerate(zip(workers, results, strict=True))
        if worker.returncode != 0 or err
    ]
    assert not failures, "\n".join(failures)  # this module is not rewritten by pytest
    return [out for out, _ in results]


HELD_S = 0.3
"""Longer than a busy machine's scheduling pauses (the tests run on two workers: a callback was
seen to "take" 0.2 s while its process waited for a core), far shorter than the 1 s a blocking
client would hold the loop for on a stalled server."""
