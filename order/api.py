"""The gRPC edge of order: proto -> arguments -> handler -> proto."""

from __future__ import annotations

from collections.abc import Callable

import grpc

from generated.shop.order.v1 import order_pb2, order_pb2_grpc
from mesh.kernel.caller import Caller
from mesh.observe import telemetry
from mesh.rpc.protoconv import money_pb, timestamp
from order import domain, handlers
from order.domain import Order
from order.ports import Commits, Faults, Inventory, Metrics, Outbox, Store


def order_pb(order: Order) -> order_pb2.Order:
    return order_pb2.Order(
        order_id=order.order_id,
        user_id=order.user_id,
        lines=[
            order_pb2.OrderLine(
                sku=line.sku,
                quantity=line.quantity,
                unit_price=money_pb(line.unit_price),
                line_total=money_pb(line.total),
            )
            for line in order.lines
        ],
        total=money_pb(order.total),
        status=int(order.status),
        request_id=order.request_id,
        create_time=timestamp(order.create_time),
        update_time=timestamp(order.update_time),
    )


def traced(order: Order) -> order_pb2.Order:
    """The reply, with the order's id on the call's span (`shop.order.id`): its trace is found by it."""
    telemetry.annotate({"shop.order.id": order.order_id})
    return order_pb(order)


Viewer = Callable[[grpc.aio.ServicerContext], Caller | None]


class OrderApi(order_pb2_grpc.OrderServiceServicer):
    def __init__(self, store: Store, inventory: Inventory, outbox: Outbox, commits: Commits,
                 viewer: Viewer = lambda context: None, *, metrics: Metrics, faults: Faults):
        self._viewer = viewer  # the end user a call acts for (mesh/rpc/identity.py)
        self._metrics = metrics
        self._faults = faults
        self._store = store
        self._inventory = inventory
        self._outbox = outbox
        self._commits = commits

    async def CreateOrder(self, request: order_pb2.CreateOrderRequest, context: grpc.aio.ServicerContext) -> order_pb2.Order:
        wanted = domain.check_request(
            request.request_id, request.user_id, [(line.sku, line.quantity) for line in request.lines]
        )
        return traced(await handlers.create_order(self._store, self._inventory, self._outbox, wanted, self._commits,
                                                  metrics=self._metrics, faults=self._faults))

    async def GetOrder(self, request: order_pb2.GetOrderRequest, context: grpc.aio.ServicerContext) -> order_pb2.Order:
        return traced(await handlers.get_order(self._store, request.order_id, self._viewer(context)))

    async def ListOrders(self, request: order_pb2.ListOrdersRequest, context: grpc.aio.ServicerContext) -> order_pb2.ListOrdersResponse:
        page, token = await handlers.list_orders(self._store, request.user_id, request.page_size, request.page_token)
        return order_pb2.ListOrdersResponse(orders=[order_pb(o) for o in page], next_page_token=token)

    async def CancelOrder(self, request: order_pb2.CancelOrderRequest, context: grpc.aio.ServicerContext) -> order_pb2.Order:
        order = await handlers.cancel_order(
            self._store, self._inventory, self._outbox, request.order_id, request.reason, self._viewer(context),
            metrics=self._metrics)
        return traced(order)
