"""The state in one Redis database, for a fleet of machines that share provider quotas, budgets,
circuit breakers, the answer cache and the history (``RECURSIVEMANAGER_STATE=redis://...``).

It behaves as the SQLite state does (the same tests run on both), on the asyncio client: a stalled
server never blocks the event loop. Connecting gives up after ``CONNECT_TIMEOUT_S``, an answer after
``SOCKET_TIMEOUT_S``, nothing is retried behind the caller's back: each is ``StoreUnavailable``.

Decisions whose rule lives in ``rmcore`` (breaker, quota) are taken in Python on a plain read and
committed by a Lua script that compares and sets: it writes only if what was decided on still holds,
else returns what is there now to decide again. So of processes at once one gets the probe, every
failure counts, a cap admits exactly as far as it holds. The sums this client's last settlement left
are tried first, as a guess: a routed call is five round trips (admit, begin, sent, end, settle).

Keys, after the prefix (``rmgr:``); a window field ``F`` is the JSON ``[cap_key, window]``:
``attempts`` zset of SEQ (16 hex digits) + the attempt's JSON array by ``started_at_ms``,
``attempts:keys`` hash of each attempt key's member, ``attempts:seq``; ``circuit:NAME`` JSON,
``circuits`` the set of names; ``cache:payload`` and ``cache:perspective`` hashes by key,
``cache:created`` zset, ``cache:counters``; ``history:entry:ID`` hash, ``history:all`` and
``history:agent:AGENT`` zsets of ``SEQ:ID`` by ``created_ms``, ``history:ids`` (prefix look-ups by
lexical range), ``history:seq``; ``quota:settled`` hash F -> use, ``quota:windows`` F -> ``[cap_key,
resource, window, resets_at, limit]``, ``quota:ends`` zset of F by ``resets_at``, ``quota:leases``
zset of reservation ids by lease end, ``quota:reservation:ID`` hash F -> amount; ``slot:NAME`` zset
of holders by lease end. Scripts build keys from the prefix: one server, not a Cluster.
"""

from __future__ import annotations

import asyncio
import hashlib
import urllib.parse
from collections.abc import Collection, Sequence
from typing import Any, Final, TypeVar

import msgspec
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, AuthorizationError, NoScriptError, ReadOnlyError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from rmcli.state import base, redacted_url, rules
from rmcli.state.base import SlotBusy, State, StoreError, StoreUnavailable
from rmcli.state.conversations import RedisConversations
from rmcli.state.rules import CapsRules, CircuitRules, Decide, convert
from rmcore.attempts import AttemptRecord, Origin
from rmcore.breaker import CircuitState
from rmcore.quota import CapUsage, Charge, Refusal, refuse
from rmcore.usage import AttemptRow

__all__ = ["CONNECT_TIMEOUT_S", "DEFAULT_PREFIX", "SOCKET_TIMEOUT_S", "Connection", "open_redis"]

DEFAULT_PREFIX: Final = "rmgr:"
CONNECT_TIMEOUT_S: Final = 0.5
"""How long a connection to Redis may take before the state is unavailable."""
SOCKET_TIMEOUT_S: Final = 1.0
"""How long Redis may take to answer one command before the state is unavailable."""
_VARIABLE: Final = "RECURSIVEMANAGER_STATE"

_TRIES: Final = 100
_RECENT_SUMS_KEPT: Final = 64
_SEQ: Final = 16
_ENTRY_FIELDS: Final = ("agent_id", "question", "status", "confidence", "created_ms")
_CIRCUIT_FIELDS: Final = ("state", "consecutive_failures", "opened_at", "probe_started_at")
_T = TypeVar("_T")
_Arg = str | bytes | int | float


class _Script:
    """A Lua script, run by its SHA1 and sent whole when the server does not know it."""

    def __init__(self, text: str) -> None:
        self.text, self.sha = text, hashlib.sha1(text.encode()).hexdigest()


# KEYS: attempts, attempts:keys, attempts:seq. ARGV: key, started_at_ms, JSON, '1' to replace ('-': remove).
_ATTEMPT: Final = _Script("""
local old = redis.call('HGET', KEYS[2], ARGV[1])
if old and ARGV[4] == '' then return 0 end
if old then redis.call('ZREM', KEYS[1], old) end
if ARGV[4] == '-' then return redis.call('HDEL', KEYS[2], ARGV[1]) end
local member = (old and old:sub(1, 16) or string.format('%016x', redis.call('INCR', KEYS[3]))) .. ARGV[3]
redis.call('ZADD', KEYS[1], ARGV[2], member)
return redis.call('HSET', KEYS[2], ARGV[1], member)
""")

