"""The ``httpx.AsyncClient`` provider calls go through, with the cost httpx adds per reply cut.

``rmcli.api`` makes it with ``rmcli.h11_transport.H11Transport`` as its own transport (``own``).
``ProviderClient`` is httpx's client, with one difference: its cookie jar looks at a reply only
when the reply sets a cookie. httpx hands every reply to the standard library's cookie jar
through two adapters (a ``urllib.request.Request`` rebuilt from the URL, an ``email.message``
of every header) whether or not it carries ``Set-Cookie``: about 35 µs of CPU per request, a
tenth of a routed call, for replies that in practice never set one. A reply that does is
handled exactly as httpx does, so a provider's cookies still come back on its next request.
"""

from __future__ import annotations

from typing import Any

import httpx

__all__ = ["ProviderClient"]


class _Cookies(httpx.Cookies):
    """httpx's cookies, extracted only from replies that set one."""

    def extract_cookies(self, response: httpx.Response) -> None:
        headers = response.headers
        if "set-cookie" in headers or "set-cookie2" in headers:
            super().extract_cookies(response)


class ProviderClient(httpx.AsyncClient):
    """``httpx.AsyncClient`` (same arguments, same behaviour) whose cookies are read from a reply
    only when it sets one (module docstring), and whose default transport may be ``own``.

    ``own`` differs from httpx's ``transport`` argument in what it keeps: given a ``transport``,
    httpx ignores the proxy variables (``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``,
    ``NO_PROXY``); given ``own``, the client is made as without one (httpx mounts its own
    transport through each proxy, from ``verify`` and ``limits``) and ``own`` then carries every
    request that goes through no proxy, a host ``NO_PROXY`` exempts included."""

    def __init__(self, *, own: httpx.AsyncBaseTransport | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if own is not None:
            self._transport = own
        self._jar = _Cookies(kwargs.get("cookies"))

    @property
    def cookies(self) -> httpx.Cookies:
        """The cookies sent with every request, as httpx's."""
        return self._jar

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        self._jar = _Cookies(cookies)
