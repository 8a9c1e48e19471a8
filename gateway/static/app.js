// The shop page: everything through the gateway's JSON API, notifications over SSE.
// With sign-in on (SHOPMESH_AUTH=on) the key or token the shopper types goes to POST /session once,
// which answers with an HttpOnly cookie: from then on the browser sends it and no script on this
// page can read it. Calls that change something add X-Requested-With, which the gateway asks of
// cookie-signed calls (another site's page cannot add it). The stream is read with fetch.
"use strict";

const $ = (selector) => document.querySelector(selector);
const money = (m) => `${m.currencyCode} ${(Number(m.minorUnits) / 100).toFixed(2)}`;
const newId = () => (crypto.randomUUID ? crypto.randomUUID()
  : "xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx".replace(/[xy]/g, (c) => {
      const r = Math.random() * 16 | 0; return (c === "x" ? r : (r & 0x3) | 0x8).toString(16);
    }));

// A JWT is three base64url parts; anything else is taken for an API key.
const credentialHeaders = (value) =>
  /^[\w-]+\.[\w-]+\.[\w-]*$/.test(value) ? { authorization: `Bearer ${value}` } : { "x-api-key": value };
const SAME_SITE = { "x-requested-with": "shopmesh-page" };

async function api(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: { ...SAME_SITE, ...(body ? { "content-type": "application/json" } : {}) },
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
  if (stream) stream.abort();
  $("#notifications").replaceChildren();
  api("GET", `/v1/users/${encodeURIComponent(user)}/notifications?pageSize=20`)
    .then(({ notifications }) => notifications.reverse().forEach(addNotification))
    .catch(() => {});
  stream = new AbortController();
  readEvents(`/v1/users/${encodeURIComponent(user)}/notifications:stream`, stream.signal);
}

// Server-Sent Events over fetch, as EventSource reads them: `id:`, `event:` and `data:` lines, a
// blank line ends an event; after a drop it reconnects with Last-Event-ID, so nothing is missed.
async function readEvents(path, signal) {
  const state = $("#stream-state");
  let lastId = null;
  while (!signal.aborted) {
    try {
      const headers = { accept: "text/event-stream" };
      if (lastId) headers["last-event-id"] = lastId;
      const response = await fetch(path, { headers, signal });
      if (!response.ok) {
        const problem = await response.json().catch(() => ({}));
        state.textContent = problem.message || `HTTP ${response.status}`;
        if (response.status >= 400 && response.status < 500 && response.status !== 429) return;  // retrying will not help
        throw new Error(state.textContent);
      }
      state.textContent = "live";
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const event = { type: "message", data: [] };
          for (const line of block.split("\n")) {
            const colon = line.indexOf(":");
            if (colon === 0) continue;  // a comment
            const [field, text] = colon < 0 ? [line, ""] : [line.slice(0, colon), line.slice(colon + 1).replace(/^ /, "")];
            if (field === "id") lastId = text;
            else if (field === "event") event.type = text;
            else if (field === "data") event.data.push(text);
          }
          if (event.type === "message" && event.data.length) addNotification(JSON.parse(event.data.join("\n")));
          if (event.type === "error") state.textContent = "stream error: " + (JSON.parse(event.data.join("\n")).message || "");
        }
      }
    } catch (error) {
      if (signal.aborted) return;
    }
    state.textContent = "reconnecting…";
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
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

// Who the page is signed in as (GET /me): with sign-in off, anyone may be typed in the user field;
// with it on, the user is the one the key or token names.
async function whoami() {
  const response = await fetch("/me");
  const me = await response.json();
  if (!response.ok && response.status !== 401) throw new Error(me.message || `HTTP ${response.status}`);
  const auth = response.status === 401 || Boolean(me.auth);  // with sign-in off, /me always answers 200
  const user = $("#user");
  $("#sign-in").hidden = !auth || response.ok;
  $("#signed-in").hidden = !auth || !response.ok;
  user.readOnly = auth;
  if (!response.ok) {
    user.value = "";
    if (stream) stream.abort();
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
  const value = $("#credential").value.trim();
  $("#credential").value = "";
  const response = await fetch("/session", { method: "POST", headers: credentialHeaders(value) });
  if (!response.ok) {
    const refusal = await response.json();
    showError(new Error(`sign-in refused: ${refusal.message || response.status}`));
  }
  await whoami();
});
$("#sign-out").addEventListener("click", async () => {
  await fetch("/session", { method: "DELETE", headers: SAME_SITE });
  whoami();
});
$("#user").addEventListener("change", () => follow($("#user").value));
loadProducts().catch(showError);
whoami().catch(showError);
