"""Order's composition root: database, upstream clients, outbox relay, servicer."""

from __future__ import annotations

import asyncio
import functools
from datetime import timedelta
from pathlib import Path

from generated.shop.order.v1 import order_pb2, order_pb2_grpc
from mesh.client.channels import Upstreams
from mesh.client.discovery import Discovery
from mesh.data.db import Database
from mesh.kernel.faults import FaultPoints
from mesh.rpc import identity
from mesh.server.bootstrap import App, Binding
from mesh.settings import Settings
from order.api import OrderApi
from order.background.outbox import OutboxRelay
from order.background.recovery import Recovery
from order.metrics import PrometheusMetrics, refresh_gauges
from order.store import OrderStore, metadata
from order.upstreams import InventoryClient, NotificationClient

SERVICE_NAME = order_pb2.DESCRIPTOR.services_by_name["OrderService"].full_name


async def build(settings: Settings, discovery: Discovery) -> App:
    db = Database.of(settings)
    await db.migrate(Path(__file__).resolve().parent / "migrations", metadata)
    upstreams = Upstreams(discovery, settings)
    await upstreams.watch("inventory", "notification")
    store, metrics = OrderStore(db), PrometheusMetrics()
    inventory = InventoryClient(upstreams, settings.call_timeout)
    notifier = NotificationClient(upstreams, settings.call_timeout)
    relay = OutboxRelay(store, notifier, settings.outbox_interval, timedelta(seconds=settings.outbox_retention))
    # Orders in flight on any instance finish within their deadline; older half-done ones are ours to settle.
    recovery = Recovery(store, inventory, relay, settings.outbox_interval, grace=settings.call_timeout * 2,
                        metrics=metrics)
    # The fault points are the test-only injector's (SHOPMESH_FAULTS; free when none is set).
    api = OrderApi(store, inventory, relay, recovery,
                   functools.partial(identity.caller, trusted=settings.trusted_callers, tls=settings.tls),
                   metrics=metrics, faults=FaultPoints(settings.faults))
    app = App(
        bindings=[Binding(SERVICE_NAME, order_pb2_grpc.add_OrderServiceServicer_to_server, api)],
        closers=[db.close, upstreams.close, recovery.mark_committed],  # run last to first
        gauges=[lambda: refresh_gauges(store)],
        database=db,
    )
    app.background.append(asyncio.create_task(relay.run(), name="outbox-relay"))
    app.background.append(asyncio.create_task(recovery.run(), name="recovery"))
    app.background.append(asyncio.create_task(recovery.run_marks(), name="commit-marks"))
    relay.kick()  # deliver what a previous run left behind
    return app
