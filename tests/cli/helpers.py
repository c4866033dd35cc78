"""What the end-to-end tests of ``rmgr`` share: running it as a user does, and a sandbox to talk to.

``run_rmgr`` starts ``python -m rmcli`` (or a console script) in a clean environment: only
``PATH``, ``HOME`` and ``RECURSIVEMANAGER_HOME`` (both the test's folder, also the working
directory, so that no stray ``.env`` is read) and ``PYTHONPATH`` (this checkout), plus the
variables a test gives. ``SandboxProcess`` runs ``rmgr sandbox`` in its own process, as a person
would in a second terminal, and reads the ``export`` lines it prints.
"""

from __future__ import annotations

import json
import os
import queue
import shlex
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

__all__ = [
    "KEY_VARIABLES",
    "REPO",
    "RMGR",
    "URL_VARIABLES",
    "Cli",
    "SandboxProcess",
    "clean_env",
    "closed_port",
    "closed_url",
    "run_rmgr",
    "sandbox_process",
    "script",
    "write_policy",
]

REPO = Path(__file__).resolve().parents[2]
"""The checkout under test: ``PYTHONPATH`` points the subprocesses at it."""

RMGR: tuple[str, ...] = (sys.executable, "-m", "rmcli")
"""How the tests start ``rmgr``: ``python -m rmcli`` with the interpreter running the tests."""

KEY_VARIABLES: tuple[str, ...] = (
    "AICEO_GATEWAY_API_KEY",
    "GLM_API_KEY",
    "ANTHROPIC_API_KEY",
    "OPENAI_API_KEY",
)
"""The built-in providers' key variables, in the order of the providers."""

URL_VARIABLES: Mapping[str, str] = {
    "aiceo-gateway": "AICEO_GATEWAY_URL",
    "glm-direct": "GLM_API_URL",
    "anthropic-direct": "ANTHROPIC_API_URL",
    "openai-direct": "OPENAI_API_URL",
}
"""Each built-in provider's endpoint variable."""

STARTUP_TIMEOUT_S = 15.0
RUN_TIMEOUT_S = 30.0


def clean_env(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a child process: nothing of the test runner's but ``PATH``."""
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(home),
        "RECURSIVEMANAGER_HOME": str(home),
        "PYTHONPATH": str(REPO),
    }
    env.update(extra or {})
    return env


