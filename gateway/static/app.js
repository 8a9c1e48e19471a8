// The shop page: everything through the gateway's JSON API, notifications over SSE.
"use strict";

const $ = (selector) => document.querySelector(selector);
const money = (m) => `${m.currencyCode} ${(Number(m.minorUnits) / 100).toFixed(2)}`;
const newId = () => (crypto.randomUUID ? crypto.randomUUID()
  : "xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx".replace(/[xy]/g, (c) => {
      const r = Math.random() * 16 | 0; return (c === "x" ? r : (r & 0x3) | 0x8).toString(16);
    }));

async function api(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: body ? { "content-type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  const data = await response.json();
  if (!response.ok) throw new Error(data.message || `HTTP ${response.status}`);
  return data;
}

async function loadProducts() {
  const { products } = await api("GET", "/v1/products?pageSize=100");
  const rows = $("#products tbody");
  const select = $("#sku");
  const chosen = select.value;
  rows.replaceChildren();
  select.replaceChildren();
  for (const p of products) {
    const row = rows.insertRow();
    row.dataset.sku = p.sku;
    for (const [text, cls] of [[p.sku], [p.name], [money(p.price), "num"], [p.available, "num available"]]) {
      const cell = row.insertCell();
      cell.textContent = text;
      if (cls) cell.className = cls;
    }
    select.add(new Option(`${p.name} (${money(p.price)})`, p.sku));
  }
  if (chosen) select.value = chosen;
}

function showOrder(order) {
  const status = $("#order-status");
  status.replaceChildren();
  const line = document.createElement("p");
  line.className = order.status === "CANCELLED" ? "" : "ok";
  line.dataset.orderId = order.orderId;
  line.textContent = `Order ${order.orderId}: ${order.status}, total ${money(order.total)}`;
  status.append(line);
  if (order.status === "CONFIRMED") {
    const cancel = document.createElement("button");
    cancel.className = "secondary";
    cancel.id = "cancel-order";
    cancel.textContent = "Cancel this order";
    cancel.onclick = async () => {
      try {
        showOrder(await api("POST", `/v1/orders/${encodeURIComponent(order.orderId)}:cancel`, { reason: "cancelled on the web page" }));
        await loadProducts();
      } catch (error) { showError(error); }
    };
    status.append(cancel);
  }
}

function showError(error) {
  const p = document.createElement("p");
  p.className = "error";
  p.textContent = error.message;
  $("#order-status").replaceChildren(p);
}

let stream = null;
function follow(user) {
  if (stream) stream.close();
  $("#notifications").replaceChildren();
  api("GET", `/v1/users/${encodeURIComponent(user)}/notifications?pageSize=20`)
    .then(({ notifications }) => notifications.reverse().forEach(addNotification))
    .catch(() => {});
  stream = new EventSource(`/v1/users/${encodeURIComponent(user)}/notifications:stream`);
  stream.onopen = () => { $("#stream-state").textContent = "live"; };
  stream.onerror = () => { $("#stream-state").textContent = "reconnecting…"; };
  stream.onmessage = (event) => addNotification(JSON.parse(event.data));
}

function addNotification(n) {
  if (document.querySelector(`[data-event-id="${CSS.escape(n.eventId)}"]`)) return;
  const item = document.createElement("li");
  item.dataset.eventId = n.eventId;
  item.dataset.kind = n.kind;
  item.textContent = n.subject;
  const detail = document.createElement("small");
  detail.textContent = `${n.body} · ${new Date(n.createTime).toLocaleTimeString()}`;
  item.append(detail);
  $("#notifications").prepend(item);
}

$("#order-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const button = $("#place-order");
  button.disabled = true;
  try {
    const order = await api("POST", "/v1/orders", {
      requestId: newId(),
      userId: $("#user").value,
      lines: [{ sku: $("#sku").value, quantity: String($("#quantity").value) }],
    });
    showOrder(order);
    await loadProducts();
  } catch (error) {
    showError(error);
  } finally {
    button.disabled = false;
  }
});

$("#user").addEventListener("change", () => follow($("#user").value));
loadProducts().catch(showError);
follow($("#user").value);
