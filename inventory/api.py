"""The gRPC edge of inventory: proto -> arguments -> handler -> proto, nothing else."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import grpc

from generated.shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from inventory import domain, handlers
from inventory.domain import Line, Product, Reservation
from inventory.ports import Metrics, Store
from mesh.kernel.caller import Caller
from mesh.kernel.errors import InvalidArgument
from mesh.rpc.protoconv import money_pb, timestamp

Viewer = Callable[[grpc.aio.ServicerContext], Caller | None]


def product_pb(product: Product) -> inventory_pb2.Product:
    return inventory_pb2.Product(
        sku=product.sku,
        name=product.name,
        price=money_pb(product.price),
        available=product.available,
        reserved=product.reserved,
        sold=product.sold,
        create_time=timestamp(product.create_time),
        update_time=timestamp(product.update_time),
        state=int(product.state),
        etag=product.etag,
    )


def implied_mask(product: inventory_pb2.Product) -> list[str]:
    """AIP-134: no mask means the updatable fields that are set (output-only ones are ignored)."""
    return [path for path, given in (("name", product.name), ("price", product.HasField("price")),
                                     ("state", product.state)) if given]


def reservation_pb(reservation: Reservation) -> inventory_pb2.Reservation:
    return inventory_pb2.Reservation(
        reservation_id=reservation.reservation_id,
        lines=[
            inventory_pb2.ReservationLine(
                sku=line.sku,
                quantity=line.quantity,
                unit_price=money_pb(line.unit_price) if line.unit_price else None,
            )
            for line in reservation.lines
        ],
        state=int(reservation.state),
        create_time=timestamp(reservation.create_time),
        update_time=timestamp(reservation.update_time),
    )


class InventoryApi(inventory_pb2_grpc.InventoryServiceServicer):
    def __init__(self, store: Store, metrics: Metrics, reservation_ttl: timedelta = handlers.DEFAULT_TTL, *,
                 viewer: Viewer = lambda context: None, anonymous_edits: bool = True):
        self._store = store
        self._metrics = metrics
        self._ttl = reservation_ttl
        self._viewer = viewer  # the end user a call acts for (mesh/rpc/identity.py)
        self._anonymous_edits = anonymous_edits  # plaintext: the loopback mesh is trusted

    async def CreateProduct(self, request: inventory_pb2.CreateProductRequest, context: grpc.aio.ServicerContext) -> inventory_pb2.Product:
        p = request.product
        product = domain.new_product(
            p.sku, p.name, p.price.currency_code, p.price.minor_units, p.available, has_price=p.HasField("price"),
            state=p.state,
        )
        return product_pb(await handlers.create_product(self._store, product))

    async def UpdateProduct(self, request: inventory_pb2.UpdateProductRequest, context: grpc.aio.ServicerContext) -> inventory_pb2.Product:
        handlers.check_editor(self._viewer(context), anonymous=self._anonymous_edits)
        if not request.HasField("product"):
            raise InvalidArgument("product", "value is required")
        p = request.product
        paths = domain.check_mask(list(request.update_mask.paths) or implied_mask(p))
        change = domain.change(paths, p.name, p.price.currency_code, p.price.minor_units, p.state,
                               has_price=p.HasField("price"))
        return product_pb(await handlers.update_product(self._store, p.sku, change, p.etag))

    async def GetProduct(self, request: inventory_pb2.GetProductRequest, context: grpc.aio.ServicerContext) -> inventory_pb2.Product:
        return product_pb(await handlers.get_product(self._store, request.sku))

    async def ListProducts(self, request: inventory_pb2.ListProductsRequest, context: grpc.aio.ServicerContext) -> inventory_pb2.ListProductsResponse:
        page, token = await handlers.list_products(self._store, request.page_size, request.page_token,
                                                   show_archived=request.show_archived)
        return inventory_pb2.ListProductsResponse(products=[product_pb(p) for p in page], next_page_token=token)

    async def AdjustStock(self, request: inventory_pb2.AdjustStockRequest, context: grpc.aio.ServicerContext) -> inventory_pb2.Product:
        return product_pb(await handlers.adjust_stock(self._store, request.sku, request.delta, request.reason))

    async def ReserveStock(self, request: inventory_pb2.ReserveStockRequest, context: grpc.aio.ServicerContext) -> inventory_pb2.Reservation:
        lines = [Line(line.sku, line.quantity) for line in request.lines]
        return reservation_pb(await handlers.reserve_stock(self._store, self._metrics, request.reservation_id, lines, self._ttl,
                                                           commit=request.commit))

    async def CommitReservation(self, request: inventory_pb2.CommitReservationRequest, context: grpc.aio.ServicerContext) -> inventory_pb2.Reservation:
        return reservation_pb(await handlers.commit_reservation(self._store, self._metrics, request.reservation_id))

    async def ReleaseReservation(self, request: inventory_pb2.ReleaseReservationRequest, context: grpc.aio.ServicerContext) -> inventory_pb2.Reservation:
        return reservation_pb(await handlers.release_reservation(self._store, self._metrics, request.reservation_id))
