"""A real headless Chromium uses the gateway's page: lists products, places an order, sees the notification live."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, tool
from tests.support.mesh import Launcher, Mesh, new_product

ARTIFACTS = ROOT / "test-artifacts"


def _binary(name: str) -> str:
    return tool(name, install="Debian: apt-get install chromium chromium-driver")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = _binary("chromium")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-dev-shm-usage", "--disable-quic", "--no-first-run", "--disable-component-update",
                 "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,900"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the console, to see CSP refusals
    driver = webdriver.Chrome(service=Service(executable_path=_binary("chromedriver")), options=options)
    yield driver
    driver.quit()


def order_through_the_page(browser, wait, sku: str) -> str:
    """Orders one unit of `sku` with the page's form; the order id, once confirmed and notified on the stream."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.select import Select

    Select(browser.find_element(By.ID, "sku")).select_by_value(sku)
    browser.find_element(By.ID, "place-order").click()
    status = wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "#order-status p[data-order-id]")))
    order_id = status.get_attribute("data-order-id")
    assert "CONFIRMED" in status.text
    wait.until(ready.presence_of_element_located(
        (By.CSS_SELECTOR, f'#notifications li[data-event-id="order.created:{order_id}"]')))
    return str(order_id)


def _no_csp_refusals(browser) -> None:
    """The pages run under a strict Content-Security-Policy: nothing of theirs may have been refused."""
    refused = [entry["message"] for entry in browser.get_log("browser") if "Content Security Policy" in entry["message"]]
    assert not refused, refused


def test_a_shopper_places_an_order_and_sees_its_notification_arrive_without_reloading(browser, launcher: Launcher) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 15)
    browser.get(f"http://{launcher.address('gateway')}/")
    wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, '#products tr[data-sku="french-press"]')))
    stock_before = int(browser.find_element(By.CSS_SELECTOR, '#products tr[data-sku="french-press"] .available').text)

    user = browser.find_element(By.ID, "user")
    user.clear()
    user.send_keys(f"shopper-{uuid.uuid4().hex[:8]}")
    browser.execute_script("arguments[0].dispatchEvent(new Event('change'))", user)
    wait.until(ready.text_to_be_present_in_element((By.ID, "stream-state"), "live"))
    marker = browser.execute_script("window.__samePage = true; return window.__samePage")

    Select(browser.find_element(By.ID, "sku")).select_by_value("french-press")
    quantity = browser.find_element(By.ID, "quantity")
    quantity.clear()
    quantity.send_keys("2")
    browser.find_element(By.ID, "place-order").click()

    status = wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "#order-status p[data-order-id]")))
    order_id = status.get_attribute("data-order-id")
    assert "CONFIRMED" in status.text and "USD 59.98" in status.text
    note = wait.until(ready.presence_of_element_located(
        (By.CSS_SELECTOR, f'#notifications li[data-event-id="order.created:{order_id}"]')))
    assert "confirmed" in note.text
    assert browser.execute_script("return window.__samePage") is marker is True  # no reload happened
    stock_after = int(browser.find_element(By.CSS_SELECTOR, '#products tr[data-sku="french-press"] .available').text)
    assert stock_after == stock_before - 2

    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "browser-order.png"))
    _no_csp_refusals(browser)


def test_the_docs_page_lists_every_operation(browser, launcher: Launcher) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"http://{launcher.address('gateway')}/docs")
    WebDriverWait(browser, 15).until(ready.presence_of_element_located((By.ID, "OrderService_CreateOrder")))
    operations = browser.find_elements(By.CSS_SELECTOR, "section.op")
    assert len(operations) >= 14
    assert "/v1/orders/{order_id}:cancel" in browser.find_element(By.ID, "OrderService_CancelOrder").text
    create = browser.find_element(By.ID, "OrderService_CreateOrder").text  # the contract's rules, readable
    assert "userId (required): string (1-128 characters, not blank)" in create, create
    assert "lines (required): [" in create and "(at least 1 item, at most 100 items, each SKU at most once" in create, create
    assert "requestId (required): string (1-128 characters, not blank)" in create, create  # or Idempotency-Key
    assert "sku (required): string (at least 1 character, matching ^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$)" in create
    assert "quantity (required): string (int64) (at least 1 and at most 1000000)" in create, create
    assert browser.execute_script(  # its own stylesheet applied (no inline style any more)
        "return getComputedStyle(document.querySelector('.verb')).textTransform") == "uppercase"
    _no_csp_refusals(browser)


SIGNED_GATEWAY = {"SHOPMESH_AUTH": "on", "SHOPMESH_API_KEYS": "carol-key-0123=carol",
                  "SHOPMESH_JWT_SECRET": "browser-secret-browser-secret-0123"}


def _order_over_grpc(mesh: Mesh, user: str, sku: str) -> str:
    import grpc

    from generated.shop.order.v1 import order_pb2, order_pb2_grpc

    with grpc.insecure_channel(mesh.address("order")) as channel:
        order = order_pb2_grpc.OrderServiceStub(channel).CreateOrder(order_pb2.CreateOrderRequest(
            request_id=str(uuid.uuid4()), user_id=user, lines=[order_pb2.OrderLine(sku=sku, quantity=1)]), timeout=10)
    return order.order_id


