"""Who a call acts for: the end user the gateway signed in (mesh/rpc/identity.py reads it from a call)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Caller:
    user_id: str
    admin: bool = False

    def may_see(self, owner: str) -> bool:
        return self.admin or owner == self.user_id
