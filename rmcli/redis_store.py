"""The state store in Redis: the whole ``Store`` for a fleet of machines that share provider
quotas, budgets, circuit breakers, the answer cache and the analysis history.

Chosen by ``RECURSIVEMANAGER_STATE=redis://HOST:PORT/DB`` (``rmcli.state.open_state``); SQLite
stays the default. Every method behaves as ``SqliteStore``'s does (the store tests run against
both), and raises ``StoreUnavailable`` when Redis cannot be reached: connections give up after
0.5 s, answers after 1 s, and a failed command is not retried behind the caller's back, so a
caller whose policy fails closed learns it at once. The store keeps one connection for its
commands; one closed by a restart of Redis is replaced before the next call is sent, and scripts
the restarted server has forgotten are sent again.

How each guarantee of SQLite's ``BEGIN IMMEDIATE`` is kept, with one copy of every rule, in as
few round trips as it allows (each costs a wait for the server to be scheduled, which on a busy
machine is most of the time a call takes):

- Decisions whose rule lives in ``rmcore`` (the breaker's ``admit`` and ``record``, the quota's
  ``refuse``) are taken in Python on what a plain read returned (no WATCH), and committed by a
  Lua script that compares and sets: it first checks that what the decision was taken on is
  still what Redis holds (a circuit's stored JSON, or its absence; for a reservation, the sums
  of settled use and live reservations it was decided on, computed again the same way), and
  only then writes. Redis runs a script whole, with no other command between, so the check
  and the write are one step. When something changed, the script writes nothing and returns
  what is there now, and the decision is taken again on that. So of any number of processes
  asking an open, cooled-down circuit at once exactly one stores "half-open" and gets the probe
  (the others' writes find it changed, and deciding again refuses them), failures recorded at
  once are all counted, and processes reserving against one cap are admitted exactly as far as
  the cap holds. Comparing what was decided on, not a version number, also notices writers
  that keep no version (an older rmgr, a hand edit).
- A decision that changes nothing is answered from the read alone: one round trip for the
  usual admission of a closed circuit and the usual success on one. A refusal of a reservation
  is only given on sums just read, which Redis read in one script (one snapshot).
- A reservation needs a read and a commit, except that the sums this store's last settlement
  of the same windows left (the settling script returns them) are tried first, as a guess the
  commit checks: while no other client charges those windows, a reservation is one round trip.
  The read is the committing script sent with no guess (it writes nothing and returns the sums).
- An attempt's provider slot and its reservation are taken by that same script
  (``begin_attempt``): it reserves only when a slot is free and takes the slot only when it
  reserves, so a slot never stays taken for a refused or retried reservation, nor a
  reservation for a busy slot. The settling script gives the slot back (``end_attempt``). With
  the breaker's success on a closed circuit left out by ``rmcli.session.StoreCircuits``, a
  routed call costs four round trips: admission, ``begin_attempt``, ``end_attempt``, and
  recording the attempt.
- Bookkeeping without a decision (cache lookups with their counts, history ids, settling,
  pruning, slots, attempts) runs as one Lua script or one MULTI/EXEC per call.

Keys (shown with the default prefix ``rmgr:``; a window field ``F`` is the JSON array
``[cap_key, window]``):

- ``rmgr:attempts`` sorted set: score ``started_at_ms``, member a 16-hex-digit sequence number
  (insertion order among equal times) then the attempt as a JSON array; ``rmgr:attempts:seq``.
- ``rmgr:circuit:NAME`` the circuit of provider NAME as JSON (with ``updated_at``);
  ``rmgr:circuits`` the set of provider names that have one.
- ``rmgr:cache:payload``, ``rmgr:cache:perspective`` hashes by cache key; ``rmgr:cache:created``
  sorted set of cache keys by ``created_ms``; ``rmgr:cache:counters`` hash of ``hits``, ``misses``.
- ``rmgr:history:entry:ID`` hash of one analysis (its fields, ``member`` and ``payload``);
  ``rmgr:history:all`` and ``rmgr:history:agent:AGENT`` sorted sets of members ``SEQ:ID`` by
  ``created_ms``; ``rmgr:history:ids`` every id at score 0 (prefix look-ups by lexical range);
  ``rmgr:history:seq``.
- ``rmgr:quota:settled`` hash F -> settled use; ``rmgr:quota:windows`` hash F -> ``[cap_key,
  resource, window, resets_at, limit]`` as last charged; ``rmgr:quota:ends`` sorted set of F by
  ``resets_at`` (for pruning); ``rmgr:quota:leases`` sorted set of reservation ids by lease end;
  ``rmgr:quota:reservation:ID`` hash F -> amount reserved.
- ``rmgr:slot:NAME`` sorted set of the holders of slot NAME by lease end.

Scripts name some keys they build from the prefix (a history entry's agent index, a
reservation's hash), so the store needs one Redis server (or a Sentinel-managed primary), not a
Redis Cluster. API keys never reach the store.
"""

from __future__ import annotations

import hashlib
import math
import urllib.parse
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from typing import Final, TypeVar

import msgspec
import redis
from redis.backoff import NoBackoff
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    NoScriptError,
    ReadOnlyError,
    RedisError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

import rmcli.store as _store
from rmcli.store import (
    HISTORY_ID_MIN_PREFIX,
    PRUNE_AFTER_S,
    AttemptClaim,
    CacheStats,
    ClosingStore,
    HistoryEntry,
    HistoryStats,
    SlotBusy,
    StoreError,
    StoreUnavailable,
)
from rmcore.attempts import AttemptRecord
from rmcore.breaker import Admission, CircuitState, admit, is_breaking, record, release_probe
from rmcore.quota import CapUsage, Charge, Refusal, Resource, refuse
from rmcore.usage import AttemptRow

__all__ = ["CONNECT_TIMEOUT_S", "DEFAULT_PREFIX", "SOCKET_TIMEOUT_S", "RedisStore", "redacted_url"]

DEFAULT_PREFIX: Final = "rmgr:"
"""What every key of the store starts with."""

CONNECT_TIMEOUT_S: Final = 0.5
"""How long a connection to Redis may take before the store is unavailable."""

SOCKET_TIMEOUT_S: Final = 1.0
"""How long Redis may take to answer one command before the store is unavailable."""

_OPTIMISTIC_TRIES: Final = 100
_RECENT_SUMS_KEPT: Final = 64
_HEX_DIGITS: Final = frozenset("0123456789abcdef")
_SEQ_DIGITS: Final = 16
_HISTORY_FIELDS: Final = ("agent_id", "question", "status", "confidence", "created_ms")

_T = TypeVar("_T")


class _Unreadable(Exception):
    """Redis answered with something the store never writes (another program's data, or a
    hand edit); ``RedisStore`` reports it as a ``StoreError``."""