# KEYS: the circuit, circuits. ARGV: its JSON as read ('' for none), the new JSON, the name.
# 1 when written; else {what it holds now}.
_CIRCUIT_SET: Final = _Script("""
local found = redis.call('GET', KEYS[1])
if (found or '') ~= ARGV[1] then return {found} end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
return 1
""")

# KEYS: circuits. ARGV: the circuit key prefix, then the names (none: every one). The names deleted.
_CIRCUITS_RESET: Final = _Script("""
local removed = {}
for _, name in ipairs(#ARGV > 1 and {unpack(ARGV, 2)} or redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('DEL', ARGV[1] .. name) == 1 then removed[#removed + 1] = name end
  redis.call('SREM', KEYS[1], name)
end
return removed
""")

# KEYS: payload, perspective, created, counters. ARGV: key, the oldest fresh created_ms.
_CACHE_GET: Final = _Script("""
local created = redis.call('ZSCORE', KEYS[3], ARGV[1])
local payload = created and tonumber(created) >= tonumber(ARGV[2]) and redis.call('HGET', KEYS[1], ARGV[1])
if created and not payload then
  for i = 1, 2 do redis.call('HDEL', KEYS[i], ARGV[1]) end
  redis.call('ZREM', KEYS[3], ARGV[1])
end
redis.call('HINCRBY', KEYS[4], payload and 'hits' or 'misses', 1)
return payload
""")

# KEYS: payload, perspective, created. ARGV: key, perspective, payload, created_ms.
_CACHE_PUT: Final = _Script("""
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
""")

# KEYS: payload, perspective, created, counters. ARGV: the oldest fresh created_ms.
_CACHE_STATS: Final = _Script("""
local oldest = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
local newest = redis.call('ZRANGE', KEYS[3], -1, -1, 'WITHSCORES')
local size, counts = 0, redis.call('HMGET', KEYS[4], 'hits', 'misses')
for _, key in ipairs(redis.call('HKEYS', KEYS[1])) do size = size + redis.call('HSTRLEN', KEYS[1], key) end
return {redis.call('ZCARD', KEYS[3]), redis.call('ZCOUNT', KEYS[3], ARGV[1], '+inf'),
        oldest[2] or false, newest[2] or false, size, counts[1] or '0', counts[2] or '0'}
""")

# KEYS: payload, perspective, created[, counters, removed too]. ARGV: the oldest fresh created_ms
# ('+inf': every entry). How many entries were removed.
_CACHE_REMOVE: Final = _Script("""
local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[1])
for _, key in ipairs(expired) do
  for i = 1, 2 do redis.call('HDEL', KEYS[i], key) end
  redis.call('ZREM', KEYS[3], key)
end
if KEYS[4] then redis.call('DEL', KEYS[4]) end
return #expired
""")

# KEYS: entry, all, agent index, ids, seq. ARGV: id, agent_id, question, status, confidence ('':
# unknown), created_ms, payload. False when the id is taken.
_HISTORY_ADD: Final = _Script("""
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local member = string.format('%016x', redis.call('INCR', KEYS[5])) .. ':' .. ARGV[1]
redis.call('HSET', KEYS[1], 'agent_id', ARGV[2], 'question', ARGV[3], 'status', ARGV[4],
           'confidence', ARGV[5], 'created_ms', ARGV[6], 'member', member, 'payload', ARGV[7])
for i = 2, 3 do redis.call('ZADD', KEYS[i], ARGV[6], member) end
return redis.call('ZADD', KEYS[4], 0, ARGV[1])
""")

# KEYS: an index (all, or one agent's). ARGV: the entry key prefix, 'ZREVRANGEBYSCORE' (newest
# first) or 'ZRANGEBYSCORE', the first and last created_ms in that order, how many (-1: all), '1'
# with payloads. Per entry: its id, then its fields.
_HISTORY_READ: Final = _Script("""
local fields, out = {'agent_id', 'question', 'status', 'confidence', 'created_ms'}, {}
if ARGV[6] == '1' then fields[6] = 'payload' end
for _, member in ipairs(redis.call(ARGV[2], KEYS[1], ARGV[3], ARGV[4], 'LIMIT', 0, ARGV[5])) do
  local values = redis.call('HMGET', ARGV[1] .. member:sub(18), unpack(fields))
  if values[1] or values[5] then out[#out + 1] = {member:sub(18), unpack(values)} end
end
return out
""")

