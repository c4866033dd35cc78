"""A budget that several runs share: what was spent, and what running attempts may still cost.

One analysis sends one request per perspective, each routed by its own engine, at the same time;
they share one ``max_usd``. Each engine reserves an attempt's worst case before starting it and
settles the reservation with the real cost when it ends, so that the runs together never start
more than the budget can pay for. A ``Ledger`` is a plain in-memory value: engines in one process
(one event loop) share it without locks.

A worst case is much more than an attempt usually costs, so a run whose next attempt does not fit
*now* may well fit once the attempts running beside it settle. Such a run waits rather than gives
up (see ``rmcore.engine``): it gives up with ``budget`` only when the attempt could not fit even
if every reservation were released at no cost (``left_at_best``). ``version`` counts the
settlements, the only changes that can make room, so that the shell knows when a waiting run is
worth another look.
"""

from __future__ import annotations

from collections.abc import Hashable

__all__ = ["Ledger"]


class Ledger:
    """``max_usd``, what has been spent of it, and the worst cases reserved by running attempts."""

    def __init__(self, max_usd: float, spent_usd: float = 0.0) -> None:
        self.max_usd = max_usd
        self.spent_usd = spent_usd
        self._reserved: dict[Hashable, float] = {}
        self.version = 0
        """Bumped by every ``settle``: a run waiting for room looks again when it has changed."""

    @property
    def reserved_usd(self) -> float:
        """The worst cases of the attempts running now."""
        return sum(self._reserved.values(), 0.0)

    def left(self) -> float:
        """What may still be committed: the budget less spending and reservations."""
        return self.max_usd - self.spent_usd - self.reserved_usd

    def left_at_best(self) -> float:
        """What would be left if every running attempt settled at no cost: the most any attempt
        can ever be given (an attempt whose worst case exceeds it can never start)."""
        return self.max_usd - self.spent_usd

    def reserve(self, key: Hashable, usd: float) -> None:
        """Hold ``usd`` for the attempt ``key`` until it is settled."""
        self._reserved[key] = usd

    def settle(self, key: Hashable, cost_usd: float) -> None:
        """The attempt ``key`` ended and cost ``cost_usd``: release its reservation, spend that."""
        self._reserved.pop(key, None)
        self.spent_usd += cost_usd
        self.version += 1