class _Script:
    """A Lua script run by its SHA1, sent whole once when the server does not know it (after a
    restart, say)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode()).hexdigest()

    def run(
        self, client: redis.Redis, keys: Sequence[str], args: Sequence[str | bytes | int | float]
    ) -> object:
        try:
            result: object = client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            result = client.eval(self.text, len(keys), *keys, *args)
        return result


# KEYS: attempts, seq. ARGV: per attempt, started_at_ms and the attempt as JSON. Each member is
# the attempt's sequence number (16 hex digits) then its JSON.
_RECORD_ATTEMPTS: Final = _Script(
    """
local first = redis.call('INCRBY', KEYS[2], #ARGV / 2) - #ARGV / 2
for i = 1, #ARGV, 2 do
  redis.call('ZADD', KEYS[1], ARGV[i], string.format('%016x', first + (i + 1) / 2) .. ARGV[i + 1])
end
return #ARGV / 2
"""
)

# KEYS: payload, perspective, created, counters. ARGV: key, the oldest fresh created_ms.
_CACHE_GET: Final = _Script(
    """
local created = redis.call('ZSCORE', KEYS[3], ARGV[1])
if created and tonumber(created) >= tonumber(ARGV[2]) then
  local payload = redis.call('HGET', KEYS[1], ARGV[1])
  if payload then
    redis.call('HINCRBY', KEYS[4], 'hits', 1)
    return payload
  end
end
if created then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
end
redis.call('HINCRBY', KEYS[4], 'misses', 1)
return false
"""
)

# KEYS: payload, created, counters. ARGV: the oldest fresh created_ms.
_CACHE_STATS: Final = _Script(
    """
local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
local newest = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
local size = 0
for _, key in ipairs(redis.call('HKEYS', KEYS[1])) do
  size = size + redis.call('HSTRLEN', KEYS[1], key)
end
local counts = redis.call('HMGET', KEYS[3], 'hits', 'misses')
return {redis.call('ZCARD', KEYS[2]), redis.call('ZCOUNT', KEYS[2], ARGV[1], '+inf'),
        oldest[2] or false, newest[2] or false, size, counts[1] or false, counts[2] or false}
"""
)

# KEYS: payload, perspective, created. ARGV: the oldest fresh created_ms.
_CACHE_PRUNE: Final = _Script(
    """
local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[1])
for _, key in ipairs(expired) do
  redis.call('HDEL', KEYS[1], key)
  redis.call('HDEL', KEYS[2], key)
  redis.call('ZREM', KEYS[3], key)
end
return #expired
"""
)

# KEYS: entry, all, agent index, ids, seq. ARGV: id, agent_id, question, status, confidence
# ('' when unknown), created_ms, payload. False when the id is taken.
_HISTORY_ADD: Final = _Script(
    """
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local member = string.format('%016x', redis.call('INCR', KEYS[5])) .. ':' .. ARGV[1]
redis.call('HSET', KEYS[1], 'agent_id', ARGV[2], 'question', ARGV[3], 'status', ARGV[4],
           'confidence', ARGV[5], 'created_ms', ARGV[6], 'member', member, 'payload', ARGV[7])
redis.call('ZADD', KEYS[2], ARGV[6], member)
redis.call('ZADD', KEYS[3], ARGV[6], member)
redis.call('ZADD', KEYS[4], 0, ARGV[1])
return 1
"""
)

# KEYS: entry, all, ids. ARGV: id, the agent index key prefix.
_HISTORY_DELETE: Final = _Script(
    """
local found = redis.call('HMGET', KEYS[1], 'agent_id', 'member')
if not found[2] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], found[2])
if found[1] then redis.call('ZREM', ARGV[2] .. found[1], found[2]) end
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
"""
)

# KEYS: the index to clear (all, or one agent's), all, ids. ARGV: the entry key prefix, the agent
# index key prefix, before_ms ('' for every entry).
_HISTORY_CLEAR: Final = _Script(
    """
local members
if ARGV[3] == '' then
  members = redis.call('ZRANGE', KEYS[1], 0, -1)
else
  members = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[3])
end
for _, member in ipairs(members) do
  local id = string.sub(member, 18)
  local agent = redis.call('HGET', ARGV[1] .. id, 'agent_id')
  redis.call('DEL', ARGV[1] .. id)
  redis.call('ZREM', KEYS[2], member)
  if agent then redis.call('ZREM', ARGV[2] .. agent, member) end
  redis.call('ZREM', KEYS[3], id)
end
return #members
"""
)

# The sums a reservation is decided on, shared by the scripts that read them and the one that
# commits a reservation, so that both compute them alike: per window field, its settled use plus
# what the reservations whose leases are live after ``now`` hold, except reservation ``own``
# (being replaced). Each sum is formatted exactly ('%.17g'), so equal strings mean equal sums.
_HELD_LUA: Final = """
local function held(leases, settled, now, prefix, own, fields)
  local sums = {}
  if #fields == 0 then return sums end
  local used = redis.call('HMGET', settled, unpack(fields))
  for i = 1, #fields do sums[i] = tonumber(used[i] or '0') end
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', leases, '(' .. now, '+inf')) do
    if id ~= own then
      local amounts = redis.call('HMGET', prefix .. id, unpack(fields))
      for i = 1, #fields do
        if amounts[i] then sums[i] = sums[i] + tonumber(amounts[i]) end
      end
    end
  end
  for i = 1, #fields do sums[i] = string.format('%.17g', sums[i]) end
  return sums
end
"""

# Commits a reservation that fits, if the sums it was decided on still hold (compare-and-set), and,
# when a slot key is given, only if one of its slots is free for the holder (taking it too).
# KEYS: leases, settled, windows, ends, this reservation[, the slot]. ARGV: now, the reservation
# key prefix, the reservation id (the slot's holder), its lease end, the slot's limit and lease
# end ('' without a slot), then per charge: field, the sum it was decided on ('' for none: a read),
# amount, window as JSON, resets_at. Returns 1 when written; 0, writing nothing but the slot's
# expired holders reclaimed, when every slot is held; else writes nothing and returns the sums now.
_QUOTA_RESERVE: Final = _Script(
    _HELD_LUA
    + """
local now, prefix, id = ARGV[1], ARGV[2], ARGV[3]
local slot = KEYS[6]
if slot then
  redis.call('ZREMRANGEBYSCORE', slot, '-inf', now)
  if not redis.call('ZSCORE', slot, id) and redis.call('ZCARD', slot) >= tonumber(ARGV[5]) then
    return 0
  end
end
local fields = {}
for i = 7, #ARGV, 5 do fields[#fields + 1] = ARGV[i] end
local sums = held(KEYS[1], KEYS[2], now, prefix, id, fields)
for i = 1, #fields do
  if sums[i] ~= ARGV[i * 5 + 3] then return sums end
end
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
if slot then redis.call('ZADD', slot, ARGV[6], id) end
return 1
"""
)

# KEYS: leases, settled, windows, ends, this reservation[, a slot it holds, given back]. ARGV:
# reservation id (the slot's holder), now, prune windows that reset at or before this, the
# reservation key prefix, then per charge: field, amount, window as JSON, resets_at. Returns the
# sums (above) of the charged fields it leaves.
_QUOTA_SETTLE: Final = _Script(
    _HELD_LUA
    + """
if KEYS[6] then redis.call('ZREM', KEYS[6], ARGV[1]) end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[5])
for i = 5, #ARGV, 4 do
  redis.call('HINCRBYFLOAT', KEYS[2], ARGV[i], ARGV[i + 1])
  redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 2])
  redis.call('ZADD', KEYS[4], ARGV[i + 3], ARGV[i])
