"""Several instances of each service side by side on one PostgreSQL server, as production runs
them: each service its own database, every instance of a service sharing it, callers finding the
instances by static discovery (`ip:port,ip:port`). A `Mesh` whose instances are named
`inventory-1`, `order-2`, ..., with the few calls the PostgreSQL tests and benchmarks make."""

from __future__ import annotations

import grpc

from generated.shop.common.v1 import money_pb2
from generated.shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from generated.shop.notification.v1 import notification_pb2, notification_pb2_grpc
from tests.support.mesh import Mesh, rpc_calls

INSTANCES = {"inventory": 2, "notification": 1, "order": 2}


class Replicas(Mesh):
    def __init__(self, postgres: object, folder, instances: dict[str, int] | None = None, **settings: str):  # type: ignore[no-untyped-def]
        super().__init__(folder)
        self.instances = instances or INSTANCES
        self.names = [f"{service}-{i + 1}" for service, n in self.instances.items() for i in range(n)]
        self.settings.update({
            "SHOPMESH_LOG_LEVEL": "WARNING", "SHOPMESH_OUTBOX_INTERVAL_SECONDS": "0.3",
            **{f"SHOPMESH_{s.upper()}_DATABASE_URL": postgres.create_database() for s in self.instances},  # type: ignore[attr-defined]
            **{f"SHOPMESH_{s.upper()}_ADDR": ",".join(self.address(f"{s}-{i + 1}") for i in range(n))
               for s, n in self.instances.items()},
            **postgres.settings(),  # type: ignore[attr-defined]
            **settings,
        })

    def start_all(self) -> None:
        """Every instance, then a gateway in front of them."""
        for name in self.names:
            self.start(name.rsplit("-", 1)[0], name=name)
        self.start("gateway")

    def product(self, sku: str, instance: int = 2) -> inventory_pb2.Product:
        with grpc.insecure_channel(self.address(f"inventory-{instance}")) as channel:
            return inventory_pb2_grpc.InventoryServiceStub(channel).GetProduct(
                inventory_pb2.GetProductRequest(sku=sku), timeout=10)

    def create_product(self, sku: str, stock: int) -> None:
        with grpc.insecure_channel(self.address("inventory-1")) as channel:
            inventory_pb2_grpc.InventoryServiceStub(channel).CreateProduct(inventory_pb2.CreateProductRequest(
                product=inventory_pb2.Product(sku=sku, name="scarce", available=stock,
                                              price=money_pb2.Money(currency_code="USD", minor_units=250))))

    def created_events(self, users: int, prefix: str) -> list[str]:
        """The ids of the `order.created` events notified to users `{prefix}0` .. `{prefix}{users - 1}`,
        every page of each user's notifications."""
        found = []
        with grpc.insecure_channel(self.address("notification-1")) as channel:
            stub = notification_pb2_grpc.NotificationServiceStub(channel)
            for u in range(users):
                page = ""
                while True:
                    listed = stub.ListNotifications(notification_pb2.ListNotificationsRequest(
                        user_id=f"{prefix}{u}", page_size=100, page_token=page), timeout=10)
                    found += [n.event_id for n in listed.notifications if n.kind == "order.created"]
                    page = listed.next_page_token
                    if not page:
                        break
        return found

    def served(self, name: str, method: str) -> float:
        """How many `method` calls the instance `name` has answered."""
        return rpc_calls(self.metrics_ports[name], method, ended=True)
