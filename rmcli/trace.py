"""``rmgr --verbose``: a trace on stderr of every HTTP exchange and every routing decision.

Two sources feed it. httpx event hooks on the run's client give each request (method, URL,
headers) and each response (status, time to its headers, headers); its ``hooks()``, fanned out
beside the command's own, give the engine's decisions (attempt started, attempt ended, back-off,
fail-over, skip). Every line starts with ``TRACE:``; an exchange's lines carry its number
(``#3``) so that concurrent ones can be told apart, and, in an analysis, the perspective (and
provider, for ``compare``) they belong to.

Keys are never shown. A header is printed as ``<redacted>`` when its name is a credential's
(Authorization, X-Api-Key, Api-Key, Cookie, Set-Cookie, or any name with auth, key, token,
secret, password, session or cookie in it) or when its value holds a key this process read;
query parameters named like a credential are redacted in URLs, and so is a password in one; and
every line goes through ``rmcli.output.err``, which replaces any key left by ``<redacted>`` and
escapes terminal controls a provider may have put in a header.

A command turns the trace on with ``enable()`` (``rmgr --verbose`` does, for every command);
``rmcli.api`` asks ``current()`` and, when it is on, attaches it to every client it makes and
puts its hooks beside the caller's.
"""

from __future__ import annotations

import contextvars
import re
import time
import weakref
from collections.abc import Callable, Iterable
from urllib.parse import unquote_plus, urlsplit, urlunsplit

import httpx

from rmcli.hooks import Hooks
from rmcli.output import REDACTED, contains_secret, err
from rmcore.attempts import AttemptRecord
from rmcore.events import Backoff, FailedOver, StartAttempt, TargetSkipped
from rmcore.perspectives import Perspective

__all__ = [
    "CREDENTIAL_HEADERS",
    "Trace",
    "current",
    "disable",
    "enable",
    "redact_header",
    "redact_url",
    "trace_label",
    "trace_scope",
]

CREDENTIAL_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "x-api-key", "api-key", "cookie", "set-cookie"}
)
"""Headers whose value is always shown as ``<redacted>``."""

_CREDENTIAL_NAME = re.compile(r"auth|key|token|secret|passw|session|cookie|credential|signature")
"""A header or query parameter named like this is treated as a credential too (``x-goog-api-key``,
``x-auth-token``, ``?key=``). Rate-limit headers that count tokens are not credentials."""
_COUNTS_TOKENS = re.compile(r"ratelimit|rate-limit|-tokens")

trace_label: contextvars.ContextVar[str] = contextvars.ContextVar("rmgr_trace_label", default="")
"""What the current task works for (a perspective, a provider in ``compare``): shown on its lines.
Tasks inherit it, so the attempts a perspective's route starts carry its label."""

trace_scope: contextvars.ContextVar[str] = contextvars.ContextVar("rmgr_trace_scope", default="")
"""The provider a ``compare`` task works for: put before each perspective's label."""

_active: Trace | None = None


def enable(write: Callable[[str], None] = err) -> Trace:
    """Turn the trace on for this process; lines go to ``write`` (stderr, redacted)."""
    global _active
    _active = Trace(write)
    return _active


def disable() -> None:
    """Turn the trace off."""
    global _active
    _active = None


def current() -> Trace | None:
    """The process's trace, when ``--verbose`` turned it on."""
    return _active


def _is_credential_name(name: str) -> bool:
    lowered = name.lower()
    if lowered in CREDENTIAL_HEADERS:
        return True
    return bool(_CREDENTIAL_NAME.search(lowered)) and not _COUNTS_TOKENS.search(lowered)


def redact_header(name: str, value: str) -> str:
    """The value of header ``name`` as the trace shows it: ``<redacted>`` for a credential."""
    if _is_credential_name(name) or contains_secret(value):
        return REDACTED
    return value


def redact_url(url: httpx.URL | str) -> str:
    """``url`` with a password and credential-like query parameters replaced by ``<redacted>``."""
    parts = urlsplit(str(url))
    netloc = parts.netloc
    userinfo, at, host = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.partition(':')[0]}:{REDACTED}@{host}"
    fields = []
    for field in parts.query.split("&") if parts.query else []:
        name, equals, value = field.partition("=")
        if equals and (_is_credential_name(unquote_plus(name)) or contains_secret(unquote_plus(value))):
            field = f"{name}={REDACTED}"
        fields.append(field)
    return urlunsplit((parts.scheme, netloc, parts.path, "&".join(fields), parts.fragment))


