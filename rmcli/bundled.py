"""The policies shipped inside the package (``rmcli/policies/*.toml``), found by name.

They are read with ``importlib.resources``, so they are found wherever the package is installed
(a wheel, a zip, an editable checkout) without assuming a folder on disk. ``policies/`` at the top
of the repository is a symbolic link to the same folder, so that ``--policy
policies/cost-first.toml`` keeps working from a checkout.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable

__all__ = ["BundledPolicy", "bundled_policies", "find_bundled"]

_SUFFIX = ".toml"


@dataclass(frozen=True)
class BundledPolicy:
    """One bundled policy: its name (the file's stem), where it lives, and its description."""

    name: str
    resource: Traversable

    @property
    def file(self) -> str:
        """The file's name, e.g. ``cost-first.toml``."""
        return self.resource.name

    @property
    def source(self) -> str:
        """Where the policy was read from, for messages: the installed file's location."""
        return str(self.resource)

    def text(self) -> str:
        """The policy's TOML text."""
        return self.resource.read_text(encoding="utf-8")

    def description(self) -> str:
        """One line saying what the policy does: the first line of the file's leading comment,
        without the ``name:`` it starts with (``# cost-first: the cheapest provider ...`` gives
        ``The cheapest provider ...``); empty when the file starts with no comment."""
        for line in self.text().splitlines():
            stripped = line.strip()
            if not stripped:
                continue
            if not stripped.startswith("#"):
                break
            words = stripped.lstrip("#").strip()
            label, sep, rest = words.partition(":")
            line = rest.strip() if sep and label.strip() == self.name else words
            return line[:1].upper() + line[1:]
        return ""


def bundled_policies() -> list[BundledPolicy]:
    """Every bundled policy, sorted by name."""
    folder = files("rmcli").joinpath("policies")
    found = [
        BundledPolicy(name=item.name.removesuffix(_SUFFIX), resource=item)
        for item in folder.iterdir()
        if item.name.endswith(_SUFFIX) and item.is_file()
    ]
    return sorted(found, key=lambda policy: policy.name)


def find_bundled(name: str) -> BundledPolicy | None:
    """The bundled policy called ``name`` (``cost-first`` or ``cost-first.toml``), if any."""
    stem = name.removesuffix(_SUFFIX)
    return next((policy for policy in bundled_policies() if policy.name == stem), None)
