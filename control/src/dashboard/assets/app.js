// Weft's dashboard: plain JavaScript over the control plane's JSON API
// (docs/observability.md). One view at a time, chosen by the URL's hash:
//
//   #/                         services: golden metrics, one row per version under each
//   #/workloads                the same per workload
//   #/service/NS/NAME          latency (p50/p95/p99), success and RPS over time; routes
//   #/canary/NS/NAME           the route's backends side by side: weight, success, latency
//   #/topology                 who calls whom, with latency and success on each edge
//   #/tap                      the live request stream
//
// Every view re-reads its data every REFRESH_MS (the control plane scrapes
// the proxies every 5 s by default). Cells carry their raw number in
// `data-value`, and <body data-state> says "ready" once a view has drawn
// from fresh data, so a browser test can read what a user sees.
"use strict";

const REFRESH_MS = 5000;
const WINDOW = "30s";
const SERIES_WINDOW = "10m";
const TAP_LINES = 500;

const view = document.getElementById("view");
const statusLine = document.getElementById("status");
let timer = null;
let cleanup = [];
let refreshes = 0;

// ---------- plumbing ----------

async function api(path) {
  const rsp = await fetch(path, { headers: { Accept: "application/json" } });
  let body = null;
  try {
    body = await rsp.json();
  } catch (_) {
    throw new Error(`${path}: HTTP ${rsp.status}, not JSON`);
  }
  if (!rsp.ok) throw new Error(`${path}: ${body && body.error ? body.error : "HTTP " + rsp.status}`);
  return body;
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("data")) node.setAttribute(k.replace(/[A-Z]/g, (c) => "-" + c.toLowerCase()), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function svgEl(tag, attrs, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

const fmt = {
  success: (v) => (v === null || v === undefined ? "-" : (v * 100).toFixed(2) + "%"),
  rps: (v) => (v === null || v === undefined ? "-" : v.toFixed(1)),
  ms: (v) => (v === null || v === undefined ? "-" : v < 10 ? v.toFixed(2) + " ms" : v.toFixed(1) + " ms"),
  int: (v) => (v === null || v === undefined ? "-" : String(Math.round(v))),
  weight: (v) => (v === null || v === undefined ? "-" : String(v)),
};

function successClass(v) {
  if (v === null || v === undefined) return "";
  return v >= 0.99 ? "ok" : v >= 0.95 ? "warn" : "bad";
}

// A cell showing `value` formatted, with the raw number for tests.
function cell(col, value, format, extraClass) {
  const cls = [extraClass, col === "success" ? successClass(value) : ""].filter(Boolean).join(" ");
  return el("td", { dataCol: col, dataValue: value === null || value === undefined ? "" : value, class: cls || null },
    format(value));
}

function table(headers, rows) {
  const head = el("tr", {}, ...headers.map((h, i) => el("th", { class: i === 0 ? "text" : null }, h)));
  return el("table", {}, el("thead", {}, head), el("tbody", {}, ...rows));
}

function ready() {
  refreshes += 1;
  document.body.dataset.state = "ready";
  document.body.dataset.refreshes = String(refreshes);
  statusLine.className = "status";
  statusLine.textContent = "updated " + new Date().toLocaleTimeString();
}

function failed(err) {
  document.body.dataset.state = "error";
  statusLine.className = "status error";
  statusLine.textContent = String(err.message || err);
}

// Runs `draw` now and every REFRESH_MS until the view changes.
function every(draw) {
  const tick = () => draw().then(ready, failed);
  tick();
  timer = setInterval(tick, REFRESH_MS);
}

// ---------- services and workloads ----------

const STAT_HEADERS = ["NAME", "MESHED", "REQUESTS", "SUCCESS", "RPS", "LATENCY_P50", "LATENCY_P95", "LATENCY_P99", "TCP_CONN"];

function statRow(r, link) {
  const key = `${r.namespace}/${r.name}`;
  const name = r.version ? `${r.version}` : link ? el("a", { href: link }, key) : key;
  return el("tr", { dataKey: key, dataVersion: r.version || "", class: r.version ? "version" : null },
    el("td", { class: "text", dataCol: "name" }, name),
    el("td", { dataCol: "meshed", dataValue: r.meshed }, r.meshed),
    cell("requests", r.requests, fmt.int),
    cell("success", r.success, fmt.success),
    cell("rps", r.rps, fmt.rps),
    cell("p50_ms", r.p50_ms, fmt.ms),
    cell("p95_ms", r.p95_ms, fmt.ms),
    cell("p99_ms", r.p99_ms, fmt.ms),
    cell("tcp_conn", r.tcp_conn, fmt.int));
}

function statView(by) {
  return async () => {
    const stat = await api(`/api/stat?by=${by}&window=${WINDOW}`);
    const title = by === "service" ? "Services" : "Workloads";
    const rows = stat.rows.map((r) =>
      statRow(r, by === "service" ? `#/service/${r.namespace}/${r.name}` : null));
    view.replaceChildren(
      el("h1", {}, title),
      el("p", { class: "note" }, `Inbound: what each ${by} answered, at its door; requests and rates over the last ${stat.window_seconds} s.`),
      rows.length ? table(STAT_HEADERS, rows) : el("p", { dataEmpty: "true" }, "No meshed traffic yet."));
  };
}

// ---------- one service over time ----------

// A uPlot line chart; `series` is [[label, values]], `t` unix seconds.
function chart(title, unit, t, series, yRange) {
  const box = el("div", { class: "chart", dataChart: title });
  box.append(el("h3", {}, title));
  const colors = ["#2458c6", "#b35900", "#c0262d", "#1a7f37", "#6f42c1", "#5b6676"];
  const opts = {
    width: 560,
    height: 200,
    scales: { x: { time: true }, y: yRange ? { range: yRange } : {} },
    series: [{}].concat(series.map(([label], i) => ({
      label,
      stroke: colors[i % colors.length],
      width: 1.5,
      spanGaps: false,
      value: (u, v) => (v === null || v === undefined ? "-" : unit(v)),
    }))),
    axes: [{}, { size: 72, values: (u, vals) => vals.map((v) => (v === null ? "" : unit(v))) }],
  };
  const data = [t].concat(series.map(([, values]) => values));
  const plot = new uPlot(opts, data, box);
  cleanup.push(() => plot.destroy());
  // The newest point of each line, for tests and for screen readers.
  const latest = el("p", { class: "note" });
  for (const [label, values] of series) {
    const last = [...values].reverse().find((v) => v !== null && v !== undefined);
    latest.append(el("span", { dataSeries: label, dataValue: last === undefined ? "" : last },
      `${label}: ${last === undefined ? "-" : unit(last)}  `));
  }
  box.append(latest);
  return box;
}

const ROUTE_HEADERS = ["ROUTE", "BACKEND", "WEIGHT", "SUCCESS", "RPS", "LATENCY_P50", "LATENCY_P95", "LATENCY_P99"];

function routeRows(routes) {
  return routes.rows.map((r) =>
    el("tr", { dataKey: `${r.route}|${r.backend}` },
      el("td", { class: "text", dataCol: "route" }, r.route),
      el("td", { class: "text", dataCol: "backend" }, r.backend),
      cell("weight", r.weight, fmt.weight),
      cell("success", r.success, fmt.success),
      cell("rps", r.rps, fmt.rps),
      cell("p50_ms", r.p50_ms, fmt.ms),
      cell("p95_ms", r.p95_ms, fmt.ms),
      cell("p99_ms", r.p99_ms, fmt.ms)));
}

// Axis and legend units of the charts.
const pct = (v) => (v * 100).toFixed(1) + "%";
const ms = (v) => v.toFixed(v < 10 ? 2 : 1) + " ms";
const rps = (v) => v.toFixed(1);

// A service's series and routes, read together; the charts they replace
// are destroyed only once both arrived.
async function seriesAndRoutes(id) {
  const both = await Promise.all([
    api(`/api/series?service=${encodeURIComponent(id)}&window=${SERIES_WINDOW}`),
    api(`/api/routes?service=${encodeURIComponent(id)}&window=${WINDOW}`),
  ]);
  for (const f of cleanup.splice(0)) f();
  return both;
}

function serviceView(ns, name) {
  return async () => {
    const id = `${ns}/${name}`;
    const [series, routes] = await seriesAndRoutes(id);
    const all = series.series.all || { rps: [], success: [], p50_ms: [], p95_ms: [], p99_ms: [] };
    const charts = el("div", { class: "charts" },
      chart("Latency", ms, series.t, [["p50", all.p50_ms], ["p95", all.p95_ms], ["p99", all.p99_ms]]),
      chart("Success rate", pct, series.t, [["success", all.success]], [0, 1]),
      chart("Requests per second", rps, series.t, [["rps", all.rps]]));
    const routeTable = routes.rows.length
      ? table(ROUTE_HEADERS, routeRows(routes))
      : el("p", { class: "note" }, "No route traffic: callers reach this service without an HTTPRoute.");
    view.replaceChildren(
      el("h1", {}, `Service ${id}`),
      el("p", { class: "note" }, `Every ${series.step_seconds} s over the last ${SERIES_WINDOW}. `,
        el("a", { href: `#/canary/${ns}/${name}` }, "Compare versions")),
      charts,
      el("h2", {}, "Routes (as callers saw them)"),
      routeTable);
  };
}

// ---------- canary: versions side by side ----------

function canaryView(ns, name) {
  return async () => {
    const id = `${ns}/${name}`;
    const [series, routes] = await seriesAndRoutes(id);
    // One card per backend of the routes (a canary's leaves), with its weight.
    const total = routes.rows.reduce((s, r) => s + (r.weight || 0), 0);
    const cards = routes.rows.map((r) => {
      const share = total > 0 && r.weight !== null ? (100 * r.weight) / total : null;
      return el("div", { class: "card", dataBackend: r.backend, dataRoute: r.route },
        el("h3", {}, r.backend),
        el("div", { class: "weight-bar" }, el("span", { style: `width:${share === null ? 0 : share}%` })),
        el("dl", {},
          el("dt", {}, "weight"), el("dd", { dataCol: "weight", dataValue: r.weight ?? "" },
            r.weight === null ? "-" : `${r.weight}${share === null ? "" : ` (${share.toFixed(0)}%)`}`),
          el("dt", {}, "success"), el("dd", { dataCol: "success", dataValue: r.success ?? "" }, fmt.success(r.success)),
          el("dt", {}, "rps"), el("dd", { dataCol: "rps", dataValue: r.rps ?? "" }, fmt.rps(r.rps)),
          el("dt", {}, "p50"), el("dd", { dataCol: "p50_ms", dataValue: r.p50_ms ?? "" }, fmt.ms(r.p50_ms)),
          el("dt", {}, "p95"), el("dd", { dataCol: "p95_ms", dataValue: r.p95_ms ?? "" }, fmt.ms(r.p95_ms)),
          el("dt", {}, "p99"), el("dd", { dataCol: "p99_ms", dataValue: r.p99_ms ?? "" }, fmt.ms(r.p99_ms))));
    });
    const versions = Object.keys(series.series).filter((v) => v !== "all").sort();
    const pick = (k) => versions.map((v) => [v, series.series[v][k]]);
    view.replaceChildren(
      el("h1", {}, `Canary: ${id}`),
      el("p", { class: "note" }, "Each backend of the service's routes, as its callers saw it, with the weight in force now; "
        + "below, the service's pods by version over time."),
      cards.length ? el("div", { class: "side-by-side" }, ...cards)
        : el("p", { dataEmpty: "true" }, "No route splits this service's traffic."),
      versions.length ? el("div", { class: "charts" },
        chart("p99 latency by version", ms, series.t, pick("p99_ms")),
        chart("Success rate by version", pct, series.t, pick("success"), [0, 1]),
        chart("Requests per second by version", rps, series.t, pick("rps")))
        : el("p", { class: "note" }, "Its pods carry no version label."));
  };
}

// ---------- topology ----------

// Columns by depth (a caller left of what it calls), rows in name order;
// an edge is a curve labelled with its latency, success and rate.
function layout(edges) {
  const nodes = new Map();
  const key = (ns, n) => `${ns}/${n}`;
  for (const e of edges) {
    nodes.set(key(e.src_ns, e.src), { ns: e.src_ns, name: e.src });
    nodes.set(key(e.dst_ns, e.dst), { ns: e.dst_ns, name: e.dst });
  }
  const depth = new Map([...nodes.keys()].map((k) => [k, 0]));
  // Longest path from a root, bounded by the node count (cycles stop there).
  for (let i = 0; i < nodes.size; i++) {
    let changed = false;
    for (const e of edges) {
      const s = key(e.src_ns, e.src), d = key(e.dst_ns, e.dst);
      if (s !== d && depth.get(d) < depth.get(s) + 1 && depth.get(s) + 1 < nodes.size) {
        depth.set(d, depth.get(s) + 1);
        changed = true;
      }
    }
    if (!changed) break;
  }
  const columns = [];
  for (const [k, d] of depth) (columns[d] = columns[d] || []).push(k);
  const pos = new Map();
  columns.forEach((col, x) => col.sort().forEach((k, y) => pos.set(k, { x: 30 + x * 380, y: 40 + y * 110 })));
  return { nodes, pos, key, width: 380 * Math.max(columns.length, 1) - 170, height: 110 * Math.max(...columns.map((c) => c.length), 1) + 40 };
}

async function topologyView() {
  const edges = await api(`/api/edges?window=${WINDOW}`);
  if (!edges.rows.length) {
    view.replaceChildren(el("h1", {}, "Topology"), el("p", { dataEmpty: "true" }, "No edges yet."));
    return;
  }
  const { nodes, pos, key, width, height } = layout(edges.rows);
  const W = 150, H = 36;
  const svg = svgEl("svg", { class: "topology", width, height, viewBox: `0 0 ${width} ${height}` });
  for (const e of edges.rows) {
    const a = pos.get(key(e.src_ns, e.src)), b = pos.get(key(e.dst_ns, e.dst));
    const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2;
    const mx = (x1 + x2) / 2;
    const latency = `p50 ${fmt.ms(e.p50_ms)} · p99 ${fmt.ms(e.p99_ms)}`;
    const rate = `${fmt.success(e.success)} · ${fmt.rps(e.rps)} rps${e.secured ? "" : " · plaintext"}`;
    svg.append(svgEl("g", {
      class: "edge" + (e.secured ? "" : " unsecured"),
      "data-src": key(e.src_ns, e.src), "data-dst": key(e.dst_ns, e.dst),
      "data-success": e.success ?? "", "data-rps": e.rps ?? "", "data-p50-ms": e.p50_ms ?? "",
      "data-p99-ms": e.p99_ms ?? "", "data-secured": String(e.secured),
    },
    svgEl("path", { d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2 - 6},${y2}`, "marker-end": "url(#arrow)" }),
    svgEl("text", { x: mx, y: (y1 + y2) / 2 - 18, "text-anchor": "middle" }, latency),
    svgEl("text", { x: mx, y: (y1 + y2) / 2 - 5, "text-anchor": "middle" }, rate),
    svgEl("title", {}, `${e.client_id || "(no identity)"} → ${e.server_id || "(no identity)"}`)));
  }
  for (const [k, n] of nodes) {
    const p = pos.get(k);
    svg.append(svgEl("g", { class: "node", "data-node": k },
      svgEl("rect", { x: p.x, y: p.y, width: W, height: H, rx: 4 }),
      svgEl("text", { x: p.x + 8, y: p.y + 22 }, `${n.name}`),
      svgEl("title", {}, k)));
  }
  svg.prepend(svgEl("defs", {}, svgEl("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5,
    markerWidth: 6, markerHeight: 6, orient: "auto" }, svgEl("path", { d: "M0,0 L10,5 L0,10 z", fill: "#8a96a8" }))));
  view.replaceChildren(el("h1", {}, "Topology"),
    el("p", { class: "note" }, `Last ${edges.window_seconds || 30} s. Dashed: plaintext.`), svg);
}

// ---------- tap ----------

function tapLine(ev) {
  const dir = ev.direction === "inbound" ? "in" : "out";
  const head = `id=${ev.id} proxy=${dir} src=${ev.source} dst=${ev.destination} tls=${ev.tls}`;
  const who = `${ev.namespace}/${ev.workload}`;
  if (ev.request) return `req ${head} :method=${ev.request.method} :authority=${ev.request.authority} :path=${ev.request.path}  [${who}]`;
  if (ev.response) return `rsp ${head} :status=${ev.response.status} latency=${ev.response.latency_us}µs  [${who}]`;
  if (ev.end) return `end ${head} duration=${ev.end.duration_us}µs response-length=${ev.end.response_bytes}B  [${who}]`;
  if (ev.error) return `error: ${ev.error}`;
  return JSON.stringify(ev);
}

function tapView(params) {
  const form = el("form", { class: "tap" },
    el("label", {}, "namespace ", el("input", { name: "namespace", value: params.get("namespace") || "default", size: 10 })),
    el("label", {}, "workload ", el("input", { name: "workload", value: params.get("workload") || "", size: 12 })),
    el("label", {}, "path prefix ", el("input", { name: "path", value: params.get("path") || "", size: 12 })),
    el("label", {}, "max rps ", el("input", { name: "max_rps", value: params.get("max_rps") || "10", size: 4 })),
    el("button", { type: "submit" }, "Tap"));
  const out = el("pre", { class: "tap", id: "tap-lines" });
  const count = el("span", { class: "note", id: "tap-count", dataValue: "0" }, "0 events");
  view.replaceChildren(el("h1", {}, "Live tap"), form, count, out);
  let source = null;
  const start = () => {
    if (source) source.close();
    out.replaceChildren();
    const q = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (v) q.set(k, v);
    const max = Number(params.get("max") || 0);
    let n = 0;
    source = new EventSource(`/api/tap?${q}`);
    source.onopen = () => ready();
    source.onmessage = (m) => {
      const ev = JSON.parse(m.data);
      n += 1;
      out.append(el("div", { dataEvent: ev.request ? "req" : ev.response ? "rsp" : ev.end ? "end" : "other" }, tapLine(ev)));
      while (out.childElementCount > TAP_LINES) out.firstElementChild.remove();
      count.textContent = `${n} events`;
      count.dataset.value = String(n);
      if (max && n >= max) source.close();
    };
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED) failed(new Error("tap stream closed"));
    };
  };
  form.addEventListener("submit", (e) => { e.preventDefault(); start(); });
  cleanup.push(() => source && source.close());
  start();
}

// ---------- routing ----------

function route() {
  clearInterval(timer);
  for (const f of cleanup.splice(0)) f();
  document.body.dataset.state = "loading";
  const [path, query] = location.hash.replace(/^#/, "").split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean);
  const section = parts[0] || "services";
  for (const a of document.querySelectorAll("nav a")) {
    a.classList.toggle("active", a.dataset.nav === section || (section === "service" && a.dataset.nav === "services")
      || (section === "canary" && a.dataset.nav === "services"));
  }
  switch (section) {
    case "services": return every(statView("service"));
    case "workloads": return every(statView("workload"));
    case "service": return every(serviceView(parts[1], parts[2]));
    case "canary": return every(canaryView(parts[1], parts[2]));
    case "topology": return every(topologyView);
    case "tap": return tapView(params);
    default:
      view.replaceChildren(el("h1", {}, "Not found"), el("p", {}, el("a", { href: "#/" }, "Services")));
      return ready();
  }
}

window.addEventListener("hashchange", route);
route();
