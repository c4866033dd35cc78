"""Every script in examples/ runs as documented (each starts its own in-process sandbox) and
shows the conduct its scenario is about."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = {p.stem: p for p in sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.py"))}

EXPECTED = {
    "automatic_failover": ["aiceo-gateway    connection", "answered by glm-direct (fallback used: True)"],
    "manual_provider_switching": ["answered by ['anthropic-direct']", "answered by ['openai-direct']"],
    "cost_optimized": ["providers=['glm-direct']", "status=ok"],
    "provider_comparison": ["OPENAI-DIRECT", "Status: failed", "ANTHROPIC-DIRECT"],
    "health_monitoring": ["anthropic-direct ✗", "auth", "openai-direct    ✗ N/A      unreachable"],
    "sequential_failover": ["tried glm-direct: overloaded", "answered by anthropic-direct"],
    "fastest_provider": ["Fastest provider: openai-direct", "cancelled"],
    "quality_first": ["anthropic-direct: timeout", "answered by glm-direct (fallback used: True)"],
    "sync_engine_urllib": ["aiceo-gateway failed (connection); trying glm-direct", "answered by glm-direct"],
    "usage_tracking": ["aiceo-gateway    requests=4 failures=4", "glm-direct       requests=3 failures=0"],
}


def test_every_example_is_checked() -> None:
    assert set(EXAMPLES) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs_and_shows_its_scenario(name: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES[name])],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    for text in EXPECTED[name]:
        assert text in result.stdout, (text, result.stdout)
    assert not (tmp_path / ".recursivemanager").exists(), "examples keep their state in a temporary folder"


def test_the_urllib_loop_needs_neither_anyio_nor_httpx() -> None:
    """Importing the synchronous example (its loop, not the sandbox it starts) loads no async stack."""
    program = (
        "import importlib.util, sys; "
        f"spec = importlib.util.spec_from_file_location('ex', {str(EXAMPLES['sync_engine_urllib'])!r}); "
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module); "
        "print(','.join(m for m in ('anyio', 'httpx') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
