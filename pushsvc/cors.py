"""Cross-origin rules for ``PUSHSVC_CORS_ORIGINS``: which headers a response gets, and preflight answers.

No Flask here (the blueprint applies the headers). The rules:

* ``*`` lets any page read public answers, without credentials: a browser then sends no cookie with
  a cross-origin ``EventSource`` or ``fetch``, so a token cookie can never be used from a foreign page.
* An origin that is listed by name gets itself echoed back, with ``Access-Control-Allow-Credentials``:
  only a page of that origin can subscribe with the user's cookie or read a ticket.
* Any other origin gets no ``Access-Control-Allow-Origin`` at all; the browser then hides the answer.
"""

from __future__ import annotations

from collections.abc import Iterable

ANY_ORIGIN = "*"
ALLOW_METHODS = "GET, POST, OPTIONS"
# What pushsvc's own callers send: tokens, JSON bodies, and the resume header of a hand-built client.
ALLOW_HEADERS = "Authorization, Content-Type, Last-Event-ID, Cache-Control, X-Requested-With"
# Browsers cap this anyway (Chromium at 2 h); ten minutes saves a preflight per publish.
MAX_AGE_SECONDS = 600


class Cors:
    """The CORS policy of one application."""

    def __init__(self, origins: Iterable[str]):
        listed = [o.strip().rstrip("/") for o in origins if o.strip()]
        self.any = ANY_ORIGIN in listed
        self.named = frozenset(o.lower() for o in listed if o != ANY_ORIGIN)

    def allows(self, origin: str | None) -> bool:
        return origin is not None and (self.any or origin.lower() in self.named)

    def headers(self, origin: str | None) -> dict[str, str]:
        """The headers every answer to a request from ``origin`` gets (``origin`` is the header value)."""
        headers: dict[str, str] = {}
        if self.named:
            # The answer depends on the Origin header: a shared cache must not serve one origin's to another.
            headers["Vary"] = "Origin"
        if origin is None:
            return headers
        if origin.lower() in self.named:
            headers["Access-Control-Allow-Origin"] = origin
            headers["Access-Control-Allow-Credentials"] = "true"
        elif self.any:
            # Never "*" together with credentials: browsers refuse it, and it would hand every site the
            # user's cookie-authenticated stream if they did not.
            headers["Access-Control-Allow-Origin"] = ANY_ORIGIN
        return headers

    def preflight(self, origin: str | None) -> dict[str, str]:
        """Headers for an ``OPTIONS`` preflight; without ``Access-Control-Allow-Origin`` when refused."""
        headers = self.headers(origin)
        if "Access-Control-Allow-Origin" in headers:
            headers["Access-Control-Allow-Methods"] = ALLOW_METHODS
            headers["Access-Control-Allow-Headers"] = ALLOW_HEADERS
            headers["Access-Control-Max-Age"] = str(MAX_AGE_SECONDS)
        return headers
