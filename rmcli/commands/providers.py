"""``rmgr providers`` and ``rmgr health``: what is configured, and whether it answers."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Annotated, Any

import cyclopts

from rmcli import api, figures, interrupt
from rmcli.circuit_view import duration, health_note
from rmcli.config import ConfigError, load_policy
from rmcli.environment import api_key, key_problem, load_environment
from rmcli.output import emit_json, err
from rmcli.tables import Column, fits, print_table
from rmcore.breaker import CircuitState
from rmcore.health import HealthReport
from rmcore.policy import resolve_providers
from rmcore.providers import ProviderSpec, builtin_providers

__all__ = ["health", "providers"]

PolicyOption = Annotated[Path | None, cyclopts.Parameter(name=["--policy", "-p"])]


def _configured(policy: Path | None) -> tuple[dict[str, str], dict[str, ProviderSpec]]:
    env = load_environment()
    specs = builtin_providers(env)
    if policy is not None:
        specs = resolve_providers(load_policy(policy, env), specs)
    return env, specs


def _key_state(env: dict[str, str], spec: ProviderSpec) -> str:
    if spec.key_env is None:
        return "not needed"
    if api_key(env, spec.key_env) is not None:
        return f"set ({spec.key_env})"
    return f"unset ({spec.key_env})" if spec.key_required else f"unset, optional ({spec.key_env})"


def _problems(env: dict[str, str], spec: ProviderSpec) -> list[str]:
    key = key_problem(env, spec.key_env)
    return [*spec.problems, *([key] if key else [])]


def providers(*, policy: PolicyOption = None, json: bool = False) -> int:
    """List the configured providers (never their keys).

    Each with its kind, model, URL, prices, whether its key is set, and what is wrong with its
    configuration. Exit code 0, 2 for a policy that cannot be read.

    Example: rmgr providers --policy policy.toml

    Parameters
    ----------
    policy
        Also show the providers a policy file defines or overrides.
    json
        Print a JSON array instead of a table.
    """
    env, specs = _configured(policy)
    if json:
        emit_json(
            [
                {
                    "name": s.name,
                    "kind": s.kind.value,
                    "model": s.model,
                    "url": s.url or None,
                    "keyEnv": s.key_env,
                    "keySet": api_key(env, s.key_env) is not None,
                    "keyRequired": s.key_required,
                    "inputUsdPerMtok": s.input_usd_per_mtok,
                    "outputUsdPerMtok": s.output_usd_per_mtok,
                    "builtin": s.builtin,
                    "problems": _problems(env, s),
                }
                for s in specs.values()
            ]
        )
        return 0
    _print_providers(env, list(specs.values()))
    return 0


def _price(spec: ProviderSpec) -> str:
    return f"{figures.price(spec.input_usd_per_mtok)} / {figures.price(spec.output_usd_per_mtok)}"


def _print_providers(env: dict[str, str], specs: list[ProviderSpec]) -> None:
    """One row per provider and a column per fact when the terminal is wide enough (or the
    output is a pipe); else three columns of two lines each (name and kind; model and price; URL
    and key), the configuration problems listed under the table; on a terminal too narrow for
    that, a card per provider."""
    headers = ["Provider", "Kind", "Model", "URL", "API key", "Price/M in/out", "Config"]
    rows = [
        [
            s.name,
            s.kind.value,
            s.model,
            s.url or "-",
            _key_state(env, s),
            _price(s),
            "; ".join(_problems(env, s)) or "ok",
        ]
        for s in specs
    ]
    compact_headers = [
        Column("Provider\nkind", wrap=False),
        Column("Model\nprice/M in/out", wrap=False),
        Column("URL\nAPI key", url=True),
    ]
    compact = [
        [
            f"{s.name}\n{s.kind.value}",
            f"{s.model}\n{_price(s)}",
            f"{s.url or '-'}\nkey {_key_state(env, s)}",
        ]
        for s in specs
    ]
    if fits(headers, rows) or not fits(compact_headers, compact):
        print_table("Providers", headers, rows)
        return
    notes = [f"{s.name}: {problem}" for s in specs for problem in _problems(env, s)]
    print_table(
        "Providers",
        compact_headers,
        compact,
        notes=[*(["Configuration problems:"] if notes else []), *notes],
        lines=True,
    )


def _health_json(report: HealthReport, board: api.CircuitBoard | None, now: float) -> dict[str, Any]:
    ms = report.response_time_ms
    entry: dict[str, Any] = {
        "provider": report.provider,
        "healthy": report.healthy,
        "reason": report.reason,
        "responseTimeMs": None if ms is None else round(ms, 1),
    }
    if board is not None:
        circuit = _circuit_of(board, report.provider)
        entry["circuit"] = circuit.state
        entry["circuitNote"] = health_note(circuit, board.breaker.cooldown_s, now, healthy=report.healthy)
    return entry


def _circuit_board(policy: Path | None) -> api.CircuitBoard | None:
    """Every provider's circuit breaker as the state keeps it (the fleet's, with
    RECURSIVEMANAGER_STATE=redis://...), with the policy's cooldown; None when there is no state
    to read (no SQLite database yet: a health check creates none) or it cannot be read, which a
    WARNING line says: the providers' health does not depend on it."""
    try:
        board = interrupt.run(lambda: api.circuit_board(policy))
    except ConfigError as exc:
        err(f"WARNING: circuit breakers not shown: {exc}")
        return None
    return board if board.stored else None


