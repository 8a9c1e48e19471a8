"""Inventory's composition root: builds the database, store and servicer from settings."""

from __future__ import annotations

import asyncio
import functools
from datetime import timedelta
from pathlib import Path

from generated.shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from inventory import background
from inventory.api import InventoryApi
from inventory.metrics import PrometheusMetrics, refresh_gauges
from inventory.store import InventoryStore, metadata
from mesh.client.discovery import Discovery
from mesh.data.db import Database
from mesh.rpc import identity
from mesh.server.bootstrap import App, Binding
from mesh.settings import Settings

SERVICE_NAME = inventory_pb2.DESCRIPTOR.services_by_name["InventoryService"].full_name


async def build(settings: Settings, discovery: Discovery) -> App:
    db = Database.of(settings)
    await db.migrate(Path(__file__).resolve().parent / "migrations", metadata)
    store, metrics = InventoryStore(db), PrometheusMetrics()
    api = InventoryApi(store, metrics, timedelta(seconds=settings.reservation_ttl),
                       viewer=functools.partial(identity.caller, trusted=settings.trusted_callers, tls=settings.tls),
                       anonymous_edits=not settings.tls)
    app = App(
        bindings=[Binding(SERVICE_NAME, inventory_pb2_grpc.add_InventoryServiceServicer_to_server, api)],
        closers=[db.close],
        gauges=[lambda: refresh_gauges(store)],
        database=db,
    )
    # Every instance sweeps; the guarded release lets exactly one win per reservation.
    sweep_every = min(max(settings.reservation_ttl / 4, 0.2), 5.0)
    app.background.append(asyncio.create_task(background.sweep_expired(
        store, metrics, sweep_every, app.stopping, timedelta(seconds=settings.reservation_retention)), name="expiry"))
    return app
