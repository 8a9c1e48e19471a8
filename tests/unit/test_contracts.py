"""Every RPC of the three contracts carries a google.api.http rule, so the gateway serves it."""

from __future__ import annotations

import pytest
from google.api import annotations_pb2

from generated.buf.validate import validate_pb2
from generated.shop.common.v1 import money_pb2
from generated.shop.inventory.v1 import inventory_pb2
from generated.shop.notification.v1 import notification_pb2
from generated.shop.order.v1 import order_pb2
from inventory import domain as inventory_domain
from mesh.kernel import money, validate
from notification import domain as notification_domain
from order import domain as order_domain

SERVICES = {
    "shop.inventory.v1.InventoryService": (inventory_pb2, {"CreateProduct", "GetProduct", "ListProducts", "UpdateProduct", "AdjustStock",
                                                           "ReserveStock", "CommitReservation", "ReleaseReservation"}),
    "shop.order.v1.OrderService": (order_pb2, {"CreateOrder", "GetOrder", "ListOrders", "CancelOrder"}),
    "shop.notification.v1.NotificationService": (notification_pb2, {"SendNotification", "BatchSendNotifications", "ListNotifications",
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


def _rules(message, field: str):
    return message.DESCRIPTOR.fields_by_name[field].GetOptions().Extensions[validate_pb2.field]


def test_the_contracts_field_rules_and_the_domains_own_limits_agree() -> None:
    """The contract states each rule for clients and the edge; where the domain still keeps a
    copy (for callers without a request), both must say the same, or one of them lies. The order
    path keeps none (issue 13): its shape is the contract's to check, once."""
    order, inventory, notification = order_pb2, inventory_pb2, notification_pb2
    agree = [
        (_rules(order.CreateOrderRequest, "user_id").string.max_len, order_domain.MAX_USER_ID),
        (_rules(order.ListOrdersRequest, "user_id").string.max_len, order_domain.MAX_USER_ID),
        (_rules(order.CancelOrderRequest, "reason").string.max_len, order_domain.MAX_REASON),
        (_rules(inventory.Product, "name").string.max_len, inventory_domain.MAX_NAME),
        (_rules(inventory.Product, "available").int64.lte, inventory_domain.MAX_STOCK),
        (_rules(money_pb2.Money, "minor_units").int64.lte, money.MAX_MINOR_UNITS),
        (_rules(inventory.AdjustStockRequest, "delta").int64.lte, inventory_domain.MAX_STOCK),
        (_rules(inventory.AdjustStockRequest, "reason").string.max_len, inventory_domain.MAX_REASON),
        (_rules(inventory.ReserveStockRequest, "reservation_id").string.max_len, inventory_domain.MAX_RESERVATION_ID),
        (_rules(notification.SendNotificationRequest, "event_id").string.max_len, notification_domain.MAX_EVENT_ID),
        (_rules(notification.SendNotificationRequest, "user_id").string.max_len, notification_domain.MAX_USER_ID),
        (_rules(notification.SendNotificationRequest, "kind").string.max_len, notification_domain.MAX_KIND),
        (_rules(notification.SendNotificationRequest, "kind").string.pattern, notification_domain.KIND.pattern),
        (_rules(notification.SendNotificationRequest, "subject").string.max_len, notification_domain.MAX_SUBJECT),
        (_rules(notification.SendNotificationRequest, "body").string.max_len, notification_domain.MAX_BODY),
        (_rules(money_pb2.Money, "currency_code").string.pattern, money._CURRENCY.pattern),
    ]
    agree += [(_rules(m, "sku").string.pattern, validate.SKU.pattern)
              for m in (order.OrderLine, inventory.Product, inventory.GetProductRequest, inventory.AdjustStockRequest,
                        inventory.ReservationLine)]
    assert [contract for contract, _ in agree] == [domain for _, domain in agree]


def test_every_field_of_every_request_has_a_rule() -> None:
    """A request field with no rule is unbounded (a 4 MB page token); each one states its limits."""
    unruled = []
    for module in (order_pb2, inventory_pb2, notification_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                for field in method.input_type.fields:
                    if field.type == field.TYPE_BOOL:
                        continue  # two values: nothing to bound
                    if not field.GetOptions().HasExtension(validate_pb2.field):
                        unruled.append(f"{method.input_type.name}.{field.name}")
    assert unruled == []


def test_every_service_rpc_message_field_and_enum_value_says_what_it_means(tmp_path) -> None:
    """The API reference (protos/API.md) is made from these comments: none may be missing."""
    import sys

    from google.protobuf import descriptor_pb2

    from tests.conftest import ROOT

    sys.path.insert(0, str(ROOT / "scripts"))
    from check_contracts import PROTOS, image

    files = descriptor_pb2.FileDescriptorSet.FromString(image(PROTOS, tmp_path / "contracts.binpb").read_bytes()).file
    missing: list[str] = []
    for file in (f for f in files if f.name.startswith("shop/")):
        said = {tuple(where.path): where.leading_comments.strip() for where in file.source_code_info.location}

        def check(path: list[int], what: str, file: descriptor_pb2.FileDescriptorProto = file,
                  said: dict = said) -> None:
            if not said.get(tuple(path)):
                missing.append(f"{file.name}: {what}")

        def message(msg: descriptor_pb2.DescriptorProto, path: list[int], prefix: str) -> None:
            check(path, f"message {prefix}{msg.name}")
            for i, field in enumerate(msg.field):
                check([*path, 2, i], f"field {prefix}{msg.name}.{field.name}")
            for i, nested in enumerate(msg.nested_type):
                message(nested, [*path, 3, i], f"{prefix}{msg.name}.")
            for i, enum in enumerate(msg.enum_type):
                enumeration(enum, [*path, 4, i], f"{prefix}{msg.name}.")

        def enumeration(enum: descriptor_pb2.EnumDescriptorProto, path: list[int], prefix: str) -> None:
            check(path, f"enum {prefix}{enum.name}")
            for i, value in enumerate(enum.value):
                check([*path, 2, i], f"enum value {prefix}{enum.name}.{value.name}")

        for i, service in enumerate(file.service):  # FileDescriptorProto field numbers: 6 service, 4 message, 5 enum
            check([6, i], f"service {service.name}")
            for j, method in enumerate(service.method):
                check([6, i, 2, j], f"rpc {service.name}.{method.name}")
        for i, msg in enumerate(file.message_type):
            message(msg, [4, i], "")
        for i, enum in enumerate(file.enum_type):
            enumeration(enum, [5, i], "")
    assert not missing, missing