def _circuit_of(board: api.CircuitBoard, provider: str) -> CircuitState:
    return next((c for c in board.circuits if c.provider == provider), CircuitState(provider=provider))


def health(*names: str, policy: PolicyOption = None, json: bool = False, timeout: float = 5.0) -> int:
    """Check providers concurrently: up or not, why, how fast.

    The AICEO gateway is asked its status URL; the OpenAI and Anthropic kinds their /models
    endpoint, with the configured key (so bad credentials show as unhealthy: auth). Exit code 0
    when every provider checked is healthy, 1 when any is not, 2 for bad input.

    Every provider is checked, whatever its circuit breaker says; when there is a state to read
    (RECURSIVEMANAGER_STATE=redis://..., shared by a fleet, or the state folder's database), a
    circuit that is not closed is told in the reason, beside the check's verdict: "circuit open
    until 14:03:12 (in 25 s), after 2 failures in a row", timed by the cooldown of --policy (or
    the default policy's). A provider that answers while its circuit is open is shown how to use
    it at once (rmgr circuits reset NAME). The circuit does not change the exit code.

    Example: rmgr health glm-direct openai-direct --timeout 3

    Parameters
    ----------
    names
        Providers to check (default: all configured).
    policy
        Also check the providers a policy file defines or overrides; its [breaker] cooldown
        times the circuits.
    json
        Print ``[{provider, healthy, reason, responseTimeMs}]`` (reason: the check's, null when
        healthy), and when there is a state to read ``circuit`` (closed, open or half_open)
        and ``circuitNote`` (what the text adds to the reason, null when closed).
    timeout
        Seconds to wait for each provider.
    """
    if not (math.isfinite(timeout) and timeout > 0):
        raise ConfigError(f"--timeout must be a positive number of seconds (got {timeout})")
    reports = interrupt.run(lambda: api.health(list(names) or None, policy=policy, timeout_s=timeout))
    board = _circuit_board(policy)
    now = time.time()
    if json:
        emit_json([_health_json(r, board, now) for r in reports])
        return 0 if all(r.healthy for r in reports) else 1
    notes: dict[str, str | None] = {}
    if board is not None:
        cooldown_s = board.breaker.cooldown_s
        for r in reports:
            circuit = _circuit_of(board, r.provider)
            notes[r.provider] = health_note(circuit, cooldown_s, now, healthy=r.healthy)
    rows = [
        [
            r.provider,
            "✓ healthy" if r.healthy else "✗ unhealthy",
            "N/A" if r.response_time_ms is None else figures.duration(r.response_time_ms),
            "; ".join(text for text in (r.reason, notes.get(r.provider)) if text),
        ]
        for r in reports
    ]
    footer: list[str] = []
    if board is not None and any(notes.values()):
        source = f"by {policy}" if policy is not None else "by the default policy; --policy FILE for yours"
        footer.append(f"Circuits are probed {duration(board.breaker.cooldown_s)} after they open ({source}).")
    headers = ["Provider", "Status", "Response Time", "Reason"]
    print_table("Provider Health Status", headers, rows, notes=footer)
    return 0 if all(r.healthy for r in reports) else 1
