"""How long to wait before retrying the same target.

Full jitter (a uniform draw between zero and an exponentially growing cap) spreads the retries of
many clients over time instead of synchronising them; a provider's Retry-After is a floor that is
never cut short.
"""

from __future__ import annotations

__all__ = ["backoff_s"]


def backoff_s(
    retry_no: int,
    *,
    initial_s: float,
    max_s: float,
    jitter: float,
    retry_after_s: float | None = None,
) -> float:
    """The wait before retry number ``retry_no`` (1 for the first retry).

    ``jitter`` is a draw from [0, 1), supplied by the caller so that the function stays pure.
    The result is ``jitter * min(max_s, initial_s * 2 ** (retry_no - 1))``, raised to
    ``retry_after_s`` when the provider asked for a longer wait.
    """
    cap = min(max_s, initial_s * 2.0 ** min(retry_no - 1, 60))
    wait = jitter * cap
    if retry_after_s is not None and retry_after_s > wait:
        return retry_after_s
    return wait
