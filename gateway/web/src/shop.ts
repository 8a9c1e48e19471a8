// The shop page, on the contracts' typed client: the stubs protoc-gen-es made from protos/
// (generated/ts) over Connect, or over gRPC-Web with ?transport=grpc-web, both answered by the
// gateway itself. Bundled by esbuild into gateway/static/shop.js (scripts/build_web.py).
//
// A small shop front: the catalogue a page at a time (the API's page tokens; archived products
// hidden), a cart of several lines placed as one order under one idempotency key (a double click,
// or a retry after a dropped answer, places one order), the shopper's orders with cancel, their
// notifications live, and for an admin, editing a product's name, price and state guarded by its
// etag, merged on a conflict only when nobody else touched the fields it changes (`save`).
//
// With sign-in on (SHOPMESH_AUTH=on) the key or token the shopper types goes to POST /session once,
// which answers with an HttpOnly cookie: from then on the browser sends it and no script on this
// page can read it. Every call adds X-Requested-With, which the gateway asks of cookie-signed calls
// that change something (another site's page cannot add it).
import { create } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Interceptor, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";

import type { Money } from "@generated/shop/common/v1/money_pb";
import { InventoryService, type Product, Product_State } from "@generated/shop/inventory/v1/inventory_pb";
import { type Notification, NotificationService } from "@generated/shop/notification/v1/notification_pb";
import { type Order, Order_Status, OrderService } from "@generated/shop/order/v1/order_pb";
import { BadRequestSchema } from "@generated/google/rpc/error_details_pb";

const PAGE_SIZE = 6;
const ORDERS_PAGE = 5;

const $ = <T extends HTMLElement = HTMLElement>(selector: string, root: ParentNode = document): T => {
  const found = root.querySelector<T>(selector);
  if (found === null) throw new Error(`the page has no ${selector}`);
  return found;
};
const money = (m: Money | undefined): string =>
  m === undefined ? "" : `${m.currencyCode} ${(Number(m.minorUnits) / 100).toFixed(2)}`;
const say = (where: HTMLElement, text: string, kind: "ok" | "error" | "warn" | "" = ""): void => {
  const p = document.createElement("p");
  p.className = kind;
  p.textContent = text;
  where.replaceChildren(p);
};

// crypto.randomUUID needs a secure context (https, or localhost): elsewhere a random v4 UUID by hand.
const newId = (): string => (typeof crypto.randomUUID === "function" ? crypto.randomUUID()
  : "xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx".replace(/[xy]/g, (c) => {
      const r = Math.random() * 16 | 0; return (c === "x" ? r : (r & 0x3) | 0x8).toString(16);
    }));

const SAME_SITE = { "x-requested-with": "shopmesh-page" };
const sameSite: Interceptor = (next) => async (request) => {
  request.header.set("x-requested-with", SAME_SITE["x-requested-with"]);
  return await next(request);
};

/** The transport the page's calls go over: Connect (reads as cacheable GETs), or gRPC-Web. */
export function transport(kind: string | null = new URLSearchParams(location.search).get("transport")): Transport {
  const options = { baseUrl: location.origin, interceptors: [sameSite] };
  return kind === "grpc-web"
    ? createGrpcWebTransport({ ...options, useBinaryFormat: true })
    : createConnectTransport({ ...options, useHttpGet: true });
}

const chosen = transport();
const inventory = createClient(InventoryService, chosen);
const orders = createClient(OrderService, chosen);
const notifications = createClient(NotificationService, chosen);

/** What went wrong, as the caller's own terms: the message, and each broken field rule. */
export function describe(error: unknown): string {
  const failure = ConnectError.from(error);
  const fields = failure.findDetails(BadRequestSchema).flatMap((bad) => bad.fieldViolations);
  const said = fields.length ? fields.map((v) => `${v.field}: ${v.description}`).join("; ") : failure.rawMessage;
  return said || Code[failure.code];
}
const explain = (error: unknown): string =>
  error instanceof ConnectError || !(error instanceof Error) ? describe(error) : error.message;

// --- who is shopping -------------------------------------------------------------------------

let canEdit = false;  // an admin (or anyone, with sign-in off: the API lets everyone then)
const shopper = (): string => $<HTMLInputElement>("#user").value.trim();

// --- the catalogue, a page at a time --------------------------------------------------------

const catalogue = { tokens: [""], at: 0, next: "", shown: new Map<string, Product>() };

