"""The ``httpx.AsyncClient`` provider calls go through, and its way around httpx's objects.

``rmcli.api`` makes it with ``rmcli.http1.Http1Transport`` as its own transport (``own``). Two
differences from httpx's client:

- **The direct way** (``direct``, ``send_direct``): a request that no proxy, event hook or cookie
  concerns is sent on ``own`` as httpx would send it (Host, the client's default headers under the
  request's own, Content-Length), without building httpx's request and response objects, which
  cost about 0.2 ms of CPU per call: more than the rest of a routed call's HTTP. Everything else
  (a proxy, ``--verbose``'s event hooks, a provider that set a cookie, an embedder's transport)
  goes through httpx's API as before. The head of each distinct request (method, URL, headers,
  the client's default headers) is built and checked once, then reused with its Content-Length.
- **Cookies** are looked at only when a reply sets one. httpx hands every reply to the standard
  library's cookie jar through two adapters (a ``urllib.request.Request`` rebuilt from the URL, an
  ``email.message`` of every header) whether or not it carries ``Set-Cookie``: about 35 µs of CPU
  per request, for replies that in practice never set one. A reply that does is handled exactly as
  httpx does (on either way), so a provider's cookies still come back on its next request.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

from rmcli.http1 import Endpoint, Http1Transport, Reply, Trace, head_lines, parse_endpoint

__all__ = ["ProviderClient"]

_HEADS_KEPT = 256
"""How many request heads (all but Content-Length) the direct way keeps built and checked: a
route's few providers send the same head on every call."""


class _Cookies(httpx.Cookies):
    """httpx's cookies, extracted only from replies that set one."""

    def extract_cookies(self, response: httpx.Response) -> None:
        headers = response.headers
        if "set-cookie" in headers or "set-cookie2" in headers:
            super().extract_cookies(response)


class ProviderClient(httpx.AsyncClient):
    """``httpx.AsyncClient`` (same arguments, same behaviour) with a direct way to ``own`` and
    cookies read from a reply only when it sets one (module docstring).

    ``own`` differs from httpx's ``transport`` argument in what it keeps: given a ``transport``,
    httpx ignores the proxy variables (``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``,
    ``NO_PROXY``); given ``own``, the client is made as without one (httpx mounts its own
    transport through each proxy, from ``verify`` and ``limits``) and ``own`` then carries every
    request that goes through no proxy, a host ``NO_PROXY`` exempts included."""

    def __init__(self, *, own: httpx.AsyncBaseTransport | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._own = own if isinstance(own, Http1Transport) else None
        if own is not None:
            self._transport = own
        self._jar = _Cookies(kwargs.get("cookies"))
        self._routes: dict[str, Endpoint | None] = {}
        self._heads: dict[tuple[object, ...], bytes] = {}

    @property
    def cookies(self) -> httpx.Cookies:
        """The cookies sent with every request, as httpx's."""
        return self._jar

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        self._jar = _Cookies(cookies)

    def direct(self, url: str) -> Endpoint | None:
        """``url``'s endpoint when a request to it may go the direct way (``own`` carries it: no
        proxy; no event hook to call; no cookie to send), else None: httpx's API then."""
        if self._own is None or self._jar or self.event_hooks["request"] or self.event_hooks["response"]:
            return None
        try:
            return self._routes[url]
        except KeyError:
            ours = self._transport_for_url(httpx.URL(url)) is self._own
            endpoint = self._routes[url] = parse_endpoint(url) if ours else None
            return endpoint

    async def send_direct(
        self,
        method: str,
        endpoint: Endpoint,
        headers: Sequence[tuple[str, str]],
        body: bytes,
        trace: Trace | None = None,
        tls_timeout_s: float | None = None,
        within_s: float | None = None,
    ) -> Reply:
        """Send a request the direct way (``direct`` said it may go) and return its reply with the
        head read. What is sent is what httpx would send: Host, the client's default headers but
        those ``headers`` override, ``headers``, Content-Length. A TLS handshake is given at most
        ``tls_timeout_s`` (``rmcli.http1.TLSHandshakeTimeout`` past it); with ``within_s``, the
        whole request, its body read included, is given that long (``rmcli.http1.BodyIdle``)."""
        assert self._own is not None
        defaults = tuple(self.headers.raw)
        key = (method, endpoint.url, tuple(headers), defaults)
        head = self._heads.get(key)
        if head is None:
            ours = [(name.encode("ascii"), value.encode("ascii")) for name, value in headers]
            names = {name.lower() for name, _ in ours}
            sent = [(b"Host", endpoint.host)]
            sent += [(name, value) for name, value in defaults if name.lower() not in names]
            sent += ours
            head = head_lines(method.encode("ascii"), endpoint.target, sent)
            if len(self._heads) >= _HEADS_KEPT:
                self._heads.clear()
            self._heads[key] = head
        data = b"".join((head, b"Content-Length: %d\r\n\r\n" % len(body), body))
        head_only = method == "HEAD"
        reply = await self._own.send(
            endpoint, data, head_only=head_only, trace=trace, tls_timeout_s=tls_timeout_s, within_s=within_s
        )
        if any(name.lower() in (b"set-cookie", b"set-cookie2") for name, _ in reply.raw_headers):
            request = httpx.Request(method, endpoint.url, headers=headers)
            response = httpx.Response(reply.status_code, headers=reply.raw_headers, request=request)
            self._jar.extract_cookies(response)
        return reply
