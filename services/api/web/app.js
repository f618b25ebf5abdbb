// Eunomia dashboard: vanilla JS, no build, no external resources.
// Every value from events is inserted with textContent (events are attacker-controlled data).
"use strict";

const API = "/api/v1";
const MAX_ALERTS = 200;
const $ = (sel) => document.querySelector(sel);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c == null ? "" : (c instanceof Node ? c : String(c)));
  return e;
}

function svgEl(tag, attrs) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

function fmtTime(ns) {
  if (!ns) return "";
  const d = new Date(Number(BigInt(ns) / 1000000n));
  return d.toISOString().replace("T", " ").replace("Z", "");
}

// ---- token ----
const token = {
  get() { return localStorage.getItem("eunomia.token") || ""; },
  set(t) { localStorage.setItem("eunomia.token", t); },
  fromUrl() {
    const url = new URL(location.href);
    const t = url.searchParams.get("token");
    if (t) {
      this.set(t);
      url.searchParams.delete("token");
      history.replaceState(null, "", url.pathname + url.search + url.hash);
    }
  },
  ask() {
    const d = $("#token-dialog");
    if (!d.open) d.showModal();
  },
};

class AuthError extends Error {}

async function api(path, params) {
  const url = new URL(API + path, location.origin);
  for (const [k, v] of Object.entries(params || {})) if (v !== "" && v != null) url.searchParams.set(k, v);
  const r = await fetch(url, { headers: { Authorization: "Bearer " + token.get() } });
  let body = null;
  try { body = await r.json(); } catch (e) { /* not JSON */ }
  if (r.status === 401) { token.ask(); throw new AuthError((body && body.error) || "unauthorized"); }
  if (!r.ok) throw new Error((body && body.error) || `HTTP ${r.status}`);
  return body;
}

// ---- live alerts ----
let alertCount = 0;
const alertIds = new Set();  // history and live feed may both carry an alert
function addAlert(a) {
  if (alertIds.has(a.id)) return;
  alertIds.add(a.id);
  const prio = String(a.priority || "").toLowerCase();
  const where = whereOf({ container: a.container || (a.event && a.event.container) || null,
                          k8s: a.k8s || (a.event && a.event.k8s) || null });
  const li = el("li", { class: `alert new p-${prio}`, "data-rule": a.rule || "" },
    el("div", {}, el("span", { class: "prio" }, prio), el("span", { class: "rule" }, a.rule || "(rule)")),
    el("div", { class: "output" }, a.output || ""),
    el("div", { class: "meta" }, `${fmtTime(a.ts)} · ${a.node || ""} · ${where}`));
  const list = $("#alerts-list");
  list.prepend(li);
  while (list.children.length > MAX_ALERTS) list.lastChild.remove();
  if (alertIds.size > 10 * MAX_ALERTS) alertIds.clear();
  $("#alerts-count").textContent = String(++alertCount);
}

let ws = null, wsRetry = 1000;
function connectAlerts() {
  if (!token.get()) return;
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  ws = new WebSocket(`${proto}//${location.host}${API}/alerts/ws?token=${encodeURIComponent(token.get())}`);
  const status = $("#ws-status");
  ws.onopen = () => { status.textContent = "live: on"; status.className = "status on"; wsRetry = 1000; };
  ws.onmessage = (m) => {
    let msg;
    try { msg = JSON.parse(m.data); } catch (e) { return; }
    if (msg.type === "alert" && msg.alert) addAlert(msg.alert);
  };
  ws.onclose = () => {
    status.textContent = "live: off"; status.className = "status off";
    setTimeout(connectAlerts, wsRetry);
    wsRetry = Math.min(wsRetry * 2, 30000);
  };
}

async function loadRecentAlerts() {
  try {
    const page = await api("/alerts", { limit: 50 });
    for (const a of page.items.slice().reverse()) addAlert(a);
  } catch (e) { if (!(e instanceof AuthError)) console.warn("alerts:", e.message); }
}

// ---- containers, grouped by Kubernetes namespace ----
const K8S_NS = "io.kubernetes.pod.namespace", K8S_POD = "io.kubernetes.pod.name";
const NO_NS = "(not in Kubernetes)";

function namespaceOf(c) { return (c.labels && c.labels[K8S_NS]) || ""; }

