"""UpdateProduct through every edge, from the one contract: REST's PATCH (the mask from the body, as
grpc-gateway derives it; If-Match, ETag, 412, 304), Connect's POST, gRPC-Web, grpcurl, and the
gateway's sign-in (only an admin may)."""

from __future__ import annotations

import json
import struct
import subprocess
import uuid
from collections.abc import Iterator
from urllib.parse import unquote

import pytest
from google.protobuf import field_mask_pb2

from generated.shop.inventory.v1 import inventory_pb2
from generated.shop.order.v1 import order_pb2
from tests.support.http import Http, connect_json, frames, new_product
from tests.support.http import call as http_call
from tests.support.mesh import Launcher, Mesh

INVENTORY = "/shop.inventory.v1.InventoryService"


def grpcurl_run(grpcurl: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([grpcurl, "-plaintext", *args], capture_output=True, text=True, timeout=20)


def test_a_patch_without_a_mask_updates_exactly_the_fields_in_the_body(api: Http) -> None:
    sku = new_product(api, stock=4)
    status, headers, read = api.call("GET", f"/v1/products/{sku}")
    assert status == 200 and headers["etag"] == f'"{read["etag"]}"' and read["state"] == "ACTIVE"
    status, headers, patched = api.call("PATCH", f"/v1/products/{sku}", {"name": "Renamed mug"})
    assert status == 200, patched
    assert (patched["name"], patched["price"], patched["available"]) == ("Renamed mug", read["price"], "4")
    assert headers["etag"] == f'"{patched["etag"]}"' != f'"{read["etag"]}"'
    status, _, patched = api.call("PATCH", f"/v1/products/{sku}", {"price": {"minorUnits": "990"}})
    assert status == 200 and patched["price"] == {"currencyCode": "USD", "minorUnits": "990"}
    assert patched["name"] == "Renamed mug"
    # A mask in the query wins over the body's fields: only the name changes here.
    status, _, patched = api.call("PATCH", f"/v1/products/{sku}?updateMask=name",
                                  {"name": "Masked", "price": {"currencyCode": "EUR", "minorUnits": "1"}})
    assert status == 200 and patched["name"] == "Masked" and patched["price"]["minorUnits"] == "990"


@pytest.mark.parametrize(("body", "query", "field", "says"), [
    ({"name": ""}, "", "product.name", "value is required"),  # present and empty: a change to "", refused
    ({"available": "5"}, "", "updateMask", "changes only through AdjustStock"),
    ({"sold": "5"}, "", "updateMask", "'sold' is output only"),
    ({"name": "X"}, "?updateMask=sku", "updateMask", "'sku' cannot change"),
    ({"name": "X"}, "?updateMask=colour", "updateMask", "'colour' is not a field"),
    ({"price": None}, "", "product.price", "value is required"),
    ({"state": "GONE"}, "", "product.state", "GONE"),
    ({}, "", "updateMask", "nothing to update"),
    ({"sku": "another-sku", "name": "X"}, "", "product.sku", "in the body but"),
    ({"name": "X", "colour": "red"}, "", "product.colour", "unknown field"),
])
def test_a_bad_patch_is_400_naming_the_field(api: Http, body, query: str, field: str, says: str) -> None:
    sku = new_product(api)
    status, _, before = api.call("GET", f"/v1/products/{sku}")
    status, _, error = api.call("PATCH", f"/v1/products/{sku}{query}", body)
    assert status == 400, error
    violations = [v for d in error["details"] for v in d.get("fieldViolations", [])]
    assert violations and violations[0]["field"] == field and says in violations[0]["description"], error
    assert api.call("GET", f"/v1/products/{sku}")[2] == before


def test_if_match_makes_the_update_conditional_and_a_stale_one_is_412(api: Http) -> None:
    sku = new_product(api)
    _, headers, read = api.call("GET", f"/v1/products/{sku}")
    etag = headers["etag"]
    status, headers, first = api.call("PATCH", f"/v1/products/{sku}", {"name": "First"}, headers={"if-match": etag})
    assert status == 200
    status, _, error = api.call("PATCH", f"/v1/products/{sku}", {"name": "Second"}, headers={"if-match": etag})
    assert status == 412 and error["code"] == 10 and "changed since it was read" in error["message"], error
    # The etag in the body says the same, as the resource's own field: 409 ABORTED, as gRPC's code maps.
    status, _, error = api.call("PATCH", f"/v1/products/{sku}", {"name": "Second", "etag": read["etag"]})
    assert status == 409 and error["code"] == 10
    assert api.call("GET", f"/v1/products/{sku}")[2]["name"] == "First"
    status, _, _ = api.call("PATCH", f"/v1/products/{sku}", {"name": "Third"}, headers={"if-match": headers["etag"]})
    assert status == 200
    status, _, error = api.call("PATCH", f"/v1/products/{sku}", {"name": "X"}, headers={"if-match": "W/" + etag})
    assert status == 412 and "weak" in error["message"]
    for bad in ("v1", '"a", "b"'):
        status, _, error = api.call("PATCH", f"/v1/products/{sku}", {"name": "X"}, headers={"if-match": bad})
        assert status == 400 and error["details"][0]["fieldViolations"][0]["field"] == "If-Match", error
    # A quoted tag may hold a comma (RFC 9110 8.8.3): one well-formed tag that is not this product's.
    status, _, error = api.call("PATCH", f"/v1/products/{sku}", {"name": "X"}, headers={"if-match": '"p,E:*4ZB;"'})
    assert status == 412 and error["code"] == 10, error
    assert api.call("PATCH", f"/v1/products/{sku}", {"name": "Any"}, headers={"if-match": "*"})[0] == 200
    assert api.call("PATCH", "/v1/products/no-such-sku", {"name": "Any"}, headers={"if-match": "*"})[0] == 412
    assert api.call("PATCH", "/v1/products/no-such-sku", {"name": "Any"})[0] == 404


def test_if_none_match_on_a_get_is_304_until_the_product_changes(api: Http) -> None:
    sku = new_product(api)
    _, headers, _ = api.call("GET", f"/v1/products/{sku}")
    status, again, body = api.call("GET", f"/v1/products/{sku}", headers={"if-none-match": headers["etag"]})
    assert status == 304 and not body and again["etag"] == headers["etag"]
    # If-None-Match compares weakly and takes a list (RFC 9110 13.1.2): W/ and a tag among others match too.
    for header in ("W/" + headers["etag"], f'"x,y", {headers["etag"]}', "*"):
        assert api.call("GET", f"/v1/products/{sku}", headers={"if-none-match": header})[0] == 304, header
    assert api.call("GET", f"/v1/products/{sku}", headers={"if-none-match": '"x,y"'})[0] == 200
    api.call("POST", f"/v1/products/{sku}:adjustStock", {"delta": "1", "reason": "restock"})
    status, _, body = api.call("GET", f"/v1/products/{sku}", headers={"if-none-match": headers["etag"]})
    assert status == 200 and body["available"] == "11"


def test_a_connect_get_carries_the_etag_and_revalidates_to_304(api: Http) -> None:
    """Connect's GET is a cacheable HTTP GET (what connect-es sends with useHttpGet): the same
    conditional rules as REST, from the same etag; a gzipped body's tag is weak (its bytes differ)."""
    import gzip
    from urllib.parse import quote

    sku = new_product(api)
    path = f"{INVENTORY}/GetProduct?connect=v1&encoding=json&message={quote(json.dumps({'sku': sku}))}"

    def get(**headers: str) -> tuple[int, dict[str, str], bytes]:
        return http_call(api.address, "GET", path, b"", headers)

    status, headers, body = get()
    assert status == 200 and headers["etag"] == f'"{json.loads(body)["etag"]}"', (status, headers)
    status, again, body = get(**{"if-none-match": headers["etag"]})
    assert status == 304 and not body and again["etag"] == headers["etag"]
    api.call("POST", f"/v1/products/{sku}:adjustStock", {"delta": "1", "reason": "restock"})
    status, fresh, body = get(**{"if-none-match": headers["etag"]})
    assert status == 200 and json.loads(body)["available"] == "11" and fresh["etag"] != headers["etag"]
    # Gzipped (a name of 200 four-byte characters makes the reply worth compressing): the tag is
    # weak, and revalidates too.
    assert api.call("PATCH", f"/v1/products/{sku}", {"name": "\U0001F600" * 200})[0] == 200
    status, packed, body = get(**{"accept-encoding": "gzip"})
    assert status == 200 and packed.get("content-encoding") == "gzip", packed
    assert packed["etag"] == f'W/"{json.loads(gzip.decompress(body))["etag"]}"', packed
    assert get(**{"accept-encoding": "gzip", "if-none-match": packed["etag"]})[0] == 304
    assert get(**{"if-none-match": packed["etag"]})[0] == 304  # weak comparison: the identity body matches too
    # A POST is not a revalidation: the same call by POST answers in full whatever it sends.
    status, _, product = connect_json(api.address, f"{INVENTORY}/GetProduct", {"sku": sku},
                                      **{"if-none-match": packed["etag"]})
    assert status == 200 and product["sku"] == sku


def test_an_archived_product_is_refused_to_orders_hidden_from_lists_and_comes_back(api: Http) -> None:
    sku = new_product(api)
    status, _, archived = api.call("PATCH", f"/v1/products/{sku}", {"state": "ARCHIVED"})
    assert status == 200 and archived["state"] == "ARCHIVED"
    status, _, error = api.call("POST", "/v1/orders", {"requestId": str(uuid.uuid4()), "userId": "arch",
                                                        "lines": [{"sku": sku, "quantity": 1}]})
    assert status == 400 and error["code"] == 9 and error["message"] == f"product '{sku}' is archived and cannot be ordered"

    def listed(query: str) -> set[str]:
        skus, token = set(), ""
        while True:
            _, _, page = api.call("GET", f"/v1/products?pageSize=1000{query}&pageToken={token}")
            skus |= {p["sku"] for p in page["products"]}
            token = page["nextPageToken"]
            if not token:
                return skus

    assert sku not in listed("") and sku in listed("&showArchived=true")
    # A page token belongs to the list it came from (AIP-158): reused with the filter changed, it is refused.
    _, _, first = api.call("GET", "/v1/products?pageSize=1&showArchived=true")
    status, _, error = api.call("GET", f"/v1/products?pageSize=1&pageToken={first['nextPageToken']}")
    violations = [v for d in error["details"] for v in d.get("fieldViolations", [])]
    assert status == 400 and violations[0]["field"] == "pageToken" and "show_archived" in violations[0]["description"], error
    # Connect and gRPC-Web say it in their own forms, from the same status.
    gateway = f"{api.host}:{api.port}"
    order = {"requestId": str(uuid.uuid4()), "userId": "arch", "lines": [{"sku": sku, "quantity": 1}]}
    status, _, error = connect_json(gateway, "/shop.order.v1.OrderService/CreateOrder", order)
    assert status == 400 and error["code"] == "failed_precondition" and "is archived" in error["message"], error
    request = order_pb2.CreateOrderRequest(request_id=str(uuid.uuid4()), user_id="arch",
                                           lines=[order_pb2.OrderLine(sku=sku, quantity=1)]).SerializeToString()
    status, headers, body = http_call(gateway, "POST", "/shop.order.v1.OrderService/CreateOrder",
                                      struct.pack(">BI", 0, len(request)) + request,
                                      {"content-type": "application/grpc-web+proto", "x-grpc-web": "1"})
    trailer = b"".join(data for flags, data in frames(body) if flags & 0x80).decode()
    said = {**headers, **dict(line.split(": ", 1) for line in trailer.strip().split("\r\n") if line)}
    assert status == 200 and said["grpc-status"] == "9" and "archived" in unquote(said["grpc-message"]), said
    assert api.call("PATCH", f"/v1/products/{sku}", {"state": "ACTIVE"})[0] == 200
    status, _, order = api.call("POST", "/v1/orders", {"requestId": str(uuid.uuid4()), "userId": "arch",
                                                        "lines": [{"sku": sku, "quantity": 1}]})
    assert status == 200, order


def test_connect_grpc_web_and_grpcurl_update_from_the_same_contract(api: Http, launcher: Launcher, grpcurl: str) -> None:
    gateway = launcher.address("gateway")
    sku = new_product(api)
    # Connect: a POST to the RPC's path; the mask in its JSON form.
    status, _, product = connect_json(gateway, f"{INVENTORY}/UpdateProduct", {
        "product": {"sku": sku, "name": "Over Connect", "price": {"currencyCode": "USD", "minorUnits": "1"}},
        "updateMask": "name"})
    assert status == 200 and product["name"] == "Over Connect" and product["price"]["minorUnits"] == "750"
    status, _, error = connect_json(gateway, f"{INVENTORY}/UpdateProduct", {
        "product": {"sku": sku, "name": "Stale", "etag": "v1"}, "updateMask": "name"})
    assert status == 409 and error["code"] == "aborted", error
    status, _, error = connect_json(gateway, f"{INVENTORY}/UpdateProduct", {
        "product": {"sku": sku}, "updateMask": "available"})
    assert status == 400 and "AdjustStock" in error["message"]
    # gRPC-Web: the binary message, the status in the trailer frame.
    request = inventory_pb2.UpdateProductRequest(product=inventory_pb2.Product(sku=sku, name="Over gRPC-Web"),
                                                 update_mask=field_mask_pb2.FieldMask(paths=["name"]))
    data = request.SerializeToString()
    status, _, body = http_call(gateway, "POST", f"{INVENTORY}/UpdateProduct", struct.pack(">BI", 0, len(data)) + data,
                                {"content-type": "application/grpc-web+proto", "x-grpc-web": "1"})
    [(flags, data), (trailer_flags, trailer)] = frames(body)
    assert status == 200 and flags == 0 and trailer_flags == 0x80 and b"grpc-status: 0" in trailer, trailer
    assert inventory_pb2.Product.FromString(data).name == "Over gRPC-Web"
    # grpcurl, straight to inventory by reflection (it reads a FieldMask in its object form).
    done = grpcurl_run(grpcurl, "-d", json.dumps({"product": {"sku": sku, "name": "Over grpcurl"}, "update_mask": {"paths": ["name"]}}),
                       launcher.address("inventory"), "shop.inventory.v1.InventoryService/UpdateProduct")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["name"] == "Over grpcurl"
    refused = grpcurl_run(grpcurl, "-d", json.dumps({"product": {"sku": sku, "name": "x"}, "update_mask": {"paths": ["sold"]}}),
                          launcher.address("inventory"), "shop.inventory.v1.InventoryService/UpdateProduct")
    assert refused.returncode != 0 and "InvalidArgument" in refused.stderr and "'sold' is output only" in refused.stderr


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    mesh = Mesh(tmp_path_factory.mktemp("signed"))
    for service in ("inventory", "notification", "order"):
        mesh.start(service)
    mesh.start("gateway", SHOPMESH_AUTH="on", SHOPMESH_API_KEYS="ann-key-0123=ann:admin,bob-key-0123=bob")
    yield mesh
    mesh.stop_all()


def test_only_an_admin_may_update_through_the_gateway(signed: Mesh) -> None:
    api = Http(signed.address("gateway"))
    admin, shopper = {"x-api-key": "ann-key-0123"}, {"x-api-key": "bob-key-0123"}
    sku = f"adm-{uuid.uuid4().hex[:8]}"
    assert api.call("POST", "/v1/products", {"sku": sku, "name": "Mug", "price": {"currencyCode": "USD", "minorUnits": "5"},
                                             "available": "1"}, headers=admin)[0] == 200
    status, _, error = api.call("PATCH", f"/v1/products/{sku}", {"name": "Mine now"}, headers=shopper)
    assert status == 403 and error["code"] == 7
    assert api.call("PATCH", f"/v1/products/{sku}", {"name": "Mine now"})[0] == 401
    # bob cannot borrow the services' own identity headers to pass as an admin either.
    status, _, _ = api.call("PATCH", f"/v1/products/{sku}", {"name": "Mine now"},
                            headers={**shopper, "x-shopmesh-user": "ann", "x-shopmesh-admin": "true"})
    assert status == 403
    status, _, done = api.call("PATCH", f"/v1/products/{sku}", {"name": "Renamed by ann"}, headers=admin)
    assert status == 200 and done["name"] == "Renamed by ann"
    assert api.call("GET", f"/v1/products/{sku}")[2]["name"] == "Renamed by ann"