async function loadProducts(): Promise<void> {
  const showArchived = canEdit && $<HTMLInputElement>("#show-archived").checked;
  const page = await inventory.listProducts({ pageSize: PAGE_SIZE, pageToken: catalogue.tokens[catalogue.at], showArchived });
  if (!page.products.length && catalogue.at > 0) {  // the last page emptied (archived meanwhile): step back
    catalogue.at -= 1;
    return loadProducts();
  }
  catalogue.next = page.nextPageToken;
  catalogue.shown = new Map(page.products.map((p) => [p.sku, p]));
  const list = $<HTMLUListElement>("#products");
  const open = new Set([...list.querySelectorAll<HTMLElement>(".product:has(.editor:not([hidden]))")].map((e) => e.dataset.sku));
  list.replaceChildren(...page.products.map((p) => productRow(p, open.has(p.sku))));
  $<HTMLButtonElement>("#prev-page").disabled = catalogue.at === 0;
  $<HTMLButtonElement>("#next-page").disabled = !catalogue.next;
  $("#page-info").textContent = `page ${catalogue.at + 1}`;
}

function productRow(p: Product, editing = false): HTMLLIElement {
  const template = $<HTMLTemplateElement>("#product-row");
  const row = template.content.firstElementChild!.cloneNode(true) as HTMLLIElement;
  row.dataset.sku = p.sku;
  fill(row, p);
  $<HTMLButtonElement>(".add", row).onclick = () => {
    const quantity = $<HTMLInputElement>(".quantity", row);
    if (!quantity.reportValidity()) return;
    addToCart(catalogue.shown.get(p.sku) ?? p, BigInt(quantity.value));
  };
  const edit = $<HTMLButtonElement>(".edit", row);
  edit.hidden = !canEdit;
  edit.onclick = () => openEditor(row, catalogue.shown.get(p.sku) ?? p);
  $<HTMLButtonElement>(".cancel-edit", row).onclick = () => { $(".editor", row).hidden = true; };
  $<HTMLFormElement>(".editor", row).onsubmit = (event) => { event.preventDefault(); void save(row); };
  if (editing && canEdit) openEditor(row, p);
  return row;
}

function fill(row: HTMLElement, p: Product): void {
  $(".name", row).textContent = p.name;
  $(".sku", row).textContent = p.sku;
  $(".price", row).textContent = money(p.price);
  $(".available", row).textContent = String(p.available);
  const archived = p.state === Product_State.ARCHIVED;
  row.classList.toggle("archived", archived);
  $(".archived-tag", row).hidden = !archived;
  $<HTMLButtonElement>(".add", row).disabled = archived || p.available === 0n;
  row.dataset.etag = p.etag;
}

// The product as each open editor showed it: the base of the admin's change.
const editing = new Map<string, Product>();

function openEditor(row: HTMLElement, p: Product): void {
  $<HTMLInputElement>(".edit-name", row).value = p.name;
  $<HTMLInputElement>(".edit-price", row).value = (Number(p.price?.minorUnits ?? 0n) / 100).toFixed(2);
  $<HTMLInputElement>(".edit-active", row).checked = p.state !== Product_State.ARCHIVED;
  editing.set(p.sku, p);
  $(".editor", row).hidden = false;
}

type Editable = "name" | "price" | "state";
const EDITABLE: Editable[] = ["name", "price", "state"];
type Fields = { name: string; price?: { currencyCode: string; minorUnits: bigint }; state: Product_State };

function sameField(a: Fields, b: Fields, field: Editable): boolean {
  if (field === "price") return a.price?.currencyCode === b.price?.currencyCode && a.price?.minorUnits === b.price?.minorUnits;
  return a[field] === b[field];
}

/** What the admin's editor says, as a product, and the fields in it that differ from `base`. */
function edited(row: HTMLElement, base: Product): { change: Fields; paths: Editable[] } {
  const cents = Math.round(Number($<HTMLInputElement>(".edit-price", row).value) * 100);
  const change: Fields = {
    name: $<HTMLInputElement>(".edit-name", row).value,
    price: { currencyCode: base.price?.currencyCode ?? "USD", minorUnits: BigInt(cents) },
    state: $<HTMLInputElement>(".edit-active", row).checked ? Product_State.ACTIVE : Product_State.ARCHIVED,
  };
  return { change, paths: EDITABLE.filter((field) => !sameField(change, base, field)) };
}

