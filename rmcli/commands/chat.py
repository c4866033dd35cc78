"""``rmgr chat``: a conversation, one line a turn, the whole conversation sent at every turn."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import anyio
import cyclopts

from rmcli import api, interrupt
from rmcli.commands.ask import Announcer, check_options, show_reply
from rmcli.config import check_text
from rmcli.conversation import Conversation, answered
from rmcli.errors import ConfigError
from rmcli.output import err
from rmcli.spinner import Spinner, wants_live
from rmcore.requests import DEFAULT_MAX_TOKENS, ChatRequest, Message

__all__ = ["chat"]

PROMPT = "> "
"""What a terminal shows where the next turn is typed (on stderr, so that stdout holds answers)."""


def chat(
    *,
    policy: Annotated[Path | None, cyclopts.Parameter(name=["--policy", "-p"])] = None,
    provider: str | None = None,
    fallback: str | None = None,
    route: str | None = None,
    model: str | None = None,
    system: str | None = None,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    temperature: float | None = None,
    continue_: Annotated[bool, cyclopts.Parameter(name=["--continue", "-c"], negative=())] = False,
) -> int:
    """Talk with the policy's route: each line read is your turn.

    The whole conversation so far is sent at every turn (fail-over carries it to the next
    provider, translated), answers stream on a terminal, and the conversation is kept in the
    state, so that rmgr ask --continue (or rmgr chat --continue) takes it up later. It ends at
    the end of input (Ctrl-D on a terminal). A turn whose every route failed is not kept: type it
    again. Exit code 0 when every turn was answered, 1 when one was not, 2 for bad input or
    configuration.

    Example: printf 'My name is Ada.\\nWhat is my name?\\n' | rmgr chat --policy cost-first

    Parameters
    ----------
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
        A system prompt, the conversation's first message.
    max_tokens
        The most tokens each answer may have (also bounds the worst-case cost).
    temperature
        Sampling temperature, 0 to 2; 0 is sent as 0. Unset: the provider's default.
    continue_
        Take up the last conversation (of chat or ask) instead of starting a new one.
    """
    check_options(max_tokens, temperature)
    if system is not None:
        check_text("--system", system)
        if continue_:
            raise ConfigError("--system starts a new conversation; it cannot be given with --continue")
    live = sys.stdout.isatty()
    announcer = Announcer(live, Spinner(live=wants_live(as_json=False)))
    client = api.Client(
        policy, provider=provider, fallback=fallback, model=model, hooks=announcer.hooks(), command="chat"
    )
    if route is not None:
        try:
            client.setup.for_route(route)
        except ConfigError as exc:
            raise ConfigError(f"--route {route}: {exc}") from None
    settings = _Turns(route=route, max_tokens=max_tokens, temperature=temperature)
    return interrupt.run(lambda: _talk(client, announcer, settings, system, continue_))


class _Turns:
    """What every turn of one chat asks with."""

    def __init__(self, *, route: str | None, max_tokens: int, temperature: float | None) -> None:
        self.route, self.max_tokens, self.temperature = route, max_tokens, temperature

    def request(self, messages: tuple[Message, ...], stream: bool) -> ChatRequest:
        return ChatRequest(
            messages=messages, max_tokens=self.max_tokens, temperature=self.temperature, stream=stream,
            source_id="chat",
        )


async def _talk(
    client: api.Client, announcer: Announcer, turns: _Turns, system: str | None, resume: bool
) -> int:
    terminal = sys.stdin.isatty()
    failed = False
    async with client:
        conversation = await client.last_conversation() if resume else None
        if resume and conversation is None:
            raise ConfigError("no conversation to continue yet — start one without --continue")
        if conversation is None:
            first = (Message(role="system", content=system),) if system else ()
            conversation = Conversation.new(first)
        elif terminal:
            err(f"INFO: continuing a conversation of {len(conversation.messages)} messages")
        while (line := await _next_line(terminal)) is not None:
            if not line.strip():
                continue
            request = turns.request((*conversation.messages, Message(role="user", content=line)), True)
            started = time.monotonic()
            announcer.spinner.start()
            try:
                outcome = await client.chat(request, route=turns.route)
            finally:
                announcer.spinner.stop()
            latency_ms = (time.monotonic() - started) * 1000.0
            shown = show_reply(outcome, latency_ms, announcer, False, turns.max_tokens)
            announcer.next_turn()
            if shown != 0:
                failed = True
                continue
            assert outcome.completion is not None
            conversation = answered(conversation, request.messages, outcome.completion)
            await client.keep_conversation(conversation)
    return 1 if failed else 0


async def _next_line(terminal: bool) -> str | None:
    """The next line of stdin without its line break, None at the end of input. A line that is
    not UTF-8 is refused (said on stderr) and the next one read."""
    while True:
        if terminal:
            sys.stderr.write(PROMPT)
            sys.stderr.flush()
        raw: bytes = await anyio.to_thread.run_sync(sys.stdin.buffer.readline, abandon_on_cancel=True)
        if not raw:
            if terminal:
                sys.stderr.write("\n")
            return None
        text = raw.decode("utf-8", errors="surrogateescape").rstrip("\r\n")
        try:
            check_text("the line", text, empty_ok=True)
        except ConfigError as exc:
            err(f"error: {exc}; it was not sent")
            continue
        return text
