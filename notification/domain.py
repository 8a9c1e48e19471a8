"""Notification's rules: what a valid notification is and when two are the same event."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from mesh.kernel import validate
from mesh.kernel.errors import AlreadyExists, InvalidArgument

MAX_EVENT_ID = 200
MAX_USER_ID = 128
MAX_KIND = 64
MAX_SUBJECT = 200
MAX_BODY = 4000
KIND = re.compile(r"^[a-z][a-z0-9_.-]*$")


@dataclass(frozen=True)
class Notification:
    event_id: str
    user_id: str
    kind: str
    subject: str
    body: str
    notification_id: str = ""
    create_time: datetime | None = None
    sequence: int = 0

    def same_event(self, other: Notification) -> bool:
        return (self.user_id, self.kind, self.subject, self.body) == (
            other.user_id,
            other.kind,
            other.subject,
            other.body,
        )


class EventConflict(AlreadyExists):
    def __init__(self, event_id: str):
        super().__init__(f"event {event_id!r} was already notified with other content")


class UnknownResumePoint(InvalidArgument):
    def __init__(self, notification_id: str, user_id: str):
        super().__init__("resume_after", f"{notification_id!r} is not a notification of user {user_id!r}")


def check_user_id(user_id: str) -> str:
    return validate.text("user_id", user_id, MAX_USER_ID)


def new_notification(event_id: str, user_id: str, kind: str, subject: str, body: str) -> Notification:
    validate.text("event_id", event_id, MAX_EVENT_ID)
    check_user_id(user_id)
    validate.text("kind", kind, MAX_KIND)
    if not KIND.match(kind):
        raise InvalidArgument("kind", "must be lowercase words joined by '.', '_' or '-', e.g. order.created")
    validate.text("subject", subject, MAX_SUBJECT)
    validate.text("body", body, MAX_BODY, required=False)
    return Notification(event_id, user_id, kind, subject, body)
