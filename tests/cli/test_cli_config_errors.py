"""Bad input and configuration, as a user meets them: exit code 2, one clear message on stderr that
names the file, variable or option at fault, nothing on stdout, never a Python traceback.

No request may be sent for any of these: the providers' URLs point at closed ports, so a run
that got as far as the network would end with exit code 1 instead of 2.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field

import pytest

from tests.cli.helpers import KEY_VARIABLES, URL_VARIABLES, Cli, closed_url


def offline_env() -> dict[str, str]:
    """Every built-in provider configured (URL and key), every URL on a closed port."""
    env = {var: closed_url(f"/{name}") for name, var in URL_VARIABLES.items()}
    env.update({var: f"test-key-{n}" for n, var in enumerate(KEY_VARIABLES)})
    env.update(AI_PROVIDER="aiceo-gateway", AI_FALLBACK_PROVIDER="glm-direct")
    return env


@dataclass(frozen=True)
class Case:
    """One mistake: the command, what is set (or unset) around it, and what the message must say."""

    args: tuple[str, ...]
    says: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    unset: tuple[str, ...] = ()
    files: Mapping[str, str] = field(default_factory=dict)


TYPO = """\
version = 1
[route]
targets = ["glm-direct"]
[limits]
deadlin_s = 10
"""

CASES: dict[str, Case] = {
    "policy key typo": Case(
        ("ask", "hi", "--policy", "typo.toml"),
        ("typo.toml:5: $.limits.deadlin_s: ", "deadline_s"),
        files={"typo.toml": TYPO},
    ),
    "policy wrong type": Case(
        ("ask", "hi", "--policy", "type.toml"),
        ("type.toml:3: $.limits.deadline_s: ", "ten"),
        files={"type.toml": 'version = 1\n[limits]\ndeadline_s = "ten"\n'},
    ),
    "policy negative timeout": Case(
        ("ask", "hi", "--policy", "negative.toml"),
        ("negative.toml:4: $.limits.attempt_timeout_s: ", "-5"),
        files={"negative.toml": "version = 1\n\n[limits]\nattempt_timeout_s = -5\n"},
    ),
    "policy unknown provider": Case(
        ("ask", "hi", "--policy", "unknown.toml"),
        ("unknown.toml:3: $.route.targets[1]: ", "nope-provider"),
        files={"unknown.toml": 'version = 1\n[route]\ntargets = ["glm-direct", "nope-provider"]\n'},
    ),
    "policy provider URL not http": Case(
        ("ask", "hi", "--policy", "ftp.toml"),
        ("ftp.toml:4: $.providers.x.url: ", "ftp://127.0.0.1/x", "http"),
        files={
            "ftp.toml": 'version = 1\n[providers.x]\nkind = "openai"\nurl = "ftp://127.0.0.1/x"\n'
            'model = "m"\n[route]\ntargets = ["x"]\n'
        },
    ),
    "policy provider key unset": Case(
        ("ask", "hi", "--policy", "local.toml"),
        ("provider local", "X_LOCAL_KEY"),
        files={
            "local.toml": 'version = 1\n[providers.local]\nkind = "openai"\n'
            'url = "http://127.0.0.1:9/v1/chat/completions"\nmodel = "m"\nkey_env = "X_LOCAL_KEY"\n'
            '[route]\ntargets = ["local"]\n'
        },
    ),
    "policy file missing": Case(("ask", "hi", "--policy", "missing.toml"), ("missing.toml", "no such")),
    "policy file is a folder": Case(
        ("ask", "hi", "--policy", "folder.toml"), ("folder.toml", "folder"), files={"folder.toml/": ""}
    ),
    "policy file not UTF-8": Case(
        ("policy", "explain", "latin1.toml"), ("latin1.toml", "UTF-8"), files={"latin1.toml": "\udce9"}
    ),
    "key variable unset": Case(
        ("ask", "hi", "--provider", "glm-direct"), ("glm-direct", "GLM_API_KEY"), unset=("GLM_API_KEY",)
    ),
    "fallback's key variable unset": Case(
        ("ask", "hi"), ("glm-direct", "GLM_API_KEY"), env={"GLM_API_KEY": ""}
    ),
    "key with a line break": Case(
        ("ask", "hi", "--provider", "glm-direct"),
        ("GLM_API_KEY",),
        env={"GLM_API_KEY": "test-key\ninjected"},
    ),
    "key not ASCII": Case(
        ("ask", "hi", "--provider", "openai-direct"), ("OPENAI_API_KEY",), env={"OPENAI_API_KEY": "ключ"}
    ),
    "URL variable not http": Case(
        ("ask", "hi", "--provider", "glm-direct"), ("GLM_API_URL", "ftp://x"), env={"GLM_API_URL": "ftp://x"}
    ),
    "URL variable unset": Case(
        ("ask", "hi", "--provider", "anthropic-direct"), ("ANTHROPIC_API_URL",), unset=("ANTHROPIC_API_URL",)
    ),
    "URL port out of range": Case(
        ("ask", "hi", "--provider", "glm-direct"),
        ("GLM_API_URL", "Port out of range"),
        env={"GLM_API_URL": "http://127.0.0.1:99999/v1/chat/completions"},
    ),
    "URL not parseable": Case(
        ("ask", "hi", "--provider", "glm-direct"), ("GLM_API_URL", "IPv6"), env={"GLM_API_URL": "http://[::1"}
    ),
    "AI_PROVIDER unknown": Case(("ask", "hi"), ("'nope'", "AI_PROVIDER"), env={"AI_PROVIDER": "nope"}),
    "AI_FALLBACK_PROVIDER unknown": Case(
        ("ask", "hi"), ("'nope'", "AI_FALLBACK_PROVIDER"), env={"AI_FALLBACK_PROVIDER": "nope"}
    ),
    "--provider unknown": Case(("ask", "hi", "--provider", "nope"), ("'nope'", "--provider")),
    "--max-tokens 0": Case(("ask", "hi", "--max-tokens", "0"), ("--max-tokens",)),
    "--max-tokens not a number": Case(("ask", "hi", "--max-tokens", "many"), ("--max-tokens",)),
    "--temperature 5": Case(("ask", "hi", "--temperature", "5"), ("--temperature",)),
    "--temperature nan": Case(("ask", "hi", "--temperature", "nan"), ("--temperature",)),
    "empty prompt": Case(("ask", "  "), ("prompt",)),
    "unknown option": Case(("ask", "hi", "--bogus"), ("--bogus",)),
    "unknown command": Case(("frobnicate",), ("frobnicate",)),
    "usage --since yesterday": Case(("usage", "--since", "yesterday"), ("--since", "yesterday")),
    "health --timeout 0": Case(("health", "--timeout", "0"), ("--timeout",)),
    "health --timeout nan": Case(("health", "--timeout", "nan"), ("--timeout",)),
    "health unknown provider": Case(("health", "nope"), ("'nope'",)),
    "providers with a bad policy": Case(
        ("providers", "--policy", "typo.toml"),
        ("typo.toml:5: $.limits.deadlin_s",),
        files={"typo.toml": TYPO},
    ),
    "state folder is a file": Case(
        ("usage",), ("not-a-folder", "RECURSIVEMANAGER_HOME"), files={"not-a-folder": "x"}
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_bad_input_exits_2_with_a_clear_message(cli: Cli, case: Case) -> None:
    """Exit code 2, the culprit named on stderr, stdout empty, no traceback, no key shown."""
    for name, text in case.files.items():
        path = cli.home / name
        if name.endswith("/"):
            path.mkdir()
        else:
            path.write_bytes(text.encode("utf-8", "surrogateescape"))
    env = {**offline_env(), **case.env}
    for name in case.unset:
        del env[name]
    if "not-a-folder" in case.files:
        env["RECURSIVEMANAGER_HOME"] = str(cli.home / "not-a-folder")

    done = cli.run(*case.args, env=env)

    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    for fragment in case.says:
        assert fragment in done.stderr
    for var in KEY_VARIABLES:
        if env.get(var, "").strip():
            assert env[var].strip() not in done.stderr


@pytest.mark.parametrize("args", [("ask", "hello"), ("usage",), ("usage", "--json")])
def test_a_corrupt_state_database_is_reported_and_left_alone(cli: Cli, args: tuple[str, ...]) -> None:
    """Random bytes in ``$RECURSIVEMANAGER_HOME/state.db``: exit 2, the message names the file,
    and the file is byte for byte what it was (nothing repaired, truncated or added beside it)."""
    database = cli.home / "state.db"
    garbage = random.Random(7).randbytes(8192)
    database.write_bytes(garbage)
    before = sorted(p.name for p in cli.home.iterdir())

    done = cli.run(*args, env=offline_env())

    assert done.returncode == 2
    assert done.stdout == ""
    assert str(database) in done.stderr
    assert "Traceback" not in done.stderr
    assert database.read_bytes() == garbage
    assert sorted(p.name for p in cli.home.iterdir()) == before


def test_a_config_error_sends_no_request_and_writes_no_state(cli: Cli) -> None:
    """A missing key is found before anything happens: no state database is created."""
    env = offline_env()
    del env["GLM_API_KEY"]
    done = cli.run("ask", "hi", env=env)
    assert done.returncode == 2
    assert not (cli.home / "state.db").exists()