async function loadContainers() {
  const body = $("#containers-table tbody");
  let items;
  try { items = (await api("/containers")).items; } catch (e) {
    body.replaceChildren(el("tr", {}, el("td", { colspan: 6, class: "error" }, e.message)));
    return;
  }
  const groups = new Map();
  for (const c of items) {
    const ns = namespaceOf(c);
    if (!groups.has(ns)) groups.set(ns, []);
    groups.get(ns).push(c);
  }
  const names = [...groups.keys()].sort((a, b) => (a === "") - (b === "") || a.localeCompare(b));
  const rows = [];
  for (const ns of names) {
    const head = el("tr", { class: "group" + (ns ? " clickable" : ""), "data-namespace": ns },
      el("td", { colspan: 6 }, `${ns || NO_NS} · ${groups.get(ns).length}`));
    if (ns) head.addEventListener("click", () => chooseNamespace(ns));
    rows.push(head);
    for (const c of groups.get(ns)) {
      const tr = el("tr", { class: "clickable", "data-id": c.id, "data-namespace": ns },
        el("td", {}, (c.labels && c.labels[K8S_POD]) || ""),
        el("td", {}, c.name || String(c.id).slice(0, 12)), el("td", {}, c.image || ""), el("td", {}, c.node || ""),
        el("td", {}, c.events ?? ""), el("td", {}, fmtTime(c.last_seen)));
      tr.addEventListener("click", () => chooseContainer(c.id));
      rows.push(tr);
    }
  }
  body.replaceChildren(...rows);
  if (!items.length) body.append(el("tr", {}, el("td", { colspan: 6, class: "empty" }, "no containers seen yet")));
  const sel = $("#tree-container");
  const keep = sel.value;
  sel.replaceChildren(el("option", { value: "" }, "(choose a container)"),
    ...items.map((c) => el("option", { value: c.id }, c.name || String(c.id).slice(0, 12))));
  sel.value = keep;
}

function chooseNamespace(ns) {
  const f = $("#event-form");
  f.elements.container.value = "";
  f.elements.pod.value = "";
  f.elements.namespace.value = ns;
  searchEvents(true);
}

function chooseContainer(id) {
  $("#tree-container").value = id;
  loadTree();
  const f = $("#event-form");
  f.elements.container.value = id.slice(0, 12);
  f.elements.namespace.value = "";
  f.elements.pod.value = "";
  searchEvents(true);
}

// ---- event search ----
const pager = { cursors: [null], index: 0, next: null };

function eventDetail(e) {
  const p = e.proc || {};
  if (e.kind === "fork") return `child ${e.child_pid}`;
  if (e.kind === "exit") return `exit ${e.exit_code}`;
  if (e.kind === "exec") return (p.cmdline || (e.argv || []).join(" ") || e.filename || "");
  if (["connect", "accept"].includes(e.kind)) return `${e.saddr || ""}:${e.sport ?? ""} → ${e.daddr || ""}:${e.dport ?? ""}`;
  for (const k of ["path", "newpath", "target", "name"]) if (e[k]) return (e.oldpath ? e.oldpath + " → " : "") + e[k];
  return p.cmdline || "";
}

function whereOf(e) {
  if (!e.container) return "host";
  const name = e.container.name || String(e.container.id).slice(0, 12);
  return e.k8s && e.k8s.pod ? `${e.k8s.namespace}/${e.k8s.pod}/${name}` : name;
}

async function searchEvents(fresh) {
  const f = $("#event-form");
  if (fresh) { pager.cursors = [null]; pager.index = 0; }
  const params = {};
  for (const k of ["kind", "container", "namespace", "pod", "pid", "q", "since", "limit"]) {
    params[k] = f.elements[k].value.trim();
  }
  params.cursor = pager.cursors[pager.index];
  const err = $("#events-error");
  const body = $("#events-table tbody");
  let page;
  try { page = await api("/events", params); err.hidden = true; } catch (e) {
    err.textContent = e.message; err.hidden = false; body.replaceChildren(); return;
  }
  pager.next = page.next_cursor;
  body.replaceChildren(...page.items.map((e) => el("tr", { "data-id": e.id, "data-kind": e.kind },
    el("td", {}, fmtTime(e.ts)), el("td", {}, e.kind),
    el("td", {}, whereOf(e)),
    el("td", {}, e.pid), el("td", {}, e.comm || ""), el("td", { class: "detail" }, eventDetail(e)))));
  if (!page.items.length) body.append(el("tr", {}, el("td", { colspan: 6, class: "empty" }, "no events match")));
  $("#events-prev").disabled = pager.index === 0;
  $("#events-next").disabled = !pager.next;
  $("#events-page").textContent = `page ${pager.index + 1}`;
}

