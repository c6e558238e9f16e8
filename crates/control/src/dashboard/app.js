// The Weft dashboard: the control plane's own API (the same as `weft`'s), read with the
// token the user gives (kept for this browser tab only), and live: the stats come as
// server-sent events, and the rest is read again with each (polled every 2 s when the
// stream is down). Every value from the API is put on the page as text, never as markup.
"use strict";

const POLL_MS = 2000;
// Horizontal room per column of the topology: a box, and an arrow with its label.
const COLUMN = 420;
let token = sessionStorage.getItem("weft-token") || "";
let tapAbort = null;

// The address may carry a token (`#token=...`, as `weft demo` prints it), taken and then
// removed from it, a view (`view=tap`), a Service to tap at once (`service=NAME`) and how
// many requests to show before the tap stops by itself (`count=N`).
let tapAtOnce = null;
let tapLimit = Infinity;
if (location.hash.includes("=")) {
  const params = new URLSearchParams(location.hash.slice(1));
  if (params.get("token")) {
    token = params.get("token");
    sessionStorage.setItem("weft-token", token);
  }
  tapAtOnce = params.get("service");
  if (params.get("count")) tapLimit = Number(params.get("count"));
  history.replaceState(null, "", `${location.pathname}#${params.get("view") || "topology"}`);
}

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: { Authorization: `Bearer ${token}`, ...(options.headers || {}) },
  });
  if (response.status === 401) {
    showLogin();
    throw new Error("this control plane wants a valid API token");
  }
  if (!response.ok) {
    let message = `${response.status}`;
    try {
      message = (await response.json()).errors.join("; ");
    } catch (_) {}
    throw new Error(message);
  }
  return response;
}

const json = async (path) => (await api(path)).json();

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function svg(tag, attributes) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attributes || {})) node.setAttribute(key, value);
  return node;
}

const percent = (share) => (share === null || share === undefined ? "-" : `${(share * 100).toFixed(2)}%`);
const rate = (rps) => (rps || 0).toFixed(1);
function millis(ms) {
  if (ms === null || ms === undefined) return "-";
  if (ms < 1) return `${ms.toFixed(2)}ms`;
  if (ms < 10) return `${ms.toFixed(1)}ms`;
  if (ms < 1000) return `${ms.toFixed(0)}ms`;
  return `${(ms / 1000).toFixed(2)}s`;
}

function table(node, header, rows, onClick) {
  node.replaceChildren();
  const head = el("tr");
  for (const name of header) head.append(el("th", name));
  node.append(head);
  for (const row of rows) {
    const line = el("tr", null, onClick ? "link" : "");
    for (const cell of row.cells) {
      const td = el("td", cell.text, cell.className);
      line.append(td);
    }
    if (onClick) line.addEventListener("click", () => onClick(row.key));
    node.append(line);
  }
  if (rows.length === 0) {
    const empty = el("tr", null, "empty");
    const td = el("td", "nothing yet");
    td.colSpan = header.length;
    empty.append(td);
    node.append(empty);
  }
}

const goldenCells = (g) => [
  { text: rate(g.rps), className: "num" },
  { text: percent(g.successRate), className: "num" + (g.successRate !== null && g.successRate < 0.95 ? " bad" : "") },
  { text: millis(g.p50Ms), className: "num" },
  { text: millis(g.p99Ms), className: "num" },
  { text: g.denied, className: "num" + (g.denied > 0 ? " warn" : "") },
  { text: percent(g.mtlsShare), className: "num" },
];

