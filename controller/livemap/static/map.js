// daolinet live map: plain SVG, no library, no build step.
//
// The page holds no data: it asks the controller's API with a bearer token the
// operator types in, kept in this tab's sessionStorage and sent in the
// Authorization header (never in a URL, which would end in logs and history).
// The picture comes as server-sent events read with fetch (EventSource cannot
// send headers): a `view` event carries the whole bounded picture, first and on
// every change; `connections` events carry the connection log's new entries.
// See docs/architecture.md, "Live map".
"use strict";

const TOKEN_KEY = "daolinet-map-token";
const SVG = "http://www.w3.org/2000/svg";
const API = "/api/v1";
const RETRY_MS = 2000;
const ACTIVITY = 60; // entries kept in the "recent decisions" list

const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  auto: true, // the server opens a small deployment whole
  sites: new Set(),
  hosts: new Set(),
  view: null,
  abort: null,
  selected: null, // node id shown in the details panel
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function html(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (cls) node.className = cls;
  return node;
}

function pathClass(path) {
  const kind = String(path || "external").split(":")[0];
  return ["local", "underlay", "wireguard", "relay", "external", "denied"].includes(kind)
    ? kind : "external";
}

// ---------------------------------------------------------------- API

async function api(path) {
  const answer = await fetch(API + path, {
    headers: { Authorization: "Bearer " + state.token },
    cache: "no-store",
  });
  if (answer.status === 401 || answer.status === 403) {
    signOut("the API refused the token: " + (await detail(answer)));
    throw new Error("refused");
  }
  if (!answer.ok) throw new Error(path + ": " + answer.status + " " + (await detail(answer)));
  return answer.json();
}

async function detail(answer) {
  try {
    const body = await answer.json();
    return typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
  } catch (e) {
    return answer.statusText;
  }
}

function query() {
  const q = new URLSearchParams();
  q.set("auto", String(state.auto));
  for (const s of state.sites) q.append("site", s);
  for (const h of state.hosts) q.append("host", h);
  return q.toString();
}

// ---------------------------------------------------------------- the stream

async function follow() {
  if (state.abort) state.abort.abort();
  const abort = new AbortController();
  state.abort = abort;
  while (!abort.signal.aborted && state.token) {
    try {
      const answer = await fetch(API + "/map/events?" + query(), {
        headers: { Authorization: "Bearer " + state.token, Accept: "text/event-stream" },
        signal: abort.signal,
        cache: "no-store",
      });
      if (answer.status === 401 || answer.status === 403) {
        signOut("the API refused the token: " + (await detail(answer)));
        return;
      }
      if (!answer.ok) throw new Error("events: " + answer.status + " " + (await detail(answer)));
      setStatus("live");
      await readEvents(answer.body, abort.signal);
    } catch (e) {
      if (abort.signal.aborted) return;
      setStatus("reconnecting (" + e.message + ")");
    }
    if (abort.signal.aborted) return;
    await new Promise((done) => setTimeout(done, RETRY_MS));
  }
}

async function readEvents(body, signal) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  while (!signal.aborted) {
    const { value, done } = await reader.read();
    if (done) throw new Error("the stream ended");
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).trim());
      }
      if (data.length) onEvent(event, JSON.parse(data.join("\n")));
    }
  }
}

function onEvent(event, data) {
  if (event === "view") render(data);
  else if (event === "connections") activity(data.entries, data.skipped);
  else if (event === "refused") setStatus(data.detail);
}

// ---------------------------------------------------------------- layout

const CELL_W = 112; // a container: its circle and its name
const CELL_H = 30;
const PAD = 10;
const HEAD = 22; // a box's title line
const CLOSED_HOST = [130, 52];
const CLOSED_SITE = [170, 70];
const ZOOM = 1.8;

function shelf(boxes, maxWidth) {
  // left to right, wrapping at maxWidth; returns the size taken
  let x = 0, y = 0, row = 0, width = 0;
  for (const b of boxes) {
    if (x > 0 && x + b.w > maxWidth) { x = 0; y += row + PAD; row = 0; }
    b.x = x; b.y = y;
    x += b.w + PAD;
    row = Math.max(row, b.h);
    width = Math.max(width, x - PAD);
  }
  return [width, boxes.length ? y + row : 0];
}

