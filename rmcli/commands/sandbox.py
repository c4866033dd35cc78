"""``rmgr sandbox`` and ``rmgr demo``: local providers that speak the real wire formats."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Literal

import anyio
import cyclopts

from rmcli import interrupt
from rmcli.config import ConfigError
from rmcli.output import err

__all__ = ["demo", "sandbox"]

DEMO_QUESTION = "Should we implement A/B testing for our features?"


def _parse_fail(items: list[str]) -> dict[str, str]:
    from rmcli.sandbox import parse_mode

    modes: dict[str, str] = {}
    for item in items:
        name, sep, mode = item.partition("=")
        if not sep or not name or not mode:
            raise ConfigError(f"--fail {item!r}: write NAME=MODE, e.g. --fail aiceo-gateway=down")
        try:
            parse_mode(mode)
        except ValueError as exc:
            raise ConfigError(f"--fail {item!r}: {exc}") from None
        modes[name] = mode
    return modes


def sandbox(
    *,
    fail: Annotated[list[str] | None, cyclopts.Parameter(name="--fail")] = None,
    port: int | None = None,
) -> int:
    """Start local providers that speak the real wire formats.

    Simulated providers on 127.0.0.1 speak all four wire formats, streaming included; the
    export lines printed point the environment at them. Runs until Ctrl-C. Each provider has a
    fault mode, set with --fail or changed at run time through the control URL it prints (PUT
    MODE to CONTROL/mode/NAME). Exit code 0 after Ctrl-C, 2 for a bad --fail or --port.

    Modes: ok, down (connection refused), hang, slow:S, status:CODE, ratelimit:S (429 with
    Retry-After), reset (connection reset before headers), truncate (stream cut mid-answer),
    stall (stream goes silent), garbage (non-JSON 200), huge (a well-formed 1 GiB reply, made
    as it is sent), endless[:S] (a reply that never ends: text events forever, flat out or one
    every S seconds).

    Example: rmgr sandbox --fail aiceo-gateway=down --fail glm-direct=slow:2

    Parameters
    ----------
    fail
        NAME=MODE: start provider NAME in fault MODE (the modes above); repeatable.
    port
        First port: providers on PORT..PORT+3, the control API on PORT+4 (default: free ports).
    """
    from rmcli.sandbox import NAMES, serve

    modes = _parse_fail(fail or [])
    unknown = [n for n in modes if n not in NAMES]
    if unknown:
        raise ConfigError(f"--fail: unknown provider {unknown[0]!r}; sandbox providers: {', '.join(NAMES)}")
    if port is not None and not 1 <= port <= 65530:
        raise ConfigError(f"--port must be between 1 and 65530 (got {port})")

    def show(line: str) -> None:
        print(line, flush=True)

    try:
        anyio.run(serve, modes, "127.0.0.1", port, show)
    except OSError as exc:
        raise ConfigError(f"cannot start the sandbox: {exc.strerror or exc}") from None
    return 0


def demo(
    *,
    question: Annotated[str, cyclopts.Parameter(name="--question")] = DEMO_QUESTION,
    format: Literal["text", "json", "markdown"] = "text",
    ask: bool = False,
) -> int:
    """Fail-over end to end against the sandbox; no keys needed.

    Starts the sandbox with the primary provider (aiceo-gateway) down and analyses the question
    with AI_PROVIDER=aiceo-gateway and AI_FALLBACK_PROVIDER=glm-direct, so every perspective is
    served by the fallback. State (attempts, cache, history) goes to a temporary folder, not
    yours. Exit codes as for analyze (or ask, with --ask); 2 for an empty question.

    Example: rmgr demo --ask --question "Say hello"

    Parameters
    ----------
    question
        What to analyse (or ask, with --ask).
    format
        text, json or markdown, as for analyze.
    ask
        One completion (rmgr ask) instead of the analysis.
    """
    from rmcli.commands.analyze import demo_analysis
    from rmcli.commands.ask import demo_ask
    from rmcli.question import read_question
    from rmcli.sandbox import Sandbox

    # Checked before the sandbox starts: a bad question is bad input (exit 2), not a run.
    if not question.strip():
        raise ConfigError('--question is empty — write the question, e.g. --question "Build or buy?"')
    question = read_question(question, piped=False, what="question")

    async def main() -> int:
        async with Sandbox(modes={"aiceo-gateway": "down"}) as box:
            with tempfile.TemporaryDirectory(prefix="rmgr-demo-") as home:
                env = {
                    **box.env(),
                    "AI_PROVIDER": "aiceo-gateway",
                    "AI_FALLBACK_PROVIDER": "glm-direct",
                    "RECURSIVEMANAGER_HOME": str(Path(home) / "state"),
                }
                err("INFO: sandbox started on 127.0.0.1; aiceo-gateway is down, glm-direct is up")
                if ask:
                    return await demo_ask(env, question, format == "json")
                return await demo_analysis(env, question, format)

    return interrupt.run(main)
