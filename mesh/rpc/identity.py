"""Who a call acts for: the end user the gateway signed in, carried to the services as metadata.

The gateway authenticates browsers and curl (JWT, API keys) and names the caller in two metadata
entries; the service that owns the data decides what that user may see (order: only their own
orders), so no edge has to fetch a record to check whose it is.

Anyone can write metadata. Over mTLS a service believes these entries only from a peer whose
certificate names one of `SHOPMESH_TLS_TRUSTED_CALLERS` (default: the gateway), and refuses a call
from any other peer that carries them. In plaintext there are no certificates to ask: the local
mesh, like its open ports, trusts its loopback. A call without the entries is a service's own
call (or a tool's) and acts for nobody in particular.
"""

from __future__ import annotations

import grpc

from mesh.kernel.caller import Caller
from mesh.kernel.errors import PermissionDenied

USER = "x-shopmesh-user"
ADMIN = "x-shopmesh-admin"


def metadata(user_id: str, admin: bool) -> tuple[tuple[str, str], ...]:
    return ((USER, user_id), (ADMIN, "true")) if admin else ((USER, user_id),)


def caller(context: grpc.aio.ServicerContext, trusted: tuple[str, ...], tls: bool) -> Caller | None:
    """The end user this call acts for, or None; PermissionDenied when an untrusted peer names one."""
    user, admin = None, False
    for key, value in context.invocation_metadata() or ():
        if key == USER:
            user = str(value)
        elif key == ADMIN:
            admin = value == "true"
    if user is None:
        return None
    if tls and not _trusted(context, trusted):
        raise PermissionDenied(f"{USER} is accepted only from {', '.join(trusted) or 'no one'} "
                               "(SHOPMESH_TLS_TRUSTED_CALLERS); this peer's certificate is not one of them")
    return Caller(user, admin)


def _trusted(context: grpc.aio.ServicerContext, trusted: tuple[str, ...]) -> bool:
    auth = context.auth_context() or {}
    names = [*auth.get("x509_common_name", ()), *auth.get("x509_subject_alternative_name", ())]
    return any((name.decode() if isinstance(name, bytes) else name) in trusted for name in names)
