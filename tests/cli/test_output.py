"""What reaches the terminal: model and provider text never controls it, keys never show."""

from __future__ import annotations

import pytest

from rmcli.output import add_secret, err, safe_text


def test_err_escapes_terminal_controls_a_provider_quoted(capsys: pytest.CaptureFixture[str]) -> None:
    """A provider's error message with an escape sequence is shown, not obeyed."""
    err("WARNING: Primary provider (x) failed: HTTP 500: \x1b[2J\x1b[31mgotcha")
    line = capsys.readouterr().err
    assert "\x1b" not in line and "\\x1b[2J" in line


def test_safe_text_redacts_remembered_keys_and_keeps_newlines() -> None:
    add_secret("sk-output-test-0123456789")
    assert safe_text("key sk-output-test-0123456789\nnext") == "key <redacted>\nnext"
