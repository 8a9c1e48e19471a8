// The shop page, on the contracts' typed client: the stubs protoc-gen-es made from protos/
// (generated/ts) over Connect, or over gRPC-Web with ?transport=grpc-web, both answered by the
// gateway itself. Bundled by esbuild into gateway/static/shop.js (scripts/build_web.py).
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
import { InventoryService } from "@generated/shop/inventory/v1/inventory_pb";
import { type Notification, NotificationService } from "@generated/shop/notification/v1/notification_pb";
import { type Order, Order_Status, OrderService } from "@generated/shop/order/v1/order_pb";
import { BadRequestSchema } from "@generated/google/rpc/error_details_pb";

const $ = <T extends HTMLElement = HTMLElement>(selector: string): T => {
  const found = document.querySelector<T>(selector);
  if (found === null) throw new Error(`the page has no ${selector}`);
  return found;
};
const money = (m: Money | undefined): string =>
  m === undefined ? "" : `${m.currencyCode} ${(Number(m.minorUnits) / 100).toFixed(2)}`;

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

async function loadProducts(): Promise<void> {
  const { products } = await inventory.listProducts({ pageSize: 100 });
  const rows = $<HTMLTableElement>("#products").tBodies[0];
  const select = $<HTMLSelectElement>("#sku");
  const picked = select.value;
  rows.replaceChildren();
  select.replaceChildren();
  for (const p of products) {
    const row = rows.insertRow();
    row.dataset.sku = p.sku;
    for (const [text, cls] of [[p.sku], [p.name], [money(p.price), "num"], [String(p.available), "num available"]]) {
      const cell = row.insertCell();
      cell.textContent = text ?? "";
      if (cls) cell.className = cls;
    }
    select.add(new Option(`${p.name} (${money(p.price)})`, p.sku));
  }
  if (picked) select.value = picked;
}

function showOrder(order: Order): void {
  const status = $("#order-status");
  status.replaceChildren();
  const line = document.createElement("p");
  line.className = order.status === Order_Status.CANCELLED ? "" : "ok";
  line.dataset.orderId = order.orderId;
  line.textContent = `Order ${order.orderId}: ${Order_Status[order.status]}, total ${money(order.total)}`;
  status.append(line);
  if (order.status === Order_Status.CONFIRMED) {
    const cancel = document.createElement("button");
    cancel.className = "secondary";
    cancel.id = "cancel-order";
    cancel.textContent = "Cancel this order";
    cancel.onclick = async () => {
      try {
        showOrder(await orders.cancelOrder({ orderId: order.orderId, reason: "cancelled on the web page" }));
        await loadProducts();
      } catch (error) {
        showError(error);
      }
    };
    status.append(cancel);
  }
}

function showError(error: unknown): void {
  const p = document.createElement("p");
  p.className = "error";
  p.textContent = error instanceof ConnectError || !(error instanceof Error) ? describe(error) : error.message;
  $("#order-status").replaceChildren(p);
}

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
}

$("#order-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const button = $<HTMLButtonElement>("#place-order");
  button.disabled = true;
  try {
    const order = await orders.createOrder({
      requestId: newId(),
      userId: $<HTMLInputElement>("#user").value,
      lines: [{ sku: $<HTMLSelectElement>("#sku").value, quantity: BigInt($<HTMLInputElement>("#quantity").value || "0") }],
    });
    showOrder(order);
    await loadProducts();
  } catch (error) {
    showError(error);
  } finally {
    button.disabled = false;
  }
});

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
  if (!response.ok) {
    user.value = "";
    stream?.abort();
    $("#notifications").replaceChildren();
    $("#stream-state").textContent = "sign in to see notifications";
    return;
  }
  if (auth) {
    $("#who").textContent = me.userId;
    user.value = me.userId;
  }
  follow(user.value);
}

$("#sign-in").addEventListener("submit", async (event) => {
  event.preventDefault();
  const field = $<HTMLInputElement>("#credential");
  const value = field.value.trim();
  field.value = "";
  const response = await fetch("/session", { method: "POST", headers: credentialHeaders(value) });
  if (!response.ok) {
    const refusal = await response.json();
    showError(new Error(`sign-in refused: ${refusal.message || response.status}`));
  }
  await whoami();
});
$("#sign-out").addEventListener("click", async () => {
  await fetch("/session", { method: "DELETE", headers: SAME_SITE });
  await whoami();
});
$("#user").addEventListener("change", () => follow($<HTMLInputElement>("#user").value));
loadProducts().catch(showError);
whoami().catch(showError);

// The typed clients, for the browser's console (and the tests): shop.orders.createOrder({...}).
Object.assign(window, {
  shop: { inventory, orders, notifications, transport, describe, create, ConnectError, Code, createClient,
          InventoryService, OrderService, NotificationService, BadRequestSchema },
});
