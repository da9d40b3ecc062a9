// The session console: follows GET /sessions/events with the API key the person enters and
// shows every session. Plain script, no build step; everything it shows comes from the
// bearer-protected API, and every value is written as text, never as HTML.
"use strict";

const KEY = "whatsapp-operator.apiKey";
const STATUSES = ["CONNECTING", "CONNECTED", "AUTHENTICATED", "DISCONNECTED", "CLOSING"];
const COLUMNS = [
  ["id", "ID"], ["sessionId", "Session"], ["namespace", "Namespace"], ["status", "Stored status"],
  ["connectionStatus", "Connection"], ["isAuthenticated", "Authenticated"], ["startTime", "Started"],
  ["restarts", "Restarts"], ["pairing", "Pairing"],
];

const $ = (id) => document.getElementById(id);
const rows = new Map(); // id -> row as the stream sent it
const pairing = new Map(); // id -> { version, objectUrl, code, expiresAt }
let lastEventId = null;
let abort = null;
let retryDelay = 1000;

function setState(state, text) {
  document.body.dataset.state = state;
  $("link").textContent = text;
}

function showProblem(text) {
  $("problem").textContent = text;
  $("problem").hidden = !text;
}

function key() {
  return sessionStorage.getItem(KEY);
}

// --- the stream ------------------------------------------------------------------------------

async function follow() {
  if (abort) abort.abort();
  abort = new AbortController();
  const headers = { Authorization: `Bearer ${key()}`, Accept: "text/event-stream" };
  if (lastEventId) headers["Last-Event-ID"] = lastEventId;
  setState("connecting", "Connecting…");
  let resp;
  try {
    resp = await fetch("/sessions/events", { headers, signal: abort.signal, cache: "no-store" });
  } catch (err) {
    if (err.name === "AbortError") return;
    return unreachable(`Cannot reach the operator (${err.message}).`);
  }
  if (resp.status === 401) {
    const body = await resp.json().catch(() => ({}));
    sessionStorage.removeItem(KEY);
    lock(`The API key was refused: ${body.message || "unauthorized"}. Enter a valid key.`);
    setState("refused", "Key refused");
    return;
  }
  if (!resp.ok) {
    return unreachable(`The operator answered ${resp.status} ${resp.statusText}.`);
  }
  setState("live", "Live");
  showProblem("");
  retryDelay = 1000;
  try {
    await readEvents(resp.body.getReader());
  } catch (err) {
    if (err.name === "AbortError") return;
  }
  unreachable("The operator closed the stream.");
}

function unreachable(why) {
  const seconds = Math.round(retryDelay / 1000);
  setState("unreachable", "Operator away");
  showProblem(`${why} Retrying in ${seconds} s; the table shows the last known state.`);
  setTimeout(() => key() && follow(), retryDelay);
  retryDelay = Math.min(retryDelay * 2, 15000);
}

async function readEvents(reader) {
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      dispatch(frame);
    }
  }
}

function dispatch(frame) {
  let event = "message", data = "", id = null;
  for (const line of frame.split("\n")) {
    if (line.startsWith(":")) continue; // a keep-alive comment
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") event = value;
    else if (field === "data") data += (data ? "\n" : "") + value;
    else if (field === "id") id = value;
  }
  if (!data) return;
  if (id) lastEventId = id;
  const payload = JSON.parse(data);
  if (event === "snapshot") {
    rows.clear();
    for (const row of payload.data) rows.set(row.id, row);
    render(null);
  } else if (event === "session") {
    rows.set(payload.id, payload);
    render(payload.id);
  } else if (event === "deleted") {
    rows.delete(payload.id);
    render(null);
  }
}

// --- the page ----------------------------------------------------------------------------------

function render(changedId) {
  renderCounts();
  const filter = $("filter").value.trim().toLowerCase();
  const sorted = [...rows.values()].sort((a, b) => a.id - b.id);
  const shown = sorted.filter((r) => !filter || matches(r, filter));
  const body = document.querySelector("#sessions tbody");
  const existing = new Map([...body.rows].map((tr) => [Number(tr.dataset.id), tr]));
  const wanted = shown.map((row) => {
    const known = existing.get(row.id);
    const tr = known || document.createElement("tr");
    existing.delete(row.id);
    // One event changes one row: the others are left as they are.
    if (!known || changedId === null || row.id === changedId) fillRow(tr, row);
    if (row.id === changedId) {
      tr.classList.remove("changed");
      void tr.offsetWidth; // restarts the highlight
      tr.classList.add("changed");
    }
    return tr;
  });
  for (const tr of existing.values()) tr.remove();
  wanted.forEach((tr, i) => {
    if (body.rows[i] !== tr) body.insertBefore(tr, body.rows[i] || null);
  });
  $("shown").textContent = filter ? `${shown.length} of ${rows.size} shown` : `${rows.size} sessions`;
  $("empty").hidden = rows.size > 0;
  for (const id of pairing.keys()) if (!rows.has(id) || !rows.get(id).pairing) forgetPairing(id);
}

function renderCounts() {
  const counts = Object.fromEntries(STATUSES.map((s) => [s, 0]));
  for (const row of rows.values()) counts[row.connectionStatus] = (counts[row.connectionStatus] || 0) + 1;
  const section = $("counts");
  section.replaceChildren(
    countBox("total", "TOTAL", rows.size),
    ...STATUSES.map((s) => countBox(s.toLowerCase(), s, counts[s])),
  );
}

function countBox(name, label, n) {
  const div = document.createElement("div");
  div.className = "count";
  div.dataset.count = name;
  const b = document.createElement("b");
  b.textContent = String(n);
  const span = document.createElement("span");
  span.className = `status ${label}`;
  span.textContent = label;
  div.append(b, span);
  return div;
}

