"""The sandbox's control API, for processes other than the one running it (always up, JSON).

``GET /providers``: names, URLs, ports, modes and request counts. ``PUT /mode/NAME`` with the mode
as the body (``down``, ``slow:2``, ...; or ``{"mode": "..."}``). ``GET /log/NAME``: the provider's
request log. ``DELETE /log``: clear every log.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING
from urllib.parse import unquote

from rmcli.sandbox.formats import encode_json
from rmcli.sandbox.request import HttpError, Request

if TYPE_CHECKING:
    from rmcli.sandbox.server import Sandbox

__all__ = ["control_answer", "control_unreadable", "describe"]


def control_unreadable(error: HttpError) -> bytes:
    """The JSON body answering a request the control API could not read."""
    return encode_json({"error": error.message})


def describe(sandbox: Sandbox, name: str) -> dict[str, object]:
    """One provider as ``GET /providers`` lists it."""
    return {
        "name": name,
        "url": sandbox.url(name),
        "baseUrl": sandbox.base_url(name),
        "port": sandbox.port(name),
        "mode": str(sandbox.mode(name)),
        "requests": len(sandbox.requests(name)),
    }


def _mode_text(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace").strip()
    if not text.startswith("{"):
        return text
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return str(value.get("mode", "")) if isinstance(value, dict) else text


def control_answer(sandbox: Sandbox, request: Request) -> tuple[int, object]:
    """The status and JSON payload answering one control request."""
    method, path = request.method, request.path.rstrip("/")
    head, _, last = path.rpartition("/")
    name = unquote(last)
    allowed = {"/providers": "GET", "/log": "DELETE"}
    if head == "/mode":
        allowed[path] = "PUT"
    elif head == "/log":
        allowed[path] = "GET"
    if path not in allowed:
        return 404, {"error": f"no such control endpoint: {request.method} {request.path}"}
    if allowed[path] != method:
        return 405, {"error": f"use {allowed[path]} {path}"}
    if head in ("/mode", "/log") and name not in sandbox.names:
        return 404, {"error": f"unknown sandbox provider {name!r} (known: {', '.join(sandbox.names)})"}
    if path == "/providers":
        return 200, {"providers": [describe(sandbox, n) for n in sandbox.names]}
    if path == "/log":
        return 200, {"cleared": sandbox.clear_log()}
    if head == "/log":
        return 200, {"provider": name, "requests": [r.to_json() for r in sandbox.requests(name)]}
    try:
        sandbox.set_mode(name, _mode_text(request.body))
    except ValueError as error:
        return 400, {"error": str(error)}
    return 200, describe(sandbox, name)
