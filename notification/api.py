"""The gRPC edge of notification: proto -> arguments -> handler -> proto."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

from generated.shop.notification.v1 import notification_pb2, notification_pb2_grpc
from mesh.kernel.errors import InvalidArgument
from mesh.rpc.protoconv import timestamp
from notification import domain, handlers
from notification.domain import Notification
from notification.handlers import Wakeups
from notification.ports import Metrics, Store


def notification_pb(n: Notification) -> notification_pb2.Notification:
    return notification_pb2.Notification(
        notification_id=n.notification_id,
        event_id=n.event_id,
        user_id=n.user_id,
        kind=n.kind,
        subject=n.subject,
        body=n.body,
        create_time=timestamp(n.create_time),
    )


class NotificationApi(notification_pb2_grpc.NotificationServiceServicer):
    def __init__(self, store: Store, metrics: Metrics, wakeups: Wakeups, stopping: asyncio.Event):
        self._store = store
        self._metrics = metrics
        self._wakeups = wakeups
        self._stopping = stopping

    async def SendNotification(self, request: notification_pb2.SendNotificationRequest, context: grpc.aio.ServicerContext) -> notification_pb2.Notification:
        wanted = domain.new_notification(request.event_id, request.user_id, request.kind, request.subject, request.body)
        return notification_pb(await handlers.send_notification(self._store, self._metrics, self._wakeups, wanted))

    async def BatchSendNotifications(self, request: notification_pb2.BatchSendNotificationsRequest, context: grpc.aio.ServicerContext) -> notification_pb2.BatchSendNotificationsResponse:
        wanted = []
        for i, r in enumerate(request.requests):
            try:
                wanted.append(domain.new_notification(r.event_id, r.user_id, r.kind, r.subject, r.body))
            except InvalidArgument as error:  # named as the caller wrote it: requests[i].field
                named = [(f"requests[{i}].{field}", problem) for field, problem in error.violations]
                raise InvalidArgument(*named[0], more=named[1:]) from None
        stored = await handlers.send_notifications(self._store, self._metrics, self._wakeups, wanted)
        return notification_pb2.BatchSendNotificationsResponse(notifications=[notification_pb(n) for n in stored])

    async def ListNotifications(self, request: notification_pb2.ListNotificationsRequest, context: grpc.aio.ServicerContext) -> notification_pb2.ListNotificationsResponse:
        page, token = await handlers.list_notifications(self._store, request.user_id, request.page_size, request.page_token)
        return notification_pb2.ListNotificationsResponse(
            notifications=[notification_pb(n) for n in page], next_page_token=token
        )

    async def StreamNotifications(self, request: notification_pb2.StreamNotificationsRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[notification_pb2.Notification]:
        domain.check_user_id(request.user_id)
        start = await handlers.resume_point(self._store, request.user_id, request.resume_after)
        # Headers once the stream follows the user, not with the first notification: a client
        # (or the gateway's SSE response) learns at once that the stream is open and valid, and
        # that every notification stored from then on will come.
        stream = handlers.stream_notifications(
            self._store, self._metrics, self._wakeups, request.user_id, self._stopping, start,
            opened=lambda: context.send_initial_metadata(()),
        )
        async for notification in stream:
            yield notification_pb(notification)
