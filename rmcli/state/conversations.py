"""Chat conversations (``rmgr chat``, ``rmgr ask --continue``) on either backend: each one's
messages so far as opaque bytes, replaced whole at every turn; the latest is the one saved last.

SQLite: the ``conversations`` table, where a save replaces the row under a new ``seq`` (the
highest is the latest). Redis: the hash ``conversations:payload`` by id, and the zset
``conversations:recent`` of ids by a counter (``conversations:seq``) that every save moves on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Protocol

if TYPE_CHECKING:
    from rmcli.state.redis import Connection
    from rmcli.state.sqlite import Database

__all__ = ["Conversations", "RedisConversations", "SqliteConversations"]


class Conversations(Protocol):
    """Chat conversations, each one's messages as opaque bytes."""

    async def save(self, conversation_id: str, payload: bytes, now_ms: int) -> None:
        """Store ``payload`` as the conversation's messages so far; it becomes the latest."""
    async def get(self, conversation_id: str) -> bytes | None:
        """The conversation's messages, or None when there is none of that id."""
    async def latest(self) -> tuple[str, bytes] | None:
        """The id and messages of the conversation saved last, or None when there is none."""


class SqliteConversations:
    """``Conversations`` in the ``conversations`` table (schema 8)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def save(self, conversation_id: str, payload: bytes, now_ms: int) -> None:
        sql = "INSERT OR REPLACE INTO conversations (id, saved_ms, payload) VALUES (?, ?, ?)"
        await self._db.change(sql, (conversation_id, now_ms, bytes(payload)))

    async def get(self, conversation_id: str) -> bytes | None:
        rows = await self._db.rows("SELECT id, payload FROM conversations WHERE id = ?", (conversation_id,))
        return self._found(rows)[1] if rows else None

    async def latest(self) -> tuple[str, bytes] | None:
        rows = await self._db.rows("SELECT id, payload FROM conversations ORDER BY seq DESC LIMIT 1")
        return self._found(rows) if rows else None

    def _found(self, rows: list[tuple[object, ...]]) -> tuple[str, bytes]:
        conversation_id, payload = rows[0]
        if not isinstance(payload, bytes):
            raise self._db.corrupt(f"conversation {conversation_id!r} has no payload bytes")
        return str(conversation_id), payload


# KEYS: payloads, recent, seq. ARGV: id, payload.
_SAVE: Final = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[3]), ARGV[1])
"""


class RedisConversations:
    """``Conversations`` in Redis: each call one round trip (a script to save)."""

    def __init__(self, connection: Connection) -> None:
        from rmcli.state.redis import _Script

        self._r, self._save = connection, _Script(_SAVE)
        self._keys = [connection.key("conversations:", name) for name in ("payload", "recent", "seq")]

    async def save(self, conversation_id: str, payload: bytes, now_ms: int) -> None:
        await self._r.run(self._save, self._keys, [conversation_id, bytes(payload)])

    async def get(self, conversation_id: str) -> bytes | None:
        found = await self._r.command("HGET", self._keys[0], conversation_id)
        return None if found is None else bytes(found)

    async def latest(self) -> tuple[str, bytes] | None:
        newest = await self._r.command("ZRANGE", self._keys[1], -1, -1)
        payload = await self.get(newest[0].decode()) if newest else None
        return None if payload is None else (newest[0].decode(), payload)