/** Saves the fields the admin changed, only if the product is still as it was when the editor
 * opened (its etag). A three-way merge, as `kubectl apply` does on a conflict: when the etag moved
 * only for what this edit leaves alone (stock sold during a sale, another admin's change of another
 * field), the same change is sent again on the fresh etag; when someone changed one of these very
 * fields, the page shows the product as it is now and saves nothing. */
async function save(row: HTMLElement): Promise<void> {
  const sku = row.dataset.sku!;
  const status = $(".edit-status", row);
  const base = editing.get(sku) ?? catalogue.shown.get(sku);
  if (!base) return;
  const { change, paths } = edited(row, base);
  if (!paths.length) {
    say(status, "Nothing changed.", "ok");
    return;
  }
  const button = $<HTMLButtonElement>(".save", row);
  button.disabled = true;
  try {
    let etag = base.etag;
    for (let attempt = 0; ; attempt++) {
      try {
        const saved = await inventory.updateProduct({ product: { ...change, sku, etag }, updateMask: { paths } });
        catalogue.shown.set(sku, saved);
        fill(row, saved);
        openEditor(row, saved);  // the editor shows what was saved, merged changes of others included
        say(status, "Saved.", "ok");
        return;
      } catch (error) {
        if (ConnectError.from(error).code !== Code.Aborted) {
          say(status, explain(error), "error");
          return;
        }
      }
      const now = await inventory.getProduct({ sku });  // the etag moved: what moved it?
      catalogue.shown.set(sku, now);
      fill(row, now);
      const theirs = paths.filter((field) => !sameField(now, base, field));
      if (!theirs.length && attempt < 5) {
        etag = now.etag;  // nothing this edit changes was touched: apply it to the product as it is now
        continue;
      }
      openEditor(row, now);
      say(status, `Not saved: someone changed its ${theirs.join(" and ") || "details"} while you edited it. `
        + `It is now “${now.name}” at ${money(now.price)}; edit again from these values.`, "warn");
      return;
    }
  } finally {
    button.disabled = false;
  }
}

// --- the cart: several lines, one order, one idempotency key ---------------------------------

const cart = new Map<string, { product: Product; quantity: bigint }>();
// The order's request id: made when the cart is placed, kept while the cart stays as it is, so a
// second click or a retry after a lost answer asks for the same order (the order service answers
// it with the first one); a changed cart is a new order and gets a new key.
let checkoutKey: string | null = null;

function addToCart(product: Product, quantity: bigint): void {
  const line = cart.get(product.sku);
  cart.set(product.sku, { product, quantity: (line?.quantity ?? 0n) + quantity });
  cartChanged();
}

function cartChanged(): void {
  checkoutKey = null;
  renderCart();
}

function renderCart(): void {
  const list = $<HTMLUListElement>("#cart-lines");
  list.replaceChildren(...[...cart.values()].map(({ product, quantity }) => {
    const item = document.createElement("li");
    item.dataset.sku = product.sku;
    const name = document.createElement("span");
    name.textContent = `${product.name} · ${money(product.price)}`;
    const count = document.createElement("input");
    Object.assign(count, { type: "number", min: "1", max: "1000000", value: String(quantity), className: "line-quantity" });
    count.setAttribute("aria-label", `quantity of ${product.name}`);
    count.onchange = () => {
      if (!count.reportValidity()) return;
      cart.set(product.sku, { product, quantity: BigInt(count.value) });
      cartChanged();
    };
    const remove = document.createElement("button");
    Object.assign(remove, { type: "button", className: "secondary remove", textContent: "Remove" });
    remove.onclick = () => { cart.delete(product.sku); cartChanged(); };
    item.append(name, count, remove);
    return item;
  }));
  const lines = [...cart.values()];
  $("#cart-empty").hidden = lines.length > 0;
  $<HTMLButtonElement>("#place-order").disabled = lines.length === 0;
  const total = $("#cart-total");
  total.hidden = lines.length === 0;
  const currencies = new Set(lines.map((l) => l.product.price?.currencyCode));
  total.textContent = currencies.size > 1 ? "Lines in more than one currency cannot be one order."
    : `Total ${money({ currencyCode: [...currencies][0] ?? "", minorUnits:
        lines.reduce((sum, l) => sum + (l.product.price?.minorUnits ?? 0n) * l.quantity, 0n) } as Money)} (priced again when placed)`;
}

