################################################################
# The core's decision table
################################################################
#
# Rule 1: every *fact* about how the core conducts a run lives here, as data. For each error
# kind: whether a request was sent, whether it is retried on the same target by default, what the
# run does next (fail over, stop, or nothing: the run is over), whether it counts against the
# provider's circuit breaker, and whether it is a failure at all. For each strategy: whether its
# targets run one at a time, all at once or hedged, in what order, whether every answer is kept,
# and the words `rmgr policy explain` says about it. Nobody else keeps a list of kinds or of
# strategies: the engine, the plan, the schema's defaults, decode, explain, the breaker, usage
# and the shell's notices read these tables (or a set derived from them below).
#
# Rule 2: facts, not mechanism. How a strategy runs its targets is code in `rmcore.engine` (one
# node class per concurrency); *which* class runs a strategy is read from here. This module
# imports nothing of the core but the vocabulary of error kinds, so that every other module may
# import it without a cycle; the `Strategy` enum lives here for that reason (the schema re-exports
# it).
#
# Rule 3: one row per kind and per strategy, no more, no less. Adding an `ErrorKind` or a
# `Strategy` without its row is an error at import time, and tests/core/test_conduct.py checks
# every column against the behaviour of the module that reads it.
#
# Rule 4: what a policy can override is a *default* here. The schema takes `retry.on` and
# `retry.stop_on`'s defaults from the `retried` and `then` columns; from then on the engine obeys
# the policy, not the table. The other columns (sent, breaking, failure) are not overridable.
#
# Reading the kinds table
# -----------------------
#
#   sent      a request left for the provider: the attempt is recorded, billed (at least its
#             prompt's estimate) and counted in `rmgr usage`. The unsent kinds describe a target
#             passed over before anything was sent (`budget`, `quota`, `circuit_open`,
#             `unhealthy`, `unsupported`): no record, no cost, and the fail-over notice is the
#             "Skipped" line.
#   retried   retried on the same target, after a full-jitter back-off, by default (`retry.on`).
#   then      what happens once the retries (if any) are spent: FAIL_OVER to the next target at
#             once, STOP the whole run with the provider's reason (`retry.stop_on`), or END: the
#             kind is the run's own doing (its deadline was reached, or the attempt lost a race or
#             a hedge, or the run was interrupted) and nothing follows it.
#   breaking  says the *provider* is broken, not the request or the run: it counts towards
#             opening the provider's circuit (`[breaker] failure_threshold`).
#   failure   counted as a failure (in `rmgr usage` and a run's status). `cancelled` is not: a
#             race's loser was sent and may be billed, but it is no verdict on anyone; nor is
#             `unsupported`: the request needs what the target's format cannot carry (tools,
#             images, a JSON answer), which says nothing of the provider's health.
#
# A kind that is sent and does not END is the provider's (or its connection's) verdict on an
# attempt: only those may be listed in `retry.on` and `retry.stop_on`.
"""The conduct per error kind and the traits per strategy, as tables (see the rules above).

Derived sets (``SENT_KINDS``, ``BREAKING_KINDS``, ``DEFAULT_RETRY_ON``, ...) are computed from
the tables once, here, so that a reader never has to recompute one and get it subtly wrong.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import NamedTuple

from rmcore.errors import ErrorKind

__all__ = [
    "BREAKING_KINDS",
    "CONDUCT",
    "CONFIGURABLE_KINDS",
    "DEFAULT_RETRY_ON",
    "DEFAULT_STOP_ON",
    "NOT_FAILURES",
    "SENT_KINDS",
    "STRATEGIES",
    "UNSENT_KINDS",
    "Concurrency",
    "Conduct",
    "Order",
    "Strategy",
    "Then",
    "Traits",
    "conduct_of",
]


# --- error kinds --------------------------------------------------------------------------------


class Then(enum.Enum):
    """What a run does after an attempt (or a target) ended in a kind, its retries spent."""

    FAIL_OVER = "fail over"
    """The next target, at once."""
    STOP = "stop"
    """The whole run ends, reporting the provider's reason."""
    END = "end"
    """Nothing: the kind is the run's own ending (its deadline, or a cancellation)."""


class Conduct(NamedTuple):
    """One row of :data:`CONDUCT`: the core's conduct towards one error kind (columns explained
    in the comment block at the top of this module)."""

    sent: bool
    retried: bool
    then: Then
    breaking: bool
    failure: bool

    @property
    def fails_over(self) -> bool:
        """The run moves on to the next target (after the retries, if any)."""
        return self.then is Then.FAIL_OVER

    @property
    def stops(self) -> bool:
        """The whole run ends at once."""
        return self.then is Then.STOP

    @property
    def configurable(self) -> bool:
        """The provider's verdict on an attempt, so ``retry.on`` and ``retry.stop_on`` may name it."""
        return self.sent and self.then is not Then.END