def run_rmgr(
    args: Sequence[str],
    env: Mapping[str, str] | None = None,
    *,
    home: Path,
    command: Sequence[str] = RMGR,
    timeout: float = RUN_TIMEOUT_S,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``rmgr ARGS`` in ``home`` (working directory, ``HOME`` and ``RECURSIVEMANAGER_HOME``)
    with a clean environment plus ``env``, ``stdin`` piped in when given; stdout and stderr are
    captured as UTF-8 text."""
    return subprocess.run(
        [*command, *args],
        env=clean_env(home, env),
        cwd=home,
        input=stdin,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=timeout,
        check=False,
    )


def script(name: str) -> Path:
    """A console script installed next to the interpreter running the tests (``rmgr``,
    ``recursive-manager``)."""
    return Path(sys.executable).parent / name


@dataclass(frozen=True)
class Cli:
    """``rmgr`` run in one test's folder, with variables every run of the test shares."""

    home: Path
    env: Mapping[str, str] = field(default_factory=dict)

    def run(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        command: Sequence[str] = RMGR,
        stdin: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """``rmgr ARGS`` with the shared variables and ``env`` over them, ``stdin`` piped in."""
        return run_rmgr(args, {**self.env, **(env or {})}, home=self.home, command=command, stdin=stdin)

    def json(self, *args: str, env: Mapping[str, str] | None = None) -> tuple[int, Any]:
        """Run a command that prints one JSON document; its exit code and the parsed document."""
        done = self.run(*args, env=env)
        lines = done.stdout.splitlines()
        assert len(lines) == 1, f"expected one line of JSON, got {done.stdout!r}; stderr: {done.stderr}"
        return done.returncode, json.loads(lines[0])

    def with_env(self, *layers: Mapping[str, str], **variables: str) -> Cli:
        """The same folder with more shared variables: ``layers`` in order, then ``variables``."""
        merged = dict(self.env)
        for layer in layers:
            merged.update(layer)
        return Cli(self.home, {**merged, **variables})

    @property
    def state_files(self) -> list[Path]:
        """The state database and its WAL and shared-memory files, those that exist."""
        return [p for p in sorted(self.home.glob("state.db*")) if p.is_file()]


def closed_port() -> int:
    """A loopback port nothing listens on: bound, read, closed."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def closed_url(path: str = "/api/glm/submit") -> str:
    """An http URL on 127.0.0.1 where every connection is refused."""
    return f"http://127.0.0.1:{closed_port()}{path}"


def write_policy(folder: Path, name: str, text: str) -> Path:
    """Write a policy file and return its path."""
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


@dataclass
class SandboxProcess:
    """A running ``rmgr sandbox``: the environment it printed and its control API."""

    process: subprocess.Popen[str]
    env: dict[str, str]
    """The variables of its ``export`` lines: each provider's URL and key, AI_PROVIDER, ..."""
    control_url: str

    def url(self, name: str) -> str:
        """The chat endpoint of sandbox provider ``name``."""
        return self.env[URL_VARIABLES[name]]

    def key(self, name: str) -> str:
        """The one key sandbox provider ``name`` accepts."""
        return self.env[KEY_VARIABLES[list(URL_VARIABLES).index(name)]]

    def log(self, name: str) -> list[dict[str, Any]]:
        """Every request provider ``name`` received (``GET /log/NAME`` of the control API)."""
        reply = httpx.get(f"{self.control_url}/log/{name}", timeout=5.0)
        reply.raise_for_status()
        requests: list[dict[str, Any]] = reply.json()["requests"]
        return requests

    def clear_logs(self) -> None:
        """Forget every provider's logged requests (``DELETE /log``)."""
        httpx.delete(f"{self.control_url}/log", timeout=5.0).raise_for_status()

    def set_mode(self, name: str, mode: str) -> None:
        """Switch provider ``name`` to fault mode ``mode`` (``PUT /mode/NAME``)."""
        httpx.put(f"{self.control_url}/mode/{name}", content=mode, timeout=5.0).raise_for_status()


def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


@contextmanager
def sandbox_process(*fail: str) -> Iterator[SandboxProcess]:
    """Start ``rmgr sandbox [--fail NAME=MODE ...]`` in a child process and stop it on exit.

    Its stdout is read until the control API line; its stderr goes to a temporary file, shown
    when it does not start.
    """
    args = [arg for mode in fail for arg in ("--fail", mode)]
    with tempfile.TemporaryDirectory(prefix="rmgr-sandbox-") as home, tempfile.TemporaryFile(
        "w+", encoding="utf-8"
    ) as errors:
        process = subprocess.Popen(
            [*RMGR, "sandbox", *args],
            env=clean_env(Path(home)),
            cwd=home,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            encoding="utf-8",
        )
        try:
            assert process.stdout is not None
            lines: queue.Queue[str | None] = queue.Queue()
            threading.Thread(target=_pump, args=(process.stdout, lines), daemon=True).start()
            env: dict[str, str] = {}
            control_url = ""
            while not control_url:
                try:
                    line = lines.get(timeout=STARTUP_TIMEOUT_S)
                except queue.Empty:
                    line = None
                if line is None:
                    errors.seek(0)
                    raise AssertionError(f"rmgr sandbox did not start: {errors.read()}")
                if line.startswith("export "):
                    name, _, value = line.removeprefix("export ").strip().partition("=")
                    env[name] = shlex.split(value)[0]
                elif line.startswith("# sandbox control API:"):
                    control_url = line.split()[4]
            yield SandboxProcess(process, env, control_url)
        finally:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