end
for _, field in ipairs(redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', ARGV[3])) do
  redis.call('HDEL', KEYS[2], field)
  redis.call('HDEL', KEYS[3], field)
  redis.call('ZREM', KEYS[4], field)
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])) do
  redis.call('DEL', ARGV[4] .. id)
  redis.call('ZREM', KEYS[1], id)
end
local fields = {}
for i = 5, #ARGV, 4 do fields[#fields + 1] = ARGV[i] end
return held(KEYS[1], KEYS[2], ARGV[2], ARGV[4], ARGV[1], fields)
"""
)

# KEYS: leases, settled, windows. ARGV: now, the reservation key prefix. Returns per charged
# window: field, window JSON, settled use (or false), what live reservations hold.
_QUOTA_USAGE: Final = _Script(
    """
local reserved = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf')) do
  local amounts = redis.call('HGETALL', ARGV[2] .. id)
  for i = 1, #amounts, 2 do
    reserved[amounts[i]] = (reserved[amounts[i]] or 0) + tonumber(amounts[i + 1])
  end
end
local out = {}
local windows = redis.call('HGETALL', KEYS[3])
for i = 1, #windows, 2 do
  local field = windows[i]
  out[#out + 1] = {field, windows[i + 1], redis.call('HGET', KEYS[2], field) or false,
                   string.format('%.17g', reserved[field] or 0)}
end
return out
"""
)

# Writes circuits whose new state was decided on what was read, if they still hold just that
# (compare-and-set). KEYS: the set of circuit names, then the circuits read. ARGV: per circuit,
# its JSON as read ('' when there was none), then per circuit its new JSON ('' to leave it), then
# per circuit its provider name. Returns 1 when written; else writes nothing and returns what the
# circuits hold now.
_CIRCUITS_SET: Final = _Script(
    """
local n = #KEYS - 1
local found = redis.call('MGET', unpack(KEYS, 2))
for i = 1, n do
  if (found[i] or '') ~= ARGV[i] then return found end
end
for i = 1, n do
  if ARGV[n + i] ~= '' then
    redis.call('SET', KEYS[i + 1], ARGV[n + i])
    redis.call('SADD', KEYS[1], ARGV[2 * n + i])
  end
end
return 1
"""
)

# KEYS: the slot. ARGV: now, holder, limit, lease end.
_SLOT_ACQUIRE: Final = _Script(
    """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZSCORE', KEYS[1], ARGV[2]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[1], ARGV[4], ARGV[2])
  return 1
end
return 0
"""
)


class _StoredAttempt(msgspec.Struct, array_like=True, frozen=True):
    run_id: str
    command: str
    provider: str
    model: str
    outcome: str
    status: int | None
    latency_ms: float
    started_at_ms: int
    input_tokens: int
    output_tokens: int
    usage_estimated: bool
    cost_usd: float
    message: str | None


class _StoredCircuit(msgspec.Struct, frozen=True):
    state: str
    consecutive_failures: int
    opened_at: float | None
    probe_started_at: float | None
    updated_at: float


class _StoredWindow(msgspec.Struct, array_like=True, frozen=True):
    cap_key: str
    resource: Resource
    window: str
    resets_at: float
    limit: float


def redacted_url(url: str) -> str:
    """``url`` without its user, password and query (which may hold a password): what messages
    show, e.g. ``redis://127.0.0.1:6379/0``."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        scheme, separator, rest = url.partition("://")
        return scheme + separator + rest.partition("?")[0].rpartition("@")[2]
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