_SENT, _UNSENT = True, False
_RETRY, _ONCE = True, False
_BREAKS, _SPARES = True, False
_FAILS, _NO_FAILURE = True, False
_OVER, _STOP, _END = Then.FAIL_OVER, Then.STOP, Then.END

_KINDS: dict[ErrorKind, Conduct] = {
    #                                    sent     retried then    breaking  failure
    ErrorKind.RATE_LIMITED:       Conduct(_SENT,   _RETRY, _OVER, _BREAKS,  _FAILS),
    ErrorKind.SERVER_ERROR:       Conduct(_SENT,   _RETRY, _OVER, _BREAKS,  _FAILS),
    ErrorKind.CONNECTION:         Conduct(_SENT,   _RETRY, _OVER, _BREAKS,  _FAILS),
    ErrorKind.TIMEOUT:            Conduct(_SENT,   _ONCE,  _OVER, _BREAKS,  _FAILS),
    ErrorKind.FIRST_TOKEN_TIMEOUT: Conduct(_SENT,  _ONCE,  _OVER, _BREAKS,  _FAILS),
    ErrorKind.STREAM_STALLED:     Conduct(_SENT,   _ONCE,  _OVER, _BREAKS,  _FAILS),
    ErrorKind.STREAM_TRUNCATED:   Conduct(_SENT,   _ONCE,  _OVER, _BREAKS,  _FAILS),
    ErrorKind.OVERLOADED:         Conduct(_SENT,   _ONCE,  _OVER, _BREAKS,  _FAILS),
    ErrorKind.AUTH:               Conduct(_SENT,   _ONCE,  _OVER, _BREAKS,  _FAILS),
    ErrorKind.MALFORMED_RESPONSE: Conduct(_SENT,   _ONCE,  _OVER, _BREAKS,  _FAILS),
    ErrorKind.BAD_REQUEST:        Conduct(_SENT,   _ONCE,  _OVER, _SPARES,  _FAILS),
    ErrorKind.CONTEXT_LENGTH:     Conduct(_SENT,   _ONCE,  _OVER, _SPARES,  _FAILS),
    ErrorKind.CONTENT_FILTER:     Conduct(_SENT,   _ONCE,  _STOP, _SPARES,  _FAILS),
    ErrorKind.DEADLINE:           Conduct(_SENT,   _ONCE,  _END,  _SPARES,  _FAILS),
    ErrorKind.CANCELLED:          Conduct(_SENT,   _ONCE,  _END,  _SPARES,  _NO_FAILURE),
    ErrorKind.BUDGET:             Conduct(_UNSENT, _ONCE,  _OVER, _SPARES,  _FAILS),
    ErrorKind.QUOTA:              Conduct(_UNSENT, _ONCE,  _OVER, _SPARES,  _FAILS),
    ErrorKind.CIRCUIT_OPEN:       Conduct(_UNSENT, _ONCE,  _OVER, _SPARES,  _FAILS),
    ErrorKind.UNHEALTHY:          Conduct(_UNSENT, _ONCE,  _OVER, _BREAKS,  _FAILS),
    ErrorKind.UNSUPPORTED:        Conduct(_UNSENT, _ONCE,  _OVER, _SPARES,  _NO_FAILURE),
}  # fmt: skip

CONDUCT: Mapping[ErrorKind, Conduct] = MappingProxyType(_KINDS)
"""The core's conduct towards each error kind. The rows' order is the order in which the
defaults below name their kinds (``retry.on``: rate_limited, server_error, connection)."""

if set(CONDUCT) != set(ErrorKind):  # Rule 3
    raise AssertionError(f"rmcore.conduct: no row for {sorted(set(ErrorKind) - set(CONDUCT))}")


def conduct_of(outcome: str) -> Conduct | None:
    """The row of ``outcome`` (an ``ErrorKind`` value), or ``None`` for ``"ok"``. Raises
    ``ValueError`` for a string that is neither, so that a typo cannot pass silently."""
    return None if outcome == "ok" else CONDUCT[ErrorKind(outcome)]


SENT_KINDS: frozenset[ErrorKind] = frozenset(k for k, c in CONDUCT.items() if c.sent)
"""Kinds a request that was actually sent can end in."""

UNSENT_KINDS: frozenset[ErrorKind] = frozenset(ErrorKind) - SENT_KINDS
"""Kinds of a target passed over before anything was sent (its notice is the "Skipped" line)."""