# KEYS: the index to clear (all, or one agent's), all, ids. ARGV: the entry key prefix, the agent
# index key prefix, before_ms ('' for every entry), an id ('': none; else only it). How many deleted.
_HISTORY_DELETE: Final = _Script("""
local members = {redis.call('HGET', ARGV[1] .. ARGV[4], 'member') or nil}
if ARGV[4] == '' then
  members = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[3] == '' and '+inf' or '(' .. ARGV[3])
end
for _, member in ipairs(members) do
  local id = member:sub(18)
  local agent = redis.call('HGET', ARGV[1] .. id, 'agent_id')
  redis.call('DEL', ARGV[1] .. id)
  redis.call('ZREM', KEYS[2], member)
  if agent then redis.call('ZREM', ARGV[2] .. agent, member) end
  redis.call('ZREM', KEYS[3], id)
end
return #members
""")

# Per window field: settled use plus what the reservations live after ``now`` hold, except ``own``
# (being replaced), formatted exactly ('%.17g') so that equal strings mean equal sums.
_HELD: Final = """
local function held(leases, settled, now, prefix, own, fields)
  if #fields == 0 then return {} end
  local sums = redis.call('HMGET', settled, unpack(fields))
  for i = 1, #fields do sums[i] = tonumber(sums[i] or '0') end
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', leases, '(' .. now, '+inf')) do
    local amounts = id ~= own and redis.call('HMGET', prefix .. id, unpack(fields)) or {}
    for i = 1, #fields do sums[i] = sums[i] + tonumber(amounts[i] or '0') end
  end
  for i = 1, #fields do sums[i] = string.format('%.17g', sums[i]) end
  return sums
end
"""

# KEYS: leases, settled, windows, ends, this reservation[, the slot]. ARGV: now, the reservation
# key prefix, the id (the slot's holder), its lease end, the slot's limit and lease end, then per
# charge: field, the sum decided on ('' to read), amount, window JSON, resets_at. Takes the slot
# and commits the reservation if a slot is free and every sum still holds: 1. No free slot: 0,
# nothing written but expired holders reclaimed. A sum changed: the sums now, nothing written.
_BEGIN: Final = _Script(_HELD + """
local now, prefix, id, slot, fields = ARGV[1], ARGV[2], ARGV[3], KEYS[6], {}
if slot then
  redis.call('ZREMRANGEBYSCORE', slot, '-inf', now)
  if not redis.call('ZSCORE', slot, id) and redis.call('ZCARD', slot) >= tonumber(ARGV[5]) then return 0 end
end
for i = 7, #ARGV, 5 do fields[#fields + 1] = ARGV[i] end
local sums = held(KEYS[1], KEYS[2], now, prefix, id, fields)
for i = 1, #fields do if sums[i] ~= ARGV[i * 5 + 3] then return sums end end
if #fields > 0 then
  for _, old in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
    redis.call('DEL', prefix .. old)
    redis.call('ZREM', KEYS[1], old)
  end
  redis.call('DEL', KEYS[5])
  for i = 7, #ARGV, 5 do
    redis.call('HSET', KEYS[5], ARGV[i], ARGV[i + 2])
    redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 3])
    redis.call('ZADD', KEYS[4], ARGV[i + 4], ARGV[i])
  end
  redis.call('ZADD', KEYS[1], ARGV[4], id)
end
if slot then redis.call('ZADD', slot, ARGV[6], id) end
return 1
""")

# KEYS: leases, settled, windows, ends, this reservation[, the slot it holds]. ARGV: the id, now,
# prune windows that reset at or before this, the reservation key prefix, then per charge used:
# field, amount, window JSON, resets_at. Drops the reservation and the slot, adds the use, reclaims
# expired leases; returns the sums (as ``held``) of the charged fields it leaves.
_END: Final = _Script(_HELD + """
if KEYS[6] then redis.call('ZREM', KEYS[6], ARGV[1]) end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[5])
local fields = {}
for i = 5, #ARGV, 4 do
  fields[#fields + 1] = ARGV[i]
  redis.call('HINCRBYFLOAT', KEYS[2], ARGV[i], ARGV[i + 1])
  redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 2])
  redis.call('ZADD', KEYS[4], ARGV[i + 3], ARGV[i])
end
for _, field in ipairs(redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', ARGV[3])) do
  for i = 2, 3 do redis.call('HDEL', KEYS[i], field) end
  redis.call('ZREM', KEYS[4], field)
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])) do
  redis.call('DEL', ARGV[4] .. id)
  redis.call('ZREM', KEYS[1], id)
end
return held(KEYS[1], KEYS[2], ARGV[2], ARGV[4], ARGV[1], fields)
""")