async function placeOrder(): Promise<void> {
  const button = $<HTMLButtonElement>("#place-order");
  button.disabled = true;
  checkoutKey ??= newId();
  const key = checkoutKey;
  try {
    const order = await orders.createOrder({
      requestId: key, userId: shopper(),
      lines: [...cart.values()].map(({ product, quantity }) => ({ sku: product.sku, quantity })),
    });
    if (checkoutKey === key) {  // still the cart this order was for
      cart.clear();
      cartChanged();
    }
    showOrder(order);
    await Promise.all([loadProducts(), loadOrders()]);
  } catch (error) {
    say($("#order-status"), explain(error), "error");  // the key stays: trying again asks for the same order
  } finally {
    button.disabled = cart.size === 0;
  }
}

function showOrder(order: Order): void {
  const line = document.createElement("p");
  line.className = order.status === Order_Status.CANCELLED ? "" : "ok";
  line.dataset.orderId = order.orderId;
  line.textContent = `Order ${order.orderId}: ${Order_Status[order.status]}, total ${money(order.total)}`;
  $("#order-status").replaceChildren(line);
}

// --- the shopper's orders ----------------------------------------------------------------------

const history = { next: "" };

async function loadOrders(more = false): Promise<void> {
  const user = shopper();
  const list = $<HTMLUListElement>("#orders");
  if (!user) {
    list.replaceChildren();
    return;
  }
  const page = await orders.listOrders({ userId: user, pageSize: ORDERS_PAGE, pageToken: more ? history.next : "" });
  history.next = page.nextPageToken;
  const items = page.orders.map(orderItem);
  if (more) list.append(...items); else list.replaceChildren(...items);
  $("#orders-empty").hidden = list.children.length > 0;
  $("#more-orders").hidden = !history.next;
}

function orderItem(order: Order): HTMLLIElement {
  const item = document.createElement("li");
  item.dataset.orderId = order.orderId;
  const head = document.createElement("div");
  head.className = "order-head";
  const status = document.createElement("span");
  status.className = "status";
  status.textContent = Order_Status[order.status];
  const total = document.createElement("span");
  total.textContent = money(order.total);
  head.append(status, total);
  const lines = document.createElement("small");
  lines.className = "muted";
  const when = order.createTime ? timestampDate(order.createTime).toLocaleString() : "";
  lines.textContent = `${order.lines.map((l) => `${l.quantity} × ${l.sku}`).join(", ")} · ${when}`;
  const id = document.createElement("small");
  id.className = "muted";
  id.textContent = order.orderId;
  item.append(head, lines, id);
  if (order.status === Order_Status.CONFIRMED) {
    const cancel = document.createElement("button");
    Object.assign(cancel, { type: "button", className: "secondary cancel-order", textContent: "Cancel order" });
    cancel.onclick = async () => {
      cancel.disabled = true;
      try {
        const cancelled = await orders.cancelOrder({ orderId: order.orderId, reason: "cancelled on the web page" });
        item.replaceWith(orderItem(cancelled));
        showOrder(cancelled);
        await loadProducts();
      } catch (error) {
        cancel.disabled = false;
        say($("#order-status"), explain(error), "error");
      }
    };
    item.append(cancel);
  }
  return item;
}

// --- notifications, live -----------------------------------------------------------------------

let stream: AbortController | null = null;
function follow(user: string): void {
  stream?.abort();
  $("#notifications").replaceChildren();
  notifications.listNotifications({ userId: user, pageSize: 20 })
    .then(({ notifications: page }) => page.reverse().forEach(addNotification))
    .catch(() => {});
  stream = new AbortController();
  void readStream(user, stream.signal);
}

