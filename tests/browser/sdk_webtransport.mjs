#!/usr/bin/env node
// The JavaScript SDK over WebTransport in a real browser: Debian's Chromium (never a downloaded
// one), driven by playwright-core, for crates/cli/tests/it/sdk_webtransport.rs.
//
// Pages on a second loopback origin (a static server here, http://localhost:PORT, as in
// sdk_e2e.mjs) load the SDK (the binary's /sdk/switchboard.js, or --sdk FILE served here) and
// make clients with `transports: ["webtransport"]`. Chromium accepts the server's self-made
// certificate for WebTransport only through `serverCertificateHashes` (--hash: SHA-256 of an
// ECDSA certificate valid for at most 14 days), which the page passes as the SDK's
// `webtransportOptions`; --wt is the session URL (https://127.0.0.1:HTTPS/v1/wt). Scenarios:
//
//   webtransport  alice connects over WebTransport (client.transport, and the server's
//                 switchboard_hub_connects_total{transport="webtransport"} grows by one) and
//                 subscribes; bob joins the channel over the WebSocket; a publication made
//                 through the server API reaches both; alice publishes JSON and binary data,
//                 both reach bob (JSON as JSON, bytes as a Uint8Array) and the server's history;
//                 alice reads history, presence (both users) and presenceStats, and sees bob join
//                 and leave; the server disconnects alice (3011): she reconnects over
//                 WebTransport and recovers the publication made meanwhile, once
//   room          two clients over WebTransport call each other with client.joinRoom()
//                 (signaling through the protobuf codec: SDP offers and answers, trickled
//                 candidates): roles, the data channel open both ways, a message each way, the
//                 leave seen (in a loopback-only namespace Chromium needs the server's STUN, from
//                 /v1/ice-servers, for the two to find each other)
//   fallback      WebTransport refused: without the certificate hash (the handshake fails), and
//                 to a port nothing listens on; each client ends on the WebSocket, and the
//                 webtransport connect counter does not move
//
// usage: node sdk_webtransport.mjs --base http://127.0.0.1:HTTP --wt https://127.0.0.1:HTTPS/v1/wt
//          --hash AA:BB:... --api-key KEY --jwt-secret SECRET [--scenarios webtransport,fallback]
//          [--sdk FILE] [--deadline-ms MS] [--chromium /usr/bin/chromium]
//
// stdout: one "SCENARIO name {json}" line per passed scenario and, last, "RESULT {...}" ({ok,
// scenarios, failed, error}); progress and diagnostics go to stderr. Exit code 0 only when every
// scenario passed.

import { createHmac } from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { BASE_ARGS, loadChromium, parseOrExit, requireChromium, parseFlags, baseUrl, list, absolute, runScenarios, tempProfile } from "./chromium.mjs";

const STEP_MS = 20_000;
const SCENARIOS = ["webtransport", "room", "fallback"];

function parseArgs(argv) {
  const o = parseFlags(
    argv,
    { base: "", wt: "", hash: "", apiKey: "", jwtSecret: "", sdk: "", scenarios: [...SCENARIOS], deadlineMs: 120_000 },
    {
      "--base": ["base", baseUrl],
      "--wt": "wt",
      "--hash": "hash",
      "--api-key": "apiKey",
      "--jwt-secret": "jwtSecret",
      "--sdk": ["sdk", absolute],
      "--scenarios": ["scenarios", list],
      "--deadline-ms": ["deadlineMs", Number],
    },
  );
  if (!o.base || !o.wt || !o.hash || !o.apiKey || !o.jwtSecret) {
    throw new Error("--base, --wt, --hash, --api-key and --jwt-secret are required");
  }
  if (!/^([0-9A-Fa-f]{2}:){31}[0-9A-Fa-f]{2}$/.test(o.hash)) throw new Error(`--hash ${o.hash}: not a SHA-256 fingerprint`);
  for (const s of o.scenarios) if (!SCENARIOS.includes(s)) throw new Error(`unknown scenario ${s}`);
  return o;
}

