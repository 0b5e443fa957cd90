"""Who may subscribe to what, and who may publish: subscriber JWTs, one-time tickets, the publisher token.

No Flask here: the blueprint reads the credentials from the request and hands them to a :class:`Gate`.

* A subscriber proves itself with an HS256 JWT signed with ``PUSHSVC_JWT_SECRET`` (PyJWT verifies it;
  no other algorithm, and never ``none``). ``sub`` is the client id it may use, or ``*`` for any; the
  ``groups`` claim lists every group it may join; ``exp`` is honoured when present.
* A ticket stands in for that token in a URL: it is random, good for one subscribe within
  :data:`TICKET_TTL_SECONDS`, and lives in a :class:`~pushsvc.tickets.TicketStore` (with Redis any
  worker can take it, once).
* The publisher token guards publishing and the admin calls; it is compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jwt

from .config import Settings
from .tickets import TicketStore

log = logging.getLogger(__name__)

ALGORITHMS = ["HS256"]
ANY_CLIENT = "*"
TICKET_TTL_SECONDS = 30
# 256 bits: a ticket cannot be guessed within its 30 seconds, however many requests an attacker sends.
TICKET_BYTES = 32
# RFC 7518 3.2: an HS256 key shorter than the hash is weaker than the algorithm promises.
MIN_SECRET_BYTES = 32

#: ``authorize(client_id, groups) -> bool``: an application's own decision (its session, its login).
Authorizer = Callable[[str, Sequence[str]], Any]


class AuthError(Exception):
    """A request without the right to do what it asks: ``status`` 401 (who are you?) or 403 (not this);
    404 for a ticket asked of a server that has no subscriber tokens.

    The message is safe to show: it never contains a token, a ticket or the secret.
    """

    def __init__(self, message: str, *, status: int = 401, challenge: str | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        #: The RFC 6750 ``error`` of a ``WWW-Authenticate: Bearer`` challenge; none when nothing was sent.
        self.challenge = challenge

    def to_json(self) -> dict[str, Any]:
        return {"error": self.message}


@dataclass(frozen=True, slots=True)
class Grant:
    """What a verified token or ticket allows: one client id (or ``*``) and a set of groups."""

    sub: str
    groups: frozenset[str]
    expires: float | None = None

    def check(self, client_id: str, groups: Sequence[str]) -> None:
        """Raise a 403 :class:`AuthError` unless this grant covers ``client_id`` in all of ``groups``."""
        if self.sub != ANY_CLIENT and not hmac.compare_digest(self.sub.encode(), client_id.encode()):
            raise AuthError("this token is for another client id", status=403)
        missing = [g for g in groups if g not in self.groups]
        if missing:
            raise AuthError(f"this token does not allow group {missing[0]!r}", status=403)


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a subscribe request carried: a JWT or a ticket (the blueprint picks the first one given)."""

    token: str | None = None
    ticket: str | None = None


