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
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

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

    def principal(self, headers: Mapping[str, str]) -> Principal | None:
        """The caller, None when anonymous; raises Refused(401) for a bad credential."""
        authorization = headers.get("authorization")
        if authorization:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Refused(401, "authorization must be 'Bearer <token>'")
            return self._from_token(token.strip())
        key = headers.get("x-api-key")
        if key:
            for known, principal in self._api_keys.items():
                if hmac.compare_digest(known.encode(), key.encode()):
                    return principal
            raise Refused(401, "unknown API key")
        return None

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
