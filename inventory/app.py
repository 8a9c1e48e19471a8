"""Inventory's composition root: builds the database, store and servicer from settings."""

from __future__ import annotations

from generated.shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from inventory import handlers
from inventory.api import InventoryApi
from inventory.store import InventoryStore, metadata
from mesh.db import Database
from mesh.discovery import Discovery
from mesh.server import App, Binding
from mesh.settings import Settings

SERVICE_NAME = inventory_pb2.DESCRIPTOR.services_by_name["InventoryService"].full_name


async def build(settings: Settings, discovery: Discovery) -> App:
    db = Database.connect(settings.database_url)
    await db.create_schema(metadata)
    store = InventoryStore(db)
    return App(
        bindings=[Binding(SERVICE_NAME, inventory_pb2_grpc.add_InventoryServiceServicer_to_server, InventoryApi(store))],
        closers=[db.close],
        gauges=[lambda: handlers.refresh_gauges(store)],
    )