class Trace:
    """Writes the trace lines: HTTP exchanges (through ``attach``) and routing decisions (through
    ``hooks``)."""

    def __init__(self, write: Callable[[str], None] = err, clock: Callable[[], float] = time.monotonic):
        self._write = write
        self._clock = clock
        self._count = 0
        self._sent: weakref.WeakKeyDictionary[httpx.Request, tuple[int, float]] = weakref.WeakKeyDictionary()

    def line(self, text: str) -> None:
        """One line of the trace, with the current task's label."""
        label = trace_label.get()
        self._write(f"TRACE: {f'[{label}] ' if label else ''}{text}")

    # -- HTTP ------------------------------------------------------------------------------------

    def attach(self, client: httpx.AsyncClient) -> httpx.AsyncClient:
        """Trace every request ``client`` sends and every response head it receives."""
        hooks = client.event_hooks
        client.event_hooks = {
            "request": [*hooks.get("request", []), self._on_request],
            "response": [*hooks.get("response", []), self._on_response],
        }
        return client

    def _headers(self, number: int, arrow: str, headers: Iterable[tuple[str, str]]) -> None:
        for name, value in headers:
            self.line(f"#{number} {arrow} {name.lower()}: {redact_header(name, value)}")

    async def _on_request(self, request: httpx.Request) -> None:
        self._count += 1
        number = self._count
        self._sent[request] = (number, self._clock())
        self.line(f"#{number} > {request.method} {redact_url(request.url)}")
        self._headers(number, ">", request.headers.multi_items())

    async def _on_response(self, response: httpx.Response) -> None:
        number, sent_at = self._sent.pop(response.request, (0, self._clock()))
        elapsed_ms = (self._clock() - sent_at) * 1000.0
        reason = response.reason_phrase or ""
        self.line(
            f"#{number} < {response.status_code} {reason} in {elapsed_ms:.1f} ms "
            f"({response.request.method} {redact_url(response.request.url)})"
        )
        self._headers(number, "<", response.headers.multi_items())

    # -- routing decisions -----------------------------------------------------------------------

    def hooks(self) -> Hooks:
        """Hooks that trace the engine's decisions; an analysis's perspectives label their task."""
        return Hooks(
            attempt_started=self._started,
            attempt_ended=self._ended,
            failed_over=self._failed_over,
            backing_off=self._backing_off,
            skipped=self._skipped,
            perspective_started=_label_perspective,
            adjusted=self._adjusted,
        )

    def _adjusted(self, action: StartAttempt, notes: tuple[str, ...]) -> None:
        self.line(f"attempt {action.attempt_no} on {action.provider.name}: {'; '.join(notes)}")

    def _started(self, action: StartAttempt) -> None:
        spec = action.provider
        alongside = "" if action.exclusive else ", alongside others"
        self.line(
            f"attempt {action.attempt_no} on {spec.name} ({spec.model}) started{alongside}: "
            f"timeout {action.timeout_s:.3g} s ({action.timeout_kind.value}), "
            f"first token {action.first_token_timeout_s:.3g} s, idle {action.idle_timeout_s:.3g} s"
        )

    def _ended(self, record: AttemptRecord) -> None:
        status = "" if record.status is None else f" HTTP {record.status}"
        why = f": {record.message}" if record.message else ""
        self.line(
            f"attempt on {record.provider} ended {record.outcome}{status} after {record.latency_ms:.0f} ms, "
            f"{record.usage.input_tokens}/{record.usage.output_tokens} tokens, ${record.cost_usd:.6f}{why}"
        )

    def _failed_over(self, notice: FailedOver) -> None:
        self.line(
            f"fail-over from {notice.from_provider} to {notice.to_provider}: "
            f"{notice.error.kind.value} ({notice.error.message})"
        )

    def _backing_off(self, notice: Backoff, seconds: float) -> None:
        self.line(f"back-off: {notice.provider} again in {seconds:.2f} s ({notice.reason})")

    def _skipped(self, notice: TargetSkipped) -> None:
        s = notice.skipped
        self.line(f"skip {s.provider} without a request: {s.kind.value} ({s.message})")


def _label_perspective(perspective: Perspective) -> None:
    # Called in the perspective's own task: the attempts its route starts inherit the label.
    scope = trace_scope.get()
    trace_label.set(f"{scope} {perspective.id}" if scope else perspective.id)