function layout(view, width) {
  const hostsOf = new Map(), containersOf = new Map();
  for (const h of view.hosts) {
    if (!hostsOf.has(h.site)) hostsOf.set(h.site, []);
    hostsOf.get(h.site).push(h);
  }
  for (const c of view.containers) {
    if (!containersOf.has(c.host)) containersOf.set(c.host, []);
    containersOf.get(c.host).push(c);
  }
  const sites = view.sites.map((s) => {
    const box = { node: s, kind: "site", children: [] };
    if (!s.open) { [box.w, box.h] = CLOSED_SITE; return box; }
    box.children = (hostsOf.get(s.name) || []).map((h) => {
      const hb = { node: h, kind: "host", children: [] };
      if (!h.open) { [hb.w, hb.h] = CLOSED_HOST; return hb; }
      const cs = containersOf.get(h.name) || [];
      const cols = Math.max(1, Math.min(4, Math.ceil(Math.sqrt(cs.length))));
      hb.children = cs.map((c, i) => ({
        node: c, kind: "container", w: CELL_W, h: CELL_H,
        x: PAD + (i % cols) * CELL_W, y: HEAD + Math.floor(i / cols) * CELL_H,
      }));
      hb.w = Math.max(CLOSED_HOST[0], PAD * 2 + cols * CELL_W);
      hb.h = HEAD + Math.max(1, Math.ceil(cs.length / cols)) * CELL_H + PAD;
      return hb;
    });
    const [w, h] = shelf(box.children, Math.max(width * 0.9, 300));
    for (const c of box.children) { c.x += PAD; c.y += HEAD + PAD; }
    box.w = Math.max(CLOSED_SITE[0], w + PAD * 2);
    box.h = HEAD + PAD + h + PAD;
    return box;
  });
  const [w, h] = shelf(sites, width);
  return { sites, width: w, height: h };
}

// ---------------------------------------------------------------- drawing

function render(view) {
  state.view = view;
  document.body.dataset.viewTime = String(view.time);
  const t = view.totals;
  const cut = Object.entries(view.truncated).filter(([, n]) => n > 0)
    .map(([k, n]) => n + " " + k).join(", ");
  $("totals").textContent = t.sites + " sites, " + t.hosts + " hosts, " + t.containers +
    " containers, " + view.edges.length + " edges" + (cut ? " (not shown: " + cut + ")" : "") +
    (view.partial.length ? " (partial: " + view.partial.join("; ") + ")" : "");
  const svg = $("map");
  const width = Math.max(600, $("canvas").clientWidth - 20);
  const plan = layout(view, width);
  const outsideAt = { x: plan.width + 60, y: 30 };
  svg.replaceChildren();
  // a small deployment is drawn larger, up to ZOOM times, to fill the canvas
  const w = plan.width + 140, h = plan.height + 20;
  const zoom = Math.min(ZOOM, Math.max(1, width / w));
  svg.setAttribute("viewBox", "0 0 " + w + " " + h);
  svg.setAttribute("width", w * zoom);
  svg.setAttribute("height", h * zoom);
  const centers = new Map();
  const nodes = el("g", { class: "nodes" });
  for (const site of plan.sites) drawBox(nodes, site, 10, 10, centers);
  const edges = el("g", { class: "edges" });
  const usesOutside = view.edges.some((e) => e.a === "x:outside" || e.b === "x:outside");
  if (usesOutside) {
    centers.set("x:outside", { x: outsideAt.x + 10, y: outsideAt.y + 10 });
    const g = el("g", { class: "outside", "data-id": "x:outside" });
    g.append(el("circle", { cx: outsideAt.x + 10, cy: outsideAt.y + 10, r: 12 }),
      el("text", { class: "label", x: outsideAt.x - 10, y: outsideAt.y + 40 }, "outside"));
    nodes.append(g);
  }
  const between = new Map(); // spread the edges between one pair of nodes
  for (const e of view.edges) {
    const a = centers.get(e.a), b = centers.get(e.b);
    if (!a || !b) continue;
    const pair = e.a < e.b ? e.a + " " + e.b : e.b + " " + e.a;
    const n = between.get(pair) || 0;
    between.set(pair, n + 1);
    edges.append(drawEdge(e, a, b, n));
  }
  svg.append(nodes, edges);
  if (state.selected && state.selected.startsWith("c:")) {
    const sel = svg.querySelector('[data-id="' + CSS.escape(state.selected) + '"]');
    if (sel) sel.classList.add("selected");
  }
}

