// The console: the listeners and hub facts from GET /healthz, and live counters from
// GET /metrics (Prometheus text, parsed here), polled every second and drawn as sparklines of the
// last 60 s. A metric the server has not registered yet (nothing happened) reads as 0.

import { $, el, human } from "./common.js";

const POLL_MS = 1000;
const HEALTH_MS = 5000;
const WINDOW = 60; // samples kept per series
const COLORS = ["#2a9d8f", "#e76f51", "#457b9d", "#e9c46a", "#8d5fd3", "#f4a261", "#6c757d"];

/**
 * What is charted. `kind`: "gauge" (the value) or "rate" (per second, from a counter). `split`:
 * a label whose values get their own line when the metric carries it; the headline is the sum.
 */
const CHARTS = [
  { id: "hub-connections", title: "hub connections", metric: "switchboard_hub_connections", kind: "gauge", split: "transport" },
  { id: "stun-messages", title: "STUN messages/s", metric: "switchboard_stun_messages_received_total", kind: "rate", split: "transport" },
  { id: "turn-allocations", title: "TURN allocations", metric: "switchboard_turn_allocations", kind: "gauge" },
  { id: "relayed-bytes", title: "relayed bytes/s", metric: "switchboard_turn_relayed_bytes_total", kind: "rate", unit: "B/s", split: "direction" },
  { id: "rooms", title: "rooms", metric: "switchboard_hub_rooms", kind: "gauge" },
  { id: "publications", title: "hub publications/s", metric: "switchboard_hub_publications_total", kind: "rate" },
  { id: "signal-messages", title: "signaling messages/s", metric: "switchboard_hub_signal_messages_total", kind: "rate", split: "kind" },
];

// ------------------------------------------------------------------ Prometheus text format

function unescapeLabel(v) {
  return v.replace(/\\(.)/g, (_, c) => (c === "n" ? "\n" : c));
}

function parseValue(v) {
  if (v === "+Inf" || v === "Inf") return Infinity;
  if (v === "-Inf") return -Infinity;
  return Number(v);
}

