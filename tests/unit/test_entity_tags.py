"""If-Match / If-None-Match lists as RFC 9110 8.8.3 writes them: an entity tag is a quoted string
that may hold commas, so a list is split only between tags (schemathesis found `"p,E:*4ZB;"`, one
valid tag, refused as a list of two)."""

from __future__ import annotations

import pytest

from gateway.conditional import entity_tags


@pytest.mark.parametrize(("header", "members"), [
    ('"v3"', ['"v3"']),
    ('"p,E:*4ZB;"', ['"p,E:*4ZB;"']),
    ('"a,b", W/"c,d" ,"e"', ['"a,b"', 'W/"c,d"', '"e"']),
    ("*", ["*"]),
    ("  ", []),
    ('"a",,"b"', ['"a"', '"b"']),
    ("v1", ["v1"]),
    ('v1, "v2"', ["v1", '"v2"']),
    ('"a"b', ['"a"b']),
    ('"unclosed', ['"unclosed']),
])
def test_a_list_is_split_between_entity_tags_never_inside_one(header: str, members: list[str]) -> None:
    assert entity_tags(header) == members