function drawBox(parent, box, ox, oy, centers) {
  const x = ox + box.x, y = oy + box.y;
  const n = box.node;
  if (box.kind === "container") {
    const g = el("g", { class: "container", "data-id": n.id, "data-name": n.name });
    const cx = x + 10, cy = y + 10;
    g.append(el("circle", { cx, cy, r: 8 }),
      el("text", { class: "label", x: cx + 12, y: cy + 4 }, n.name),
      el("title", {}, n.name + " " + n.ip + " (" + n.network + ")"));
    g.addEventListener("click", () => showContainer(n.name));
    parent.append(g);
    centers.set(n.id, { x: cx, y: cy });
    return;
  }
  const g = el("g", {
    class: box.kind + "-box " + (n.open ? "opened" : "closed"), "data-id": n.id,
    "data-name": n.name,
  });
  const frame = el("rect", {
    class: "frame " + box.kind + (n.relay ? " relay" : ""), x, y, width: box.w,
    height: box.h, rx: box.kind === "site" ? 10 : 4,
  });
  frame.addEventListener("click", () => toggle(box.kind, n.name, n.open));
  g.append(frame);
  const title = box.kind === "site" ? "site " + n.name : n.name;
  g.append(el("text", { class: "label title", x: x + PAD, y: y + 16 }, title));
  const counts = box.kind === "site"
    ? n.hosts + " hosts, " + n.containers + " containers"
    : n.containers + " containers" + (n.relay ? ", relay" : "");
  if (!n.open) g.append(el("text", { class: "label", x: x + PAD, y: y + 36 }, counts));
  else g.append(el("title", {}, counts));
  parent.append(g);
  centers.set(n.id, { x: x + box.w / 2, y: y + (n.open ? 12 : box.h / 2) });
  for (const child of box.children) drawBox(parent, child, x, y, centers);
}

function drawEdge(e, a, b, n) {
  const cls = "edge path-" + (e.verdict === "deny" ? "denied" : pathClass(e.path));
  const width = Math.min(8, 2 + Math.log2(e.count));
  const attrs = {
    class: cls, "stroke-width": width, "data-id": e.id, "data-a": e.a, "data-b": e.b,
    "data-path": e.path, "data-verdict": e.verdict, "data-count": e.count,
  };
  let shape;
  if (e.a === e.b) { // a node's inner traffic: a loop above it
    const r = 9 + 4 * n;
    shape = el("circle", { ...attrs, cx: a.x + r, cy: a.y - r, r });
  } else {
    const mx = (a.x + b.x) / 2, my = (a.y + b.y) / 2;
    const dx = b.x - a.x, dy = b.y - a.y, len = Math.hypot(dx, dy) || 1;
    const bend = (n % 2 ? -1 : 1) * Math.ceil(n / 2) * 14 + 0.12 * len;
    const qx = mx - (dy / len) * bend, qy = my + (dx / len) * bend;
    shape = el("path", { ...attrs, d: `M${a.x},${a.y} Q${qx},${qy} ${b.x},${b.y}` });
  }
  const label = e.verdict === "deny"
    ? "denied " + (e.src || e.a) + " → " + (e.dst || e.b) + (e.reason ? ": " + e.reason : "")
    : (e.src ? e.src + " ↔ " + e.dst : e.a + " ↔ " + e.b) + " (" + e.path + ")";
  shape.append(el("title", {}, label + (e.count > 1 ? ", " + e.count + " connections" : "")));
  shape.addEventListener("click", () => showEdge(e));
  return shape;
}

// ---------------------------------------------------------------- interaction

function toggle(kind, name, open) {
  if (state.auto && state.view) {
    // leave the server's automatic opening: what is open now stays open
    state.auto = false;
    for (const s of state.view.sites) if (s.open) state.sites.add(s.name);
    for (const h of state.view.hosts) if (h.open) state.hosts.add(h.name);
  }
  const set = kind === "site" ? state.sites : state.hosts;
  if (open) set.delete(name); else set.add(name);
  if (kind === "site" && open && state.view) {
    for (const h of state.view.hosts) if (h.site === name) state.hosts.delete(h.name);
  }
  follow();
}

function panel(title, ...children) {
  const d = $("details");
  d.replaceChildren(html("h2", title), ...children);
}

function list(pairs) {
  const dl = document.createElement("dl");
  for (const [k, v] of pairs) {
    if (v === null || v === undefined || v === "") continue;
    dl.append(html("dt", k), html("dd", String(v)));
  }
  return dl;
}

function entryLine(r) {
  const when = new Date(r.time * 1000).toLocaleTimeString();
  const end = (x) => (x.container || x.ip) + (x.port ? ":" + x.port : "");
  const text = when + " " + r.event + " " + end(r.src) + " → " + end(r.dst) + " " + r.proto +
    (r.path ? " via " + r.path : "") + (r.verdict === "deny" ? " (" + r.reason + ")" : "") +
    (r.count > 1 ? " ×" + r.count : "");
  return html("li", text, r.verdict);
}

