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


def product_row(browser, wait, sku: str):
    """The catalogue's entry for `sku`, paging forward from the first page until it shows (the page
    lists a few products at a time, by the API's page tokens)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready

    wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "#products .product")))
    while browser.find_element(By.ID, "prev-page").is_enabled():
        _turn(browser, wait, "prev-page")
    while True:
        found = browser.find_elements(By.CSS_SELECTOR, f'#products .product[data-sku="{sku}"]')
        if found:
            return found[0]
        assert browser.find_element(By.ID, "next-page").is_enabled(), f"{sku} is on no page of the catalogue"
        _turn(browser, wait, "next-page")


def _turn(browser, wait, button: str) -> None:
    from selenium.webdriver.common.by import By

    before = browser.find_element(By.ID, "page-info").text
    browser.find_element(By.ID, button).click()
    wait.until(lambda b: b.find_element(By.ID, "page-info").text != before)


def add_to_cart(browser, wait, sku: str, quantity: int = 1) -> None:
    from selenium.webdriver.common.by import By

    row = product_row(browser, wait, sku)
    field = row.find_element(By.CSS_SELECTOR, ".quantity")
    field.clear()
    field.send_keys(str(quantity))
    row.find_element(By.CSS_SELECTOR, ".add").click()
    wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, f'#cart-lines li[data-sku="{sku}"]'))


def order_through_the_page(browser, wait, sku: str, quantity: int = 1) -> str:
    """Orders `quantity` of `sku` through the cart; the order id, once confirmed and notified on the stream."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready

    add_to_cart(browser, wait, sku, quantity)
    browser.find_element(By.ID, "place-order").click()
    status = wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "#order-status p[data-order-id]")))
    order_id = status.get_attribute("data-order-id")
    assert "CONFIRMED" in status.text
    wait.until(ready.presence_of_element_located(
        (By.CSS_SELECTOR, f'#notifications li[data-event-id="order.created:{order_id}"]')))
    return str(order_id)


def as_shopper(browser, wait, user: str) -> None:
    """Types `user` in the page's user field (sign-in off) and waits for their stream to be live."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready

    field = browser.find_element(By.ID, "user")
    field.clear()
    field.send_keys(user)
    browser.execute_script("arguments[0].dispatchEvent(new Event('change'))", field)
    wait.until(ready.text_to_be_present_in_element((By.ID, "stream-state"), "live"))


def _no_csp_refusals(browser) -> None:
    """The pages run under a strict Content-Security-Policy: nothing of theirs may have been refused."""
    refused = [entry["message"] for entry in browser.get_log("browser") if "Content Security Policy" in entry["message"]]
    assert not refused, refused


def test_a_shopper_places_an_order_and_sees_its_notification_arrive_without_reloading(browser, launcher: Launcher) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 15)
    browser.get(f"http://{launcher.address('gateway')}/")
    stock_before = int(product_row(browser, wait, "french-press").find_element(By.CSS_SELECTOR, ".available").text)
    as_shopper(browser, wait, f"shopper-{uuid.uuid4().hex[:8]}")
    marker = browser.execute_script("window.__samePage = true; return window.__samePage")

    add_to_cart(browser, wait, "french-press", 2)
    assert "USD 59.98" in browser.find_element(By.ID, "cart-total").text
    browser.find_element(By.ID, "place-order").click()

    status = wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "#order-status p[data-order-id]")))
    order_id = status.get_attribute("data-order-id")
    assert "CONFIRMED" in status.text and "USD 59.98" in status.text
    note = wait.until(ready.presence_of_element_located(
        (By.CSS_SELECTOR, f'#notifications li[data-event-id="order.created:{order_id}"]')))
    assert "confirmed" in note.text
    assert browser.execute_script("return window.__samePage") is marker is True  # no reload happened
    wait.until(lambda b: int(product_row(b, wait, "french-press").find_element(By.CSS_SELECTOR, ".available").text)
               == stock_before - 2)
    mine = wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, f'#orders li[data-order-id="{order_id}"]')))
    assert "CONFIRMED" in mine.text and "2 × french-press" in mine.text
    assert not browser.find_elements(By.CSS_SELECTOR, "#cart-lines li")  # placed: the cart is empty again

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


SIGNED_GATEWAY = {"SHOPMESH_AUTH": "on", "SHOPMESH_API_KEYS": "carol-key-0123=carol,ann-key-0123=ann:admin",
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
    product_row(browser, wait, sku)
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
    # carol shops; she edits nothing: no product offers her an editor.
    assert not [e for e in browser.find_elements(By.CSS_SELECTOR, "#products .edit") if e.is_displayed()]
    assert not browser.find_element(By.ID, "show-archived-label").is_displayed()

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

    # An admin's key: the editor is offered (and the archived products on request).
    browser.find_element(By.ID, "sign-out").click()
    wait.until(ready.visibility_of_element_located((By.ID, "sign-in")))
    browser.find_element(By.ID, "credential").send_keys("ann-key-0123")
    browser.find_element(By.ID, "sign-in-button").click()
    wait.until(ready.text_to_be_present_in_element((By.ID, "who"), "ann"))
    wait.until(lambda b: product_row(b, wait, sku).find_element(By.CSS_SELECTOR, ".edit").is_displayed())
    assert browser.find_element(By.ID, "show-archived-label").is_displayed()


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


LAYOUT = """
const problems = [];
const width = document.documentElement.clientWidth;
const name = (el) => el.id ? `#${el.id}` : `${el.tagName.toLowerCase()}.${[...el.classList].join('.')}`;
if (document.documentElement.scrollWidth > width + 1)
  problems.push(`the page scrolls sideways: ${document.documentElement.scrollWidth}px wide in ${width}px`);
