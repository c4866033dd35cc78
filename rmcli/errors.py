"""The shell's one error for bad input or configuration (exit code 2)."""

from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(Exception):
    """Bad input or configuration: the message says what and where; the exit code is 2."""