// ---- process tree ----
function treeNode(p) {
  const args = Array.isArray(p.args) ? p.args.join(" ") : (p.args || "");
  const li = el("li", { class: p.exited ? "exited" : "", "data-pid": p.pid },
    el("span", { class: "pid" }, p.pid), " ", p.exe || p.comm || "?", args ? "  " + args : "");
  if (p.children && p.children.length) li.append(el("ul", {}, ...p.children.map(treeNode)));
  return li;
}

async function loadTree() {
  const id = $("#tree-container").value;
  const box = $("#tree");
  if (!id) { box.replaceChildren(el("p", { class: "empty" }, "choose a container")); return; }
  try {
    const items = (await api("/processes/tree", { container: id })).items;
    box.replaceChildren(items.length ? el("ul", {}, ...items.map(treeNode)) : el("p", { class: "empty" }, "no processes"));
  } catch (e) { box.replaceChildren(el("p", { class: "error" }, e.message)); }
}

// ---- network map (cytoscape.js, vendored by deploy/bootstrap.sh; force-directed "cose" layout) ----
// window.eunomiaMap is the live state (tests drive the map through it).
const map = window.eunomiaMap = { cy: null, graph: { nodes: [], edges: [] }, layouts: 0, selected: null };
const GROUP_NONE = { namespace: "(no namespace)", pod: "(no pod)", node: "(external)" };

function mapStyle() {
  return [
    { selector: "node", style: { label: "data(label)", "font-size": 9, color: "#d8dee6", "text-valign": "bottom",
      "text-margin-y": 3, width: 14, height: 14, "background-color": "#4aa3ff", "min-zoomed-font-size": 7,
      "text-max-width": 140, "text-wrap": "ellipsis" } },
    { selector: "node.host", style: { "background-color": "#9b7bff", shape: "round-rectangle" } },
    { selector: "node.external", style: { "background-color": "#ff9f0a", shape: "diamond" } },
    { selector: "node.named", style: { "background-color": "#ffd60a" } },
    { selector: "node.group", style: { "background-color": "#1b2631", "background-opacity": 0.6, "border-width": 1,
      "border-color": "#2a3440", shape: "round-rectangle", "text-valign": "top", "font-size": 11, color: "#8a96a3",
      padding: 12 } },
    { selector: "node:selected", style: { "border-width": 3, "border-color": "#ffffff" } },
    { selector: "edge", style: { width: "mapData(count, 1, 100, 1, 5)", "line-color": "#4a5a6a",
      "target-arrow-color": "#4a5a6a", "target-arrow-shape": "triangle", "curve-style": "straight",
      "arrow-scale": 0.6, label: "data(label)", "font-size": 7, color: "#8a96a3", "text-rotation": "autorotate",
      "min-zoomed-font-size": 8, "text-background-color": "#121920", "text-background-opacity": 0.7 } },
    { selector: "edge.named", style: { "line-color": "#8a7a2a", "target-arrow-color": "#8a7a2a" } },
    { selector: "edge.hl", style: { "line-color": "#4aa3ff", "target-arrow-color": "#4aa3ff", "z-index": 10 } },
  ];
}

function groupOf(n, by) {
  if (!by) return null;
  if (n.kind === "external") return "(external)";
  return n[by] || GROUP_NONE[by];
}

function edgeLabel(e) {
  return `${e.proto || ""}/${e.port ?? ""}${e.name ? " " + e.name : ""} ×${e.count}`;
}