let measured = 0;
for (const card of document.querySelectorAll("header, .card")) {
  const box = card.getBoundingClientRect();
  if (box.left < -0.5 || box.right > width + 0.5) problems.push(`${name(card)} is outside the window`);
  const walker = document.createTreeWalker(card, NodeFilter.SHOW_ELEMENT | NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const el = node.nodeType === Node.TEXT_NODE ? node.parentElement : node;
    if (el.closest("[hidden]") || (node.nodeType === Node.TEXT_NODE && !node.textContent.trim())) continue;
    let r;
    if (node.nodeType === Node.TEXT_NODE) { const range = document.createRange(); range.selectNodeContents(node); r = range.getBoundingClientRect(); }
    else r = node.getBoundingClientRect();
    if (!r.width && !r.height) continue;
    measured++;
    if (r.left < box.left - 0.5 || r.right > box.right + 0.5)
      problems.push(`${node.nodeType === Node.TEXT_NODE ? "text of " : ""}${name(el)} runs past ${name(card)}: ` +
                    `${Math.round(r.left)}..${Math.round(r.right)} in ${Math.round(box.left)}..${Math.round(box.right)}`);
    if (node.nodeType === Node.ELEMENT_NODE && !["INPUT", "SELECT", "TEXTAREA", "BUTTON"].includes(el.tagName)
        && getComputedStyle(el).overflowX !== "visible" && el.scrollWidth > el.clientWidth + 1)
      problems.push(`${name(el)} cuts off its content (${el.scrollWidth}px in ${el.clientWidth}px)`);
  }
}
return {problems, measured, width: window.innerWidth};
"""


def _layout_at(browser, width: int, height: int, mobile: bool) -> dict:
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile})
    browser.execute_script("return new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))")
    return browser.execute_script(LAYOUT)


def test_the_shop_front_fits_a_desktop_and_a_phone_with_everything_on_it(browser, launcher: Launcher) -> None:
    """Issue 23.7: at 1280 and 390 px wide nothing runs past its card and the page does not scroll
    sideways, measured from the boxes of every element and text in the browser, with the page full:
    a product of a 200-character name (no spaces to break at), a cart of lines, an order, its
    notification and an open editor."""
    import grpc
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from generated.shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc

    long_one = new_product(launcher, 50, prefix="aaa-layout")  # early in SKU order: on the first pages
    with grpc.insecure_channel(launcher.address("inventory")) as channel:
        inventory_pb2_grpc.InventoryServiceStub(channel).UpdateProduct(inventory_pb2.UpdateProductRequest(
            product=inventory_pb2.Product(sku=long_one, name="Mug" + "x" * 197)))
    wait = WebDriverWait(browser, 15)
    browser.get(f"http://{launcher.address('gateway')}/")
    as_shopper(browser, wait, "layout-" + "y" * 100)
    order_through_the_page(browser, wait, long_one, 3)
    add_to_cart(browser, wait, long_one, 2)
    add_to_cart(browser, wait, "french-press", 1)
    product_row(browser, wait, long_one).find_element(By.CSS_SELECTOR, ".edit").click()
    for width, height, mobile in ((1280, 900, False), (390, 844, True)):
        found = _layout_at(browser, width, height, mobile)
        assert found["width"] == width and found["measured"] > 50, found
        assert not found["problems"], (width, found["problems"])
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / f"browser-layout-{width}.png"))
    browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_the_layout_check_sees_a_card_overflow(browser, launcher: Launcher) -> None:
    """The measurement above can fail: a fixed-width element, as the old page's inputs were, is caught."""
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 15)
    browser.get(f"http://{launcher.address('gateway')}/")
    product_row(browser, wait, "french-press")
    browser.execute_script("document.querySelector('#user').style.width = '30rem'")
    found = _layout_at(browser, 390, 844, True)
    assert any("#user runs past #cart-card" in problem for problem in found["problems"]), found
    assert any("scrolls sideways" in problem for problem in found["problems"]), found
    browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_a_cart_of_several_lines_is_one_order_even_submitted_twice_and_is_cancelled_from_the_list(
        browser, launcher: Launcher) -> None:
    import grpc
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    from generated.shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
    from generated.shop.order.v1 import order_pb2, order_pb2_grpc

    first, second = new_product(launcher, 5, prefix="cart"), new_product(launcher, 5, prefix="cart")
    user = f"cart-{uuid.uuid4().hex[:8]}"
    wait = WebDriverWait(browser, 15)
    browser.get(f"http://{launcher.address('gateway')}/")
    as_shopper(browser, wait, user)
    add_to_cart(browser, wait, first, 2)
    add_to_cart(browser, wait, second, 1)
    add_to_cart(browser, wait, first, 1)  # the same product again: its line grows
    lines = browser.find_elements(By.CSS_SELECTOR, "#cart-lines li")
    assert [li.get_attribute("data-sku") for li in lines] == [first, second]
    assert lines[0].find_element(By.CSS_SELECTOR, ".line-quantity").get_attribute("value") == "3"
    # Submitted twice at once (a double click that beat the button's disabling, or a retry): one key.
    browser.execute_script("const form = document.getElementById('order-form'); form.requestSubmit(); form.requestSubmit();")
    status = wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "#order-status p[data-order-id]")))
    order_id = status.get_attribute("data-order-id")
    wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, f'#orders li[data-order-id="{order_id}"]')))
    time.sleep(0.5)  # the second answer, if any, lands too
    with grpc.insecure_channel(launcher.address("order")) as channel:
        placed = order_pb2_grpc.OrderServiceStub(channel).ListOrders(order_pb2.ListOrdersRequest(user_id=user)).orders
    assert [o.order_id for o in placed] == [order_id]
    assert sorted((line.sku, line.quantity) for line in placed[0].lines) == sorted([(first, 3), (second, 1)])
    with grpc.insecure_channel(launcher.address("inventory")) as channel:
        stub = inventory_pb2_grpc.InventoryServiceStub(channel)
        assert [stub.GetProduct(inventory_pb2.GetProductRequest(sku=s)).available for s in (first, second)] == [2, 4]
        # Cancelled from the list of orders: the stock comes back, the list says so.
        browser.find_element(By.CSS_SELECTOR, f'#orders li[data-order-id="{order_id}"] .cancel-order').click()
        wait.until(ready.text_to_be_present_in_element((By.CSS_SELECTOR, f'#orders li[data-order-id="{order_id}"]'),
                                                       "CANCELLED"))
        assert [stub.GetProduct(inventory_pb2.GetProductRequest(sku=s)).available for s in (first, second)] == [5, 5]
    wait.until(ready.presence_of_element_located(
        (By.CSS_SELECTOR, f'#notifications li[data-event-id="order.cancelled:{order_id}"]')))
    _no_csp_refusals(browser)


