"""Local simulated providers over real HTTP, each with a fault mode: ``rmgr sandbox`` and the tests.

``Sandbox`` runs the four built-in providers (aiceo-gateway, glm-direct, anthropic-direct,
openai-direct) on 127.0.0.1, speaking their real wire formats, streaming included, with a fault
mode each (``MODES_HELP``) and a control API for other processes. ``serve`` runs one until
cancelled and prints the ``export`` lines that point the product at it.

Beyond text, the OpenAI and Anthropic formats take whole conversations: a request with tools is
answered with a tool call, one ending in tool results with text that quotes them, images are
counted in the answer, a ``response_format`` asking for JSON gets JSON, a stop sequence cuts the
answer (``chat.py``, ``schema.py``); and a malformed request is refused with the provider's own
400, as its API words it (``validation.py``). The gateway carries text only.
"""

from rmcli.sandbox.modes import MODES_HELP, Mode, ModeKind, parse_mode
from rmcli.sandbox.replies import ReplyFunction, default_reply
from rmcli.sandbox.server import (
    ENV_VARS,
    HUGE_BYTES,
    NAMES,
    Outcome,
    Sandbox,
    SandboxRequest,
    export_lines,
    serve,
)

__all__ = [
    "ENV_VARS",
    "HUGE_BYTES",
    "MODES_HELP",
    "NAMES",
    "Mode",
    "ModeKind",
    "Outcome",
    "ReplyFunction",
    "Sandbox",
    "SandboxRequest",
    "default_reply",
    "export_lines",
    "parse_mode",
    "serve",
]