const log = (...a) => console.error("[sdk_webtransport]", ...a);

const chromium = await loadChromium();
const opts = parseOrExit("sdk_webtransport", parseArgs);
requireChromium(opts.chromium);

// The machine notes' flags, without --disable-quic (WebTransport is QUIC) and without any
// certificate flag: serverCertificateHashes alone makes the self-made certificate acceptable.
// WebRTC on loopback with host candidates as addresses (the room scenario), as sdk_e2e.mjs.
const CHROMIUM_ARGS = [
  ...BASE_ARGS,
  "--allow-loopback-in-peer-connection",
  "--disable-features=WebRtcHideLocalIpsWithMdns",
];

// ------------------------------------------------------------------ the page

// Clients by name in `window.app`; each records what the test reads back.
const pageHtml = (sdkUrl) => `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>switchboard SDK over WebTransport</title></head>
<body>
<script type="module">
import { Client } from "${sdkUrl}";

const show = (d) => (d instanceof Uint8Array ? { bytes: [...d] } : d);

window.app = {
  hasWebTransport: typeof globalThis.WebTransport === "function",
  clients: {},

  /** A client; opts.hash (AA:BB:...) becomes webtransportOptions.serverCertificateHashes. */
  async connect(name, o) {
    const options = { token: o.token, transports: o.transports, timeout: 8000, minReconnectDelay: 100, maxReconnectDelay: 1000 };
    if (o.wt) options.webtransportUrl = o.wt;
    if (o.hash) {
      const value = new Uint8Array(o.hash.split(":").map((x) => parseInt(x, 16)));
      options.webtransportOptions = { serverCertificateHashes: [{ algorithm: "sha-256", value }] };
    }
    const client = new Client(o.base, options);
    const rec = { client, states: [], connected: [], errors: [], publications: [], joins: [], leaves: [], subscribed: [] };
    this.clients[name] = rec;
    client.on("connected", (c) => rec.connected.push({ transport: c.transport, user: c.user }));
    client.on("connecting", (c) => rec.states.push({ state: "connecting", code: c.code, reason: c.reason }));
    client.on("error", (c) => rec.errors.push(c.type + ": " + (c.error?.message ?? "")));
    client.connect();
    await client.ready();
    return { transport: client.transport, user: client.user, clientId: client.clientId };
  },

  async subscribe(name, channel) {
    const rec = this.clients[name];
    const sub = rec.client.newSubscription(channel);
    sub.on("publication", (p) => rec.publications.push({ data: show(p.data), offset: p.offset, user: p.info?.user ?? null }));
    sub.on("join", (c) => rec.joins.push(c.info?.user ?? null));
    sub.on("leave", (c) => rec.leaves.push(c.info?.user ?? null));
    sub.on("subscribed", (c) => rec.subscribed.push({ wasRecovering: c.wasRecovering, recovered: c.recovered }));
    sub.subscribe();
    await sub.ready();
    return { state: sub.state, position: sub.position };
  },

  async publish(name, channel, data) {
    const d = data && data.bytes ? new Uint8Array(data.bytes) : data;
    return this.clients[name].client.publish(channel, d);
  },

  async history(name, channel) {
    const h = await this.clients[name].client.history(channel, { limit: 10 });
    return { offset: h.offset, publications: h.publications.map((p) => ({ data: show(p.data), offset: p.offset, user: p.info?.user ?? null })) };
  },

  async presence(name, channel) {
    const c = this.clients[name].client;
    const p = await c.presence(channel);
    return { users: Object.values(p.clients).map((x) => x.user).sort(), stats: await c.presenceStats(channel) };
  },

  async join(name, room, peerId) {
    const rec = this.clients[name];
    rec.peers = {};
    rec.messages = [];
    const r = await rec.client.joinRoom(room, { peerId });
    rec.room = r;
    const peer = (id) => (rec.peers[id] ??= { joined: false, open: false, left: false });
    r.on("peerjoined", ({ peer: p }) => { peer(p.id).joined = true; });
    r.on("peerleft", ({ peer: p }) => { peer(p.id).left = true; });
    r.on("channelopen", ({ peer: p }) => { peer(p.id).open = true; });
    r.on("message", ({ peer: p, data }) => rec.messages.push({ from: p.id, data }));
    r.on("error", (c) => rec.errors.push("room: " + (c.error?.message ?? String(c.error))));
    return { polite: r.polite, peerId: r.peerId };
  },

  send(name, text) {
    return this.clients[name].room.send(text);
  },

  leave(name) {
    return this.clients[name].room.leave();
  },

  unsubscribe(name, channel) {
    this.clients[name].client.getSubscription(channel).unsubscribe();
  },

  disconnect(name) {
    this.clients[name].client.disconnect();
  },

  snapshot(name) {
    const r = this.clients[name];
    return {
      state: r.client.state, transport: r.client.transport, connected: r.connected, states: r.states,
      errors: r.errors, publications: r.publications, joins: r.joins, leaves: r.leaves, subscribed: r.subscribed,
      peers: r.peers ?? {}, messages: r.messages ?? [],
    };
  },
};
</script>
</body>
</html>
`;