class RedisStore(ClosingStore):
    """The ``Store`` in one Redis database. Open it with ``RedisStore.open(url)`` (no connection
    is made until the first call); use it as a context manager or call ``close()``."""

    def __init__(self, client: redis.Redis, url: str, *, prefix: str = DEFAULT_PREFIX) -> None:
        """Wrap a client made with the store's timeouts; use ``open`` instead. ``url`` is shown
        in messages, so it must hold no password."""
        self._pool = client
        self._pinned: redis.Redis | None = None
        # Per tuple of window fields, the sums the last settlement of them left: the first guess
        # of the next reservation of the same windows (see ``reserve``).
        self._recent_sums: dict[tuple[bytes, ...], list[object]] = {}
        self.url = url
        self.prefix = prefix
        self._secret = client.get_connection_kwargs().get("password")

    @classmethod
    def open(cls, url: str, *, prefix: str = DEFAULT_PREFIX) -> RedisStore:
        """The store at ``url`` (``redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]``, or ``rediss://``
        for TLS), its keys under ``prefix``.

        Raises ``StoreError`` (naming the URL without its password) when ``url`` is not such a
        URL. Connects lazily: an unreachable server shows as ``StoreUnavailable`` from the first
        call, not here.
        """
        shown = redacted_url(url)
        problem = _url_problem(url)
        if problem is not None:
            raise StoreError(
                None,
                f"the shared state URL {shown} {problem}; it must look like redis://HOST:PORT/DB "
                "(e.g. redis://127.0.0.1:6379/0).",
            )
        try:
            client = redis.Redis.from_url(
                url,
                socket_connect_timeout=CONNECT_TIMEOUT_S,
                socket_timeout=SOCKET_TIMEOUT_S,
                retry=Retry(NoBackoff(), 0),
                health_check_interval=0,
            )
        except ValueError as exc:
            raise StoreError(None, f"the shared state URL {shown} cannot be used: {exc}") from None
        return cls(client, shown, prefix=prefix)

    # --- attempts ------------------------------------------------------------------------------

    def record_attempts(self, run_id: str, command: str, attempts: Sequence[AttemptRecord]) -> None:
        """Store the attempts of one run, all of them or (on error) none, in one script that
        numbers them, so that attempts of the same millisecond keep the order they were stored in."""
        if not attempts:
            return
        args: list[str | bytes | int | float] = []
        for attempt in attempts:
            stored = _StoredAttempt(
                run_id=run_id,
                command=command,
                provider=attempt.provider,
                model=attempt.model,
                outcome=attempt.outcome,
                status=attempt.status,
                latency_ms=float(attempt.latency_ms),
                started_at_ms=int(attempt.started_at_ms),
                input_tokens=attempt.usage.input_tokens,
                output_tokens=attempt.usage.output_tokens,
                usage_estimated=attempt.usage.estimated,
                cost_usd=float(attempt.cost_usd),
                message=None if attempt.message is None else attempt.message[: _store._MAX_MESSAGE_CHARS],
            )
            args += [stored.started_at_ms, msgspec.json.encode(stored)]
        with self._reachable():
            _RECORD_ATTEMPTS.run(self._client, [self._key("attempts"), self._key("attempts:seq")], args)

    def attempts_since(self, since_ms: int, providers: Collection[str] | None = None) -> list[AttemptRow]:
        """Attempts started at or after ``since_ms`` (epoch ms), oldest first (the same
        millisecond in the order stored); only those of ``providers`` when given (an empty
        collection selects nothing)."""
        wanted = None if providers is None else set(providers)
        if wanted is not None and not wanted:
            return []
        with self._reachable():
            members = self._client.zrangebyscore(self._key("attempts"), int(since_ms), "+inf")
            stored_rows = [self._attempt(member) for member in members]
        rows = []
        for stored in stored_rows:
            if wanted is None or stored.provider in wanted:
                rows.append(
                    AttemptRow(
                        provider=stored.provider,
                        model=stored.model,
                        outcome=stored.outcome,
                        status=stored.status,
                        latency_ms=stored.latency_ms,
                        started_at_ms=stored.started_at_ms,
                        input_tokens=stored.input_tokens,
                        output_tokens=stored.output_tokens,
                        cost_usd=stored.cost_usd,
                        run_id=stored.run_id,
                    )
                )
        return rows

    # --- circuits ------------------------------------------------------------------------------

    def admit_circuits(
        self, providers: Sequence[str], now: float, cooldown_s: float, probe_timeout_s: float
    ) -> dict[str, Admission]:
        """``rmcore.breaker.admit`` for each distinct provider of ``providers`` at ``now`` (epoch
        seconds), keyed by provider in the order given.

        The circuits are read in one command. When no decision changes a circuit (closed ones
        are admitted, open ones in their cooldown refused) that is all. Otherwise one script
        writes the changed circuits only if every circuit still holds what was read; when
        another client changed one meanwhile it writes nothing and the decisions are taken again
        on what it returned. So of any number of processes asking at once about an open,
        cooled-down circuit exactly one gets the probe. A provider without a stored circuit is
        closed (and nothing is written)."""
        names = list(dict.fromkeys(providers))
        if not names:
            return {}
        keys = [self._circuit_key(name) for name in names]

        def attempt(stored: list[object]) -> tuple[dict[str, Admission], list[object] | None]:
            admissions: dict[str, Admission] = {}
            changed: dict[str, CircuitState] = {}
            for name, raw in zip(names, stored, strict=True):
                current = CircuitState(provider=name) if raw is None else self._circuit(name, raw)
                admission = admit(current, now, cooldown_s=cooldown_s, probe_timeout_s=probe_timeout_s)
                if admission.state != current:
                    changed[name] = admission.state
                admissions[name] = admission
            if not changed:
                return admissions, None
            return admissions, self._set_circuits(names, stored, changed, now)

        with self._reachable():
            return self._until_unchanged(list(self._client.mget(keys)), attempt)

    def record_circuit(self, provider: str, outcome: str, now: float, failure_threshold: int) -> CircuitState:
        """``rmcore.breaker.record`` on ``provider``'s stored circuit, read in one command; a
        change (a failure counted, a circuit opened or closed) is written by a script only if
        the circuit still holds what was read, else taken again on what it holds now, so that
        outcomes recorded by processes at the same time are all counted. Returns the new state.
        Raises ``ValueError`` (and stores nothing) when ``outcome`` is neither ``"ok"`` nor an
        error kind."""
        is_breaking(outcome)  # an unknown outcome raises here, before anything is read
        return self._change_circuit(
            provider, lambda current: record(current, outcome, now, failure_threshold=failure_threshold), now
        )

    def release_probe(self, provider: str, probe_started_at: float, now: float) -> CircuitState:
        """``rmcore.breaker.release_probe`` on ``provider``'s stored circuit, written as
        ``record_circuit`` writes an outcome; returns the new state."""
        return self._change_circuit(provider, lambda current: release_probe(current, probe_started_at), now)

    def _change_circuit(
        self, provider: str, change: Callable[[CircuitState], CircuitState], now: float
    ) -> CircuitState:
        """Apply ``change`` to ``provider``'s circuit as read in one command; a change is written
        by a script only if the circuit still holds what was read, else taken again on what it
        holds now. The new state."""

        def attempt(stored: list[object]) -> tuple[CircuitState, list[object] | None]:
            (raw,) = stored
            current = CircuitState(provider=provider) if raw is None else self._circuit(provider, raw)
            new = change(current)
            if new == current:
                return new, None
            return new, self._set_circuits([provider], stored, {provider: new}, now)

        with self._reachable():
            return self._until_unchanged([self._client.get(self._circuit_key(provider))], attempt)

    def circuits(self) -> list[CircuitState]:
        """Every stored circuit, ordered by provider name. A provider that has never recorded a
        failure may be missing: its circuit is closed."""
        with self._reachable():
            names = sorted(_text(name) for name in self._client.smembers(self._key("circuits")))
            if not names:
                return []
            stored = self._client.mget([self._circuit_key(name) for name in names])
            return [
                self._circuit(name, raw) for name, raw in zip(names, stored, strict=True) if raw is not None
            ]

    # --- the answer cache ----------------------------------------------------------------------

    def cache_get(self, key: str, now_ms: int, ttl_ms: int) -> bytes | None:
        """The payload cached under ``key`` when it is fresh (stored at or after ``now_ms -
        ttl_ms``), else None; one script looks up, counts the hit or miss, and removes an
        expired entry. Raises ``ValueError`` when ``ttl_ms`` is negative."""
        _store._check_ttl(ttl_ms)
        with self._reachable():
            found = _CACHE_GET.run(self._client, self._cache_keys(), [key, int(now_ms) - int(ttl_ms)])
            return None if found is None else _bytes(found)

    def cache_put(self, key: str, perspective_id: str, payload: bytes, now_ms: int) -> None:
        """Cache ``payload`` under ``key`` as stored at ``now_ms`` (one MULTI/EXEC); an entry of
        the same key is replaced, its age starting afresh."""
        payloads, perspectives, created, _ = self._cache_keys()
        with self._reachable(), self._client.pipeline() as pipe:
            pipe.hset(payloads, key, bytes(payload))
            pipe.hset(perspectives, key, perspective_id)
            pipe.zadd(created, {key: int(now_ms)})
            pipe.execute()

    def cache_stats(self, now_ms: int, ttl_ms: int) -> CacheStats:
        """The cache at ``now_ms`` as ``SqliteStore.cache_stats`` reports it, read by one script
        (one consistent snapshot); nothing is removed or counted. Raises ``ValueError`` when
        ``ttl_ms`` is negative."""
        _store._check_ttl(ttl_ms)
        payloads, _, created, counters = self._cache_keys()
        with self._reachable():
            found = _CACHE_STATS.run(self._client, [payloads, created, counters], [int(now_ms) - int(ttl_ms)])
            entries, fresh, oldest, newest, size, hits, misses = (
                None if value is None else _int(value) for value in _list(found, 7)
            )
        hits, misses = hits or 0, misses or 0
        lookups = hits + misses
        return CacheStats(
            entries=entries or 0,
            fresh_entries=fresh or 0,
            hits=hits,
            misses=misses,
            hit_rate=hits / lookups if lookups else None,
            oldest_ms=oldest,
            newest_ms=newest,
            bytes=size or 0,
        )

    def cache_clear(self) -> int:
        """Remove every cached answer and reset the hit and miss counters (one MULTI/EXEC); the
        number of entries removed."""
        payloads, perspectives, created, counters = self._cache_keys()
        with self._reachable(), self._client.pipeline() as pipe:
            pipe.zcard(created)
            pipe.delete(payloads, perspectives, created, counters)
            removed = pipe.execute()[0]
        return int(removed)

    def cache_prune(self, now_ms: int, ttl_ms: int) -> int:
        """Remove the entries stored before ``now_ms - ttl_ms``, leaving the counters alone; the
        number removed. Raises ``ValueError`` when ``ttl_ms`` is negative."""
        _store._check_ttl(ttl_ms)
        payloads, perspectives, created, _ = self._cache_keys()
        with self._reachable():
            removed = _CACHE_PRUNE.run(
                self._client, [payloads, perspectives, created], [int(now_ms) - int(ttl_ms)]
            )
            return _int(removed)

    # --- the analysis history ------------------------------------------------------------------

    def history_add(
        self,
        agent_id: str,
        question: str,
        status: str,
        overall_confidence: float | None,
        created_ms: int,
        payload: bytes,
    ) -> str:
        """Save one analysis; its new id, 12 lowercase hex digits, unique in this database (a
        script stores it only when the id is free; a taken id is drawn again). Raises
        ``ValueError``, storing nothing, when ``overall_confidence`` is neither None nor within
        0.0 to 1.0."""
        if overall_confidence is not None and not 0.0 <= overall_confidence <= 1.0:
            raise ValueError(
                f"overall confidence must be within 0.0 to 1.0 or None, not {overall_confidence!r}"
            )
        confidence = "" if overall_confidence is None else repr(float(overall_confidence))
        args_after_id: list[str | bytes | int | float] = [
            agent_id,
            question,
            status,
            confidence,
            int(created_ms),
            bytes(payload),
        ]
        with self._reachable():
            for _ in range(_store._NEW_ID_TRIES):
                entry_id = _store._new_history_id()
                keys = [
                    self._entry_key(entry_id),
                    self._key("history:all"),
                    self._agent_key(agent_id),
                    self._key("history:ids"),
                    self._key("history:seq"),
                ]
                if _HISTORY_ADD.run(self._client, keys, [entry_id, *args_after_id]) is not None:
                    return entry_id
        raise StoreError(None, f"no free history id in {_store._NEW_ID_TRIES} random draws; run again.")

    def history_list(
        self,
        agent_id: str | None,
        *,
        min_confidence: float | None = None,
        since_ms: int | None = None,
        before_ms: int | None = None,
        limit: int | None = None,
    ) -> list[HistoryEntry]:
        """Saved analyses, newest first (the same millisecond: the last saved first), filtered as
        ``SqliteStore.history_list`` filters them. Raises ``ValueError`` when ``limit`` is
        negative."""
        if limit is not None and limit < 0:
            raise ValueError(f"limit must not be negative, not {limit}")
        if limit == 0:
            return []
        index = self._key("history:all") if agent_id is None else self._agent_key(agent_id)
        highest = "+inf" if before_ms is None else f"({int(before_ms)}"
        lowest = "-inf" if since_ms is None else str(int(since_ms))
        page = (0, limit) if limit is not None and min_confidence is None else (None, None)
        with self._reachable():
            members = self._client.zrevrangebyscore(index, highest, lowest, start=page[0], num=page[1])
            entries = self._entries([_member_id(member) for member in members])
        if min_confidence is not None:
            entries = [
                entry
                for entry in entries
                if entry.overall_confidence is not None and entry.overall_confidence >= min_confidence
            ]
        return entries if limit is None else entries[:limit]

    def history_resolve(self, reference: str) -> list[str]:
        """The full ids ``reference`` names, sorted: ``[reference]`` when it is an id; else the
        ids starting with it when it is at least ``HISTORY_ID_MIN_PREFIX`` hex digits (either
        case); else none."""
        with self._reachable():
            return self._resolve(reference)

    def history_get(self, entry_id: str) -> tuple[HistoryEntry, bytes] | None:
        """The entry and payload ``entry_id`` names (an id or an unambiguous prefix); None when
        it names no entry or several."""
        with self._reachable():
            ids = self._resolve(entry_id)
            if len(ids) != 1:
                return None
            values = self._client.hmget(self._entry_key(ids[0]), [*_HISTORY_FIELDS, "payload"])
            if values[0] is None:
                return None
            return self._entry(ids[0], values[:-1]), self._payload(values[-1], f"history entry {ids[0]!r}")

    def history_stats(self, agent_id: str | None) -> HistoryStats:
        """Counts, confidence and dates of the analyses of ``agent_id`` (every agent's when
        None)."""
        index = self._key("history:all") if agent_id is None else self._agent_key(agent_id)
        with self._reachable():
            entries = self._entries([_member_id(member) for member in self._client.zrange(index, 0, -1)])
        statuses: dict[str, int] = {}
        for entry in entries:
            statuses[entry.status] = statuses.get(entry.status, 0) + 1
        known = [entry.overall_confidence for entry in entries if entry.overall_confidence is not None]
        times = [entry.created_ms for entry in entries]
        return HistoryStats(
            total=len(entries),
            by_status=dict(sorted(statuses.items())),
            with_confidence=len(known),
            average_confidence=math.fsum(known) / len(known) if known else None,
            min_confidence=min(known, default=None),
            max_confidence=max(known, default=None),
            first_ms=min(times, default=None),
            last_ms=max(times, default=None),
        )

    def history_delete(self, entry_id: str) -> bool:
        """Delete the entry ``entry_id`` names (an id or an unambiguous prefix), from every index
        at once; False, deleting nothing, when it names no entry or several."""
        with self._reachable():
            ids = self._resolve(entry_id)
            if len(ids) != 1:
                return False
            keys = [self._entry_key(ids[0]), self._key("history:all"), self._key("history:ids")]
            deleted = _HISTORY_DELETE.run(self._client, keys, [ids[0], self._key("history:agent:")])
            return _int(deleted) == 1

    def history_clear(self, agent_id: str | None, before_ms: int | None = None) -> int:
        """Delete the analyses of ``agent_id`` (every agent's when None) saved strictly before
        ``before_ms`` (all of them when None), in one script; the number deleted."""
        index = self._key("history:all") if agent_id is None else self._agent_key(agent_id)
        keys = [index, self._key("history:all"), self._key("history:ids")]
        args = [
            self._key("history:entry:"),
            self._key("history:agent:"),
            "" if before_ms is None else int(before_ms),
        ]
        with self._reachable():
            return _int(_HISTORY_CLEAR.run(self._client, keys, args))

    def history_export(self, agent_id: str) -> list[tuple[HistoryEntry, bytes]]:
        """Every analysis of ``agent_id`` with its payload, oldest first (the same millisecond in
        the order saved)."""
        with self._reachable():
            ids = [_member_id(member) for member in self._client.zrange(self._agent_key(agent_id), 0, -1)]
            with self._client.pipeline(transaction=False) as pipe:
                for entry_id in ids:
                    pipe.hmget(self._entry_key(entry_id), [*_HISTORY_FIELDS, "payload"])
                found = pipe.execute()
            return [
                (self._entry(entry_id, values[:-1]), self._payload(values[-1], f"history entry {entry_id!r}"))
                for entry_id, values in zip(ids, found, strict=True)
                if values[0] is not None
            ]

    # --- budgets and quotas --------------------------------------------------------------------

    def reserve(
        self, reservation_id: str, charges: Sequence[Charge], now: float, lease_s: float
    ) -> Refusal | None:
        """Reserve ``charges`` under ``reservation_id`` (see ``Store.reserve``), as
        ``begin_attempt`` reserves a claim without a slot: usually one round trip.

        Raises ``ValueError`` (storing nothing) for a lease that is not a positive number of
        seconds, an amount that is not finite, or a window charged twice."""
        claim = AttemptClaim(holder=reservation_id, lease_s=lease_s, charges=tuple(charges))
        if not charges:
            return None
        answer = self._begin(claim, now)
        if isinstance(answer, SlotBusy):
            raise AssertionError("unreachable: no slot was asked for")
        return answer

    def settle(self, reservation_id: str, charges: Sequence[Charge], now: float) -> None:
        """Drop the reservation and add the real amounts of ``charges`` to their windows' settled
        use, in one script (see ``Store.settle``); it also forgets the leases expired at ``now``
        and the windows that ended ``PRUNE_AFTER_S`` before it. Raises ``ValueError`` (storing
        nothing) for an amount that is not finite or a window charged twice."""
        _store._check_charges(charges)
        self._settle(reservation_id, charges, now, None)

    def release(self, reservation_id: str) -> None:
        """Drop the reservation and its lease (one MULTI/EXEC); nothing is settled."""
        self._release(reservation_id, None)

    def cap_usage(self, now: float) -> list[CapUsage]:
        """The cap windows current at ``now``, by cap key and window, read by one script:
        ``used`` is the settled use, ``reserved`` what the leases live at ``now`` hold."""
        keys = [self._key("quota:leases"), self._key("quota:settled"), self._key("quota:windows")]
        with self._reachable():
            found = _QUOTA_USAGE.run(self._client, keys, [repr(float(now)), self._key("quota:reservation:")])
            rows = [self._window_use(row) for row in _list(found, None)]
        usage = []
        for window, used, held in rows:
            if window.resets_at > now:
                usage.append(
                    CapUsage(
                        cap_key=window.cap_key,
                        resource=window.resource,
                        window=window.window,
                        resets_at=window.resets_at,
                        limit=window.limit,
                        used=used,
                        reserved=held,
                    )
                )
        return sorted(usage, key=lambda u: (u.cap_key, u.window))

    # --- slots ---------------------------------------------------------------------------------

    def acquire_slot(self, name: str, limit: int, holder: str, now: float, lease_s: float) -> bool:
        """One of the ``limit`` slots of ``name`` for ``holder`` (see ``Store.acquire_slot``), in
        one script, so clients asking at once never hold more than ``limit``. Raises
        ``ValueError`` for a ``limit`` below 1 or a lease that is not a positive number of
        seconds."""
        _store._check_slot(limit, lease_s)
        with self._reachable():
            taken = _SLOT_ACQUIRE.run(
                self._client,
                [self._slot_key(name)],
                [repr(float(now)), holder, limit, repr(float(now + lease_s))],
            )
            return _int(taken) == 1

    def release_slot(self, name: str, holder: str) -> None:
        """Give back ``holder``'s slot of ``name``; nothing when it holds none."""
        with self._reachable():
            self._client.zrem(self._slot_key(name), holder)

    # --- an attempt's slot and reservation at once --------------------------------------------------

    def begin_attempt(self, claim: AttemptClaim, now: float) -> Refusal | SlotBusy | None:
        """Take ``claim``'s slot and reserve its charges (see ``Store.begin_attempt``).

        One script takes the slot and commits the reservation, or, when no slot is free, does
        neither; its compare-and-set works as ``reserve``'s, so with the sums this store's last
        settlement of the same windows left it is one round trip while no other client charges
        them, and otherwise two (the first returns the sums, or that no slot is free). When the
        sums changed under it, it writes nothing, slot included: of the answers it may end with,
        only None leaves anything held. A claim without charges is one ``acquire_slot``."""
        if claim.empty:
            return None
        if claim.slot is None or claim.charges:
            return self._begin(claim, now)
        slot = claim.slot
        taken = self.acquire_slot(slot.name, slot.limit, claim.holder, now, slot.lease_s)
        return None if taken else SlotBusy()

    def end_attempt(self, claim: AttemptClaim, used: Sequence[Charge] | None, now: float) -> None:
        """Settle ``claim``'s reservation with ``used`` (one script, as ``settle``) or release it
        when ``used`` is None (one MULTI/EXEC, as ``release``), giving its slot back in the same
        step (see ``Store.end_attempt``). Raises ``ValueError`` (storing nothing) for an amount of
        ``used`` that is not finite or a window charged twice."""
        if used is not None:
            _store._check_charges(used)
        slot = None if claim.slot is None else self._slot_key(claim.slot.name)
        if not claim.charges and not used:
            if claim.slot is not None:
                self.release_slot(claim.slot.name, claim.holder)
        elif used is None:
            self._release(claim.holder, slot)
        else:
            self._settle(claim.holder, used, now, slot)

    # --- the store itself ----------------------------------------------------------------------

    def close(self) -> None:
        """Close the client's connections. Closing twice is harmless."""
        pinned, self._pinned = self._pinned, None
        if pinned is not None:
            pinned.close()
        self._pool.close()

    @property
    def _client(self) -> redis.Redis:
        """The client commands go through (use it inside ``_reachable``: it may connect).

        It keeps one connection of the pool for this store, taken on first use, which spares
        each command the pool's check-out and check-in (a third of a command's cost on
        loopback); pipelines take connections of their own from the pool. Before each use the
        kept connection is checked as the pool checks one it hands out: when it has something
        to read before anything was asked (the server closed it: Redis restarted) it is closed,
        and the command connects afresh, so a restart costs no call once the server is back."""
        pinned = self._pinned
        if pinned is None:
            pinned = self._pinned = redis.Redis(
                connection_pool=self._pool.connection_pool, single_connection_client=True
            )
            return pinned
        connection = pinned.connection
        if connection is not None and connection.is_connected:
            try:
                stale = connection.can_read()
            except (RedisConnectionError, RedisTimeoutError, OSError):
                stale = True
            if stale:
                connection.disconnect()  # type: ignore[no-untyped-call]
        return pinned

    @contextmanager
    def _reachable(self) -> Iterator[None]:
        """Turn the client's errors into the store's: unreachable or not answering in time is
        ``StoreUnavailable``; anything else Redis refuses is a ``StoreError``."""
        try:
            yield
        except (AuthenticationError, AuthorizationError) as exc:
            raise StoreError(
                None,
                f"the shared state ({self.url}) refused rmgr's credentials: {self._clean(exc)}. "
                "Fix the user and password in RECURSIVEMANAGER_STATE.",
            ) from None
        except (RedisConnectionError, RedisTimeoutError, ReadOnlyError) as exc:
            raise StoreUnavailable(self.url, self._reason(exc)) from None
        except RedisError as exc:
            raise StoreError(None, f"the shared state ({self.url}) failed: {self._clean(exc)}.") from None
        except _Unreadable as exc:
            raise self._corrupt(str(exc)) from None

    def _until_unchanged(
        self, seen: list[object], attempt: Callable[[list[object]], tuple[_T, list[object] | None]]
    ) -> _T:
        """The answer of ``attempt``, which decides on ``seen`` (state just read) and commits its
        writes only if that state is unchanged (or has nothing to write): it returns its answer
        and None when done, or the state as it is now when another client changed it, to be
        decided on again. There is no pause between tries: each is decided on what the failed
        commit found, the freshest state there is, and a try fails only because another
        client's write went through, so the clients as a whole always make progress."""
        for _ in range(_OPTIMISTIC_TRIES):
            answer, changed = attempt(seen)
            if changed is None:
                return answer
            seen = changed
        raise StoreError(
            None,
            f"the shared state ({self.url}) kept changing under {_OPTIMISTIC_TRIES} tries to update it; "
            "run again.",
        )

    def _begin(self, claim: AttemptClaim, now: float) -> Refusal | SlotBusy | None:
        """Reserve ``claim``'s charges (at least one) and take its slot, if it names one, by
        ``_QUOTA_RESERVE`` (see ``reserve`` and ``begin_attempt``).

        ``rmcore.quota.refuse`` decides on each charged window's sum of settled use and live
        reservations. A refusal writes nothing. A fit is committed by the script, which sums
        them again and writes (expired leases reclaimed, the reservation and its lease added,
        the slot taken) only if every sum is what the decision saw and a slot is free; when
        another client reserved, settled or released meanwhile, it writes nothing and returns
        the new sums, and the decision is taken again on them. So processes reserving at once
        against one cap are admitted exactly as far as it holds.

        The sums this store's last settlement of the same windows left are the first guess,
        when they fit: the first commit is tried on them without reading. Otherwise the script
        is first sent with no guess, which writes nothing and returns the sums (or that no slot
        is free). A refusal is only ever given on sums just read."""
        slot = claim.slot
        keys = [
            *(self._key(f"quota:{name}") for name in ("leases", "settled", "windows", "ends")),
            self._reservation_key(claim.holder),
            *([] if slot is None else [self._slot_key(slot.name)]),
        ]
        head: list[str | bytes | int | float] = [
            repr(float(now)),
            self._key("quota:reservation:"),
            claim.holder,
            repr(float(now + claim.lease_s)),
            "" if slot is None else slot.limit,
            "" if slot is None else repr(float(now + slot.lease_s)),
        ]
        fields = [_window_field(charge) for charge in claim.charges]
        written = [
            (field, repr(float(charge.amount)), _window_json(charge), repr(float(charge.resets_at)))
            for field, charge in zip(fields, claim.charges, strict=True)
        ]

        def decide(sums: Sequence[object]) -> Refusal | None:
            used = {
                (charge.cap_key, charge.window): _number(held)
                for charge, held in zip(claim.charges, sums, strict=True)
            }
            return refuse(claim.charges, used)

        def commit(sums: Sequence[object]) -> object:
            args = list(head)
            for (field, amount, window, resets_at), held in zip(written, sums, strict=True):
                args += [field, _bytes(held), amount, window, resets_at]
            return _QUOTA_RESERVE.run(self._client, keys, args)

        def attempt(sums: list[object]) -> tuple[Refusal | SlotBusy | None, list[object] | None]:
            refusal = decide(sums)
            if refusal is not None:
                return refusal, None
            found = commit(sums)
            if found == 0:
                return SlotBusy(), None
            return None, None if found == 1 else _list(found, len(fields))

        with self._reachable():
            guess = self._recent_sums.pop(tuple(fields), None)
            if guess is None or decide(guess) is not None:
                found = commit([b""] * len(fields))  # no sum is '': a read that writes nothing
                if found == 0:
                    return SlotBusy()
                guess = _list(found, len(fields))
            return self._until_unchanged(guess, attempt)

    def _settle(self, reservation_id: str, charges: Sequence[Charge], now: float, slot: str | None) -> None:
        """``settle``, also giving back ``reservation_id``'s slot of the slot key ``slot`` (when
        one is given) in the same script; remembers the sums it leaves (see ``_begin``)."""
        keys = [
            self._key("quota:leases"),
            self._key("quota:settled"),
            self._key("quota:windows"),
            self._key("quota:ends"),
            self._reservation_key(reservation_id),
            *([] if slot is None else [slot]),
        ]
        args: list[str | bytes | int | float] = [
            reservation_id,
            repr(float(now)),
            repr(float(now - PRUNE_AFTER_S)),
            self._key("quota:reservation:"),
        ]
        fields = [_window_field(charge) for charge in charges]
        for field, charge in zip(fields, charges, strict=True):
            args += [field, repr(float(charge.amount)), _window_json(charge), repr(float(charge.resets_at))]
        with self._reachable():
            sums = _list(_QUOTA_SETTLE.run(self._client, keys, args), len(fields))
        if len(self._recent_sums) >= _RECENT_SUMS_KEPT:
            self._recent_sums.clear()
        self._recent_sums[tuple(fields)] = sums

    def _release(self, reservation_id: str, slot: str | None) -> None:
        """``release``, also giving back ``reservation_id``'s slot of the slot key ``slot`` (when
        one is given) in the same MULTI/EXEC."""
        with self._reachable(), self._client.pipeline() as pipe:
            pipe.zrem(self._key("quota:leases"), reservation_id)
            pipe.delete(self._reservation_key(reservation_id))
            if slot is not None:
                pipe.zrem(slot, reservation_id)
            pipe.execute()

    def _reason(self, exc: RedisError) -> str:
        if isinstance(exc, RedisTimeoutError):
            return f"no answer within {SOCKET_TIMEOUT_S:g} s ({self._clean(exc)})"
        if isinstance(exc, ReadOnlyError):
            return f"the server is a read-only replica ({self._clean(exc)})"
        return self._clean(exc)

    def _clean(self, exc: BaseException) -> str:
        text = str(exc).strip().rstrip(".") or type(exc).__name__
        if isinstance(self._secret, str) and self._secret:
            text = text.replace(self._secret, "***")
        return text

    def _corrupt(self, reason: str) -> StoreError:
        return StoreError(
            None,
            f"the shared state ({self.url}) holds data rmgr cannot read ({reason}). Clear the keys "
            f"under {self.prefix!r} in that database, or point RECURSIVEMANAGER_STATE at another one.",
        )

    def _key(self, name: str) -> str:
        return self.prefix + name

    def _circuit_key(self, provider: str) -> str:
        return self._key(f"circuit:{provider}")

    def _entry_key(self, entry_id: str) -> str:
        return self._key(f"history:entry:{entry_id}")

    def _agent_key(self, agent_id: str) -> str:
        return self._key(f"history:agent:{agent_id}")

    def _reservation_key(self, reservation_id: str) -> str:
        return self._key(f"quota:reservation:{reservation_id}")

    def _slot_key(self, name: str) -> str:
        return self._key(f"slot:{name}")

    def _cache_keys(self) -> list[str]:
        return [self._key(f"cache:{name}") for name in ("payload", "perspective", "created", "counters")]

    def _attempt(self, member: object) -> _StoredAttempt:
        try:
            return msgspec.json.decode(_bytes(member)[_SEQ_DIGITS:], type=_StoredAttempt)
        except msgspec.DecodeError as exc:
            raise self._corrupt(f"an attempt is impossible: {exc}") from None

    def _window_use(self, row: object) -> tuple[_StoredWindow, float, float]:
        _, window_json, settled, reserved = _list(row, 4)
        try:
            window = msgspec.json.decode(_bytes(window_json), type=_StoredWindow)
        except msgspec.DecodeError as exc:
            raise self._corrupt(f"the use of a cap is impossible: {exc}") from None
        return window, 0.0 if settled is None else _number(settled), _number(reserved)

    def _circuit(self, provider: str, raw: object) -> CircuitState:
        try:
            stored = msgspec.json.decode(_bytes(raw), type=_StoredCircuit)
            return msgspec.convert(
                {
                    "provider": provider,
                    "state": stored.state,
                    "consecutive_failures": stored.consecutive_failures,
                    "opened_at": stored.opened_at,
                    "probe_started_at": stored.probe_started_at,
                },
                CircuitState,
            )
        except (msgspec.DecodeError, msgspec.ValidationError, _Unreadable) as exc:
            raise self._corrupt(f"the circuit of {provider!r} is impossible: {exc}") from None

    def _set_circuits(
        self, names: Sequence[str], stored: Sequence[object], changed: dict[str, CircuitState], now: float
    ) -> list[object] | None:
        """Write the ``changed`` circuits among those of ``names`` (dated ``now``) if each circuit
        of ``names`` still holds what ``stored`` says was read: None when written, else what they
        hold now."""
        new = [b"" if name not in changed else _circuit_json(changed[name], now) for name in names]
        read = [b"" if raw is None else _bytes(raw) for raw in stored]
        keys = [self._key("circuits"), *(self._circuit_key(name) for name in names)]
        found = _CIRCUITS_SET.run(self._client, keys, [*read, *new, *names])
        return None if found == 1 else _list(found, len(names))

    def _resolve(self, reference: str) -> list[str]:
        if self._client.exists(self._entry_key(reference)):
            return [reference]
        prefix = reference.strip().lower()
        if len(prefix) < HISTORY_ID_MIN_PREFIX or not set(prefix) <= _HEX_DIGITS:
            return []
        start = b"[" + prefix.encode()
        found = self._client.zrangebylex(self._key("history:ids"), start, start + b"\xff")
        return [_text(entry_id) for entry_id in found]

    def _entries(self, ids: Sequence[str]) -> list[HistoryEntry]:
        """The entries of ``ids`` in that order, read in one round trip; an entry deleted since
        its id was listed is left out."""
        with self._client.pipeline(transaction=False) as pipe:
            for entry_id in ids:
                pipe.hmget(self._entry_key(entry_id), list(_HISTORY_FIELDS))
            found = pipe.execute()
        return [
            self._entry(entry_id, values)
            for entry_id, values in zip(ids, found, strict=True)
            if values[0] is not None
        ]

    def _entry(self, entry_id: str, values: Sequence[object]) -> HistoryEntry:
        try:
            agent_id, question, status, confidence, created_ms = (_text(value) for value in values)
            return msgspec.convert(
                {
                    "id": entry_id,
                    "agent_id": agent_id,
                    "question": question,
                    "status": status,
                    "overall_confidence": float(confidence) if confidence else None,
                    "created_ms": int(created_ms),
                },
                HistoryEntry,
            )
        except (msgspec.ValidationError, ValueError, _Unreadable) as exc:
            raise self._corrupt(f"history entry {entry_id!r} is impossible: {exc}") from None

    def _payload(self, value: object, what: str) -> bytes:
        if not isinstance(value, bytes):
            raise self._corrupt(f"{what} has no payload bytes")
        return value


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
    if parts.scheme not in ("redis", "rediss"):
        return "does not start with redis:// or rediss://"
    if not parts.hostname:
        return "names no host"
    database = parts.path.strip("/")
    if database and not database.isdecimal():
        return f"names the database {database!r}, which is not a number"
    return None