function matches(row, filter) {
  return [row.id, row.sessionId, row.namespace, row.status, row.connectionStatus]
    .some((v) => String(v).toLowerCase().includes(filter));
}

function fillRow(tr, row) {
  tr.dataset.id = row.id;
  if (tr.cells.length !== COLUMNS.length) {
    tr.replaceChildren(...COLUMNS.map(([field, label]) => {
      const td = document.createElement("td");
      td.dataset.field = field;
      td.dataset.label = label;
      return td;
    }));
  }
  const cell = (field) => tr.querySelector(`td[data-field="${field}"]`);
  cell("id").textContent = String(row.id);
  cell("sessionId").textContent = row.sessionId;
  cell("namespace").textContent = row.namespace;
  cell("status").textContent = row.status;
  const conn = cell("connectionStatus");
  conn.textContent = row.connectionStatus;
  conn.className = `status ${row.connectionStatus}`;
  cell("isAuthenticated").textContent = row.isAuthenticated ? "yes" : "no";
  const started = cell("startTime");
  started.textContent = row.startTime == null ? "—" : new Date(row.startTime).toLocaleString();
  started.title = row.startTime == null ? "not active" : new Date(row.startTime).toISOString();
  cell("restarts").textContent = String(row.restarts);
  const pair = cell("pairing");
  pair.className = "pairing";
  if (!row.pairing) {
    pair.textContent = row.isAuthenticated ? "paired" : "—";
  } else {
    showPairing(pair, row);
  }
}

// --- pairing -----------------------------------------------------------------------------------

function showPairing(td, row) {
  const version = `${row.pairing.method}/${row.pairing.expiresAt}`;
  let p = pairing.get(row.id);
  if (!p || p.version !== version) {
    forgetPairing(row.id);
    p = { version, objectUrl: null, code: null, expiresAt: Date.parse(row.pairing.expiresAt), error: null };
    pairing.set(row.id, p);
    fetchPairing(row, p);
  }
  drawPairing(td, row, p);
}

async function fetchPairing(row, p) {
  const base = `/sessions/${encodeURIComponent(row.sessionId)}`;
  const ns = `namespace=${encodeURIComponent(row.namespace)}`;
  const url = row.pairing.method === "QRCode" ? `${base}/qr?${ns}&size=256` : `${base}/pairing-code?${ns}`;
  try {
    const resp = await fetch(url, { headers: { Authorization: `Bearer ${key()}` }, cache: "no-store" });
    if (!resp.ok) {
      const body = await resp.json().catch(() => ({}));
      p.error = body.message || `${resp.status}`;
    } else if (row.pairing.method === "QRCode") {
      p.objectUrl = URL.createObjectURL(await resp.blob());
    } else {
      p.code = (await resp.json()).data.code;
    }
  } catch (err) {
    p.error = err.message;
  }
  if (pairing.get(row.id) !== p) {
    if (p.objectUrl) URL.revokeObjectURL(p.objectUrl);
    return;
  }
  const tr = document.querySelector(`#sessions tbody tr[data-id="${row.id}"]`);
  if (tr && rows.has(row.id)) drawPairing(tr.querySelector('td[data-field="pairing"]'), rows.get(row.id), p);
}

function drawPairing(td, row, p) {
  const parts = [];
  if (p.error) {
    parts.push(text("span", `cannot load the code: ${p.error}`));
  } else if (row.pairing.method === "QRCode") {
    if (p.objectUrl) {
      const img = document.createElement("img");
      img.src = p.objectUrl;
      img.alt = `QR code to pair ${row.sessionId}`;
      parts.push(img, text("small", "WhatsApp › Linked devices › Link a device"));
    } else {
      parts.push(text("span", "loading the QR code…"));
    }
  } else if (p.code) {
    parts.push(text("span", p.code, "code"), text("small", "WhatsApp › Linked devices › Link with phone number"));
  }
  const left = Math.max(0, Math.round((p.expiresAt - Date.now()) / 1000));
  const expiry = text("small", left > 0 ? `expires in ${left} s` : "expired; waiting for a new code");
  expiry.dataset.expiry = "";
  parts.push(expiry);
  td.replaceChildren(...parts);
}

function forgetPairing(id) {
  const p = pairing.get(id);
  if (p && p.objectUrl) URL.revokeObjectURL(p.objectUrl);
  pairing.delete(id);
}

function text(tag, content, className) {
  const el = document.createElement(tag);
  el.textContent = content;
  if (className) el.className = className;
  return el;
}

// The time left on each code, once a second.
setInterval(() => {
  for (const [id, p] of pairing) {
    const td = document.querySelector(`#sessions tbody tr[data-id="${id}"] td[data-field="pairing"] [data-expiry]`);
    if (!td) continue;
    const left = Math.max(0, Math.round((p.expiresAt - Date.now()) / 1000));
    td.textContent = left > 0 ? `expires in ${left} s` : "expired; waiting for a new code";
  }
}, 1000);

// --- the key -------------------------------------------------------------------------------------

function lock(problem) {
  if (abort) abort.abort();
  $("key-form").hidden = false;
  $("console").hidden = true;
  showProblem(problem || "");
  setState("locked", "Not connected");
  $("key").focus();
}

function unlock() {
  $("key-form").hidden = true;
  $("console").hidden = false;
  lastEventId = null;
  follow();
}

document.addEventListener("DOMContentLoaded", () => {
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem(KEY, $("key").value.trim());
    $("key").value = "";
    unlock();
  });
  $("forget").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    rows.clear();
    for (const id of [...pairing.keys()]) forgetPairing(id);
    render(null);
    lock("");
  });
  $("filter").addEventListener("input", () => render(null));
  if (key()) unlock();
  else lock("");
});