def test_an_admins_edit_that_lost_a_race_shows_the_product_as_it_is_and_one_that_did_not_is_merged(browser, launcher: Launcher) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.support.http import Http

    api = Http(launcher.address("gateway"))
    sku = new_product(launcher, 5, prefix="edit")
    wait = WebDriverWait(browser, 15)
    browser.get(f"http://{launcher.address('gateway')}/")
    row = product_row(browser, wait, sku)
    row.find_element(By.CSS_SELECTOR, ".edit").click()  # sign-in is off here: the API lets anyone edit

    def edit(name: str, price: str) -> None:
        for field, value in ((".edit-name", name), (".edit-price", price)):
            box = row.find_element(By.CSS_SELECTOR, field)
            box.clear()
            box.send_keys(value)
        row.find_element(By.CSS_SELECTOR, ".save").click()

    # Another admin renames it while this editor is open.
    assert api.call("PATCH", f"/v1/products/{sku}", {"name": "Renamed elsewhere"})[0] == 200
    edit("Renamed here", "12.34")
    wait.until(ready.text_to_be_present_in_element((By.CSS_SELECTOR, f'[data-sku="{sku}"] .edit-status'), "Not saved"))
    assert "changed its name while you edited" in row.find_element(By.CSS_SELECTOR, ".edit-status").text
    assert row.find_element(By.CSS_SELECTOR, ".name").text == "Renamed elsewhere"
    assert row.find_element(By.CSS_SELECTOR, ".edit-name").get_attribute("value") == "Renamed elsewhere"
    _, _, now = api.call("GET", f"/v1/products/{sku}")
    assert (now["name"], now["price"]["minorUnits"]) == ("Renamed elsewhere", "1000")  # nothing overwritten
    # Edited again from what it is now: saved.
    edit("Renamed here", "12.34")
    wait.until(ready.text_to_be_present_in_element((By.CSS_SELECTOR, f'[data-sku="{sku}"] .edit-status'), "Saved"))
    _, _, now = api.call("GET", f"/v1/products/{sku}")
    assert (now["name"], now["price"]["minorUnits"]) == ("Renamed here", "1234")
    assert row.find_element(By.CSS_SELECTOR, ".price").text == "USD 12.34"
    # A three-way merge: stock sold and another admin's rename moved the etag, but this admin
    # changes only the price, which nobody touched: the same change goes again on the fresh etag.
    assert api.call("POST", f"/v1/products/{sku}:adjustStock", {"delta": "3", "reason": "restock"})[0] == 200
    assert api.call("PATCH", f"/v1/products/{sku}", {"name": "Renamed by B"})[0] == 200
    edit("Renamed here", "15.00")  # the name as the editor opened it: not part of this change
    wait.until(lambda b: row.find_element(By.CSS_SELECTOR, ".price").text == "USD 15.00")
    assert row.find_element(By.CSS_SELECTOR, ".edit-status").text == "Saved."
    _, _, now = api.call("GET", f"/v1/products/{sku}")
    assert (now["name"], now["price"]["minorUnits"], now["available"]) == ("Renamed by B", "1500", "8"), now
    assert row.find_element(By.CSS_SELECTOR, ".name").text == "Renamed by B"
    assert row.find_element(By.CSS_SELECTOR, ".edit-name").get_attribute("value") == "Renamed by B"
    # Taken off sale: the next look at the catalogue leaves it out, unless archived ones are asked for.
    row.find_element(By.CSS_SELECTOR, ".edit-active").click()
    row.find_element(By.CSS_SELECTOR, ".save").click()
    wait.until(lambda b: row.find_element(By.CSS_SELECTOR, ".archived-tag").is_displayed())
    browser.get(f"http://{launcher.address('gateway')}/")
    with pytest.raises(AssertionError, match="is on no page"):
        product_row(browser, wait, sku)
    browser.find_element(By.ID, "show-archived").click()
    assert product_row(browser, wait, sku).find_element(By.CSS_SELECTOR, ".archived-tag").is_displayed()
    _no_csp_refusals(browser)
