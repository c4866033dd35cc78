"""The state stores that the store tests run against, and the processes they start.

``sqlite``: a state folder under the test's temporary folder. ``redis``: database 0 of a
redis-server that the test session starts on a free loopback port, without persistence, and
flushes before each test. Tests open stores the way the shell does, with
``rmcli.state.open_state``, so worker processes need only the backend's ``spec`` (the value of
``RECURSIVEMANAGER_STATE``) and the state folder.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from rmcli.state import STATE_VARIABLE, open_state
from rmcli.store import Store

REPO_ROOT = Path(__file__).resolve().parents[2]
BACKENDS = ("sqlite", "redis")


@dataclass(frozen=True)
class Backend:
    """One state store to test: ``spec`` is its ``RECURSIVEMANAGER_STATE``, ``home`` the state
    folder (used by SQLite only)."""

    name: str
    spec: str
    home: Path

    @property
    def env(self) -> dict[str, str]:
        return {STATE_VARIABLE: self.spec}

    def open(self) -> Store:
        """A new store on this backend's state (another connection to the same data)."""
        return open_state(self.env, self.home)


def redis_server_path() -> str:
    """The redis-server program. When it is missing the Redis tests fail under CI (which must
    really test Redis) and are skipped elsewhere."""
    found = shutil.which("redis-server")
    if found is None:
        message = (
            "redis-server is not installed, so the Redis state store cannot be tested; "
            "install it (apt-get install redis-server), as .ci/run does"
        )
        if os.environ.get("CI"):
            pytest.fail(message + " (CI is set: the Redis backend must be tested)", pytrace=False)
        pytest.skip(message)
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class RedisServer:
    """A redis-server on 127.0.0.1 that keeps nothing on disk; ``stop`` and ``start`` again to
    restart it on the same port."""

    def __init__(self, folder: Path, port: int | None = None) -> None:
        self.folder = folder
        self.port = port if port is not None else free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, db=db, socket_timeout=2)

    def start(self) -> None:
        command = [
            redis_server_path(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.folder),
        ]
        with (self.folder / f"redis-{self.port}.log").open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        give_up = time.monotonic() + 10
        while True:
            try:
                with self.client() as client:
                    client.ping()
                return
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > give_up:
                    log_text = (self.folder / f"redis-{self.port}.log").read_text(errors="replace")
                    self.stop()
                    raise RuntimeError(
                        f"redis-server did not start on port {self.port}:\n{log_text}"
                    ) from None
                time.sleep(0.02)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def flush(self, db: int = 0) -> None:
        with self.client(db) as client:
            client.flushdb()


def run_workers(script: str, argv: Sequence[Sequence[str]], go: Path, timeout_s: float = 60) -> list[str]:
    """Start one ``python -c script`` per argument list (each gets ``go`` as its first argument:
    they wait for it to exist, so that they start their work at the same moment), then create
    ``go``. Asserts that every worker succeeded quietly; their standard outputs."""
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
    # This module is not rewritten by pytest, so the message must say what went wrong itself.
    assert not failures, "\n".join(failures)
    return [out for out, _ in results]


WAIT_FOR_GO = """
import sys, time
from pathlib import Path

def wait_for_go() -> None:
    go, give_up = Path(sys.argv[1]), time.monotonic() + 30
    while not go.exists():
        if time.monotonic() > give_up:
            sys.exit("no start signal")
        time.sleep(0.002)
"""
"""Worker scripts start with this: ``wait_for_go()`` returns once the go file exists."""