// Topology: Services in columns by how far they are from a caller nothing calls.
// Services with a proxy, idle ones too (the stats name only Services with traffic).
let knownServices = [];
let lastView = { services: [], edges: [] };
function drawTopology(view) {
  lastView = view;
  const graph = document.getElementById("graph");
  graph.replaceChildren();
  const names = new Set([...knownServices, ...view.services.map((s) => s.name)]);
  for (const e of view.edges) {
    names.add(e.source);
    names.add(e.destination);
  }
  const depth = new Map([...names].map((n) => [n, 0]));
  for (let round = 0; round < names.size; round++) {
    for (const e of view.edges) {
      if (e.source !== e.destination && depth.get(e.destination) <= depth.get(e.source)) {
        depth.set(e.destination, Math.min(depth.get(e.source) + 1, names.size));
      }
    }
  }
  const columns = new Map();
  for (const name of [...names].sort()) {
    const d = depth.get(name);
    if (!columns.has(d)) columns.set(d, []);
    columns.get(d).push(name);
  }
  const place = new Map();
  let tallest = 1;
  for (const [d, members] of columns) {
    tallest = Math.max(tallest, members.length);
    members.forEach((name, i) => place.set(name, { x: 20 + d * COLUMN, y: 30 + i * 90 }));
  }
  graph.style.height = `${Math.max(200, tallest * 90 + 40)}px`;
  graph.style.minWidth = `${(columns.size || 1) * COLUMN + 40}px`;
  const width = 170, height = 34;
  for (const e of view.edges) {
    const from = place.get(e.source), to = place.get(e.destination);
    const group = svg("g", { class: "edge" + (e.successRate !== null && e.successRate < 0.95 ? " failing" : "") });
    const x1 = from.x + width, y1 = from.y + height / 2, x2 = to.x, y2 = to.y + height / 2;
    group.append(svg("path", { d: `M${x1},${y1} C${x1 + 40},${y1} ${x2 - 40},${y2} ${x2},${y2}` }));
    const label = svg("text", { x: x1 + 8, y: (y1 + y2) / 2 - 6 });
    const lock = e.mtlsShare === 1 ? "🔒 " : e.mtlsShare === null ? "" : "⚠ plain ";
    label.textContent = `${lock}${rate(e.rps)}/s ${percent(e.successRate)} p99 ${millis(e.p99Ms)}${e.denied ? ` denied ${e.denied}` : ""}`;
    group.append(label);
    graph.append(group);
  }
  for (const [name, at] of place) {
    const node = svg("g", { class: "node" });
    node.append(svg("rect", { x: at.x, y: at.y, width, height, rx: 6 }));
    const text = svg("text", { x: at.x + 8, y: at.y + 21 });
    text.textContent = name;
    node.append(text);
    graph.append(node);
  }
}

let selectedService = null;

async function showService(name) {
  selectedService = name;
  const detail = document.getElementById("service-detail");
  const [view, proxies, policies] = await Promise.all([
    json("/api/v1/stats?window=10m"),
    json("/api/v1/proxies"),
    json("/api/v1/resources?kind=AuthorizationPolicy&output=json"),
  ]);
  const [service, namespace] = name.split(".");
  detail.replaceChildren(el("h3", `${name} (last 10 minutes)`));
  const edges = view.edges.filter((e) => e.source === name || e.destination === name);
  const edgeTable = el("table");
  table(edgeTable, ["SOURCE", "DESTINATION", "RPS", "SUCCESS", "P50", "P99", "DENIED", "MTLS"],
    edges.map((e) => ({ cells: [{ text: e.source }, { text: e.destination }, ...goldenCells(e)] })));
  detail.append(el("h4", "Edges"), edgeTable);
  const routeTable = el("table");
  table(routeTable, ["ROUTE", "RPS", "SUCCESS", "P50", "P99", "RETRIES"],
    view.routes.filter((r) => r.destination === name).map((r) => ({
      cells: [{ text: r.route }, { text: rate(r.rps), className: "num" }, { text: percent(r.successRate), className: "num" },
        { text: millis(r.p50Ms), className: "num" }, { text: millis(r.p99Ms), className: "num" }, { text: r.retries, className: "num" }],
    })));
  detail.append(el("h4", "Routes to it"), routeTable);
  const endpointTable = el("table");
  table(endpointTable, ["PROXY", "ADDRESS", "HEALTHY", "IN SYNC", "CERTIFICATE UNTIL"],
    proxies.proxies.filter((p) => p.service === service && p.namespace === namespace).map((p) => ({
      cells: [{ text: p.id }, { text: p.inboundAddress }, { text: p.healthy ? "yes" : `no: ${p.healthDetail}`, className: p.healthy ? "" : "bad" },
        { text: p.inSync ? "yes" : "no" }, { text: p.certificate ? p.certificate.notAfter : "-" }],
    })));
  detail.append(el("h4", "Endpoints"), endpointTable);
  const policyList = el("ul");
  for (const policy of policies.items || []) {
    const target = policy.spec && policy.spec.targetRef;
    if (target && target.name === service && (policy.metadata.namespace || "default") === namespace) {
      const rules = (policy.spec.rules || []).length;
      policyList.append(el("li", `${policy.metadata.name}: ${policy.spec.action || "ALLOW"}, ${rules} rules${policy.spec.mode === "dry-run" ? " (dry run)" : ""}`));
    }
  }
  if (!policyList.children.length) policyList.append(el("li", "no AuthorizationPolicy targets it"));
  detail.append(el("h4", "Authorization policies"), policyList);
}

