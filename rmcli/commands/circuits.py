"""``rmgr circuits`` and ``rmgr circuits reset``: each provider's circuit breaker, and closing them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import cyclopts

__all__ = ["app", "reset", "show"]

PolicyOption = Annotated[Path | None, cyclopts.Parameter(name=["--policy", "-p"])]
Flag = Annotated[bool, cyclopts.Parameter(negative="")]
"""A flag: off unless given (no ``--no-`` form)."""

app = cyclopts.App(name="circuits")
"""``rmgr circuits``: its help is ``show``'s docstring; ``reset`` is its one subcommand."""


@app.default
def show(*, policy: PolicyOption = None, json: Flag = False) -> int:
    """Show each provider's circuit breaker; reset closes them.

    Each circuit is closed, open until when, or half-open (its probe sent), with the failures
    in a row counted against the threshold that opens it. Every process sharing the state sees
    the same circuits (the fleet's, with RECURSIVEMANAGER_STATE=redis://...). A circuit opens
    after [breaker] failure_threshold failures in a row, and lets one probe through cooldown_s
    after it opened: those are read from --policy (without it, the default policy's: 3
    failures, 30 s). Exit code 0, or 2 when the state or the policy cannot be read.

    Example: rmgr circuits --json; then rmgr circuits reset --all

    Parameters
    ----------
    policy
        The policy whose [breaker] times the cooldown, and whose providers are listed too.
    json
        Print ``[{provider, state, consecutiveFailures, openedAt, probeAt, probeInS,
        probeStartedAt, cooldownS}]`` (state: closed, open or half_open; times ISO 8601 UTC;
        probeAt: when an open circuit lets its probe through).
    """
    from rmcli import api, interrupt
    from rmcli.circuit_view import circuit_json, describe, duration, failures_text
    from rmcli.output import emit_json
    from rmcli.tables import print_table

    board = interrupt.run(lambda: api.circuit_board(policy))
    now = time.time()
    cooldown_s = board.breaker.cooldown_s
    if json:
        emit_json([circuit_json(c, cooldown_s, now) for c in board.circuits])
        return 0
    threshold = board.breaker.failure_threshold
    rows = [[c.provider, describe(c, cooldown_s, now), failures_text(c, threshold)] for c in board.circuits]
    source = f"by {policy}" if policy is not None else "by the default policy; --policy FILE for yours"
    notes = [
        f"A circuit opens after {threshold} failures in a row; it is probed {duration(cooldown_s)} "
        f"later ({source})."
    ]
    if any(c.state != "closed" for c in board.circuits):
        notes.append("rmgr circuits reset NAME... (or --all) closes circuits at once.")
    print_table("Circuit breakers", ["Provider", "Circuit", "Failures in a row"], rows, notes=notes)
    return 0


@app.command(name="reset")
def reset(
    *names: str,
    all_: Annotated[bool, cyclopts.Parameter(name="--all", negative="")] = False,
    policy: PolicyOption = None,
    json: Flag = False,
) -> int:
    """Close circuit breakers: the next request is sent at once.

    For every process sharing the state. Name the providers, or give --all. Exit code 0 (also
    when there was nothing to reset, which it says), 2 for an unknown provider (the known ones
    are listed) or neither names nor --all.

    Example: rmgr circuits reset glm-direct

    Parameters
    ----------
    names
        The providers whose circuits to close.
    all_
        Close every circuit.
    policy
        Also accept the providers a policy file defines.
    json
        Print ``{reset: [{provider, state, consecutiveFailures}]}``: the circuits that were open,
        half-open or counting failures, as they were.
    """
    from rmcli import api, interrupt
    from rmcli.errors import ConfigError
    from rmcli.output import emit_json

    if bool(names) == all_:
        raise ConfigError(
            "circuits reset: name the providers whose circuits to close, or give --all — not both"
            if all_
            else "circuits reset: no provider named — name them (rmgr circuits lists them) or give --all"
        )
    chosen = None if all_ else list(names)
    was = interrupt.run(lambda: api.reset_circuits(chosen, policy=policy))
    if json:
        rows = [
            {"provider": c.provider, "state": c.state, "consecutiveFailures": c.consecutive_failures}
            for c in was
        ]
        emit_json({"reset": rows})
        return 0
    if not was:
        print("Nothing to reset: " + ("every circuit is closed." if all_ else "those circuits are closed."))
        return 0
    for c in was:
        counted = f"{c.consecutive_failures} failure{'' if c.consecutive_failures == 1 else 's'} in a row"
        if c.state == "closed":
            print(f"Cleared {c.provider}'s count of {counted} (its circuit was closed).")
        else:
            print(f"Closed the circuit of {c.provider} (it was {c.state.replace('_', '-')}, {counted}).")
    return 0
