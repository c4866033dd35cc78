"""The local providers every benchmark calls: the project's sandbox, in a process of its own.

    python bench/upstream.py [--mode NAME=MODE ...]

prints one JSON line (each provider's chat URL, SDK base URL and key, and the control URL) and
serves until it is terminated. Running it apart from the client under test gives each its own
core on a two-core machine, and one server serves every contender of a benchmark, so that all
of them meet the same server. ``Upstream`` starts and stops it from a benchmark.

The sandbox answers a non-streamed chat request with about 0.15 ms of its own CPU, several times
less than the fastest client spends on it, so it is not what the throughput figures measure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from harness import BENCH, ROOT, child_env


class Upstream:
    """``bench/upstream.py`` as a context manager: started on entry, terminated on exit."""

    def __init__(self, modes: Mapping[str, str] | None = None) -> None:
        self.modes = dict(modes or {})
        self._process: subprocess.Popen[str] | None = None
        self.info: dict[str, Any] = {}

    def __enter__(self) -> Upstream:
        argv = [sys.executable, str(BENCH / "upstream.py")]
        for name, mode in self.modes.items():
            argv += ["--mode", f"{name}={mode}"]
        self._process = subprocess.Popen(argv, cwd=ROOT, env=child_env(), stdout=subprocess.PIPE, text=True)
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            self._process.wait()
            raise RuntimeError("the benchmark's local server did not start")
        self.info = json.loads(line)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)
            if self._process.stdout is not None:
                self._process.stdout.close()
            self._process = None

    def cpu_s(self) -> float:
        """The CPU time (user and system) the server has spent so far, from ``/proc`` (Linux; 0.0
        elsewhere): a benchmark reads it before and after a run to tell whether the server, not the
        client, was what limited it."""
        if self._process is None:
            return 0.0
        try:
            stat = Path(f"/proc/{self._process.pid}/stat").read_text(encoding="ascii")
        except OSError:
            return 0.0
        fields = stat.rsplit(")", 1)[1].split()  # after the command's name: state, ppid, ...
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    def env(self) -> dict[str, str]:
        """The variables that point the product at the local providers (URLs and keys)."""
        return dict(self.info["env"])

    def json_arg(self) -> str:
        """Everything a worker process needs to reach the providers, as one argument."""
        return json.dumps(self.info)


def closed_port() -> socket.socket:
    """A loopback port that refuses connections: bound (so no one else takes it), never listening.
    Keep the socket open while the port is used; close it afterwards."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


async def _serve(modes: Mapping[str, str]) -> None:
    from rmcli.sandbox import Sandbox

    async with Sandbox(modes, stream_delay_s=0.0) as sandbox:
        info = {
            "env": sandbox.env(),
            "urls": {name: sandbox.url(name) for name in sandbox.names},
            "baseUrls": {name: sandbox.base_url(name) for name in sandbox.names},
            "keys": {name: sandbox.key(name) for name in sandbox.names},
            "control": sandbox.control_url,
        }
        print(json.dumps(info), flush=True)
        await asyncio.Event().wait()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", action="append", default=[], help="NAME=MODE, e.g. glm-direct=slow:1")
    args = parser.parse_args(argv)
    modes = dict(item.split("=", 1) for item in args.mode)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(modes))


if __name__ == "__main__":
    main()