function showStats(view) {
  drawTopology(view);
  table(document.getElementById("services-table"),
    ["SERVICE", "RPS", "SUCCESS", "P50", "P99", "DENIED", "MTLS"],
    view.services.map((s) => ({ key: s.name, cells: [{ text: s.name }, ...goldenCells(s)] })),
    showService);
}

// Everything but the stats view, which comes by itself on the live stream.
async function refreshRest() {
  const proxies = await json("/api/v1/proxies");
  knownServices = [...new Set(proxies.proxies.map((p) => `${p.service}.${p.namespace}`))];
  drawTopology(lastView);
  table(document.getElementById("proxies-table"),
    ["PROXY", "SERVICE", "IDENTITY", "CONFIG", "IN SYNC", "HEALTHY", "CERTIFICATE UNTIL"],
    proxies.proxies.map((p) => ({ cells: [
      { text: p.id }, { text: `${p.service}.${p.namespace}` },
      { text: p.certificate && p.certificate.spiffeId ? p.certificate.spiffeId : "-" },
      { text: p.ackedVersion || "-" }, { text: p.inSync ? "yes" : "no", className: p.inSync ? "" : "warn" },
      { text: p.healthy ? "yes" : "no", className: p.healthy ? "" : "bad" },
      { text: p.certificate ? p.certificate.notAfter : "-" },
    ] })));
  const findings = await json("/api/v1/diagnose");
  const list = document.getElementById("findings");
  list.replaceChildren();
  for (const f of findings) {
    const item = el("li", null, f.severity);
    item.append(el("strong", f.summary), el("div", f.evidence), el("div", `next: ${f.hint}`));
    list.append(item);
  }
  if (!findings.length) list.append(el("li", "nothing stands out"));
  if (selectedService) await showService(selectedService);
  document.getElementById("status").textContent = `${live ? "live" : "polling"}, updated ${new Date().toLocaleTimeString()}`;
}

// Lines of a streamed response, as they come; `onLine` for each, until the stream ends or
// `signal` aborts it.
async function streamLines(path, signal, onLine) {
  const response = await api(path, { signal });
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let pending = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    pending += decoder.decode(value, { stream: true });
    let end;
    while ((end = pending.indexOf("\n")) >= 0) {
      const line = pending.slice(0, end);
      pending = pending.slice(end + 1);
      if (onLine(line) === false) return;
    }
  }
}

// The stats as server-sent events (`GET /api/v1/stats/live`), read with `fetch` so the token
// goes in a header rather than the address. While it is open the page is live; when it
// breaks the page polls, and opens it again after a while.
let live = false;
async function watchStats() {
  let event = "", data = "";
  try {
    await streamLines("/api/v1/stats/live?window=1m", undefined, (line) => {
      if (line.startsWith("event:")) event = line.slice(6).trim();
      else if (line.startsWith("data:")) data += line.slice(5).trim();
      else if (line === "") {
        if (event === "stats" && data) {
          live = true;
          showStats(JSON.parse(data));
          refreshRest().catch(showError);
        }
        event = "";
        data = "";
      }
    });
  } catch (error) {
    showError(error);
  }
  live = false;
  setTimeout(() => { if (token) watchStats(); }, 5000);
}

