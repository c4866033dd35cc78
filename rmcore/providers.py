"""Provider descriptions: the four built-ins of the seed, read from an environment mapping.

Pure: the environment is an argument (a ``Mapping[str, str]``), never the process environment
itself. The shell passes the real environment merged over ``.env``.

Deliberate difference from the seed: the seed's default endpoints for the direct providers are the
vendors' public hosts. This tool never defaults to a real provider's host (nothing here may reach
one unasked); ``GLM_API_URL``, ``ANTHROPIC_API_URL`` and ``OPENAI_API_URL`` must be set for those
providers to be used, and their absence is reported with the variable's name. The AICEO gateway's
default (``http://localhost:4000/api/glm/submit``) is the seed's, as it is local.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from urllib.parse import urlsplit, urlunsplit

from rmcore.base import Base
from rmcore.capabilities import ALL_CAPABILITIES, Capability

__all__ = [
    "BUILTIN_NAMES",
    "KIND_SUPPORTS",
    "ProviderKind",
    "ProviderSpec",
    "builtin_providers",
    "check_url",
    "health_url",
]


class ProviderKind(enum.StrEnum):
    """The wire format a provider speaks."""

    OPENAI = "openai"
    """OpenAI chat completions: OpenAI itself, GLM, vLLM, Ollama, llama.cpp, OpenRouter, ..."""
    ANTHROPIC = "anthropic"
    """Anthropic's Messages API."""
    AICEO = "aiceo"
    """The AICEO gateway: a queueing proxy with its own envelope."""


KIND_SUPPORTS: Mapping[ProviderKind, frozenset[Capability]] = MappingProxyType(
    {
        ProviderKind.OPENAI: ALL_CAPABILITIES,
        ProviderKind.ANTHROPIC: ALL_CAPABILITIES,
        ProviderKind.AICEO: frozenset(),
    }
)
"""What each wire format carries beyond text: the AICEO gateway's envelope holds one prompt and
one system text, nothing else."""


class ProviderSpec(Base, frozen=True):
    """Everything needed to call one provider, except its key (only the variable's name).

    ``problems`` lists what makes the provider unusable as configured (an unset or invalid URL);
    it is reported when, and only when, a route needs the provider.
    """

    name: str
    kind: ProviderKind
    url: str
    model: str
    key_env: str | None = None
    key_required: bool = True
    input_usd_per_mtok: float = 0.0
    output_usd_per_mtok: float = 0.0
    aiceo_provider: str = "glm"
    aiceo_priority: str = "high"
    max_concurrency: int | None = None
    """The most requests this process sends it at once (the AICEO gateway serves about 8)."""
    requests_per_window: int | None = None
    """The provider's request quota per ``quota_window_s``, across every process sharing the
    state (the AICEO gateway allows 2400 per 5 hours); None for no quota."""
    tokens_per_window: int | None = None
    """The provider's token quota per ``quota_window_s``; None for no quota."""
    quota_window_s: float | None = None
    """The length of the quota windows in seconds (3600 when a quota is set without it)."""
    builtin: bool = False
    problems: tuple[str, ...] = ()
    url_from: str = ""
    """Where ``url`` was set, named for a person to change it: the environment variable
    (``OPENAI_API_URL``) or the policy key (``providers.NAME.url``); error messages show it."""
    supports: frozenset[Capability] | None = None
    """What it carries beyond text, as a policy declared it (``[providers.NAME] supports``);
    None for what its kind carries (:data:`KIND_SUPPORTS`). Read :attr:`carries`."""

    @property
    def carries(self) -> frozenset[Capability]:
        """What it carries beyond text: as declared, else what its kind carries. A request that
        needs more is never sent to it (``rmcore.capabilities``)."""
        return KIND_SUPPORTS[self.kind] if self.supports is None else self.supports


BUILTIN_NAMES: tuple[str, ...] = ("aiceo-gateway", "glm-direct", "anthropic-direct", "openai-direct")

_AICEO_DEFAULT_URL = "http://localhost:4000/api/glm/submit"