# KEYS: leases, settled, windows. ARGV: now, the reservation key prefix. Per charged window:
# window JSON, settled use (or false), what live reservations hold.
_USAGE: Final = _Script("""
local reserved, windows, out = {}, redis.call('HGETALL', KEYS[3]), {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf')) do
  local amounts = redis.call('HGETALL', ARGV[2] .. id)
  for i = 1, #amounts, 2 do reserved[amounts[i]] = (reserved[amounts[i]] or 0) + tonumber(amounts[i + 1]) end
end
for i = 1, #windows, 2 do
  local settled = redis.call('HGET', KEYS[2], windows[i]) or false
  out[#out + 1] = {windows[i + 1], settled, string.format('%.17g', reserved[windows[i]] or 0)}
end
return out
""")


class _Unreadable(StoreError):
    """Redis holds what this code never writes (another program's data, a hand edit)."""

    def __init__(self, reason: str) -> None:
        super().__init__(None, f"the shared state holds data rmgr cannot read ({reason}). Clear the keys "
                         f"under rmgr's prefix there, or point {_VARIABLE} at another database.")
        self.reason = reason


class Connection:
    """The client of one Redis database that every concern shares: keys, scripts, and what Redis's
    errors mean. ``url`` is shown in messages, so it holds no password."""

    def __init__(self, client: aioredis.Redis, url: str, prefix: str = DEFAULT_PREFIX) -> None:
        self._client, self.url, self.prefix = client, url, prefix
        self._secret = client.connection_pool.connection_kwargs.get("password")

    def key(self, *parts: str) -> str:
        """The key named ``parts`` under the prefix."""
        return self.prefix + "".join(parts)

    async def command(self, *args: _Arg) -> Any:
        """One command's raw answer; unreachable or silent is ``StoreUnavailable``, any other error a
        ``StoreError``. The loop first takes in what sockets have to say (two turns: one reads, one
        hears), so that a pooled connection a restarted server closed is replaced before use."""
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        try:
            return await self._client.execute_command(*args)  # type: ignore[no-untyped-call]
        except (AuthenticationError, AuthorizationError) as exc:
            refused = f"the shared state ({self.url}) refused rmgr's credentials: {self._clean(exc)}"
            raise StoreError(None, f"{refused}. Fix the user and password in {_VARIABLE}.") from None
        except (RedisConnectionError, RedisTimeoutError, ReadOnlyError, OSError) as exc:
            reason = self._clean(exc)
            if isinstance(exc, RedisTimeoutError):
                reason = f"no answer within {SOCKET_TIMEOUT_S:g} s ({reason})"
            elif isinstance(exc, ReadOnlyError):
                reason = f"the server is a read-only replica ({reason})"
            raise StoreUnavailable(self.url, reason) from None
        except NoScriptError:
            raise
        except RedisError as exc:
            raise StoreError(None, f"the shared state ({self.url}) failed: {self._clean(exc)}.") from None

    async def run(self, script: _Script, keys: Sequence[str], args: Sequence[_Arg]) -> Any:
        """A script's raw answer (the script sent whole when the server has forgotten it)."""
        try:
            return await self.command("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await self.command("EVAL", script.text, len(keys), *keys, *args)

    def corrupt(self, reason: str) -> StoreError:
        """The error for data this code never writes."""
        return StoreError(None, f"the shared state ({self.url}) holds data rmgr cannot read ({reason}). "
                          f"Clear the keys under {self.prefix!r} there, or point {_VARIABLE} at another one.")

    def changing(self) -> StoreError:
        """The error when other clients' writes kept winning every compare-and-set."""
        return StoreError(None, f"the shared state ({self.url}) kept changing in {_TRIES} tries; run again.")

    async def aclose(self) -> None:
        """Close the client's connections."""
        await self._client.aclose()

    def _clean(self, exc: BaseException) -> str:
        text = str(exc).strip().rstrip(".") or type(exc).__name__
        return text.replace(self._secret, "***") if isinstance(self._secret, str) and self._secret else text


class _Part:
    def __init__(self, connection: Connection) -> None:
        super().__init__()
        self._r, self._k = connection, connection.key


class RedisAttempts(_Part):
    """``Attempts``: one script when an attempt is sent, one when it ends."""

    async def sent(self, key: str, origin: Origin, record: AttemptRecord, replace: str = "") -> None:
        values = msgspec.json.encode(rules.attempt_values(origin, record))
        keys = [self._k("attempts", suffix) for suffix in ("", ":keys", ":seq")]
        await self._r.run(_ATTEMPT, keys, [key, int(record.started_at_ms), values, replace])

    async def settle(self, key: str, origin: Origin, record: AttemptRecord) -> None:
        """Replace the attempt ``key`` with how it ended (keeping its place), or record it afresh."""
        await self.sent(key, origin, record, "1")

    async def withdraw(self, key: str) -> None:
        await self._r.run(_ATTEMPT, [self._k("attempts", s) for s in ("", ":keys")], [key, 0, "", "-"])

    async def since(self, since_ms: int, providers: Collection[str] | None = None) -> list[AttemptRow]:
        members = await self._r.command("ZRANGEBYSCORE", self._k("attempts"), since_ms, "+inf")
        rows = [rules.attempt_row(_json(member[_SEQ:], list), self._r.corrupt) for member in members]
        return [row for row in rows if providers is None or row.provider in providers]


class RedisCircuits(_Part, CircuitRules):
    """``Circuits``: one read, then a compare-and-set script when the decision changes the circuit."""

    async def _change(self, provider: str, decide: Decide[_T], now: float) -> _T:
        keys = [self._k("circuit:", provider), self._k("circuits")]
        raw = await self._r.command("GET", keys[0])
        for _ in range(_TRIES):
            current = CircuitState(provider=provider) if raw is None else self._circuit(provider, raw)
            answer, new = decide(current)
            if new == current:
                return answer
            stored = {name: getattr(new, name) for name in _CIRCUIT_FIELDS} | {"updated_at": now}
            found = await self._r.run(_CIRCUIT_SET, keys, [raw or b"", msgspec.json.encode(stored), provider])
            if found == 1:
                return answer
            raw = _list(found, 1)[0]
        raise self._r.changing()

    async def all(self) -> list[CircuitState]:
        names = sorted(_text(name) for name in await self._r.command("SMEMBERS", self._k("circuits")))
        found = await self._r.command("MGET", *(self._k("circuit:", name) for name in names)) if names else []
        return [self._circuit(name, raw) for name, raw in zip(names, found, strict=True) if raw is not None]

    async def reset(self, providers: Collection[str] | None) -> list[str]:
        names = [] if providers is None else sorted(set(providers))
        if providers is not None and not names:
            return []
        found = await self._r.run(_CIRCUITS_RESET, [self._k("circuits")], [self._k("circuit:"), *names])
        return sorted(_text(name) for name in _list(found, None))

    def _circuit(self, provider: str, raw: object) -> CircuitState:
        stored = _json(raw, dict)
        data = {name: stored[name] for name in _CIRCUIT_FIELDS if name in stored} | {"provider": provider}
        return convert(data, CircuitState, f"the circuit of {provider!r}", self._r.corrupt)


class RedisCaps(_Part, CapsRules):
    """``Caps``: an attempt's slot and reservation taken by one compare-and-set script, given back by one."""

    def __init__(self, connection: Connection) -> None:
        super().__init__(connection)
        # Per tuple of window fields, the sums their last settlement here left: the next guess.
        self._recent: dict[tuple[bytes, ...], list[object]] = {}

    async def begin(self, claim: base.AttemptClaim, now: float) -> Refusal | SlotBusy | None:
        """Take the slot and reserve the charges at once (see the module's docstring); a refusal is
        only given on sums just read, and leaves nothing held."""
        slot, charges = claim.slot, claim.charges
        keys = self._keys(claim.holder, slot)
        head: list[_Arg] = [_f(now), self._k("quota:reservation:"), claim.holder, _f(now + claim.lease_s)]
        head += ["", ""] if slot is None else [slot.limit, _f(now + slot.lease_s)]
        fields = [_field(charge) for charge in charges]

        def decide(sums: Sequence[object]) -> Refusal | None:
            held = zip(charges, sums, strict=True)
            return refuse(charges, {(c.cap_key, c.window): _number(s) for c, s in held})

        if claim.empty:
            return None
        sums = self._recent.pop(tuple(fields), None) if fields else []
        guessing = bool(fields) and sums is not None
        for _ in range(_TRIES):
            if sums is not None and (refusal := decide(sums)) is not None:
                if not guessing:
                    return refusal
                sums = None  # a guess never refuses: the commit reads what the windows hold
            guessing, args = False, list(head)
            for field, charge, held in zip(fields, charges, sums or [b""] * len(fields), strict=True):
                args += [field, _bytes(held), _f(charge.amount), _window(charge), _f(charge.resets_at)]
            found = await self._r.run(_BEGIN, keys, args)
            if found in (0, 1):
                return SlotBusy() if found == 0 else None
            sums = _list(found, len(fields))
        raise self._r.changing()

    async def end(self, claim: base.AttemptClaim, used: Sequence[Charge] | None, now: float) -> None:
        """Drop the reservation, add ``used`` to the windows' settled use and give the slot back, in
        one script that also reclaims expired leases and forgets the windows that ended
        ``PRUNE_AFTER_S`` ago. ``ValueError`` (nothing stored) for amounts no store can add up."""
        base.check_charges(used or ())
        if claim.empty and not used:
            return
        args: list[_Arg] = [
            claim.holder, _f(now), _f(now - rules.PRUNE_AFTER_S), self._k("quota:reservation:")]
        fields = [_field(charge) for charge in used or ()]
        for field, charge in zip(fields, used or (), strict=True):
            args += [field, _f(charge.amount), _window(charge), _f(charge.resets_at)]
        keys = self._keys(claim.holder, claim.slot)
        sums = _list(await self._r.run(_END, keys, args), len(fields))
        if fields:
            if len(self._recent) >= _RECENT_SUMS_KEPT:
                self._recent.clear()
            self._recent[tuple(fields)] = sums

    async def usage(self, now: float) -> list[CapUsage]:
        """The cap windows current at ``now``, by cap key and window (one script, one snapshot)."""
        found = await self._r.run(_USAGE, self._keys("")[:3], [_f(now), self._k("quota:reservation:")])
        rows = []
        for window, settled, reserved in (_list(row, 3) for row in _list(found, None)):
            names = ("cap_key", "resource", "window", "resets_at", "limit")
            data = dict(zip(names, _list(_json(window, list), 5), strict=True))
            data |= {"used": 0.0 if settled is None else _number(settled), "reserved": _number(reserved)}
            rows.append(convert(data, CapUsage, f"the use of cap {data['cap_key']!r}", self._r.corrupt))
        return sorted((row for row in rows if row.resets_at > now), key=lambda row: (row.cap_key, row.window))

    def _keys(self, holder: str, slot: base.Slot | None = None) -> list[str]:
        names = ("leases", "settled", "windows", "ends", f"reservation:{holder}")
        return [self._k("quota:", name) for name in names] + ([self._k("slot:", slot.name)] if slot else [])


class RedisCache(_Part):
    """``Cache``: each call one script."""

    async def get(self, key: str, now_ms: int, ttl_ms: int) -> bytes | None:
        """The payload stored at or after ``now_ms - ttl_ms``; counts the hit or miss; drops expired ones."""
        rules.check(ttl_ms=ttl_ms)
        found = await self._r.run(_CACHE_GET, self._keys(), [key, now_ms - ttl_ms])
        return None if found is None else _bytes(found)

    async def put(self, key: str, perspective_id: str, payload: bytes, now_ms: int) -> None:
        await self._r.run(_CACHE_PUT, self._keys()[:3], [key, perspective_id, bytes(payload), now_ms])

    async def stats(self, now_ms: int, ttl_ms: int) -> base.CacheStats:
        """The cache at ``now_ms``, read by one script; nothing is removed or counted."""
        rules.check(ttl_ms=ttl_ms)
        found = _list(await self._r.run(_CACHE_STATS, self._keys(), [now_ms - ttl_ms]), 7)
        entries, fresh, oldest, newest, size, hits, misses = (None if v is None else _int(v) for v in found)
        return rules.cache_stats(entries or 0, fresh or 0, oldest, newest, size or 0, hits or 0, misses or 0)

    async def clear(self) -> int:
        """Remove every entry and reset the counters; how many entries there were."""
        return _int(await self._r.run(_CACHE_REMOVE, self._keys(), ["+inf"]))

    async def prune(self, now_ms: int, ttl_ms: int) -> int:
        """Remove the entries stored before ``now_ms - ttl_ms``, counters untouched; how many."""
        rules.check(ttl_ms=ttl_ms)
        return _int(await self._r.run(_CACHE_REMOVE, self._keys()[:3], [now_ms - ttl_ms]))

    def _keys(self) -> list[str]:
        return [self._k("cache:", name) for name in ("payload", "perspective", "created", "counters")]


class RedisHistory(_Part):
    """``History``: a hash per analysis, indexed by time (everyone's and per agent) and by id."""

    async def add(
        self, agent_id: str, question: str, status: str, overall_confidence: float | None, created_ms: int,
        payload: bytes,
    ) -> str:
        """Save an analysis under a new random id (the script stores it only when the id is free).
        ``ValueError``, saving nothing, for a confidence outside 0.0 to 1.0."""
        rules.check(confidence=overall_confidence)
        confidence = "" if overall_confidence is None else _f(overall_confidence)
        args: list[_Arg] = [agent_id, question, status, confidence, created_ms, bytes(payload)]
        for _ in range(rules.NEW_ID_TRIES):
            entry_id = rules.new_history_id()
            keys = [self._entry(entry_id), self._index(None), self._index(agent_id)]
            keys += [self._k("history:ids"), self._k("history:seq")]
            if await self._r.run(_HISTORY_ADD, keys, [entry_id, *args]) is not None:
                return entry_id
        raise StoreError(None, f"no free history id in {rules.NEW_ID_TRIES} draws; run again.")

    async def resolve(self, reference: str) -> list[str]:
        if await self._r.command("EXISTS", self._entry(reference)):
            return [reference]
        prefix = rules.id_prefix(reference)
        if prefix is None:
            return []
        start = b"[" + prefix.encode()
        found = await self._r.command("ZRANGEBYLEX", self._k("history:ids"), start, start + b"\xff")
        return [_text(entry_id) for entry_id in found]

    async def get(self, entry_id: str) -> tuple[base.HistoryEntry, bytes] | None:
        ids = await self.resolve(entry_id)
        if len(ids) != 1:
            return None
        found = await self._r.command("HMGET", self._entry(ids[0]), *_ENTRY_FIELDS, "payload")
        return None if found[0] is None else self._decode([ids[0], *found])

    async def stats(self, agent_id: str | None) -> base.HistoryStats:
        return rules.history_stats(await self.list(agent_id))

    async def delete(self, entry_id: str) -> bool:
        ids = await self.resolve(entry_id)
        return len(ids) == 1 and await self._delete(None, "", ids[0]) == 1

    async def clear(self, agent_id: str | None, before_ms: int | None = None) -> int:
        return await self._delete(agent_id, "" if before_ms is None else before_ms, "")

    async def export(self, agent_id: str) -> list[tuple[base.HistoryEntry, bytes]]:
        return await self._read(agent_id, False, payloads=True)

    async def _read(
        self, agent_id: str | None, newest_first: bool, since_ms: int | None = None, count: int = -1,
        payloads: bool = False,
    ) -> list[tuple[base.HistoryEntry, bytes]]:
        span = ["-inf" if since_ms is None else since_ms, "+inf"]
        order, span = ("ZREVRANGEBYSCORE", span[::-1]) if newest_first else ("ZRANGEBYSCORE", span)
        args = [self._entry(""), order, *span, count, "1" if payloads else ""]
        found = await self._r.run(_HISTORY_READ, [self._index(agent_id)], args)
        return [self._decode(_list(row, 7 if payloads else 6)) for row in _list(found, None)]

    async def _delete(self, agent_id: str | None, before_ms: _Arg, entry_id: str) -> int:
        keys = [self._index(agent_id), self._index(None), self._k("history:ids")]
        args = [self._entry(""), self._k("history:agent:"), before_ms, entry_id]
        return _int(await self._r.run(_HISTORY_DELETE, keys, args))

    def _decode(self, row: Sequence[object]) -> tuple[base.HistoryEntry, bytes]:
        """An entry from its id, its fields as stored (``_ENTRY_FIELDS``) and maybe its payload."""
        what, payload = f"history entry {_text(row[0])!r}", row[6] if len(row) > 6 else b""
        texts = (None if value is None else _text(value) for value in row[:6])
        values = dict(zip(("id", *_ENTRY_FIELDS), texts, strict=True))
        if not isinstance(payload, bytes):
            raise self._r.corrupt(f"{what} has no payload bytes")
        data = values | {"overall_confidence": values.pop("confidence") or None}
        return convert(data, base.HistoryEntry, what, self._r.corrupt), payload

    def _entry(self, entry_id: str) -> str:
        return self._k("history:entry:", entry_id)

    def _index(self, agent_id: str | None) -> str:
        return self._k("history:all") if agent_id is None else self._k("history:agent:", agent_id)

    async def list(
        self, agent_id: str | None, *, min_confidence: float | None = None, since_ms: int | None = None,
        limit: int | None = None,
    ) -> list[base.HistoryEntry]:
        """Entries newest first (the last saved first within a millisecond), filtered as SQLite's are."""
        rules.check(limit=limit)
        count = limit if limit is not None and min_confidence is None else -1
        entries = [e for e, _ in await self._read(agent_id, True, since_ms, count)] if limit != 0 else []
        low = min_confidence
        known = [(e, e.overall_confidence) for e in entries]
        return [e for e, c in known if low is None or (c is not None and c >= low)][:limit]


def open_redis(url: str, *, prefix: str = DEFAULT_PREFIX) -> State:
    """The whole state in the Redis database at ``url`` (``redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]``,
    ``rediss://`` for TLS), its keys under ``prefix``. Connects on the first call, not here: an
    unreachable server is ``StoreUnavailable`` from that call. ``StoreError`` (naming the URL
    without its password) when ``url`` is not such a URL."""
    shown = redacted_url(url)
    problem = _url_problem(url)
    if problem is not None:
        example = "it must look like redis://HOST:PORT/DB (e.g. redis://127.0.0.1:6379/0)"
        raise StoreError(None, f"the shared state URL {shown} {problem}; {example}.")
    try:
        client = aioredis.Redis.from_url(
            url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=SOCKET_TIMEOUT_S,
            retry=Retry(NoBackoff(), 0), health_check_interval=0,
        )
    except ValueError as exc:
        raise StoreError(None, f"the shared state URL {shown} cannot be used: {exc}") from None
    r = Connection(client, shown, prefix)
    return State(
        attempts=RedisAttempts(r), circuits=RedisCircuits(r), caps=RedisCaps(r), cache=RedisCache(r),
        history=RedisHistory(r), conversations=RedisConversations(r), where=shown, closers=[r],
    )


def _url_problem(url: str) -> str | None:
    """What is wrong with ``url`` as the address of a Redis database, or None."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as exc:
        return f"is not a URL ({exc})"
    try:
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number from 0 to 65535)
    except ValueError as exc:
        return f"has no usable port ({exc})"
    database = parts.path.strip("/")
    if parts.scheme not in ("redis", "rediss"):
        return "does not start with redis:// or rediss://"
    if not parts.hostname:
        return "names no host"
    number = not database or database.isdecimal()
    return None if number else f"names the database {database!r}, which is not a number"


def _f(number: float) -> str:
    return repr(float(number))


def _field(charge: Charge) -> bytes:
    return msgspec.json.encode([charge.cap_key, charge.window])


def _window(c: Charge) -> bytes:
    return msgspec.json.encode([c.cap_key, c.resource, c.window, float(c.resets_at), float(c.limit)])


def _json(value: object, kind: type[_T]) -> _T:
    try:
        return msgspec.json.decode(_bytes(value), type=kind)
    except msgspec.DecodeError as exc:  # a ValidationError too
        raise _Unreadable(f"unreadable JSON ({exc})") from None


def _bytes(value: object) -> bytes:
    if not isinstance(value, bytes | str):
        raise _Unreadable(f"expected a string, found {type(value).__name__}")
    return value.encode() if isinstance(value, str) else value


def _text(value: object) -> str:
    return _bytes(value).decode(errors="replace")


def _number(value: object) -> float:
    try:
        return float(value) if isinstance(value, int | float) else float(_text(value))
    except ValueError:
        raise _Unreadable(f"{value!r} is not a number") from None


def _int(value: object) -> int:
    return int(_number(value))


def _list(value: object, length: int | None) -> list[Any]:
    if not isinstance(value, list) or (length is not None and len(value) != length):
        raise _Unreadable(f"an unexpected answer {value!r}"[:200])
    return value
