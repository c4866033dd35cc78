"""Two independent readings of the providers' formats agree: whatever whole chat request the
core is given, the body ``rmcore.wire`` builds for OpenAI and for Anthropic is one the sandbox's
validation (written from the providers' documentation, separately, and proved against the
official SDKs) accepts. A body a real provider would answer 400 to would fail here first."""

from __future__ import annotations

import json

from hypothesis import assume, given, settings

from rmcli.sandbox.validation import anthropic_problem, openai_problem
from rmcore.providers import ProviderKind
from rmcore.requests import ChatRequest, message_text
from rmcore.wire import build_request
from tests.core.helpers import spec
from tests.core.request_strategies import chat_requests

OPENAI = spec("openai-direct", kind=ProviderKind.OPENAI)
ANTHROPIC = spec("anthropic-direct", kind=ProviderKind.ANTHROPIC)


@settings(max_examples=80, deadline=None)
@given(chat_requests())
def test_every_openai_body_is_one_openai_accepts(request: ChatRequest) -> None:
    body = json.loads(build_request(OPENAI, request, "key").body)
    assert openai_problem(body, json_word_rule=False) is None, body


@settings(max_examples=80, deadline=None)
@given(chat_requests())
def test_every_anthropic_body_is_one_anthropic_accepts(request: ChatRequest) -> None:
    """Anthropic refuses a message with no text (OpenAI takes it): such a request fails there
    with bad_request, as it should, and is left out here."""
    assume(all(message_text(m.content).strip() or m.tool_calls for m in request.messages))
    body = json.loads(build_request(ANTHROPIC, request, "key").body)
    assert anthropic_problem(body) is None, body
