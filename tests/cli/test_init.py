"""``rmgr init [DIR]``: a commented ``.env`` template (keys empty, mode 0600) and a
``policy.toml`` that ``rmgr policy validate`` accepts; an existing file is never overwritten."""

from __future__ import annotations

import stat
from pathlib import Path

from rmcli.commands.init import ENV_TEMPLATE
from tests.cli.helpers import KEY_VARIABLES, Cli


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int, int]]:
    """Each file of ``folder``: its bytes, modification time (ns) and mode."""
    return {
        p.name: (p.read_bytes(), p.stat().st_mtime_ns, stat.S_IMODE(p.stat().st_mode))
        for p in sorted(folder.iterdir())
    }


def test_an_empty_folder_gets_both_files_and_the_policy_validates(cli: Cli) -> None:
    """In a folder that does not exist yet: it is created, ``.env`` (mode 0600) and
    ``policy.toml`` are written and named, exit 0; ``rmgr policy validate`` accepts the policy."""
    done = cli.run("init", "project")
    assert done.returncode == 0, done.stderr
    folder = cli.home / "project"
    assert sorted(p.name for p in folder.iterdir()) == [".env", "policy.toml"]
    assert f"wrote {Path('project') / '.env'}" in done.stdout
    assert f"wrote {Path('project') / 'policy.toml'}" in done.stdout
    assert stat.S_IMODE((folder / ".env").stat().st_mode) == 0o600
    checked = cli.run("policy", "validate", "project/policy.toml")
    assert checked.returncode == 0, checked.stderr
    assert "valid" in checked.stdout


def test_the_env_template_lists_the_seeds_variables_with_empty_keys(cli: Cli) -> None:
    """Every provider's key variable is present and empty, the routing variables are set, and
    every section is explained by comments; no value looks like a key."""
    assert cli.run("init").returncode == 0
    lines = (cli.home / ".env").read_text(encoding="utf-8").splitlines()
    values = dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))
    for key in KEY_VARIABLES:
        assert values[key] == "", key
    assert values["AI_PROVIDER"] == "aiceo-gateway"
    assert values["AI_FALLBACK_PROVIDER"] == "glm-direct"
    for name in ("AICEO_GATEWAY_URL", "AICEO_GATEWAY_MODEL", "GLM_MODEL", "ANALYSIS_CACHE_TTL_MS"):
        assert name in values, name
    for name in ("GLM_API_URL", "ANTHROPIC_API_URL", "OPENAI_API_URL"):
        assert any(line.startswith(f"# {name}=https://") for line in lines), name
    assert sum(line.startswith("#") for line in lines) >= 10


def test_the_template_is_read_as_no_key_set(cli: Cli) -> None:
    """rmgr reads the written ``.env``: ``providers`` reports every key unset, and ``ask``
    stops with exit 2 naming the missing key, sending nothing."""
    assert cli.run("init").returncode == 0
    code, providers = cli.json("providers", "--json")
    assert code == 0
    assert [p["keySet"] for p in providers] == [False] * 4
    assert providers[0]["url"] == "http://localhost:4000/api/glm/submit"
    asked = cli.run("ask", "hello")
    assert asked.returncode == 2
    assert asked.stderr.startswith("error: ") and "AICEO_GATEWAY_API_KEY" in asked.stderr


def test_a_second_init_changes_nothing_and_says_so(cli: Cli) -> None:
    """Run again in the same folder: both files are kept byte for byte with their mtimes, the
    output says each was kept and that nothing changed, exit 0."""
    assert cli.run("init", "p").returncode == 0
    before = _snapshot(cli.home / "p")
    again = cli.run("init", "p")
    assert again.returncode == 0, again.stderr
    assert _snapshot(cli.home / "p") == before
    assert "kept p/.env" in again.stdout and "kept p/policy.toml" in again.stdout
    assert "Nothing changed." in again.stdout
    assert "wrote" not in again.stdout


def test_an_existing_file_is_kept_and_the_missing_one_written(cli: Cli) -> None:
    """A folder with its own ``.env``: that file is left alone, ``policy.toml`` is written, and
    the output says which was kept and which written."""
    (cli.home / ".env").write_text("GLM_API_KEY=mine\n", encoding="utf-8")
    done = cli.run("init")
    assert done.returncode == 0, done.stderr
    assert (cli.home / ".env").read_text(encoding="utf-8") == "GLM_API_KEY=mine\n"
    assert (cli.home / "policy.toml").is_file()
    assert "kept .env" in done.stdout and "wrote policy.toml" in done.stdout


def test_a_file_where_the_folder_should_be_is_bad_input(cli: Cli) -> None:
    """DIR naming a file: exit 2, one ``error:`` line, nothing written."""
    (cli.home / "taken").write_text("x", encoding="utf-8")
    done = cli.run("init", "taken")
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and "not a folder" in done.stderr
    assert len(done.stderr.splitlines()) == 1


def test_the_template_holds_no_key_value() -> None:
    """Every ``*_API_KEY=`` line of the template ends at the ``=``."""
    for line in ENV_TEMPLATE.splitlines():
        if "_API_KEY=" in line:
            assert line.endswith("="), line
