"""HTTP's conditional requests (RFC 9110 section 13) from a resource's AIP-154 `etag`, for every
RPC alike and on every edge that speaks HTTP semantics: REST (gateway/rest.py) and Connect's GET
(gateway/rpc.py).

A reply carrying an etag has it as its `ETag` header; `If-None-Match` naming it answers a GET 304
Not Modified; `If-Match` fills an update's etag, and the service's ABORTED for it is 412.
"""

from __future__ import annotations

import re

import grpc
from google.protobuf.message import Message

from gateway.errors import Failure
from mesh.server.http import Request


def entity_tag(reply: Message) -> str | None:
    """The reply's AIP-154 etag as an HTTP entity tag (quoted), if it has one that can be one."""
    etag = reply.etag  # type: ignore[attr-defined]
    return f'"{etag}"' if etag and '"' not in etag else None


def failed_precondition(failure: Failure, if_match: str) -> bool:
    """Whether an upstream's refusal says the If-Match condition is false: the resource changed
    (ABORTED), or, for `If-Match: *`, there is no resource at all."""
    return failure.code is grpc.StatusCode.ABORTED or (
        if_match.strip() == "*" and failure.code is grpc.StatusCode.NOT_FOUND)


# One member of an If-Match / If-None-Match list (RFC 9110 8.8.3): an entity tag, whose quotes may hold
# commas (`"a,b"` is one tag), or anything else up to the next comma, kept whole to be named as malformed.
_LIST_MEMBER = re.compile(r'[ \t]*((?:W/)?"[^"]*"|[^,"]*?)[ \t]*(?:,|\Z)')


def entity_tags(header: str) -> list[str]:
    """The members of an `If-Match` / `If-None-Match` header, in order; a header that is not such a
    list is one member (the whole value), which then fails the quoting check with its own text."""
    tags, at = [], 0
    while at < len(header):
        member = _LIST_MEMBER.match(header, at)
        if member is None:
            return [header.strip()]
        if member.group(1):
            tags.append(member.group(1))
        at = member.end()
    return tags


def none_match(request: Request, tag: str) -> bool:
    """Whether the request's `If-None-Match` names the current tag: `*`, or the same opaque tag,
    weak or not (the weak comparison RFC 9110 13.1.2 asks for): a GET then answers 304."""
    current = tag.removeprefix("W/")
    return any(t == "*" or t.removeprefix("W/") == current for t in entity_tags(request.headers.get("if-none-match", "")))


def precondition(header: str, resource: Message) -> None:
    """`If-Match: "etag"` into the resource's etag (RFC 9110 13.1.1); `*` asks only that it exists."""
    tags = entity_tags(header)
    problem = None
    if tags == ["*"]:
        return
    if len(tags) != 1:
        problem = "give one entity tag (the ETag of the product as read), or *"
    elif tags[0].startswith("W/"):
        raise Failure(412, "If-Match: a weak entity tag never matches (RFC 9110 section 13.1.1); "
                           "send the ETag header as it came", code=grpc.StatusCode.FAILED_PRECONDITION)
    elif tags[0] == '""':
        raise Failure(412, 'If-Match: "" is no resource\'s entity tag', code=grpc.StatusCode.FAILED_PRECONDITION)
    elif len(tags[0]) < 2 or tags[0][0] != '"' or tags[0][-1] != '"':
        problem = f'must be an entity tag in double quotes, such as "v3", not {tags[0]!r}'
    elif resource.etag and resource.etag != tags[0][1:-1]:  # type: ignore[attr-defined]
        problem = f"is {tags[0]} but etag in the body is {resource.etag!r}; send one of them"  # type: ignore[attr-defined]
    if problem is not None:
        raise Failure(400, f"If-Match header {problem}", violations=[("If-Match", problem)])
    resource.etag = tags[0][1:-1]  # type: ignore[attr-defined]
