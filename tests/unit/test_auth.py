"""Token and key checks of the gateway (pure logic: tokens made here with PyJWT)."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.auth import Authenticator, Need, Principal, Refused
from mesh.settings import Settings, SettingsError

SECRET = "s3cret-s3cret-s3cret-s3cret-s3cret!"


def settings(**env: str) -> Settings:
    return Settings.from_env("gateway", {"SHOPMESH_AUTH": "on", **env})


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def test_hs256_tokens_name_the_user_and_admins_by_role() -> None:
    auth = Authenticator(settings(SHOPMESH_JWT_SECRET=SECRET))
    token = jwt.encode({"sub": "alice", "exp": time.time() + 60}, SECRET, algorithm="HS256")
    assert auth.principal(bearer(token)) == Principal("alice", False)
    admin = jwt.encode({"sub": "ops", "roles": ["admin"], "exp": time.time() + 60}, SECRET, algorithm="HS256")
    assert auth.principal(bearer(admin)) == Principal("ops", True)
    assert auth.principal({}) is None


@pytest.mark.parametrize(("token", "says"), [
    (jwt.encode({"sub": "alice", "exp": time.time() - 5}, SECRET, algorithm="HS256"), "expired"),
    (jwt.encode({"sub": "alice", "exp": time.time() + 60}, None, algorithm="none"), "invalid token"),
    (jwt.encode({"sub": "alice", "exp": time.time() + 60}, "x" * 40, algorithm="HS256"), "invalid token"),
    (jwt.encode({"sub": "alice"}, SECRET, algorithm="HS256"), "exp"),
    ("not.a.token", "invalid token"),
])
def test_bad_tokens_are_refused_with_401(token: str, says: str) -> None:
    auth = Authenticator(settings(SHOPMESH_JWT_SECRET=SECRET))
    with pytest.raises(Refused) as refused:
        auth.principal(bearer(token))
    assert refused.value.status == 401 and says in str(refused.value)


def test_rs256_verifies_with_the_public_key_only(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = tmp_path / "jwt.pub"
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    auth = Authenticator(settings(SHOPMESH_JWT_PUBLIC_KEY_FILE=str(public), SHOPMESH_JWT_ISSUER="https://id.shop"))
    good = jwt.encode({"sub": "bob", "iss": "https://id.shop", "exp": time.time() + 60}, key, algorithm="RS256")
    assert auth.principal(bearer(good)) == Principal("bob", False)
    wrong_issuer = jwt.encode({"sub": "bob", "iss": "https://evil", "exp": time.time() + 60}, key, algorithm="RS256")
    with pytest.raises(Refused):
        auth.principal(bearer(wrong_issuer))
    # The classic confusion attack: HS256 signed with the public key as the secret.
    forged = jwt.api_jws.PyJWS().encode(b'{"sub":"bob","exp":9999999999,"iss":"https://id.shop"}',
                                        b"k" * 40, algorithm="HS256")
    with pytest.raises(Refused):
        auth.principal(bearer(forged))


def test_api_keys_and_the_policy_table() -> None:
    auth = Authenticator(settings(SHOPMESH_API_KEYS="k-ops=ops:admin,k-al=alice"))
    assert auth.principal({"x-api-key": "k-ops"}) == Principal("ops", True)
    assert auth.principal({"x-api-key": "k-al"}) == Principal("alice", False)
    with pytest.raises(Refused):
        auth.principal({"x-api-key": "k-nope"})
    with pytest.raises(Refused):
        auth.principal(bearer("anything"))  # no JWT key configured
    assert Authenticator.need("/shop.inventory.v1.InventoryService/GetProduct") is Need.ANYONE
    assert Authenticator.need("/shop.inventory.v1.InventoryService/AdjustStock") is Need.ADMIN
    assert Authenticator.need("/shop.inventory.v1.InventoryService/UpdateProduct") is Need.ADMIN
    assert Authenticator.need("/some.new.v1.Service/Method") is Need.ADMIN  # closed until decided


def test_auth_settings_are_checked_at_start() -> None:
    with pytest.raises(SettingsError, match="SHOPMESH_AUTH=on needs"):
        Settings.from_env("gateway", {"SHOPMESH_AUTH": "on"})
    with pytest.raises(SettingsError, match="SHOPMESH_API_KEYS"):
        Settings.from_env("gateway", {"SHOPMESH_API_KEYS": "nouser"})
    with pytest.raises(SettingsError, match="not both"):
        Settings.from_env("gateway", {"SHOPMESH_JWT_SECRET": SECRET, "SHOPMESH_JWT_PUBLIC_KEY_FILE": "/etc/hostname"})
    with pytest.raises(SettingsError, match="at least 32 bytes"):
        Settings.from_env("gateway", {"SHOPMESH_JWT_SECRET": "short"})