@pytest.fixture
def signed_mesh(tmp_path: Path) -> Iterator[Mesh]:
    """The mesh with sign-in on: an API key for carol, a JWT secret for tokens."""
    mesh = Mesh(tmp_path / "mesh")
    for service in ("inventory", "notification", "order"):
        mesh.start(service, SHOPMESH_OUTBOX_INTERVAL_SECONDS="0.3")
    mesh.start("gateway", **SIGNED_GATEWAY)
    yield mesh
    mesh.stop_all()


def test_with_sign_in_on_a_shopper_signs_in_orders_as_themselves_and_follows_the_stream(browser, signed_mesh) -> None:
    import jwt
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    sku = new_product(signed_mesh, 5, prefix="signed")
    wait = WebDriverWait(browser, 15)
    browser.get(f"http://{signed_mesh.address('gateway')}/")
    wait.until(ready.visibility_of_element_located((By.ID, "sign-in")))  # anonymous: the catalogue, and a sign-in
    wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, f'#products tr[data-sku="{sku}"]')))
    assert "sign in" in browser.find_element(By.ID, "stream-state").text

    browser.find_element(By.ID, "credential").send_keys("not-a-key")
    browser.find_element(By.ID, "sign-in-button").click()
    wait.until(ready.text_to_be_present_in_element((By.ID, "order-status"), "sign-in refused"))

    browser.find_element(By.ID, "credential").send_keys("carol-key-0123")
    browser.find_element(By.ID, "sign-in-button").click()
    wait.until(ready.text_to_be_present_in_element((By.ID, "who"), "carol"))
    user = browser.find_element(By.ID, "user")
    assert user.get_attribute("value") == "carol" and user.get_attribute("readonly") is not None
    wait.until(ready.text_to_be_present_in_element((By.ID, "stream-state"), "live"))  # the stream, with the key
    # The key went to the gateway once and lives in an HttpOnly cookie: nothing on the page can read it.
    assert browser.execute_script("return [document.cookie, sessionStorage.length, localStorage.length]") == ["", 0, 0]

    order_through_the_page(browser, wait, sku)
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "browser-signed-in.png"))

    # The gateway goes away and comes back: the page reconnects with Last-Event-ID and gets what it missed.
    signed_mesh.stop("gateway")
    wait.until(ready.text_to_be_present_in_element((By.ID, "stream-state"), "reconnecting"))
    missed = _order_over_grpc(signed_mesh, "carol", sku)
    signed_mesh.start("gateway", **SIGNED_GATEWAY)
    wait.until(ready.presence_of_element_located(
        (By.CSS_SELECTOR, f'#notifications li[data-event-id="order.created:{missed}"]')))
    assert browser.find_element(By.ID, "stream-state").text == "live"

    # A bearer token works the same way; signing out drops back to the catalogue.
    browser.find_element(By.ID, "sign-out").click()
    wait.until(ready.visibility_of_element_located((By.ID, "sign-in")))
    dave = jwt.encode({"sub": "dave", "exp": time.time() + 300}, SIGNED_GATEWAY["SHOPMESH_JWT_SECRET"],
                      algorithm="HS256")
    browser.find_element(By.ID, "credential").send_keys(dave)
    browser.find_element(By.ID, "sign-in-button").click()
    wait.until(ready.text_to_be_present_in_element((By.ID, "who"), "dave"))
    wait.until(ready.text_to_be_present_in_element((By.ID, "stream-state"), "live"))
    assert not browser.find_elements(By.CSS_SELECTOR, "#notifications li")  # carol's are not dave's


CROSS_ORIGIN_PAGE = """<!doctype html><meta charset="utf-8"><title>another shop</title><pre id="out">running</pre>
<script>
const params = new URLSearchParams(location.search);
async function attempt(base, sku) {
  try {
    const product = await (await fetch(`${base}/v1/products/${sku}`)).json();
    const placed = await fetch(`${base}/v1/orders`, {
      method: "POST",
      headers: {"content-type": "application/json", "idempotency-key": crypto.randomUUID(), "x-request-id": "cors-1"},
      body: JSON.stringify({userId: "erin", lines: [{sku, quantity: 1}]}),
    });
    const order = await placed.json();
    return {ok: true, product: product.sku, status: order.status,
            requestId: placed.headers.get("grpc-metadata-x-request-id")};
  } catch (error) {
    return {ok: false, error: String(error)};
  }
}
(async () => {
  const allowed = await attempt(params.get("allowed"), params.get("sku"));
  const closed = await attempt(params.get("closed"), params.get("sku"));
  document.getElementById("out").textContent = JSON.stringify({allowed, closed});
})();
</script>"""