// ------------------------------------------------------------------ helpers

function assert(cond, message) {
  if (!cond) throw new Error(message);
}

function eq(actual, expected, what) {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  assert(a === e, `${what}: got ${a}, expected ${e}`);
}

const rand = () => Math.random().toString(36).slice(2, 8);

/** An HS256 JWT (what --jwt-hmac-secret verifies). */
function jwt(claims) {
  const enc = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const head = enc({ alg: "HS256", typ: "JWT" });
  const body = enc(claims);
  const sig = createHmac("sha256", opts.jwtSecret).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${sig}`;
}
const token = (sub) => jwt({ sub, exp: Math.floor(Date.now() / 1000) + 600 });

/** A server API call (`POST /v1/api/METHOD`); returns `result`. */
async function api(method, body) {
  const res = await fetch(`${opts.base}/v1/api/${method}`, {
    method: "POST",
    headers: { Authorization: `apikey ${opts.apiKey}`, "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const json = await res.json();
  if (json.error) throw new Error(`api ${method}: ${json.error.code} ${json.error.message}`);
  return json.result ?? {};
}

/** switchboard_hub_connects_total by transport, from /metrics. */
async function connects() {
  const text = await (await fetch(`${opts.base}/metrics`)).text();
  const out = {};
  for (const m of text.matchAll(/^switchboard_hub_connects_total\{transport="([^"]+)"\} (\S+)$/gm)) {
    out[m[1]] = Number(m[2]);
  }
  return out;
}
const delta = (after, before, t) => (after[t] ?? 0) - (before[t] ?? 0);

/** Polls `probe()` until `ok(value)`; returns the value or fails naming `what`. */
async function until(what, probe, ok, timeout = STEP_MS) {
  const end = Date.now() + timeout;
  let value;
  let lastError = null;
  for (;;) {
    try {
      value = await probe();
      if (ok(value)) return value;
    } catch (e) {
      lastError = e;
    }
    if (Date.now() > end) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(
    `timed out after ${timeout / 1000} s waiting for ${what}; last: ${JSON.stringify(value)}` +
      (lastError ? ` (last error: ${lastError.message.split("\n")[0]})` : "") +
      `\n${recentLog()}`,
  );
}

// ------------------------------------------------------------------ browser

const [profile, removeProfile] = tempProfile();

let context = null;
let page = null;
const pageLog = [];
const fatal = [];

function recentLog() {
  return `  recent page log:\n  ${pageLog.slice(-15).join("\n  ")}`;
}

async function openPage(origin) {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: opts.chromium,
    headless: true,
    args: CHROMIUM_ARGS,
  });
  page = await context.newPage();
  page.on("console", (m) => {
    pageLog.push(`console.${m.type()}: ${m.text()}`);
    if (pageLog.length > 200) pageLog.shift();
  });
  page.on("pageerror", (e) => {
    pageLog.push(`uncaught: ${e.message}`);
    fatal.push(e.message);
  });
  const url = `${origin}/page.html`;
  const r = await page.goto(url, { waitUntil: "load", timeout: STEP_MS });
  assert(r && r.ok(), `GET ${url}: HTTP ${r?.status()}`);
  await page.waitForFunction(() => Boolean(window.app), null, { timeout: STEP_MS });
}

/** Runs `window.app[method](...args)` in the page. */
function app(method, ...args) {
  return page.evaluate(([m, a]) => window.app[m](...a), [method, args]);
}

const snap = (name) => app("snapshot", name);

// ------------------------------------------------------------------ scenarios

const scenarios = {
  async webtransport() {
    assert(await page.evaluate(() => window.app.hasWebTransport), "this Chromium has no WebTransport");
    const channel = `chat:wt-${rand()}`;
    const before = await connects();
    const a = await app("connect", "alice", {
      base: opts.base, wt: opts.wt, hash: opts.hash, token: token("alice"), transports: ["webtransport"],
    });
    eq([a.transport, a.user], ["webtransport", "alice"], "alice's connection");
    const afterConnect = await connects();
    eq(delta(afterConnect, before, "webtransport"), 1, "webtransport connects counted by the server");
    eq(delta(afterConnect, before, "websocket"), 0, "no websocket connect for alice");
    await app("subscribe", "alice", channel);

    const b = await app("connect", "bob", { base: opts.base, token: token("bob") });
    eq(b.transport, "websocket", "bob's connection (the default)");
    await app("subscribe", "bob", channel);
    await until("alice seeing bob join", () => snap("alice"), (s) => s.joins.includes("bob"));

    // A publication through the server API reaches both.
    await api("publish", { channel, data: { text: "from the api", n: 1 } });
    // alice publishes JSON and binary over WebTransport.
    const p2 = await app("publish", "alice", channel, { text: "from alice", n: 2, list: [1, "two", null, true] });
    const p3 = await app("publish", "alice", channel, { bytes: [0, 1, 2, 250, 255] });
    eq([p2.offset, p3.offset], [2, 3], "alice's publish results");
    const want = [
      { data: { text: "from the api", n: 1 }, offset: 1, user: null },
      { data: { text: "from alice", n: 2, list: [1, "two", null, true] }, offset: 2, user: "alice" },
      { data: { bytes: [0, 1, 2, 250, 255] }, offset: 3, user: "alice" },
    ];
    for (const who of ["alice", "bob"]) {
      const s = await until(`${who} receiving 3 publications`, () => snap(who), (x) => x.publications.length >= 3);
      eq(s.publications, want, `what ${who} received`);
    }
    // The server stored what alice sent: JSON as JSON, bytes as bytes (base64 in the JSON API).
    const stored = await api("history", { channel, limit: 10 });
    eq(stored.publications?.[1]?.data, want[1].data, "the server's copy of alice's JSON");
    eq(stored.publications?.[2]?.b64data, Buffer.from([0, 1, 2, 250, 255]).toString("base64"), "the server's copy of alice's bytes");

    const history = await app("history", "alice", channel);
    eq(history.publications, want, "alice's history");
    eq(history.offset, 3, "history position");
    const presence = await app("presence", "alice", channel);
    eq(presence, { users: ["alice", "bob"], stats: { numClients: 2, numUsers: 2 } }, "presence over WebTransport");

    await app("unsubscribe", "bob", channel);
    await until("alice seeing bob leave", () => snap("alice"), (s) => s.leaves.includes("bob"));

    // The server cuts alice; she reconnects over WebTransport and recovers what she missed.
    const beforeCut = await connects();
    await api("disconnect", { user: "alice", disconnect: { code: 3011, reason: "force reconnect", reconnect: true } });
    await api("publish", { channel, data: { text: "while away", n: 4 } });
    const s = await until(
      "alice reconnected with the missed publication",
      () => snap("alice"),
      (x) => x.connected.length >= 2 && x.state === "connected" && x.publications.length >= 4,
    );
    await new Promise((r) => setTimeout(r, 300));
    const end = await snap("alice");
    eq(end.publications.length, 4, "no duplicate after the recovery");
    eq(end.publications[3], { data: { text: "while away", n: 4 }, offset: 4, user: null }, "the recovered publication");
    eq(end.connected.map((c) => c.transport), ["webtransport", "webtransport"], "alice's connections");
    const cut = end.states.find((x) => x.code === 3011);
    assert(cut, `the 3011 disconnect in alice's states: ${JSON.stringify(end.states)}`);
    const last = end.subscribed.at(-1);
    assert(last.wasRecovering && last.recovered, `recovered subscribe: ${JSON.stringify(end.subscribed)}`);
    const afterCut = await connects();
    eq(delta(afterCut, beforeCut, "webtransport"), 1, "the reconnect's webtransport connect");
    eq(end.errors, [], "alice's errors");
    await app("disconnect", "alice");
    await app("disconnect", "bob");
    await until("both out of presence", () => api("presence_stats", { channel }), (r) => (r.numClients ?? 0) === 0);
    return {
      transport: a.transport,
      bobTransport: b.transport,
      received: s.publications.length,
      connects: { before, afterConnect, afterCut },
      history: history.publications.length,
      presence,
      stored: stored.publications?.length ?? 0,
    };
  },

  async room() {
    const before = await connects();
    const wt = { base: opts.base, wt: opts.wt, hash: opts.hash, transports: ["webtransport"] };
    eq((await app("connect", "ra", { ...wt, token: token("ra") })).transport, "webtransport", "ra's transport");
    eq((await app("connect", "rb", { ...wt, token: token("rb") })).transport, "webtransport", "rb's transport");
    eq(delta(await connects(), before, "webtransport"), 2, "webtransport connects");
    const room = `wt-room-${rand()}`;
    const ja = await app("join", "ra", room, "peer-a");
    const jb = await app("join", "rb", room, "peer-b");
    eq([ja.polite, jb.polite], [false, true], "roles (first impolite, newcomer polite)");
    await until("data channel open on both sides", async () => [await snap("ra"), await snap("rb")],
      ([a, b]) => a.peers["peer-b"]?.open && b.peers["peer-a"]?.open);
    eq(await app("send", "ra", "hello from a"), 1, "ra's send");
    eq(await app("send", "rb", "hello from b"), 1, "rb's send");
    const [a, b] = await until("a message each way", async () => [await snap("ra"), await snap("rb")],
      ([x, y]) => x.messages.length >= 1 && y.messages.length >= 1);
    eq(a.messages, [{ from: "peer-b", data: "hello from b" }], "what ra received");
    eq(b.messages, [{ from: "peer-a", data: "hello from a" }], "what rb received");
    eq([a.peers["peer-b"].joined, b.peers["peer-a"].joined], [true, true], "peerjoined on both sides");
    await app("leave", "rb");
    await until("ra seeing rb leave", () => snap("ra"), (x) => x.peers["peer-b"]?.left);
    const end = await snap("ra");
    eq([end.errors, (await snap("rb")).errors], [[], []], "room errors");
    eq([end.transport, (await snap("rb")).transport], ["webtransport", "webtransport"], "still over WebTransport");
    await app("leave", "ra");
    await app("disconnect", "ra");
    await app("disconnect", "rb");
    return { room, polite: [ja.polite, jb.polite], received: [a.messages[0].data, b.messages[0].data], transport: end.transport };
  },

  async fallback() {
    const before = await connects();
    // (1) The certificate hash is missing: Chromium refuses the server's certificate.
    const noHash = await app("connect", "nohash", {
      base: opts.base, wt: opts.wt, token: token("carol"), transports: ["webtransport"],
    });
    const mid = await connects();
    eq(noHash.transport, "websocket", "without the hash");
    eq([delta(mid, before, "webtransport"), delta(mid, before, "websocket")], [0, 1], "connects (no hash)");
    // (2) Nothing listens where WebTransport is sent (an HTTP-only port, UDP closed).
    const closedPort = `https://127.0.0.1:${new URL(opts.base).port}/v1/wt`;
    const noServer = await app("connect", "noserver", {
      base: opts.base, wt: closedPort, hash: opts.hash, token: token("dave"), transports: ["webtransport", "websocket"],
    });
    const after = await connects();
    eq(noServer.transport, "websocket", "with nothing listening");
    eq([delta(after, mid, "webtransport"), delta(after, mid, "websocket")], [0, 1], "connects (nothing listening)");
    // Both work over the WebSocket.
    const channel = `chat:fb-${rand()}`;
    await app("subscribe", "nohash", channel);
    await app("publish", "noserver", channel, { text: "over the websocket" });
    const s = await until("the fallback client receiving", () => snap("nohash"), (x) => x.publications.length >= 1);
    eq(s.publications[0].data, { text: "over the websocket" }, "publication over the fallback");
    await app("disconnect", "nohash");
    await app("disconnect", "noserver");
    return { noHash: noHash.transport, noServer: noServer.transport, connects: { before, mid, after } };
  },
};

