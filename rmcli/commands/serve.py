"""``rmgr serve``: the policy's routes as an OpenAI- and Anthropic-compatible HTTP API (``rmcli.serve``)."""

from __future__ import annotations

import copy
import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Annotated

import cyclopts

from rmcli import api
from rmcli.environment import load_environment
from rmcli.errors import ConfigError
from rmcli.output import err
from rmcli.serve.clients import Limits
from rmcli.serve.keys import KEYS_VARIABLE, ClientKey, ClientKeysError, is_loopback, parse_keys
from rmcli.serve.metrics import METRICS_DIR_VARIABLE

__all__ = ["serve"]

_POLICY_VARIABLE = "_RMGR_SERVE_POLICY"
_NO_AUTH_VARIABLE = "_RMGR_SERVE_NO_AUTH"
_LOG_CONTENT_VARIABLE = "_RMGR_SERVE_LOG_CONTENT"
"""How ``--workers N`` hands the options to its worker processes (they inherit the environment)."""


def serve(
    *,
    policy: Annotated[Path | None, cyclopts.Parameter(name=["--policy", "-p"])] = None,
    host: str = "127.0.0.1",
    port: int = 4000,
    workers: int = 1,
    no_auth: bool = False,
    log_content: bool = False,
    grace: float = 30.0,
) -> int:
    """Serve the policy's routes as OpenAI and Anthropic HTTP APIs.

    POST /v1/chat/completions (streamed or not, tools, images, response_format), POST
    /v1/messages (Anthropic's shape), GET /v1/models (default and each [routes.NAME]: a
    request's model picks the route), GET /metrics (Prometheus) and GET /health. Clients
    send one of the comma-separated keys in RMGR_SERVE_KEYS (Authorization: Bearer KEY or
    x-api-key: KEY); a client's key is never sent upstream, logged or stored. NAME=KEY names a
    key: the access log shows the name, and the policy's [serve.keys.NAME] max_usd_per_day and
    rpm limit it across every worker and host sharing the state (429 past them). Fail-over is
    invisible to a stream until its first text; a stream cut after that ends with an error
    event, never a finish_reason. Every attempt is accounted (rmgr usage). SIGTERM or Ctrl-C
    stops accepting, lets requests in flight finish, then exits 0; exit 2 for bad configuration.

    Example: RMGR_SERVE_KEYS=sk-local-1 rmgr serve --policy cost-first --port 4000

    Parameters
    ----------
    policy
        A policy (file or bundled name): routes, limits, retries, budget.
    host
        The address to listen on.
    port
        The port to listen on.
    workers
        Worker processes sharing the port and the state.
    no_auth
        Ask clients for no key; only with a loopback host (127.0.0.1, ::1, localhost).
    log_content
        Show each request's last message and its answer (their first 500 characters) in the
        access log on stderr; without it the log holds no content.
    grace
        Seconds that requests in flight may take to finish after SIGTERM or Ctrl-C; those still
        running then are cancelled (their attempts accounted as cancelled).
    """
    env = load_environment()
    try:
        keys = parse_keys(env)
    except ClientKeysError as exc:
        raise ConfigError(str(exc)) from None
    if no_auth and not is_loopback(host):
        raise ConfigError(
            f"--no-auth is allowed on a loopback host only (127.0.0.1, ::1, localhost), not {host}"
        )
    if not keys and not no_auth:
        raise ConfigError(
            f"{KEYS_VARIABLE} is not set: give the clients' keys, comma-separated "
            f"(e.g. {KEYS_VARIABLE}=sk-local-1), or --no-auth on a loopback host"
        )
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1 (got {workers})")
    if not (grace >= 0 and grace < float("inf")):
        raise ConfigError(f"--grace must be a number of seconds, 0 or more (got {grace})")
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port must be between 0 and 65535 (got {port})")
    # A bad policy, a missing provider key, a limit on a key that is not there: exit 2 before listening.
    setup = api.Client(policy, command="serve").setup
    keys = () if no_auth else keys
    Limits(setup.policy, keys)
    if no_auth and setup.policy.serve.keys:
        err("WARNING: --no-auth: no client presents a key, so [serve.keys.*] limit no one")
    err(f"INFO: serving models {', '.join(setup.route_names())} on http://{_authority(host, port)}/v1")
    return _run(policy, host, port, workers, keys, log_content, grace)


def _run(
    policy: Path | None,
    host: str,
    port: int,
    workers: int,
    keys: tuple[ClientKey, ...],
    log_content: bool,
    grace: float,
) -> int:
    """Serve until SIGTERM or SIGINT; uvicorn stops accepting, lets requests finish, closes."""
    import uvicorn

    from rmcli.serve.app import Gateway, Settings

    # uvicorn handles the signals itself, then raises the one it caught again once it is done:
    # that must end the process with 0 (a graceful stop), not rmgr's "interrupted".
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: None)
    logging = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    logging["handlers"]["access"]["stream"] = "ext://sys.stderr"  # stdout holds results, never logs
    options = {
        "host": host,
        "port": port,
        "http": "httptools",
        "lifespan": "on",
        "log_level": "info",
        "log_config": logging,
        "access_log": False,  # the gateway writes its own line: model, key name, provider, cost
        "timeout_graceful_shutdown": grace,
    }
    if workers == 1:
        settings = Settings(policy=policy, keys=keys, log_content=log_content)
        config = uvicorn.Config(Gateway(settings), **options)  # type: ignore[arg-type]
        try:
            uvicorn.Server(config).run()
        except SystemExit as stop:  # uvicorn said why above: the state, or the address in use
            if stop.code == uvicorn.config.STARTUP_FAILURE:
                raise ConfigError(f"rmgr serve could not start on {_authority(host, port)}") from None
            raise
        return 0
    os.environ[_POLICY_VARIABLE] = "" if policy is None else str(policy)
    os.environ[_NO_AUTH_VARIABLE] = "" if keys else "1"
    os.environ[_LOG_CONTENT_VARIABLE] = "1" if log_content else ""
    figures = tempfile.mkdtemp(prefix="rmgr-serve-metrics-")  # each worker's counts, for /metrics
    os.environ[METRICS_DIR_VARIABLE] = figures
    try:
        uvicorn.run("rmcli.commands.serve:worker_app", factory=True, workers=workers, **options)  # type: ignore[arg-type]
    finally:
        shutil.rmtree(figures, ignore_errors=True)
    return 0


def worker_app() -> object:
    """The application of one of ``--workers N``'s processes, from the options ``_run`` left in
    the environment (the keys are read again from ``RMGR_SERVE_KEYS``)."""
    from rmcli.serve.app import Gateway, Settings

    policy = os.environ.get(_POLICY_VARIABLE) or None
    keys = () if os.environ.get(_NO_AUTH_VARIABLE) else parse_keys(load_environment())
    settings = Settings(
        policy=None if policy is None else Path(policy),
        keys=keys,
        log_content=bool(os.environ.get(_LOG_CONTENT_VARIABLE)),
    )
    return Gateway(settings)


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