@pytest.fixture
def page_server(tmp_path: Path) -> Iterator[str]:
    """Another origin: a plain HTTP server on its own port serving one page."""
    import functools
    import http.server
    import threading

    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "index.html").write_text(CROSS_ORIGIN_PAGE)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "site"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_page_of_an_allowed_origin_may_call_the_gateway_and_others_may_not(
        browser, page_server: str, launcher: Launcher, tmp_path: Path) -> None:
    import json
    from urllib.parse import urlencode

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    mesh = Mesh(tmp_path / "cors-mesh")
    try:
        for service in ("inventory", "notification", "order"):
            mesh.start(service)
        mesh.start("gateway", SHOPMESH_CORS_ORIGINS=page_server)
        sku = new_product(mesh, 5, prefix="cors")
        query = urlencode({"allowed": f"http://{mesh.address('gateway')}", "closed": f"http://{launcher.address('gateway')}",
                           "sku": sku})
        browser.get(f"{page_server}/index.html?{query}")
        out = WebDriverWait(browser, 20).until(
            lambda b: b.find_element(By.ID, "out").text if b.find_element(By.ID, "out").text != "running" else None)
        result = json.loads(out)
        # The preflighted POST went through, and the page could read a response header.
        assert result["allowed"] == {"ok": True, "product": sku, "status": "CONFIRMED", "requestId": "cors-1"}, result
        # The gateway without SHOPMESH_CORS_ORIGINS: the browser refuses to hand the page its answer.
        assert result["closed"]["ok"] is False and "Failed to fetch" in result["closed"]["error"], result
    finally:
        mesh.stop_all()


# A script the page runs with its typed clients (window.shop, from gateway/web/src/shop.ts).
TYPED_CALLS = """
const [transportKind, sku, user, done] = arguments;
const s = window.shop;
const t = s.transport(transportKind);
const orders = s.createClient(s.OrderService, t), inventory = s.createClient(s.InventoryService, t);
const outcome = (error) => { const e = s.ConnectError.from(error); return {code: s.Code[e.code], said: s.describe(e)}; };
(async () => {
  const result = {};
  result.product = (await inventory.getProduct({sku})).sku;
  try { await orders.createOrder({requestId: "r", userId: user, lines: [{sku: "bad sku!", quantity: 0n}]}); }
  catch (error) { result.invalid = outcome(error); }
  const started = performance.now();
  try { await inventory.listProducts({pageSize: 1}, {timeoutMs: 1, headers: {"x-test": "1"}}).then(() => {
          throw new Error("finished within 1 ms"); }); }
  catch (error) { result.deadline = outcome(error); }
  try { for await (const _ of s.createClient(s.NotificationService, t).streamNotifications({userId: user}, {timeoutMs: 400})) {} }
  catch (error) { result.streamDeadline = {...outcome(error), ms: performance.now() - started}; }
  try { await orders.listOrders({userId: "someone-else"}); result.others = "read"; }
  catch (error) { result.others = outcome(error); }
  result.mine = (await orders.listOrders({userId: user})).orders.length;
  done(result);
})().catch((error) => done({failed: String(error)}));
"""


@pytest.mark.parametrize("transport", ["connect", "grpc-web"])
def test_the_typed_client_speaks_connect_and_grpc_web_with_field_violations_deadlines_and_the_session(
        browser, signed_mesh, transport: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    sku = new_product(signed_mesh, 5, prefix="typed")
    wait = WebDriverWait(browser, 15)
    browser.get(f"http://{signed_mesh.address('gateway')}/?transport={transport}")
    wait.until(ready.visibility_of_element_located((By.ID, "sign-in")))
    browser.find_element(By.ID, "credential").send_keys("carol-key-0123")
    browser.find_element(By.ID, "sign-in-button").click()
    wait.until(ready.text_to_be_present_in_element((By.ID, "stream-state"), "live"))  # the stream, on this transport
    # The page's own flow over this transport: an order, and its notification on the open stream.
    wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, f'#products tr[data-sku="{sku}"]')))
    order_through_the_page(browser, wait, sku)

    browser.set_script_timeout(30)
    result = browser.execute_async_script(TYPED_CALLS, transport, sku, "carol")
    assert "failed" not in result, result
    assert result["product"] == sku
    assert result["invalid"]["code"] == "InvalidArgument"
    assert "lines[0].sku" in result["invalid"]["said"] and "lines[0].quantity" in result["invalid"]["said"], result
    assert result["deadline"]["code"] == "DeadlineExceeded", result
    assert result["streamDeadline"]["code"] == "DeadlineExceeded" and result["streamDeadline"]["ms"] < 5000, result
    # The session cookie signs these calls in: carol's own orders are hers, another user's are refused.
    assert result["others"]["code"] == "PermissionDenied", result
    assert result["mine"] >= 1
    # The page's reads went as this transport sends them: Connect GETs (cacheable), or gRPC-Web POSTs.
    urls = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name).filter(n => n.includes('/shop.'))")
    gets = [u for u in urls if "ListProducts?connect=v1" in u]
    assert urls and (bool(gets) if transport == "connect" else not gets), urls
    _no_csp_refusals(browser)
