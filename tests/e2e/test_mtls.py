"""mTLS between the services: the mesh works with certificates, and nobody without one gets in."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from scripts.make_certs import make
from tests.conftest import tool
from tests.support.mesh import Launcher


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Launcher, Path]]:
    root = tmp_path_factory.mktemp("mtls")
    make(root / "certs")
    mesh = Launcher(root / "mesh", extra_args=["--tls", str(root / "certs")])
    mesh.start()
    yield mesh, root / "certs"
    mesh.interrupt()


def stub(mesh: Launcher, certs: Path, service: str, holder: str, kind):  # noqa: ANN001, ANN201 - a generated stub class
    """A `kind` stub to `service` over mTLS, with the certificate `holder` was issued (gateway, client, ...)."""
    credentials = grpc.ssl_channel_credentials((certs / "ca.pem").read_bytes(), (certs / f"{holder}-key.pem").read_bytes(),
                                               (certs / f"{holder}.pem").read_bytes())
    return kind(grpc.secure_channel(mesh.address(service), credentials,
                                    options=[("grpc.ssl_target_name_override", "shopmesh.internal")]))


def health(address: str, credentials: grpc.ChannelCredentials | None) -> int:
    options = [("grpc.ssl_target_name_override", "shopmesh.internal")]
    channel = (grpc.secure_channel(address, credentials, options=options) if credentials is not None
               else grpc.insecure_channel(address))
    with channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3).status


def test_an_order_crosses_every_service_over_mtls(secured: tuple[Launcher, Path]) -> None:
    mesh, _ = secured
    body = json.dumps({"requestId": str(uuid.uuid4()), "userId": "tls-user",
                       "lines": [{"sku": "coffee-mug", "quantity": 1}]}).encode()
    request = urllib.request.Request(f"http://{mesh.address('gateway')}/v1/orders", data=body, method="POST",
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as reply:
        assert json.load(reply)["status"] == "CONFIRMED"  # gateway -> order -> inventory, all with certificates
    with urllib.request.urlopen(f"http://{mesh.address('gateway')}/readyz", timeout=10) as reply:
        assert json.load(reply)["ready"] is True


def test_a_client_without_a_valid_certificate_cannot_complete_the_handshake(secured: tuple[Launcher, Path],
                                                                            tmp_path: Path) -> None:
    mesh, certs = secured
    ca = (certs / "ca.pem").read_bytes()
    mine = grpc.ssl_channel_credentials(ca, (certs / "client-key.pem").read_bytes(), (certs / "client.pem").read_bytes())
    assert health(mesh.address("order"), mine) == health_pb2.HealthCheckResponse.SERVING
    make(tmp_path / "other")  # a certificate from another CA
    strangers = grpc.ssl_channel_credentials(ca, (tmp_path / "other" / "client-key.pem").read_bytes(),
                                             (tmp_path / "other" / "client.pem").read_bytes())
    for credentials, who in ((grpc.ssl_channel_credentials(ca), "no client certificate"),
                             (strangers, "a certificate from another CA"), (None, "plaintext")):
        with pytest.raises(grpc.RpcError) as refused:
            health(mesh.address("order"), credentials)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, who
    print("with the CA's client certificate: SERVING; without one, with another CA's, or plaintext: refused")


def test_grpcurl_and_grpc_health_probe_work_with_the_client_certificate(secured: tuple[Launcher, Path]) -> None:
    mesh, certs = secured
    grpcurl, probe = tool("grpcurl"), tool("grpc-health-probe")
    flags = ["-cacert", str(certs / "ca.pem"), "-cert", str(certs / "client.pem"), "-key",
             str(certs / "client-key.pem"), "-servername", "shopmesh.internal"]
    listed = subprocess.run([grpcurl, *flags, mesh.address("inventory"), "list"], capture_output=True, text=True,
                            timeout=30)
    assert listed.returncode == 0 and "shop.inventory.v1.InventoryService" in listed.stdout
    without = subprocess.run([grpcurl, "-cacert", str(certs / "ca.pem"), "-servername", "shopmesh.internal",
                              mesh.address("inventory"), "list"], capture_output=True, text=True, timeout=30)
    assert without.returncode != 0
    probed = subprocess.run([probe, f"-addr={mesh.address('notification')}", "-tls",
                             f"-tls-ca-cert={certs / 'ca.pem'}", f"-tls-client-cert={certs / 'client.pem'}",
                             f"-tls-client-key={certs / 'client-key.pem'}", "-tls-server-name=shopmesh.internal"],
                            capture_output=True, text=True, timeout=30)
    assert probed.returncode == 0 and "SERVING" in probed.stdout + probed.stderr
    assert "-cacert" in mesh.output()  # the launcher's printed grpcurl commands carry the certificates


def test_consul_checks_every_service_over_mtls(tmp_path: Path) -> None:
    from tests.conftest import free_port

    tool("consul")
    make(tmp_path / "certs")
    consul_port = free_port()
    mesh = Launcher(tmp_path / "mesh", env={"PATH": f"{Path(tool('consul')).parent}:{os.environ['PATH']}"},
                    extra_args=["--tls", str(tmp_path / "certs"), "--consul", "dev", "--consul-port", str(consul_port)])
    mesh.start(timeout=90)  # up means: every instance passes its check in Consul
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{consul_port}/v1/agent/checks", timeout=5) as reply:
            checks = json.load(reply)
        assert len(checks) == 3
        for check in checks.values():
            assert check["Status"] == "passing" and check["Type"] == "grpc" and "success" in check["Output"]
    finally:
        mesh.interrupt()
    print("inventory, order and notification pass Consul's gRPC check over mTLS")


def test_only_the_gateways_certificate_may_name_the_user_a_call_acts_for(secured: tuple[Launcher, Path]) -> None:
    """The caller's identity travels as metadata (mesh/rpc/identity.py); over mTLS a service believes it only
    from a trusted certificate (the gateway's), so another holder of a mesh certificate cannot claim to
    be a user, and the gateway's claim decides what that user may see."""
    from generated.shop.order.v1 import order_pb2, order_pb2_grpc

    mesh, certs = secured

    def orders(name: str) -> order_pb2_grpc.OrderServiceStub:
        return stub(mesh, certs, "order", name, order_pb2_grpc.OrderServiceStub)

    order = orders("client").CreateOrder(order_pb2.CreateOrderRequest(
        request_id=str(uuid.uuid4()), user_id="alice", lines=[order_pb2.OrderLine(sku="coffee-mug", quantity=1)]),
        timeout=10)
    get = order_pb2.GetOrderRequest(order_id=order.order_id)
    assert orders("client").GetOrder(get, timeout=5).user_id == "alice"  # no claim: a service's own call
    with pytest.raises(grpc.RpcError) as claimed:
        orders("client").GetOrder(get, metadata=(("x-shopmesh-user", "alice"),), timeout=5)
    assert claimed.value.code() == grpc.StatusCode.PERMISSION_DENIED and "gateway" in claimed.value.details()
    assert orders("gateway").GetOrder(get, metadata=(("x-shopmesh-user", "alice"),), timeout=5).user_id == "alice"
    with pytest.raises(grpc.RpcError) as other:
        orders("gateway").GetOrder(get, metadata=(("x-shopmesh-user", "mallory"),), timeout=5)
    assert other.value.code() == grpc.StatusCode.NOT_FOUND  # someone else's order is as good as missing
    admin = (("x-shopmesh-user", "ops"), ("x-shopmesh-admin", "true"))
    assert orders("gateway").GetOrder(get, metadata=admin, timeout=5).order_id == order.order_id


def test_over_mtls_only_an_admin_named_by_the_gateway_may_update_a_product(secured: tuple[Launcher, Path]) -> None:
    """The services' own check behind the gateway's: inventory updates a product only for an admin
    the gateway's certificate vouches for; another mesh certificate may neither claim one nor update
    as nobody in particular."""
    from google.protobuf import field_mask_pb2

    from generated.shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc

    mesh, certs = secured

    def inventory(name: str) -> inventory_pb2_grpc.InventoryServiceStub:
        return stub(mesh, certs, "inventory", name, inventory_pb2_grpc.InventoryServiceStub)

    update = inventory_pb2.UpdateProductRequest(product=inventory_pb2.Product(sku="coffee-mug", name="Renamed over mTLS"),
                                                update_mask=field_mask_pb2.FieldMask(paths=["name"]))
    admin = (("x-shopmesh-user", "ops"), ("x-shopmesh-admin", "true"))
    for who, metadata, says in (("client", (), "acts for no signed-in user"),
                                ("client", admin, "gateway"),
                                ("gateway", (("x-shopmesh-user", "bob"),), "'bob' is not one")):
        with pytest.raises(grpc.RpcError) as refused:
            inventory(who).UpdateProduct(update, metadata=metadata, timeout=5)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED and says in refused.value.details(), who
    before = inventory("client").GetProduct(inventory_pb2.GetProductRequest(sku="coffee-mug"), timeout=5)
    assert before.name != "Renamed over mTLS"
    assert inventory("gateway").UpdateProduct(update, metadata=admin, timeout=5).name == "Renamed over mTLS"