def _member_id(member: object) -> str:
    """The entry id of a history index member ``SEQ:ID``."""
    return _text(member)[_SEQ_DIGITS + 1 :]


def _circuit_json(circuit: CircuitState, now: float) -> bytes:
    """How ``circuit`` is stored, changed at ``now``."""
    return msgspec.json.encode(
        _StoredCircuit(
            state=circuit.state,
            consecutive_failures=circuit.consecutive_failures,
            opened_at=circuit.opened_at,
            probe_started_at=circuit.probe_started_at,
            updated_at=float(now),
        )
    )


def _window_field(charge: Charge) -> bytes:
    return msgspec.json.encode([charge.cap_key, charge.window])


def _window_json(charge: Charge) -> bytes:
    return msgspec.json.encode(
        _StoredWindow(
            cap_key=charge.cap_key,
            resource=charge.resource,
            window=charge.window,
            resets_at=float(charge.resets_at),
            limit=float(charge.limit),
        )
    )


def _bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    raise _Unreadable(f"expected a string, found {type(value).__name__}")


def _text(value: object) -> str:
    try:
        return _bytes(value).decode()
    except UnicodeDecodeError as exc:
        raise _Unreadable(f"a string that is not UTF-8 ({exc})") from None


def _number(value: object) -> float:
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(_text(value))
    except ValueError:
        raise _Unreadable(f"{value!r} is not a number") from None


def _int(value: object) -> int:
    number = _number(value)
    if not number.is_integer():
        raise _Unreadable(f"{value!r} is not a whole number")
    return int(number)


def _list(value: object, length: int | None) -> list[object]:
    if not isinstance(value, list) or (length is not None and len(value) != length):
        raise _Unreadable(f"an unexpected answer {value!r}"[:200])
    return value
