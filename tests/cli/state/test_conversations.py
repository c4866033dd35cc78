"""Chat conversations on every backend: a save replaces a conversation's messages whole, the
latest is the one saved last (even within one millisecond), and nothing is there at first."""

from __future__ import annotations

import pytest

from rmcli.state import State

pytestmark = pytest.mark.anyio


async def test_an_empty_state_has_no_conversation(state: State) -> None:
    assert await state.conversations.latest() is None
    assert await state.conversations.get("nope") is None


async def test_a_save_replaces_the_messages_and_makes_the_conversation_the_latest(state: State) -> None:
    talk = state.conversations
    await talk.save("a", b'[{"role": "user"}]', 1_000)
    await talk.save("b", b"[1]", 1_000)
    assert await talk.latest() == ("b", b"[1]")
    await talk.save("a", b'[{"role": "user"}, {"role": "assistant"}]', 1_000)
    assert await talk.latest() == ("a", b'[{"role": "user"}, {"role": "assistant"}]')
    assert await talk.get("b") == b"[1]"


async def test_conversations_outlive_the_state_that_saved_them(state: State, backend: object) -> None:
    """Closed and opened again (another ``rmgr`` command), the latest conversation is there."""
    from tests.cli.state.backends import Backend

    assert isinstance(backend, Backend)
    await state.conversations.save("kept", b"[]", 5)
    async with backend.open() as again:
        assert await again.conversations.latest() == ("kept", b"[]")