// The graph as cytoscape elements, filtered by namespace (a container in it, and everything it talks to).
function mapElements(g, ns, by) {
  let edges = g.edges, nodes = g.nodes;
  if (ns) {
    const inNs = new Set(nodes.filter((n) => n.namespace === ns).map((n) => n.id));
    edges = edges.filter((e) => inNs.has(e.source) || inNs.has(e.target));
    const keep = new Set([...inNs, ...edges.flatMap((e) => [e.source, e.target])]);
    nodes = nodes.filter((n) => keep.has(n.id));
  }
  const els = [], groups = new Set();
  for (const n of nodes) {
    const grp = groupOf(n, by);
    if (grp) groups.add(grp);
    els.push({ group: "nodes", data: { id: n.id, label: n.label || n.id, kind: n.kind, parent: grp ? "g:" + grp : undefined },
               classes: n.kind + ((n.names || []).length ? " named" : "") });
  }
  for (const grp of groups) els.push({ group: "nodes", data: { id: "g:" + grp, label: grp }, classes: "group" });
  edges.forEach((e) => els.push({ group: "edges", data: { id: `e:${e.source}>${e.target}:${e.proto}:${e.port}`,
    source: e.source, target: e.target, count: e.count, label: edgeLabel(e) }, classes: e.name ? "named" : "" }));
  return els;
}

function mapOptions(g) {
  const sel = $("#graph-ns"), cur = sel.value;
  const names = [...new Set(g.nodes.map((n) => n.namespace).filter(Boolean))].sort();
  sel.replaceChildren(el("option", { value: "" }, "all namespaces"), ...names.map((n) => el("option", { value: n }, n)));
  sel.value = names.includes(cur) ? cur : "";
}

// The first layout starts from random positions; later ones (new nodes on refresh) start from the
// current ones, so the map does not jump. Big maps get fewer iterations (cose is O(n^2) per iteration).
function runLayout(refit) {
  const first = map.layouts === 0, n = map.cy.nodes().length;
  const lay = map.cy.layout({ name: "cose", animate: false, randomize: first, fit: first || refit, padding: 20,
                              numIter: n > 150 ? 300 : 600, nodeRepulsion: () => 6000, idealEdgeLength: () => 60,
                              componentSpacing: 60 });
  lay.one("layoutstop", () => { map.layouts++; });
  lay.run();
}

function drawMap(refit) {
  const box = $("#graph");
  if (typeof cytoscape !== "function") {
    box.replaceChildren(el("p", { class: "error" }, "graph library missing: run `make bootstrap` (it vendors cytoscape.js)"));
    return;
  }
  const els = mapElements(map.graph, $("#graph-ns").value, $("#graph-group").value);
  if (!map.cy) {
    map.cy = cytoscape({ container: box, elements: [], style: mapStyle(), minZoom: 0.05, maxZoom: 6,
                         textureOnViewport: true, hideEdgesOnViewport: true, motionBlur: false, pixelRatio: 1 });
    map.cy.on("tap", "node", (evt) => { if (!evt.target.hasClass("group")) showNode(evt.target.id()); });
    map.cy.on("tap", (evt) => { if (evt.target === map.cy) clearSelection(); });
  }
  const cy = map.cy;
  const want = new Map(els.map((e) => [e.data.id, e]));
  const structure = (x) => `${x.data.parent || ""}`;
  let changed = false;
  cy.batch(() => {
    cy.elements().forEach((x) => {
      const w = want.get(x.id());
      if (!w || (x.isNode() && structure({ data: x.data() }) !== structure(w))) { x.remove(); changed = true; }
    });
    const add = [];
    for (const [id, e] of want) {
      const x = cy.getElementById(id);
      if (x.nonempty()) { x.data(e.data); x.classes(e.classes); } else { add.push(e); changed = true; }
    }
    const nodes = add.filter((e) => e.group === "nodes");
    nodes.sort((a, b) => (a.classes === "group" ? 0 : 1) - (b.classes === "group" ? 0 : 1));  // parents first
    cy.add([...nodes, ...add.filter((e) => e.group === "edges")]);
  });
  if (changed) runLayout(refit === true);
  const real = cy.nodes().not(".group");
  $("#graph-stats").textContent = `${real.length} nodes, ${cy.edges().length} connections`;
  if (!real.length) $("#graph-detail").replaceChildren(el("p", { class: "empty" }, "no connections seen yet"));
}

function clearSelection() {
  map.selected = null;
  if (map.cy) map.cy.edges().removeClass("hl");
}

