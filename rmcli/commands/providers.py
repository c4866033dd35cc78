"""``rmgr providers`` and ``rmgr health``: what is configured, and whether it answers."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import cyclopts

from rmcli import api, interrupt
from rmcli.config import ConfigError, load_policy
from rmcli.environment import api_key, key_problem, load_environment
from rmcli.output import emit_json, err
from rmcli.tables import print_table
from rmcore.breaker import CircuitState
from rmcore.health import HealthReport
from rmcore.policy import resolve_providers
from rmcore.providers import ProviderSpec, builtin_providers
from rmcore.quota import format_moment

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
    """List the configured providers: kind, model, URL, prices and whether a key is set (never the key).

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
    rows = [
        [
            s.name,
            s.kind.value,
            s.model,
            s.url or "-",
            _key_state(env, s),
            f"${s.input_usd_per_mtok:g} / ${s.output_usd_per_mtok:g}",
            "; ".join(_problems(env, s)) or "ok",
        ]
        for s in specs.values()
    ]
    print_table(
        "Providers",
        ["Provider", "Kind", "Model", "URL", "API key", "Price in/out per M tokens", "Config"],
        rows,
    )
    return 0


def _health_json(report: HealthReport, circuits: dict[str, CircuitState] | None) -> dict[str, Any]:
    ms = report.response_time_ms
    entry: dict[str, Any] = {
        "provider": report.provider,
        "healthy": report.healthy,
        "reason": report.reason,
        "responseTimeMs": None if ms is None else round(ms, 1),
    }
    if circuits is not None:
        entry["circuit"] = circuits.get(report.provider, CircuitState(provider=report.provider)).state
    return entry


def _stored_circuits() -> dict[str, CircuitState] | None:
    """Every provider's circuit breaker as the state keeps it (the fleet's, with
    RECURSIVEMANAGER_STATE=redis://...), by provider; None when there is no state to read (no
    SQLite database yet: a health check creates none) or it cannot be read, which a WARNING
    line says: the providers' health does not depend on it."""
    try:
        circuits = interrupt.run(api.stored_circuits)
    except ConfigError as exc:
        err(f"WARNING: circuit breakers not shown: {exc}")
        return None
    return None if circuits is None else {c.provider: c for c in circuits}


def _circuit_text(circuit: CircuitState) -> str:
    failures = circuit.consecutive_failures
    count = f"{failures} failure{'' if failures == 1 else 's'} in a row"
    if circuit.state == "open" and circuit.opened_at is not None:
        return f"open since {format_moment(circuit.opened_at)} ({count})"
    if circuit.state == "half_open" and circuit.probe_started_at is not None:
        return f"half-open: probe sent {format_moment(circuit.probe_started_at)}"
    return f"closed ({count})" if failures else "closed"


def health(*names: str, policy: PolicyOption = None, json: bool = False, timeout: float = 5.0) -> int:
    """Check providers concurrently: healthy or not, why, and the response time.

    The AICEO gateway is asked its status URL; the OpenAI and Anthropic kinds their /models
    endpoint, with the configured key (so bad credentials show as unhealthy: auth). With rmgr
    --verbose every request and response is traced on stderr (keys redacted). Exit code 0
    when every provider checked is healthy, 1 when any is not, 2 for bad input.

    When there is a state to read (RECURSIVEMANAGER_STATE=redis://..., shared by a fleet, or the
    state folder's database), each provider's circuit breaker is shown too, as every process
    using that state sees it (JSON: ``circuit``, one of closed, open, half_open); it does not
    change the exit code.

    Parameters
    ----------
    names
        Providers to check (default: all configured).
    policy
        Also check the providers a policy file defines or overrides.
    json
        Print ``[{provider, healthy, reason, responseTimeMs}]`` (and ``circuit`` when there
        is a state to read).
    timeout
        Seconds to wait for each provider.
    """
    if not (math.isfinite(timeout) and timeout > 0):
        raise ConfigError(f"--timeout must be a positive number of seconds (got {timeout})")
    reports = interrupt.run(lambda: api.health(list(names) or None, policy=policy, timeout_s=timeout))
    circuits = _stored_circuits()
    if json:
        emit_json([_health_json(r, circuits) for r in reports])
    else:
        headers = ["Provider", "Status", "Response Time", "Reason"]
        rows = [
            [
                r.provider,
                "✓ healthy" if r.healthy else "✗ unhealthy",
                "N/A" if r.response_time_ms is None else f"{r.response_time_ms:.0f}ms",
                r.reason or "",
            ]
            for r in reports
        ]
        if circuits is not None:
            headers.append("Circuit")
            for row, r in zip(rows, reports, strict=True):
                row.append(_circuit_text(circuits.get(r.provider, CircuitState(provider=r.provider))))
        print_table("Provider Health Status", headers, rows)
    return 0 if all(r.healthy for r in reports) else 1