// ------------------------------------------------------------------ main

/** A static server on a loopback port: {server, origin} (origin uses "localhost"). */
function staticServer(files) {
  return new Promise((resolve, reject) => {
    const server = http.createServer((req, res) => {
      const f = files[new URL(req.url, "http://x").pathname];
      if (f === undefined) {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, { "content-type": f.type }).end(f.body);
    });
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => resolve({ server, origin: `http://localhost:${server.address().port}` }));
  });
}

const result = { ok: false, scenarios: {}, failed: null };
const deadline = setTimeout(() => {
  console.error(`sdk_webtransport: deadline of ${opts.deadlineMs} ms passed`);
  result.failed = result.failed ?? "deadline";
  process.stdout.write(`RESULT ${JSON.stringify(result)}\n`);
  process.exit(4);
}, opts.deadlineMs);

let code = 0;
let pages = null;
try {
  const files = {};
  let sdkUrl = `${opts.base}/sdk/switchboard.js`;
  if (opts.sdk) {
    files["/switchboard.js"] = { type: "text/javascript", body: fs.readFileSync(opts.sdk) };
    sdkUrl = "/switchboard.js";
  }
  files["/page.html"] = { type: "text/html; charset=utf-8", body: pageHtml(sdkUrl) };
  pages = await staticServer(files);
  log(`page served from ${pages.origin}, SDK ${opts.sdk || sdkUrl}`);
  await openPage(pages.origin);
  await runScenarios(scenarios, opts.scenarios, result, log);
  assert(fatal.length === 0, `uncaught page errors:\n${fatal.join("\n")}`);
  result.failed = null;
  result.ok = true;
} catch (e) {
  code = 1;
  result.error = e.message;
  console.error(`sdk_webtransport: scenario ${result.failed} failed: ${e.message}`);
  if (fatal.length) console.error(`page errors:\n${fatal.join("\n")}`);
} finally {
  if (context) await context.close().catch(() => {});
  pages?.server.close();
  removeProfile();
  clearTimeout(deadline);
}
process.stdout.write(`RESULT ${JSON.stringify(result)}\n`);
process.exit(code);