def check_url(url: str) -> str | None:
    """Why ``url`` cannot be a provider endpoint, or ``None`` when it can (absolute http(s))."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # reading it checks the port: a number from 0 to 65535
    except ValueError as exc:
        return f"URL {url!r} is not a valid URL ({exc})"
    if parts.scheme not in ("http", "https"):
        return f"URL {url!r} is not http:// or https://"
    if not parts.hostname:
        return f"URL {url!r} has no host"
    return None


def _url(env: Mapping[str, str], var: str, default: str | None) -> tuple[str, tuple[str, ...]]:
    value = env.get(var, "").strip() or default
    if value is None:
        return "", (f"{var} is not set: set it to the provider's full chat endpoint URL",)
    problem = check_url(value)
    return value, ((f"{var}: {problem}",) if problem else ())


def builtin_providers(env: Mapping[str, str]) -> dict[str, ProviderSpec]:
    """The four built-in providers, configured from ``env`` with the seed's variable names."""

    def get(var: str, default: str) -> str:
        return env.get(var, "").strip() or default

    aiceo_url, aiceo_problems = _url(env, "AICEO_GATEWAY_URL", _AICEO_DEFAULT_URL)
    glm_url, glm_problems = _url(env, "GLM_API_URL", None)
    anthropic_url, anthropic_problems = _url(env, "ANTHROPIC_API_URL", None)
    openai_url, openai_problems = _url(env, "OPENAI_API_URL", None)
    return {
        "aiceo-gateway": ProviderSpec(
            name="aiceo-gateway",
            kind=ProviderKind.AICEO,
            url=aiceo_url,
            model=get("AICEO_GATEWAY_MODEL", "glm-4.7"),
            key_env="AICEO_GATEWAY_API_KEY",
            input_usd_per_mtok=0.5,
            output_usd_per_mtok=0.5,
            aiceo_provider=get("AICEO_GATEWAY_PROVIDER", "glm"),
            aiceo_priority=get("AICEO_GATEWAY_PRIORITY", "high"),
            max_concurrency=8,
            requests_per_window=2400,
            quota_window_s=18_000.0,
            builtin=True,
            problems=aiceo_problems,
            url_from="AICEO_GATEWAY_URL",
        ),
        "glm-direct": ProviderSpec(
            name="glm-direct",
            kind=ProviderKind.OPENAI,
            url=glm_url,
            model=get("GLM_MODEL", "glm-4.7"),
            key_env="GLM_API_KEY",
            input_usd_per_mtok=0.5,
            output_usd_per_mtok=0.5,
            builtin=True,
            problems=glm_problems,
            url_from="GLM_API_URL",
        ),
        "anthropic-direct": ProviderSpec(
            name="anthropic-direct",
            kind=ProviderKind.ANTHROPIC,
            url=anthropic_url,
            model=get("ANTHROPIC_MODEL", "claude-sonnet-4-5"),
            key_env="ANTHROPIC_API_KEY",
            input_usd_per_mtok=3.0,
            output_usd_per_mtok=15.0,
            builtin=True,
            problems=anthropic_problems,
            url_from="ANTHROPIC_API_URL",
        ),
        "openai-direct": ProviderSpec(
            name="openai-direct",
            kind=ProviderKind.OPENAI,
            url=openai_url,
            model=get("OPENAI_MODEL", "gpt-4-turbo"),
            key_env="OPENAI_API_KEY",
            input_usd_per_mtok=10.0,
            output_usd_per_mtok=30.0,
            builtin=True,
            problems=openai_problems,
            url_from="OPENAI_API_URL",
        ),
    }


def health_url(spec: ProviderSpec) -> str:
    """Where a health check asks: the AICEO gateway's ``/status`` beside ``/submit``; for the
    OpenAI and Anthropic kinds, the ``/models`` endpoint beside the chat endpoint."""
    parts = urlsplit(spec.url)
    path = parts.path.rstrip("/")
    if spec.kind is ProviderKind.AICEO:
        head, _, last = path.rpartition("/")
        path = f"{head}/status" if last == "submit" else f"{path}/status"
    elif spec.kind is ProviderKind.OPENAI and path.endswith("/chat/completions"):
        path = path[: -len("/chat/completions")] + "/models"
    else:
        path = path.rpartition("/")[0] + "/models"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))