BREAKING_KINDS: frozenset[ErrorKind] = frozenset(k for k, c in CONDUCT.items() if c.breaking)
"""Kinds that say the provider, not the request or the run, is broken."""

CONFIGURABLE_KINDS: frozenset[ErrorKind] = frozenset(k for k, c in CONDUCT.items() if c.configurable)
"""Kinds ``retry.on`` and ``retry.stop_on`` may name: how a provider ends an attempt."""

NOT_FAILURES: frozenset[ErrorKind] = frozenset(k for k, c in CONDUCT.items() if not c.failure)
"""Kinds that are no failure (``cancelled``, ``unsupported``)."""

DEFAULT_RETRY_ON: tuple[ErrorKind, ...] = tuple(k for k, c in CONDUCT.items() if c.retried)
"""``retry.on`` when a policy does not set it."""

DEFAULT_STOP_ON: tuple[ErrorKind, ...] = tuple(k for k, c in CONDUCT.items() if c.stops)
"""``retry.stop_on`` when a policy does not set it."""


# --- strategies ---------------------------------------------------------------------------------


class Strategy(enum.StrEnum):
    """How a route chooses among its targets."""

    SEQUENTIAL = "sequential"
    """In order; the next target only when the previous one failed for good."""
    FASTEST = "fastest"
    """All at once; the first answer wins, the rest are cancelled."""
    HEDGED = "hedged"
    """In order, but the next target also starts when the running one is slow (``hedge_after_s``)."""
    CHEAPEST = "cheapest"
    """In order of the request's worst-case cost at each target's prices, cheapest first."""
    WEIGHTED = "weighted"
    """A random order drawn in proportion to the targets' weights (the seed is an argument)."""
    COMPARE = "compare"
    """Every target, every answer kept, side by side."""


class Concurrency(enum.Enum):
    """How many of a route's targets run at the same time."""

    ONE = "one at a time"
    """The next target starts only when the running one failed for good."""
    HEDGED = "hedged"
    """One at a time, but the next also starts when the running ones are slow or one fails."""
    ALL = "all at once"
    """Every target starts together."""


class Order(enum.Enum):
    """The order in which a route's targets are tried."""

    WRITTEN = "as written"
    COST = "cheapest worst case first"
    WEIGHT = "a random draw by weight"


class Traits(NamedTuple):
    """One row of :data:`STRATEGIES`: what a strategy is, and how ``policy explain`` says it.

    ``words`` may name ``{wait}``: the hedging delay, filled in by the reader.
    """

    concurrency: Concurrency
    order: Order
    keeps_every_answer: bool
    words: str

    @property
    def one_at_a_time(self) -> bool:
        """No two of its targets ever run together (so an attempt's text may be streamed)."""
        return self.concurrency is Concurrency.ONE

    @property
    def cancels_losers(self) -> bool:
        """Targets run together and the first answer wins: the others are cancelled."""
        return not self.one_at_a_time and not self.keeps_every_answer


_ONE, _HEDGED, _ALL = Concurrency.ONE, Concurrency.HEDGED, Concurrency.ALL

_STRATEGIES: dict[Strategy, Traits] = {
    Strategy.SEQUENTIAL: Traits(_ONE, Order.WRITTEN, False, (
        "the targets in order; the next one only when the previous one has failed for good"
    )),
    Strategy.FASTEST: Traits(_ALL, Order.WRITTEN, False, (
        "all targets at once; the first complete answer wins and the others are cancelled"
        " (what they cost until then still counts)"
    )),
    Strategy.HEDGED: Traits(_HEDGED, Order.WRITTEN, False, (
        "one target at a time, but when the running one has not answered after {wait} the next"
        " one starts too; the first complete answer wins and the others are cancelled"
    )),
    Strategy.CHEAPEST: Traits(_ONE, Order.COST, False, (
        "cheapest first: the targets ordered by what the request could cost at worst at their"
        " prices, then tried in that order, the next only when the previous one has failed for good"
    )),
    Strategy.WEIGHTED: Traits(_ONE, Order.WEIGHT, False, (
        "the targets in a random order drawn by weight (twice the weight, twice as likely to go"
        " first); the next one only when the previous one has failed for good"
    )),
    Strategy.COMPARE: Traits(_ALL, Order.WRITTEN, True, (
        "every target, each answer kept side by side; one failing does not stop the others"
    )),
}  # fmt: skip

STRATEGIES: Mapping[Strategy, Traits] = MappingProxyType(_STRATEGIES)
"""The traits of each strategy."""

if set(STRATEGIES) != set(Strategy):  # Rule 3
    raise AssertionError(f"rmcore.conduct: no traits for {sorted(set(Strategy) - set(STRATEGIES))}")