async function showContainer(name) {
  state.selected = "c:" + name;
  for (const s of document.querySelectorAll(".container.selected")) s.classList.remove("selected");
  const node = $("map").querySelector('[data-id="' + CSS.escape(state.selected) + '"]');
  if (node) node.classList.add("selected");
  try {
    const c = await api("/map/containers/" + encodeURIComponent(name));
    const rules = html("ol");
    for (const r of c.rules) {
      rules.append(html("li", r.on + ": " + r.action + " from " + r.source + " " + r.protocol +
        (r.ports.length ? " " + r.ports.join(",") : ""), r.action));
    }
    const policies = html("ul");
    for (const p of c.policies) policies.append(html("li", p.action + " " + p.a + " ↔ " + p.b, p.action));
    const recent = html("ol");
    for (const r of (c.connections || []).slice().reverse()) recent.append(entryLine(r));
    panel("container " + c.name,
      list([["address", c.ip], ["host", c.host], ["site", c.site],
        ["network", c.network && c.network.name + " " + c.network.subnet +
          (c.network.external ? " (external)" : "")],
        ["groups", c.groups.join(", ") || "none"], ["docker id", c.docker_id && c.docker_id.slice(0, 12)],
        ["published", c.published.map((p) => p.host_port + "→" + p.container_port + "/" + p.protocol).join(", ")]]),
      html("h2", "Pair policies"), c.policies.length ? policies : html("p", "none"),
      html("h2", "Firewall rules (in order)"), c.rules.length ? rules : html("p", "none"),
      html("h2", "Recent connections"), c.connections === null
        ? html("p", "the connection log is off") : recent);
  } catch (e) {
    panel("container " + name, html("p", e.message));
  }
}

async function showEdge(e) {
  const rows = [["between", e.a + " and " + e.b], ["path", e.path], ["verdict", e.verdict],
    ["connections", e.count]];
  if (e.src) {
    rows.push(["source", e.src + (e.src_ip ? " " + e.src_ip : "")],
      ["destination", e.dst + (e.dst_ip ? " " + e.dst_ip : "")]);
  }
  if (e.verdict === "deny") {
    rows.push(["protocol", e.proto + (e.port ? " " + e.port : "")], ["reason", e.reason],
      ["rule", e.rule_id], ["packets", e.packets]);
  } else if (e.idle !== undefined) {
    rows.push(["age", e.age + " s"], ["idle", e.idle + " s"]);
  }
  panel("connection", list(rows), html("p", e.src ? "" :
    "An aggregate: open the sites and hosts at its ends to see its connections.", "hint"));
  if (!e.src || !e.dst_ip) return;
  try {
    const proto = e.verdict === "deny" && ["tcp", "udp", "icmp"].includes(e.proto) ? e.proto : "icmp";
    const q = new URLSearchParams({ src: e.src_ip, dst: e.dst_ip, proto });
    if (e.port && proto !== "icmp") q.set("port", e.port);
    const t = await api("/trace?" + q.toString());
    const log = await api("/connections?" + new URLSearchParams({
      container: String(e.src), limit: "100" }).toString());
    const mine = log.entries.filter((r) =>
      (r.src.ip === e.src_ip && r.dst.ip === e.dst_ip) ||
      (r.src.ip === e.dst_ip && r.dst.ip === e.src_ip));
    const recent = html("ol");
    for (const r of mine.slice(-20).reverse()) recent.append(entryLine(r));
    $("details").append(html("h2", "trace " + proto + (q.get("port") ? " " + q.get("port") : "")),
      list([["verdict", t.verdict], ["reason", t.reason], ["path", t.path_kind],
        ["hops", t.hops.map((h) => h.host || h.address).join(" → ")]]),
      html("h2", "This pair in the connection log"), mine.length ? recent : html("p", "no entry"));
  } catch (err) {
    $("details").append(html("p", err.message));
  }
}

function activity(entries, skipped) {
  const ol = $("events");
  for (const r of entries) ol.prepend(entryLine(r));
  if (skipped) ol.prepend(html("li", "… a flood: older entries left out", "hint"));
  while (ol.children.length > ACTIVITY) ol.lastChild.remove();
}

// ---------------------------------------------------------------- sign in, out

function setStatus(text) { $("status").textContent = text; }

function signOut(why) {
  if (state.abort) state.abort.abort();
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  $("main").hidden = true;
  $("signout").hidden = true;
  $("collapse").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = why || "";
  setStatus("signed out");
}

function signIn(token) {
  state.token = token;
  sessionStorage.setItem(TOKEN_KEY, token);
  $("login").hidden = true;
  $("main").hidden = false;
  $("signout").hidden = false;
  $("collapse").hidden = false;
  setStatus("connecting");
  follow();
}

document.addEventListener("DOMContentLoaded", () => {
  $("login").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const token = $("token").value.trim();
    $("token").value = "";
    if (token) signIn(token);
  });
  $("signout").addEventListener("click", () => signOut(""));
  $("collapse").addEventListener("click", () => {
    state.auto = false; state.sites.clear(); state.hosts.clear(); follow();
  });
  if (state.token) signIn(state.token);
});

// A page left for another stays in the browser's back/forward cache with its
// stream open, holding one of the replica's 16: close it, and follow again if the
// page is shown from the cache.
window.addEventListener("pagehide", () => { if (state.abort) state.abort.abort(); });
window.addEventListener("pageshow", (ev) => { if (ev.persisted && state.token) follow(); });
