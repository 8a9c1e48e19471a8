"""Every RPC of the three contracts carries a google.api.http rule, so the gateway serves it."""

from __future__ import annotations

import pytest
from google.api import annotations_pb2

from generated.shop.inventory.v1 import inventory_pb2
from generated.shop.notification.v1 import notification_pb2
from generated.shop.order.v1 import order_pb2

SERVICES = {
    "shop.inventory.v1.InventoryService": (inventory_pb2, {"CreateProduct", "GetProduct", "ListProducts", "AdjustStock",
                                                           "ReserveStock", "CommitReservation", "ReleaseReservation"}),
    "shop.order.v1.OrderService": (order_pb2, {"CreateOrder", "GetOrder", "ListOrders", "CancelOrder"}),
    "shop.notification.v1.NotificationService": (notification_pb2, {"SendNotification", "ListNotifications",
                                                                    "StreamNotifications"}),
}


@pytest.mark.parametrize("full_name", sorted(SERVICES))
def test_each_service_has_exactly_its_rpcs_each_with_an_http_rule(full_name: str) -> None:
    module, rpcs = SERVICES[full_name]
    service = module.DESCRIPTOR.services_by_name[full_name.rsplit(".", 1)[1]]
    assert service.full_name == full_name
    assert {m.name for m in service.methods} == rpcs
    for method in service.methods:
        assert method.GetOptions().HasExtension(annotations_pb2.http), method.full_name


def test_money_is_integer_minor_units_and_times_are_timestamps() -> None:
    product = inventory_pb2.Product.DESCRIPTOR
    money = product.fields_by_name["price"].message_type
    assert money.full_name == "shop.common.v1.Money"
    assert money.fields_by_name["minor_units"].cpp_type == money.fields_by_name["minor_units"].CPPTYPE_INT64
    assert product.fields_by_name["create_time"].message_type.full_name == "google.protobuf.Timestamp"
    assert order_pb2.Order.DESCRIPTOR.fields_by_name["total"].message_type is money
