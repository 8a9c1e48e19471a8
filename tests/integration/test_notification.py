"""Notification over real gRPC and SQLite: once per event, newest first, live streams."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from generated.shop.notification.v1 import notification_pb2 as pb
from generated.shop.notification.v1 import notification_pb2_grpc
from tests.support.mesh import Start, channel


@pytest.fixture
async def served(start: Start):
    return await start("notification", SHOPMESH_STREAM_POLL_SECONDS="0.2")


@pytest.fixture
async def stub(served):
    async with channel(served) as ch:
        yield notification_pb2_grpc.NotificationServiceStub(ch)


def send(event_id: str, user: str = "alice", subject: str = "Hello") -> pb.SendNotificationRequest:
    return pb.SendNotificationRequest(event_id=event_id, user_id=user, kind="order.created", subject=subject, body="b")


async def test_an_event_sent_twice_or_concurrently_is_stored_once(stub) -> None:
    results = await asyncio.gather(*(stub.SendNotification(send("e1")) for _ in range(10)))
    assert len({r.notification_id for r in results}) == 1
    listed = await stub.ListNotifications(pb.ListNotificationsRequest(user_id="alice"))
    assert [n.event_id for n in listed.notifications] == ["e1"]


async def test_an_event_resent_with_other_content_is_already_exists(stub) -> None:
    await stub.SendNotification(send("e1"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SendNotification(send("e1", subject="Different"))
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.SendNotificationRequest(user_id="u", kind="k", subject="s"), "event_id"),
        (pb.SendNotificationRequest(event_id="e", kind="k", subject="s"), "user_id"),
        (pb.SendNotificationRequest(event_id="e", user_id="u", kind="Not A Kind", subject="s"), "kind"),
        (pb.SendNotificationRequest(event_id="e", user_id="u", kind="k", subject=""), "subject"),
        (pb.SendNotificationRequest(event_id="e", user_id="u", kind="k", subject="s", body="x" * 5000), "body"),
    ],
)
async def test_a_bad_notification_names_its_field(stub, request_, field: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SendNotification(request_)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith(field)


async def test_a_users_notifications_page_newest_first_and_only_theirs(stub) -> None:
    for i in range(5):
        await stub.SendNotification(send(f"a{i}"))
    await stub.SendNotification(send("b0", user="bob"))
    seen, token = [], ""
    while True:
        page = await stub.ListNotifications(pb.ListNotificationsRequest(user_id="alice", page_size=2, page_token=token))
        seen += [n.event_id for n in page.notifications]
        token = page.next_page_token
        if not token:
            break
    assert seen == ["a4", "a3", "a2", "a1", "a0"]


async def test_a_stream_delivers_new_notifications_live_and_only_the_users(stub) -> None:
    await stub.SendNotification(send("before"))
    stream = stub.StreamNotifications(pb.StreamNotificationsRequest(user_id="alice"))
    received: list[str] = []

    async def read() -> None:
        async for n in stream:
            received.append(n.event_id)
            if len(received) == 2:
                return

    await stream.initial_metadata()  # the stream follows alice from here on
    reader = asyncio.create_task(read())
    await stub.SendNotification(send("other", user="bob"))
    await stub.SendNotification(send("live-1"))
    await stub.SendNotification(send("live-2"))
    await asyncio.wait_for(reader, 5)
    stream.cancel()
    assert received == ["live-1", "live-2"]


async def test_once_a_streams_headers_came_every_notification_stored_after_them_is_delivered(stub) -> None:
    """The headers are the signal a client may wait on (the gateway's SSE head too): sent once the
    stream follows the user and knows where it starts, never before."""
    for i in range(20):
        stream = stub.StreamNotifications(pb.StreamNotificationsRequest(user_id=f"prompt-{i}"))
        await stream.initial_metadata()
        await stub.SendNotification(send(f"prompt-{i}", user=f"prompt-{i}"))  # at once, no pause
        got = await asyncio.wait_for(stream.read(), 5)
        stream.cancel()
        assert got.event_id == f"prompt-{i}"


async def test_a_stream_sees_what_another_instance_stored(start: Start, served, stub) -> None:
    # A second instance on the same database, as when several run side by side.
    other = await start("notification", SHOPMESH_NOTIFICATION_DATABASE_URL=str(served.app.bindings[0].servicer._store.db.engine.url))
    stream = stub.StreamNotifications(pb.StreamNotificationsRequest(user_id="alice"))
    await stream.initial_metadata()  # the stream follows alice from here on
    first = asyncio.create_task(stream.read())
    async with channel(other) as ch:
        await notification_pb2_grpc.NotificationServiceStub(ch).SendNotification(send("via-other"))
    got = await asyncio.wait_for(first, 5)
    stream.cancel()
    assert got.event_id == "via-other"


async def test_a_stream_for_no_user_is_invalid_argument(stub) -> None:
    stream = stub.StreamNotifications(pb.StreamNotificationsRequest())
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stream.read()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_stream_resumes_after_the_last_notification_its_client_saw(stub) -> None:
    sent = [await stub.SendNotification(send(f"resume-{i}", user="carol")) for i in range(3)]
    stream = stub.StreamNotifications(pb.StreamNotificationsRequest(user_id="carol",
                                                                    resume_after=sent[0].notification_id))
    got = [await asyncio.wait_for(stream.read(), 5) for _ in range(2)]
    stream.cancel()
    assert [n.event_id for n in got] == ["resume-1", "resume-2"]  # missed while away, in order
    for unknown in ("no-such-id", sent[0].notification_id):
        user = "carol" if unknown == "no-such-id" else "dave"  # someone else's id is as unknown
        stream = stub.StreamNotifications(pb.StreamNotificationsRequest(user_id=user, resume_after=unknown))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stream.read()
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert caught.value.details().startswith("resume_after:")


async def test_on_postgresql_another_instances_notification_wakes_a_stream_at_once(
        start: Start, database: object | None) -> None:
    """The watchers LISTEN, every commit NOTIFYs: with the poll 30 s apart, only that explains a
    notification stored by another instance arriving within half a second. On SQLite (no
    NOTIFY), and through a transaction pooler (LISTEN needs a session of its own), the poll is
    the way, so it is set short there and the bound is the poll's."""
    listens = database is not None and not database.settings()  # type: ignore[attr-defined]
    poll = "30" if listens else "0.2"
    here = await start("notification", SHOPMESH_STREAM_POLL_SECONDS=poll)
    url = here.app.bindings[0].servicer._store.db.engine.url.render_as_string(hide_password=False)
    other = await start("notification", SHOPMESH_STREAM_POLL_SECONDS=poll, SHOPMESH_NOTIFICATION_DATABASE_URL=url)
    async with channel(here) as ch, channel(other) as other_ch:
        stream = notification_pb2_grpc.NotificationServiceStub(ch).StreamNotifications(
            pb.StreamNotificationsRequest(user_id="bob"))
        await stream.initial_metadata()
        await asyncio.wait_for(here.app.bindings[0].servicer._wakeups.following.wait(), 10)  # the watcher listens
        loop = asyncio.get_running_loop()
        took = []
        for n in range(5):
            sent = loop.time()
            await notification_pb2_grpc.NotificationServiceStub(other_ch).SendNotification(
                send(f"listen-{n}", user="bob"))
            got = await asyncio.wait_for(stream.read(), 5)
            took.append(loop.time() - sent)
            assert got.event_id == f"listen-{n}"
        stream.cancel()
    assert max(took) < 0.5, took


async def test_a_batch_is_stored_in_one_go_in_order_and_an_event_stored_before_gives_back_its_notification(
        stub) -> None:
    first = await stub.SendNotification(send("b1"))
    batch = pb.BatchSendNotificationsRequest(requests=[send("b2"), send("b1"), send("b3", user="bob")])
    replies = await asyncio.gather(*(stub.BatchSendNotifications(batch) for _ in range(5)))  # concurrent repeats
    assert all(r == replies[0] for r in replies)
    assert [n.event_id for n in replies[0].notifications] == ["b2", "b1", "b3"]
    assert replies[0].notifications[1] == first
    listed = await stub.ListNotifications(pb.ListNotificationsRequest(user_id="alice"))
    assert [n.event_id for n in listed.notifications] == ["b2", "b1"]  # once each, newest first


async def test_a_batch_with_one_conflicting_event_stores_none_of_it(stub) -> None:
    await stub.SendNotification(send("c1"))
    batch = pb.BatchSendNotificationsRequest(requests=[send("c2"), send("c1", subject="Other")])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.BatchSendNotifications(batch)
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS and "'c1'" in caught.value.details()
    listed = await stub.ListNotifications(pb.ListNotificationsRequest(user_id="alice"))
    assert [n.event_id for n in listed.notifications] == ["c1"]


@pytest.mark.parametrize(
    ("requests", "field"),
    [
        ([], "requests"),
        ([send("d1"), pb.SendNotificationRequest(event_id="d2", user_id="u", kind="Not A Kind", subject="s")],
         "requests[1].kind"),
        ([send("d1"), pb.SendNotificationRequest(event_id="d3", user_id="u", kind="k", subject="   ")],
         "requests[1].subject"),
        ([send(f"d{i}") for i in range(101)], "requests"),
    ],
)
async def test_a_bad_batch_names_the_field_as_the_caller_wrote_it(stub, requests, field: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.BatchSendNotifications(pb.BatchSendNotificationsRequest(requests=requests))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith(field + ":"), caught.value.details()
    listed = await stub.ListNotifications(pb.ListNotificationsRequest(user_id="alice"))
    assert list(listed.notifications) == []


async def test_an_event_twice_in_one_batch_is_stored_once_and_twice_with_other_content_is_a_conflict(stub) -> None:
    """As with SendNotification repeated: idempotent on event_id (schemathesis sent such a batch,
    schema-valid, and found it refused as malformed)."""
    reply = await stub.BatchSendNotifications(pb.BatchSendNotificationsRequest(requests=[send("t1"), send("t2"), send("t1")]))
    assert [n.event_id for n in reply.notifications] == ["t1", "t2", "t1"]
    assert reply.notifications[0] == reply.notifications[2]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.BatchSendNotifications(pb.BatchSendNotificationsRequest(
            requests=[send("t3"), send("t3", subject="Other")]))
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    listed = await stub.ListNotifications(pb.ListNotificationsRequest(user_id="alice"))
    assert sorted(n.event_id for n in listed.notifications) == ["t1", "t2"]


async def test_a_batch_is_numbered_in_the_order_given_whatever_the_event_ids(stub) -> None:
    """A stream resumes after a sequence, so a batch's notifications are numbered as sent."""
    given = ["o-9", "o-1", "o-5", "o-3", "o-7"]
    reply = await stub.BatchSendNotifications(pb.BatchSendNotificationsRequest(requests=[send(e) for e in given]))
    assert [n.event_id for n in reply.notifications] == given
    listed = await stub.ListNotifications(pb.ListNotificationsRequest(user_id="alice"))
    assert [n.event_id for n in listed.notifications] == given[::-1]  # newest first
