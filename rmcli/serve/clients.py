"""The limits of the gateway's named client keys (``[serve.keys.NAME] max_usd_per_day, rpm``),
kept in the state that every worker and host shares.

A request of a limited key is counted against its ``rpm`` at the door, and let in only while
some of its day's budget is left (``api.Client.admit``); every attempt of its run then reserves
its worst case against that budget, as the policy's ``[budget]`` does. A refusal is a 429 in the
request's API shape, with ``Retry-After`` until the window resets.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from rmcli import api
from rmcli.errors import ConfigError
from rmcli.serve.keys import KEYS_VARIABLE, ClientKey
from rmcore.errors import ErrorKind
from rmcore.events import RunOutcome
from rmcore.policy import Policy
from rmcore.quota import Cap, Period, Resource, client_caps, client_refusal_message, window_of

__all__ = ["ClientLimited", "Limits"]


class ClientLimited(Exception):
    """A client key's request may not go (429): ``reason`` is ``rpm`` or ``budget``."""

    def __init__(self, key_name: str, reason: str, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.key_name, self.reason, self.message = key_name, reason, message
        self.retry_after_s = retry_after_s


class Limits:
    """The caps of each named client key that ``[serve.keys.NAME]`` limits."""

    def __init__(self, policy: Policy, keys: Sequence[ClientKey]) -> None:
        """``ConfigError`` when the policy limits a name none of ``keys`` has (unless there are no
        keys at all: ``--no-auth``, where no request carries a key to limit)."""
        named = {key.name for key in keys if key.name is not None}
        unknown = [name for name in policy.serve.keys if name not in named]
        if unknown and keys:
            raise ConfigError(
                f"the policy limits client key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
                f"([serve.keys.NAME]), but {KEYS_VARIABLE} names no such key: give it as NAME=KEY"
            )
        self._caps: Mapping[str, tuple[Cap, ...]] = {name: client_caps(policy, name) for name in named}
        self._spending: Mapping[str, tuple[Cap, ...]] = {
            name: tuple(cap for cap in caps if cap.resource is Resource.USD)
            for name, caps in self._caps.items()
        }

    def spending(self, key: ClientKey | None) -> tuple[Cap, ...]:
        """The caps every attempt of ``key``'s requests is charged against (its day's budget)."""
        return () if key is None or key.name is None else self._spending.get(key.name, ())

    async def admit(self, client: api.Client, key: ClientKey | None) -> None:
        """Count one request of ``key``; ``ClientLimited`` when its ``rpm`` or budget is spent."""
        if key is None or key.name is None or not (caps := self._caps.get(key.name)):
            return
        refusal = await client.admit(caps)
        if refusal is not None:
            reason = "rpm" if refusal.resource is Resource.REQUESTS else "budget"
            message = client_refusal_message(key.name, refusal)
            raise ClientLimited(key.name, reason, message, max(0.0, refusal.resets_at - time.time()))

    def check_outcome(self, key: ClientKey | None, outcome: RunOutcome) -> None:
        """``ClientLimited`` when the run failed because an attempt did not fit ``key``'s budget
        (a request the door let in while others of the same key were spending)."""
        spending = self.spending(key)
        if not spending or outcome.completion is not None or outcome.error is None:
            return
        if outcome.error.kind != ErrorKind.BUDGET:
            return
        keys = [cap.key for cap in spending]
        messages = [outcome.error.message, *(a.message or "" for a in outcome.attempts)]
        if any(cap_key in message for cap_key in keys for message in messages):
            assert key is not None and key.name is not None
            _, resets_at = window_of(Period.DAY, None, time.time())
            message = f"client key {key.name}'s daily budget cannot take this request: "
            message += outcome.error.message
            raise ClientLimited(key.name, "budget", message, max(0.0, resets_at - time.time()))
