"""Who is calling and what they may do: a bearer JWT or an API key in, a Principal out.

Tokens are verified by PyJWT with the one algorithm configured (HS256 with a
shared secret, or RS256 with a public key), so `alg=none`, a token signed some
other way and an expired token are all refused with 401. The user id always
comes from the token (`sub`) or the key, never from the request body; `roles`
containing `admin` makes an admin.

What each RPC needs is one table, POLICY; an RPC missing from it needs an admin,
so a new route is closed until someone decides otherwise.
"""

from __future__ import annotations

import enum
import hmac
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

import jwt

from mesh.settings import Settings


class Need(enum.Enum):
    ANYONE = "anyone"  # the catalogue
    USER = "user"  # the request's user_id field is the caller's (filled in when empty)
    ORDER_OWNER = "order owner"  # the order named in the request belongs to the caller
    ADMIN = "admin"


POLICY: dict[str, Need] = {
    "/shop.inventory.v1.InventoryService/GetProduct": Need.ANYONE,
    "/shop.inventory.v1.InventoryService/ListProducts": Need.ANYONE,
    "/shop.order.v1.OrderService/CreateOrder": Need.USER,
    "/shop.order.v1.OrderService/ListOrders": Need.USER,
    "/shop.order.v1.OrderService/GetOrder": Need.ORDER_OWNER,
    "/shop.order.v1.OrderService/CancelOrder": Need.ORDER_OWNER,
    "/shop.notification.v1.NotificationService/ListNotifications": Need.USER,
    "/shop.notification.v1.NotificationService/StreamNotifications": Need.USER,
    # Product and stock writes, reservations and sending notifications: admins (and services) only.
}


SESSION_COOKIE = "shopmesh_session"
SESSION_SECONDS = 8 * 3600  # a session signed in with an API key: a working day
CSRF_HEADER = "x-requested-with"
_JWT = re.compile(r"[\w-]+\.[\w-]+\.[\w-]*")


def cookie(header: str, name: str) -> str:
    """The value of cookie `name` in a Cookie header (percent-decoded), or ""."""
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return unquote(value)
    return ""


def session_cookie(value: str, max_age: int, *, secure: bool) -> str:
    """Set-Cookie for the page's session: out of scripts' reach, never sent by other sites' pages."""
    attributes = f"HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}" + ("; Secure" if secure else "")
    return f"{SESSION_COOKIE}={quote(value, safe='')}; {attributes}"


@dataclass(frozen=True)
class Principal:
    user_id: str
    admin: bool = False


class Refused(Exception):
    """401 (who are you?) or 403 (not for you), with a message naming why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Authenticator:
    def __init__(self, settings: Settings):
        self.enabled = settings.auth
        self._algorithm = "RS256" if settings.jwt_public_key_file else "HS256"
        self._key: str | bytes = (Path(settings.jwt_public_key_file).read_bytes() if settings.jwt_public_key_file
                                  else settings.jwt_secret)
        self._issuer = settings.jwt_issuer or None
        self._audience = settings.jwt_audience or None
        self._api_keys = {key: Principal(user, admin) for key, user, admin in settings.api_keys}

    def principal(self, headers: Mapping[str, str], method: str = "GET") -> Principal | None:
        """The caller, None when anonymous; raises Refused(401) for a bad credential.

        Headers first (Authorization, X-API-Key), else the page's session cookie (`session_cookie`).
        A cookie is sent by the browser on its own, so a state-changing call carried by one must
        also send X-Requested-With: a header another site's page cannot add without our CORS say-so.
        """
        authorization = headers.get("authorization")
        if authorization:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Refused(401, "authorization must be 'Bearer <token>'")
            return self._from_token(token.strip())
        key = headers.get("x-api-key")
        if key:
            return self._from_key(key)
        session = cookie(headers.get("cookie", ""), SESSION_COOKIE)
        if session:
            if method not in ("GET", "HEAD") and CSRF_HEADER not in headers:
                raise Refused(403, f"a call signed in by the session cookie must send {CSRF_HEADER} "
                                   "(protection against other sites' pages)")
            return self.from_credential(session)
        return None

    def from_credential(self, value: str) -> Principal:
        """A token or an API key, as the shop page's sign-in takes either: a JWT has three dotted parts."""
        return self._from_token(value) if _JWT.fullmatch(value) else self._from_key(value)

    def _from_key(self, key: str) -> Principal:
        for known, principal in self._api_keys.items():
            if hmac.compare_digest(known.encode(), key.encode()):
                return principal
        raise Refused(401, "unknown API key")

    def session_lifetime(self, value: str) -> int:
        """Seconds a session cookie for `value` may live: a token's own expiry, else SESSION_SECONDS."""
        if _JWT.fullmatch(value):
            claims = jwt.decode(value, options={"verify_signature": False})
            return max(int(claims.get("exp", 0) - time.time()), 0)
        return SESSION_SECONDS

    def _from_token(self, token: str) -> Principal:
        if not self._key:
            raise Refused(401, "bearer tokens are not accepted here; use an API key")
        try:
            claims = jwt.decode(token, self._key, algorithms=[self._algorithm], issuer=self._issuer,
                                audience=self._audience, options={"require": ["exp", "sub"]})
        except jwt.ExpiredSignatureError:
            raise Refused(401, "token expired") from None
        except jwt.InvalidTokenError as error:
            raise Refused(401, f"invalid token: {error}") from None
        roles = claims.get("roles") or []
        return Principal(str(claims["sub"]), isinstance(roles, list) and "admin" in roles)

    @staticmethod
    def need(rpc: str) -> Need:
        return POLICY.get(rpc, Need.ADMIN)