async function showNode(id) {
  const n = map.graph.nodes.find((x) => x.id === id);
  if (!n) return;
  map.selected = id;
  map.cy.edges().removeClass("hl");
  map.cy.getElementById(id).connectedEdges().addClass("hl");
  const box = $("#graph-detail");
  const conns = map.graph.edges.filter((e) => e.source === id || e.target === id)
    .sort((a, b) => (b.last_seen || 0) - (a.last_seen || 0)).slice(0, 100);
  const label = (nid) => (map.graph.nodes.find((x) => x.id === nid) || {}).label || nid;
  const items = conns.map((e) => el("li", { "data-peer": e.source === id ? e.target : e.source },
    e.source === id ? "→ " : "← ", label(e.source === id ? e.target : e.source), ` ${e.proto || ""}/${e.port ?? ""} ×${e.count} `,
    e.name ? el("span", { class: "name" }, e.name) : "", el("span", { class: "hint" }, " " + fmtTime(e.last_seen))));
  const meta = [n.kind, n.namespace && `ns ${n.namespace}`, n.pod && `pod ${n.pod}`, n.node && `node ${n.node}`]
    .filter(Boolean).join(" · ");
  const alertsList = el("ul", { id: "graph-alerts" }, el("li", { class: "empty" }, "loading…"));
  box.replaceChildren(el("h3", {}, n.label || n.id), el("p", { class: "hint" }, meta),
    (n.names || []).length ? el("p", {}, "DNS: ", el("span", { class: "name" }, n.names.join(", "))) : "",
    el("h4", {}, `Recent connections (${conns.length})`), el("ul", { id: "graph-conns" }, ...items),
    el("h4", {}, "Alerts"), alertsList);
  const kind = id.slice(0, id.indexOf(":"));
  const params = kind === "c" ? { container: id.slice(2), limit: 20 } : { q: id.slice(id.indexOf(":") + 1), limit: 20 };
  try {
    const got = (await api("/alerts", params)).items;
    if (map.selected !== id) return;
    alertsList.replaceChildren(...(got.length ? got.map((a) => el("li", { "data-rule": a.rule },
      el("span", { class: "prio" }, a.priority), a.rule, el("span", { class: "hint" }, " " + fmtTime(a.ts))))
      : [el("li", { class: "empty" }, "none")]));
  } catch (e) { alertsList.replaceChildren(el("li", { class: "error" }, e.message)); }
}

async function loadGraph() {
  const secs = $("#graph-since").value;
  const params = secs ? { since: String(BigInt(Date.now() - Number(secs) * 1000) * 1000000n) } : {};
  try { map.graph = await api("/network/graph", params); } catch (e) {
    $("#graph-stats").textContent = e.message;
    return;
  }
  mapOptions(map.graph);
  drawMap();
}

// ---- performance: top table and flame graph ----
let topSort = "cpu";
async function loadTop() {
  const body = $("#top-table tbody");
  let items;
  try { items = (await api("/top", { sort: topSort })).items; } catch (e) {
    body.replaceChildren(el("tr", {}, el("td", { colspan: 11, class: "error" }, e.message)));
    return;
  }
  const dash = (v) => (v == null ? "-" : v);
  body.replaceChildren(...items.map((r) => el("tr", { "data-container": r.container },
    el("td", {}, r.container), el("td", {}, r.node), el("td", {}, (r.cpu * 100).toFixed(1) + " %"),
    el("td", {}, r.events_s), el("td", {}, Math.round(r.block_bytes_s)), el("td", {}, Math.round(r.file_bytes_s)),
    el("td", {}, Math.round(r.net_bytes_s)),
    el("td", {}, r.connects_s),
    el("td", {}, dash(r.runq_p99_ms)), el("td", {}, r.oom_kills), el("td", {}, r.alerts))));
  if (!items.length) body.append(el("tr", {}, el("td", { colspan: 11, class: "empty" }, "no figures from the probes yet")));
  const sel = $("#profile-container");
  const keep = sel.value;
  sel.replaceChildren(el("option", { value: "" }, "(choose a container)"),
    ...items.map((r) => el("option", { value: r.container }, r.container)));
  sel.value = keep;
}

function flameTree(folded) {
  const root = { name: "all", n: 0, c: new Map() };
  for (const [stack, n] of Object.entries(folded)) {
    let node = root;
    root.n += n;
    for (const f of stack.split(";")) {
      if (!node.c.has(f)) node.c.set(f, { name: f, n: 0, c: new Map() });
      node = node.c.get(f);
      node.n += n;
    }
  }
  return root;
}

