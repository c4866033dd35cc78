"""``rmgr ask``: one completion, routed by the policy, streamed to the terminal."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import cyclopts
import msgspec
from returns.result import Failure, Success

from rmcli import api, interrupt
from rmcli.conversation import Conversation, answered
from rmcli.errors import ConfigError
from rmcli.hooks import Hooks
from rmcli.notices import announce_backoff, announce_failed_over, announce_skipped
from rmcli.output import LiveText, emit_json, err, safe_text
from rmcli.question import STDIN, read_question
from rmcli.spinner import Spinner, wants_live
from rmcore.attempts import AttemptRecord
from rmcore.chat_request import decode_openai_chat
from rmcore.events import RunOutcome, StartAttempt
from rmcore.requests import DEFAULT_MAX_TOKENS, ChatRequest
from rmcore.results import ask_json

__all__ = ["Announcer", "ask", "check_options", "show_reply"]


class Announcer:
    """Tells the person at the terminal what the routing does, the way the seed does (stderr),
    and streams the answer to stdout as it arrives; on a terminal a spinner turns on stderr until
    the first words (or the whole answer) arrive."""

    def __init__(self, live: bool, spinner: Spinner | None = None) -> None:
        self.live = live
        self.printed = False
        self.spinner = spinner or Spinner(live=False)
        self._text = LiveText()

    def hooks(self) -> Hooks:
        return Hooks(
            attempt_started=self.attempt_started,
            attempt_ended=self.attempt_ended,
            failed_over=announce_failed_over,
            backing_off=announce_backoff,
            skipped=announce_skipped,
            text=self.text if self.live else None,
        )

    def attempt_started(self, action: StartAttempt) -> None:
        self.spinner.waiting_for(action.provider.name)
        if not action.exclusive:
            err(f"INFO: starting {action.provider.name} (attempt {action.attempt_no}) alongside the others")
        if self.printed:
            # The text streamed so far came from an attempt that failed: say so, start afresh.
            self.end_text()
            sys.stdout.write("\n")
            sys.stdout.flush()
            err("WARNING: the answer above was cut off and is discarded; a new answer follows")
            self.printed = False

    def attempt_ended(self, record: AttemptRecord) -> None:
        if record.outcome == "cancelled":
            err(f"INFO: cancelled {record.provider}: {record.message}")

    def text(self, delta: str) -> None:
        """Show a delta of the answer as it arrives (escapes and keys neutralised across deltas)."""
        self.spinner.stop()
        sys.stdout.write(self._text.feed(delta))
        sys.stdout.flush()
        self.printed = True

    def next_turn(self) -> None:
        """A turn of a conversation was shown whole: the next one's text is not a fail-over's."""
        self.printed = False

    def end_text(self) -> None:
        """The streamed text ended: show what was held back (a possible start of a key)."""
        sys.stdout.write(self._text.flush())


def ask(
    prompt: Annotated[str | None, cyclopts.Parameter(allow_leading_hyphen=True)] = None,
    /,
    *,
    file: Path | None = None,
    policy: Annotated[Path | None, cyclopts.Parameter(name=["--policy", "-p"])] = None,
    provider: str | None = None,
    fallback: str | None = None,
    route: str | None = None,
    model: str | None = None,
    system: str | None = None,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    temperature: float | None = None,
    json: bool = False,
    request: Annotated[str | None, cyclopts.Parameter(allow_leading_hyphen=True)] = None,
    continue_: Annotated[bool, cyclopts.Parameter(name=["--continue", "-c"], negative=())] = False,
) -> int:
    """Ask one question, routed by the policy; the answer streams.

    The answer is printed as it arrives (a provider that does not stream shows a spinner until
    it answers). The question is the argument, - for stdin, or --file PATH; text piped in beside
    an argument is sent after it, as context. --model changes the model asked for, not the
    prices: costs are counted at the provider's. Without --policy the route is AI_PROVIDER,
    then AI_FALLBACK_PROVIDER. Fail-overs and retries are announced on stderr. Text streamed to
    a terminal has its control characters shown escaped and keys redacted, even when split
    across chunks. Exit code 0 with an answer, 1 when every route failed (or the budget or
    deadline ran out, or a reply passed the 16 MiB limit), 2 for bad input or configuration.

    Example: cat notes.txt | rmgr ask "summarise this" --policy cost-first

    Parameters
    ----------
    prompt
        The question or instruction; - reads it from stdin.
    file
        Read the question from this file.
    policy
        A policy (file or bundled name): route, limits, retries, budget.
    provider
        Use this provider (overrides the policy's route, or AI_PROVIDER).
    fallback
        Fall back to this provider (overrides AI_FALLBACK_PROVIDER).
    route
        Go by the policy's [routes.NAME] instead of [route].
    model
        Use this model (at the provider's prices).
    system
        A system prompt.
    max_tokens
        The most tokens the answer may have (also bounds the worst-case cost).
    temperature
        Sampling temperature, 0 to 2; 0 is sent as 0. Unset: the provider's default.
    json
        Print one JSON object (content, toolCalls, finishReason, provider, model, usage, costUsd,
        latencyMs, fallbackUsed, attempts) instead of streaming text.
    request
        Send a whole chat request: a JSON file (- for stdin) in the OpenAI chat-completions shape
        (messages, tools, tool_choice, response_format, stop, top_p, seed, max_tokens, ...),
        translated for whichever provider the route reaches. Its model, when it names one of the
        policy's routes, picks that route; otherwise it is not sent (use --model).
    continue_
        Continue the last conversation (of ask or chat): the question is sent after it.
    """
    check_options(max_tokens, temperature)
    announcer = Announcer(not json and sys.stdout.isatty(), Spinner(live=wants_live(as_json=json)))
    client = api.Client(policy, provider=provider, fallback=fallback, model=model, hooks=announcer.hooks())
    if route is not None:
        try:
            client.setup.for_route(route)  # an unknown name is refused before the prompt is read
        except ConfigError as exc:
            raise ConfigError(f"--route {route}: {exc}") from None
    if request is not None:
        if prompt is not None or file is not None or system is not None or continue_:
            raise ConfigError(
                "--request holds the whole request: give no prompt, --file, --system or --continue with it"
            )
        whole, named = read_request(request)
        if route is None and named is not None and named in client.setup.route_names():
            route = named
        # Streamed whatever the file says, as every ask is: the first-token and idle limits apply.
        turn = _Turn(request=msgspec.structs.replace(whole, stream=True), route=route)
    else:
        if continue_ and system is not None:
            raise ConfigError("--system starts a new conversation; it cannot be given with --continue")
        question = read_question(prompt, file, what="prompt")
        asked = ChatRequest.ask(question, system=system, max_tokens=max_tokens, temperature=temperature)
        turn = _Turn(request=asked, route=route, resume=continue_)
    return interrupt.run(lambda: _ask(client, turn, announcer, json))


def check_options(max_tokens: int, temperature: float | None) -> None:
    """Refuse ``--max-tokens`` and ``--temperature`` no provider takes, before anything is read."""
    if max_tokens < 1:
        raise ConfigError(f"--max-tokens must be at least 1 (got {max_tokens})")
    if temperature is not None and not 0.0 <= temperature <= 2.0:
        raise ConfigError(f"--temperature must be between 0 and 2 (got {temperature})")


async def demo_ask(env: dict[str, str], prompt: str, as_json: bool) -> int:
    """``rmgr demo --ask``: ``ask`` in ``env`` (the sandbox's)."""
    announcer = Announcer(not as_json and sys.stdout.isatty(), Spinner(live=wants_live(as_json=as_json)))
    client = api.Client(env=env, hooks=announcer.hooks())
    return await _ask(client, _Turn(request=ChatRequest.ask(prompt)), announcer, as_json)


@dataclass(frozen=True)
class _Turn:
    """What one ``ask`` sends: ``request``, after the last conversation when ``resume``."""

    request: ChatRequest
    route: str | None = None
    resume: bool = False


async def _ask(client: api.Client, turn: _Turn, announcer: Announcer, as_json: bool) -> int:
    """Send the turn; show the reply; keep the conversation it makes (for ``--continue``)."""
    async with client:
        conversation = await client.last_conversation() if turn.resume else None
        if turn.resume and conversation is None:
            raise ConfigError("no conversation to continue yet — ask once without --continue")
        request = turn.request
        if conversation is not None:
            messages = (*conversation.messages, *request.messages)
            request = msgspec.structs.replace(request, messages=messages)
        started = time.monotonic()
        announcer.spinner.start()
        try:
            outcome = await client.chat(request, route=turn.route)
        finally:
            announcer.spinner.stop()
        latency_ms = (time.monotonic() - started) * 1000.0
        if outcome.completion is not None:
            kept = answered(conversation or Conversation.new(), request.messages, outcome.completion)
            await client.keep_conversation(kept)
    return show_reply(outcome, latency_ms, announcer, as_json, request.max_tokens)


def read_request(source: str) -> tuple[ChatRequest, str | None]:
    """The chat request in the JSON file ``source`` (``-``: stdin) and the model it names; a
    ``ConfigError`` naming the file and the ``$.path`` of what is wrong."""
    where = "stdin" if source == STDIN else source
    try:
        body = sys.stdin.buffer.read() if source == STDIN else Path(source).read_bytes()
    except OSError as exc:
        raise ConfigError(f"--request {where}: cannot read it ({exc.strerror or exc})") from None
    match decode_openai_chat(body):
        case Success(found):
            return found.request, found.model
        case Failure(problem):
            raise ConfigError(f"--request {where}: {problem}")
    raise AssertionError("unreachable")  # pragma: no cover


def show_reply(
    outcome: RunOutcome, latency_ms: float, announcer: Announcer, as_json: bool, max_tokens: int
) -> int:
    """Print the answer (or the JSON result) and the closing notices; the exit code (0 answered,
    1 not). Tool calls the model asks for are printed after its text, one a line."""
    live = announcer.live
    if as_json:
        emit_json(ask_json(outcome, latency_ms))
    elif len(outcome.answers) > 1:
        for answer in outcome.answers:  # a compare route: every answer, each under its provider
            sys.stdout.write(f"=== {answer.provider} ({answer.model}) ===\n")
            sys.stdout.write(safe_text(answer.completion.content) + "\n\n")
        sys.stdout.flush()
    elif outcome.completion is not None:
        if live:
            announcer.end_text()
        else:
            sys.stdout.write(safe_text(outcome.completion.content))
        if outcome.completion.content or not outcome.completion.tool_calls:
            sys.stdout.write("\n")
        for call in outcome.completion.tool_calls:
            sys.stdout.write(safe_text(f"Tool call {call.id}: {call.name}({call.arguments})") + "\n")
        sys.stdout.flush()
    if outcome.completion is not None:
        if outcome.completion.finish_reason in ("length", "max_tokens"):
            err(f"WARNING: the answer stopped at max_tokens ({max_tokens}); raise it for a longer answer")
        err(
            f"INFO: answered by {outcome.provider} ({outcome.model}) in {latency_ms / 1000:.2f} s, "
            f"cost ${outcome.cost_usd:.6f}"
        )
        return 0
    assert outcome.error is not None
    if announcer.printed:
        announcer.end_text()
        sys.stdout.write("\n")
    err(f"error: {outcome.error.kind.value}: {outcome.error.message}")
    return 1
