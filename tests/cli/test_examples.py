"""Every script in examples/ runs as documented (against the in-process sandbox)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.py"))


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs(script: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "answered by" in result.stdout


def test_automatic_failover_uses_the_fallback(tmp_path: Path) -> None:
    script = next(p for p in EXAMPLES if p.stem == "automatic_failover")
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=60
    )
    assert "answered by glm-direct (fallback used: True)" in out.stdout
    assert "aiceo-gateway    connection" in out.stdout
