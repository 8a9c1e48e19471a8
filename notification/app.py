"""Notification's composition root."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from generated.shop.notification.v1 import notification_pb2, notification_pb2_grpc
from mesh.client.discovery import Discovery
from mesh.data.db import Database
from mesh.server.bootstrap import App, Binding
from mesh.settings import Settings
from notification import background
from notification.api import NotificationApi
from notification.handlers import Wakeups
from notification.metrics import PrometheusMetrics
from notification.store import NotificationStore, metadata

SERVICE_NAME = notification_pb2.DESCRIPTOR.services_by_name["NotificationService"].full_name


async def build(settings: Settings, discovery: Discovery) -> App:
    db = Database.of(settings)
    await db.migrate(Path(__file__).resolve().parent / "migrations", metadata)
    app = App(bindings=[], closers=[db.close], database=db)
    store, wakeups = NotificationStore(db), Wakeups()
    api = NotificationApi(store, PrometheusMetrics(), wakeups, app.stopping)
    # One reader per process for what other instances store, however many streams are open.
    app.background.append(asyncio.create_task(
        background.watch(store, wakeups, settings.stream_poll_interval, app.stopping), name="notification-watch"))
    app.background.append(asyncio.create_task(
        background.purge(store, timedelta(seconds=settings.notification_retention), app.stopping),
        name="notification-retention"))
    app.bindings = [Binding(SERVICE_NAME, notification_pb2_grpc.add_NotificationServiceServicer_to_server, api)]
    return app
