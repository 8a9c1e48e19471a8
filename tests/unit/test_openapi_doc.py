"""The OpenAPI document names what each operation needs when authentication is on."""

from __future__ import annotations

from openapi_spec_validator import validate

from gateway import openapi
from gateway.app import Gateway
from mesh.settings import Settings


def table(auth: bool = False):  # type: ignore[no-untyped-def]
    """The gateway's endpoint table, as it serves it (the document is made from the same table)."""
    return Gateway(Settings(service="gateway", auth=auth, api_keys=(("k", "u", False),)), None).table  # type: ignore[arg-type]


def operations(document: dict) -> dict[str, dict]:
    return {op["operationId"]: op for path in document["paths"].values() for op in path.values()}


def test_with_auth_every_operation_says_how_to_sign_in_and_the_catalogue_stays_open() -> None:
    document = openapi.document(table(auth=True), auth=True)
    validate(document)
    assert set(document["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    ops = operations(document)
    assert ops["InventoryService_GetProduct"]["security"] == []
    assert ops["OrderService_CreateOrder"]["security"] == [{"bearer": []}, {"apiKey": []}]
    assert "admin" in ops["InventoryService_AdjustStock"]["description"]
    assert any(p["name"] == "Idempotency-Key" and p["in"] == "header"
               for p in ops["OrderService_CreateOrder"]["parameters"])
    assert set(document["paths"]["/session"]) == {"post", "delete"}  # the page's sign-in, documented
    assert "Set-Cookie" in ops["Gateway_SignIn"]["responses"]["200"]["headers"]
    assert ops["Gateway_Healthz"]["security"] == [] and ops["Gateway_Me"]["security"] == [{"bearer": []}, {"apiKey": []}]


def test_without_auth_the_document_claims_no_security() -> None:
    document = openapi.document(table())
    validate(document)
    assert "securitySchemes" not in document["components"]
    assert all("security" not in op for op in operations(document).values())


def test_not_blank_is_exactly_pythons_idea_of_white_space() -> None:
    """The document's NOT_BLANK pattern refuses what mesh/kernel/validate.py calls blank, and nothing else."""
    import re
    import sys

    character = re.compile(openapi.NOT_BLANK)
    differ = [hex(c) for c in range(sys.maxunicode + 1)
              if not 0xD800 <= c <= 0xDFFF and bool(character.fullmatch(chr(c))) == chr(c).isspace()]
    assert not differ, differ[:20]
