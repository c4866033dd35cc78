"""The words for a provider that could not be reached (``rmcli.connection_errors``), from the
exceptions httpx raises: each names the address and the setting, says what to try, fits one line
and never shows a credential of the URL."""

from __future__ import annotations

import socket
import ssl

import httpx
import pytest

from rmcli.connection_errors import (
    Phase,
    closed_before_response,
    connect_failed,
    handshake_too_slow,
    out_of_time,
)
from rmcore.providers import ProviderKind, ProviderSpec

URL = "http://127.0.0.1:8080/v1/chat/completions"


def spec(url: str = URL, url_from: str = "OPENAI_API_URL") -> ProviderSpec:
    return ProviderSpec(name="openai-direct", kind=ProviderKind.OPENAI, url=url, model="m", url_from=url_from)


def wrapped(cause: BaseException, outer: str = "All connection attempts failed") -> httpx.ConnectError:
    """A ``ConnectError`` over ``cause``, chained as httpx and anyio chain them."""
    middle = OSError(outer)
    middle.__cause__ = cause
    error = httpx.ConnectError(outer)
    error.__cause__ = middle
    return error


def cert_error() -> ssl.SSLCertVerificationError:
    error = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    error.verify_message = "self-signed certificate"
    error.reason = "CERTIFICATE_VERIFY_FAILED"
    return error


def ssl_error(cls: type[ssl.SSLError], reason: str) -> ssl.SSLError:
    error = cls(1, f"[SSL: {reason}] {reason.lower()}")
    error.reason = reason
    return error


@pytest.mark.parametrize(
    ("cause", "expected"),
    [
        (
            ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 8080)"),
            f"connection refused to 127.0.0.1:8080 (OPENAI_API_URL={URL}) — is the server running?",
        ),
        (
            socket.gaierror(-2, "Name or service not known"),
            f"cannot resolve host 127.0.0.1 (OPENAI_API_URL={URL}) — check the host name in the URL",
        ),
        (
            OSError(113, "No route to host"),
            f"cannot connect to 127.0.0.1:8080: no route to host (OPENAI_API_URL={URL}) "
            "— is the host reachable?",
        ),
    ],
)
def test_a_failed_connection_names_the_address_and_the_setting(cause: OSError, expected: str) -> None:
    """Refused, unresolvable or unreachable: the message says so, names ``host:port`` and the
    variable with its URL, and what to try."""
    assert connect_failed(wrapped(cause), spec()) == expected


def test_tls_failures_say_what_to_try() -> None:
    """A handshake answered by plain HTTP says the server does not speak TLS (use http://); an
    untrusted certificate says why and how to trust it; a close during the handshake asks
    whether it speaks TLS; another TLS failure gives OpenSSL's reason."""
    https = spec("https://127.0.0.1:8443/v1/chat/completions")
    setting = "OPENAI_API_URL=https://127.0.0.1:8443/v1/chat/completions"
    for reason in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG"):
        assert connect_failed(wrapped(ssl_error(ssl.SSLError, reason)), https) == (
            f"the server at 127.0.0.1:8443 does not speak TLS ({setting}) — use http:// instead?"
        )
    assert connect_failed(wrapped(cert_error()), https) == (
        f"the TLS certificate of 127.0.0.1:8443 is not trusted: self-signed certificate ({setting}) "
        "— check the host name in the URL, or point SSL_CERT_FILE at the CA that signed it"
    )
    eof = connect_failed(wrapped(ssl_error(ssl.SSLEOFError, "UNEXPECTED_EOF_WHILE_READING")), https)
    assert eof.startswith("the server at 127.0.0.1:8443 closed the connection during the TLS handshake")
    assert eof.endswith("— does it speak TLS? use http:// instead?")
    other = connect_failed(wrapped(ssl_error(ssl.SSLError, "TLSV1_ALERT_PROTOCOL_VERSION")), https)
    assert other == f"TLS handshake with 127.0.0.1:8443 failed: TLSV1_ALERT_PROTOCOL_VERSION ({setting})"


def test_a_connection_closed_before_a_response_names_where() -> None:
    """A reset before the response names the address and the setting; to an http:// URL it adds
    that a TLS-only server does this too."""
    reset = httpx.ReadError("")
    reset.__cause__ = ConnectionResetError(104, "Connection reset by peer")
    assert closed_before_response(reset, spec()) == (
        f"connection to 127.0.0.1:8080 closed before a response: connection reset by peer "
        f"(OPENAI_API_URL={URL}) — if the server speaks TLS, use https://"
    )
    https = spec("https://127.0.0.1:8443/v1/chat/completions")
    closed = closed_before_response(httpx.RemoteProtocolError("Server disconnected"), https)
    assert closed == (
        "connection to 127.0.0.1:8443 closed before a response: Server disconnected "
        "(OPENAI_API_URL=https://127.0.0.1:8443/v1/chat/completions)"
    )


def test_running_out_of_time_says_what_was_awaited() -> None:
    """An attempt out of time while connecting asks whether the host is reachable; in the TLS
    handshake, whether the server speaks TLS; otherwise the caller's words stand."""
    assert out_of_time(Phase.CONNECTING, spec(), 2.0, "no answer") == (
        f"no connection to 127.0.0.1:8080 within 2 s (OPENAI_API_URL={URL}) — is the host reachable?"
    )
    assert out_of_time(Phase.HANDSHAKE, spec(), 4.0, "no answer") == handshake_too_slow(spec(), 4.0)
    assert "does the server speak TLS?" in handshake_too_slow(spec(), 4.0)
    for phase in (Phase.REUSED, Phase.CONNECTED):
        assert out_of_time(phase, spec(), 2.0, "no answer") == "no answer"


def test_a_policy_url_is_named_by_its_key_and_credentials_stay_hidden() -> None:
    """A URL the policy gives is named ``providers.NAME.url``; a password or a key in the URL
    never reaches the message."""
    leaky = spec(
        "http://me:hunter2@127.0.0.1:8080/v1/chat/completions?api_key=hunter2", "providers.local.url"
    )
    message = connect_failed(wrapped(ConnectionRefusedError(111, "refused")), leaky)
    assert "hunter2" not in message
    assert message == (
        "connection refused to 127.0.0.1:8080 (providers.local.url=http://me:<redacted>@127.0.0.1:8080"
        "/v1/chat/completions?api_key=<redacted>) — is the server running?"
    )
    assert "\n" not in message