function showError(error) {
  document.getElementById("status").textContent = error.message;
}

async function refreshAudit() {
  try {
    const answer = await json("/api/v1/audit?limit=100");
    table(document.getElementById("audit-table"), ["SEQ", "TIME", "ACTOR", "ACTION", "TARGET", "DETAIL"],
      answer.entries.slice().reverse().map((e) => ({ cells: [{ text: e.seq }, { text: e.time }, { text: e.actor },
        { text: e.action }, { text: e.target }, { text: e.detail || "" }] })));
  } catch (error) {
    table(document.getElementById("audit-table"), ["AUDIT LOG"], [{ cells: [{ text: error.message }] }]);
  }
}

async function startTap(event) {
  event.preventDefault();
  stopTap();
  const query = new URLSearchParams({ service: document.getElementById("tap-service").value, maxRps: "20" });
  for (const [field, name] of [["tap-path", "path"], ["tap-method", "method"], ["tap-status", "status"]]) {
    const value = document.getElementById(field).value.trim();
    if (value) query.set(name, value);
  }
  const rows = document.getElementById("tap-table");
  table(rows, ["TIME", "DIRECTION", "SOURCE", "DESTINATION", "METHOD", "PATH", "STATUS", "LATENCY", "ROUTE", "AUTHORIZATION"], []);
  tapAbort = new AbortController();
  document.getElementById("tap-stop").disabled = false;
  let shown = 0;
  try {
    await streamLines(`/api/v1/tap?${query}`, tapAbort.signal, (line) => {
      if (!line.trim()) return true;
      const e = JSON.parse(line);
      const tr = el("tr", null, "tapped");
      for (const text of [e.time, e.direction, e.source, e.destination, e.method, e.path, e.status,
        millis(e.latencyMs), e.route || "", e.authz ? `${e.authz.decision} (${e.authz.policy})` : ""]) {
        tr.append(el("td", text));
      }
      for (const empty of rows.querySelectorAll("tr.empty")) empty.remove();
      rows.insertBefore(tr, rows.children[1] || null);
      while (rows.children.length > 201) rows.lastChild.remove();
      if (++shown >= tapLimit) {
        stopTap();
        return false;
      }
      return true;
    });
  } catch (error) {
    if (error.name !== "AbortError") showError(error);
  }
}

function stopTap() {
  if (tapAbort) tapAbort.abort();
  tapAbort = null;
  document.getElementById("tap-stop").disabled = true;
}

function showLogin() {
  document.getElementById("login").hidden = false;
  document.getElementById("status").textContent = "needs a token";
}

function route() {
  const view = (location.hash || "#topology").slice(1);
  for (const section of document.querySelectorAll("main section")) {
    section.hidden = section.id !== `${view}-view`;
  }
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("active", link.getAttribute("href") === `#${view}`);
  }
  if (view === "audit") refreshAudit();
}

document.getElementById("login").addEventListener("submit", (event) => {
  event.preventDefault();
  token = document.getElementById("token").value.trim();
  sessionStorage.setItem("weft-token", token);
  document.getElementById("login").hidden = true;
  tick();
  watchStats();
});
document.getElementById("tap-form").addEventListener("submit", startTap);
document.getElementById("tap-stop").addEventListener("click", stopTap);
window.addEventListener("hashchange", route);

async function tick() {
  try {
    showStats(await json("/api/v1/stats?window=1m"));
    await refreshRest();
  } catch (error) {
    showError(error);
  }
}

route();
if (!token) showLogin();
else {
  tick();
  watchStats();
}
if (token && tapAtOnce) {
  document.getElementById("tap-service").value = tapAtOnce;
  startTap(new Event("submit"));
}
setInterval(() => { if (token && !live) tick(); }, POLL_MS);