/** Prometheus exposition text -> Map(name -> [{labels, value}]). Comments and junk are skipped. */
export function parseMetrics(text) {
  const out = new Map();
  const line = /^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?\s*$/;
  const label = /([A-Za-z_][A-Za-z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"/g;
  for (const raw of text.split("\n")) {
    const l = raw.trim();
    if (!l || l.startsWith("#")) continue;
    const m = line.exec(l);
    if (!m) continue;
    const value = parseValue(m[3]);
    if (Number.isNaN(value)) continue;
    const labels = {};
    if (m[2]) for (const [, k, v] of m[2].matchAll(label)) labels[k] = unescapeLabel(v);
    if (!out.has(m[1])) out.set(m[1], []);
    out.get(m[1]).push({ labels, value });
  }
  return out;
}

// ------------------------------------------------------------------ charts

class Chart {
  constructor(def) {
    this.def = def;
    this.history = new Map(); // series name -> values (null = no sample)
    this.previous = new Map(); // series name -> {value, t} for rates
    this.current = null;
    this.lastT = null; // time of the previous scrape
    this.canvas = el("canvas", { width: 320, height: 64 });
    this.value = el("span", { className: "value" }, "–");
    this.legend = el("div", { className: "legend" });
    this.note = el("div", { className: "note muted" });
    this.node = el("article", { className: "chart", dataset: { chart: def.id } },
      el("h3", {}, def.title),
      this.value,
      this.canvas,
      this.legend,
      this.note,
    );
  }

  /** Folds one scrape in: `samples` are the metric's samples (may be empty), `t` in seconds. */
  update(samples, t) {
    const d = this.def;
    const bySeries = new Map();
    const splitBy = d.split && samples.some((s) => d.split in s.labels) ? d.split : null;
    for (const s of samples) {
      const key = splitBy ? s.labels[splitBy] ?? "other" : "total";
      bySeries.set(key, (bySeries.get(key) ?? 0) + s.value);
    }
    if (bySeries.size === 0) bySeries.set("total", 0); // not registered yet: nothing happened
    if (splitBy && this.history.has("total")) {
      // The placeholder of an unregistered metric gives way to its labelled series.
      this.history.delete("total");
      this.previous.delete("total");
    }
    const points = new Map();
    for (const [key, v] of bySeries) {
      if (d.kind === "rate") {
        // A series first seen after an earlier scrape was 0 then (counters appear on first use).
        const prev = this.previous.get(key) ?? (this.lastT !== null ? { value: 0, t: this.lastT } : null);
        this.previous.set(key, { value: v, t });
        const dt = prev ? t - prev.t : 0;
        // A counter that went down was reset (server restart): no rate for this step.
        points.set(key, prev && dt > 0 && v >= prev.value ? (v - prev.value) / dt : prev ? 0 : null);
      } else {
        points.set(key, v);
      }
    }
    for (const key of new Set([...this.history.keys(), ...points.keys()])) {
      if (!this.history.has(key)) this.history.set(key, []);
      const h = this.history.get(key);
      h.push(points.has(key) ? points.get(key) : null);
      while (h.length > WINDOW) h.shift();
    }
    this.lastT = t;
    const known = [...points.values()].filter((v) => v !== null);
    this.current = known.length ? known.reduce((a, b) => a + b, 0) : null;
    this.render();
  }

  render() {
    const d = this.def;
    this.value.textContent = this.current === null ? "–" : human(this.current, d.unit ?? "");
    const keys = [...this.history.keys()].sort();
    const multi = keys.length > 1 || (keys.length === 1 && keys[0] !== "total");
    this.legend.replaceChildren(
      ...(multi
        ? keys.map((k, i) => {
            const h = this.history.get(k);
            const last = h[h.length - 1];
            const sw = el("i", { className: "swatch" });
            sw.style.background = COLORS[i % COLORS.length];
            return el("span", {}, sw, `${k} ${last === null ? "–" : human(last, d.unit ?? "")}`);
          })
        : []),
    );
    this.draw(keys);
  }

  draw(keys) {
    const c = this.canvas;
    const dpr = window.devicePixelRatio || 1;
    const cssW = c.clientWidth || 320;
    const cssH = c.clientHeight || 64;
    if (c.width !== Math.round(cssW * dpr) || c.height !== Math.round(cssH * dpr)) {
      c.width = Math.round(cssW * dpr);
      c.height = Math.round(cssH * dpr);
    }
    const g = c.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, cssW, cssH);
    let max = 0;
    for (const k of keys) for (const v of this.history.get(k)) if (v !== null && Number.isFinite(v)) max = Math.max(max, v);
    max = max > 0 ? max * 1.15 : 1;
    const x = (i) => (i / (WINDOW - 1)) * (cssW - 2) + 1;
    const y = (v) => cssH - 2 - (v / max) * (cssH - 6);
    g.strokeStyle = "#d9dee4";
    g.lineWidth = 1;
    g.beginPath();
    g.moveTo(0, cssH - 1.5);
    g.lineTo(cssW, cssH - 1.5);
    g.stroke();
    keys.forEach((k, n) => {
      const h = this.history.get(k);
      const offset = WINDOW - h.length;
      const color = COLORS[n % COLORS.length];
      g.strokeStyle = color;
      g.lineWidth = 1.6;
      g.beginPath();
      let drawing = false;
      h.forEach((v, i) => {
        if (v === null || !Number.isFinite(v)) {
          drawing = false;
          return;
        }
        if (drawing) g.lineTo(x(offset + i), y(v));
        else g.moveTo(x(offset + i), y(v));
        drawing = true;
      });
      g.stroke();
      if (keys.length === 1) {
        // Fill under a single series.
        g.globalAlpha = 0.12;
        g.fillStyle = color;
        g.beginPath();
        let started = false;
        let lastX = 0;
        h.forEach((v, i) => {
          if (v === null || !Number.isFinite(v)) return;
          if (!started) {
            g.moveTo(x(offset + i), cssH - 1.5);
            started = true;
          }
          g.lineTo(x(offset + i), y(v));
          lastX = x(offset + i);
        });
        if (started) {
          g.lineTo(lastX, cssH - 1.5);
          g.closePath();
          g.fill();
        }
        g.globalAlpha = 1;
      }
    });
  }
}

// ------------------------------------------------------------------ polling

const charts = CHARTS.map((d) => new Chart(d));
const view = { polls: 0, lastError: null, health: null };

function setStatus(text, bad = false) {
  const s = $("#status");
  s.textContent = text;
  s.classList.toggle("bad", bad);
}

async function pollMetrics() {
  try {
    const r = await fetch("/metrics", { cache: "no-store" });
    if (!r.ok) throw new Error(`GET /metrics: HTTP ${r.status}`);
    const metrics = parseMetrics(await r.text());
    const t = performance.now() / 1000;
    for (const c of charts) c.update(metrics.get(c.def.metric) ?? [], t);
    const connects = metrics.get("switchboard_hub_connects_total") ?? [];
    const byTransport = connects
      .filter((s) => s.labels.transport)
      .map((s) => `${s.labels.transport} ${human(s.value)}`)
      .join(", ");
    const hubChart = charts.find((c) => c.def.id === "hub-connections");
    hubChart.note.textContent = byTransport ? `connects so far: ${byTransport}` : "";
    const created = metrics.get("switchboard_turn_allocations_created_total")?.[0]?.value;
    const turnChart = charts.find((c) => c.def.id === "turn-allocations");
    turnChart.note.textContent = created !== undefined ? `created so far: ${human(created)}` : "";
    view.polls += 1;
    view.lastError = null;
    setStatus(`live · updated ${new Date().toLocaleTimeString()}`);
  } catch (e) {
    view.lastError = String(e.message ?? e);
    setStatus(`metrics unavailable: ${view.lastError} (retrying)`, true);
  }
}

function row(k, v) {
  return el("tr", {}, el("th", {}, k), el("td", {}, v ?? "–"));
}

function uptime(secs) {
  const s = Number(secs);
  if (!Number.isFinite(s)) return "–";
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  return `${d ? `${d}d ` : ""}${h}h ${m}m ${Math.floor(s % 60)}s`;
}

async function pollHealth() {
  try {
    const r = await fetch("/healthz", { cache: "no-store" });
    const h = await r.json();
    view.health = h;
    const listeners = h?.components?.listeners ?? [];
    $("#listeners").replaceChildren(
      ...listeners.map((l) =>
        el("tr", {}, el("td", {}, l.protocol), el("td", {}, l.transport), el("td", {}, el("code", {}, l.address)), el("td", {}, l.note ?? "")),
      ),
    );
    const hub = h?.components?.hub ?? {};
    $("#hub").replaceChildren(
      row("status", h?.status),
      row("version", h?.version),
      row("node", hub.node),
      row("broker", hub.broker_status ? `${hub.broker} (${hub.broker_status})` : hub.broker),
      row("connections", hub.connections),
      row("users", hub.users),
      row("channels", hub.channels),
      row("subscriptions", hub.subscriptions),
      row("uptime", uptime(hub.uptime_secs)),
    );
  } catch (e) {
    view.lastError = `GET /healthz: ${e.message ?? e}`;
  }
}

Object.defineProperty(window, "switchboardConsole", {
  value: Object.freeze({
    get polls() { return view.polls; },
    get lastError() { return view.lastError; },
    get values() { return Object.fromEntries(charts.map((c) => [c.def.id, c.current])); },
    get listeners() { return JSON.parse(JSON.stringify(view.health?.components?.listeners ?? [])); },
  }),
});

function start() {
  const box = $("#charts");
  for (const c of charts) box.append(c.node);
  pollHealth();
  pollMetrics();
  setInterval(pollMetrics, POLL_MS);
  setInterval(pollHealth, HEALTH_MS);
}

start();