function drawFlame(folded, title) {
  const box = $("#flame");
  const root = flameTree(folded);
  if (!root.n) { box.replaceChildren(el("p", { class: "empty" }, `${title}: no samples (idle?)`)); return; }
  const W = 1000, H = 17, rects = [];
  let depth = 0;
  (function walk(node, x, d) {
    for (const child of [...node.c.values()].sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const w = (child.n / root.n) * W;
      if (w >= 0.5) { rects.push([x, d, w, child]); depth = Math.max(depth, d); walk(child, x, d + 1); }
      x += w;
    }
  })(root, 0, 0);
  const height = (depth + 1) * H;
  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${height}`, class: "flame-svg", preserveAspectRatio: "none" });
  for (const [x, d, w, node] of rects) {
    const g = svgEl("g", { class: node.name.endsWith("_[k]") ? "kernel" : "user" });
    const t = svgEl("title", {});
    t.textContent = `${node.name} (${node.n} samples, ${((node.n * 100) / root.n).toFixed(1)} %)`;
    g.append(t, svgEl("rect", { x: x.toFixed(1), y: height - (d + 1) * H, width: Math.max(w - 0.3, 0.2).toFixed(1), height: H - 1 }));
    if (w > 30) {
      const label = svgEl("text", { x: (x + 3).toFixed(1), y: height - d * H - 5 });
      label.textContent = node.name.slice(0, Math.floor(w / 7));
      g.append(label);
    }
    svg.append(g);
  }
  box.replaceChildren(el("p", { class: "hint" }, `${title}: ${root.n} samples`), svg);
}

async function profileContainer(e) {
  e.preventDefault();
  const form = new FormData($("#profile-form"));
  const container = form.get("container");
  if (!container) return;
  const status = $("#profile-status");
  status.textContent = `sampling ${container} for ${form.get("seconds")} s ...`;
  try {
    const prof = await api("/profile", { container, seconds: form.get("seconds") });
    status.textContent = `${prof.samples} samples, ${prof.truncated} with truncated stacks`;
    drawFlame(prof.folded, container);
  } catch (err) { status.textContent = err.message; }
}

// ---- wiring ----
function loadAll() {
  loadRecentAlerts();
  loadContainers();
  searchEvents(true);
  loadGraph();
  loadTree();
  loadTop();
  if (!ws || ws.readyState === WebSocket.CLOSED) connectAlerts();
}

document.addEventListener("DOMContentLoaded", () => {
  token.fromUrl();
  $("#token-form").addEventListener("submit", () => {
    token.set($("#token-input").value.trim());
    if (ws) { ws.onclose = null; ws.close(); ws = null; }
    loadAll();
  });
  $("#token-change").addEventListener("click", () => token.ask());
  $("#event-form").addEventListener("submit", (e) => { e.preventDefault(); searchEvents(true); });
  $("#events-next").addEventListener("click", () => {
    if (!pager.next) return;
    pager.cursors[pager.index + 1] = pager.next; pager.index++; searchEvents(false);
  });
  $("#events-prev").addEventListener("click", () => { if (pager.index > 0) { pager.index--; searchEvents(false); } });
  $("#containers-refresh").addEventListener("click", loadContainers);
  $("#graph-refresh").addEventListener("click", loadGraph);
  $("#graph-since").addEventListener("change", loadGraph);
  $("#graph-ns").addEventListener("change", () => drawMap(true));
  $("#graph-group").addEventListener("change", () => drawMap(true));
  $("#graph-fit").addEventListener("click", () => { if (map.cy) map.cy.fit(undefined, 20); });
  $("#tree-container").addEventListener("change", loadTree);
  $("#profile-form").addEventListener("submit", profileContainer);
  for (const th of document.querySelectorAll("#top-table th[data-sort]")) {
    th.classList.add("clickable");
    th.addEventListener("click", () => { topSort = th.dataset.sort; loadTop(); });
  }
  setInterval(() => { if (token.get()) loadTop(); }, 5000);
  if (!token.get()) token.ask(); else loadAll();
  setInterval(() => { if (token.get()) { loadContainers(); loadGraph(); } }, 15000);
});
