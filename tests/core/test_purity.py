"""The core is pure: importing every rmcore module pulls in no I/O library."""

from __future__ import annotations

import subprocess
import sys

FORBIDDEN = [
    "anyio",
    "httpx",
    "httpcore",
    "cyclopts",
    "sqlite3",
    "_sqlite3",
    "socket",
    "asyncio",
    "dotenv",
    "rich",
]

PROGRAM = f"""
import importlib, pkgutil, sys
import rmcore
for info in pkgutil.walk_packages(rmcore.__path__, "rmcore."):
    importlib.import_module(info.name)
loaded = [m for m in {FORBIDDEN!r} if m in sys.modules]
print(",".join(loaded))
"""


def test_importing_every_rmcore_module_loads_no_io_library() -> None:
    """`import rmcore` (and every submodule) must not import anyio, httpx, cyclopts, sqlite3, ..."""
    out = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"rmcore imported: {out.stdout.strip()}"


def test_rmcore_never_reads_the_environment_or_the_clock() -> None:
    """No rmcore source mentions os.environ, time.time, time.monotonic or the global random."""
    from pathlib import Path

    import rmcore

    root = Path(rmcore.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        text = path.read_text()
        for needle in (
            "os.environ",
            "os.getenv",
            "time.time(",
            "time.monotonic(",
            "random.random(",
            "datetime.now(",
        ):
            if needle in text:
                offenders.append(f"{path.relative_to(root)}: {needle}")
    assert offenders == []
