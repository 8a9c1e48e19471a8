"""A schemathesis check of our own, loaded with SCHEMATHESIS_HOOKS=tests.e2e.schemathesis_hooks.

`positive_data_acceptance` wants every schema-valid request answered 2xx, but a well-formed
request may still meet the shop's state: no such product (404), not enough stock or a settled
reservation (FAILED_PRECONDITION, a 400 by grpc-gateway's table), an idempotency key used for
another order (409). What must never happen is what the issue calls "schema-valid request
rejected": a 4xx saying the request itself is malformed (INVALID_ARGUMENT, 413, 414, 415, 431)
although the document says it is fine. The error body's gRPC code tells the two apart.
"""

from __future__ import annotations

import json

import schemathesis

MALFORMED = {413, 414, 415, 422, 431}
INVALID_ARGUMENT, OUT_OF_RANGE = 3, 11


@schemathesis.check
def schema_valid_request_is_not_called_malformed(ctx, response, case):  # type: ignore[no-untyped-def]
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return None
    code = None
    try:
        code = json.loads(response.content).get("code")
    except (ValueError, AttributeError):
        pass
    if response.status_code in MALFORMED or (response.status_code == 400 and code in (INVALID_ARGUMENT, OUT_OF_RANGE)):
        raise AssertionError(f"a request the document calls valid was refused as malformed: "
                             f"{response.status_code} {response.content[:500]!r}")
    return None


# What the document states in words only (gateway/openapi.py IN_WORDS, and the Idempotency-Key
# header's description): generated data keeps to it.
@schemathesis.hook
def filter_case(ctx, case):  # type: ignore[no-untyped-def]
    if case.query and case.query.get("pageToken"):
        return False  # opaque: only tokens the server handed out
    body = case.body if isinstance(case.body, dict) else {}
    lines = body.get("lines")
    if isinstance(lines, list):
        skus = [line.get("sku") for line in lines if isinstance(line, dict)]
        if len(skus) != len(set(skus)):
            return False  # each SKU at most once
    if case.method.upper() == "PATCH":  # UpdateProduct: what the mask (named or implied) says, in words
        if case.query and case.query.get("updateMask") is not None:
            return False  # each field it names must also be in the body
        if "available" in body or not {"name", "price", "state"} & set(body):
            return False  # available moves only through adjustStock; an update changes something
    key = (case.headers or {}).get("Idempotency-Key")
    return not (key is not None and body.get("requestId") not in (None, "", key))  # the header, or equal to it