// The notification stream; after a drop it reconnects resuming after the last one it saw, so
// nothing is missed (as an EventSource does with Last-Event-ID).
async function readStream(user: string, signal: AbortSignal): Promise<void> {
  const state = $("#stream-state");
  let lastId = "";
  while (!signal.aborted) {
    try {
      const live = notifications.streamNotifications(
        { userId: user, resumeAfter: lastId },
        { signal, onHeader: () => { state.textContent = "live"; } },
      );
      for await (const n of live) {
        lastId = n.notificationId;
        addNotification(n);
      }
    } catch (error) {
      if (signal.aborted) return;
      const failure = ConnectError.from(error);
      if ([Code.InvalidArgument, Code.PermissionDenied, Code.Unauthenticated, Code.NotFound].includes(failure.code)) {
        state.textContent = describe(failure);  // retrying will not help
        return;
      }
    }
    state.textContent = "reconnecting…";
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

function addNotification(n: Notification): void {
  if (document.querySelector(`[data-event-id="${CSS.escape(n.eventId)}"]`)) return;
  const item = document.createElement("li");
  item.dataset.eventId = n.eventId;
  item.dataset.kind = n.kind;
  item.textContent = n.subject;
  const detail = document.createElement("small");
  const when = n.createTime ? timestampDate(n.createTime).toLocaleTimeString() : "";
  detail.textContent = `${n.body} · ${when}`;
  item.append(detail);
  $("#notifications").prepend(item);
  if (n.kind.startsWith("order.")) void loadOrders().catch(() => {});  // another tab's order, or a cancel
}

// --- sign-in -----------------------------------------------------------------------------------

// A JWT is three base64url parts; anything else is taken for an API key.
const credentialHeaders = (value: string): Record<string, string> =>
  /^[\w-]+\.[\w-]+\.[\w-]*$/.test(value) ? { authorization: `Bearer ${value}` } : { "x-api-key": value };

// Who the page is signed in as (GET /me, the gateway's own): with sign-in off, anyone may be typed
// in the user field; with it on, the user is the one the key or token names.
async function whoami(): Promise<void> {
  const response = await fetch("/me");
  const me = await response.json();
  if (!response.ok && response.status !== 401) throw new Error(me.message || `HTTP ${response.status}`);
  const auth = response.status === 401 || Boolean(me.auth);  // with sign-in off, /me always answers 200
  const user = $<HTMLInputElement>("#user");
  $("#sign-in").hidden = !auth || response.ok;
  $("#signed-in").hidden = !auth || !response.ok;
  user.readOnly = auth;
  canEdit = !auth || (response.ok && Boolean(me.admin));
  $("#show-archived-label").hidden = !canEdit;
  const showArchived = $<HTMLInputElement>("#show-archived");
  if (!canEdit && showArchived.checked) {  // a page token is good only for the list it came from
    showArchived.checked = false;
    toFirstPage();
  }
  void loadProducts().catch(showCatalogueError);
  if (!response.ok) {
    user.value = "";
    stream?.abort();
    $("#notifications").replaceChildren();
    $("#orders").replaceChildren();
    $("#stream-state").textContent = "sign in to see notifications";
    return;
  }
  if (auth) {
    $("#who").textContent = me.userId;
    user.value = me.userId;
  }
  follow(user.value);
  await loadOrders();
}

const showCatalogueError = (error: unknown): void => say($("#catalogue-status"), explain(error), "error");

$("#sign-in").addEventListener("submit", async (event) => {
  event.preventDefault();
  const field = $<HTMLInputElement>("#credential");
  const value = field.value.trim();
  field.value = "";
  const response = await fetch("/session", { method: "POST", headers: credentialHeaders(value) });
  if (!response.ok) {
    const refusal = await response.json();
    say($("#order-status"), `sign-in refused: ${refusal.message || response.status}`, "error");
  }
  await whoami();
});
$("#sign-out").addEventListener("click", async () => {
  await fetch("/session", { method: "DELETE", headers: SAME_SITE });
  await whoami();
});
$("#order-form").addEventListener("submit", (event) => {
  event.preventDefault();
  void placeOrder();
});
$("#user").addEventListener("change", () => {
  follow(shopper());
  void loadOrders().catch(() => {});
});
$("#prev-page").addEventListener("click", () => {
  catalogue.at = Math.max(0, catalogue.at - 1);
  void loadProducts().catch(showCatalogueError);
});
$("#next-page").addEventListener("click", () => {
  if (!catalogue.next) return;
  catalogue.tokens[catalogue.at + 1] = catalogue.next;
  catalogue.at += 1;
  void loadProducts().catch(showCatalogueError);
});
function toFirstPage(): void {
  catalogue.tokens = [""];
  catalogue.at = 0;
}
$("#show-archived").addEventListener("change", () => {
  toFirstPage();  // the tokens came from the other list: the API refuses them for this one
  void loadProducts().catch(showCatalogueError);
});
$("#more-orders").addEventListener("click", () => void loadOrders(true).catch(() => {}));
renderCart();
whoami().catch(showCatalogueError);

// The typed clients, for the browser's console (and the tests): shop.orders.createOrder({...}).
Object.assign(window, {
  shop: { inventory, orders, notifications, transport, describe, create, ConnectError, Code, createClient,
          InventoryService, OrderService, NotificationService, BadRequestSchema,
          checkoutKey: () => checkoutKey },
});