class Gate:
    """The auth decisions of one application: built from its settings and where its tickets live."""

    def __init__(self, settings: Settings, tickets: TicketStore, *,
                 authorizers: Sequence[Authorizer] = ()):
        self.secret = settings.jwt_secret
        self.publish_token = settings.publish_token
        self.tickets = tickets
        self.authorizers = authorizers
        if self.secret is not None and len(self.secret.encode()) < MIN_SECRET_BYTES:
            log.warning("PUSHSVC_JWT_SECRET is shorter than %d bytes; use a longer random secret",
                        MIN_SECRET_BYTES)

    @property
    def tokens_required(self) -> bool:
        return self.secret is not None

    # -- subscribers --------------------------------------------------------------------------------

    def subscriber(self, client_id: str, groups: Sequence[str], credentials: Credentials) -> Grant | None:
        """Check a subscribe; return the grant it used (``None`` when no secret is set)."""
        if self.secret is None:
            return None
        if credentials.token is not None:
            grant = self.verify(credentials.token)
        elif credentials.ticket is not None:
            grant = self.redeem(credentials.ticket)
        else:
            raise AuthError("a subscriber token is required: Authorization: Bearer, the pushsvc_token "
                            "cookie, ?token= or ?ticket=")
        grant.check(client_id, groups)
        return grant

    def verify(self, token: str) -> Grant:
        """Verify a subscriber JWT and return what it allows; a 401 :class:`AuthError` if it is bad."""
        if self.secret is None:
            raise AuthError("subscriber tokens are not enabled on this server (PUSHSVC_JWT_SECRET)",
                            status=404)
        try:
            claims = jwt.decode(token, self.secret, algorithms=ALGORITHMS,
                                options={"require": ["sub"]})
        except jwt.ExpiredSignatureError:
            raise AuthError("the token has expired", challenge="invalid_token") from None
        except jwt.InvalidAlgorithmError:
            raise AuthError("the token must be signed with HS256", challenge="invalid_token") from None
        except jwt.InvalidSignatureError:
            raise AuthError("the token's signature does not verify", challenge="invalid_token") from None
        except jwt.InvalidTokenError:
            # PyJWT's own messages can quote parts of the token; say only that it is bad.
            raise AuthError("the token is malformed or not valid", challenge="invalid_token") from None
        return _grant(claims)

    # -- tickets ------------------------------------------------------------------------------------

    def issue(self, token: str | None) -> dict[str, Any]:
        """Trade a valid subscriber JWT for a one-time ticket: ``{"ticket", "expires_in"}``."""
        if token is None:
            raise AuthError("a ticket needs a subscriber token in Authorization: Bearer")
        grant = self.verify(token)
        ttl = float(TICKET_TTL_SECONDS)
        if grant.expires is not None:
            # A ticket never outlives the token it was bought with.
            ttl = min(ttl, grant.expires - time.time())
            if ttl <= 0:
                raise AuthError("the token has expired", challenge="invalid_token")
        ticket = secrets.token_urlsafe(TICKET_BYTES)
        value = json.dumps({"sub": grant.sub, "groups": sorted(grant.groups)})
        self.tickets.put(_ticket_key(ticket), value, ttl)
        return {"ticket": ticket, "expires_in": max(1, int(ttl))}

    def redeem(self, ticket: str) -> Grant:
        """Take a ticket (it is gone afterwards, on every worker) and return what it allows."""
        value = self.tickets.take(_ticket_key(ticket))
        if value is None:
            raise AuthError("the ticket is unknown, expired or already used", challenge="invalid_token")
        data = json.loads(value)
        return Grant(data["sub"], frozenset(data["groups"]))

    # -- the application's own hook -----------------------------------------------------------------

    def application(self, client_id: str, groups: Sequence[str]) -> None:
        """Ask every ``@push.authorize`` function; any refusal is a 403."""
        for authorize in self.authorizers:
            if not authorize(client_id, tuple(groups)):
                raise AuthError("the application does not allow this subscription", status=403)

    # -- publishers ---------------------------------------------------------------------------------

    def publisher(self, authorization: str | None) -> None:
        """Check ``Authorization: Bearer <PUSHSVC_PUBLISH_TOKEN>`` for publish and admin calls."""
        if self.publish_token is None:
            return
        given = bearer(authorization)
        if given is None:
            raise AuthError("this call needs the publisher token in Authorization: Bearer")
        if not hmac.compare_digest(given.encode("utf-8", "surrogatepass"), self.publish_token.encode()):
            raise AuthError("the publisher token is not valid", status=403)


def bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, else ``None``."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def _grant(claims: Mapping[str, Any]) -> Grant:
    sub = claims.get("sub")
    groups = claims.get("groups", [])
    if not isinstance(sub, str) or not sub:
        raise AuthError("the token's sub claim must be a client id or *", challenge="invalid_token")
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise AuthError("the token's groups claim must be a list of group names", challenge="invalid_token")
    exp = claims.get("exp")
    return Grant(sub, frozenset(groups), float(exp) if isinstance(exp, int | float) else None)


def _ticket_key(ticket: str) -> str:
    # The store keeps a digest, not the ticket: whoever can read Redis still cannot subscribe with it.
    return hashlib.sha256(ticket.encode("utf-8", "surrogatepass")).hexdigest()
